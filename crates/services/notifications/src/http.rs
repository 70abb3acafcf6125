//! The HTTP API: `/api/notifications...` and `/api/templates...`.

use std::collections::HashMap;

use axum::{
    Json, Router,
    extract::{FromRequest, Path, Query, Request, State, rejection::QueryRejection},
    http::{StatusCode, header},
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use emporium_platform::{
    api::{self, ApiError, ApiJson, Page, PageRequest},
    auth::{Admin, AuthUser},
    telemetry::CorrelationId,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{
    app::{App, SendRequest},
    domain,
    store::{NotificationRow, TemplateRow},
};

pub fn router(app: App) -> Router {
    Router::new()
        .route("/api/notifications", post(send))
        .route("/api/notifications/me", get(my_notifications))
        .route("/api/notifications/me/read", post(mark_read))
        .route("/api/templates", get(list_templates))
        .route("/api/templates/{name}", get(get_template).put(put_template))
        .route("/api/templates/{name}/render", post(render_template))
        .with_state(app)
}

/// The service's endpoints, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(my_notifications, mark_read, send, list_templates, get_template, put_template, render_template),
    components(schemas(
        NotificationView, NotificationPage, ReadRequest, ReadResult, SendRequest, Accepted,
        TemplateView, TemplatePage, TemplateBody, RenderRequest, RenderedView
    )),
    tags((name = "notifications", description = "A user's notifications, admins' messages and the message templates"))
)]
pub struct NotificationsApi;

fn millis_to_time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

type PageQuery = Result<Query<HashMap<String, String>>, QueryRejection>;

fn page_request(query: PageQuery) -> Result<PageRequest, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::field("query", e.body_text()))?;
    PageRequest::parse(
        query.get("limit").map(String::as_str),
        query.get("cursor").map(String::as_str),
    )
}

// ------------------------------------------------------------- notifications

/// A notification as its user sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationView {
    id: String,
    /// Null for an admin's literal message.
    template: Option<String>,
    #[schema(example = "email")]
    channel: String,
    #[schema(example = "critical")]
    priority: String,
    /// `QUEUED`, `SENT`, `FAILED` or `SUPPRESSED`.
    #[schema(example = "SENT")]
    status: String,
    subject: String,
    created_at: DateTime<Utc>,
    sent_at: Option<DateTime<Utc>>,
    read_at: Option<DateTime<Utc>>,
}

impl From<NotificationRow> for NotificationView {
    fn from(row: NotificationRow) -> Self {
        NotificationView {
            id: row.id,
            template: row.template,
            channel: row.channel,
            priority: row.priority,
            status: row.status,
            subject: row.subject,
            created_at: millis_to_time(row.created_at),
            sent_at: row.sent_at.map(millis_to_time),
            read_at: row.read_at.map(millis_to_time),
        }
    }
}

#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // documents `Page<NotificationView>` for the OpenAPI document
struct NotificationPage {
    items: Vec<NotificationView>,
    next_cursor: Option<String>,
}

/// `GET /api/notifications/me`: the caller's notifications, newest first.
#[utoipa::path(get, path = "/api/notifications/me", tag = "notifications",
    params(("limit" = Option<i64>, Query, description = "1-100, default 20"),
           ("cursor" = Option<String>, Query, description = "From the previous page's nextCursor")),
    responses((status = 200, body = NotificationPage), (status = 400, description = "Bad limit or cursor"),
              (status = 401)),
    security(("bearer" = [])))]
async fn my_notifications(
    user: AuthUser,
    State(app): State<App>,
    query: PageQuery,
) -> Result<Json<Page<NotificationView>>, ApiError> {
    let page = page_request(query)?;
    let rows = app.my_notifications(user.id, &page).await?;
    Ok(Json(Page {
        items: rows.items.into_iter().map(NotificationView::from).collect(),
        next_cursor: rows.next_cursor,
    }))
}

/// Which notifications to mark read; all of the caller's when `ids` is absent or null.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadRequest {
    ids: Option<Vec<String>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadResult {
    /// How many unread notifications this call marked read.
    marked: u64,
}

/// The body of `POST /api/notifications/me/read`, which may be left out entirely.
struct OptionalJson<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if request.headers().contains_key(header::CONTENT_TYPE) {
            let ApiJson(value) = ApiJson::<T>::from_request(request, state).await?;
            return Ok(OptionalJson(value));
        }
        // No content type: acceptable only with no body at all.
        let bytes = api::read_body(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            Ok(OptionalJson(T::default()))
        } else {
            Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "the body must be JSON (Content-Type: application/json)",
            ))
        }
    }
}

/// `POST /api/notifications/me/read`: marks the caller's notifications read (`ids` that are not
/// the caller's are ignored). The body may be omitted: all of them.
#[utoipa::path(post, path = "/api/notifications/me/read", tag = "notifications",
    request_body(content = Option<ReadRequest>),
    responses((status = 200, body = ReadResult), (status = 400, description = "An id is not an id"),
              (status = 401), (status = 415)),
    security(("bearer" = [])))]
async fn mark_read(
    user: AuthUser,
    State(app): State<App>,
    correlation: CorrelationId,
    OptionalJson(request): OptionalJson<ReadRequest>,
) -> Result<Json<ReadResult>, ApiError> {
    let marked = app.mark_read(user.id, request.ids, &correlation.0).await?;
    Ok(Json(ReadResult { marked }))
}

