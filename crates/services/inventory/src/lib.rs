//! The inventory service. (Being written: see the services issue.)

use async_trait::async_trait;
use axum::Router;
use emporium_platform::{
    service::{Service, ServiceContext, Workers},
    storage::Migration,
};

pub const NAME: &str = "inventory";

/// The inventory service.
pub struct InventoryService;

#[async_trait]
impl Service for InventoryService {
    fn name(&self) -> &'static str {
        NAME
    }

    fn migrations(&self) -> &'static [Migration] {
        &[]
    }

    fn router(&self, _ctx: &ServiceContext) -> Router {
        Router::new()
    }

    async fn start(&self, _ctx: &ServiceContext, _workers: &mut Workers) -> anyhow::Result<()> {
        Ok(())
    }
}
