//! The use cases against a real database: the read model, placing with idempotency keys, the
//! saga's events, cancellation and the timeout sweeper. Each runs on SQLite (`sqlite::…`) and on
//! PostgreSQL (`postgres::…`) when `EMPORIUM_TEST_DATABASE_URL` names a server
//! ([`emporium_platform::on_both_backends`]).

use std::time::Duration;

use emporium_events::{
    CancellationReason, Envelope, Event, InventoryRejected, InventoryReserved, Money,
    PaymentAuthorized, ProductCreated, ProductDeleted, ProductUpdated, Role, ShipmentCreated,
    ShipmentDelivered, ShipmentDispatched, StockLine,
};
use emporium_platform::{
    api::PageRequest,
    auth::AuthUser,
    bus::consumer::EventHandler,
    storage::{Db, Dialect, EventContext, Migration, query, testing::TestDb},
};
use uuid::Uuid;

use super::*;
use crate::consumers::OrdersConsumer;

emporium_platform::on_both_backends!(
    NAME,
    store::MIGRATIONS;
    an_order_is_priced_from_the_read_model_and_announced_in_the_same_transaction,
    updates_reprice_new_orders_and_a_deletion_is_final,
    an_idempotency_key_replays_the_first_answer_and_refuses_another_request,
    the_saga_confirms_ships_and_delivers_with_its_events_and_summaries,
    a_customer_cancels_their_own_order_once,
    the_sweeper_cancels_only_overdue_pending_orders,
    an_order_the_sweeper_cannot_cancel_does_not_stop_it,
    two_events_for_one_order_in_one_transaction_keep_its_timeline_in_order,
    new_orders_are_refused_while_enough_pending_orders_are_too_old,
    a_placement_beyond_the_limit_in_flight_waits_then_is_refused,
    listings_page_newest_first_within_the_callers_scope,
    a_product_deleted_before_its_reservation_cancels_with_product_unavailable,
    a_dispatch_seen_after_the_cancellation_neither_ships_nor_revives_the_order,
);

fn customer() -> AuthUser {
    AuthUser {
        id: Uuid::now_v7(),
        role: Role::Customer,
    }
}

fn admin() -> AuthUser {
    AuthUser {
        id: Uuid::now_v7(),
        role: Role::Admin,
    }
}

/// Each timeline entry's status or event, in order.
fn entries(order: &OrderView) -> Vec<String> {
    order
        .timeline
        .iter()
        .map(|t| t.status.clone().or(t.event.clone()).unwrap())
        .collect()
}

/// Delivers `event` to the consumer, in its own transaction, as the bus would.
async fn deliver(db: &Db, event: Event) {
    let envelope = Envelope::new("test", "corr-test", None, event);
    let mut tx = db
        .begin(EventContext::caused_by(NAME, &envelope))
        .await
        .unwrap();
    OrdersConsumer.handle(&mut tx, &envelope).await.unwrap();
    tx.commit().await.unwrap();
}

async fn product(db: &Db, name: &str, price: i64) -> Uuid {
    let id = Uuid::now_v7();
    deliver(
        db,
        Event::ProductCreated(ProductCreated {
            product_id: id,
            name: name.into(),
            description: None,
            category: "test".into(),
            price: Money::new(price, "USD"),
            initial_stock: 10,
        }),
    )
    .await;
    id
}

/// Every event in the outbox, oldest first.
async fn outbox(db: &Db) -> Vec<Event> {
    query("SELECT payload FROM outbox ORDER BY id")
        .scalars::<Vec<u8>>(&mut db.reader().await.unwrap())
        .await
        .unwrap()
        .iter()
        .map(|payload| Envelope::from_json(payload).unwrap().event)
        .collect()
}

fn request(lines: &[(Uuid, i64)]) -> NewOrder {
    NewOrder {
        lines: lines
            .iter()
            .map(|(id, quantity)| Line {
                product_id: id.to_string(),
                quantity: *quantity,
            })
            .collect(),
        address: Address {
            name: "Ada".into(),
            line1: "12 Analytical Row".into(),
            line2: None,
            city: "London".into(),
            postal_code: "N1 9GU".into(),
            country: "GB".into(),
        },
        payment_token: "tok_visa".into(),
    }
}

async fn place_for(db: &Db, user: &AuthUser, lines: &[(Uuid, i64)]) -> Uuid {
    place_without_admission(db, user.id, request(lines), None, "corr-1")
        .await
        .unwrap()
        .order_id
}

