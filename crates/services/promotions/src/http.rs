//! Promotions' REST API: `/api/promotions` (admins only).

use axum::{
    Json, Router,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use chrono::{DateTime, Utc};
use emporium_platform::{
    api::{self, ApiError, ApiJson, Page, PageRequest, parse_id},
    auth::Admin,
    storage::StorageError,
    telemetry::CorrelationId,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    app::{App, CreatePromotion},
    domain::Status,
    store::{PromotionRow, time},
};

pub fn router(app: App) -> Router {
    Router::new()
        .route(
            "/api/promotions",
            get(list_promotions).post(create_promotion),
        )
        .route("/api/promotions/{id}", get(get_promotion))
        .with_state(app)
}

/// A promotion and where it is in its schedule.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Promotion {
    pub id: Uuid,
    pub name: String,
    pub message: String,
    pub product_ids: Vec<Uuid>,
    pub category: Option<String>,
    pub starts_at: Option<DateTime<Utc>>,
    pub cron: Option<String>,
    /// `SCHEDULED` (not launched yet), `ACTIVE` (a cron promotion that launched and will again)
    /// or `LAUNCHED` (launched, nothing more to come).
    #[schema(example = "SCHEDULED")]
    pub status: String,
    /// When it last launched (possibly later than the occurrence, after downtime).
    pub last_launched_at: Option<DateTime<Utc>>,
    /// Its next launch; null once nothing more is to come.
    pub next_launch_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

fn view(row: &PromotionRow) -> Result<Promotion, StorageError> {
    let last_launched_at = row.last_launched_at.map(time).transpose()?;
    let next_launch_at = row.next_launch_at.map(time).transpose()?;
    Ok(Promotion {
        id: row.id,
        name: row.name.clone(),
        message: row.message.clone(),
        product_ids: row.product_ids()?,
        category: row.category.clone(),
        starts_at: row.starts_at.map(time).transpose()?,
        cron: row.cron.clone(),
        status: Status::of(last_launched_at, next_launch_at)
            .as_str()
            .to_owned(),
        last_launched_at,
        next_launch_at,
        created_at: time(row.created_at)?,
    })
}

/// A page of promotions, newest first.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // documents `Page<Promotion>` for the OpenAPI document
struct PromotionPage {
    items: Vec<Promotion>,
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct PageQuery {
    /// 1 to 100, default 20.
    pub limit: Option<String>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// Creates a promotion (admin). It launches at `startsAt` (now when absent), or at every
/// occurrence of `cron` from `startsAt` (or now) on; each launch emits `PromotionLaunched`.
#[utoipa::path(post, path = "/api/promotions", tag = "promotions", security(("bearer" = [])),
    request_body = CreatePromotion,
    responses(
        (status = 201, body = Promotion, headers(("Location" = String, description = "/api/promotions/{id}"))),
        (status = 400, description = "A field is invalid (named in `errors`): `name`, `message`, `productIds`, `category`, `startsAt` or `cron`"),
        (status = 401, description = "No valid token"),
        (status = 403, description = "Not an admin"),
        (status = 415, description = "Not JSON"),
    ))]
pub async fn create_promotion(
    Admin(_): Admin,
    State(app): State<App>,
    correlation: CorrelationId,
    ApiJson(body): ApiJson<CreatePromotion>,
) -> Result<Response, ApiError> {
    let row = app.create(body, &correlation.0, Utc::now()).await?;
    let location = HeaderValue::from_str(&format!("/api/promotions/{}", row.id))
        .map_err(|e| ApiError::internal(format!("bad Location header: {e}")))?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(view(&row)?),
    )
        .into_response())
}

/// Promotions, newest first (admin).
#[utoipa::path(get, path = "/api/promotions", tag = "promotions", params(PageQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, body = PromotionPage),
        (status = 400, description = "Bad `limit` or `cursor`"),
        (status = 401, description = "No valid token"),
        (status = 403, description = "Not an admin"),
    ))]
pub async fn list_promotions(
    Admin(_): Admin,
    State(app): State<App>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<Page<Promotion>>, ApiError> {
    let Query(query) = query.map_err(api::query_error)?;
    let request = PageRequest::parse(query.limit.as_deref(), query.cursor.as_deref())?;
    let page = app.list(&request).await?;
    Ok(Json(Page {
        items: page.items.iter().map(view).collect::<Result<_, _>>()?,
        next_cursor: page.next_cursor,
    }))
}

/// One promotion (admin).
#[utoipa::path(get, path = "/api/promotions/{id}", tag = "promotions",
    params(("id" = String, Path, description = "The promotion's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Promotion),
        (status = 401, description = "No valid token"),
        (status = 403, description = "Not an admin"),
        (status = 404, description = "No such promotion"),
    ))]
pub async fn get_promotion(
    Admin(_): Admin,
    State(app): State<App>,
    Path(id): Path<String>,
) -> Result<Json<Promotion>, ApiError> {
    let id = parse_id(&id, "promotion")?;
    Ok(Json(view(&app.get(id).await?)?))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(create_promotion, list_promotions, get_promotion),
    components(schemas(Promotion, PromotionPage, CreatePromotion)),
    tags((name = "promotions", description = "Promotions and their launch schedule (admin)"))
)]
pub struct ApiDoc;

#[cfg(test)]
mod tests {
    #[test]
    fn the_openapi_document_lists_every_endpoint() {
        let doc = crate::openapi();
        let paths: Vec<&String> = doc.paths.paths.keys().collect();
        assert_eq!(paths, ["/api/promotions", "/api/promotions/{id}"]);
        let json = doc.to_pretty_json().unwrap();
        assert!(json.contains("PromotionPage") && json.contains("CreatePromotion"));
    }
}
