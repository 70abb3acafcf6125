//! The REST API of orders: request shapes, their checks (every bad field named), and the handlers
//! that call the use cases in [`crate::app`].

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json, Router,
    extract::{Path, Query, State, rejection::PathRejection, rejection::QueryRejection},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use emporium_events::Address;
use emporium_platform::{
    api::{ApiError, ApiJson, Checks, Page, PageRequest, parse_id},
    auth::AuthUser,
    storage::Db,
    telemetry::CorrelationId,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    admission::Admission,
    app::{self, IdempotencyKey, ListQuery, NewOrder, OrderView},
    domain::{Line, Status},
};

#[derive(Clone)]
struct AppState {
    db: Db,
    admission: Arc<Admission>,
}

pub fn router(db: Db, admission: Arc<Admission>) -> Router {
    Router::new()
        .route("/api/orders", post(place_order).get(list_orders))
        .route("/api/orders/{id}", get(get_order))
        .route("/api/orders/{id}/cancel", post(cancel_order))
        .with_state(AppState { db, admission })
}

// ----------------------------------------------------------------- requests

/// The body of `POST /api/orders`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = PlaceOrder)]
pub struct PlaceOrderRequest {
    /// 1–100 lines, each product at most once.
    pub items: Vec<ItemRequest>,
    pub shipping_address: AddressRequest,
    pub payment_method: PaymentMethodRequest,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = PlaceOrderItem)]
pub struct ItemRequest {
    pub product_id: String,
    /// 1–1000.
    pub quantity: i64,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = PlaceOrderAddress)]
pub struct AddressRequest {
    /// 1–200 characters.
    pub name: String,
    /// 1–200 characters.
    pub line1: String,
    /// Up to 200 characters; empty is the same as absent.
    #[serde(default)]
    pub line2: Option<String>,
    /// 1–100 characters.
    pub city: String,
    /// 1–20 characters.
    pub postal_code: String,
    /// ISO 3166-1 alpha-2 (two letters, any case; stored upper case).
    pub country: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[schema(as = PaymentMethod)]
pub struct PaymentMethodRequest {
    /// The provider's token (`tok_visa`, ...), 1–200 characters. Never card data.
    pub token: String,
}

/// Longest accepted `Idempotency-Key`.
const MAX_KEY_LEN: usize = 255;

/// Checks a text field: trimmed, `min..=max` characters, no control characters.
fn text(checks: &mut Checks, field: &str, value: &str, min: usize, max: usize) -> String {
    let value = value.trim();
    let length = value.chars().count();
    if length < min {
        checks.check(false, field, "must not be empty");
    } else if length > max {
        checks.check(false, field, format!("must be at most {max} characters"));
    } else if value.chars().any(char::is_control) {
        checks.check(false, field, "must not contain control characters");
    }
    value.to_owned()
}

/// The request, checked: every wrong field at once, named as in the JSON (`items[2].quantity`).
/// A product listed twice is refused rather than merged, so that the quantity the customer sees
/// in the order is the one they typed.
pub fn validate(request: &PlaceOrderRequest) -> Result<NewOrder, ApiError> {
    let mut checks = Checks::new();
    checks.check(
        (1..=100).contains(&request.items.len()),
        "items",
        "must have 1 to 100 items",
    );
    let mut first_line: HashMap<&str, usize> = HashMap::new();
    let mut lines = Vec::with_capacity(request.items.len());
    for (i, item) in request.items.iter().enumerate() {
        let field = format!("items[{i}].productId");
        let product_id = text(&mut checks, &field, &item.product_id, 1, 100);
        if let Some(first) = first_line.get(item.product_id.trim()) {
            checks.check(
                false,
                &field,
                format!("repeats items[{first}].productId; list each product once with its total quantity"),
            );
        } else if !product_id.is_empty() {
            first_line.insert(item.product_id.trim(), i);
        }
        checks.check(
            (1..=1000).contains(&item.quantity),
            format!("items[{i}].quantity"),
            "must be an integer from 1 to 1000",
        );
        lines.push(Line {
            product_id,
            quantity: item.quantity,
        });
    }
    let a = &request.shipping_address;
    let name = text(&mut checks, "shippingAddress.name", &a.name, 1, 200);
    let line1 = text(&mut checks, "shippingAddress.line1", &a.line1, 1, 200);
    let line2 = a
        .line2
        .as_deref()
        .map(|l| text(&mut checks, "shippingAddress.line2", l, 0, 200))
        .filter(|l| !l.is_empty());
    let city = text(&mut checks, "shippingAddress.city", &a.city, 1, 100);
    let postal_code = text(
        &mut checks,
        "shippingAddress.postalCode",
        &a.postal_code,
        1,
        20,
    );
    let country = a.country.trim().to_ascii_uppercase();
    checks.check(
        country.len() == 2 && country.bytes().all(|b| b.is_ascii_alphabetic()),
        "shippingAddress.country",
        "must be a two-letter ISO 3166-1 country code",
    );
    let token = text(
        &mut checks,
        "paymentMethod.token",
        &request.payment_method.token,
        1,
        200,
    );
    checks.finish()?;
    Ok(NewOrder {
        lines,
        address: Address {
            name,
            line1,
            line2,
            city,
            postal_code,
            country,
        },
        payment_token: token,
    })
}

/// The `Idempotency-Key` header, if sent: 1–255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = || {
        ApiError::field(
            "Idempotency-Key",
            format!("must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
        )
    };
    let key = value.to_str().map_err(|_| bad())?;
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok(Some(key.to_owned()))
}

