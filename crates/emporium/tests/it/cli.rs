//! The command line: configuration errors, dead letters.

use std::process::Stdio;

use emporium_platform::bus::{Delivery, EventBus, OutboxLog, Record, dlq};

use crate::support::{Platform, command};

async fn run(
    data_dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    command(data_dir)
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn bad_configuration_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &str)] = &[
        ("EMPORIUM_SAGA_TIMEOUT", "whenever", "saga_timeout"),
        ("EMPORIUM_LISTEN", "nowhere", "listen"),
        ("EMPORIUM_PAYMENT_LIMIT", "0", "payment_limit"),
        ("EMPORIUM_LOG", "info,[[[", "log"),
        ("EMPORIUM_PROFILE", "production", "profile"),
        // Nothing listens on port 1.
        ("EMPORIUM_REDIS_URL", "redis://127.0.0.1:1", "redis_url"),
    ];
    for (var, value, key) in cases {
        let output = run(dir.path(), &[], &[(var, value)]).await;
        assert_eq!(
            output.status.code(),
            Some(1),
            "{var}={value} should stop start-up"
        );
        let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
        assert!(
            stderr.contains(key),
            "{var}={value}: message should name {key}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let output = run(dir.path(), &["--listen", "1.2.3"], &[]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("listen"));
}

#[tokio::test]
async fn start_up_prints_the_address_and_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = command(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut stderr, &mut line)
        .await
        .unwrap();
    assert!(
        line.starts_with("Emporium is up on http://127.0.0.1:"),
        "{line}"
    );
    assert!(line.contains(&dir.path().display().to_string()), "{line}");
    child.kill().await.unwrap();
}

/// A dead letter written to the log (as a failing consumer would) is listed, replayed and deleted
/// by `emporium dlq`.
#[tokio::test]
async fn dead_letters_can_be_listed_replayed_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let original = Record {
        topic: "order-events".into(),
        key: "order-1".into(),
        payload: br#"{"eventId":"01a2","eventType":"OrderCreated"}"#.to_vec(),
        headers: Default::default(),
    };
    {
        let log = OutboxLog::open(&dir.path().join("events.db"), 8)
            .await
            .unwrap();
        let delivery = Delivery {
            partition: 3,
            offset: 7,
            appended_at: chrono::Utc::now(),
            record: original.clone().into(),
            decoded: None,
        };
        log.publish(&[dlq::dead_letter_record(&delivery, "inventory", "boom", 5)])
            .await
            .unwrap();
    }
    let listed = run(dir.path(), &["dlq", "list"], &[]).await;
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let entry = &lines[0];
    assert_eq!(entry["topic"], "order-events");
    assert_eq!(entry["group"], "inventory");
    assert_eq!(entry["error"], "boom");
    assert_eq!(entry["attempts"], 5);
    assert_eq!(entry["eventType"], "OrderCreated");
    let id = entry["id"].as_str().unwrap();

    let replayed = run(dir.path(), &["dlq", "replay", id], &[]).await;
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    let log = OutboxLog::open(&dir.path().join("events.db"), 8)
        .await
        .unwrap();
    let partition = emporium_platform::bus::partition_for("order-1", 8);
    let back = log.read("order-events", partition, 0, 10).await.unwrap();
    assert_eq!(back.len(), 1, "the original is on its topic again");
    assert_eq!(back[0].record.payload, original.payload);
    drop(log);

    let deleted = run(dir.path(), &["dlq", "delete", id], &[]).await;
    assert!(deleted.status.success());
    let again = run(dir.path(), &["dlq", "delete", id], &[]).await;
    assert_eq!(again.status.code(), Some(1), "deleting twice is an error");
    assert!(String::from_utf8_lossy(&again.stderr).contains("no dead letter"));
    let listed = run(dir.path(), &["dlq", "list"], &[]).await;
    assert!(String::from_utf8_lossy(&listed.stdout).trim().is_empty());
}

#[tokio::test]
async fn the_dlq_command_refuses_while_the_platform_runs() {
    let platform = Platform::start().await;
    let output = run(&platform.data_dir, &["dlq", "list"], &[]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("in use"));
}
