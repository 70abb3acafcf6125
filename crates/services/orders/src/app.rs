//! The use cases: load, decide (in [`crate::domain`]), persist the state and the events it causes in
//! one transaction. Placing, reading and cancelling orders for the HTTP API; observing saga events
//! for the consumer; expiring overdue orders for the sweeper.

use std::time::Duration;

use chrono::{DateTime, Utc};
use emporium_events::{
    Address, Event, Money, OrderCancelled, OrderConfirmed, OrderCreated, OrderDelivered, OrderLine,
    OrderShipped, ShipmentRequested,
};
use emporium_platform::{
    api::{ApiError, FieldError, Page, PageRequest},
    auth::AuthUser,
    storage::{Conn, Db, EventContext, StorageError, Tx},
};
use serde::Serialize;
use uuid::Uuid;

use crate::{
    NAME,
    admission::Admission,
    domain::{self, Decision, Input, Line, Offer, OrderState, PricingError, Status, Stay, Step},
    store::{self, Entry, ItemRow, KeyRecord, OrderRow, PaymentSummary, ShipmentSummary},
};

// ---------------------------------------------------------------- the view

/// An order as the API shows it (CONTRACT §2 "Orders").
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Order)]
pub struct OrderView {
    pub id: String,
    pub user_id: String,
    /// `PENDING`, `CONFIRMED`, `SHIPPED`, `DELIVERED` or `CANCELLED`.
    #[schema(example = "PENDING")]
    pub status: String,
    /// `OUT_OF_STOCK`, `PAYMENT_DECLINED`, `CUSTOMER_REQUEST`, `TIMEOUT` or
    /// `PRODUCT_UNAVAILABLE` when cancelled, else null.
    pub cancellation_reason: Option<String>,
    pub items: Vec<ItemView>,
    #[schema(value_type = MoneySchema)]
    pub total: Money,
    pub shipping_address: AddressView,
    pub payment: Option<PaymentView>,
    pub shipment: Option<ShipmentView>,
    /// Every status the order took and every saga event seen for it, in the order seen.
    pub timeline: Vec<TimelineView>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `{amount, currency}`: integer minor units of an ISO 4217 currency.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = Money)]
pub struct MoneySchema {
    pub amount: i64,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = OrderItem)]
pub struct ItemView {
    pub product_id: String,
    /// The product's name when the order was placed.
    pub name: String,
    /// The catalog price when the order was placed.
    #[schema(value_type = MoneySchema)]
    pub unit_price: Money,
    pub quantity: i64,
    #[schema(value_type = MoneySchema)]
    pub line_total: Money,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ShippingAddress)]
pub struct AddressView {
    pub name: String,
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = PaymentSummary)]
pub struct PaymentView {
    pub id: String,
    /// `AUTHORIZED`, `DECLINED`, `CAPTURED` or `VOIDED`.
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ShipmentSummary)]
pub struct ShipmentView {
    pub id: String,
    /// `READY`, `DISPATCHED`, `DELIVERED` or `CANCELLED`.
    pub status: String,
    pub tracking_number: Option<String>,
}

/// `{status, at}` for a status change, `{event, at}` for a saga event (`at`: when it occurred).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = TimelineEntry)]
pub struct TimelineView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    pub at: DateTime<Utc>,
}

fn time(millis: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(millis).unwrap_or(DateTime::UNIX_EPOCH)
}