// ----------------------------------------------------------------- handlers

/// Place an order. Prices come from the catalog; the saga (stock, payment, shipment) runs after
/// the answer, so the order starts `PENDING`. With `Idempotency-Key`, the same request again gets
/// the first answer (marked `Idempotent-Replayed: true`).
#[utoipa::path(post, path = "/api/orders", tag = "orders",
    request_body = PlaceOrderRequest,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "Makes retries safe: the same key and body from the same user return the first response")),
    responses(
        (status = 202, description = "Placed; the saga runs", body = OrderView,
            headers(("Location" = String, description = "/api/orders/{id}"))),
        (status = 400, description = "A field is missing or wrong (named in `errors`)"),
        (status = 401, description = "No or bad token"),
        (status = 415, description = "The body is not JSON"),
        (status = 422, description = "`UNKNOWN_PRODUCT` (field `items[i].productId`), `CURRENCY_MISMATCH`, `ORDER_TOO_LARGE` or `IDEMPOTENCY_KEY_REUSED`"),
        (status = 503, description = "`SERVICE_UNAVAILABLE`: the saga has fallen behind (100 or more `PENDING` orders are older than `EMPORIUM_MAX_SAGA_BACKLOG`), `EMPORIUM_MAX_PLACEMENTS_IN_FLIGHT` placements are running (none ending within `EMPORIUM_MAX_PLACEMENT_WAIT`), or the database is down; retry after `Retry-After` seconds",
            headers(("Retry-After" = String, description = "seconds")))),
    security(("bearer" = [])))]
async fn place_order(
    user: AuthUser,
    CorrelationId(correlation_id): CorrelationId,
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<PlaceOrderRequest>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let order = validate(&request)?;
    let key = match key {
        Some(key) => Some(IdempotencyKey {
            key,
            request: serde_json::to_string(&request)
                .map_err(|e| ApiError::internal(format!("cannot encode a request: {e}")))?,
        }),
        None => None,
    };
    let placed = app::place(
        &state.db,
        user.id,
        order,
        key,
        Some(&state.admission),
        &correlation_id,
    )
    .await?;
    let status = StatusCode::from_u16(placed.status).unwrap_or(StatusCode::ACCEPTED);
    let location = HeaderValue::from_str(&format!("/api/orders/{}", placed.order_id))
        .map_err(|_| ApiError::internal("an order id that is not a header value"))?;
    let mut response = (status, placed.body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, location);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if placed.replayed {
        headers.insert(
            HeaderName::from_static("idempotent-replayed"),
            HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

/// The query of `GET /api/orders`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// Only orders with this status.
    status: Option<String>,
    /// 1–100, default 20.
    limit: Option<String>,
    /// `nextCursor` of the previous page.
    cursor: Option<String>,
    /// Admin: only this user's orders. A customer may pass only their own id.
    user_id: Option<String>,
}

/// The caller's orders, newest first (an admin's: everyone's, or `userId`'s).
#[utoipa::path(get, path = "/api/orders", tag = "orders", params(ListParams),
    responses(
        (status = 200, description = "A page of orders: `{items, nextCursor}`", body = OrderPage),
        (status = 400, description = "Bad `status`, `limit`, `cursor` or `userId`"),
        (status = 401, description = "No or bad token")),
    security(("bearer" = [])))]