/// [`place`] as the use cases without admission control call it.
async fn place_without_admission(
    db: &Db,
    user: Uuid,
    request: NewOrder,
    key: Option<IdempotencyKey>,
    correlation_id: &str,
) -> Result<Placed, ApiError> {
    place(db, user, request, key, None, correlation_id).await
}

/// One unit of `product`, placed through `admission`.
async fn place_admitted(
    db: &Db,
    user: Uuid,
    product: Uuid,
    key: Option<IdempotencyKey>,
    admission: &Admission,
) -> Result<Placed, ApiError> {
    place(
        db,
        user,
        request(&[(product, 1)]),
        key,
        Some(admission),
        "c",
    )
    .await
}

fn key(key: &str, request: &str) -> Option<IdempotencyKey> {
    Some(IdempotencyKey {
        key: key.into(),
        request: request.into(),
    })
}

async fn an_order_is_priced_from_the_read_model_and_announced_in_the_same_transaction(db: TestDb) {
    let lamp = product(&db, "Lamp", 2500).await;
    let mug = product(&db, "Mug", 800).await;
    let ada = customer();
    let placed =
        place_without_admission(&db, ada.id, request(&[(lamp, 2), (mug, 3)]), None, "corr-1")
            .await
            .unwrap();
    assert_eq!((placed.status, placed.replayed), (202, false));
    let body: serde_json::Value = serde_json::from_str(&placed.body).unwrap();
    assert_eq!(body["status"], "PENDING");
    assert_eq!(
        body["total"],
        serde_json::json!({"amount": 7400, "currency": "USD"})
    );
    assert_eq!(body["items"][1]["name"], "Mug");
    assert_eq!(body["items"][1]["lineTotal"]["amount"], 2400);
    assert_eq!(body["timeline"][0]["status"], "PENDING");
    assert_eq!(body["payment"], serde_json::Value::Null);

    let events = outbox(&db).await;
    let [Event::OrderCreated(created)] = events.as_slice() else {
        panic!("expected one OrderCreated, got {events:?}");
    };
    assert_eq!(created.order_id, placed.order_id);
    assert_eq!(created.user_id, ada.id);
    assert_eq!(created.total, Money::new(7400, "USD"));
    assert_eq!(created.payment_token, "tok_visa");
    assert_eq!(created.items[0].unit_price, Money::new(2500, "USD"));

    // What the API answered is what it shows.
    let shown = get(&db, &ada, placed.order_id).await.unwrap();
    assert_eq!(serde_json::to_value(&shown).unwrap(), body);
}

async fn updates_reprice_new_orders_and_a_deletion_is_final(db: TestDb) {
    let lamp = product(&db, "Lamp", 2500).await;
    let ada = customer();
    let before = place_for(&db, &ada, &[(lamp, 1)]).await;
    deliver(
        &db,
        Event::ProductUpdated(ProductUpdated {
            product_id: lamp,
            name: "Desk lamp".into(),
            description: None,
            category: "test".into(),
            price: Money::new(3000, "USD"),
        }),
    )
    .await;
    let after = place_for(&db, &ada, &[(lamp, 1)]).await;
    assert_eq!(get(&db, &ada, before).await.unwrap().total.amount, 2500);
    let repriced = get(&db, &ada, after).await.unwrap();
    assert_eq!(repriced.total.amount, 3000);
    assert_eq!(repriced.items[0].name, "Desk lamp");

    deliver(
        &db,
        Event::ProductDeleted(ProductDeleted { product_id: lamp }),
    )
    .await;
    // A late update does not bring it back.
    deliver(
        &db,
        Event::ProductUpdated(ProductUpdated {
            product_id: lamp,
            name: "Zombie lamp".into(),
            description: None,
            category: "test".into(),
            price: Money::new(1, "USD"),
        }),
    )
    .await;
    let mug = product(&db, "Mug", 800).await;
    let error = place_without_admission(&db, ada.id, request(&[(mug, 1), (lamp, 1)]), None, "c")
        .await
        .unwrap_err();
    assert_eq!(
        (error.status.as_u16(), error.code),
        (422, "UNKNOWN_PRODUCT")
    );
    assert_eq!(error.errors[0].field, "items[1].productId");
    let unknown = place_without_admission(&db, ada.id, request(&[(Uuid::now_v7(), 1)]), None, "c")
        .await
        .unwrap_err();
    assert_eq!(unknown.code, "UNKNOWN_PRODUCT");
}

