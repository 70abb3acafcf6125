//! Inventory's REST API: `/api/inventory`.

use axum::{
    Json, Router,
    extract::{Path, Query, State, rejection::QueryRejection},
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use emporium_platform::{
    api::{self, ApiError, ApiJson, Checks, Page, PageRequest, parse_id},
    auth::Admin,
    storage::Db,
    telemetry::CorrelationId,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    app::{self, Error},
    domain::{MAX_ADJUSTMENT, MAX_REASON_CHARS},
    store::{self, StockRow},
};

pub fn router(db: Db) -> Router {
    Router::new()
        .route("/api/inventory", get(list_stock))
        .route("/api/inventory/levels", get(get_stocks))
        .route("/api/inventory/{product_id}", get(get_stock))
        .route("/api/inventory/{product_id}/adjust", post(adjust_stock))
        .with_state(db)
}

/// A product's stock, as anyone may see it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stock {
    pub product_id: Uuid,
    /// Units that can be ordered now.
    pub available: i64,
    /// Units held for orders in progress.
    pub reserved: i64,
    pub updated_at: DateTime<Utc>,
}

/// A product's stock as admins see it: also the units sold (`committed`), the low-stock flag and
/// the deletion mark. `available + reserved + committed` is everything the product ever had.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StockLevels {
    pub product_id: Uuid,
    pub available: i64,
    pub reserved: i64,
    /// Units sold (their orders shipped).
    pub committed: i64,
    /// At or below the low-stock threshold.
    pub low: bool,
    /// The product was deleted from the catalog; its stock can no longer be reserved.
    pub deleted: bool,
    pub updated_at: DateTime<Utc>,
}

/// `GET /api/inventory`: a page of stock, and the units available across every product for sale.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InventoryPage {
    pub items: Vec<StockLevels>,
    pub next_cursor: Option<String>,
    pub total_available: i64,
}

/// `POST /api/inventory/{productId}/adjust`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdjustStock {
    /// Units to add (negative: remove); not zero, at most 1,000,000 either way.
    pub delta: i64,
    /// Why, for the record (at most 500 characters).
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListParams {
    /// 1–100, default 20.
    pub limit: Option<String>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

fn timestamp(millis: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(millis).unwrap_or_default()
}

fn levels(row: &StockRow) -> StockLevels {
    StockLevels {
        product_id: row.product_id,
        available: row.available,
        reserved: row.reserved,
        committed: row.committed,
        low: row.low,
        deleted: row.deleted,
        updated_at: timestamp(row.updated_at),
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound => ApiError::not_found("no stock for that product"),
            Error::InsufficientStock { available } => ApiError::conflict(
                "INSUFFICIENT_STOCK",
                format!(
                    "only {available} units are available; the adjustment would make stock negative"
                ),
            ),
            // Event-handling outcomes; no endpoint produces them.
            Error::InvalidEvent(_) | Error::UnknownProduct(_) => ApiError::internal(e.to_string()),
            Error::Storage(e) => e.into(),
        }
    }
}

/// A product's stock (public). Unknown and deleted products are 404.
#[utoipa::path(get, path = "/api/inventory/{productId}", tag = "inventory",
    params(("productId" = String, Path, description = "the product's id")),
    responses(
        (status = 200, description = "the product's stock", body = Stock),
        (status = 404, description = "no such product"),
    ))]
pub async fn get_stock(
    State(db): State<Db>,
    Path(product_id): Path<String>,
) -> Result<Json<Stock>, ApiError> {
    let product_id = parse_id(&product_id, "product")?;
    let row = store::stock(&mut db.reader().await?, product_id)
        .await?
        .filter(|row| !row.deleted)
        .ok_or_else(|| ApiError::not_found("no such product"))?;
    Ok(Json(Stock {
        product_id,
        available: row.available,
        reserved: row.reserved,
        updated_at: timestamp(row.updated_at),
    }))
}

/// `?productIds=a,b,c`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct LevelsParams {
    /// Product ids separated by commas, at most 100.
    pub product_ids: Option<String>,
}

/// `GET /api/inventory/levels`: the stock of each product asked for that is for sale.
#[derive(Debug, Serialize, ToSchema)]
pub struct StockList {
    pub items: Vec<Stock>,
}

/// Most products one `levels` request asks for.
const LEVELS_MAX: usize = 100;

/// The stock of many products at once (public), for clients such as the gateway's GraphQL that
/// show a page of products. Unknown and deleted products are left out.
#[utoipa::path(get, path = "/api/inventory/levels", tag = "inventory", params(LevelsParams),
    responses(
        (status = 200, description = "the stock of the products found", body = StockList),
        (status = 400, description = "missing or bad `productIds`"),
    ))]
