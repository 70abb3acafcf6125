//! The order's rules, with no IO: the status machine, what every saga input does to it, and how the
//! payment and shipment summaries move.
//!
//! ```text
//! PENDING ──PaymentAuthorized──▶ CONFIRMED ──ShipmentDispatched──▶ SHIPPED ──ShipmentDelivered──▶ DELIVERED
//!    │                              │
//!    └── InventoryRejected, PaymentFailed, CustomerCancel, Timeout ──▶ CANCELLED (reason)
//!                                   └── CustomerCancel ──▶ CANCELLED (CUSTOMER_REQUEST)
//! ```
//!
//! Inputs come from four topics, and one order's events on different topics may arrive in any order
//! (its `InventoryReserved` after its `PaymentAuthorized`, a payment after the customer cancelled).
//! The rules that make that safe:
//! - the status only ever moves forward along the diagram; `DELIVERED` and `CANCELLED` are final;
//! - an input for a step the order is already at or past is a late or duplicate one and changes
//!   nothing ([`Stay::AlreadyPast`]);
//! - an input after a cancellation changes nothing ([`Stay::Cancelled`]): the service that sent it
//!   undoes its own part when it sees `OrderCancelled` (inventory releases a late reservation,
//!   payments voids a late authorization, shipping cancels the shipment);
//! - an input that contradicts what the order knows — a shipment event for an order that was never
//!   confirmed, a rejection after a confirmation — changes nothing and is reported
//!   ([`Stay::Contradicts`]). A shipment exists only after this service confirmed the order (it emits
//!   `ShipmentRequested` with `OrderConfirmed`), so `ShipmentDispatched` on a `PENDING` order cannot
//!   come from a healthy platform; moving the order would skip its payment, and deferring it would
//!   wait for a confirmation that has already happened or never will. It is ignored.
//! - a shipment dispatched (or delivered) for a `CANCELLED` order changes nothing but is reported
//!   ([`Stay::Recall`]): the customer's cancellation was accepted before the carrier's dispatch was
//!   seen, so the order stays cancelled (payments voids, inventory releases: they follow this
//!   service's `OrderCancelled`/`OrderShipped`, of which it emits exactly one) and the parcel has to
//!   be recalled.
//! - an `InventoryRejected` for a product the catalog read model knows to be deleted cancels with
//!   `PRODUCT_UNAVAILABLE` rather than `OUT_OF_STOCK` ([`Input::ProductUnavailable`]).
//! - `ShipmentDelivered` on a `CONFIRMED` order (its `ShipmentDispatched` was lost, say to the
//!   dead-letter topic) moves the order through `SHIPPED` to `DELIVERED`: a delivered parcel was
//!   dispatched, and leaving the order `CONFIRMED` forever would be worse.

use emporium_events::{CancellationReason, Money};

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// The saga is running: stock and payment not yet both settled.
    Pending,
    /// Stock reserved and payment authorized.
    Confirmed,
    Shipped,
    Delivered,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Pending,
        Status::Confirmed,
        Status::Shipped,
        Status::Delivered,
        Status::Cancelled,
    ];

    /// The wire form, as in JSON and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Confirmed => "CONFIRMED",
            Status::Shipped => "SHIPPED",
            Status::Delivered => "DELIVERED",
            Status::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// No input moves an order out of a final status.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Delivered | Status::Cancelled)
    }
}

/// What the rules need to know about an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderState {
    pub status: Status,
    /// Set exactly when `status` is `CANCELLED`.
    pub cancellation_reason: Option<CancellationReason>,
}

impl OrderState {
    /// A new order.
    pub fn placed() -> OrderState {
        OrderState {
            status: Status::Pending,
            cancellation_reason: None,
        }
    }
}

/// Something that happened to an order: a saga event from another service, or a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Input {
    InventoryReserved,
    InventoryRejected,
    /// An `InventoryRejected` naming a product that the catalog read model has as deleted.
    ProductUnavailable,
    PaymentAuthorized,
    PaymentFailed,
    ShipmentCreated,
    ShipmentDispatched,
    ShipmentDelivered,
    ShipmentCancelled,
    /// The owner (or an admin) asks to cancel.
    CustomerCancel,
    /// The saga timeout passed (the sweeper).
    Timeout,
}

