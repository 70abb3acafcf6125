//! Telemetry: JSON logs, Prometheus metrics, and the correlation id that ties a request to every
//! event and log line it causes.

use std::{sync::OnceLock, time::Instant};

use axum::{
    extract::{MatchedPath, Request},
    http::{HeaderValue, header::HeaderName},
    middleware::Next,
    response::Response,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::Instrument;
use tracing_subscriber::{EnvFilter, fmt};

pub const CORRELATION_HEADER: HeaderName = HeaderName::from_static("x-correlation-id");

tokio::task_local! {
    /// The correlation id of the request being served (set by [`http_layer`]).
    static CORRELATION: String;
}

/// The correlation id of the request this task is serving, if any.
pub fn current_correlation() -> Option<String> {
    CORRELATION.try_with(Clone::clone).ok()
}

/// Starts JSON logging on stdout with `filter` (EnvFilter syntax). Calling it again does nothing.
pub fn init_logging(filter: &str) -> Result<(), String> {
    let filter =
        EnvFilter::try_new(filter).map_err(|e| format!("invalid configuration: `log`: {e}"))?;
    // A second call (tests starting several platforms in one process) keeps the first subscriber.
    let _ = fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .flatten_event(true)
        .with_target(true)
        .with_writer(std::io::stdout)
        .try_init();
    Ok(())
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ])
            .and_then(|builder| {
                // Counts, not durations: events per consumer batch and per consumer transaction.
                let counts = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
                builder
                    .set_buckets_for_metric(
                        Matcher::Full(crate::bus::consumer::TRANSACTION_EVENTS_METRIC.to_owned()),
                        &counts,
                    )?
                    .set_buckets_for_metric(
                        Matcher::Full(crate::bus::consumer::BATCH_EVENTS_METRIC.to_owned()),
                        &counts,
                    )
            })
            .unwrap_or_else(|_| PrometheusBuilder::new())
            .build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first, in which case ours renders empty:
        // acceptable for a test harness, never the case in the binary.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// The correlation id of a request, in its extensions; also an extractor.
#[derive(Debug, Clone)]
pub struct CorrelationId(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for CorrelationId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<CorrelationId>()
            .cloned()
            .unwrap_or_else(|| CorrelationId::from_header(None)))
    }
}

impl CorrelationId {
    /// Accepts a caller's id if it is sane (1–128 visible ASCII characters), else makes one.
    pub fn from_header(value: Option<&HeaderValue>) -> Self {
        let given = value
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()));
        CorrelationId(given.map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned))
    }
}

/// Middleware: correlation id in and out, a span per request, request count and latency metrics.
pub async fn http_layer(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let correlation = CorrelationId::from_header(request.headers().get(&CORRELATION_HEADER));
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let span = tracing::info_span!("http", service = "gateway", method = %method, route = %route,
        correlation_id = %correlation.0);
    request.extensions_mut().insert(correlation.clone());
    let mut response = CORRELATION
        .scope(
            correlation.0.clone(),
            next.run(request).instrument(span.clone()),
        )
        .await;
    let status = response.status().as_u16();
    if let Ok(value) = HeaderValue::from_str(&correlation.0) {
        response.headers_mut().insert(CORRELATION_HEADER, value);
    }
    let elapsed = started.elapsed();
    metrics::counter!("emporium_http_requests_total", "method" => method.to_string(),
        "route" => route.clone(), "status" => status.to_string())
    .increment(1);
    metrics::histogram!("emporium_http_request_duration_seconds", "method" => method.to_string(),
        "route" => route)
    .record(elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::info!(
            status,
            elapsed_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        );
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sane_correlation_id_is_kept_and_a_bad_one_replaced() {
        let kept = CorrelationId::from_header(Some(&HeaderValue::from_static("abc-123")));
        assert_eq!(kept.0, "abc-123");
        let long = "x".repeat(200);
        let replaced = CorrelationId::from_header(Some(&HeaderValue::from_str(&long).unwrap()));
        assert_ne!(replaced.0, long);
        assert!(uuid::Uuid::parse_str(&replaced.0).is_ok());
        assert!(uuid::Uuid::parse_str(&CorrelationId::from_header(None).0).is_ok());
    }
}
