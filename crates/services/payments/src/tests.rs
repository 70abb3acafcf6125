//! The use cases against a real database, through the service's event handler as the consumer
//! drives it: what each event does to the order's payment and what it emits. Each test runs on
//! SQLite (`sqlite::…`) and on PostgreSQL (`postgres::…`) when `EMPORIUM_TEST_DATABASE_URL` names
//! a server ([`emporium_platform::on_both_backends`]).

use std::{sync::Arc, time::Duration};

use emporium_events::{
    CancellationReason, DeclineReason, Envelope, Event, InventoryReserved, Money, OrderCancelled,
    OrderCreated, OrderLine, OrderShipped, ShipmentDispatched, StockLine,
};
use emporium_platform::{
    bus::consumer::{EventHandler, HandlerError},
    storage::{
        EventContext,
        testing::{TestDb, take_emitted},
    },
};
use uuid::Uuid;

use crate::{
    NAME,
    app::Authorizer,
    breaker::{BreakerSettings, BreakerState, CircuitBreaker},
    consumers::PaymentsHandler,
    provider::{RetryPolicy, SimulatedProvider},
    store,
};

const LIMIT: i64 = 100_000;

emporium_platform::on_both_backends!(
    NAME,
    store::MIGRATIONS;
    a_reserved_order_is_authorized_once_whichever_event_comes_first,
    declines_are_recorded_with_their_reason,
    a_cancelled_order_is_never_authorized,
    cancelling_voids_an_authorization_once_and_a_later_shipment_captures_nothing,
    a_shipped_order_is_captured_once_and_a_later_cancellation_voids_nothing,
    the_carriers_dispatch_alone_captures_nothing,
    a_declined_payment_is_neither_voided_nor_captured,
    an_open_breaker_defers_a_good_order_for_redelivery_instead_of_declining_it,
);

struct Fixture {
    db: TestDb,
    handler: PaymentsHandler,
}

impl From<TestDb> for Fixture {
    fn from(db: TestDb) -> Fixture {
        Fixture::with_breaker(db, CircuitBreaker::default())
    }
}

impl Fixture {
    fn with_breaker(db: TestDb, breaker: CircuitBreaker) -> Fixture {
        Fixture {
            db,
            handler: PaymentsHandler {
                authorizer: Authorizer {
                    provider: Arc::new(SimulatedProvider { limit: LIMIT }),
                    breaker: Arc::new(breaker),
                    retry: RetryPolicy::default(),
                },
            },
        }
    }

    /// Hands `event` to the handler in its own transaction, committed only if it succeeds (as the
    /// consumer does).
    async fn try_deliver(&self, event: Event) -> Result<(), HandlerError> {
        let envelope = Envelope::new("test", "corr-test", None, event);
        let mut tx = self
            .db
            .begin(EventContext::caused_by(NAME, &envelope))
            .await
            .unwrap();
        self.handler.handle(&mut tx, &envelope).await?;
        tx.commit().await.unwrap();
        Ok(())
    }

    async fn deliver(&self, event: Event) {
        self.try_deliver(event).await.unwrap();
    }

    async fn emitted(&self) -> Vec<Event> {
        take_emitted(&self.db)
            .await
            .into_iter()
            .map(|e| e.event)
            .collect()
    }

    fn created_event(order_id: Uuid, total: i64, token: &str) -> Event {
        Event::OrderCreated(OrderCreated {
            order_id,
            user_id: Uuid::now_v7(),
            items: vec![OrderLine {
                product_id: Uuid::now_v7(),
                quantity: 1,
                unit_price: Money::new(total, "USD"),
            }],
            total: Money::new(total, "USD"),
            payment_token: token.into(),
        })
    }

    fn reserved_event(order_id: Uuid) -> Event {
        Event::InventoryReserved(InventoryReserved {
            order_id,
            items: vec![StockLine {
                product_id: Uuid::now_v7(),
                quantity: 1,
            }],
        })
    }

    async fn created(&self, order_id: Uuid, total: i64, token: &str) {
        self.deliver(Self::created_event(order_id, total, token))
            .await;
    }

