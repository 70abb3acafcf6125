//! Recommendations' REST API: `/api/recommendations/me` and `/api/products/{id}/recommendations`.

use axum::{
    Json, Router,
    extract::{Path, Query, State, rejection::QueryRejection},
    routing::get,
};
use emporium_platform::{
    api::{self, ApiError, parse_id},
    auth::AuthUser,
};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::{
    app::{Error, MoneySchema, ProductView, Recommendation, Recommender},
    domain,
};

pub fn router(recommender: Recommender) -> Router {
    Router::new()
        .route("/api/recommendations/me", get(for_me))
        .route("/api/products/{id}/recommendations", get(for_product))
        .with_state(recommender)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LimitQuery {
    /// How many recommendations at most: 1 to 100, default 10.
    pub limit: Option<String>,
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            // The catalog's answer for a missing or deleted product.
            Error::ProductNotFound => ApiError::not_found("no such product"),
            Error::Storage(e) => e.into(),
        }
    }
}

fn limit(query: Result<Query<LimitQuery>, QueryRejection>) -> Result<usize, ApiError> {
    let Query(query) = query.map_err(api::query_error)?;
    domain::parse_limit(query.limit.as_deref()).map_err(|message| ApiError::field("limit", message))
}

/// Products for the caller, best first: bought with what they bought, popular in the categories
/// they buy from, best sellers otherwise. Never something they bought, nor a deleted or
/// out-of-stock product.
#[utoipa::path(get, path = "/api/recommendations/me", tag = "recommendations",
    params(LimitQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "best first (empty when nothing has sold yet)", body = [Recommendation]),
        (status = 400, description = "`limit` is not an integer from 1 to 100"),
        (status = 401, description = "no valid token"),
    ))]
pub async fn for_me(
    user: AuthUser,
    State(recommender): State<Recommender>,
    query: Result<Query<LimitQuery>, QueryRejection>,
) -> Result<Json<Vec<Recommendation>>, ApiError> {
    let limit = limit(query)?;
    Ok(Json(recommender.for_user(user.id, limit).await?))
}

/// Products often bought with this one, then popular in its category, then best sellers (public).
/// Never the product itself, nor a deleted or out-of-stock product.
#[utoipa::path(get, path = "/api/products/{id}/recommendations", tag = "recommendations",
    params(("id" = String, Path, description = "the product's id"), LimitQuery),
    responses(
        (status = 200, description = "best first", body = [Recommendation]),
        (status = 400, description = "`limit` is not an integer from 1 to 100"),
        (status = 404, description = "no such product, or deleted"),
    ))]
pub async fn for_product(
    State(recommender): State<Recommender>,
    Path(id): Path<String>,
    query: Result<Query<LimitQuery>, QueryRejection>,
) -> Result<Json<Vec<Recommendation>>, ApiError> {
    let id = parse_id(&id, "product")?;
    let limit = limit(query)?;
    Ok(Json(recommender.for_product(id, limit).await?))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(for_me, for_product),
    components(schemas(Recommendation, ProductView, MoneySchema)),
    tags((name = "recommendations", description = "Products picked from purchases: bought together, popular in a category, best sellers"))
)]
pub struct ApiDoc;

#[cfg(test)]
mod tests {
    use utoipa::OpenApi;

    #[test]
    fn the_openapi_document_lists_every_endpoint() {
        let doc = crate::openapi();
        let paths: Vec<&str> = doc.paths.paths.keys().map(String::as_str).collect();
        assert_eq!(
            paths,
            [
                "/api/products/{id}/recommendations",
                "/api/recommendations/me"
            ]
        );
        let json = serde_json::to_value(&doc).unwrap();
        for path in [
            "/api/products/{id}/recommendations",
            "/api/recommendations/me",
        ] {
            let params = json["paths"][path]["get"]["parameters"].as_array().unwrap();
            let limit = params.iter().find(|p| p["name"] == "limit").unwrap();
            assert_eq!(limit["in"], "query", "{path}");
            assert_ne!(limit["required"], true, "{path}");
        }
    }

    /// A recommendation's `product` is the catalog's Product: the same schema under the same
    /// name, so the merged document (where the catalog's comes first) describes both alike.
    #[test]
    fn the_product_schema_is_the_catalogs() {
        let ours = crate::openapi().components.unwrap().schemas;
        let catalog = emporium_catalog::openapi().components.unwrap().schemas;
        for name in ["ProductView", "MoneySchema"] {
            let ours = serde_json::to_value(&ours[name]).unwrap();
            let theirs = serde_json::to_value(&catalog[name]).unwrap();
            assert_eq!(ours, theirs, "{name}");
        }
        let doc = super::ApiDoc::openapi().to_json().unwrap();
        assert!(doc.contains("#/components/schemas/ProductView"), "{doc}");
    }
}