fn view(order: &OrderRow, items: &[ItemRow], timeline: &[store::TimelineRow]) -> OrderView {
    let currency = &order.total.currency;
    OrderView {
        id: order.id.to_string(),
        user_id: order.user_id.to_string(),
        status: order.state.status.as_str().to_owned(),
        cancellation_reason: order
            .state
            .cancellation_reason
            .map(|r| r.as_str().to_owned()),
        items: items
            .iter()
            .map(|item| ItemView {
                product_id: item.product_id.clone(),
                name: item.name.clone(),
                unit_price: Money::new(item.unit_amount, currency.clone()),
                quantity: item.quantity,
                line_total: Money::new(
                    item.unit_amount.saturating_mul(item.quantity),
                    currency.clone(),
                ),
            })
            .collect(),
        total: order.total.clone(),
        shipping_address: AddressView {
            name: order.address.name.clone(),
            line1: order.address.line1.clone(),
            line2: order.address.line2.clone(),
            city: order.address.city.clone(),
            postal_code: order.address.postal_code.clone(),
            country: order.address.country.clone(),
        },
        payment: order.payment.as_ref().map(|p| PaymentView {
            id: p.id.to_string(),
            status: p.status.as_str().to_owned(),
        }),
        shipment: order.shipment.as_ref().map(|s| ShipmentView {
            id: s.id.to_string(),
            status: s.status.as_str().to_owned(),
            tracking_number: s.tracking_number.clone(),
        }),
        timeline: timeline
            .iter()
            .map(|t| {
                let (status, event) = match &t.entry {
                    Entry::Status(s) => (Some(s.as_str().to_owned()), None),
                    Entry::Event(e) => (None, Some(e.clone())),
                };
                TimelineView {
                    status,
                    event,
                    at: time(t.at),
                }
            })
            .collect(),
        created_at: time(order.created_at),
        updated_at: time(order.updated_at),
    }
}

/// The views of `orders`, with their lines and timelines read in two queries (not one per order).
async fn views(conn: &mut Conn, orders: &[OrderRow]) -> Result<Vec<OrderView>, StorageError> {
    let ids: Vec<Uuid> = orders.iter().map(|o| o.id).collect();
    let mut items = store::items_of(conn, &ids).await?;
    let mut timelines = store::timelines_of(conn, &ids).await?;
    Ok(orders
        .iter()
        .map(|order| {
            view(
                order,
                &items.remove(&order.id).unwrap_or_default(),
                &timelines.remove(&order.id).unwrap_or_default(),
            )
        })
        .collect())
}

async fn view_one(conn: &mut Conn, order: OrderRow) -> Result<OrderView, ApiError> {
    views(conn, std::slice::from_ref(&order))
        .await?
        .pop()
        .ok_or_else(|| ApiError::internal("an order without a view"))
}

/// Customers see their own orders; admins see every order. Others' orders do not exist for them.
fn visible_to(order: &OrderRow, caller: &AuthUser) -> bool {
    caller.is_admin() || order.user_id == caller.id
}

fn no_such_order() -> ApiError {
    ApiError::not_found("no such order")
}

// ----------------------------------------------------------------- placing

/// A validated request to place an order.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOrder {
    pub lines: Vec<Line>,
    pub address: Address,
    pub payment_token: String,
}

/// An `Idempotency-Key` and the request it came with (canonical JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct IdempotencyKey {
    pub key: String,
    pub request: String,
}

/// The answer to a placement: a new order, or the replay of the first answer to the same key.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    pub order_id: Uuid,
    pub status: u16,
    /// The order as JSON, exactly as first answered.
    pub body: String,
    pub replayed: bool,
}

fn replay(record: KeyRecord, key: &IdempotencyKey) -> Result<Placed, ApiError> {
    if record.request != key.request {
        return Err(ApiError::unprocessable(
            "IDEMPOTENCY_KEY_REUSED",
            "this Idempotency-Key was used with a different request",
        ));
    }
    Ok(Placed {
        order_id: record.order_id,
        status: record.status,
        body: record.response,
        replayed: true,
    })
}

fn pricing_error(error: PricingError) -> ApiError {
    match error {
        PricingError::Empty => ApiError::field("items", "must have 1 to 100 items"),
        PricingError::UnknownProducts(lines) => {
            let mut problem = ApiError::unprocessable(
                "UNKNOWN_PRODUCT",
                "the order names a product that does not exist or was deleted",
            );
            problem.errors = lines
                .into_iter()
                .map(|i| FieldError {
                    field: format!("items[{i}].productId"),
                    message: "no such product".to_owned(),
                })
                .collect();
            problem
        }
        PricingError::MixedCurrencies(i) => {
            let mut problem = ApiError::unprocessable(
                "CURRENCY_MISMATCH",
                "all products of one order must be priced in the same currency",
            );
            problem.errors = vec![FieldError {
                field: format!("items[{i}].productId"),
                message: "is priced in another currency than the first item".to_owned(),
            }];
            problem
        }
        PricingError::TooLarge => ApiError::unprocessable(
            "ORDER_TOO_LARGE",
            "the order's total is too large to process",
        ),
    }
}

