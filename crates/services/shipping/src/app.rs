//! Shipping's use cases: each loads the shipment, decides with `domain`, and changes it with a
//! conditional `UPDATE` and the event it causes in one transaction.

use std::time::Duration;

use emporium_events::{
    Event, OrderCancelled, ShipmentCancelled, ShipmentCreated, ShipmentDelivered,
    ShipmentDispatched, ShipmentRequested,
};
use emporium_platform::storage::{Db, EventContext, StorageError, Tx};
use tokio::sync::watch;
use uuid::Uuid;

use crate::{
    NAME,
    domain::{self, CARRIER, ShipmentStatus},
    store::{self, ShipmentRow, now_millis},
};

/// Why an admin's request did not happen.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no such shipment")]
    NotFound,
    #[error("a {} shipment cannot be dispatched", .0.as_str())]
    NotDispatchable(ShipmentStatus),
    #[error("a {} shipment cannot be delivered", .0.as_str())]
    NotDeliverable(ShipmentStatus),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// `ShipmentRequested`: a `READY` shipment with a tracking number (`ShipmentCreated`), unless the
/// order already has one or is known to be cancelled.
pub async fn shipment_requested(
    tx: &mut Tx,
    event: &ShipmentRequested,
) -> Result<(), StorageError> {
    if store::cancelled_owner(tx.conn(), event.order_id)
        .await?
        .is_some()
    {
        return Ok(());
    }
    let address = serde_json::to_string(&event.shipping_address)
        .map_err(|e| StorageError::Query(format!("cannot store the address: {e}")))?;
    let now = now_millis();
    let row = ShipmentRow {
        id: Uuid::now_v7(),
        order_id: event.order_id,
        user_id: event.user_id,
        status: ShipmentStatus::Ready.as_str().to_owned(),
        tracking_number: domain::tracking_number(|n| fastrand::usize(..n)),
        carrier: CARRIER.to_owned(),
        address,
        correlation_id: tx.context().correlation_id.clone(),
        created_at: now,
        updated_at: now,
    };
    if !store::insert(tx.conn(), &row).await? {
        return Ok(());
    }
    tx.emit(Event::ShipmentCreated(ShipmentCreated {
        order_id: event.order_id,
        shipment_id: row.id,
        tracking_number: row.tracking_number.clone(),
        carrier: row.carrier.clone(),
    }))?;
    Ok(())
}

/// `OrderCancelled`: a `READY` shipment is cancelled (`ShipmentCancelled`); the cancellation is
/// remembered so that a later request creates nothing.
pub async fn order_cancelled(tx: &mut Tx, event: &OrderCancelled) -> Result<(), StorageError> {
    let now = now_millis();
    store::remember_cancelled(tx.conn(), event.order_id, event.user_id, now).await?;
    let Some(shipment) = store::by_order(tx.conn(), event.order_id).await? else {
        return Ok(());
    };
    let Ok(to) = shipment.status()?.cancel() else {
        return Ok(());
    };
    if let Some(cancelled) =
        store::transition(tx.conn(), shipment.id, ShipmentStatus::Ready, to, now).await?
    {
        tx.emit(Event::ShipmentCancelled(ShipmentCancelled {
            order_id: event.order_id,
            shipment_id: cancelled.id,
        }))?;
    }
    Ok(())
}

/// Dispatches a `READY` shipment (`ShipmentDispatched`); `None` if it was not `READY` any more.
async fn dispatch(tx: &mut Tx, shipment_id: Uuid) -> Result<Option<ShipmentRow>, StorageError> {
    let Some(row) = store::transition(
        tx.conn(),
        shipment_id,
        ShipmentStatus::Ready,
        ShipmentStatus::Dispatched,
        now_millis(),
    )
    .await?
    else {
        return Ok(None);
    };
    tx.emit(Event::ShipmentDispatched(ShipmentDispatched {
        order_id: row.order_id,
        shipment_id: row.id,
        tracking_number: row.tracking_number.clone(),
    }))?;
    Ok(Some(row))
}

/// An admin dispatches a shipment: `READY` → `DISPATCHED`.
pub async fn admin_dispatch(
    db: &Db,
    correlation_id: &str,
    shipment_id: Uuid,
) -> Result<ShipmentRow, Error> {
    let mut tx = db
        .begin(EventContext::request(NAME, correlation_id))
        .await?;
    let current = store::by_id(tx.conn(), shipment_id)
        .await?
        .ok_or(Error::NotFound)?;
    let status = current.status()?;
    status
        .dispatch()
        .map_err(|e| Error::NotDispatchable(e.from))?;
    let row = dispatch(&mut tx, current.id)
        .await?
        .ok_or(Error::NotDispatchable(status))?;
    tx.commit().await?;
    Ok(row)
}

/// An admin marks a shipment delivered: `DISPATCHED` → `DELIVERED` (`ShipmentDelivered`).
pub async fn admin_deliver(
    db: &Db,
    correlation_id: &str,
    shipment_id: Uuid,
) -> Result<ShipmentRow, Error> {
    let mut tx = db
        .begin(EventContext::request(NAME, correlation_id))
        .await?;
    let current = store::by_id(tx.conn(), shipment_id)
        .await?
        .ok_or(Error::NotFound)?;
    let status = current.status()?;
    let to = status
        .deliver()
        .map_err(|e| Error::NotDeliverable(e.from))?;
    let row = store::transition(tx.conn(), current.id, status, to, now_millis())
        .await?
        .ok_or(Error::NotDeliverable(status))?;
    tx.emit(Event::ShipmentDelivered(ShipmentDelivered {
        order_id: row.order_id,
        shipment_id: row.id,
    }))?;
    tx.commit().await?;
    Ok(row)
}

/// Most shipments the dispatcher moves in one transaction.
const DISPATCH_BATCH: i64 = 100;

/// Dispatches the `READY` shipments older than `delay`, each event carrying the correlation id of
/// the saga that asked for the shipment. Returns how many left.
pub async fn dispatch_due(db: &Db, delay: Duration) -> Result<usize, StorageError> {
    let due = store::due(
        &mut db.reader().await?,
        domain::dispatch_cutoff(now_millis(), delay),
        DISPATCH_BATCH,
    )
    .await?;
    if due.is_empty() {
        return Ok(0);
    }
    let mut tx = db.begin(EventContext::request(NAME, "")).await?;
    let mut dispatched = 0;
    for shipment in &due {
        tx.set_context(EventContext::request(NAME, shipment.correlation_id.clone()));
        if dispatch(&mut tx, shipment.id).await?.is_some() {
            dispatched += 1;
        }
    }
    tx.commit().await?;
    Ok(dispatched)
}

/// The simulated carrier: dispatches due shipments until `stop` turns true.
pub async fn run_dispatcher(db: Db, delay: Duration, mut stop: watch::Receiver<bool>) {
    let tick = domain::dispatch_tick(delay);
    loop {
        if *stop.borrow() {
            break;
        }
        match dispatch_due(&db, delay).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(dispatched = n, "shipments dispatched"),
            Err(e) => tracing::warn!(error = %e, "automatic dispatch failed; retrying"),
        }
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            changed = stop.changed() => {
                if changed.is_err() {
                    break;
                }
            }
        }
    }
}
