//! The catalog service: the products for sale, their descriptions, categories and prices.
//!
//! It owns the `catalog` database (one `products` table; deletion is soft, so the row stays for
//! the orders that name it).
//!
//! - REST: `GET /api/products` (public; `q` searches name and description in any case, `category`
//!   matches exactly in any case; newest first, cursor = the last id), `GET /api/products/{id}`
//!   (public), `POST /api/products`, `PATCH /api/products/{id}`, `DELETE /api/products/{id}`
//!   (admin).
//! - Emits on `product-events`: `ProductCreated` (with `initialStock`, from which inventory makes
//!   the stock record), `ProductUpdated` (the full new values, only when something changed) and
//!   `ProductDeleted`, each in the transaction that makes the change.
//! - Consumes its own `product-events`, only to invalidate its cache.
//!
//! `GET /api/products/{id}` is read aside through the process's cache (`ServiceContext::cache`:
//! Redis when `redis_url` is set, shared by every instance; else in process), under
//! `catalog:v1:product:<id>` for at most five minutes. An update or delete forgets the entry as
//! soon as it commits, so the next read shows it; the consumer of the product's event forgets it
//! again, which covers a forget that failed; a read racing a write checks the row again after
//! storing it, so it cannot leave the old row cached. A failing cache is bypassed, never an
//! error. Lists and searches are not cached. The details and the argument are in [`cache`].

pub mod app;
pub mod cache;
#[cfg(test)]
mod cache_tests;
pub mod consumers;
pub mod domain;
pub mod http;
pub mod store;

use async_trait::async_trait;
use axum::Router;
use emporium_events::Topic;
use emporium_platform::{
    service::{Service, ServiceContext, Workers},
    storage::Migration,
};
use utoipa::OpenApi;

pub const NAME: &str = "catalog";

/// The catalog service.
pub struct CatalogService;

#[async_trait]
impl Service for CatalogService {
    fn name(&self) -> &'static str {
        NAME
    }

    fn migrations(&self) -> &'static [Migration] {
        store::MIGRATIONS
    }

    fn router(&self, ctx: &ServiceContext) -> Router {
        http::router(app::Catalog::new(ctx.db.clone(), ctx.cache.clone()))
    }

    fn topics(&self) -> Vec<Topic> {
        vec![Topic::Product]
    }

    async fn start(&self, ctx: &ServiceContext, workers: &mut Workers) -> anyhow::Result<()> {
        let invalidator = consumers::CacheInvalidator {
            cache: cache::ProductCache::new(ctx.cache.clone()),
        };
        workers.consume(ctx, &self.topics(), invalidator).await?;
        Ok(())
    }
}

#[derive(OpenApi)]
#[openapi(
    paths(http::list, http::one, http::create, http::update, http::delete),
    components(schemas(
        http::MoneySchema,
        http::ProductView,
        http::ProductPage,
        http::CreateProductRequest,
        http::UpdateProductRequest
    )),
    tags((name = "catalog", description = "Products for sale"))
)]
struct ApiDoc;

/// The OpenAPI description of the catalog's paths.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_lists_every_operation() {
        let doc = openapi();
        let products = &doc.paths.paths["/api/products"];
        assert!(products.get.is_some() && products.post.is_some());
        let product = &doc.paths.paths["/api/products/{id}"];
        assert!(product.get.is_some() && product.patch.is_some() && product.delete.is_some());
        let schemas = &doc.components.as_ref().unwrap().schemas;
        assert!(schemas.contains_key("ProductView") && schemas.contains_key("MoneySchema"));
    }
}
