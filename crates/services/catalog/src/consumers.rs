//! The catalog's own `product-events`, consumed to invalidate the product cache (step 2 in
//! [`crate::cache`]): whichever instance made the change, and even when its own forget failed.

use async_trait::async_trait;
use emporium_events::{Envelope, Event, ProductDeleted, ProductUpdated};
use emporium_platform::{
    bus::consumer::{EventHandler, HandlerError},
    storage::Tx,
};

use crate::cache::ProductCache;

/// Forgets the product of each `ProductUpdated` and `ProductDeleted`. `ProductCreated` needs
/// nothing: a product is never cached before it exists.
///
/// The forget is outside the transaction and may run again when the event is redelivered; that is
/// harmless, as forgetting is idempotent. A cache that fails is an infrastructure error: the
/// partition pauses and the event comes back, never to the dead letters, so that no invalidation
/// is lost to a Redis outage.
pub struct CacheInvalidator {
    pub cache: ProductCache,
}

#[async_trait]
impl EventHandler for CacheInvalidator {
    async fn handle(&self, _tx: &mut Tx, envelope: &Envelope) -> Result<(), HandlerError> {
        match &envelope.event {
            Event::ProductUpdated(ProductUpdated { product_id, .. })
            | Event::ProductDeleted(ProductDeleted { product_id }) => {
                self.cache.forget(*product_id).await.map_err(|e| {
                    HandlerError::Infra(format!("cannot forget product {product_id}: {e}"))
                })
            }
            _ => Ok(()),
        }
    }
}