impl Input {
    pub const ALL: [Input; 11] = [
        Input::InventoryReserved,
        Input::InventoryRejected,
        Input::ProductUnavailable,
        Input::PaymentAuthorized,
        Input::PaymentFailed,
        Input::ShipmentCreated,
        Input::ShipmentDispatched,
        Input::ShipmentDelivered,
        Input::ShipmentCancelled,
        Input::CustomerCancel,
        Input::Timeout,
    ];
}

/// One status change, and so the events that announce it (see [`Step::status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// → `CONFIRMED`: announced by `OrderConfirmed` and `ShipmentRequested`.
    Confirm,
    /// → `SHIPPED`: announced by `OrderShipped`.
    Ship,
    /// → `DELIVERED`: announced by `OrderDelivered`.
    Deliver,
    /// → `CANCELLED`: announced by `OrderCancelled` with the reason.
    Cancel(CancellationReason),
}

impl Step {
    pub fn status(self) -> Status {
        match self {
            Step::Confirm => Status::Confirmed,
            Step::Ship => Status::Shipped,
            Step::Deliver => Status::Delivered,
            Step::Cancel(_) => Status::Cancelled,
        }
    }

    /// The state this step leads to.
    pub fn state(self) -> OrderState {
        OrderState {
            status: self.status(),
            cancellation_reason: match self {
                Step::Cancel(reason) => Some(reason),
                _ => None,
            },
        }
    }
}

/// Why an input leaves the status as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stay {
    /// The input informs (timeline, summaries) but does not move the status by itself.
    Noted,
    /// The order is already at or past the step this input leads to: a late or duplicate input.
    AlreadyPast,
    /// The order was cancelled; the sender undoes its part on `OrderCancelled`.
    Cancelled,
    /// The input contradicts what the order knows; worth a warning, never a state change.
    Contradicts,
    /// The parcel of a cancelled order left (or arrived) anyway: the order stays cancelled, and
    /// the parcel must be recalled. Worth a warning.
    Recall,
}

/// Why a command is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Only `PENDING` and `CONFIRMED` orders can be cancelled.
    NotCancellable,
}

/// What an input does to an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The order moves through these steps, in order (one, except a delivery that also proves the
    /// dispatch), each announced by its events.
    Advance(Vec<Step>),
    /// The status stays.
    Stay(Stay),
    /// A command the order refuses in its status.
    Refuse(Refusal),
}

/// The rules: what `input` does to an order in `state`.
pub fn decide(state: OrderState, input: Input) -> Decision {
    use Decision::{Advance, Refuse};
    use Input as I;
    use Status as S;
    let stay = Decision::Stay;
    match (state.status, input) {
        // A cancelled order is final: every saga input is late. Only the shipment's own
        // cancellation is the expected answer to our `OrderCancelled`.
        (S::Cancelled, I::ShipmentCancelled) => stay(Stay::Noted),
        (S::Cancelled, I::ShipmentDispatched | I::ShipmentDelivered) => stay(Stay::Recall),
        (S::Cancelled, I::CustomerCancel) => Refuse(Refusal::NotCancellable),
        (S::Cancelled, _) => stay(Stay::Cancelled),

        (S::Pending, I::InventoryReserved) => stay(Stay::Noted),
        (S::Pending, I::InventoryRejected) => {
            Advance(vec![Step::Cancel(CancellationReason::OutOfStock)])
        }
        (S::Pending, I::ProductUnavailable) => {
            Advance(vec![Step::Cancel(CancellationReason::ProductUnavailable)])
        }
        (S::Pending, I::PaymentAuthorized) => Advance(vec![Step::Confirm]),
        (S::Pending, I::PaymentFailed) => {
            Advance(vec![Step::Cancel(CancellationReason::PaymentDeclined)])
        }
        // No shipment exists before this service confirms the order.
        (
            S::Pending,
            I::ShipmentCreated
            | I::ShipmentDispatched
            | I::ShipmentDelivered
            | I::ShipmentCancelled,
        ) => stay(Stay::Contradicts),
        (S::Pending | S::Confirmed, I::CustomerCancel) => {
            Advance(vec![Step::Cancel(CancellationReason::CustomerRequest)])
        }
        (S::Pending, I::Timeout) => Advance(vec![Step::Cancel(CancellationReason::Timeout)]),

        // Confirmed, shipped or delivered: stock was reserved and the payment authorized.
        (S::Confirmed | S::Shipped | S::Delivered, I::InventoryReserved | I::PaymentAuthorized) => {
            stay(Stay::AlreadyPast)
        }
        (
            S::Confirmed | S::Shipped | S::Delivered,
            I::InventoryRejected | I::ProductUnavailable | I::PaymentFailed,
        ) => stay(Stay::Contradicts),
        (S::Confirmed | S::Shipped | S::Delivered, I::Timeout) => stay(Stay::AlreadyPast),
        (S::Shipped | S::Delivered, I::CustomerCancel) => Refuse(Refusal::NotCancellable),

        (S::Confirmed, I::ShipmentCreated) => stay(Stay::Noted),
        (S::Shipped | S::Delivered, I::ShipmentCreated) => stay(Stay::AlreadyPast),
        (S::Confirmed, I::ShipmentDispatched) => Advance(vec![Step::Ship]),
        (S::Shipped | S::Delivered, I::ShipmentDispatched) => stay(Stay::AlreadyPast),
        (S::Confirmed, I::ShipmentDelivered) => Advance(vec![Step::Ship, Step::Deliver]),
        (S::Shipped, I::ShipmentDelivered) => Advance(vec![Step::Deliver]),
        (S::Delivered, I::ShipmentDelivered) => stay(Stay::AlreadyPast),
        // Shipping cancels a shipment only on `OrderCancelled`, and never a dispatched one.
        (S::Confirmed | S::Shipped | S::Delivered, I::ShipmentCancelled) => stay(Stay::Contradicts),
    }
}

