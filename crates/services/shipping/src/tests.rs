//! The use cases against a real database: each test runs on SQLite (`sqlite::…`) and on
//! PostgreSQL (`postgres::…`) when `EMPORIUM_TEST_DATABASE_URL` names a server
//! ([`emporium_platform::on_both_backends`]).

use std::time::Duration;

use emporium_events::{
    Address, CancellationReason, Envelope, Event, OrderCancelled, ShipmentRequested,
};
use emporium_platform::storage::{
    EventContext, Tx,
    testing::{TestDb, take_emitted},
};
use uuid::Uuid;

use crate::{
    NAME,
    app::{self, Error},
    domain::ShipmentStatus,
    store::{self, ShipmentRow},
};

emporium_platform::on_both_backends!(
    NAME,
    store::MIGRATIONS;
    a_request_creates_one_ready_shipment,
    a_cancelled_order_gets_no_shipment_and_a_ready_one_is_cancelled,
    a_dispatched_shipment_is_not_cancelled,
    admins_dispatch_then_deliver_and_nothing_else,
    due_shipments_are_dispatched_once_with_their_saga_correlation,
    the_dispatcher_dispatches_in_the_background_and_stops_when_told,
);

struct Fixture {
    db: TestDb,
}

impl From<TestDb> for Fixture {
    fn from(db: TestDb) -> Fixture {
        Fixture { db }
    }
}

impl Fixture {
    async fn tx(&self, correlation: &str) -> Tx {
        self.db
            .begin(EventContext::request(NAME, correlation))
            .await
            .unwrap()
    }

    async fn emitted(&self) -> Vec<Envelope> {
        take_emitted(&self.db).await
    }

    async fn events(&self) -> Vec<Event> {
        self.emitted().await.into_iter().map(|e| e.event).collect()
    }