async fn list_orders(
    user: AuthUser,
    State(state): State<AppState>,
    query: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Page<OrderView>>, ApiError> {
    let Query(params) = query.map_err(|e| ApiError::field("query", e.body_text()))?;
    let status = match params.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(text) => Some(Status::parse(text).ok_or_else(|| {
            ApiError::field(
                "status",
                "must be PENDING, CONFIRMED, SHIPPED, DELIVERED or CANCELLED",
            )
        })?),
    };
    let user_id = match params.user_id.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(text) => {
            Some(Uuid::parse_str(text).map_err(|_| ApiError::field("userId", "is not a user id"))?)
        }
    };
    let page = PageRequest::parse(params.limit.as_deref(), params.cursor.as_deref())?;
    let query = ListQuery {
        status,
        user_id,
        page,
    };
    Ok(Json(app::list(&state.db, &user, query).await?))
}

/// A page of orders.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documents `Page<OrderView>` for the OpenAPI document
struct OrderPage {
    items: Vec<OrderView>,
    #[schema(rename = "nextCursor")]
    next_cursor: Option<String>,
}

fn order_id(path: Result<Path<String>, PathRejection>) -> Result<Uuid, ApiError> {
    let Path(id) = path.map_err(|_| ApiError::not_found("no such order"))?;
    parse_id(&id, "order")
}

/// One order (another user's is 404 for a customer).
#[utoipa::path(get, path = "/api/orders/{id}", tag = "orders",
    params(("id" = String, Path, description = "Order id")),
    responses(
        (status = 200, description = "The order", body = OrderView),
        (status = 401, description = "No or bad token"),
        (status = 404, description = "No such order (or not yours)")),
    security(("bearer" = [])))]
async fn get_order(
    user: AuthUser,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<OrderView>, ApiError> {
    let id = order_id(path)?;
    Ok(Json(app::get(&state.db, &user, id).await?))
}

/// Cancel an order that is `PENDING` or `CONFIRMED` (owner or admin). Stock is released, the
/// payment voided and the shipment cancelled by their services on `OrderCancelled`.
#[utoipa::path(post, path = "/api/orders/{id}/cancel", tag = "orders",
    params(("id" = String, Path, description = "Order id")),
    responses(
        (status = 200, description = "Cancelled with `CUSTOMER_REQUEST`", body = OrderView),
        (status = 401, description = "No or bad token"),
        (status = 404, description = "No such order (or not yours)"),
        (status = 409, description = "`ORDER_NOT_CANCELLABLE`: shipped, delivered or already cancelled")),
    security(("bearer" = [])))]
