//! The use cases against a real (SQLite) database: what each event does to the order's payment
//! and what it emits.

use std::sync::Arc;

use emporium_events::{
    CancellationReason, DeclineReason, Envelope, Event, InventoryReserved, Money, OrderCancelled,
    OrderCreated, OrderLine, ShipmentDispatched, StockLine,
};
use emporium_platform::storage::{Db, EventContext, Tx};
use uuid::Uuid;

use crate::{
    NAME,
    app::{self, Authorizer},
    breaker::CircuitBreaker,
    provider::{RetryPolicy, SimulatedProvider},
    store,
};

const LIMIT: i64 = 100_000;

struct Fixture {
    db: Db,
    authorizer: Authorizer,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_sqlite(NAME, &dir.path().join("payments.db"))
            .await
            .unwrap();
        db.migrate(store::MIGRATIONS).await.unwrap();
        Fixture {
            db,
            authorizer: Authorizer {
                provider: Arc::new(SimulatedProvider { limit: LIMIT }),
                breaker: Arc::new(CircuitBreaker::default()),
                retry: RetryPolicy::default(),
            },
            _dir: dir,
        }
    }

    async fn tx(&self) -> Tx {
        self.db
            .begin(EventContext::request(NAME, "test"))
            .await
            .unwrap()
    }

    async fn emitted(&self) -> Vec<Event> {
        let rows: Vec<Vec<u8>> = sqlx::query_scalar("SELECT payload FROM outbox ORDER BY id")
            .fetch_all(self.db.reader())
            .await
            .unwrap();
        sqlx::query("DELETE FROM outbox")
            .execute(self.db.reader())
            .await
            .unwrap();
        rows.iter()
            .map(|p| Envelope::from_json(p).unwrap().event)
            .collect()
    }

    async fn created(&self, order_id: Uuid, total: i64, token: &str) {
        let mut tx = self.tx().await;
        app::order_created(
            &mut tx,
            &self.authorizer,
            &OrderCreated {
                order_id,
                user_id: Uuid::now_v7(),
                items: vec![OrderLine {
                    product_id: Uuid::now_v7(),
                    quantity: 1,
                    unit_price: Money::new(total, "USD"),
                }],
                total: Money::new(total, "USD"),
                payment_token: token.into(),
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }

    async fn reserved(&self, order_id: Uuid) {
        let mut tx = self.tx().await;
        app::inventory_reserved(
            &mut tx,
            &self.authorizer,
            &InventoryReserved {
                order_id,
                items: vec![StockLine {
                    product_id: Uuid::now_v7(),
                    quantity: 1,
                }],
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }

    async fn cancelled(&self, order_id: Uuid) {
        let mut tx = self.tx().await;
        app::order_cancelled(
            &mut tx,
            &OrderCancelled {
                order_id,
                user_id: Uuid::now_v7(),
                reason: CancellationReason::CustomerRequest,
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }

    async fn dispatched(&self, order_id: Uuid) {
        let mut tx = self.tx().await;
        app::shipment_dispatched(
            &mut tx,
            &ShipmentDispatched {
                order_id,
                shipment_id: Uuid::now_v7(),
                tracking_number: "EMP0000000001".into(),
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }

    async fn status(&self, order_id: Uuid) -> Option<(String, Option<String>)> {
        store::payment_of_order(self.db.reader(), order_id)
            .await
            .unwrap()
            .map(|p| (p.status, p.decline_reason))
    }
}

#[tokio::test]
async fn a_reserved_order_is_authorized_once_whichever_event_comes_first() {
    let f = Fixture::new().await;
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
    let order = store::order(f.db.reader(), reversed)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(order.token, None, "the token is forgotten once used");
}

#[tokio::test]
async fn declines_are_recorded_with_their_reason() {
    let f = Fixture::new().await;
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

#[tokio::test]
async fn a_cancelled_order_is_never_authorized() {
    let f = Fixture::new().await;
    let order = Uuid::now_v7();
    f.created(order, 1999, "tok_visa").await;
    f.cancelled(order).await;
    f.reserved(order).await;
    assert!(f.emitted().await.is_empty());
    assert_eq!(f.status(order).await, None);
}

#[tokio::test]
async fn cancelling_voids_an_authorization_once() {
    let f = Fixture::new().await;
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
    // A late dispatch captures nothing that was voided.
    f.dispatched(order).await;
    assert!(f.emitted().await.is_empty());
    assert_eq!(f.status(order).await, Some(("VOIDED".into(), None)));
}

#[tokio::test]
async fn a_dispatched_order_is_captured_and_stays_captured() {
    let f = Fixture::new().await;
    let order = Uuid::now_v7();
    f.created(order, 1999, "tok_visa").await;
    f.reserved(order).await;
    f.emitted().await;
    f.dispatched(order).await;
    f.dispatched(order).await;
    f.cancelled(order).await;
    let events = f.emitted().await;
    assert!(
        matches!(events.as_slice(), [Event::PaymentCaptured(_)]),
        "{events:?}"
    );
    assert_eq!(f.status(order).await, Some(("CAPTURED".into(), None)));
}

#[tokio::test]
async fn a_declined_payment_is_neither_voided_nor_captured() {
    let f = Fixture::new().await;
    let order = Uuid::now_v7();
    f.created(order, 1999, "tok_chargeDeclined").await;
    f.reserved(order).await;
    f.emitted().await;
    f.cancelled(order).await;
    f.dispatched(order).await;
    assert!(f.emitted().await.is_empty());
    assert_eq!(
        f.status(order).await,
        Some(("DECLINED".into(), Some("card_declined".into())))
    );
}
