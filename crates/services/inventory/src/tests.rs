//! The use cases against a real database, the saga's events delivered through the service's
//! handler as the consumer does: what each event does to the stock and what it emits. Every test
//! runs on SQLite (`sqlite::…`) and, when `EMPORIUM_TEST_DATABASE_URL` names a PostgreSQL server
//! (`scripts/dev-services`), on PostgreSQL too (`postgres::…`, each in a database of its own,
//! dropped and recreated at its start); without one those say they are skipped and pass.

use emporium_events::{
    CancellationReason, Envelope, Event, Money, OrderCancelled, OrderCreated, OrderLine,
    OrderShipped, ProductCreated, ProductDeleted, ShipmentDispatched, StockLine,
};
use emporium_platform::{
    bus::consumer::{EventHandler, HandlerError},
    storage::{
        EventContext, Tx,
        testing::{TestDb, take_emitted},
    },
};
use uuid::Uuid;

use crate::{
    NAME,
    app::{self, Error},
    consumers::InventoryHandler,
    domain::{LOW_STOCK_THRESHOLD, OrderState},
    store::{self, StockRow},
};

struct Fixture {
    db: TestDb,
}

impl From<TestDb> for Fixture {
    fn from(db: TestDb) -> Fixture {
        Fixture { db }
    }
}

impl Fixture {
    async fn tx(&self) -> Tx {
        self.db
            .begin(EventContext::request(NAME, "test"))
            .await
            .unwrap()
    }

    /// The events emitted since the last call.
    async fn emitted(&self) -> Vec<Event> {
        take_emitted(&self.db)
            .await
            .into_iter()
            .map(|e| e.event)
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
        let row = store::stock(&mut self.db.reader().await.unwrap(), product_id)
            .await
            .unwrap()
            .unwrap();
        assert!(row.levels().is_conserved(), "{row:?}");
        row
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
        InventoryHandler.handle(&mut tx, &envelope).await?;
        tx.commit().await.unwrap();
        Ok(())
    }

    async fn deliver(&self, event: Event) {
        self.try_deliver(event).await.unwrap();
    }

    fn order_event(order_id: Uuid, lines: &[(Uuid, i64)]) -> Event {
        Event::OrderCreated(OrderCreated {
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
        })
    }

    async fn order(&self, order_id: Uuid, lines: &[(Uuid, i64)]) {
        self.deliver(Self::order_event(order_id, lines)).await;
    }

    async fn cancel(&self, order_id: Uuid) {
        self.deliver(Event::OrderCancelled(OrderCancelled {
            order_id,
            user_id: Uuid::now_v7(),
            reason: CancellationReason::CustomerRequest,
        }))
        .await;
    }

    async fn ship(&self, order_id: Uuid) {
        self.deliver(Event::OrderShipped(OrderShipped {
            order_id,
            user_id: Uuid::now_v7(),
            shipment_id: Uuid::now_v7(),
            tracking_number: "EMP0123456789".into(),
        }))
        .await;
    }

    async fn dispatch(&self, order_id: Uuid) {
        self.deliver(Event::ShipmentDispatched(ShipmentDispatched {
            order_id,
            shipment_id: Uuid::now_v7(),
            tracking_number: "EMP0123456789".into(),
        }))
        .await;
    }

    async fn state(&self, order_id: Uuid) -> Option<OrderState> {
        store::order_state(&mut *self.tx().await.conn(), order_id)
            .await
            .unwrap()
    }
}

emporium_platform::on_both_backends!(
    NAME,
    store::MIGRATIONS;
    a_new_product_gets_its_initial_stock_once,
    an_order_is_reserved_whole_or_not_at_all,
    a_second_order_created_for_the_same_order_reserves_nothing_more,
    an_order_for_a_product_not_heard_of_yet_is_retried_until_the_product_arrives,
    deleted_products_cannot_be_reserved,
    cancelling_releases_a_held_reservation_once,
    an_order_cancelled_before_it_was_created_is_never_reserved,
    a_shipped_order_commits_its_reservation_once,
    low_stock_is_announced_once_per_crossing,
    adjustments_change_stock_and_never_make_it_negative,
    the_carriers_dispatch_alone_commits_nothing,
    a_release_or_commit_decided_on_a_stale_read_moves_no_units,
    concurrent_orders_never_oversell_a_product,
);