async fn an_idempotency_key_replays_the_first_answer_and_refuses_another_request(db: TestDb) {
    let lamp = product(&db, "Lamp", 2500).await;
    let ada = customer();
    let first = place_without_admission(&db, ada.id, request(&[(lamp, 1)]), key("k1", "{a}"), "c")
        .await
        .unwrap();
    // The answer stays the first one even after the order moved on.
    deliver(
        &db,
        Event::PaymentAuthorized(PaymentAuthorized {
            order_id: first.order_id,
            payment_id: Uuid::now_v7(),
            amount: Money::new(2500, "USD"),
        }),
    )
    .await;
    let again = place_without_admission(&db, ada.id, request(&[(lamp, 1)]), key("k1", "{a}"), "c")
        .await
        .unwrap();
    assert_eq!(again.order_id, first.order_id);
    assert_eq!((again.status, &again.body), (first.status, &first.body));
    assert!(again.replayed);

    let reused = place_without_admission(&db, ada.id, request(&[(lamp, 2)]), key("k1", "{b}"), "c")
        .await
        .unwrap_err();
    assert_eq!(
        (reused.status.as_u16(), reused.code),
        (422, "IDEMPOTENCY_KEY_REUSED")
    );

    // Keys belong to their user.
    let grace = customer();
    let hers = place_without_admission(&db, grace.id, request(&[(lamp, 1)]), key("k1", "{a}"), "c")
        .await
        .unwrap();
    assert_ne!(hers.order_id, first.order_id);

    // A refused request is not remembered: once the product exists, the same key places it.
    let soon = Uuid::now_v7();
    let refused =
        place_without_admission(&db, ada.id, request(&[(soon, 1)]), key("k2", "{c}"), "c")
            .await
            .unwrap_err();
    assert_eq!(refused.code, "UNKNOWN_PRODUCT");
    deliver(
        &db,
        Event::ProductCreated(ProductCreated {
            product_id: soon,
            name: "Soon".into(),
            description: None,
            category: "test".into(),
            price: Money::new(100, "USD"),
            initial_stock: 1,
        }),
    )
    .await;
    assert!(
        place_without_admission(&db, ada.id, request(&[(soon, 1)]), key("k2", "{c}"), "c")
            .await
            .is_ok()
    );
    let created = outbox(&db)
        .await
        .into_iter()
        .filter(|e| matches!(e, Event::OrderCreated(_)))
        .count();
    assert_eq!(
        created, 3,
        "one OrderCreated per placed order, none for replays"
    );
}

async fn the_saga_confirms_ships_and_delivers_with_its_events_and_summaries(db: TestDb) {
    let lamp = product(&db, "Lamp", 2500).await;
    let ada = customer();
    let order = place_for(&db, &ada, &[(lamp, 2)]).await;
    let payment_id = Uuid::now_v7();
    deliver(
        &db,
        Event::PaymentAuthorized(PaymentAuthorized {
            order_id: order,
            payment_id,
            amount: Money::new(5000, "USD"),
        }),
    )
    .await;
    // The reservation is seen after the payment (another topic): noted, nothing moves.
    deliver(
        &db,
        Event::InventoryReserved(InventoryReserved {
            order_id: order,
            items: vec![StockLine {
                product_id: lamp,
                quantity: 2,
            }],
        }),
    )
    .await;
    let confirmed = get(&db, &ada, order).await.unwrap();
    assert_eq!(confirmed.status, "CONFIRMED");
    let payment = confirmed.payment.clone().unwrap();
    assert_eq!(
        (payment.id, payment.status.as_str()),
        (payment_id.to_string(), "AUTHORIZED")
    );
    let timeline = entries(&confirmed);
    assert_eq!(
        timeline,
        [
            "PENDING",
            "PaymentAuthorized",
            "CONFIRMED",
            "InventoryReserved"
        ]
    );

    let shipment_id = Uuid::now_v7();
    deliver(
        &db,
        Event::ShipmentCreated(ShipmentCreated {
            order_id: order,
            shipment_id,
            tracking_number: "TRK-1".into(),
            carrier: "sim".into(),
        }),
    )
    .await;
    // Its dispatch was lost: the delivery proves it, and the order goes through SHIPPED.
    deliver(
        &db,
        Event::ShipmentDelivered(ShipmentDelivered {
            order_id: order,
            shipment_id,
        }),
    )
    .await;
    let delivered = get(&db, &ada, order).await.unwrap();
    assert_eq!(delivered.status, "DELIVERED");
    let shipment = delivered.shipment.unwrap();
    assert_eq!(
        (
            shipment.status.as_str(),
            shipment.tracking_number.as_deref()
        ),
        ("DELIVERED", Some("TRK-1"))
    );

    let events: Vec<&str> = outbox(&db).await.iter().map(Event::event_type).collect();
    assert_eq!(
        events,
        [
            "OrderCreated",
            "OrderConfirmed",
            "ShipmentRequested",
            "OrderShipped",
            "OrderDelivered"
        ]
    );
    let requested = outbox(&db).await.into_iter().find_map(|e| match e {
        Event::ShipmentRequested(r) => Some(r),
        _ => None,
    });
    assert_eq!(requested.unwrap().shipping_address.city, "London");
}