/// Places an order: prices it from the catalog read model, stores it `PENDING` and emits
/// `OrderCreated` in the same transaction. With an idempotency key, a repeat of the same request
/// gets the first answer and the same key with another request is refused. Only a placed order is
/// remembered: a refused request created nothing, so its retry is judged afresh. A new order
/// must pass `admission` (none: always admitted): a place among the placements in flight, held
/// until this returns, and a saga that keeps up. A repeat needs neither.
pub async fn place(
    db: &Db,
    user: Uuid,
    request: NewOrder,
    key: Option<IdempotencyKey>,
    admission: Option<&Admission>,
    correlation_id: &str,
) -> Result<Placed, ApiError> {
    // A repeat is answered before anything else: the product may have been deleted since, and
    // the pipeline may be refusing new orders (a 503 to a repeat would read as "not placed").
    if let Some(key) = &key {
        let mut conn = db.reader().await?;
        if let Some(record) = store::find_key(&mut conn, user, &key.key).await? {
            return replay(record, key);
        }
    }
    let _in_flight = match admission {
        Some(admission) => {
            let place = admission.enter().await?;
            admission.check().await?;
            Some(place)
        }
        None => None,
    };

    let ids: Vec<String> = request.lines.iter().map(|l| l.product_id.clone()).collect();
    let catalog = {
        let mut conn = db.reader().await?;
        store::products(&mut conn, &ids).await?
    };
    let priced = domain::price(&request.lines, |id| {
        catalog.get(id).filter(|p| !p.deleted).map(|p| Offer {
            name: p.name.clone(),
            price: p.price.clone(),
        })
    })
    .map_err(pricing_error)?;

    let now = Utc::now().timestamp_millis();
    let order = OrderRow {
        id: Uuid::now_v7(),
        user_id: user,
        state: OrderState::placed(),
        total: priced.total.clone(),
        address: request.address,
        payment: None,
        shipment: None,
        correlation_id: correlation_id.to_owned(),
        created_at: now,
        updated_at: now,
        timeline_len: 1,
    };
    let items: Vec<ItemRow> = priced
        .lines
        .iter()
        .map(|l| ItemRow {
            product_id: l.product_id.clone(),
            name: l.name.clone(),
            unit_amount: l.unit_price.amount,
            quantity: l.quantity,
        })
        .collect();
    let timeline = [store::TimelineRow {
        entry: Entry::Status(Status::Pending),
        at: now,
    }];
    let body = serde_json::to_string(&view(&order, &items, &timeline))
        .map_err(|e| ApiError::internal(format!("cannot render an order: {e}")))?;
    let mut lines = Vec::with_capacity(priced.lines.len());
    for line in &priced.lines {
        lines.push(OrderLine {
            // The read model holds only ids that came from events as UUIDs.
            product_id: Uuid::parse_str(&line.product_id)
                .map_err(|_| ApiError::internal("a product id in the read model is not a UUID"))?,
            quantity: line.quantity,
            unit_price: line.unit_price.clone(),
        });
    }

    let mut tx = db
        .begin(EventContext::request(NAME, correlation_id))
        .await?;
    if let Some(key) = &key {
        let record = KeyRecord {
            order_id: order.id,
            request: key.request.clone(),
            status: 202,
            response: body.clone(),
        };
        if !store::claim_key(tx.conn(), user, &key.key, &record, now).await? {
            // A concurrent request with the same key won: answer as it did.
            drop(tx);
            let mut conn = db.reader().await?;
            return match store::find_key(&mut conn, user, &key.key).await? {
                Some(record) => replay(record, key),
                None => Err(ApiError::conflict(
                    "CONFLICT",
                    "a request with this Idempotency-Key is in progress; try again",
                )),
            };
        }
    }
    store::insert_order(&mut tx, &order, &items).await?;
    tx.emit(Event::OrderCreated(OrderCreated {
        order_id: order.id,
        user_id: user,
        items: lines,
        total: order.total.clone(),
        payment_token: request.payment_token,
    }))?;
    tx.commit().await?;
    tracing::info!(order_id = %order.id, total = order.total.amount, "order placed");
    Ok(Placed {
        order_id: order.id,
        status: 202,
        body,
        replayed: false,
    })
}