/// The state after `decision` (unchanged unless it advances).
pub fn after(state: OrderState, decision: &Decision) -> OrderState {
    match decision {
        Decision::Advance(steps) => steps.last().map_or(state, |step| step.state()),
        Decision::Stay(_) | Decision::Refuse(_) => state,
    }
}

/// The payment as the order shows it (`payment.status`), from payment events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStatus {
    Authorized,
    Declined,
    Captured,
    Voided,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Authorized => "AUTHORIZED",
            PaymentStatus::Declined => "DECLINED",
            PaymentStatus::Captured => "CAPTURED",
            PaymentStatus::Voided => "VOIDED",
        }
    }

    pub fn parse(text: &str) -> Option<PaymentStatus> {
        [
            PaymentStatus::Authorized,
            PaymentStatus::Declined,
            PaymentStatus::Captured,
            PaymentStatus::Voided,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    /// Authorized comes first; the other three end a payment.
    fn rank(self) -> u8 {
        match self {
            PaymentStatus::Authorized => 1,
            PaymentStatus::Declined | PaymentStatus::Captured | PaymentStatus::Voided => 2,
        }
    }

    /// Does a payment event with this status replace the summary `current`? Only forward: a
    /// replayed `PaymentAuthorized` does not undo a capture.
    pub fn supersedes(self, current: Option<PaymentStatus>) -> bool {
        current.is_none_or(|c| self.rank() > c.rank())
    }
}

/// The shipment as the order shows it (`shipment.status`), from shipment events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShipmentStatus {
    Ready,
    Dispatched,
    Delivered,
    Cancelled,
}

impl ShipmentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ShipmentStatus::Ready => "READY",
            ShipmentStatus::Dispatched => "DISPATCHED",
            ShipmentStatus::Delivered => "DELIVERED",
            ShipmentStatus::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(text: &str) -> Option<ShipmentStatus> {
        [
            ShipmentStatus::Ready,
            ShipmentStatus::Dispatched,
            ShipmentStatus::Delivered,
            ShipmentStatus::Cancelled,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    /// READY → DISPATCHED → DELIVERED, or READY → CANCELLED.
    fn rank(self) -> u8 {
        match self {
            ShipmentStatus::Ready => 1,
            ShipmentStatus::Dispatched | ShipmentStatus::Cancelled => 2,
            ShipmentStatus::Delivered => 3,
        }
    }

    /// Does a shipment event with this status replace the summary `current`? Only forward.
    pub fn supersedes(self, current: Option<ShipmentStatus>) -> bool {
        current.is_none_or(|c| self.rank() > c.rank())
    }
}

/// A line as the customer asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub product_id: String,
    pub quantity: i64,
}

