//! How the gateway reaches a service: one [`ServiceClient`] per service, whose transport is the
//! service's own router called in process (embedded) or its HTTP address (distributed). REST
//! forwarding and GraphQL resolvers both go through it, so both modes run the same gateway code.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header},
};
use emporium_platform::{api::ApiError, telemetry};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tower::ServiceExt;

/// Which service owns which paths: the longest matching pattern wins; `*` matches one segment.
/// The gateway forwards `/api/<resource>` to the owner unchanged (CONTRACT.md §1).
pub const ROUTES: &[(&str, &str)] = &[
    ("/api/auth", "users"),
    ("/api/users", "users"),
    ("/api/products/*/recommendations", "recommendations"),
    ("/api/products", "catalog"),
    ("/api/inventory", "inventory"),
    ("/api/orders", "orders"),
    ("/api/payments", "payments"),
    ("/api/shipments", "shipping"),
    ("/api/notifications", "notifications"),
    ("/api/templates", "notifications"),
    ("/api/recommendations", "recommendations"),
    ("/api/promotions", "promotions"),
    ("/api/admin", "operations"),
    ("/api/events", "operations"),
];

/// The service that owns `path`, if any.
pub fn owner(path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    ROUTES
        .iter()
        .filter(|(pattern, _)| {
            let pattern: Vec<&str> = pattern.split('/').collect();
            pattern.len() <= segments.len()
                && pattern
                    .iter()
                    .zip(&segments)
                    .all(|(p, s)| *p == "*" || p == s)
        })
        .max_by_key(|(pattern, _)| pattern.split('/').count())
        .map(|(_, service)| *service)
}

/// A way to send one request to a service.
#[derive(Clone)]
pub enum Transport {
    /// The service's router, called in this process (its layers included).
    InProcess(Router),
    /// The service's base URL (`http://host:port`), called over HTTP.
    Http { base: String, http: reqwest::Client },
}

/// One service, as the gateway sees it.
#[derive(Clone)]
pub struct ServiceClient {
    pub service: &'static str,
    transport: Transport,
}

/// Headers a client sends that the service needs; anything else (cookies above all) stays at the
/// edge.
const FORWARDED: [header::HeaderName; 5] = [
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    header::ACCEPT,
    telemetry::CORRELATION_HEADER,
    header::HeaderName::from_static("idempotency-key"),
];

impl ServiceClient {
    pub fn new(service: &'static str, transport: Transport) -> ServiceClient {
        ServiceClient { service, transport }
    }

    /// Sends `request` to the service and returns its answer; a service that cannot be reached is
    /// a 503 problem, never a hang or a 500.
    pub async fn call(&self, request: Request<Body>) -> Response<Body> {
        metrics::counter!("emporium_gateway_upstream_requests_total", "service" => self.service)
            .increment(1);
        match &self.transport {
            Transport::InProcess(router) => {
                match router.clone().oneshot(in_process(request)).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                }
            }
            Transport::Http { base, http } => match forward(http, base, request).await {
                Ok(response) => response,
                Err(e) => {
                    tracing::warn!(service = self.service, error = %e, "service unreachable");
                    axum::response::IntoResponse::into_response(ApiError::unavailable(format!(
                        "the {} service is unreachable",
                        self.service
                    )))
                }
            },
        }
    }

    /// Calls `method path` with an optional JSON body as the caller (`authorization` is the caller's
    /// own header, passed on untouched) and decodes the JSON answer; a problem document becomes a
    /// [`ServiceError`] with the service's status and code.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        authorization: Option<&HeaderValue>,
        body: Option<&impl Serialize>,
    ) -> Result<T, ServiceError> {
        let (status, bytes) = self.send(method, path, authorization, body).await?;
        if status.is_success() {
            serde_json::from_slice(&bytes).map_err(|e| {
                tracing::error!(service = self.service, error = %e, "unexpected answer");
                ServiceError::internal()
            })
        } else {
            Err(ServiceError::from_problem(status, &bytes))
        }
    }

    /// Like [`ServiceClient::json`] for answers without a body (204).
    pub async fn empty(
        &self,
        method: Method,
        path: &str,
        authorization: Option<&HeaderValue>,
    ) -> Result<(), ServiceError> {
        let (status, bytes) = self.send(method, path, authorization, None::<&()>).await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(ServiceError::from_problem(status, &bytes))
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        authorization: Option<&HeaderValue>,
        body: Option<&impl Serialize>,
    ) -> Result<(StatusCode, axum::body::Bytes), ServiceError> {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value.clone());
        }
        if let Some(id) = telemetry::current_correlation()
            && let Ok(value) = HeaderValue::from_str(&id)
        {
            request = request.header(telemetry::CORRELATION_HEADER, value);
        }
        let body = match body {
            Some(body) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(serde_json::to_vec(body).map_err(|_| ServiceError::internal())?)
            }
            None => Body::empty(),
        };
        let request = request.body(body).map_err(|_| ServiceError::internal())?;
        let response = self.call(request).await;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), MAX_ANSWER)
            .await
            .map_err(|_| ServiceError::unavailable(self.service))?;
        Ok((status, bytes))
    }
}

