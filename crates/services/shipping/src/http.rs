//! Shipping's REST API: `/api/shipments`.

use axum::{
    Json, Router,
    extract::{Path, Query, State, rejection::QueryRejection},
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use emporium_platform::{
    api::{self, ApiError, parse_id},
    auth::{Admin, AuthUser},
    storage::Db,
    telemetry::CorrelationId,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    app::{self, Error},
    store::{self, ShipmentRow},
};

pub fn router(db: Db) -> Router {
    Router::new()
        .route("/api/shipments", get(list_shipments))
        .route("/api/shipments/{id}/dispatch", post(dispatch_shipment))
        .route("/api/shipments/{id}/deliver", post(deliver_shipment))
        .with_state(db)
}

/// A shipment of an order.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Shipment {
    pub id: Uuid,
    pub order_id: Uuid,
    /// `READY`, `DISPATCHED`, `DELIVERED` or `CANCELLED`.
    pub status: String,
    pub tracking_number: String,
    pub carrier: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct ShipmentsQuery {
    /// The order whose shipments to list (required).
    pub order_id: Option<String>,
}

fn timestamp(millis: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(millis).unwrap_or_default()
}

fn view(row: &ShipmentRow) -> Shipment {
    Shipment {
        id: row.id,
        order_id: row.order_id,
        status: row.status.clone(),
        tracking_number: row.tracking_number.clone(),
        carrier: row.carrier.clone(),
        created_at: timestamp(row.created_at),
        updated_at: timestamp(row.updated_at),
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound => ApiError::not_found("no such shipment"),
            Error::NotDispatchable(_) => {
                ApiError::conflict("SHIPMENT_NOT_DISPATCHABLE", e.to_string())
            }
            Error::NotDeliverable(_) => {
                ApiError::conflict("SHIPMENT_NOT_DELIVERABLE", e.to_string())
            }
            Error::Storage(e) => e.into(),
        }
    }
}

/// The shipments of an order (its owner or an admin). An order shipping has not heard of (no
/// shipment requested yet, and not cancelled) has none, and says so to anyone: there is nothing to
/// leak, and its owner would otherwise see a 404 for their own order while the saga catches up.
/// Another user's known order is 404 for a customer.
#[utoipa::path(get, path = "/api/shipments", tag = "shipping", params(ShipmentsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the order's shipments (at most one; none yet for an order not heard of)", body = [Shipment]),
        (status = 400, description = "`orderId` missing or not an id"),
        (status = 401, description = "no valid token"),
        (status = 404, description = "another user's order"),
    ))]
pub async fn list_shipments(
    user: AuthUser,
    State(db): State<Db>,
    query: Result<Query<ShipmentsQuery>, QueryRejection>,
) -> Result<Json<Vec<Shipment>>, ApiError> {
    let Query(query) = query.map_err(api::query_error)?;
    let order_id = api::required_id(query.order_id.as_deref(), "orderId", "an order")?;
    let mut conn = db.reader().await?;
    let shipment = store::by_order(&mut conn, order_id).await?;
    let owner = match &shipment {
        Some(row) => Some(row.user_id),
        None => store::cancelled_owner(&mut conn, order_id).await?,
    };
    if let Some(owner) = owner
        && !user.is_admin()
        && owner != user.id
    {
        return Err(ApiError::not_found("no such order"));
    }
    Ok(Json(shipment.iter().map(view).collect()))
}

/// Hands a `READY` shipment to the carrier now (admin). Emits `ShipmentDispatched`.
#[utoipa::path(post, path = "/api/shipments/{id}/dispatch", tag = "shipping",
    params(("id" = String, Path, description = "the shipment's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the dispatched shipment", body = Shipment),
        (status = 401, description = "no valid token"),
        (status = 403, description = "not an admin"),
        (status = 404, description = "no such shipment"),
        (status = 409, description = "`SHIPMENT_NOT_DISPATCHABLE`: not `READY`"),
    ))]
pub async fn dispatch_shipment(
    Admin(_): Admin,
    State(db): State<Db>,
    correlation: CorrelationId,
    Path(id): Path<String>,
) -> Result<Json<Shipment>, ApiError> {
    let id = parse_id(&id, "shipment")?;
    let row = app::admin_dispatch(&db, &correlation.0, id).await?;
    Ok(Json(view(&row)))
}

/// Marks a `DISPATCHED` shipment delivered (admin). Emits `ShipmentDelivered`.
#[utoipa::path(post, path = "/api/shipments/{id}/deliver", tag = "shipping",
    params(("id" = String, Path, description = "the shipment's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the delivered shipment", body = Shipment),
        (status = 401, description = "no valid token"),
        (status = 403, description = "not an admin"),
        (status = 404, description = "no such shipment"),
        (status = 409, description = "`SHIPMENT_NOT_DELIVERABLE`: not `DISPATCHED`"),
    ))]
pub async fn deliver_shipment(
    Admin(_): Admin,
    State(db): State<Db>,
    correlation: CorrelationId,
    Path(id): Path<String>,
) -> Result<Json<Shipment>, ApiError> {
    let id = parse_id(&id, "shipment")?;
    let row = app::admin_deliver(&db, &correlation.0, id).await?;
    Ok(Json(view(&row)))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list_shipments, dispatch_shipment, deliver_shipment),
    components(schemas(Shipment)),
    tags((name = "shipping", description = "Shipments of confirmed orders (simulated carrier)"))
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
        "/api/shipments",
        "/api/shipments/{id}/deliver",
        "/api/shipments/{id}/dispatch",
    ];
}