pub async fn get_stocks(
    State(db): State<Db>,
    params: Result<Query<LevelsParams>, QueryRejection>,
) -> Result<Json<StockList>, ApiError> {
    let Query(params) = params.map_err(api::query_error)?;
    let text = params.product_ids.unwrap_or_default();
    let ids = api::product_ids(&text, "productIds", LEVELS_MAX)?;
    let rows = store::stocks(&mut db.reader().await?, &ids).await?;
    let items = rows
        .iter()
        .filter(|row| !row.deleted)
        .map(|row| Stock {
            product_id: row.product_id,
            available: row.available,
            reserved: row.reserved,
            updated_at: timestamp(row.updated_at),
        })
        .collect();
    Ok(Json(StockList { items }))
}

/// Every product's stock, by product id (admin).
#[utoipa::path(get, path = "/api/inventory", tag = "inventory", params(ListParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "a page of stock", body = InventoryPage),
        (status = 400, description = "bad `limit` or `cursor`"),
        (status = 401, description = "no valid token"),
        (status = 403, description = "not an admin"),
    ))]
pub async fn list_stock(
    Admin(_): Admin,
    State(db): State<Db>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<InventoryPage>, ApiError> {
    let Query(params) = params.map_err(api::query_error)?;
    let page = PageRequest::parse(params.limit.as_deref(), params.cursor.as_deref())?;
    let mut conn = db.reader().await?;
    let rows = store::list(&mut conn, page.after.as_deref(), page.fetch()).await?;
    let total_available = store::total_available(&mut conn).await?;
    let rows = Page::from_rows(rows, &page, |row| row.product_id.to_string());
    Ok(Json(InventoryPage {
        items: rows.items.iter().map(levels).collect(),
        next_cursor: rows.next_cursor,
        total_available,
    }))
}

/// Adds or removes units of a product (admin). Emits `StockAdjusted`.
#[utoipa::path(post, path = "/api/inventory/{productId}/adjust", tag = "inventory",
    params(("productId" = String, Path, description = "the product's id")),
    request_body = AdjustStock, security(("bearer" = [])),
    responses(
        (status = 200, description = "the new levels", body = StockLevels),
        (status = 400, description = "invalid `delta` or `reason`"),
        (status = 401, description = "no valid token"),
        (status = 403, description = "not an admin"),
        (status = 404, description = "no such product"),
        (status = 409, description = "`INSUFFICIENT_STOCK`: available would go negative"),
        (status = 415, description = "the body is not JSON"),
    ))]
pub async fn adjust_stock(
    Admin(_): Admin,
    State(db): State<Db>,
    correlation: CorrelationId,
    Path(product_id): Path<String>,
    ApiJson(body): ApiJson<AdjustStock>,
) -> Result<Json<StockLevels>, ApiError> {
    let product_id = parse_id(&product_id, "product")?;
    let reason = body
        .reason
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty());
    let mut checks = Checks::new();
    checks
        .check(body.delta != 0, "delta", "must not be zero")
        .check(
            body.delta.unsigned_abs() <= MAX_ADJUSTMENT.unsigned_abs(),
            "delta",
            format!("must be between -{MAX_ADJUSTMENT} and {MAX_ADJUSTMENT}"),
        )
        .check(
            reason
                .as_ref()
                .is_none_or(|r| r.chars().count() <= MAX_REASON_CHARS),
            "reason",
            format!("must be at most {MAX_REASON_CHARS} characters"),
        );
    checks.finish()?;
    let row = app::adjust(&db, &correlation.0, product_id, body.delta, reason).await?;
    Ok(Json(levels(&row)))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(get_stock, get_stocks, list_stock, adjust_stock),
    components(schemas(Stock, StockList, StockLevels, InventoryPage, AdjustStock)),
    tags((name = "inventory", description = "Stock levels, reservations and adjustments"))
)]
pub struct ApiDoc;

#[cfg(test)]
mod tests {
    #[test]
    fn the_openapi_document_lists_every_endpoint() {
        let doc = crate::openapi();
        let paths: Vec<&String> = doc.paths.paths.keys().collect();
        assert_eq!(paths, PATHS, "{paths:?}");
    }

    const PATHS: &[&str] = &[
        "/api/inventory",
        "/api/inventory/levels",
        "/api/inventory/{productId}",
        "/api/inventory/{productId}/adjust",
    ];
}
