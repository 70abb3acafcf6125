//! The REST edge: tokens checked before any service, per-client rate limits, CORS and security
//! headers, and forwarding to the owning service.

use std::time::Duration;

use crate::support::Platform;

/// Sends `request` until it is refused with 429; returns how many were served first and the
/// refusal. (Counting instead of expecting an exact position keeps a slow machine, where a token
/// may refill mid-test, from failing the test.)
async fn until_limited(
    mut request: impl AsyncFnMut() -> reqwest::Response,
) -> (usize, reqwest::Response) {
    for served in 0..50 {
        let response = request().await;
        if response.status() == 429 {
            return (served, response);
        }
        assert_eq!(response.status(), 200);
    }
    panic!("never rate limited");
}

#[tokio::test]
async fn a_client_over_its_rate_is_told_to_wait_and_then_served_again() {
    let platform = Platform::start_with(&[
        ("EMPORIUM_GATEWAY__RATE_LIMIT_PER_SECOND", "1"),
        ("EMPORIUM_GATEWAY__RATE_LIMIT_BURST", "3"),
    ])
    .await;
    let (served, limited) = until_limited(async || platform.get("/api/products").await).await;
    assert!(served >= 3, "the burst is served: {served}");
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        retry_after, 1,
        "one request a second: the next token is at most a second away"
    );
    let body: serde_json::Value = limited.json().await.unwrap();
    assert_eq!(body["code"], "RATE_LIMITED");
    // It recovers once the bucket refills.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(platform.get("/api/products").await.status(), 200);
}

#[tokio::test]
async fn signed_in_users_have_buckets_of_their_own() {
    let platform = Platform::start_with(&[
        ("EMPORIUM_GATEWAY__RATE_LIMIT_PER_SECOND", "1"),
        ("EMPORIUM_GATEWAY__RATE_LIMIT_BURST", "2"),
    ])
    .await;
    // The login is one anonymous request: the anonymous bucket keeps at least one token.
    let admin = platform.admin().await;
    let (served, limited) = until_limited(async || {
        platform
            .http
            .get(platform.url("/api/users/me"))
            .bearer_auth(&admin.token)
            .send()
            .await
            .unwrap()
    })
    .await;
    assert!(served >= 2, "the burst is served: {served}");
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(platform.get("/api/products").await.status(), 200);
}

#[tokio::test]
async fn a_bad_token_is_refused_at_the_edge_even_for_public_resources() {
    let platform = Platform::start().await;
    let reply = platform
        .call(
            reqwest::Method::GET,
            "/api/products",
            Some("not-a-jwt"),
            None,
        )
        .await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.code(), "UNAUTHENTICATED");
    let basic = platform
        .http
        .get(platform.url("/api/products"))
        .header("authorization", "Basic YWxhZGRpbjpvcGVuc2VzYW1l")
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
}

#[tokio::test]
async fn answers_carry_security_headers_and_unknown_resources_are_problems() {
    let platform = Platform::start().await;
    let reply = platform.get("/api/products").await;
    let headers = reply.headers();
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert!(headers.contains_key("content-security-policy"));
    assert!(
        !headers.contains_key("access-control-allow-origin"),
        "no CORS unless configured"
    );
    let unknown = platform
        .call(reqwest::Method::GET, "/api/nothing-here", None, None)
        .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.code(), "NOT_FOUND");
}

#[tokio::test]
async fn configured_origins_may_call_the_api_from_a_browser() {
    let platform = Platform::start_with(&[(
        "EMPORIUM_GATEWAY__CORS_ORIGINS",
        r#"["https://shop.example.com"]"#,
    )])
    .await;
    let preflight = platform
        .http
        .request(reqwest::Method::OPTIONS, platform.url("/api/orders"))
        .header("origin", "https://shop.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://shop.example.com"
    );
    let other = platform
        .http
        .get(platform.url("/api/products"))
        .header("origin", "https://evil.example.com")
        .send()
        .await
        .unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));
}