    async fn reserved(&self, order_id: Uuid) {
        self.deliver(Self::reserved_event(order_id)).await;
    }

    async fn cancelled(&self, order_id: Uuid) {
        self.deliver(Event::OrderCancelled(OrderCancelled {
            order_id,
            user_id: Uuid::now_v7(),
            reason: CancellationReason::CustomerRequest,
        }))
        .await;
    }

    async fn shipped(&self, order_id: Uuid) {
        self.deliver(Event::OrderShipped(OrderShipped {
            order_id,
            user_id: Uuid::now_v7(),
            shipment_id: Uuid::now_v7(),
            tracking_number: "EMP0000000001".into(),
        }))
        .await;
    }

    async fn dispatched(&self, order_id: Uuid) {
        self.deliver(Event::ShipmentDispatched(ShipmentDispatched {
            order_id,
            shipment_id: Uuid::now_v7(),
            tracking_number: "EMP0000000001".into(),
        }))
        .await;
    }

    async fn status(&self, order_id: Uuid) -> Option<(String, Option<String>)> {
        store::payment_of_order(&mut self.db.reader().await.unwrap(), order_id)
            .await
            .unwrap()
            .map(|p| (p.status, p.decline_reason))
    }
}

async fn a_reserved_order_is_authorized_once_whichever_event_comes_first(f: Fixture) {
    let in_order = Uuid::now_v7();
    f.created(in_order, 1999, "tok_visa").await;
    assert!(
        f.emitted().await.is_empty(),
        "nothing before the reservation"
    );
    f.reserved(in_order).await;
    f.reserved(in_order).await;
    let events = f.emitted().await;
    assert!(
        matches!(events.as_slice(), [Event::PaymentAuthorized(p)] if p.order_id == in_order && p.amount == Money::new(1999, "USD")),
        "{events:?}"
    );

    let reversed = Uuid::now_v7();
    f.reserved(reversed).await;
    assert!(f.emitted().await.is_empty(), "nothing before the order");
    f.created(reversed, 500, "tok_mastercard").await;
    assert!(matches!(
        f.emitted().await.as_slice(),
        [Event::PaymentAuthorized(_)]
    ));
    assert_eq!(f.status(reversed).await, Some(("AUTHORIZED".into(), None)));
    let order = store::order(&mut f.db.reader().await.unwrap(), reversed)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(order.token, None, "the token is forgotten once used");
}

async fn declines_are_recorded_with_their_reason(f: Fixture) {
    for (token, total, reason) in [
        ("tok_chargeDeclined", 100, DeclineReason::CardDeclined),
        (
            "tok_insufficientFunds",
            100,
            DeclineReason::InsufficientFunds,
        ),
        ("tok_bogus", 100, DeclineReason::InvalidPaymentMethod),
        ("tok_visa", LIMIT + 1, DeclineReason::AmountLimitExceeded),
        ("tok_providerError", 100, DeclineReason::ProviderUnavailable),
    ] {
        let order = Uuid::now_v7();
        f.created(order, total, token).await;
        f.reserved(order).await;
        let events = f.emitted().await;
        assert!(
            matches!(events.as_slice(), [Event::PaymentFailed(p)] if p.reason == reason && p.order_id == order),
            "{token}: {events:?}"
        );
        assert_eq!(
            f.status(order).await,
            Some(("DECLINED".into(), Some(reason.as_str().into())))
        );
    }
}

async fn a_cancelled_order_is_never_authorized(f: Fixture) {
    let order = Uuid::now_v7();
    f.created(order, 1999, "tok_visa").await;
    f.cancelled(order).await;
    f.reserved(order).await;
    assert!(f.emitted().await.is_empty());
    assert_eq!(f.status(order).await, None);
}