/// The request as the service would get it over HTTP: the gateway's own extensions (its route's
/// path parameters above all) stay behind; the correlation id goes along.
fn in_process(request: Request<Body>) -> Request<Body> {
    let (parts, body) = request.into_parts();
    let mut fresh = Request::new(body);
    *fresh.method_mut() = parts.method;
    *fresh.uri_mut() = parts.uri;
    *fresh.version_mut() = parts.version;
    *fresh.headers_mut() = parts.headers;
    if let Some(correlation) = parts.extensions.get::<telemetry::CorrelationId>() {
        fresh.extensions_mut().insert(correlation.clone());
    }
    fresh
}

/// A service's problem document (or the gateway's own, when the service cannot be reached), as
/// GraphQL passes it on: the same status, `code`, detail and fields as REST.
#[derive(Debug, Clone, Deserialize)]
pub struct ServiceError {
    #[serde(default)]
    pub status: u16,
    pub code: String,
    #[serde(default)]
    pub detail: String,
    #[serde(default)]
    pub errors: Vec<FieldProblem>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FieldProblem {
    pub field: String,
    pub message: String,
}

impl ServiceError {
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> ServiceError {
        ServiceError {
            status: status.as_u16(),
            code: code.to_owned(),
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    fn internal() -> ServiceError {
        ServiceError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "something went wrong on our side",
        )
    }

    fn unavailable(service: &str) -> ServiceError {
        ServiceError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            format!("the {service} service did not answer; try again"),
        )
    }

    fn from_problem(status: StatusCode, body: &[u8]) -> ServiceError {
        match serde_json::from_slice::<ServiceError>(body) {
            Ok(problem) => ServiceError {
                status: status.as_u16(),
                ..problem
            },
            Err(_) => ServiceError::new(status, "INTERNAL", "the service gave no problem document"),
        }
    }
}

/// The largest answer the gateway reads from a service for GraphQL (a page of 100 orders fits).
const MAX_ANSWER: usize = 16 * 1024 * 1024;

async fn forward(
    http: &reqwest::Client,
    base: &str,
    request: Request<Body>,
) -> Result<Response<Body>, Box<dyn std::error::Error + Send + Sync>> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers = HeaderMap::new();
    for name in &FORWARDED {
        if let Some(value) = parts.headers.get(name) {
            headers.insert(name.clone(), value.clone());
        }
    }
    // The edge has already refused bodies over the configured limit.
    let body = axum::body::to_bytes(body, usize::MAX).await?;
    let answer = http
        .request(parts.method, format!("{base}{path}"))
        .headers(headers)
        .body(body)
        .send()
        .await?;
    let mut response = Response::builder().status(answer.status());
    if let Some(headers) = response.headers_mut() {
        for (name, value) in answer.headers() {
            if !is_hop_by_hop(name) {
                headers.insert(name.clone(), value.clone());
            }
        }
    }
    let bytes = answer.bytes().await?;
    Ok(response
        .body(Body::from(bytes))
        .unwrap_or_else(|_| Response::new(Body::empty())))
}

fn is_hop_by_hop(name: &header::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "transfer-encoding" | "upgrade" | "content-length"
    )
}

/// Every service the gateway knows, by name.
#[derive(Clone, Default)]
pub struct Upstreams {
    clients: BTreeMap<&'static str, ServiceClient>,
}

impl Upstreams {
    /// Every service in this process, reached through one router holding all their routes.
    pub fn in_process(router: Router) -> Upstreams {
        let mut clients = BTreeMap::new();
        for (_, service) in ROUTES {
            clients.insert(
                *service,
                ServiceClient::new(service, Transport::InProcess(router.clone())),
            );
        }
        Upstreams { clients }
    }

