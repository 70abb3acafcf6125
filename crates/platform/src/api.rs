//! What every service's HTTP API shares: one error type that renders as an RFC 9457 problem
//! document with a stable code, a JSON body extractor whose errors name the field, field checks,
//! cursor pagination and id parsing.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Serialize, de::DeserializeOwned};

use crate::storage::StorageError;

/// A field that failed validation.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Every API error. Renders as `application/problem+json`:
/// `{"type","title","status","detail","code","errors":[{"field","message"}],"correlationId"}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub errors: Vec<FieldError>,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
    /// Logged, never sent: what went wrong inside.
    internal: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
            internal: None,
        }
    }

    /// 400 with the fields that are wrong.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{}: {}", one.field, one.message),
            _ => "the request has invalid fields".to_owned(),
        };
        ApiError {
            errors,
            ..ApiError::new(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", detail)
        }
    }

    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::validation(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }

    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "FORBIDDEN", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", detail)
    }

    /// 409 with a specific code (`EMAIL_TAKEN`, `ORDER_NOT_CANCELLABLE`, …) or `CONFLICT`.
    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, code, detail)
    }

    /// 422: well-formed but unprocessable (`UNKNOWN_PRODUCT`, `IDEMPOTENCY_KEY_REUSED`).
    pub fn unprocessable(code: &'static str, detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }

    pub fn rate_limited(retry_after_secs: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after_secs.max(1)),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                "too many requests; try again later",
            )
        }
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVICE_UNAVAILABLE",
                detail,
            )
        }
    }

    /// 500. The detail is logged; the client gets a generic message.
    pub fn internal(detail: impl Into<String>) -> Self {
        ApiError {
            internal: Some(detail.into()),
            ..ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "something went wrong on our side",
            )
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        if e.is_unavailable() {
            ApiError {
                internal: Some(e.to_string()),
                ..ApiError::unavailable("a database is unavailable; try again shortly")
            }
        } else {
            ApiError::internal(e.to_string())
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.detail)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    code: &'a str,
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    errors: &'a [FieldError],
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(internal) = &self.internal
            && self.status.is_server_error()
        {
            tracing::error!(code = self.code, error = %internal, "request failed");
        }
        let body = ProblemBody {
            kind: format!(
                "https://emporium.dev/problems/{}",
                self.code.to_lowercase().replace('_', "-")
            ),
            title: self.status.canonical_reason().unwrap_or("Error"),
            status: self.status.as_u16(),
            detail: &self.detail,
            code: self.code,
            errors: &self.errors,
            correlation_id: crate::telemetry::current_correlation(),
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

/// A field of a PATCH body: left alone (absent), cleared (`null`) or set. Deserialize the field as
/// an `Option<Option<T>>` that tells absent from `null`, then [`Change::from_field`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Change<T> {
    #[default]
    Keep,
    Clear,
    Set(T),
}

impl<T> Change<T> {
    /// From serde's view of a field: absent (`None`), `null` (`Some(None)`) or a value.
    pub fn from_field(field: Option<Option<T>>) -> Self {
        match field {
            None => Change::Keep,
            Some(None) => Change::Clear,
            Some(Some(value)) => Change::Set(value),
        }
    }

    /// The same change with the value mapped.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Change<U> {
        match self {
            Change::Keep => Change::Keep,
            Change::Clear => Change::Clear,
            Change::Set(value) => Change::Set(f(value)),
        }
    }
}

/// A JSON body. Wrong content type → 415; too large → 413; malformed JSON, wrong types or missing
/// fields → 400 `VALIDATION_ERROR` naming the field (`items[0].quantity`).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json"
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "the body must be JSON (Content-Type: application/json)",
            ));
        }
        let bytes = read_body(request, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// The whole body, within the platform's limit: 413 `PAYLOAD_TOO_LARGE` beyond it.
pub async fn read_body<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "PAYLOAD_TOO_LARGE",
                    "the request body is too large",
                )
            } else {
                ApiError::field("body", "the body could not be read")
            }
        })
}

/// Parses a JSON object, turning serde's error into a field-named validation error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::field("body", "must be a JSON object"));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = strip_position(&inner.to_string());
        let field = if inner.is_syntax() || inner.is_eof() {
            "body".to_owned()
        } else if let Some(missing) = message
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next())
        {
            if path == "." {
                missing.to_owned()
            } else {
                format!("{path}.{missing}")
            }
        } else if path == "." {
            "body".to_owned()
        } else {
            path
        };
        ApiError::field(field, message)
    })?;
    deserializer
        .end()
        .map_err(|_| ApiError::field("body", "unexpected data after the JSON value"))?;
    Ok(value)
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

