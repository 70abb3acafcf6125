//! Inventory's use cases: load, decide (`domain`), persist state and the events it causes in one
//! transaction.

use emporium_events::{
    Event, InventoryCommitted, InventoryRejected, InventoryReleased, InventoryReserved, LowStock,
    OrderCancelled, OrderCreated, OrderShipped, ProductCreated, ProductDeleted, StockAdjusted,
};
use emporium_platform::storage::{Db, EventContext, StorageError, Tx};
use uuid::Uuid;

use crate::{
    NAME,
    domain::{self, LOW_STOCK_THRESHOLD, OnCancelled, OnCreated, OrderState},
    store::{self, Availability, Reservation, StockRow, now_millis},
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
    /// An order names a product whose `ProductCreated` has not been seen yet (it comes on another
    /// topic). Not a rejection: the event fails, is retried, and reserves once the product has
    /// arrived; a product that never arrives takes the event to the dead-letter topic.
    #[error("product {0} has no stock record yet; its ProductCreated has not been seen")]
    UnknownProduct(Uuid),
    #[error(transparent)]
    Storage(#[from] StorageError),
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
    }))?;
    Ok(())
}

/// `ProductDeleted`: no new reservation takes the product.
pub async fn product_deleted(tx: &mut Tx, event: &ProductDeleted) -> Result<(), Error> {
    store::mark_deleted(tx.conn(), event.product_id, now_millis()).await?;
    Ok(())
}

/// `OrderCreated`: every line reserved (`InventoryReserved`) or none (`InventoryRejected` naming
/// the first line that fell short). A line whose product inventory has never heard of fails the
/// event instead ([`Error::UnknownProduct`]): it is retried, not rejected.
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
    let products: Vec<Uuid> = lines.iter().map(|line| line.product_id).collect();
    if let Some(unknown) = store::first_unknown_product(tx.conn(), &products).await? {
        return Err(Error::UnknownProduct(unknown));
    }
    let now = now_millis();
    // Claim the order first: if another transaction recorded it meanwhile (its cancellation),
    // that one decided, and nothing is taken here.
    if !store::move_order_state(tx.conn(), event.order_id, None, OrderState::Reserved, now).await? {
        return Ok(());
    }
    match store::try_reserve(tx.conn(), event.order_id, &lines, now).await? {
        Reservation::Short(short) => {
            store::move_order_state(
                tx.conn(),
                event.order_id,
                Some(OrderState::Reserved),
                OrderState::Rejected,
                now,
            )
            .await?;
            tx.emit(Event::InventoryRejected(InventoryRejected {
                order_id: event.order_id,
                product_id: short.product_id,
                requested: short.requested,
                available: short.available,
            }))?;
        }
        Reservation::Held(availability) => {
            for product in availability {
                follow_low_stock(tx, product).await?;
            }
            tx.emit(Event::InventoryReserved(InventoryReserved {
                order_id: event.order_id,
                items: lines,
            }))?;
        }
    }
    Ok(())
}

/// How often a cancellation decides again when the order's state moved between its read and its
/// conditional write. Each retry follows another transaction's committed change, and an order has
/// only a few states, so this is never reached in practice.
const DECISION_ROUNDS: usize = 4;

/// `OrderCancelled`: a held reservation goes back (`InventoryReleased`); in every case the
/// cancellation is remembered so that nothing is reserved for the order afterwards.
///
/// Decided on the state read, applied only if the state is still the one read; if another
/// transaction moved it meanwhile, decided again on the new state.
pub async fn order_cancelled(tx: &mut Tx, event: &OrderCancelled) -> Result<(), Error> {
    let now = now_millis();
    for _ in 0..DECISION_ROUNDS {
        let state = store::order_state(tx.conn(), event.order_id).await?;
        let done = match domain::on_cancelled(state) {
            OnCancelled::Ignore => true,
            OnCancelled::Remember => {
                store::move_order_state(
                    tx.conn(),
                    event.order_id,
                    state,
                    OrderState::Cancelled,
                    now,
                )
                .await?
            }
            OnCancelled::Release => release_if_reserved(tx, event.order_id, now).await?,
        };
        if done {
            return Ok(());
        }
    }
    Err(Error::Storage(StorageError::Unavailable(format!(
        "order {} kept changing while its cancellation was applied",
        event.order_id
    ))))
}

