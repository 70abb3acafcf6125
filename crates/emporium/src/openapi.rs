//! The OpenAPI document of every endpoint, assembled from each service's own and served at
//! `/api/openapi.json`. The committed copy is `docs/openapi.json`; a test keeps the two equal.

use utoipa::{
    OpenApi,
    openapi::{
        self,
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

use crate::operations::OperationsApi;

#[derive(OpenApi)]
#[openapi(info(
    title = "Emporium",
    description = "An event-driven e-commerce backend. Errors are RFC 9457 problem documents \
                   (`application/problem+json`) with a stable `code`; lists take `limit` (1–100, default 20) \
                   and `cursor` and answer `{items, nextCursor}`.",
    license(name = "MIT OR Apache-2.0")
))]
struct Root;

/// Each service's own document, by service name.
fn parts() -> [(&'static str, openapi::OpenApi); 10] {
    [
        ("users", emporium_users::openapi()),
        ("catalog", emporium_catalog::openapi()),
        ("inventory", emporium_inventory::openapi()),
        ("orders", emporium_orders::openapi()),
        ("payments", emporium_payments::openapi()),
        ("shipping", emporium_shipping::openapi()),
        ("notifications", emporium_notifications::openapi()),
        ("recommendations", emporium_recommendations::openapi()),
        ("promotions", emporium_promotions::openapi()),
        ("operations", OperationsApi::openapi()),
    ]
}

/// The whole document.
pub fn document() -> openapi::OpenApi {
    let mut doc = Root::openapi();
    for (_, part) in parts() {
        doc.merge(part);
    }
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .build(),
        ),
    );
    doc
}

/// The document as served and committed: pretty JSON with a trailing newline.
pub fn json() -> String {
    let mut text = document()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    /// The gateway sends each path to the service that serves it: in distributed mode a wrong entry
    /// in its route table would be a 404 from the wrong process.
    #[test]
    fn the_gateway_routes_every_documented_path_to_the_service_that_serves_it() {
        for (service, doc) in super::parts() {
            for path in doc.paths.paths.keys() {
                assert_eq!(
                    emporium_gateway::client::owner(path),
                    Some(service),
                    "{path} is served by {service}"
                );
            }
        }
    }

    #[test]
    fn the_committed_openapi_document_matches_the_code() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
        let generated = super::json();
        if std::env::var_os("EMPORIUM_BLESS").is_some() {
            std::fs::write(&path, &generated).unwrap();
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json is out of date: run `EMPORIUM_BLESS=1 cargo test -p emporium openapi` and commit it"
        );
    }

    #[test]
    fn every_contract_resource_is_documented() {
        let doc = super::document();
        for path in [
            "/api/auth/register",
            "/api/auth/login",
            "/api/products",
            "/api/products/{id}",
            "/api/inventory/{productId}",
            "/api/orders",
            "/api/orders/{id}/cancel",
            "/api/payments",
            "/api/shipments",
            "/api/notifications/me",
            "/api/templates/{name}",
            "/api/admin/dlq",
        ] {
            assert!(
                doc.paths.paths.contains_key(path),
                "{path} is not in the OpenAPI document"
            );
        }
    }
}

/// The `distributed` profile is where every service's address is written down, and the deployment
/// files under deploy/ are checked against it (`tests/it/deploy.rs`): it must name exactly the
/// services `emporium serve` runs, or a service would be missing from the gateway and from every
/// deployment.
#[cfg(test)]
mod distributed_profile {
    #[test]
    fn the_distributed_profile_addresses_exactly_the_services_the_binary_serves() {
        let config = emporium_platform::config::Config::defaults(Some("distributed")).unwrap();
        let addressed: std::collections::BTreeSet<&str> =
            config.gateway.services.keys().map(String::as_str).collect();
        let served: std::collections::BTreeSet<&str> =
            crate::platform::service_names().into_iter().collect();
        assert_eq!(
            addressed, served,
            "[gateway.services] of config/distributed.toml against `emporium serve`"
        );
    }
}
