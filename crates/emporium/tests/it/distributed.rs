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

/// Every service as its own process on PostgreSQL and Kafka, the gateway in front: the saga runs
/// across processes. Needs the servers that `scripts/dev-services` starts (`.ci/run` does); without
/// them it says so and passes. The servers keep state between runs (databases `emporium_<service>`,
/// the topics), so the test uses names of its own and checks only its own order.
#[tokio::test]
async fn a_saga_runs_across_processes_on_postgresql_and_kafka() {
    let (Ok(database), Ok(brokers)) = (
        std::env::var("EMPORIUM_TEST_DATABASE_URL"),
        std::env::var("EMPORIUM_TEST_KAFKA_BROKERS"),
    ) else {
        eprintln!(
            "skipped: needs EMPORIUM_TEST_DATABASE_URL and EMPORIUM_TEST_KAFKA_BROKERS (scripts/dev-services)"
        );
        return;
    };
    let common = [
        ("EMPORIUM_JWT_SECRET", SECRET),
        ("EMPORIUM_DATABASE_URL", database.as_str()),
        ("EMPORIUM_KAFKA_BROKERS", brokers.as_str()),
        ("EMPORIUM_ADMIN_EMAIL", crate::support::ADMIN_EMAIL),
        ("EMPORIUM_ADMIN_PASSWORD", crate::support::ADMIN_PASSWORD),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut processes = Vec::new();
    let mut addresses = Vec::new();
    for service in [
        "users",
        "catalog",
        "inventory",
        "orders",
        "payments",
        "shipping",
        "notifications",
        "recommendations",
        "promotions",
        "operations",
    ] {
        let data = dir.path().join(service);
        std::fs::create_dir_all(&data).unwrap();
        let process = Platform::start_part(&data, &["serve", service], &common).await;
        addresses.push((
            format!("EMPORIUM_GATEWAY__SERVICES__{}", service.to_uppercase()),
            process.base.clone(),
        ));
        processes.push(process);
    }
    let mut env: Vec<(&str, &str)> = common.to_vec();
    env.extend(addresses.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let gateway_dir = dir.path().join("gateway");
    std::fs::create_dir_all(&gateway_dir).unwrap();
    let gateway = Platform::start_part(&gateway_dir, &["gateway"], &env).await;

    let run = uuid::Uuid::now_v7().simple().to_string();
    let admin = gateway.admin().await;
    let product = gateway
        .post_as(
            "/api/products",
            Some(&admin.token),
            serde_json::json!({"name": format!("Lamp {run}"), "category": "test",
                "price": {"amount": 2500, "currency": "USD"}, "initialStock": 5}),
        )
        .await;
    assert_eq!(product.status, 201, "{product:?}");
    let product = product.body["id"].as_str().unwrap().to_owned();
    let customer = gateway.register(&format!("{run}@example.com")).await;
    // The orders service learns the product's price from product-events: retry the placement
    // until it knows it (422 UNKNOWN_PRODUCT until then).
    let order = gateway
        .poll("the order to be accepted", || async {
            let reply = gateway
                .place_order(&customer, &[(&product, 2)], "tok_visa")
                .await;
            (reply.status == 202).then(|| reply.body["id"].as_str().unwrap().to_owned())
        })
        .await;
    let confirmed = gateway.wait_for_order(&customer, &order, "CONFIRMED").await;
    assert_eq!(confirmed["payment"]["status"], "AUTHORIZED");
    let stock = gateway
        .call(
            reqwest::Method::GET,
            &format!("/api/inventory/{product}"),
            None,
            None,
        )
        .await;
    assert_eq!(
        (
            stock.body["available"].as_i64(),
            stock.body["reserved"].as_i64()
        ),
        (Some(3), Some(2))
    );
    // The operations service, its own process, indexed the whole saga from Kafka.
    gateway
        .wait_for("the saga in the admin event index", || async {
            let events = gateway
                .get_as(
                    &format!("/api/admin/events?aggregateId={order}"),
                    &admin.token,
                )
                .await;
            events
                .body
                .as_array()
                .is_some_and(|events| events.iter().any(|e| e["eventType"] == "OrderConfirmed"))
        })
        .await;
    drop(processes);
}