/// Releases the order's reservation if its state is `RESERVED` at the moment of the write (the
/// conditional `UPDATE` affects its row); otherwise moves no units and returns `false`.
pub(crate) async fn release_if_reserved(
    tx: &mut Tx,
    order_id: Uuid,
    now: i64,
) -> Result<bool, Error> {
    if !store::move_order_state(
        tx.conn(),
        order_id,
        Some(OrderState::Reserved),
        OrderState::Released,
        now,
    )
    .await?
    {
        return Ok(false);
    }
    let lines = store::reservation(tx.conn(), order_id).await?;
    store::release(tx.conn(), &lines, now).await?;
    for line in &lines {
        refresh_low_stock(tx, line.product_id).await?;
    }
    tx.emit(Event::InventoryReleased(InventoryReleased {
        order_id,
        items: lines,
    }))?;
    Ok(true)
}

/// `OrderShipped`: the held units become a sale (`InventoryCommitted`).
///
/// Committed on the order's word, not the carrier's (`ShipmentDispatched`): orders emits exactly
/// one of `OrderShipped` and `OrderCancelled` per order, both on `order-events` keyed by the order,
/// so exactly one of commit and release happens here.
pub async fn order_shipped(tx: &mut Tx, event: &OrderShipped) -> Result<(), Error> {
    let state = store::order_state(tx.conn(), event.order_id).await?;
    if domain::commits_on_ship(state) {
        commit_if_reserved(tx, event.order_id, now_millis()).await?;
    }
    Ok(())
}

/// Commits the order's reservation if its state is `RESERVED` at the moment of the write;
/// otherwise (released or committed meanwhile) moves no units and returns `false`.
pub(crate) async fn commit_if_reserved(
    tx: &mut Tx,
    order_id: Uuid,
    now: i64,
) -> Result<bool, Error> {
    if !store::move_order_state(
        tx.conn(),
        order_id,
        Some(OrderState::Reserved),
        OrderState::Committed,
        now,
    )
    .await?
    {
        return Ok(false);
    }
    let lines = store::reservation(tx.conn(), order_id).await?;
    store::commit(tx.conn(), &lines, now).await?;
    tx.emit(Event::InventoryCommitted(InventoryCommitted {
        order_id,
        items: lines,
    }))?;
    Ok(true)
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
    }))?;
    tx.commit().await?;
    Ok(row)
}

/// After `available` changed: updates the low-stock flag and emits `LowStock` when this change
/// crossed into low stock. Returns the row as it now is.
async fn refresh_low_stock(tx: &mut Tx, product_id: Uuid) -> Result<Option<StockRow>, Error> {
    let Some(mut row) = store::stock(tx.conn(), product_id).await? else {
        return Ok(None);
    };
    let now = Availability {
        product_id,
        available: row.available,
        low: row.low,
    };
    row.low = follow_low_stock(tx, now).await?;
    Ok(Some(row))
}

/// [`refresh_low_stock`] when the change already told where the stock stands. Returns the flag.
async fn follow_low_stock(tx: &mut Tx, product: Availability) -> Result<bool, Error> {
    let (low, crossed) = domain::low_stock(product.low, product.available, LOW_STOCK_THRESHOLD);
    if low != product.low {
        store::set_low(tx.conn(), product.product_id, low).await?;
    }
    if crossed {
        tx.emit(Event::LowStock(LowStock {
            product_id: product.product_id,
            available: product.available,
            threshold: LOW_STOCK_THRESHOLD,
        }))?;
    }
    Ok(low)
}