    async fn request(&self, order_id: Uuid) {
        let mut tx = self.tx("saga-1").await;
        app::shipment_requested(
            &mut tx,
            &ShipmentRequested {
                order_id,
                user_id: Uuid::now_v7(),
                shipping_address: Address {
                    name: "Ada Lovelace".into(),
                    line1: "12 Analytical Row".into(),
                    line2: None,
                    city: "London".into(),
                    postal_code: "N1 9GU".into(),
                    country: "GB".into(),
                },
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }

    async fn cancel(&self, order_id: Uuid) {
        let mut tx = self.tx("saga-1").await;
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

    async fn shipment(&self, order_id: Uuid) -> Option<ShipmentRow> {
        store::by_order(&mut self.db.reader().await.unwrap(), order_id)
            .await
            .unwrap()
    }
}

async fn a_request_creates_one_ready_shipment(f: Fixture) {
    let order = Uuid::now_v7();
    f.request(order).await;
    f.request(order).await;
    let events = f.events().await;
    let [Event::ShipmentCreated(created)] = events.as_slice() else {
        panic!("{events:?}")
    };
    let row = f.shipment(order).await.unwrap();
    assert_eq!(row.status, "READY");
    assert_eq!(created.tracking_number, row.tracking_number);
    assert!(row.tracking_number.starts_with("EMP") && row.tracking_number.len() == 13);
    assert_eq!(created.carrier, "Emporium Express");
    assert!(row.address.contains("Analytical Row"));
}

async fn a_cancelled_order_gets_no_shipment_and_a_ready_one_is_cancelled(f: Fixture) {
    let early = Uuid::now_v7();
    f.cancel(early).await;
    f.request(early).await;
    assert!(f.events().await.is_empty());
    assert!(f.shipment(early).await.is_none());

    let ready = Uuid::now_v7();
    f.request(ready).await;
    f.events().await;
    f.cancel(ready).await;
    f.cancel(ready).await;
    let events = f.events().await;
    assert!(
        matches!(events.as_slice(), [Event::ShipmentCancelled(c)] if c.order_id == ready),
        "{events:?}"
    );
    assert_eq!(f.shipment(ready).await.unwrap().status, "CANCELLED");
    let id = f.shipment(ready).await.unwrap().id;
    assert!(matches!(
        app::admin_dispatch(&f.db, "c", id).await,
        Err(Error::NotDispatchable(ShipmentStatus::Cancelled))
    ));
}

async fn a_dispatched_shipment_is_not_cancelled(f: Fixture) {
    let order = Uuid::now_v7();
    f.request(order).await;
    let id = f.shipment(order).await.unwrap().id;
    app::admin_dispatch(&f.db, "c", id).await.unwrap();
    f.events().await;
    f.cancel(order).await;
    assert!(f.events().await.is_empty());
    assert_eq!(f.shipment(order).await.unwrap().status, "DISPATCHED");
}

async fn admins_dispatch_then_deliver_and_nothing_else(f: Fixture) {
    let order = Uuid::now_v7();
    f.request(order).await;
    f.events().await;
    let id = f.shipment(order).await.unwrap().id;

    assert!(matches!(
        app::admin_deliver(&f.db, "c", id).await,
        Err(Error::NotDeliverable(ShipmentStatus::Ready))
    ));
    let row = app::admin_dispatch(&f.db, "c", id).await.unwrap();
    assert_eq!(row.status, "DISPATCHED");
    assert!(matches!(
        app::admin_dispatch(&f.db, "c", id).await,
        Err(Error::NotDispatchable(ShipmentStatus::Dispatched))
    ));
    let row = app::admin_deliver(&f.db, "c", id).await.unwrap();
    assert_eq!(row.status, "DELIVERED");
    assert!(matches!(
        app::admin_deliver(&f.db, "c", id).await,
        Err(Error::NotDeliverable(ShipmentStatus::Delivered))
    ));
    assert!(matches!(
        app::admin_dispatch(&f.db, "c", Uuid::now_v7()).await,
        Err(Error::NotFound)
    ));
    let events = f.events().await;
    assert!(
        matches!(
            events.as_slice(),
            [Event::ShipmentDispatched(_), Event::ShipmentDelivered(_)]
        ),
        "{events:?}"
    );
}

async fn due_shipments_are_dispatched_once_with_their_saga_correlation(f: Fixture) {
    let order = Uuid::now_v7();
    f.request(order).await;
    f.emitted().await;
    assert_eq!(
        app::dispatch_due(&f.db, Duration::from_secs(60))
            .await
            .unwrap(),
        0,
        "not due yet"
    );
    assert_eq!(app::dispatch_due(&f.db, Duration::ZERO).await.unwrap(), 1);
    assert_eq!(app::dispatch_due(&f.db, Duration::ZERO).await.unwrap(), 0);
    let emitted = f.emitted().await;
    let [envelope] = emitted.as_slice() else {
        panic!("{emitted:?}")
    };
    assert!(matches!(&envelope.event, Event::ShipmentDispatched(d) if d.order_id == order));
    assert_eq!(envelope.correlation_id, "saga-1");
    // The admin comes too late.
    let id = f.shipment(order).await.unwrap().id;
    assert!(matches!(
        app::admin_dispatch(&f.db, "c", id).await,
        Err(Error::NotDispatchable(ShipmentStatus::Dispatched))
    ));
}

async fn the_dispatcher_dispatches_in_the_background_and_stops_when_told(f: Fixture) {
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let dispatcher = tokio::spawn(app::run_dispatcher(
        f.db.clone(),
        Duration::from_millis(50),
        stop_rx,
    ));
    let order = Uuid::now_v7();
    f.request(order).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while f.shipment(order).await.unwrap().status != "DISPATCHED" {
        assert!(tokio::time::Instant::now() < deadline, "never dispatched");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), dispatcher)
        .await
        .expect("the dispatcher stopped")
        .unwrap();
}