/// Collects field errors, then fails with all of them at once.
#[derive(Debug, Default)]
pub struct Checks(Vec<FieldError>);

impl Checks {
    pub fn new() -> Self {
        Checks::default()
    }

    /// Records `message` for `field` unless `ok`.
    pub fn check(
        &mut self,
        ok: bool,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> &mut Self {
        if !ok {
            self.0.push(FieldError {
                field: field.into(),
                message: message.into(),
            });
        }
        self
    }

    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation(self.0))
        }
    }
}

/// A plausible email address: something@something.tld, no spaces, at most 254 characters.
pub fn is_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    text.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !text.chars().any(char::is_whitespace)
        && !domain.contains('@')
}

/// An id from a path: not a UUID means no such resource.
pub fn parse_id(text: &str, what: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(text).map_err(|_| ApiError::not_found(format!("no such {what}")))
}

/// `a,b,c`: product ids separated by commas, for batch reads; at most `max`. A bad id or too many is
/// a 400 naming `field`.
pub fn product_ids(text: &str, field: &str, max: usize) -> Result<Vec<uuid::Uuid>, ApiError> {
    let ids = text
        .split(',')
        .map(|part| uuid::Uuid::parse_str(part.trim()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| ApiError::field(field, "must be product ids separated by commas"))?;
    if ids.len() > max {
        return Err(ApiError::field(
            field,
            format!("must name at most {max} products"),
        ));
    }
    Ok(ids)
}

/// A query string serde could not read (a parameter malformed or given twice): 400 naming it.
pub fn query_error(rejection: axum::extract::rejection::QueryRejection) -> ApiError {
    let text = rejection.body_text();
    let field = text.split('`').nth(1).unwrap_or("query").to_owned();
    ApiError::field(field, "is malformed or given more than once")
}

/// A required id in a query parameter (`?orderId=`): 400 naming `field` when absent or not a UUID
/// (unlike a path id, which is a resource that does not exist: [`parse_id`]).
pub fn required_id(text: Option<&str>, field: &str, what: &str) -> Result<uuid::Uuid, ApiError> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Err(ApiError::field(field, "is required")),
        Some(text) => uuid::Uuid::parse_str(text)
            .map_err(|_| ApiError::field(field, format!("must be {what} id (a UUID)"))),
    }
}

/// `?limit=&cursor=`, checked: limit 1–100 (default 20); the cursor is opaque to clients.
#[derive(Debug, Clone)]
pub struct PageRequest {
    pub limit: i64,
    /// The sort key of the last item of the previous page.
    pub after: Option<String>,
}

impl PageRequest {
    pub fn parse(limit: Option<&str>, cursor: Option<&str>) -> Result<PageRequest, ApiError> {
        let limit = match limit.map(str::trim).filter(|l| !l.is_empty()) {
            None => 20,
            Some(text) => match text.parse::<i64>() {
                Ok(n) if (1..=100).contains(&n) => n,
                _ => return Err(ApiError::field("limit", "must be an integer from 1 to 100")),
            },
        };
        let after =
            match cursor.filter(|c| !c.is_empty()) {
                None => None,
                Some(cursor) => Some(decode_cursor(cursor).ok_or_else(|| {
                    ApiError::field("cursor", "is not a cursor this API gave out")
                })?),
            };
        Ok(PageRequest { limit, after })
    }

    /// Rows to fetch: one more than the page, to know whether there is a next page.
    pub fn fetch(&self) -> i64 {
        self.limit + 1
    }
}

/// `{"items":[...],"nextCursor":string|null}`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// From `request.fetch()` rows sorted by `key`.
    pub fn from_rows(
        mut rows: Vec<T>,
        request: &PageRequest,
        key: impl Fn(&T) -> String,
    ) -> Page<T> {
        let more = rows.len() as i64 > request.limit;
        rows.truncate(request.limit.max(0) as usize);
        let next_cursor = if more {
            rows.last().map(|last| encode_cursor(&key(last)))
        } else {
            None
        };
        Page {
            items: rows,
            next_cursor,
        }
    }
}