/// What `POST /api/notifications` answers: the message is queued.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    id: String,
    #[schema(example = "QUEUED")]
    status: String,
}

/// `POST /api/notifications` (admin): queues a message from a template or a literal subject and body.
#[utoipa::path(post, path = "/api/notifications", tag = "notifications", request_body = SendRequest,
    responses((status = 202, body = Accepted),
              (status = 400, description = "Invalid field (named)"),
              (status = 401), (status = 403), (status = 415),
              (status = 422, description = "UNKNOWN_TEMPLATE, TEMPLATE_RENDER_FAILED or UNKNOWN_RECIPIENT")),
    security(("bearer" = [])))]
async fn send(
    _: Admin,
    State(app): State<App>,
    correlation: CorrelationId,
    ApiJson(request): ApiJson<SendRequest>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let (id, status) = app.send(request, &correlation.0).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            id: id.to_string(),
            status: status.as_str().to_owned(),
        }),
    ))
}

// ----------------------------------------------------------------- templates

/// A message template (minijinja syntax, strict: every variable it uses must be supplied).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateView {
    name: String,
    subject: String,
    body: String,
    /// The variables the template uses.
    variables: Vec<String>,
    /// Shipped with the service (and perhaps edited since) rather than created by an admin.
    shipped: bool,
    updated_at: DateTime<Utc>,
}

impl From<TemplateRow> for TemplateView {
    fn from(row: TemplateRow) -> Self {
        TemplateView {
            variables: domain::variables_of(&row.subject, &row.body),
            name: row.name,
            subject: row.subject,
            body: row.body,
            shipped: row.shipped,
            updated_at: millis_to_time(row.updated_at),
        }
    }
}

#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // documents `Page<TemplateView>` for the OpenAPI document
struct TemplatePage {
    items: Vec<TemplateView>,
    next_cursor: Option<String>,
}

/// `GET /api/templates` (any signed-in user): every template, by name.
#[utoipa::path(get, path = "/api/templates", tag = "notifications",
    params(("limit" = Option<i64>, Query, description = "1-100, default 20"),
           ("cursor" = Option<String>, Query, description = "From the previous page's nextCursor")),
    responses((status = 200, body = TemplatePage), (status = 400), (status = 401)),
    security(("bearer" = [])))]
async fn list_templates(
    _: AuthUser,
    State(app): State<App>,
    query: PageQuery,
) -> Result<Json<Page<TemplateView>>, ApiError> {
    let page = page_request(query)?;
    let rows = app.templates(&page).await?;
    Ok(Json(Page {
        items: rows.items.into_iter().map(TemplateView::from).collect(),
        next_cursor: rows.next_cursor,
    }))
}

/// `GET /api/templates/{name}` (any signed-in user).
#[utoipa::path(get, path = "/api/templates/{name}", tag = "notifications",
    params(("name" = String, Path, description = "Template name")),
    responses((status = 200, body = TemplateView), (status = 404), (status = 401)),
    security(("bearer" = [])))]
async fn get_template(
    _: AuthUser,
    State(app): State<App>,
    Path(name): Path<String>,
) -> Result<Json<TemplateView>, ApiError> {
    Ok(Json(app.template(&name).await?.into()))
}

/// A template's new text.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateBody {
    subject: String,
    body: String,
}

/// `PUT /api/templates/{name}` (admin): replaces a template (200) or creates one (201); both parts
/// must compile.
#[utoipa::path(put, path = "/api/templates/{name}", tag = "notifications",
    params(("name" = String, Path, description = "Template name: lowercase letters, digits, _")),
    request_body = TemplateBody,
    responses((status = 200, body = TemplateView), (status = 201, body = TemplateView),
              (status = 400, description = "subject or body is not a valid template (named)"),
              (status = 401), (status = 403), (status = 415)),
    security(("bearer" = [])))]
async fn put_template(
    _: Admin,
    State(app): State<App>,
    Path(name): Path<String>,
    correlation: CorrelationId,
    ApiJson(request): ApiJson<TemplateBody>,
) -> Result<(StatusCode, Json<TemplateView>), ApiError> {
    let (row, created) = app
        .put_template(&name, &request.subject, &request.body, &correlation.0)
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(row.into())))
}

/// Variables to render a template with.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RenderRequest {
    #[serde(default)]
    #[schema(value_type = Object)]
    variables: Map<String, Value>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RenderedView {
    subject: String,
    body: String,
}

/// `POST /api/templates/{name}/render` (any signed-in user): a preview; nothing is sent or stored.
/// A variable the template needs but the request lacks is 422 `TEMPLATE_RENDER_FAILED`.
#[utoipa::path(post, path = "/api/templates/{name}/render", tag = "notifications",
    params(("name" = String, Path, description = "Template name")),
    request_body = RenderRequest,
    responses((status = 200, body = RenderedView), (status = 400), (status = 404),
              (status = 401), (status = 415),
              (status = 422, description = "TEMPLATE_RENDER_FAILED: names the missing variable")),
    security(("bearer" = [])))]
async fn render_template(
    _: AuthUser,
    State(app): State<App>,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<RenderRequest>,
) -> Result<Json<RenderedView>, ApiError> {
    let rendered = app.render(&name, &request.variables).await?;
    Ok(Json(RenderedView {
        subject: rendered.subject,
        body: rendered.body,
    }))
}