async fn a_customer_cancels_their_own_order_once(db: TestDb) {
    let lamp = product(&db, "Lamp", 2500).await;
    let ada = customer();
    let order = place_for(&db, &ada, &[(lamp, 1)]).await;

    let stranger = cancel(&db, &customer(), order, "c").await.unwrap_err();
    assert_eq!(
        stranger.status.as_u16(),
        404,
        "another customer's order does not exist"
    );
    assert_eq!(
        get(&db, &customer(), order)
            .await
            .unwrap_err()
            .status
            .as_u16(),
        404
    );

    let cancelled = cancel(&db, &ada, order, "c").await.unwrap();
    assert_eq!(cancelled.status, "CANCELLED");
    assert_eq!(
        cancelled.cancellation_reason.as_deref(),
        Some("CUSTOMER_REQUEST")
    );
    let again = cancel(&db, &ada, order, "c").await.unwrap_err();
    assert_eq!(
        (again.status.as_u16(), again.code),
        (409, "ORDER_NOT_CANCELLABLE")
    );
    let cancellations = outbox(&db)
        .await
        .into_iter()
        .filter(|e| matches!(e, Event::OrderCancelled(_)))
        .count();
    assert_eq!(cancellations, 1);

    // A late authorization does not revive it.
    deliver(
        &db,
        Event::PaymentAuthorized(PaymentAuthorized {
            order_id: order,
            payment_id: Uuid::now_v7(),
            amount: Money::new(2500, "USD"),
        }),
    )
    .await;
    assert_eq!(get(&db, &ada, order).await.unwrap().status, "CANCELLED");

    let theirs = place_for(&db, &ada, &[(lamp, 1)]).await;
    assert_eq!(
        cancel(&db, &admin(), theirs, "c").await.unwrap().status,
        "CANCELLED",
        "an admin may cancel anyone's order"
    );
    assert_eq!(
        cancel(&db, &ada, Uuid::now_v7(), "c")
            .await
            .unwrap_err()
            .status
            .as_u16(),
        404
    );
}

async fn the_sweeper_cancels_only_overdue_pending_orders(db: TestDb) {
    let lamp = product(&db, "Lamp", 2500).await;
    let ada = customer();
    let stuck = place_for(&db, &ada, &[(lamp, 1)]).await;
    let confirmed = place_for(&db, &ada, &[(lamp, 1)]).await;
    deliver(
        &db,
        Event::PaymentAuthorized(PaymentAuthorized {
            order_id: confirmed,
            payment_id: Uuid::now_v7(),
            amount: Money::new(2500, "USD"),
        }),
    )
    .await;

    assert_eq!(
        expire_overdue(&db, Duration::from_secs(3600))
            .await
            .unwrap(),
        0,
        "nothing is an hour old"
    );
    assert_eq!(expire_overdue(&db, Duration::ZERO).await.unwrap(), 1);
    let timed_out = get(&db, &ada, stuck).await.unwrap();
    assert_eq!(timed_out.status, "CANCELLED");
    assert_eq!(timed_out.cancellation_reason.as_deref(), Some("TIMEOUT"));
    assert_eq!(get(&db, &ada, confirmed).await.unwrap().status, "CONFIRMED");
    assert_eq!(
        expire_overdue(&db, Duration::ZERO).await.unwrap(),
        0,
        "once"
    );

    let cancelled: Vec<_> = outbox(&db)
        .await
        .into_iter()
        .filter_map(|e| match e {
            Event::OrderCancelled(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0].order_id, stuck);
    assert_eq!(
        cancelled[0].reason,
        emporium_events::CancellationReason::Timeout
    );
}

async fn listings_page_newest_first_within_the_callers_scope(db: TestDb) {
    let lamp = product(&db, "Lamp", 2500).await;
    let ada = customer();
    let grace = customer();
    let mut adas = Vec::new();
    for _ in 0..5 {
        adas.push(place_for(&db, &ada, &[(lamp, 1)]).await);
    }
    let graces = place_for(&db, &grace, &[(lamp, 1)]).await;
    cancel(&db, &ada, adas[1], "c").await.unwrap();

    let query = |status, user_id, limit: &str, cursor: Option<&str>| ListQuery {
        status,
        user_id,
        page: PageRequest::parse(Some(limit), cursor).unwrap(),
    };
    let first = list(&db, &ada, query(None, None, "2", None)).await.unwrap();
    let ids = |page: &Page<OrderView>| page.items.iter().map(|o| o.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&first), [adas[4].to_string(), adas[3].to_string()]);
    let second = list(
        &db,
        &ada,
        query(None, None, "2", first.next_cursor.as_deref()),
    )
    .await
    .unwrap();
    assert_eq!(ids(&second), [adas[2].to_string(), adas[1].to_string()]);
    let third = list(
        &db,
        &ada,
        query(None, None, "2", second.next_cursor.as_deref()),
    )
    .await
    .unwrap();
    assert_eq!(ids(&third), [adas[0].to_string()]);
    assert_eq!(third.next_cursor, None);

    let cancelled = list(&db, &ada, query(Some(Status::Cancelled), None, "20", None))
        .await
        .unwrap();
    assert_eq!(ids(&cancelled), [adas[1].to_string()]);
    let peeking = list(&db, &ada, query(None, Some(grace.id), "20", None))
        .await
        .unwrap();
    assert!(
        peeking.items.is_empty(),
        "a customer sees only their own orders"
    );
    let everyone = list(&db, &admin(), query(None, None, "100", None))
        .await
        .unwrap();
    assert_eq!(everyone.items.len(), 6);
    let hers = list(&db, &admin(), query(None, Some(grace.id), "100", None))
        .await
        .unwrap();
    assert_eq!(ids(&hers), [graces.to_string()]);
}