// ----------------------------------------------------------------- reading

pub async fn get(db: &Db, caller: &AuthUser, id: Uuid) -> Result<OrderView, ApiError> {
    let mut conn = db.reader().await?;
    let order = store::load_order(&mut conn, id)
        .await?
        .filter(|o| visible_to(o, caller))
        .ok_or_else(no_such_order)?;
    view_one(&mut conn, order).await
}

/// What a listing asks for.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub status: Option<Status>,
    pub user_id: Option<Uuid>,
    pub page: PageRequest,
}

/// The caller's orders, newest first; an admin's listing covers every user (or `user_id`'s). A
/// customer's `user_id` narrows their own orders: another user's id lists nothing.
pub async fn list(
    db: &Db,
    caller: &AuthUser,
    query: ListQuery,
) -> Result<Page<OrderView>, ApiError> {
    let user_id = if caller.is_admin() {
        query.user_id
    } else {
        if query.user_id.is_some_and(|u| u != caller.id) {
            return Ok(Page {
                items: Vec::new(),
                next_cursor: None,
            });
        }
        Some(caller.id)
    };
    let filter = store::OrderFilter {
        user_id,
        status: query.status,
        before: query.page.after.clone(),
        limit: query.page.fetch(),
    };
    let mut conn = db.reader().await?;
    let rows = store::list_orders(&mut conn, &filter).await?;
    let views = views(&mut conn, &rows).await?;
    Ok(Page::from_rows(views, &query.page, |o| o.id.clone()))
}

// -------------------------------------------------------------- cancelling

/// The owner (or an admin) cancels a `PENDING` or `CONFIRMED` order: `CANCELLED` with
/// `CUSTOMER_REQUEST`, announced by `OrderCancelled`. Otherwise 409 `ORDER_NOT_CANCELLABLE`.
pub async fn cancel(
    db: &Db,
    caller: &AuthUser,
    id: Uuid,
    correlation_id: &str,
) -> Result<OrderView, ApiError> {
    let now = Utc::now().timestamp_millis();
    let mut tx = db
        .begin(EventContext::request(NAME, correlation_id))
        .await?;
    let order = store::lock_order(tx.conn(), id, now, 0)
        .await?
        .filter(|o| visible_to(o, caller))
        .ok_or_else(no_such_order)?;
    let order = match domain::decide(order.state, Input::CustomerCancel) {
        Decision::Advance(steps) => advance(&mut tx, order, &steps, now).await?,
        Decision::Refuse(_) | Decision::Stay(_) => {
            return Err(ApiError::conflict(
                "ORDER_NOT_CANCELLABLE",
                format!(
                    "an order that is {} can no longer be cancelled",
                    order.state.status.as_str()
                ),
            ));
        }
    };
    // The new timeline entries first, so that the answer shows them.
    tx.insert_pending_rows().await?;
    let view = view_one(tx.conn(), order).await?;
    tx.commit().await?;
    tracing::info!(order_id = %id, "order cancelled by request");
    Ok(view)
}

// ------------------------------------------------------------ saga progress

/// Moves `order` through `steps`: each one's timeline entry and events, then the status itself,
/// only if no other transaction moved it meanwhile. Returns the order as it now is.
async fn advance(
    tx: &mut Tx,
    mut order: OrderRow,
    steps: &[Step],
    now: i64,
) -> Result<OrderRow, StorageError> {
    let from = order.state.status;
    for step in steps {
        order.timeline_len += 1;
        store::append_timeline(
            tx,
            order.id,
            order.timeline_len,
            &Entry::Status(step.status()),
            now,
        )?;
        for event in announcements(&order, *step)? {
            tx.emit(event)?;
        }
        order.state = step.state();
    }
    if !store::update_status(
        tx.conn(),
        order.id,
        from,
        order.state,
        order.timeline_len,
        now,
    )
    .await?
    {
        // Cannot happen while the row is held (see `store::lock_order`); if it does, the whole
        // transaction is retried, like a serialization failure.
        return Err(StorageError::Unavailable(format!(
            "order {} changed while it was being updated",
            order.id
        )));
    }
    order.updated_at = now;
    Ok(order)
}