    /// Each service at its own base URL (`http://host:port`), e.g. from configuration.
    pub fn over_http(addresses: &BTreeMap<String, String>, timeout: Duration) -> Upstreams {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .unwrap_or_default();
        let mut clients = BTreeMap::new();
        for (_, service) in ROUTES {
            if let Some(base) = addresses.get(*service) {
                clients.insert(
                    *service,
                    ServiceClient::new(
                        service,
                        Transport::Http {
                            base: base.trim_end_matches('/').to_owned(),
                            http: http.clone(),
                        },
                    ),
                );
            }
        }
        Upstreams { clients }
    }

    pub fn get(&self, service: &str) -> Result<&ServiceClient, ServiceError> {
        self.clients
            .get(service)
            .ok_or_else(|| ServiceError::unavailable(service))
    }
}

/// Shared by the edge and GraphQL.
pub type SharedUpstreams = Arc<Upstreams>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_path_goes_to_the_service_that_owns_it() {
        assert_eq!(owner("/api/auth/login"), Some("users"));
        assert_eq!(owner("/api/users/me"), Some("users"));
        assert_eq!(owner("/api/products"), Some("catalog"));
        assert_eq!(owner("/api/products/abc"), Some("catalog"));
        assert_eq!(
            owner("/api/products/abc/recommendations"),
            Some("recommendations")
        );
        assert_eq!(owner("/api/inventory/abc/adjust"), Some("inventory"));
        assert_eq!(owner("/api/shipments/x/dispatch"), Some("shipping"));
        assert_eq!(owner("/api/templates/welcome"), Some("notifications"));
        assert_eq!(owner("/api/events/stream"), Some("operations"));
        assert_eq!(owner("/api/productsx"), None);
        assert_eq!(owner("/api"), None);
        assert_eq!(owner("/graphql"), None);
    }

    /// The distributed transport: a real HTTP server standing in for the catalog service.
    #[tokio::test]
    async fn over_http_a_request_reaches_the_service_with_its_headers_and_comes_back_whole() {
        use axum::{Json, routing::post};
        let service = Router::new().route(
            "/api/products/{id}",
            post(|headers: HeaderMap, body: String| async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                (
                    StatusCode::CREATED,
                    [(header::LOCATION, "/api/products/1")],
                    Json(serde_json::json!({
                        "authorization": header("authorization"),
                        "correlation": header("x-correlation-id"),
                        "idempotency": header("idempotency-key"),
                        "cookie": header("cookie"),
                        "body": body,
                    })),
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, service).await });
        let upstreams = Upstreams::over_http(
            &BTreeMap::from([("catalog".to_owned(), format!("http://{addr}/"))]),
            Duration::from_secs(5),
        );
        let request = Request::builder()
            .method(Method::POST)
            .uri("/api/products/1?x=y")
            .header(header::AUTHORIZATION, "Bearer t")
            .header("x-correlation-id", "c-1")
            .header("idempotency-key", "k-1")
            .header(header::COOKIE, "session=secret")
            .body(Body::from("hello"))
            .unwrap();
        let client = upstreams.get(owner(request.uri().path()).unwrap()).unwrap();
        let response = client.call(request).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(response.headers()[header::LOCATION], "/api/products/1");
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let echoed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            echoed,
            serde_json::json!({"authorization": "Bearer t", "correlation": "c-1",
                "idempotency": "k-1", "cookie": null, "body": "hello"})
        );
    }

    #[tokio::test]
    async fn a_service_that_cannot_be_reached_is_a_503_problem() {
        // A port nothing listens on: bind one, then let it go.
        let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let upstreams = Upstreams::over_http(
            &BTreeMap::from([("orders".to_owned(), format!("http://{addr}"))]),
            Duration::from_secs(5),
        );
        let client = upstreams.get("orders").unwrap();
        let error = client
            .json::<serde_json::Value>(Method::GET, "/api/orders", None, None::<&()>)
            .await
            .unwrap_err();
        assert_eq!(
            (error.status, error.code.as_str()),
            (503, "SERVICE_UNAVAILABLE")
        );
        assert!(upstreams.get("catalog").is_err(), "no address, no client");
    }
}