fn rejected(order_id: Uuid, product_id: Uuid) -> Event {
    Event::InventoryRejected(InventoryRejected {
        order_id,
        product_id,
        requested: 1,
        available: 0,
    })
}

async fn a_product_deleted_before_its_reservation_cancels_with_product_unavailable(db: TestDb) {
    let lamp = product(&db, "Lamp", 2500).await;
    let mug = product(&db, "Mug", 800).await;
    let ada = customer();
    let gone = place_for(&db, &ada, &[(mug, 1), (lamp, 1)]).await;
    let short = place_for(&db, &ada, &[(mug, 1)]).await;
    // The lamp is deleted after the order was placed; inventory rejects the order naming it.
    deliver(
        &db,
        Event::ProductDeleted(ProductDeleted { product_id: lamp }),
    )
    .await;
    deliver(&db, rejected(gone, lamp)).await;
    let order = get(&db, &ada, gone).await.unwrap();
    assert_eq!(order.status, "CANCELLED");
    assert_eq!(
        order.cancellation_reason.as_deref(),
        Some("PRODUCT_UNAVAILABLE")
    );
    // A product that is still for sale was simply out of stock.
    deliver(&db, rejected(short, mug)).await;
    let order = get(&db, &ada, short).await.unwrap();
    assert_eq!(order.cancellation_reason.as_deref(), Some("OUT_OF_STOCK"));

    let reasons: Vec<_> = outbox(&db)
        .await
        .into_iter()
        .filter_map(|e| match e {
            Event::OrderCancelled(c) => Some((c.order_id, c.reason)),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        [
            (gone, CancellationReason::ProductUnavailable),
            (short, CancellationReason::OutOfStock)
        ]
    );
}

async fn a_dispatch_seen_after_the_cancellation_neither_ships_nor_revives_the_order(db: TestDb) {
    let lamp = product(&db, "Lamp", 2500).await;
    let ada = customer();
    let order = place_for(&db, &ada, &[(lamp, 1)]).await;
    deliver(
        &db,
        Event::PaymentAuthorized(PaymentAuthorized {
            order_id: order,
            payment_id: Uuid::now_v7(),
            amount: Money::new(2500, "USD"),
        }),
    )
    .await;
    let shipment_id = Uuid::now_v7();
    deliver(
        &db,
        Event::ShipmentCreated(ShipmentCreated {
            order_id: order,
            shipment_id,
            tracking_number: "TRK-1".into(),
            carrier: "sim".into(),
        }),
    )
    .await;
    // The customer's cancellation is accepted while the carrier's dispatch is on its way.
    cancel(&db, &ada, order, "c").await.unwrap();
    deliver(
        &db,
        Event::ShipmentDispatched(ShipmentDispatched {
            order_id: order,
            shipment_id,
            tracking_number: "TRK-1".into(),
        }),
    )
    .await;
    let seen = get(&db, &ada, order).await.unwrap();
    assert_eq!(
        (seen.status.as_str(), seen.cancellation_reason.as_deref()),
        ("CANCELLED", Some("CUSTOMER_REQUEST"))
    );
    // The parcel is shown as it is: dispatched (to be recalled).
    assert_eq!(seen.shipment.unwrap().status, "DISPATCHED");
    // Exactly one of OrderCancelled and OrderShipped: payments and inventory void and release.
    let decided: Vec<&str> = outbox(&db)
        .await
        .iter()
        .map(Event::event_type)
        .filter(|t| matches!(*t, "OrderCancelled" | "OrderShipped"))
        .collect();
    assert_eq!(decided, ["OrderCancelled"]);
}

async fn placed_at(db: &Db, order: Uuid) -> i64 {
    query("SELECT created_at FROM orders WHERE id = $1")
        .bind(order)
        .scalar(&mut db.reader().await.unwrap())
        .await
        .unwrap()
}

/// An overdue order that cannot be cancelled (here its row no longer reads: an unknown payment
/// status) is logged and passed over; the sweep goes on with the next.
async fn an_order_the_sweeper_cannot_cancel_does_not_stop_it(db: TestDb) {
    let lamp = product(&db, "Lamp", 2500).await;
    let ada = customer();
    let broken = place_for(&db, &ada, &[(lamp, 1)]).await;
    let stuck = place_for(&db, &ada, &[(lamp, 1)]).await;
    let mut tx = db.begin(EventContext::request(NAME, "c")).await.unwrap();
    query("UPDATE orders SET payment_id = $2, payment_status = 'BOGUS' WHERE id = $1")
        .bind(broken)
        .bind(Uuid::now_v7())
        .execute(tx.conn())
        .await
        .unwrap();
    tx.commit().await.unwrap();

    assert_eq!(expire_overdue(&db, Duration::ZERO).await.unwrap(), 1);
    assert_eq!(get(&db, &ada, stuck).await.unwrap().status, "CANCELLED");
}

/// Two saga events of one order in one consumer transaction (a batch): each takes its place in
/// the timeline, the second after the first's status change.
async fn two_events_for_one_order_in_one_transaction_keep_its_timeline_in_order(db: TestDb) {
    let lamp = product(&db, "Lamp", 2500).await;
    let ada = customer();
    let order = place_for(&db, &ada, &[(lamp, 1)]).await;
    let events = [
        Event::PaymentAuthorized(PaymentAuthorized {
            order_id: order,
            payment_id: Uuid::now_v7(),
            amount: Money::new(2500, "USD"),
        }),
        Event::InventoryReserved(InventoryReserved {
            order_id: order,
            items: vec![StockLine {
                product_id: lamp,
                quantity: 1,
            }],
        }),
    ];
    let mut tx = db.begin(EventContext::request(NAME, "c")).await.unwrap();
    for event in events {
        let envelope = Envelope::new("test", "corr-test", None, event);
        tx.set_context(EventContext::caused_by(NAME, &envelope));
        OrdersConsumer.handle(&mut tx, &envelope).await.unwrap();
    }
    tx.commit().await.unwrap();
    assert_eq!(
        entries(&get(&db, &ada, order).await.unwrap()),
        [
            "PENDING",
            "PaymentAuthorized",
            "CONFIRMED",
            "InventoryReserved"
        ]
    );
}

async fn new_orders_are_refused_while_enough_pending_orders_are_too_old(db: TestDb) {
    let limit = Duration::from_secs(10);
    // Refuses once two orders are overdue; a fresh sample on every check.
    let admission = Admission::with(db.clone(), limit, Duration::ZERO, 2);
    let far_future = Utc::now().timestamp_millis() + 3_600_000;
    admission.check_at(far_future).await.unwrap();

    let lamp = product(&db, "Lamp", 2500).await;
    let ada = customer();
    let first = place_for(&db, &ada, &[(lamp, 1)]).await;
    let first_at = placed_at(&db, first).await;
    admission
        .check_at(first_at + 60_000)
        .await
        .expect("one stuck order alone is not an overload");
    let second = place_for(&db, &ada, &[(lamp, 1)]).await;
    let second_at = placed_at(&db, second).await;
    admission.check_at(second_at + 10_000).await.unwrap();
    let refused = admission.check_at(second_at + 10_001).await.unwrap_err();
    assert_eq!(refused.status.as_u16(), 503);
    assert_eq!(refused.code, "SERVICE_UNAVAILABLE");
    assert_eq!(refused.retry_after, Some(1));
    assert!(refused.detail.contains("behind"), "{}", refused.detail);

    // Placing goes through admission; a repeat of a placed order is answered all the same.
    let refusing = Admission::with(db.clone(), Duration::from_millis(1), Duration::ZERO, 2);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let kept = place_without_admission(&db, ada.id, request(&[(lamp, 1)]), key("k9", "{r}"), "c")
        .await
        .unwrap();
    let error = place_admitted(&db, ada.id, lamp, None, &refusing)
        .await
        .unwrap_err();
    assert_eq!(error.status.as_u16(), 503);
    let again = place_admitted(&db, ada.id, lamp, key("k9", "{r}"), &refusing)
        .await
        .unwrap();
    assert_eq!(again.order_id, kept.order_id);
    assert!(again.replayed);

    // When the first leaves PENDING, fewer than two wait: admitted at any age. None left either.
    deliver(
        &db,
        Event::PaymentAuthorized(PaymentAuthorized {
            order_id: first,
            payment_id: Uuid::now_v7(),
            amount: Money::new(2500, "USD"),
        }),
    )
    .await;
    let third_at = placed_at(&db, kept.order_id).await;
    admission.check_at(third_at + 10_000).await.unwrap();
    admission.check_at(third_at + 10_001).await.unwrap_err();
    assert_eq!(expire_overdue(&db, Duration::ZERO).await.unwrap(), 2);
    admission.check_at(far_future).await.unwrap();

    // Between samples the last one stands: sampled with nothing pending, an hour-long sampling
    // period admits although two orders are by then far too old.
    let lazy = Admission::with(db.clone(), limit, Duration::from_secs(3600), 2);
    lazy.check().await.unwrap();
    place_for(&db, &ada, &[(lamp, 1)]).await;
    let last = place_for(&db, &ada, &[(lamp, 1)]).await;
    let last_at = placed_at(&db, last).await;
    lazy.check_at(last_at + 60_000).await.unwrap();
    admission.check_at(last_at + 60_000).await.unwrap_err();
}

/// Placements beyond the bound wait up to the limit for a place and are refused after it; a place
/// is held for the whole placement, given back when it ends or is dropped; a repeat of a placed
/// order is answered whatever the bound.
async fn a_placement_beyond_the_limit_in_flight_waits_then_is_refused(db: TestDb) {
    let orders = || async {
        query("SELECT COUNT(*) FROM orders")
            .scalar::<i64>(&mut db.reader().await.unwrap())
            .await
            .unwrap()
    };
    let admission = |wait| {
        Admission::with(db.clone(), Duration::from_secs(3600), Duration::ZERO, 2)
            .limit_in_flight(2, wait)
    };
    let at_once = admission(Duration::ZERO);
    let lamp = product(&db, "Lamp", 2500).await;
    let ada = customer();
    let first = place_admitted(&db, ada.id, lamp, key("k1", "{a}"), &at_once)
        .await
        .unwrap();
    assert_eq!((orders().await, at_once.places_free()), (1, 2));

    // Both places taken: refused, nothing placed; the repeat of a placed order is answered.
    let taken = (
        at_once.enter().await.unwrap(),
        at_once.enter().await.unwrap(),
    );
    let refused = place_admitted(&db, ada.id, lamp, None, &at_once)
        .await
        .unwrap_err();
    assert_eq!(refused.status.as_u16(), 503);
    assert_eq!(refused.code, "SERVICE_UNAVAILABLE");
    assert_eq!(refused.retry_after, Some(1));
    assert!(refused.detail.contains("at once"), "{}", refused.detail);
    let repeat = place_admitted(&db, ada.id, lamp, key("k1", "{a}"), &at_once)
        .await
        .unwrap();
    assert_eq!((repeat.order_id, repeat.replayed), (first.order_id, true));
    assert_eq!(orders().await, 1);
    drop(taken);

    // With a wait, the placement takes the first place freed (the wait here is only ended by it).
    let patient = admission(Duration::from_secs(3600));
    let (one, two) = (
        patient.enter().await.unwrap(),
        patient.enter().await.unwrap(),
    );
    let (placed, ()) = tokio::join!(
        place_admitted(&db, ada.id, lamp, None, &patient),
        async move {
            tokio::task::yield_now().await;
            drop(one);
        }
    );
    placed.unwrap();
    assert_eq!((orders().await, patient.places_free()), (2, 1));
    drop(two);
    // A wait that ends first refuses.
    let brief = admission(Duration::from_millis(1));
    let taken = (brief.enter().await.unwrap(), brief.enter().await.unwrap());
    let refused = brief.enter().await.unwrap_err();
    assert_eq!(refused.status.as_u16(), 503);
    drop(taken);

    // A placement holds its place while it runs (here it waits for a write the test blocks), and
    // gives it back when it is dropped unfinished (a client gone, a request timeout). On SQLite the
    // test's open transaction holds the one writer, so the placement waits to begin its own; on
    // PostgreSQL the table lock makes it wait at its INSERT.
    let mut blocker = db.begin(EventContext::request(NAME, "c")).await.unwrap();
    if db.dialect() == Dialect::Postgres {
        query("LOCK TABLE orders IN EXCLUSIVE MODE")
            .execute(blocker.conn())
            .await
            .unwrap();
    }
    let mut placing = Box::pin(place_admitted(&db, ada.id, lamp, None, &at_once));
    tokio::select! {
        biased;
        _ = &mut placing => panic!("placed while the test holds the orders table"),
        () = std::future::ready(()) => {}
    }
    assert_eq!(
        at_once.places_free(),
        1,
        "the running placement holds a place"
    );
    // Long enough to reach the blocked write: it holds its place there, past admission's checks.
    let waited = tokio::time::timeout(Duration::from_millis(200), &mut placing).await;
    assert!(
        waited.is_err(),
        "placed while the test holds the orders table"
    );
    assert_eq!(
        at_once.places_free(),
        1,
        "the blocked placement holds a place"
    );
    drop(placing);
    assert_eq!(
        at_once.places_free(),
        2,
        "a dropped placement gives its place back"
    );
    drop(blocker);
    assert_eq!(orders().await, 2);

    // Placing without admission is never counted against the bound.
    let _all = (
        at_once.enter().await.unwrap(),
        at_once.enter().await.unwrap(),
    );
    place_without_admission(&db, ada.id, request(&[(lamp, 1)]), None, "c")
        .await
        .unwrap();
    assert_eq!(orders().await, 3);
}

/// An order placed before its row kept the timeline's length (migrations 107 and 108) goes on
/// with its timeline after the upgrade: the next entries follow the ones it had.
async fn an_order_from_before_the_upgrade_continues_its_timeline(db: TestDb) {
    let ada = customer();
    let order = Uuid::now_v7();
    let mut tx = db.begin(EventContext::request(NAME, "c")).await.unwrap();
    query(
        "INSERT INTO orders (id, user_id, status, total_amount, currency, ship_name, ship_line1,
             ship_city, ship_postal_code, ship_country, correlation_id, created_at, updated_at)
         VALUES ($1, $2, 'PENDING', 5000, 'USD', 'Ada', '1 Lane', 'London', 'N1', 'GB', 'c', 1, 1)",
    )
    .bind(order)
    .bind(ada.id)
    .execute(tx.conn())
    .await
    .unwrap();
    query(
        "INSERT INTO order_timeline (order_id, seq, status, event, at)
         VALUES ($1, 1, 'PENDING', NULL, 1), ($1, 2, NULL, 'InventoryReserved', 2)",
    )
    .bind(order)
    .execute(tx.conn())
    .await
    .unwrap();
    tx.commit().await.unwrap();

    db.migrate(store::MIGRATIONS).await.unwrap();
    deliver(
        &db,
        Event::PaymentAuthorized(PaymentAuthorized {
            order_id: order,
            payment_id: Uuid::now_v7(),
            amount: Money::new(5000, "USD"),
        }),
    )
    .await;
    assert_eq!(
        entries(&get(&db, &ada, order).await.unwrap()),
        [
            "PENDING",
            "InventoryReserved",
            "PaymentAuthorized",
            "CONFIRMED"
        ]
    );
}

fn before_the_timeline_length() -> Vec<Migration> {
    store::MIGRATIONS
        .iter()
        .copied()
        .filter(|m| m.version < 107)
        .collect()
}

mod upgrade {
    use emporium_platform::storage::testing;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        let db = testing::sqlite(super::NAME, &super::before_the_timeline_length()).await;
        super::an_order_from_before_the_upgrade_continues_its_timeline(db).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        let test = concat!(module_path!(), "::postgres");
        if let Some(db) =
            testing::postgres(super::NAME, test, &super::before_the_timeline_length()).await
        {
            super::an_order_from_before_the_upgrade_continues_its_timeline(db).await;
        }
    }
}