/// The events that announce `step` of `order`.
fn announcements(order: &OrderRow, step: Step) -> Result<Vec<Event>, StorageError> {
    let shipment = || {
        order.shipment.as_ref().ok_or_else(|| {
            StorageError::Query(format!("order {} has no shipment to announce", order.id))
        })
    };
    Ok(match step {
        Step::Confirm => vec![
            Event::OrderConfirmed(OrderConfirmed {
                order_id: order.id,
                user_id: order.user_id,
                total: order.total.clone(),
            }),
            Event::ShipmentRequested(ShipmentRequested {
                order_id: order.id,
                user_id: order.user_id,
                shipping_address: order.address.clone(),
            }),
        ],
        Step::Ship => {
            let shipment = shipment()?;
            vec![Event::OrderShipped(OrderShipped {
                order_id: order.id,
                user_id: order.user_id,
                shipment_id: shipment.id,
                tracking_number: shipment.tracking_number.clone().unwrap_or_default(),
            })]
        }
        Step::Deliver => vec![Event::OrderDelivered(OrderDelivered {
            order_id: order.id,
            user_id: order.user_id,
            shipment_id: shipment()?.id,
        })],
        Step::Cancel(reason) => vec![Event::OrderCancelled(OrderCancelled {
            order_id: order.id,
            user_id: order.user_id,
            reason,
        })],
    })
}

/// A saga event as the order sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub order_id: Uuid,
    /// The `eventType`, for the timeline.
    pub event: &'static str,
    /// When it occurred (epoch millis).
    pub occurred_at: i64,
    /// What it means to the status machine, if anything.
    pub input: Option<Input>,
    /// For an `InventoryRejected`: the product it names (a deleted one makes the cancellation
    /// `PRODUCT_UNAVAILABLE`).
    pub rejected_product: Option<Uuid>,
    pub payment: Option<PaymentSummary>,
    pub shipment: Option<ShipmentSummary>,
}

/// Applies a saga event to its order inside the consumer's transaction: timeline, summaries (only
/// forward), and the status change the rules decide, with its events.
pub async fn observe(tx: &mut Tx, seen: Observation) -> Result<(), StorageError> {
    let now = Utc::now().timestamp_millis();
    // One entry for the event itself.
    let Some(mut order) = store::lock_order(tx.conn(), seen.order_id, now, 1).await? else {
        // Every saga event follows an OrderCreated that this service committed first.
        tracing::warn!(order_id = %seen.order_id, event = seen.event, "event for an unknown order ignored");
        return Ok(());
    };
    store::append_timeline(
        tx,
        order.id,
        order.timeline_len,
        &Entry::Event(seen.event.to_owned()),
        seen.occurred_at,
    )?;
    if let Some(payment) = seen.payment
        && payment
            .status
            .supersedes(order.payment.as_ref().map(|p| p.status))
    {
        store::set_payment(tx.conn(), order.id, &payment).await?;
        order.payment = Some(payment);
    }
    if let Some(mut shipment) = seen.shipment {
        let current = order.shipment.as_ref();
        if shipment.status.supersedes(current.map(|s| s.status)) {
            if shipment.tracking_number.is_none()
                && let Some(current) = current.filter(|c| c.id == shipment.id)
            {
                shipment.tracking_number = current.tracking_number.clone();
            }
            store::set_shipment(tx.conn(), order.id, &shipment).await?;
            order.shipment = Some(shipment);
        }
    }
    let Some(mut input) = seen.input else {
        return Ok(());
    };
    if input == Input::InventoryRejected
        && let Some(product) = seen.rejected_product
        && product_deleted(tx.conn(), product).await?
    {
        // The reservation failed because the product was deleted after the order was placed
        // (as far as this service's read model knows; if its ProductDeleted is still on its way,
        // the order ends OUT_OF_STOCK).
        input = Input::ProductUnavailable;
    }
    match domain::decide(order.state, input) {
        Decision::Advance(steps) => {
            let before = order.state.status;
            let order = advance(tx, order, &steps, now).await?;
            tracing::info!(order_id = %order.id, event = seen.event, from = before.as_str(),
                to = order.state.status.as_str(), "order status changed");
        }
        Decision::Stay(Stay::Recall) => {
            let shipment = order.shipment.as_ref();
            tracing::warn!(order_id = %order.id, event = seen.event,
                shipment_id = shipment.map(|s| s.id.to_string()),
                tracking_number = shipment.and_then(|s| s.tracking_number.clone()),
                "the parcel of a cancelled order left the warehouse; it must be recalled \
                 (the order stays cancelled, its payment voided and its stock released)");
        }
        Decision::Stay(Stay::Contradicts) => {
            tracing::warn!(order_id = %order.id, event = seen.event, status = order.state.status.as_str(),
                "event contradicts the order's status; ignored");
        }
        Decision::Stay(why) => {
            tracing::debug!(order_id = %order.id, event = seen.event, ?why, "no status change");
        }
        Decision::Refuse(refusal) => {
            tracing::warn!(order_id = %order.id, event = seen.event, ?refusal, "event refused");
        }
    }
    Ok(())
}

