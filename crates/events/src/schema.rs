//! JSON Schemas of the envelope and of every payload, generated from the Rust types.
//!
//! The generated files are committed under `docs/events/` so that services in other languages
//! and reviewers can read the contract without Rust; the tests below keep them in step with the
//! code (`EMPORIUM_BLESS=1 cargo test -p emporium-events` rewrites them).

use serde_json::Value;

use crate::Envelope;
use crate::event::payload_schemas;

/// `(file name, schema)` for `envelope.json` and for every event type's payload,
/// `<EventType>.v<version>.json`.
pub fn schemas() -> Vec<(String, Value)> {
    let mut out = vec![(
        "envelope.json".to_owned(),
        schemars::schema_for!(Envelope).to_value(),
    )];
    for (event_type, version, schema) in payload_schemas() {
        out.push((schema_file_name(event_type, version), schema.to_value()));
    }
    out
}

fn schema_file_name(event_type: &str, version: u32) -> String {
    format!("{event_type}.v{version}.json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;
    use std::path::{Path, PathBuf};

    const BLESS_HINT: &str =
        "run `EMPORIUM_BLESS=1 cargo test -p emporium-events` and commit docs/events/";

    fn docs_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/events")
    }

    fn blessing() -> bool {
        std::env::var_os("EMPORIUM_BLESS").is_some_and(|v| v == "1")
    }

    /// Keys sorted at every level, so the committed text does not depend on whether some other
    /// crate in the build turned on serde_json's `preserve_order`.
    fn canonical(value: Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<(String, Value)> =
                    map.into_iter().map(|(k, v)| (k, canonical(v))).collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                Value::Object(entries.into_iter().collect())
            }
            Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect()),
            other => other,
        }
    }

    fn snake_to_camel(s: &str) -> String {
        let mut out = String::new();
        let mut upper = false;
        for c in s.chars() {
            if c == '_' {
                upper = true;
            } else if upper {
                out.extend(c.to_uppercase());
                upper = false;
            } else {
                out.push(c);
            }
        }
        out
    }

    fn readme() -> String {
        let mut out = String::from(
            "# Event schemas\n\
             \n\
             Generated from `crates/events` (the Rust types are the source of truth); do not edit by hand.\n\
             After changing an event, run `EMPORIUM_BLESS=1 cargo test -p emporium-events` and commit this directory.\n\
             \n\
             Every event travels in the envelope described by [envelope.json](envelope.json) (CONTRACT §4):\n\
             `{\"eventId\",\"eventType\",\"version\",\"occurredAt\",\"source\",\"aggregateId\",\"correlationId\",\"causationId\",\"payload\"}`.\n\
             A consumer rejects an envelope whose `version` is not the one it knows for the `eventType`.\n\
             \n\
             | event type | topic | aggregate id | emitted by | payload schema |\n\
             |---|---|---|---|---|\n",
        );
        for info in Event::CATALOG {
            let file = schema_file_name(info.event_type, info.version);
            out.push_str(&format!(
                "| `{}` | `{}` | `{}` | {} | [{file}]({file}) |\n",
                info.event_type,
                info.topic,
                snake_to_camel(info.aggregate_field),
                info.emitted_by,
            ));
        }
        out
    }

    fn expected_files() -> Vec<(String, String)> {
        let mut files: Vec<(String, String)> = schemas()
            .into_iter()
            .map(|(name, schema)| {
                let text = serde_json::to_string_pretty(&canonical(schema)).unwrap() + "\n";
                (name, text)
            })
            .collect();
        files.push(("README.md".to_owned(), readme()));
        files
    }

    #[test]
    fn committed_schemas_match_the_code() {
        let dir = docs_dir();
        let mut differing = Vec::new();
        for (name, expected) in expected_files() {
            let path = dir.join(&name);
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            if committed == expected {
                continue;
            }
            if blessing() {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, expected).unwrap();
            } else {
                differing.push(name);
            }
        }
        assert!(
            differing.is_empty(),
            "docs/events/ is out of date with the event types ({}): {BLESS_HINT}",
            differing.join(", ")
        );
    }

    #[test]
    fn no_committed_schema_is_stale() {
        let known: Vec<String> = schemas().into_iter().map(|(name, _)| name).collect();
        let mut stale = Vec::new();
        for entry in std::fs::read_dir(docs_dir()).unwrap() {
            let path = entry.unwrap().path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !name.ends_with(".json") || known.iter().any(|k| k == name) {
                continue;
            }
            if blessing() {
                std::fs::remove_file(&path).unwrap();
            } else {
                stale.push(name.to_owned());
            }
        }
        assert!(
            stale.is_empty(),
            "docs/events/ holds schemas no event type produces ({}): {BLESS_HINT}",
            stale.join(", ")
        );
    }

    #[test]
    fn one_payload_schema_per_event_type() {
        let names: Vec<String> = schemas().into_iter().map(|(name, _)| name).collect();
        assert_eq!(names.len(), Event::TYPES.len() + 1);
        for info in Event::CATALOG {
            assert!(names.contains(&schema_file_name(info.event_type, info.version)));
        }
    }

    #[test]
    fn schemas_describe_the_wire_names() {
        let schemas = schemas();
        let find = |name: &str| schemas.iter().find(|(n, _)| n == name).unwrap().1.clone();

        let order_created = find("OrderCreated.v1.json");
        let required = order_created["required"].as_array().unwrap();
        for key in ["orderId", "userId", "items", "total", "paymentToken"] {
            assert!(required.contains(&Value::from(key)), "{key}");
        }

        let envelope = find("envelope.json").to_string();
        for key in [
            "eventId",
            "occurredAt",
            "aggregateId",
            "correlationId",
            "causationId",
        ] {
            assert!(envelope.contains(key), "{key} missing from envelope.json");
        }
    }
}