async fn cancelling_voids_an_authorization_once_and_a_later_shipment_captures_nothing(f: Fixture) {
    let order = Uuid::now_v7();
    f.created(order, 1999, "tok_visa").await;
    f.reserved(order).await;
    f.emitted().await;
    f.cancelled(order).await;
    f.cancelled(order).await;
    let events = f.emitted().await;
    assert!(
        matches!(events.as_slice(), [Event::PaymentVoided(p)] if p.amount.amount == 1999),
        "{events:?}"
    );
    // An OrderShipped after the OrderCancelled (orders never emits both; a replay, say) captures
    // nothing that was voided.
    f.shipped(order).await;
    assert!(f.emitted().await.is_empty());
    assert_eq!(f.status(order).await, Some(("VOIDED".into(), None)));
}

async fn a_shipped_order_is_captured_once_and_a_later_cancellation_voids_nothing(f: Fixture) {
    let order = Uuid::now_v7();
    f.created(order, 1999, "tok_visa").await;
    f.reserved(order).await;
    f.emitted().await;
    f.shipped(order).await;
    f.shipped(order).await;
    f.cancelled(order).await;
    let events = f.emitted().await;
    assert!(
        matches!(events.as_slice(), [Event::PaymentCaptured(p)] if p.order_id == order && p.amount.amount == 1999),
        "{events:?}"
    );
    assert_eq!(f.status(order).await, Some(("CAPTURED".into(), None)));
}

async fn the_carriers_dispatch_alone_captures_nothing(f: Fixture) {
    // The parcel left, but orders had already accepted the customer's cancellation: orders emits
    // OrderCancelled and no OrderShipped, and the payment must end voided, not captured.
    let order = Uuid::now_v7();
    f.created(order, 1999, "tok_visa").await;
    f.reserved(order).await;
    f.emitted().await;
    f.dispatched(order).await;
    assert!(f.emitted().await.is_empty(), "no capture on dispatch");
    assert_eq!(f.status(order).await, Some(("AUTHORIZED".into(), None)));
    f.cancelled(order).await;
    assert!(matches!(
        f.emitted().await.as_slice(),
        [Event::PaymentVoided(_)]
    ));
    assert_eq!(f.status(order).await, Some(("VOIDED".into(), None)));
}

async fn a_declined_payment_is_neither_voided_nor_captured(f: Fixture) {
    let order = Uuid::now_v7();
    f.created(order, 1999, "tok_chargeDeclined").await;
    f.reserved(order).await;
    f.emitted().await;
    f.cancelled(order).await;
    f.shipped(order).await;
    assert!(f.emitted().await.is_empty());
    assert_eq!(
        f.status(order).await,
        Some(("DECLINED".into(), Some("card_declined".into())))
    );
}

async fn an_open_breaker_defers_a_good_order_for_redelivery_instead_of_declining_it(db: TestDb) {
    let f = Fixture::with_breaker(
        db,
        CircuitBreaker::new(BreakerSettings {
            failure_threshold: 3,
            cool_down: Duration::from_secs(3600),
        }),
    );
    // One customer's failing card opens the breaker, and is declined for its own failures.
    let failing = Uuid::now_v7();
    f.created(failing, 100, "tok_providerError").await;
    f.reserved(failing).await;
    assert!(matches!(
        f.emitted().await.as_slice(),
        [Event::PaymentFailed(p)] if p.reason == DeclineReason::ProviderUnavailable
    ));
    assert_eq!(f.handler.authorizer.breaker.state(), BreakerState::Open);

    // Everyone else's order is held back, not declined: an infrastructure error, which the
    // consumer answers by pausing and redelivering (never by dead-lettering).
    let good = Uuid::now_v7();
    f.created(good, 1999, "tok_visa").await;
    let refused = f.try_deliver(Fixture::reserved_event(good)).await;
    assert!(
        matches!(refused, Err(HandlerError::Infra(_))),
        "{refused:?}"
    );
    assert!(f.emitted().await.is_empty());
    assert_eq!(f.status(good).await, None, "nothing decided");

    // Once the breaker closes, the redelivered event authorizes the order.
    f.handler.authorizer.breaker.succeeded();
    f.reserved(good).await;
    assert!(matches!(
        f.emitted().await.as_slice(),
        [Event::PaymentAuthorized(p)] if p.order_id == good
    ));
    assert_eq!(f.status(good).await, Some(("AUTHORIZED".into(), None)));
}