/// Does the catalog read model have `product` as deleted?
async fn product_deleted(conn: &mut Conn, product: Uuid) -> Result<bool, StorageError> {
    let id = product.to_string();
    let known = store::products(conn, std::slice::from_ref(&id)).await?;
    Ok(known.get(&id).is_some_and(|p| p.deleted))
}

// ------------------------------------------------------------- saga timeout

/// Orders taken per query of the sweeper.
const SWEEP_BATCH: i64 = 100;
/// Batches per sweep at most, so one sweep ends even if orders keep coming.
const SWEEP_BATCHES: usize = 20;

/// Cancels with `TIMEOUT` every order still `PENDING` more than `timeout` after it was placed,
/// one transaction per order. The status is decided again inside each transaction, on the held
/// row, so a consumer confirming the order at the same moment wins or loses cleanly. Returns how
/// many were cancelled.
pub async fn expire_overdue(db: &Db, timeout: Duration) -> Result<usize, StorageError> {
    let now = Utc::now().timestamp_millis();
    let cutoff = now.saturating_sub(i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX));
    let mut expired = 0;
    for _ in 0..SWEEP_BATCHES {
        let overdue = {
            let mut conn = db.reader().await?;
            store::overdue(&mut conn, cutoff, SWEEP_BATCH).await?
        };
        for (id, correlation_id) in &overdue {
            match expire(db, *id, correlation_id, now).await {
                Ok(true) => expired += 1,
                Ok(false) => {}
                Err(e) if e.is_unavailable() => return Err(e),
                // One order that cannot be cancelled must not stop the sweep for every other.
                Err(e) => {
                    tracing::error!(order_id = %id, error = %e, "cannot cancel an overdue order")
                }
            }
        }
        if (overdue.len() as i64) < SWEEP_BATCH {
            break;
        }
    }
    Ok(expired)
}

async fn expire(db: &Db, id: Uuid, correlation_id: &str, now: i64) -> Result<bool, StorageError> {
    let mut tx = db
        .begin(EventContext::request(NAME, correlation_id))
        .await?;
    let Some(order) = store::lock_order(tx.conn(), id, now, 0).await? else {
        return Ok(false);
    };
    // Dropping the transaction rolls the lock's touch back.
    let Decision::Advance(steps) = domain::decide(order.state, Input::Timeout) else {
        return Ok(false);
    };
    advance(&mut tx, order, &steps, now).await?;
    tx.commit().await?;
    tracing::info!(order_id = %id, "order cancelled: saga timeout");
    Ok(true)
}

/// How often the sweeper looks: `timeout / 10`, between 50 ms and 1 s.
pub fn sweep_interval(timeout: Duration) -> Duration {
    (timeout / 10).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

#[cfg(test)]
mod tests;
