//! What every request meets at the edge before any service: the token check, the per-client rate
//! limit, CORS and security headers.

use std::{net::SocketAddr, num::NonZeroU32, sync::Arc};

use axum::{
    extract::{ConnectInfo, Request},
    http::{HeaderName, HeaderValue, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use emporium_platform::{api::ApiError, auth::Tokens, config::GatewayConfig};
use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    state::keyed::DefaultKeyedStateStore,
};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

/// Who a request comes from, for rate limiting: its token's user, else its address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    User(String),
    Address(std::net::IpAddr),
    Unknown,
}

/// Per-client token buckets.
pub struct Limiter {
    limiter: RateLimiter<ClientKey, DefaultKeyedStateStore<ClientKey>, DefaultClock>,
}

/// Clients remembered before the limiter forgets those whose buckets are full again.
const REMEMBERED_CLIENTS: usize = 10_000;

impl Limiter {
    pub fn new(config: &GatewayConfig) -> Limiter {
        let rate = NonZeroU32::new(config.rate_limit_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.rate_limit_burst).unwrap_or(NonZeroU32::MIN);
        Limiter {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
        }
    }

    /// `Ok` to go on, or the whole seconds to wait.
    pub fn check(&self, key: &ClientKey) -> Result<(), u64> {
        if self.limiter.len() > REMEMBERED_CLIENTS {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }
}

/// State of the edge middleware.
#[derive(Clone)]
pub struct Edge {
    pub tokens: Arc<Tokens>,
    pub limiter: Arc<Limiter>,
}

/// Checks the token (a bad one is refused here, before any service; the service checks it again),
/// then the client's rate limit.
pub async fn guard(
    axum::extract::State(edge): axum::extract::State<Edge>,
    request: Request,
    next: Next,
) -> Response {
    let key = match bearer(&request) {
        Bearer::None => request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(ClientKey::Unknown, |info| ClientKey::Address(info.0.ip())),
        Bearer::Malformed => {
            return ApiError::unauthenticated("the Authorization header must be `Bearer <token>`")
                .into_response();
        }
        Bearer::Token(token) => match edge.tokens.verify(token) {
            Ok(claims) => ClientKey::User(claims.sub.to_string()),
            Err(e) => return e.into_response(),
        },
    };
    if let Err(wait) = edge.limiter.check(&key) {
        metrics::counter!("emporium_gateway_rate_limited_total").increment(1);
        return ApiError::rate_limited(wait).into_response();
    }
    next.run(request).await
}

enum Bearer<'a> {
    None,
    Malformed,
    Token(&'a str),
}

fn bearer(request: &Request) -> Bearer<'_> {
    match request.headers().get(header::AUTHORIZATION) {
        None => Bearer::None,
        Some(value) => match value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) {
            Some(token) if !token.trim().is_empty() => Bearer::Token(token.trim()),
            _ => Bearer::Malformed,
        },
    }
}

/// CORS for the configured origins; `None` when none are configured (same-origin only).
pub fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::from(Any)
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static("x-correlation-id"),
            ])
            .expose_headers([
                header::LOCATION,
                header::RETRY_AFTER,
                HeaderName::from_static("x-correlation-id"),
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// Headers every answer carries unless its handler set its own (the dashboard sets its own
/// Content-Security-Policy).
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(per_second: u32, burst: u32) -> GatewayConfig {
        GatewayConfig {
            cors_origins: Vec::new(),
            rate_limit_per_second: per_second,
            rate_limit_burst: burst,
            graphql_depth_limit: 15,
            graphql_complexity_limit: 1000,
            services: Default::default(),
        }
    }

    #[test]
    fn a_client_over_its_burst_waits_and_others_do_not() {
        let limiter = Limiter::new(&config(1, 3));
        let alice = ClientKey::User("alice".into());
        for _ in 0..3 {
            assert_eq!(limiter.check(&alice), Ok(()));
        }
        let wait = limiter.check(&alice).unwrap_err();
        assert!((1..=1).contains(&wait), "one token a second: wait {wait}s");
        assert_eq!(limiter.check(&ClientKey::User("bob".into())), Ok(()));
    }
}
