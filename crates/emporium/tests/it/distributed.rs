//! The parts of the distributed mode that need no outside server: one service as its own process,
//! the gateway in front of it over HTTP, `migrate`, and the refusals that keep an operator from a
//! half-configured cluster.

use serde_json::Value;

use crate::support::{Platform, command};

const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";

#[tokio::test]
async fn the_gateway_reaches_a_service_running_as_its_own_process() {
    let service_dir = tempfile::tempdir().unwrap();
    let catalog = Platform::start_part(
        service_dir.path(),
        &["serve", "catalog"],
        &[("EMPORIUM_JWT_SECRET", SECRET)],
    )
    .await;
    let health: Value = catalog.get("/health").await.json().await.unwrap();
    assert_eq!(health["service"], "catalog");
    assert_eq!(health["checks"]["catalog"], "UP", "{health}");
    assert!(
        health["checks"].get("orders").is_none(),
        "a service process opens its own database only: {health}"
    );
    // Its own routes only.
    assert_eq!(catalog.get("/api/orders").await.status(), 404);

    let gateway_dir = tempfile::tempdir().unwrap();
    let address = catalog.base.clone();
    let gateway = Platform::start_part(
        gateway_dir.path(),
        &["gateway"],
        &[
            ("EMPORIUM_JWT_SECRET", SECRET),
            ("EMPORIUM_GATEWAY__SERVICES__CATALOG", &address),
        ],
    )
    .await;
    let products = gateway.get("/api/products?limit=5").await;
    assert_eq!(products.status(), 200);
    let body: Value = products.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"items": [], "nextCursor": null}));
    // The catalog's own problem, with its code, comes back through the gateway unchanged.
    let missing = gateway
        .get("/api/products/0190b8a0-0000-7000-8000-000000000000")
        .await;
    assert_eq!(missing.status(), 404);
    let problem: Value = missing.json().await.unwrap();
    assert_eq!(problem["code"], "NOT_FOUND");
    // A service with no address configured is unavailable, not a hang.
    let orders = gateway.get("/api/orders").await;
    assert_eq!(orders.status(), 503);
    let problem: Value = orders.json().await.unwrap();
    assert_eq!(problem["code"], "SERVICE_UNAVAILABLE");
    // GraphQL goes the same way.
    let graphql: Value = gateway
        .http
        .post(gateway.url("/graphql"))
        .json(&serde_json::json!({"query": "{ products(first: 3) { nodes { id } } }"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(graphql["data"]["products"]["nodes"], serde_json::json!([]));
}

#[tokio::test]
async fn separate_processes_must_share_a_configured_token_secret() {
    let dir = tempfile::tempdir().unwrap();
    let output = command(dir.path())
        .args(["serve", "catalog"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("jwt_secret"), "{stderr}");
}

#[tokio::test]
async fn an_unknown_service_is_refused_with_the_known_names() {
    let dir = tempfile::tempdir().unwrap();
    let output = command(dir.path())
        .args(["serve", "billing"])
        .env("EMPORIUM_JWT_SECRET", SECRET)
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no service `billing`") && stderr.contains("recommendations"),
        "{stderr}"
    );
}

#[tokio::test]
async fn migrate_prepares_every_database_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let output = command(dir.path()).arg("migrate").output().await.unwrap();
    assert!(output.status.success(), "{output:?}");
    for name in ["users", "orders", "promotions", "operations"] {
        assert!(dir.path().join(format!("{name}.db")).exists(), "{name}.db");
    }
    // Migrations are recorded: running them again changes nothing and succeeds.
    let again = command(dir.path())
        .args(["migrate", "--service", "orders"])
        .output()
        .await
        .unwrap();
    assert!(again.status.success(), "{again:?}");
}
