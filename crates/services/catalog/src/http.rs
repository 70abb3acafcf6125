//! The catalog's REST API (CONTRACT §2 "Catalog").

use axum::{
    Json, Router,
    extract::{FromRequestParts, Path, Query, State},
    http::{HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
    routing::get,
};
use chrono::{DateTime, Utc};
use emporium_events::Money;
use emporium_platform::{
    api::{ApiError, ApiJson, Page, PageRequest, parse_id},
    auth::Admin,
    telemetry::CorrelationId,
};
use serde::{Deserialize, Deserializer, Serialize, de::DeserializeOwned};
use utoipa::{IntoParams, ToSchema};

use crate::{
    app::Catalog,
    domain::{Change, ProductPatch},
    store::Product,
};

pub fn router(catalog: Catalog) -> Router {
    Router::new()
        .route("/api/products", get(list).post(create))
        .route("/api/products/{id}", get(one).patch(update).delete(delete))
        .with_state(catalog)
}

// ------------------------------------------------------------------ wire types

/// An amount in integer minor units of an ISO 4217 currency.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MoneySchema {
    /// Minor units (cents for USD), `>= 0`.
    #[schema(example = 1999)]
    pub amount: i64,
    /// Three upper-case letters.
    #[schema(example = "USD")]
    pub currency: String,
}

/// A product for sale.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductView {
    pub id: uuid::Uuid,
    pub name: String,
    pub description: Option<String>,
    pub category: String,
    #[schema(value_type = MoneySchema)]
    pub price: Money,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Product> for ProductView {
    fn from(p: Product) -> Self {
        ProductView {
            id: p.id,
            name: p.fields.name,
            description: p.fields.description,
            category: p.fields.category,
            price: p.fields.price,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

/// A page of products, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductPage {
    pub items: Vec<ProductView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateProductRequest {
    /// 1 to 200 characters.
    pub name: String,
    /// At most 5000 characters.
    pub description: Option<String>,
    /// 1 to 100 characters.
    pub category: String,
    #[schema(value_type = MoneySchema)]
    pub price: Money,
    /// Units in stock at creation (inventory learns it from `ProductCreated`); default 0.
    #[serde(default)]
    pub initial_stock: i64,
}

/// Fields to change; absent fields stay. `description: null` removes the description.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateProductRequest {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub category: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<MoneySchema>)]
    pub price: Option<Option<Money>>,
}

/// A field that is present, possibly `null` (with `#[serde(default)]`, an absent one is `None`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

impl From<UpdateProductRequest> for ProductPatch {
    fn from(r: UpdateProductRequest) -> Self {
        ProductPatch {
            name: Change::from_field(r.name),
            description: Change::from_field(r.description),
            category: Change::from_field(r.category),
            price: Change::from_field(r.price),
        }
    }
}

/// `?q=&category=&limit=&cursor=`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// Text found in the name or description, any case.
    pub q: Option<String>,
    /// Exact category, any case.
    pub category: Option<String>,
    /// Only these products: ids separated by commas, at most 100.
    pub ids: Option<String>,
    /// 1 to 100, default 20.
    pub limit: Option<String>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// Query parameters whose errors are problems naming `query`, like every other 400.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| Params(value))
            .map_err(|rejection| ApiError::field("query", rejection.body_text()))
    }
}

// ------------------------------------------------------------------ handlers

/// Products for sale, newest first, optionally searched (public).
#[utoipa::path(get, path = "/api/products", tag = "catalog", params(ListQuery),
    responses(
        (status = 200, body = ProductPage),
        (status = 400, description = "Bad `limit`, `cursor`, `q`, `category` or `ids`"),
    ))]
pub async fn list(
    State(catalog): State<Catalog>,
    Params(query): Params<ListQuery>,
) -> Result<Json<Page<ProductView>>, ApiError> {
    let request = PageRequest::parse(query.limit.as_deref(), query.cursor.as_deref())?;
    let rows = catalog
        .list(
            query.q.as_deref(),
            query.category.as_deref(),
            query.ids.as_deref(),
            &request,
        )
        .await?;
    let page = Page::from_rows(rows, &request, |p| p.id.to_string());
    Ok(Json(Page {
        items: page.items.into_iter().map(ProductView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One product (public); deleted products are 404.
#[utoipa::path(get, path = "/api/products/{id}", tag = "catalog",
    params(("id" = String, Path, description = "Product id")),
    responses(
        (status = 200, body = ProductView),
        (status = 404, description = "No such product, or deleted"),
    ))]
pub async fn one(
    State(catalog): State<Catalog>,
    Path(id): Path<String>,
) -> Result<Json<ProductView>, ApiError> {
    let id = parse_id(&id, "product")?;
    Ok(Json(catalog.get(id).await?.into()))
}

/// Create a product (admin).
#[utoipa::path(post, path = "/api/products", tag = "catalog", security(("bearer" = [])),
    request_body = CreateProductRequest,
    responses(
        (status = 201, body = ProductView, headers(("Location" = String, description = "The product's URL"))),
        (status = 400, description = "A field is invalid (named in `errors`)"),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not an admin"),
        (status = 415, description = "Not JSON"),
    ))]
pub async fn create(
    State(catalog): State<Catalog>,
    Admin(_): Admin,
    correlation: CorrelationId,
    ApiJson(body): ApiJson<CreateProductRequest>,
) -> Result<Response, ApiError> {
    let product = catalog
        .create(
            &correlation.0,
            &body.name,
            body.description.as_deref(),
            &body.category,
            body.price,
            body.initial_stock,
        )
        .await?;
    let location = HeaderValue::from_str(&format!("/api/products/{}", product.id))
        .map_err(|e| ApiError::internal(format!("bad Location header: {e}")))?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(ProductView::from(product)),
    )
        .into_response())
}

/// Change a product's name, description, category or price (admin).
#[utoipa::path(patch, path = "/api/products/{id}", tag = "catalog", security(("bearer" = [])),
    params(("id" = String, Path, description = "Product id")),
    request_body = UpdateProductRequest,
    responses(
        (status = 200, body = ProductView),
        (status = 400, description = "A field is invalid (named in `errors`)"),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not an admin"),
        (status = 404, description = "No such product, or deleted"),
    ))]
pub async fn update(
    State(catalog): State<Catalog>,
    Admin(_): Admin,
    correlation: CorrelationId,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateProductRequest>,
) -> Result<Json<ProductView>, ApiError> {
    let id = parse_id(&id, "product")?;
    let product = catalog.update(&correlation.0, id, &body.into()).await?;
    Ok(Json(product.into()))
}

/// Delete a product (admin): it can no longer be seen or ordered.
#[utoipa::path(delete, path = "/api/products/{id}", tag = "catalog", security(("bearer" = [])),
    params(("id" = String, Path, description = "Product id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not an admin"),
        (status = 404, description = "No such product, or already deleted"),
    ))]
pub async fn delete(
    State(catalog): State<Catalog>,
    Admin(_): Admin,
    correlation: CorrelationId,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id, "product")?;
    catalog.delete(&correlation.0, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
