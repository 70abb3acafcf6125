//! Inventory's use cases: load, decide (`domain`), persist state and the events it causes in one
//! transaction.

use emporium_events::{
    Event, InventoryCommitted, InventoryRejected, InventoryReleased, InventoryReserved, LowStock,
    OrderCancelled, OrderCreated, ProductCreated, ProductDeleted, ShipmentDispatched,
    StockAdjusted,
};
use emporium_platform::storage::{Db, EventContext, StorageError, Tx};
use uuid::Uuid;

use crate::{
    NAME,
    domain::{self, LOW_STOCK_THRESHOLD, OnCancelled, OnCreated, OrderState},
    store::{self, StockRow, now_millis},
};

/// Why a use case did not happen.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no stock for that product")]
    NotFound,
    #[error("only {available} units are available")]
    InsufficientStock { available: i64 },
    /// The event cannot be applied as it is (a bug upstream).
    #[error("{0}")]
    InvalidEvent(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Storage(e.into())
    }
}

/// `ProductCreated`: the product's stock row with `available = initialStock`, and a
/// `StockAdjusted` for the initial stock. A product created at or below the low-stock threshold
/// starts flagged low without an alert (nothing fell: that is how it was created).
pub async fn product_created(tx: &mut Tx, event: &ProductCreated) -> Result<(), Error> {
    if event.initial_stock < 0 {
        return Err(Error::InvalidEvent(format!(
            "initial stock {} is negative",
            event.initial_stock
        )));
    }
    let low = event.initial_stock <= LOW_STOCK_THRESHOLD;
    if !store::insert_stock(
        tx.conn(),
        event.product_id,
        event.initial_stock,
        low,
        now_millis(),
    )
    .await?
    {
        return Ok(());
    }
    tx.emit(Event::StockAdjusted(StockAdjusted {
        product_id: event.product_id,
        delta: event.initial_stock,
        available: event.initial_stock,
        reserved: 0,
        reason: Some("initial stock".to_owned()),
    }))
    .await?;
    Ok(())
}

/// `ProductDeleted`: no new reservation takes the product.
pub async fn product_deleted(tx: &mut Tx, event: &ProductDeleted) -> Result<(), Error> {
    store::mark_deleted(tx.conn(), event.product_id, now_millis()).await?;
    Ok(())
}

/// `OrderCreated`: every line reserved (`InventoryReserved`) or none (`InventoryRejected` naming
/// the first line that fell short).
pub async fn order_created(tx: &mut Tx, event: &OrderCreated) -> Result<(), Error> {
    let state = store::order_state(tx.conn(), event.order_id).await?;
    if domain::on_created(state) == OnCreated::Ignore {
        return Ok(());
    }
    let lines = domain::reservation_lines(
        event
            .items
            .iter()
            .map(|line| (line.product_id, line.quantity)),
    )
    .map_err(|e| Error::InvalidEvent(e.0))?;
    let now = now_millis();
    match store::try_reserve(tx.conn(), event.order_id, &lines, now).await? {
        Some(short) => {
            store::set_order_state(tx.conn(), event.order_id, OrderState::Rejected, now).await?;
            tx.emit(Event::InventoryRejected(InventoryRejected {
                order_id: event.order_id,
                product_id: short.product_id,
                requested: short.requested,
                available: short.available,
            }))
            .await?;
        }
        None => {
            store::set_order_state(tx.conn(), event.order_id, OrderState::Reserved, now).await?;
            for line in &lines {
                refresh_low_stock(tx, line.product_id).await?;
            }
            tx.emit(Event::InventoryReserved(InventoryReserved {
                order_id: event.order_id,
                items: lines,
            }))
            .await?;
        }
    }
    Ok(())
}

/// `OrderCancelled`: a held reservation goes back (`InventoryReleased`); in every case the
/// cancellation is remembered so that nothing is reserved for the order afterwards.
pub async fn order_cancelled(tx: &mut Tx, event: &OrderCancelled) -> Result<(), Error> {
    let state = store::order_state(tx.conn(), event.order_id).await?;
    let now = now_millis();
    match domain::on_cancelled(state) {
        OnCancelled::Ignore => {}
        OnCancelled::Remember => {
            store::set_order_state(tx.conn(), event.order_id, OrderState::Cancelled, now).await?;
        }
        OnCancelled::Release => {
            let lines = store::reservation(tx.conn(), event.order_id).await?;
            store::release(tx.conn(), &lines, now).await?;
            store::set_order_state(tx.conn(), event.order_id, OrderState::Released, now).await?;
            for line in &lines {
                refresh_low_stock(tx, line.product_id).await?;
            }
            tx.emit(Event::InventoryReleased(InventoryReleased {
                order_id: event.order_id,
                items: lines,
            }))
            .await?;
        }
    }
    Ok(())
}

/// `ShipmentDispatched`: the held units become a sale (`InventoryCommitted`).
pub async fn shipment_dispatched(tx: &mut Tx, event: &ShipmentDispatched) -> Result<(), Error> {
    let state = store::order_state(tx.conn(), event.order_id).await?;
    if !domain::commits_on_dispatch(state) {
        return Ok(());
    }
    let now = now_millis();
    let lines = store::reservation(tx.conn(), event.order_id).await?;
    store::commit(tx.conn(), &lines, now).await?;
    store::set_order_state(tx.conn(), event.order_id, OrderState::Committed, now).await?;
    tx.emit(Event::InventoryCommitted(InventoryCommitted {
        order_id: event.order_id,
        items: lines,
    }))
    .await?;
    Ok(())
}

/// An admin adds (or removes) units: the new levels, with `StockAdjusted` (and `LowStock` when
/// this change makes stock low).
pub async fn adjust(
    db: &Db,
    correlation_id: &str,
    product_id: Uuid,
    delta: i64,
    reason: Option<String>,
) -> Result<StockRow, Error> {
    let mut tx = db
        .begin(EventContext::request(NAME, correlation_id))
        .await?;
    let Some(row) = store::adjust(tx.conn(), product_id, delta, now_millis()).await? else {
        return Err(match store::stock(tx.conn(), product_id).await? {
            None => Error::NotFound,
            Some(row) => Error::InsufficientStock {
                available: row.available,
            },
        });
    };
    let row = refresh_low_stock(&mut tx, product_id).await?.unwrap_or(row);
    tx.emit(Event::StockAdjusted(StockAdjusted {
        product_id,
        delta,
        available: row.available,
        reserved: row.reserved,
        reason,
    }))
    .await?;
    tx.commit().await?;
    Ok(row)
}

/// After `available` changed: updates the low-stock flag and emits `LowStock` when this change
/// crossed into low stock. Returns the row as it now is.
async fn refresh_low_stock(tx: &mut Tx, product_id: Uuid) -> Result<Option<StockRow>, Error> {
    let Some(mut row) = store::stock(tx.conn(), product_id).await? else {
        return Ok(None);
    };
    let (low, crossed) = domain::low_stock(row.is_low(), row.available, LOW_STOCK_THRESHOLD);
    if low != row.is_low() {
        store::set_low(tx.conn(), product_id, low).await?;
        row.low = i64::from(low);
    }
    if crossed {
        tx.emit(Event::LowStock(LowStock {
            product_id,
            available: row.available,
            threshold: LOW_STOCK_THRESHOLD,
        }))
        .await?;
    }
    Ok(Some(row))
}
