//! Payments' REST API: `GET /api/payments?orderId=`.

use axum::{
    Json, Router,
    extract::{Query, State, rejection::QueryRejection},
    routing::get,
};
use chrono::{DateTime, Utc};
use emporium_platform::{
    api::{self, ApiError},
    auth::AuthUser,
    storage::Db,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::store::{self, PaymentRow};

pub fn router(db: Db) -> Router {
    Router::new()
        .route("/api/payments", get(list_payments))
        .with_state(db)
}

/// Money: integer minor units of an ISO 4217 currency.
#[derive(Debug, Serialize, ToSchema)]
pub struct Amount {
    pub amount: i64,
    pub currency: String,
}

/// A payment of an order.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Payment {
    pub id: Uuid,
    pub order_id: Uuid,
    pub amount: Amount,
    /// `AUTHORIZED`, `CAPTURED`, `VOIDED` or `DECLINED`.
    pub status: String,
    /// Why the provider declined (`card_declined`, `insufficient_funds`,
    /// `invalid_payment_method`, `amount_limit_exceeded`, `provider_unavailable`); null otherwise.
    pub decline_reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct PaymentsQuery {
    /// The order whose payments to list (required).
    pub order_id: Option<String>,
}

fn view(row: PaymentRow) -> Payment {
    Payment {
        id: row.id,
        order_id: row.order_id,
        amount: Amount {
            amount: row.amount,
            currency: row.currency,
        },
        status: row.status,
        decline_reason: row.decline_reason,
        created_at: DateTime::from_timestamp_millis(row.created_at).unwrap_or_default(),
    }
}

/// The payments of an order (its owner or an admin). An order payments has not heard of yet has
/// none, and says so to anyone: there is nothing to leak, and its owner would otherwise see a 404
/// for their own order while the saga catches up. Another user's known order is 404 for a
/// customer.
#[utoipa::path(get, path = "/api/payments", tag = "payments", params(PaymentsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the order's payments (at most one; none yet for an order not heard of)", body = [Payment]),
        (status = 400, description = "`orderId` missing or not an id"),
        (status = 401, description = "no valid token"),
        (status = 404, description = "another user's order"),
    ))]
pub async fn list_payments(
    user: AuthUser,
    State(db): State<Db>,
    query: Result<Query<PaymentsQuery>, QueryRejection>,
) -> Result<Json<Vec<Payment>>, ApiError> {
    let Query(query) = query.map_err(api::query_error)?;
    let order_id = api::required_id(query.order_id.as_deref(), "orderId", "an order")?;
    // The owner is known from `OrderCreated` (or `OrderCancelled`), before any payment exists.
    let mut conn = db.reader().await?;
    let owner = store::order(&mut conn, order_id)
        .await?
        .and_then(|order| order.user_id);
    match owner {
        None if !user.is_admin() => return Ok(Json(Vec::new())),
        Some(owner) if !user.is_admin() && owner != user.id => {
            return Err(ApiError::not_found("no such order"));
        }
        _ => {}
    }
    let payments = match store::payment_of_order(&mut conn, order_id).await? {
        Some(row) => vec![view(row)],
        None => Vec::new(),
    };
    Ok(Json(payments))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list_payments),
    components(schemas(Payment, Amount)),
    tags((name = "payments", description = "Payments of orders (simulated provider)"))
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

    const PATHS: &[&str] = &["/api/payments"];
}