async fn cancel_order(
    user: AuthUser,
    CorrelationId(correlation_id): CorrelationId,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<OrderView>, ApiError> {
    let id = order_id(path)?;
    Ok(Json(
        app::cancel(&state.db, &user, id, &correlation_id).await?,
    ))
}

/// The orders API, for the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(place_order, list_orders, get_order, cancel_order),
    components(schemas(
        PlaceOrderRequest, ItemRequest, AddressRequest, PaymentMethodRequest, OrderView, OrderPage,
        app::ItemView, app::AddressView, app::PaymentView, app::ShipmentView, app::TimelineView,
        app::MoneySchema
    )),
    tags((name = "orders", description = "Placing, listing and cancelling orders; the saga's view of each order"))
)]
pub struct OrdersApi;

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> PlaceOrderRequest {
        serde_json::from_value(serde_json::json!({
            "items": [{"productId": "p1", "quantity": 2}, {"productId": "p2", "quantity": 1}],
            "shippingAddress": {"name": "Ada", "line1": "12 Analytical Row", "city": "London",
                "postalCode": "N1 9GU", "country": "gb"},
            "paymentMethod": {"token": "tok_visa"},
        }))
        .unwrap()
    }

    fn fields(request: &PlaceOrderRequest) -> Vec<String> {
        validate(request)
            .unwrap_err()
            .errors
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn a_valid_request_is_normalised() {
        let order = validate(&valid()).unwrap();
        assert_eq!(order.address.country, "GB");
        assert_eq!(order.address.line2, None);
        assert_eq!(order.lines.len(), 2);
        assert_eq!(order.payment_token, "tok_visa");
    }

    #[test]
    fn item_counts_and_quantities_are_bounded() {
        let mut none = valid();
        none.items.clear();
        assert_eq!(fields(&none), ["items"]);
        let mut many = valid();
        many.items = (0..101)
            .map(|i| ItemRequest {
                product_id: format!("p{i}"),
                quantity: 1,
            })
            .collect();
        assert_eq!(fields(&many), ["items"]);
        many.items.truncate(100);
        assert!(validate(&many).is_ok());
        for quantity in [0, -1, 1001] {
            let mut bad = valid();
            bad.items[1].quantity = quantity;
            assert_eq!(fields(&bad), ["items[1].quantity"], "{quantity}");
        }
        let mut edge = valid();
        edge.items[0].quantity = 1000;
        assert!(validate(&edge).is_ok());
    }

    #[test]
    fn a_product_listed_twice_is_refused() {
        let mut twice = valid();
        twice.items[1].product_id = " p1".into();
        assert_eq!(fields(&twice), ["items[1].productId"]);
        let mut empty = valid();
        empty.items[0].product_id = "  ".into();
        assert_eq!(fields(&empty), ["items[0].productId"]);
    }

    #[test]
    fn address_fields_and_token_are_checked_together() {
        let mut bad = valid();
        bad.shipping_address.name = " ".into();
        bad.shipping_address.line1 = "x".repeat(201);
        bad.shipping_address.line2 = Some("tab\there".into());
        bad.shipping_address.city = String::new();
        bad.shipping_address.postal_code = "1".repeat(21);
        bad.shipping_address.country = "GBR".into();
        bad.payment_method.token = String::new();
        assert_eq!(
            fields(&bad),
            [
                "shippingAddress.name",
                "shippingAddress.line1",
                "shippingAddress.line2",
                "shippingAddress.city",
                "shippingAddress.postalCode",
                "shippingAddress.country",
                "paymentMethod.token",
            ]
        );
        for country in ["G1", "", "ÉÉ", "g"] {
            let mut bad = valid();
            bad.shipping_address.country = country.into();
            assert_eq!(fields(&bad), ["shippingAddress.country"], "{country:?}");
        }
    }

    #[test]
    fn idempotency_keys_are_visible_ascii() {
        let mut headers = HeaderMap::new();
        assert_eq!(idempotency_key(&headers).unwrap(), None);
        headers.insert("idempotency-key", HeaderValue::from_static("order-1"));
        assert_eq!(
            idempotency_key(&headers).unwrap().as_deref(),
            Some("order-1")
        );
        for bad in ["", "has space", &"k".repeat(256)] {
            headers.insert("idempotency-key", HeaderValue::from_str(bad).unwrap());
            let error = idempotency_key(&headers).unwrap_err();
            assert_eq!(error.errors[0].field, "Idempotency-Key", "{bad:?}");
        }
    }

    #[test]
    fn the_openapi_document_lists_every_path_and_schema() {
        let doc = crate::openapi();
        let paths: Vec<&String> = doc.paths.paths.keys().collect();
        assert_eq!(
            paths,
            ["/api/orders", "/api/orders/{id}", "/api/orders/{id}/cancel"]
        );
        let json = serde_json::to_value(&doc).unwrap();
        let post = &json["paths"]["/api/orders"]["post"];
        assert_eq!(post["tags"][0], "orders");
        assert!(
            post["responses"]["202"]["headers"]["Location"].is_object(),
            "{post}"
        );
        let schemas = &json["components"]["schemas"];
        for schema in ["Order", "PlaceOrder", "Money", "TimelineEntry", "OrderPage"] {
            assert!(schemas[schema].is_object(), "{schema} missing");
        }
        assert!(schemas["Order"]["properties"]["cancellationReason"].is_object());
        assert!(schemas["OrderPage"]["properties"]["nextCursor"].is_object());
        // Every reference resolves.
        let text = json.to_string();
        for reference in text.split("\"#/components/schemas/").skip(1) {
            let name = reference.split('"').next().unwrap();
            assert!(schemas[name].is_object(), "dangling reference to {name}");
        }
    }

    #[test]
    fn a_request_body_keeps_its_fingerprint_across_spellings() {
        // The Idempotency-Key's "same body" is the same request, not the same bytes.
        let spaced: PlaceOrderRequest = serde_json::from_str(
            r#"{ "paymentMethod": {"token": "tok_visa"}, "items": [{"quantity": 2, "productId": "p1"}],
                 "shippingAddress": {"country": "GB", "postalCode": "N1", "city": "London",
                 "line1": "12 Row", "name": "Ada"} }"#,
        )
        .unwrap();
        let compact: PlaceOrderRequest = serde_json::from_str(
            r#"{"items":[{"productId":"p1","quantity":2}],"shippingAddress":{"name":"Ada","line1":"12 Row","city":"London","postalCode":"N1","country":"GB"},"paymentMethod":{"token":"tok_visa"}}"#,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&spaced).unwrap(),
            serde_json::to_string(&compact).unwrap()
        );
    }
}
