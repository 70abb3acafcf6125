//! Payments' use cases: record what the saga's events say, decide (`domain`), and persist the
//! payment with the event it causes in one transaction.

use std::sync::Arc;

use emporium_events::{
    Event, InventoryReserved, Money, OrderCancelled, OrderCreated, OrderShipped, PaymentAuthorized,
    PaymentCaptured, PaymentFailed, PaymentVoided,
};
use emporium_platform::storage::{StorageError, Tx};
use uuid::Uuid;

use crate::{
    authorizer::AuthorizationRequest,
    breaker::CircuitBreaker,
    domain::PaymentStatus,
    provider::{self, PaymentProvider, RetryPolicy},
    store::{self, PaymentRow, now_millis},
};

/// Why an authorization did not happen now.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The breaker refused the order before any of its own calls failed (see
    /// [`provider::Deferred`]): the event must come again later, neither declined nor
    /// dead-lettered.
    #[error("payment provider circuit open; authorization deferred")]
    Deferred,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The provider as the service calls it: with retries, behind the service's one breaker (the
/// platform's concerns around the plain [`crate::authorizer::authorize`]).
#[derive(Clone)]
pub struct Authorizer {
    pub provider: Arc<dyn PaymentProvider>,
    pub breaker: Arc<CircuitBreaker>,
    pub retry: RetryPolicy,
}

/// `OrderCreated`: remember the owner, total and token; authorize if the reservation came first.
pub async fn order_created(
    tx: &mut Tx,
    authorizer: &Authorizer,
    event: &OrderCreated,
) -> Result<(), Error> {
    store::record_created(
        tx.conn(),
        event.order_id,
        event.user_id,
        event.total.amount,
        &event.total.currency,
        &event.payment_token,
        now_millis(),
    )
    .await?;
    authorize_if_ready(tx, authorizer, event.order_id).await
}

/// `InventoryReserved`: authorize the order's total (once the order itself is known).
pub async fn inventory_reserved(
    tx: &mut Tx,
    authorizer: &Authorizer,
    event: &InventoryReserved,
) -> Result<(), Error> {
    store::record_reserved(tx.conn(), event.order_id, now_millis()).await?;
    authorize_if_ready(tx, authorizer, event.order_id).await
}

async fn authorize_if_ready(
    tx: &mut Tx,
    authorizer: &Authorizer,
    order_id: Uuid,
) -> Result<(), Error> {
    let (order, facts) = store::facts(tx.conn(), order_id).await?;
    let Some(order) = order.filter(|_| facts.ready_to_authorize()) else {
        return Ok(());
    };
    let (Some(amount), Some(currency)) = (order.amount, order.currency.clone()) else {
        return Err(StorageError::Query(format!(
            "order {order_id} is marked created without its total"
        ))
        .into());
    };
    let request = AuthorizationRequest {
        order_id,
        amount: Money::new(amount, currency.clone()),
        payment_token: order.token.clone().unwrap_or_default(),
    };
    let answer = provider::authorize_with_retries(
        authorizer.provider.as_ref(),
        &authorizer.breaker,
        authorizer.retry,
        &request,
    )
    .await
    .map_err(|provider::Deferred| Error::Deferred)?;
    let now = now_millis();
    let payment_id = Uuid::now_v7();
    let (status, decline_reason) = match answer {
        Ok(()) => (PaymentStatus::Authorized, None),
        Err(reason) => (PaymentStatus::Declined, Some(reason)),
    };
    let inserted = store::insert_payment(
        tx.conn(),
        &PaymentRow {
            id: payment_id,
            order_id,
            user_id: order.user_id,
            amount,
            currency: currency.clone(),
            status: status.as_str().to_owned(),
            decline_reason: decline_reason.map(|r| r.as_str().to_owned()),
            created_at: now,
            updated_at: now,
        },
    )
    .await?;
    if !inserted {
        return Ok(());
    }
    store::forget_token(tx.conn(), order_id).await?;
    let amount = Money::new(amount, currency);
    tx.emit(match decline_reason {
        None => Event::PaymentAuthorized(PaymentAuthorized {
            order_id,
            payment_id,
            amount,
        }),
        Some(reason) => Event::PaymentFailed(PaymentFailed {
            order_id,
            payment_id,
            amount,
            reason,
        }),
    })?;
    Ok(())
}

/// `OrderCancelled`: void an authorization not yet captured; in every case remember the
/// cancellation so that a later reservation authorizes nothing.
pub async fn order_cancelled(tx: &mut Tx, event: &OrderCancelled) -> Result<(), StorageError> {
    let now = now_millis();
    store::record_cancelled(tx.conn(), event.order_id, event.user_id, now).await?;
    transition(tx, event.order_id, PaymentStatus::void, now).await
}

/// `OrderShipped`: capture the authorized amount.
///
/// Captured on the order's word, not the carrier's (`ShipmentDispatched`): orders emits exactly
/// one of `OrderShipped` and `OrderCancelled` for an order, deciding under its row lock, and both
/// come on `order-events` keyed by the order, so exactly one of capture and void happens here,
/// in the order orders decided. A parcel dispatched after the customer's cancellation was
/// accepted is orders' to recall; its payment stays voided.
pub async fn order_shipped(tx: &mut Tx, event: &OrderShipped) -> Result<(), StorageError> {
    transition(tx, event.order_id, PaymentStatus::capture, now_millis()).await
}

/// Moves the order's payment as `next` says, emitting the matching event.
async fn transition(
    tx: &mut Tx,
    order_id: Uuid,
    next: fn(PaymentStatus) -> Option<PaymentStatus>,
    now: i64,
) -> Result<(), StorageError> {
    let Some(payment) = store::payment_of_order(tx.conn(), order_id).await? else {
        return Ok(());
    };
    let from = payment.status()?;
    let Some(to) = next(from) else {
        return Ok(());
    };
    if !store::set_status(tx.conn(), payment.id, from, to, now).await? {
        return Ok(());
    }
    let payment_id = payment.id;
    let amount = Money::new(payment.amount, payment.currency);
    let event = match to {
        PaymentStatus::Captured => Event::PaymentCaptured(PaymentCaptured {
            order_id,
            payment_id,
            amount,
        }),
        PaymentStatus::Voided => Event::PaymentVoided(PaymentVoided {
            order_id,
            payment_id,
            amount,
        }),
        PaymentStatus::Authorized | PaymentStatus::Declined => return Ok(()),
    };
    tx.emit(event)?;
    Ok(())
}