/// What the catalog read model says about an orderable (known, not deleted) product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub name: String,
    pub price: Money,
}

/// A line with its price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedLine {
    pub product_id: String,
    pub name: String,
    pub unit_price: Money,
    pub quantity: i64,
    pub line_total: Money,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priced {
    pub lines: Vec<PricedLine>,
    pub total: Money,
}

/// Why lines cannot be priced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PricingError {
    /// No lines at all.
    Empty,
    /// These lines (indexes) name products that are unknown or deleted.
    UnknownProducts(Vec<usize>),
    /// This line's price is in another currency than the first line's: one order, one currency.
    MixedCurrencies(usize),
    /// The total does not fit in 64 bits of minor units.
    TooLarge,
}

/// Prices `lines` from the catalog (`offer` answers for orderable products only). Prices come
/// from here, never from the client.
pub fn price(
    lines: &[Line],
    offer: impl Fn(&str) -> Option<Offer>,
) -> Result<Priced, PricingError> {
    let offers: Vec<Option<Offer>> = lines.iter().map(|l| offer(&l.product_id)).collect();
    let unknown: Vec<usize> = offers
        .iter()
        .enumerate()
        .filter_map(|(i, o)| o.is_none().then_some(i))
        .collect();
    if !unknown.is_empty() {
        return Err(PricingError::UnknownProducts(unknown));
    }
    let mut priced = Vec::with_capacity(lines.len());
    let mut total: Option<Money> = None;
    for (index, (line, offer)) in lines.iter().zip(offers.into_iter().flatten()).enumerate() {
        let line_total = offer
            .price
            .amount
            .checked_mul(line.quantity)
            .ok_or(PricingError::TooLarge)?;
        let sum = match &total {
            None => Money::new(line_total, offer.price.currency.clone()),
            Some(sum) if sum.currency != offer.price.currency => {
                return Err(PricingError::MixedCurrencies(index));
            }
            Some(sum) => Money::new(
                sum.amount
                    .checked_add(line_total)
                    .ok_or(PricingError::TooLarge)?,
                sum.currency.clone(),
            ),
        };
        total = Some(sum);
        priced.push(PricedLine {
            product_id: line.product_id.clone(),
            name: offer.name,
            line_total: Money::new(line_total, offer.price.currency.clone()),
            unit_price: offer.price,
            quantity: line.quantity,
        });
    }
    let total = total.ok_or(PricingError::Empty)?;
    Ok(Priced {
        lines: priced,
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use CancellationReason as R;
    use Input as I;
    use Status as S;

    fn given(status: S) -> OrderState {
        OrderState {
            status,
            cancellation_reason: (status == S::Cancelled).then_some(R::Timeout),
        }
    }

    fn advance(steps: &[Step]) -> Decision {
        Decision::Advance(steps.to_vec())
    }

    const NOTED: Decision = Decision::Stay(Stay::Noted);
    const PAST: Decision = Decision::Stay(Stay::AlreadyPast);
    const CANCELLED: Decision = Decision::Stay(Stay::Cancelled);
    const CONTRA: Decision = Decision::Stay(Stay::Contradicts);
    const RECALL: Decision = Decision::Stay(Stay::Recall);
    const REFUSED: Decision = Decision::Refuse(Refusal::NotCancellable);

    /// Every input in every status: given the status, when the input, then the decision.
    fn table() -> Vec<(S, I, Decision)> {
        vec![
            // PENDING
            (S::Pending, I::InventoryReserved, NOTED),
            (
                S::Pending,
                I::InventoryRejected,
                advance(&[Step::Cancel(R::OutOfStock)]),
            ),
            (
                S::Pending,
                I::ProductUnavailable,
                advance(&[Step::Cancel(R::ProductUnavailable)]),
            ),
            (S::Pending, I::PaymentAuthorized, advance(&[Step::Confirm])),
            (
                S::Pending,
                I::PaymentFailed,
                advance(&[Step::Cancel(R::PaymentDeclined)]),
            ),
            (S::Pending, I::ShipmentCreated, CONTRA),
            (S::Pending, I::ShipmentDispatched, CONTRA),
            (S::Pending, I::ShipmentDelivered, CONTRA),
            (S::Pending, I::ShipmentCancelled, CONTRA),
            (
                S::Pending,
                I::CustomerCancel,
                advance(&[Step::Cancel(R::CustomerRequest)]),
            ),
            (S::Pending, I::Timeout, advance(&[Step::Cancel(R::Timeout)])),
            // CONFIRMED
            (S::Confirmed, I::InventoryReserved, PAST),
            (S::Confirmed, I::InventoryRejected, CONTRA),
            (S::Confirmed, I::ProductUnavailable, CONTRA),
            (S::Confirmed, I::PaymentAuthorized, PAST),
            (S::Confirmed, I::PaymentFailed, CONTRA),
            (S::Confirmed, I::ShipmentCreated, NOTED),
            (S::Confirmed, I::ShipmentDispatched, advance(&[Step::Ship])),
            (
                S::Confirmed,
                I::ShipmentDelivered,
                advance(&[Step::Ship, Step::Deliver]),
            ),
            (S::Confirmed, I::ShipmentCancelled, CONTRA),
            (
                S::Confirmed,
                I::CustomerCancel,
                advance(&[Step::Cancel(R::CustomerRequest)]),
            ),
            (S::Confirmed, I::Timeout, PAST),
            // SHIPPED
            (S::Shipped, I::InventoryReserved, PAST),
            (S::Shipped, I::InventoryRejected, CONTRA),
            (S::Shipped, I::ProductUnavailable, CONTRA),
            (S::Shipped, I::PaymentAuthorized, PAST),
            (S::Shipped, I::PaymentFailed, CONTRA),
            (S::Shipped, I::ShipmentCreated, PAST),
            (S::Shipped, I::ShipmentDispatched, PAST),
            (S::Shipped, I::ShipmentDelivered, advance(&[Step::Deliver])),
            (S::Shipped, I::ShipmentCancelled, CONTRA),
            (S::Shipped, I::CustomerCancel, REFUSED),
            (S::Shipped, I::Timeout, PAST),
            // DELIVERED
            (S::Delivered, I::InventoryReserved, PAST),
            (S::Delivered, I::InventoryRejected, CONTRA),
            (S::Delivered, I::ProductUnavailable, CONTRA),
            (S::Delivered, I::PaymentAuthorized, PAST),
            (S::Delivered, I::PaymentFailed, CONTRA),
            (S::Delivered, I::ShipmentCreated, PAST),
            (S::Delivered, I::ShipmentDispatched, PAST),
            (S::Delivered, I::ShipmentDelivered, PAST),
            (S::Delivered, I::ShipmentCancelled, CONTRA),
            (S::Delivered, I::CustomerCancel, REFUSED),
            (S::Delivered, I::Timeout, PAST),
            // CANCELLED
            (S::Cancelled, I::InventoryReserved, CANCELLED),
            (S::Cancelled, I::InventoryRejected, CANCELLED),
            (S::Cancelled, I::ProductUnavailable, CANCELLED),
            (S::Cancelled, I::PaymentAuthorized, CANCELLED),
            (S::Cancelled, I::PaymentFailed, CANCELLED),
            (S::Cancelled, I::ShipmentCreated, CANCELLED),
            (S::Cancelled, I::ShipmentDispatched, RECALL),
            (S::Cancelled, I::ShipmentDelivered, RECALL),
            (S::Cancelled, I::ShipmentCancelled, NOTED),
            (S::Cancelled, I::CustomerCancel, REFUSED),
            (S::Cancelled, I::Timeout, CANCELLED),
        ]
    }

    #[test]
    fn every_input_in_every_status_decides_as_the_table_says() {
        let table = table();
        for status in S::ALL {
            for input in I::ALL {
                let rows: Vec<_> = table
                    .iter()
                    .filter(|(s, i, _)| *s == status && *i == input)
                    .collect();
                assert_eq!(
                    rows.len(),
                    1,
                    "the table covers {status:?} × {input:?} once"
                );
            }
        }
        for (status, input, then) in table {
            assert_eq!(
                decide(given(status), input),
                then,
                "given {status:?}, when {input:?}"
            );
        }
    }

    #[test]
    fn the_happy_path_goes_pending_confirmed_shipped_delivered() {
        let mut state = OrderState::placed();
        for (input, expected) in [
            (I::InventoryReserved, S::Pending),
            (I::PaymentAuthorized, S::Confirmed),
            (I::ShipmentCreated, S::Confirmed),
            (I::ShipmentDispatched, S::Shipped),
            (I::ShipmentDelivered, S::Delivered),
        ] {
            state = after(state, &decide(state, input));
            assert_eq!(state.status, expected, "after {input:?}");
            assert_eq!(state.cancellation_reason, None);
        }
    }

    #[test]
    fn each_cancellation_keeps_its_reason() {
        for (status, input, reason) in [
            (S::Pending, I::InventoryRejected, R::OutOfStock),
            (S::Pending, I::ProductUnavailable, R::ProductUnavailable),
            (S::Pending, I::PaymentFailed, R::PaymentDeclined),
            (S::Pending, I::CustomerCancel, R::CustomerRequest),
            (S::Confirmed, I::CustomerCancel, R::CustomerRequest),
            (S::Pending, I::Timeout, R::Timeout),
        ] {
            let state = after(given(status), &decide(given(status), input));
            assert_eq!(state.status, S::Cancelled);
            assert_eq!(state.cancellation_reason, Some(reason), "{input:?}");
            // A later cancelling input does not rewrite the reason.
            for later in I::ALL {
                assert_eq!(after(state, &decide(state, later)), state, "{later:?}");
            }
        }
    }

    #[test]
    fn a_duplicate_input_changes_nothing_the_second_time() {
        for status in S::ALL {
            for input in I::ALL {
                let once = after(given(status), &decide(given(status), input));
                let twice = decide(once, input);
                assert!(
                    !matches!(twice, Decision::Advance(_)),
                    "given {status:?}, {input:?} twice advanced again: {twice:?}"
                );
            }
        }
    }

    #[test]
    fn no_input_moves_an_order_backwards_or_out_of_a_final_status() {
        let rank = |s: S| match s {
            S::Pending => 0,
            S::Confirmed => 1,
            S::Shipped => 2,
            S::Delivered | S::Cancelled => 3,
        };
        for status in S::ALL {
            for input in I::ALL {
                let next = after(given(status), &decide(given(status), input));
                if status.is_final() {
                    assert_eq!(next, given(status), "{status:?} left by {input:?}");
                } else {
                    assert!(
                        rank(next.status) >= rank(status),
                        "{status:?} → {:?} on {input:?}",
                        next.status
                    );
                }
                assert_eq!(
                    next.cancellation_reason.is_some(),
                    next.status == S::Cancelled
                );
            }
        }
    }

    #[test]
    fn only_pending_and_confirmed_orders_can_be_cancelled_by_the_customer() {
        for status in S::ALL {
            let decision = decide(given(status), I::CustomerCancel);
            let cancellable = matches!(status, S::Pending | S::Confirmed);
            assert_eq!(
                decision == REFUSED,
                !cancellable,
                "{status:?}: {decision:?}"
            );
        }
    }

    #[test]
    fn late_events_after_a_cancellation_are_left_to_their_senders() {
        // A reservation or an authorization that lands after a timeout: inventory and payments
        // undo it on OrderCancelled, the order stays cancelled.
        let cancelled = after(
            OrderState::placed(),
            &decide(OrderState::placed(), I::Timeout),
        );
        for input in [I::InventoryReserved, I::PaymentAuthorized] {
            assert_eq!(decide(cancelled, input), CANCELLED, "{input:?}");
        }
    }

    #[test]
    fn a_parcel_dispatched_after_the_cancellation_stays_cancelled_and_is_reported_for_recall() {
        // The customer's cancellation was accepted while the carrier's dispatch was on its way.
        let confirmed = after(
            OrderState::placed(),
            &decide(OrderState::placed(), I::PaymentAuthorized),
        );
        let cancelled = after(confirmed, &decide(confirmed, I::CustomerCancel));
        assert_eq!(cancelled.status, S::Cancelled);
        assert_eq!(decide(cancelled, I::ShipmentDispatched), RECALL);
        assert_eq!(decide(cancelled, I::ShipmentDelivered), RECALL);
    }

    #[test]
    fn the_inventory_reservation_may_arrive_after_the_payment() {
        // Two topics, two sequences: PaymentAuthorized can be seen first.
        let confirmed = after(
            OrderState::placed(),
            &decide(OrderState::placed(), I::PaymentAuthorized),
        );
        assert_eq!(confirmed.status, S::Confirmed);
        assert_eq!(decide(confirmed, I::InventoryReserved), PAST);
    }

    #[test]
    fn statuses_round_trip_their_wire_form() {
        for status in S::ALL {
            assert_eq!(S::parse(status.as_str()), Some(status));
        }
        assert_eq!(S::parse("pending"), None);
    }

    #[test]
    fn payment_summaries_only_move_forward() {
        use PaymentStatus as P;
        assert!(P::Authorized.supersedes(None));
        assert!(P::Captured.supersedes(Some(P::Authorized)));
        assert!(P::Voided.supersedes(Some(P::Authorized)));
        assert!(P::Declined.supersedes(None));
        assert!(!P::Authorized.supersedes(Some(P::Captured)));
        assert!(!P::Authorized.supersedes(Some(P::Authorized)));
        assert!(!P::Captured.supersedes(Some(P::Voided)));
        for p in [P::Authorized, P::Declined, P::Captured, P::Voided] {
            assert_eq!(P::parse(p.as_str()), Some(p));
        }
    }

    #[test]
    fn shipment_summaries_only_move_forward() {
        use ShipmentStatus as Sh;
        assert!(Sh::Ready.supersedes(None));
        assert!(Sh::Dispatched.supersedes(Some(Sh::Ready)));
        assert!(Sh::Delivered.supersedes(Some(Sh::Dispatched)));
        assert!(Sh::Cancelled.supersedes(Some(Sh::Ready)));
        assert!(!Sh::Ready.supersedes(Some(Sh::Dispatched)));
        assert!(!Sh::Dispatched.supersedes(Some(Sh::Delivered)));
        assert!(!Sh::Cancelled.supersedes(Some(Sh::Dispatched)));
        for s in [Sh::Ready, Sh::Dispatched, Sh::Delivered, Sh::Cancelled] {
            assert_eq!(Sh::parse(s.as_str()), Some(s));
        }
    }

    fn catalog(id: &str) -> Option<Offer> {
        match id {
            "lamp" => Some(Offer {
                name: "Lamp".into(),
                price: Money::new(2500, "USD"),
            }),
            "mug" => Some(Offer {
                name: "Mug".into(),
                price: Money::new(800, "USD"),
            }),
            "tea" => Some(Offer {
                name: "Tea".into(),
                price: Money::new(500, "EUR"),
            }),
            "gold" => Some(Offer {
                name: "Gold".into(),
                price: Money::new(i64::MAX / 2, "USD"),
            }),
            _ => None,
        }
    }

    fn lines(items: &[(&str, i64)]) -> Vec<Line> {
        items
            .iter()
            .map(|(id, quantity)| Line {
                product_id: (*id).to_owned(),
                quantity: *quantity,
            })
            .collect()
    }

    #[test]
    fn lines_are_priced_from_the_catalog_and_summed() {
        let priced = price(&lines(&[("lamp", 2), ("mug", 3)]), catalog).unwrap();
        assert_eq!(priced.total, Money::new(2 * 2500 + 3 * 800, "USD"));
        assert_eq!(priced.lines[0].name, "Lamp");
        assert_eq!(priced.lines[0].unit_price, Money::new(2500, "USD"));
        assert_eq!(priced.lines[1].line_total, Money::new(2400, "USD"));
    }

    #[test]
    fn unknown_products_are_named_by_line() {
        assert_eq!(
            price(&lines(&[("lamp", 1), ("ghost", 1), ("gone", 2)]), catalog),
            Err(PricingError::UnknownProducts(vec![1, 2]))
        );
    }

    #[test]
    fn one_order_has_one_currency_and_a_total_that_fits() {
        assert_eq!(
            price(&lines(&[("lamp", 1), ("tea", 1)]), catalog),
            Err(PricingError::MixedCurrencies(1))
        );
        assert_eq!(
            price(&lines(&[("gold", 3)]), catalog),
            Err(PricingError::TooLarge)
        );
        assert_eq!(
            price(&lines(&[("gold", 1), ("gold", 2)]), catalog),
            Err(PricingError::TooLarge)
        );
        assert_eq!(price(&[], catalog), Err(PricingError::Empty));
    }
}