/// The cursor that continues a list after the item with sort key `key` (for clients that need one
/// per item, as GraphQL connections do).
pub fn encode_cursor(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_cursor(cursor: &str) -> Option<String> {
    if !cursor.len().is_multiple_of(2) || cursor.len() > 512 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(cursor.get(i..i + 2)?, 16).ok())
        .collect();
    // Cursors are sort keys we made: never control characters (PostgreSQL refuses NUL in TEXT).
    String::from_utf8(bytes?)
        .ok()
        .filter(|key| !key.chars().any(char::is_control))
}

/// Middleware: an error response that is not already JSON (axum's own 405, a body-limit 413, a
/// timeout's 503, an extractor's plain-text 400) becomes a problem document with the stable code for
/// its status, so that clients see one error format everywhere.
pub async fn problems_everywhere(request: Request, next: axum::middleware::Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if is_json {
        return response;
    }
    let (code, detail) = match status {
        StatusCode::BAD_REQUEST => ("VALIDATION_ERROR", "the request is malformed"),
        StatusCode::UNAUTHORIZED => ("UNAUTHENTICATED", "authentication is required"),
        StatusCode::FORBIDDEN => ("FORBIDDEN", "not allowed"),
        StatusCode::NOT_FOUND => ("NOT_FOUND", "no such resource"),
        StatusCode::METHOD_NOT_ALLOWED => ("METHOD_NOT_ALLOWED", "this method is not allowed here"),
        StatusCode::PAYLOAD_TOO_LARGE => ("PAYLOAD_TOO_LARGE", "the request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ("UNSUPPORTED_MEDIA_TYPE", "unsupported content type")
        }
        StatusCode::TOO_MANY_REQUESTS => ("RATE_LIMITED", "too many requests; try again later"),
        StatusCode::REQUEST_TIMEOUT
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => (
            "SERVICE_UNAVAILABLE",
            "the service did not answer in time; try again",
        ),
        s if s.is_client_error() => ("BAD_REQUEST", "the request cannot be served"),
        _ => ("INTERNAL", "something went wrong on our side"),
    };
    let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
    let allow = response.headers().get(header::ALLOW).cloned();
    let mut problem = ApiError::new(status, code, detail).into_response();
    if let Some(value) = retry_after {
        problem.headers_mut().insert(header::RETRY_AFTER, value);
    }
    if let Some(value) = allow {
        problem.headers_mut().insert(header::ALLOW, value);
    }
    problem
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Order {
        items: Vec<Item>,
        shipping_address: String,
    }
    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Item {
        product_id: String,
        quantity: i64,
    }

    fn field_of(json: &str) -> String {
        parse_json::<Order>(json.as_bytes()).unwrap_err().errors[0]
            .field
            .clone()
    }

    #[test]
    fn json_errors_name_the_field() {
        assert_eq!(
            field_of(r#"{"items":[{"productId":"a","quantity":"x"}],"shippingAddress":"s"}"#),
            "items[0].quantity"
        );
        assert_eq!(field_of(r#"{"items":[]}"#), "shippingAddress");
        assert_eq!(
            field_of(r#"{"items":[{"quantity":1}],"shippingAddress":"s"}"#),
            "items[0].productId"
        );
        assert_eq!(field_of(r#"{"items": ["#), "body");
        assert_eq!(field_of(r#"[1,2]"#), "body");
        assert_eq!(
            field_of(r#"{"items":[],"shippingAddress":"s"} trailing"#),
            "body"
        );
    }

    #[test]
    fn page_requests_are_checked_and_cursors_round_trip() {
        assert_eq!(PageRequest::parse(None, None).unwrap().limit, 20);
        assert!(PageRequest::parse(Some("0"), None).is_err());
        assert!(PageRequest::parse(Some("101"), None).is_err());
        assert!(PageRequest::parse(Some("ten"), None).is_err());
        assert!(PageRequest::parse(None, Some("zz")).is_err());
        assert!(
            PageRequest::parse(None, Some("00")).is_err(),
            "a NUL key is no cursor of ours"
        );
        let request = PageRequest::parse(Some("2"), None).unwrap();
        let page = Page::from_rows(vec!["a", "b", "c"], &request, |s| (*s).to_owned());
        assert_eq!(page.items, vec!["a", "b"]);
        let next = PageRequest::parse(None, page.next_cursor.as_deref()).unwrap();
        assert_eq!(next.after.as_deref(), Some("b"));
        let last = Page::from_rows(vec!["c"], &request, |s| (*s).to_owned());
        assert!(last.next_cursor.is_none());
    }

    #[test]
    fn emails_are_checked() {
        assert!(is_email("ada@example.com"));
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a da@example.com",
            "ada@@example.com",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
    }
}
