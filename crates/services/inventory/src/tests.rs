//! The use cases against a real (SQLite) database: what each event does to the stock and what it
//! emits.

use emporium_events::{
    CancellationReason, Envelope, Event, Money, OrderCancelled, OrderCreated, OrderLine,
    ProductCreated, ProductDeleted, ShipmentDispatched, StockLine,
};
use emporium_platform::storage::{Db, EventContext, Tx};
use uuid::Uuid;

use crate::{
    NAME,
    app::{self, Error},
    domain::LOW_STOCK_THRESHOLD,
    store::{self, StockRow},
};

struct Fixture {
    db: Db,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_sqlite(NAME, &dir.path().join("inventory.db"))
            .await
            .unwrap();
        db.migrate(store::MIGRATIONS).await.unwrap();
        Fixture { db, _dir: dir }
    }

    async fn tx(&self) -> Tx {
        self.db
            .begin(EventContext::request(NAME, "test"))
            .await
            .unwrap()
    }

    /// The events emitted since the last call.
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

    async fn product(&self, stock: i64) -> Uuid {
        let product_id = Uuid::now_v7();
        let mut tx = self.tx().await;
        app::product_created(
            &mut tx,
            &ProductCreated {
                product_id,
                name: "Mug".into(),
                description: None,
                category: "kitchen".into(),
                price: Money::new(500, "USD"),
                initial_stock: stock,
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        self.emitted().await;
        product_id
    }

    async fn stock(&self, product_id: Uuid) -> StockRow {
        let row = store::stock(self.db.reader(), product_id)
            .await
            .unwrap()
            .unwrap();
        assert!(row.levels().is_conserved(), "{row:?}");
        row
    }

    async fn order(&self, order_id: Uuid, lines: &[(Uuid, i64)]) {
        let mut tx = self.tx().await;
        app::order_created(
            &mut tx,
            &OrderCreated {
                order_id,
                user_id: Uuid::now_v7(),
                items: lines
                    .iter()
                    .map(|(product_id, quantity)| OrderLine {
                        product_id: *product_id,
                        quantity: *quantity,
                        unit_price: Money::new(500, "USD"),
                    })
                    .collect(),
                total: Money::new(500, "USD"),
                payment_token: "tok_visa".into(),
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }

    async fn cancel(&self, order_id: Uuid) {
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

    async fn dispatch(&self, order_id: Uuid) {
        let mut tx = self.tx().await;
        app::shipment_dispatched(
            &mut tx,
            &ShipmentDispatched {
                order_id,
                shipment_id: Uuid::now_v7(),
                tracking_number: "EMP0123456789".into(),
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
}

#[tokio::test]
async fn a_new_product_gets_its_initial_stock_once() {
    let f = Fixture::new().await;
    let product_id = Uuid::now_v7();
    let created = ProductCreated {
        product_id,
        name: "Mug".into(),
        description: None,
        category: "kitchen".into(),
        price: Money::new(500, "USD"),
        initial_stock: 12,
    };
    for _ in 0..2 {
        let mut tx = f.tx().await;
        app::product_created(&mut tx, &created).await.unwrap();
        tx.commit().await.unwrap();
    }
    let events = f.emitted().await;
    assert_eq!(events.len(), 1, "a duplicate creates nothing: {events:?}");
    let Event::StockAdjusted(adjusted) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!((adjusted.delta, adjusted.available), (12, 12));
    let row = f.stock(product_id).await;
    assert_eq!((row.available, row.reserved, row.committed), (12, 0, 0));
}

#[tokio::test]
async fn an_order_is_reserved_whole_or_not_at_all() {
    let f = Fixture::new().await;
    let plenty = f.product(10).await;
    let scarce = f.product(2).await;

    let rejected = Uuid::now_v7();
    f.order(rejected, &[(plenty, 4), (scarce, 3)]).await;
    let events = f.emitted().await;
    let [Event::InventoryRejected(rejection)] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(rejection.order_id, rejected);
    assert_eq!(rejection.product_id, scarce);
    assert_eq!((rejection.requested, rejection.available), (3, 2));
    // The line that fitted was not kept either.
    assert_eq!(f.stock(plenty).await.available, 10);
    assert_eq!(f.stock(scarce).await.available, 2);
    assert!(
        store::reservation(&mut *f.tx().await.conn(), rejected)
            .await
            .unwrap()
            .is_empty()
    );

    let reserved = Uuid::now_v7();
    f.order(reserved, &[(plenty, 4), (scarce, 1), (plenty, 1)])
        .await;
    let events = f.emitted().await;
    let Some(Event::InventoryReserved(reservation)) = events.last() else {
        panic!("{events:?}")
    };
    let mut expected = vec![
        StockLine {
            product_id: plenty,
            quantity: 5,
        },
        StockLine {
            product_id: scarce,
            quantity: 1,
        },
    ];
    expected.sort_by_key(|l| l.product_id);
    assert_eq!(reservation.items, expected);
    let row = f.stock(plenty).await;
    assert_eq!((row.available, row.reserved), (5, 5));
}

#[tokio::test]
async fn a_second_order_created_for_the_same_order_reserves_nothing_more() {
    let f = Fixture::new().await;
    let product = f.product(10).await;
    let order = Uuid::now_v7();
    f.order(order, &[(product, 3)]).await;
    f.order(order, &[(product, 3)]).await;
    let reserved = f
        .emitted()
        .await
        .into_iter()
        .filter(|e| matches!(e, Event::InventoryReserved(_)))
        .count();
    assert_eq!(reserved, 1);
    assert_eq!(f.stock(product).await.reserved, 3);
}

#[tokio::test]
async fn unknown_and_deleted_products_cannot_be_reserved() {
    let f = Fixture::new().await;
    let unknown = Uuid::now_v7();
    f.order(Uuid::now_v7(), &[(unknown, 1)]).await;
    let events = f.emitted().await;
    let [Event::InventoryRejected(rejection)] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!((rejection.product_id, rejection.available), (unknown, 0));

    let deleted = f.product(10).await;
    let mut tx = f.tx().await;
    app::product_deleted(
        &mut tx,
        &ProductDeleted {
            product_id: deleted,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    f.order(Uuid::now_v7(), &[(deleted, 1)]).await;
    assert!(matches!(
        f.emitted().await.as_slice(),
        [Event::InventoryRejected(_)]
    ));
    let row = f.stock(deleted).await;
    assert!(row.is_deleted());
    assert_eq!(row.available, 10);
}

#[tokio::test]
async fn cancelling_releases_a_held_reservation_once() {
    let f = Fixture::new().await;
    let product = f.product(10).await;
    let order = Uuid::now_v7();
    f.order(order, &[(product, 4)]).await;
    f.emitted().await;
    f.cancel(order).await;
    f.cancel(order).await;
    let events = f.emitted().await;
    let [Event::InventoryReleased(released)] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!(released.items[0].quantity, 4);
    let row = f.stock(product).await;
    assert_eq!((row.available, row.reserved), (10, 0));
    // A dispatch after the release commits nothing.
    f.dispatch(order).await;
    assert!(f.emitted().await.is_empty());
    assert_eq!(f.stock(product).await.committed, 0);
}

#[tokio::test]
async fn an_order_cancelled_before_it_was_created_is_never_reserved() {
    let f = Fixture::new().await;
    let product = f.product(10).await;
    let order = Uuid::now_v7();
    f.cancel(order).await;
    f.order(order, &[(product, 4)]).await;
    assert!(f.emitted().await.is_empty());
    assert_eq!(f.stock(product).await.available, 10);
}

#[tokio::test]
async fn a_dispatched_order_commits_its_reservation() {
    let f = Fixture::new().await;
    let product = f.product(10).await;
    let order = Uuid::now_v7();
    f.order(order, &[(product, 4)]).await;
    f.emitted().await;
    f.dispatch(order).await;
    f.dispatch(order).await;
    let events = f.emitted().await;
    assert!(
        matches!(events.as_slice(), [Event::InventoryCommitted(c)] if c.items[0].quantity == 4),
        "{events:?}"
    );
    let row = f.stock(product).await;
    assert_eq!((row.available, row.reserved, row.committed), (6, 0, 4));
    // Shipped units stay sold even if a cancellation arrives late.
    f.cancel(order).await;
    assert!(f.emitted().await.is_empty());
    assert_eq!(f.stock(product).await.committed, 4);
}

#[tokio::test]
async fn low_stock_is_announced_once_per_crossing() {
    let f = Fixture::new().await;
    let product = f.product(LOW_STOCK_THRESHOLD + 5).await;
    let low_stock_events = |events: Vec<Event>| {
        events
            .into_iter()
            .filter(|e| matches!(e, Event::LowStock(_)))
            .count()
    };

    let first = Uuid::now_v7();
    f.order(first, &[(product, 5)]).await;
    assert_eq!(
        low_stock_events(f.emitted().await),
        1,
        "fell to the threshold"
    );
    let second = Uuid::now_v7();
    f.order(second, &[(product, 1)]).await;
    assert_eq!(low_stock_events(f.emitted().await), 0, "still low");
    f.cancel(first).await;
    f.cancel(second).await;
    assert_eq!(low_stock_events(f.emitted().await), 0, "rising is not low");
    assert!(!f.stock(product).await.is_low());
    f.order(Uuid::now_v7(), &[(product, 6)]).await;
    assert_eq!(low_stock_events(f.emitted().await), 1, "a new crossing");
}

#[tokio::test]
async fn adjustments_change_stock_and_never_make_it_negative() {
    let f = Fixture::new().await;
    let product = f.product(10).await;
    let row = app::adjust(&f.db, "c", product, -3, Some("broken".into()))
        .await
        .unwrap();
    assert_eq!(row.available, 7);
    let events = f.emitted().await;
    assert!(
        matches!(events.as_slice(), [Event::StockAdjusted(a)] if a.delta == -3 && a.available == 7 && a.reason.as_deref() == Some("broken")),
        "{events:?}"
    );
    assert!(matches!(
        app::adjust(&f.db, "c", product, -8, None).await,
        Err(Error::InsufficientStock { available: 7 })
    ));
    assert!(matches!(
        app::adjust(&f.db, "c", Uuid::now_v7(), 1, None).await,
        Err(Error::NotFound)
    ));
    assert!(
        f.emitted().await.is_empty(),
        "a refused adjustment emits nothing"
    );
    // Down to the threshold: LowStock with the adjustment.
    app::adjust(&f.db, "c", product, -2, None).await.unwrap();
    let events = f.emitted().await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::LowStock(l) if l.available == 5)),
        "{events:?}"
    );
    let row = f.stock(product).await;
    assert_eq!((row.initial_stock, row.adjustments), (10, -5));
}
