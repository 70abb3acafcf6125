//! Health, metrics, correlation ids, errors and shutdown of the running platform.

use serde_json::Value;

use crate::support::{Platform, SERVICES};

#[tokio::test]
async fn health_lists_every_service_and_dependency() {
    let platform = Platform::start().await;
    let response = platform.get("/health").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "UP");
    assert_eq!(body["service"], "gateway");
    for service in SERVICES {
        assert_eq!(body["checks"][service], "UP", "{service} in {body}");
        let outbox = format!("{service}-outbox");
        assert_eq!(body["checks"][&outbox], "UP", "{outbox} in {body}");
    }
    assert_eq!(body["checks"]["event-log"], "UP");
    let live = platform.get("/health/live").await;
    assert_eq!(live.status(), 200);
}

#[tokio::test]
async fn health_is_503_when_a_database_is_gone() {
    let platform = Platform::start().await;
    std::fs::remove_file(platform.data_dir.join("inventory.db")).unwrap();
    let response = platform.get("/health").await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "DOWN");
    assert_eq!(body["checks"]["inventory"], "DOWN");
    assert_eq!(
        body["checks"]["orders"], "UP",
        "only the broken dependency is DOWN"
    );
    assert_eq!(
        platform.get("/health/live").await.status(),
        200,
        "the process itself lives"
    );
}

#[tokio::test]
async fn a_correlation_id_is_echoed_or_generated() {
    let platform = Platform::start().await;
    let given = platform
        .http
        .get(platform.url("/health/live"))
        .header("X-Correlation-Id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(given.headers()["x-correlation-id"], "trace-me-123");
    let generated = platform.get("/health/live").await;
    let id = generated.headers()["x-correlation-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
}

#[tokio::test]
async fn unknown_paths_are_problem_documents() {
    let platform = Platform::start().await;
    let response = platform
        .http
        .get(platform.url("/api/nothing-here"))
        .header("X-Correlation-Id", "c-404")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "NOT_FOUND");
    assert_eq!(body["status"], 404);
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_http_and_bus_series() {
    let platform = Platform::start().await;
    platform.get("/health/live").await;
    let response = platform.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    for series in [
        "emporium_http_requests_total{",
        "emporium_http_request_duration_seconds_bucket{",
        "emporium_consumer_lag{group=\"dead-letters\"",
        "emporium_outbox_backlog{service=\"orders\"}",
        "emporium_dead_letters_pending",
    ] {
        assert!(text.contains(series), "missing {series} in:\n{text}");
    }
    assert!(text.contains("route=\"/health/live\""), "{text}");
}

#[tokio::test]
async fn sigterm_stops_the_platform_cleanly() {
    let platform = Platform::start().await;
    platform.get("/health").await;
    let status = platform.terminate().await;
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn a_second_platform_on_the_same_data_dir_is_refused() {
    let first = Platform::start().await;
    let output = crate::support::command(&first.data_dir)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("in use by another Emporium process"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        first.get("/health").await.status(),
        200,
        "the first one is untouched"
    );
}

#[tokio::test]
async fn plain_errors_become_problem_documents() {
    let platform = Platform::start().await;
    let wrong_method = platform
        .http
        .delete(platform.url("/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), 405);
    assert_eq!(
        wrong_method.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = wrong_method.json().await.unwrap();
    assert_eq!(body["code"], "METHOD_NOT_ALLOWED");
    assert!(body["correlationId"].is_string(), "{body}");

    let huge = format!("{{\"email\":\"{}\"}}", "x".repeat(300_000));
    let too_large = platform
        .http
        .post(platform.url("/api/auth/register"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(too_large.status(), 413);
    let body: Value = too_large.json().await.unwrap();
    assert_eq!(body["code"], "PAYLOAD_TOO_LARGE");
}

#[tokio::test]
async fn the_openapi_document_is_served() {
    let platform = Platform::start().await;
    let response = platform.get("/api/openapi.json").await;
    assert_eq!(response.status(), 200);
    let served: Value = response.json().await.unwrap();
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/openapi.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        served, committed,
        "the served document is the committed one"
    );
    assert!(served["paths"]["/api/orders"]["post"].is_object());
}