async fn a_new_product_gets_its_initial_stock_once(f: Fixture) {
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

async fn an_order_is_reserved_whole_or_not_at_all(f: Fixture) {
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

async fn a_second_order_created_for_the_same_order_reserves_nothing_more(f: Fixture) {
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

async fn an_order_for_a_product_not_heard_of_yet_is_retried_until_the_product_arrives(f: Fixture) {
    let known = f.product(10).await;
    let soon = Uuid::now_v7();
    let order = Uuid::now_v7();
    let created = Fixture::order_event(order, &[(known, 1), (soon, 2)]);
    // Its ProductCreated is still on its way (another topic): fail, to be retried, not rejected.
    let first = f.try_deliver(created.clone()).await;
    assert!(
        matches!(&first, Err(HandlerError::Failed(e)) if e.contains(&soon.to_string())),
        "{first:?}"
    );
    assert!(f.emitted().await.is_empty(), "no InventoryRejected");
    assert_eq!(f.state(order).await, None, "nothing decided");
    assert_eq!(f.stock(known).await.available, 10, "nothing held");

    // The product arrives; the retry reserves.
    let mut tx = f.tx().await;
    app::product_created(
        &mut tx,
        &ProductCreated {
            product_id: soon,
            name: "Kettle".into(),
            description: None,
            category: "kitchen".into(),
            price: Money::new(500, "USD"),
            initial_stock: 5,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    f.emitted().await;
    f.deliver(created).await;
    let events = f.emitted().await;
    assert!(
        matches!(events.as_slice(), [Event::InventoryReserved(r)] if r.items.len() == 2),
        "{events:?}"
    );
    assert_eq!(f.stock(soon).await.reserved, 2);
}

async fn deleted_products_cannot_be_reserved(f: Fixture) {
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
    let order = Uuid::now_v7();
    f.order(order, &[(deleted, 1)]).await;
    let events = f.emitted().await;
    let [Event::InventoryRejected(rejection)] = events.as_slice() else {
        panic!("{events:?}")
    };
    assert_eq!((rejection.product_id, rejection.available), (deleted, 0));
    assert_eq!(f.state(order).await, Some(OrderState::Rejected));
    let row = f.stock(deleted).await;
    assert!(row.deleted);
    assert_eq!(row.available, 10);
}

async fn cancelling_releases_a_held_reservation_once(f: Fixture) {
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
    // An OrderShipped after the OrderCancelled (orders never emits both; a replay, say) commits
    // nothing.
    f.ship(order).await;
    assert!(f.emitted().await.is_empty());
    assert_eq!(f.stock(product).await.committed, 0);
    assert_eq!(f.state(order).await, Some(OrderState::Released));
}

async fn an_order_cancelled_before_it_was_created_is_never_reserved(f: Fixture) {
    let product = f.product(10).await;
    let order = Uuid::now_v7();
    f.cancel(order).await;
    f.order(order, &[(product, 4)]).await;
    assert!(f.emitted().await.is_empty());
    assert_eq!(f.stock(product).await.available, 10);
}

async fn a_shipped_order_commits_its_reservation_once(f: Fixture) {
    let product = f.product(10).await;
    let order = Uuid::now_v7();
    f.order(order, &[(product, 4)]).await;
    f.emitted().await;
    f.ship(order).await;
    f.ship(order).await;
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

async fn the_carriers_dispatch_alone_commits_nothing(f: Fixture) {
    // The parcel left, but orders had already accepted the customer's cancellation: orders emits
    // OrderCancelled and no OrderShipped, and the units must go back, not be sold.
    let product = f.product(10).await;
    let order = Uuid::now_v7();
    f.order(order, &[(product, 4)]).await;
    f.emitted().await;
    f.dispatch(order).await;
    assert!(f.emitted().await.is_empty(), "no commit on dispatch");
    assert_eq!(f.stock(product).await.reserved, 4);
    f.cancel(order).await;
    assert!(matches!(
        f.emitted().await.as_slice(),
        [Event::InventoryReleased(_)]
    ));
    let row = f.stock(product).await;
    assert_eq!((row.available, row.reserved, row.committed), (10, 0, 0));
}

async fn a_release_or_commit_decided_on_a_stale_read_moves_no_units(f: Fixture) {
    // Under PostgreSQL's READ COMMITTED two transactions can both read RESERVED; the second to
    // write must find the state moved and leave the units alone. Here the other transaction has
    // already committed its change, and this one goes on as if it had read RESERVED.
    let product = f.product(10).await;
    let shipped = Uuid::now_v7();
    f.order(shipped, &[(product, 4)]).await;
    f.ship(shipped).await;
    let cancelled = Uuid::now_v7();
    f.order(cancelled, &[(product, 3)]).await;
    f.cancel(cancelled).await;
    f.emitted().await;
    let before = f.stock(product).await;
    assert_eq!(
        (before.available, before.reserved, before.committed),
        (6, 0, 4)
    );

    let mut tx = f.tx().await;
    let now = store::now_millis();
    assert!(
        !app::release_if_reserved(&mut tx, shipped, now)
            .await
            .unwrap()
    );
    assert!(
        !app::commit_if_reserved(&mut tx, cancelled, now)
            .await
            .unwrap()
    );
    assert!(
        !app::release_if_reserved(&mut tx, cancelled, now)
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();

    assert!(f.emitted().await.is_empty());
    assert_eq!(f.stock(product).await, before);
    assert_eq!(f.state(shipped).await, Some(OrderState::Committed));
    assert_eq!(f.state(cancelled).await, Some(OrderState::Released));
}

async fn low_stock_is_announced_once_per_crossing(f: Fixture) {
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
    assert!(!f.stock(product).await.low);
    f.order(Uuid::now_v7(), &[(product, 6)]).await;
    assert_eq!(low_stock_events(f.emitted().await), 1, "a new crossing");
}

async fn adjustments_change_stock_and_never_make_it_negative(f: Fixture) {
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

/// Many orders for the last units of one product at once (PostgreSQL: truly concurrent
/// transactions under READ COMMITTED): as many are reserved as there are units, never more, and
/// every unit is accounted for.
async fn concurrent_orders_never_oversell_a_product(f: Fixture) {
    let f = std::sync::Arc::new(f);
    let product = f.product(10).await;
    f.emitted().await;
    let orders: Vec<Uuid> = (0..30).map(|_| Uuid::now_v7()).collect();
    let deliveries = orders.iter().map(|order| {
        let f = f.clone();
        let order = *order;
        tokio::spawn(async move {
            // As the consumer does: a transient database error (a deadlock, a serialization
            // failure) is retried; anything else is a bug.
            for attempt in 0.. {
                match f
                    .try_deliver(Fixture::order_event(order, &[(product, 1)]))
                    .await
                {
                    Ok(()) => return,
                    Err(e) if attempt < 20 => eprintln!("retrying order {order}: {e:?}"),
                    Err(e) => panic!("order {order}: {e:?}"),
                }
            }
        })
    });
    // Spawned, they already run at once; this only waits for each.
    for delivery in deliveries.collect::<Vec<_>>() {
        delivery.await.unwrap();
    }
    let row = f.stock(product).await;
    assert_eq!((row.available, row.reserved, row.committed), (0, 10, 0));
    let mut reserved = 0;
    for order in &orders {
        if f.state(*order).await == Some(OrderState::Reserved) {
            reserved += 1;
        }
    }
    assert_eq!(reserved, 10, "one reserved order per unit");
    let events = f.emitted().await;
    let outcome = |reserved: bool| {
        events
            .iter()
            .filter(|e| {
                if reserved {
                    matches!(e, Event::InventoryReserved(_))
                } else {
                    matches!(e, Event::InventoryRejected(_))
                }
            })
            .count()
    };
    assert_eq!((outcome(true), outcome(false)), (10, 20));
}
