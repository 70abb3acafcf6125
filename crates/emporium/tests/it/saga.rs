//! The order saga end to end, through the real binary: the happy path step by step, the concurrency
//! and race cases, redelivery of every event, and the contract's invariants at the end of each.

use std::collections::HashMap;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Platform, Session};

/// Stock levels of a product, read as admin from the inventory listing.
async fn stock(platform: &Platform, product: &str) -> Value {
    let reply = platform
        .call(
            Method::GET,
            &format!("/api/inventory/{product}"),
            None,
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body
}

async fn payments(platform: &Platform, session: &Session, order: &str) -> Vec<Value> {
    let reply = platform
        .get_as(&format!("/api/payments?orderId={order}"), &session.token)
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body.as_array().cloned().unwrap_or_default()
}

async fn shipments(platform: &Platform, session: &Session, order: &str) -> Vec<Value> {
    let reply = platform
        .get_as(&format!("/api/shipments?orderId={order}"), &session.token)
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body.as_array().cloned().unwrap_or_default()
}

/// Every order of the platform, read as admin, all pages.
pub async fn all_orders(platform: &Platform, admin: &Session) -> Vec<Value> {
    let mut orders = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/orders?limit=100&cursor={c}"),
            None => "/api/orders?limit=100".to_owned(),
        };
        let reply = platform.get_as(&path, &admin.token).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        orders.extend(reply.body["items"].as_array().cloned().unwrap_or_default());
        match reply.body["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return orders,
        }
    }
}

/// Waits until every consumer group has caught up and every outbox is empty.
pub async fn wait_until_quiet(platform: &Platform, admin: &Session) {
    if !platform.peers.is_empty() {
        // A cluster: each process reports its own groups and outbox. The processes are read one
        // after the other, so one quiet round could miss an event in flight between two of them:
        // it takes two rounds in a row.
        let quiet_rounds = std::cell::Cell::new(0);
        return platform
            .wait_for("every process caught up, every outbox empty", || async {
                let quiet = platform.peers_are_quiet().await;
                quiet_rounds.set(if quiet { quiet_rounds.get() + 1 } else { 0 });
                quiet_rounds.get() >= 2
            })
            .await;
    }
    platform
        .wait_for("consumer lag zero and empty outboxes", || async {
            let stats = platform.get_as("/api/admin/stats", &admin.token).await;
            let lag_zero = stats.body["consumerLag"]
                .as_array()
                .is_some_and(|groups| groups.iter().all(|g| g["lag"] == 0));
            let metrics = platform.get("/metrics").await.text().await.unwrap();
            let outboxes_empty = metrics
                .lines()
                .filter(|l| l.starts_with("emporium_outbox_backlog{"))
                .all(|l| l.ends_with(" 0"));
            lag_zero && outboxes_empty
        })
        .await;
}

/// The invariants of CONTRACT §4, checked as admin once the platform is quiet:
/// stock conserved and never negative; every order ends CANCELLED or has exactly one
/// authorized-or-captured payment equal to its total; nothing PENDING.
pub async fn assert_invariants(
    platform: &Platform,
    admin: &Session,
    initial_stock: &HashMap<String, i64>,
) {
    wait_until_quiet(platform, admin).await;
    for (product, initial) in initial_stock {
        let level = stock(platform, product).await;
        let available = level["available"].as_i64().unwrap();
        let reserved = level["reserved"].as_i64().unwrap();
        assert!(available >= 0 && reserved >= 0, "negative stock: {level}");
        let listing = platform
            .get_as("/api/inventory?limit=100", &admin.token)
            .await;
        let committed = listing.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["productId"] == product.as_str())
            .map(|i| i["committed"].as_i64().unwrap_or(0))
            .unwrap_or(0);
        assert_eq!(
            available + reserved + committed,
            *initial,
            "stock not conserved for {product}: {level}"
        );
    }
    for order in all_orders(platform, admin).await {
        let id = order["id"].as_str().unwrap();
        let status = order["status"].as_str().unwrap();
        assert_ne!(status, "PENDING", "order {id} left PENDING");
        let payments = payments(platform, admin, id).await;
        let live: Vec<&Value> = payments
            .iter()
            .filter(|p| p["status"] == "AUTHORIZED" || p["status"] == "CAPTURED")
            .collect();
        if status == "CANCELLED" {
            assert!(
                live.is_empty(),
                "cancelled order {id} still holds a payment: {payments:?}"
            );
        } else {
            assert_eq!(
                live.len(),
                1,
                "order {id} ({status}) should hold exactly one payment: {payments:?}"
            );
            assert_eq!(
                live[0]["amount"], order["total"],
                "payment of order {id} differs from its total"
            );
        }
    }
}

#[tokio::test]
async fn an_order_goes_all_the_way_to_delivered() {
    an_order_goes_all_the_way_to_delivered_on(&Platform::start_with(&[]).await).await;
}

pub async fn an_order_goes_all_the_way_to_delivered_on(platform: &Platform) {
    let admin = platform.admin().await;
    let customer = platform.register("ada@example.com").await;
    let lamp = platform.create_product(&admin, "Lamp", 2500, 5).await;
    let mug = platform.create_product(&admin, "Mug", 800, 10).await;

    let placed = platform
        .place_order(&customer, &[(&lamp, 2), (&mug, 3)], "tok_visa")
        .await;
    assert_eq!(placed.status, 202, "{placed:?}");
    assert_eq!(placed.body["status"], "PENDING");
    assert_eq!(
        placed.body["total"],
        json!({"amount": 2 * 2500 + 3 * 800, "currency": "USD"})
    );
    let order_id = placed.body["id"].as_str().unwrap().to_owned();

    let confirmed = platform
        .wait_for_order(&customer, &order_id, "CONFIRMED")
        .await;
    assert_eq!(stock(platform, &lamp).await["available"], 3);
    assert_eq!(stock(platform, &lamp).await["reserved"], 2);
    assert_eq!(stock(platform, &mug).await["reserved"], 3);
    let payment = payments(platform, &customer, &order_id).await;
    assert_eq!(payment.len(), 1);
    assert_eq!(payment[0]["status"], "AUTHORIZED");
    assert_eq!(payment[0]["amount"], confirmed["total"]);
    platform
        .wait_for("the shipment", || async {
            !shipments(platform, &customer, &order_id).await.is_empty()
        })
        .await;
    let shipment = shipments(platform, &customer, &order_id).await.remove(0);
    assert_eq!(shipment["status"], "READY");
    let shipment_id = shipment["id"].as_str().unwrap().to_owned();

    let dispatched = platform
        .post_as(
            &format!("/api/shipments/{shipment_id}/dispatch"),
            Some(&admin.token),
            json!({}),
        )
        .await;
    assert_eq!(dispatched.status, 200, "{dispatched:?}");
    let shipped = platform
        .wait_for_order(&customer, &order_id, "SHIPPED")
        .await;
    assert!(shipped["shipment"]["trackingNumber"].is_string());
    platform
        .wait_for("capture and commit", || async {
            payments(platform, &customer, &order_id).await[0]["status"] == "CAPTURED"
                && stock(platform, &lamp).await["reserved"] == 0
        })
        .await;
    assert_eq!(
        stock(platform, &lamp).await["available"],
        3,
        "committed stock does not come back"
    );

    let delivered = platform
        .post_as(
            &format!("/api/shipments/{shipment_id}/deliver"),
            Some(&admin.token),
            json!({}),
        )
        .await;
    assert_eq!(delivered.status, 200, "{delivered:?}");
    let done = platform
        .wait_for_order(&customer, &order_id, "DELIVERED")
        .await;
    let timeline: Vec<String> = done["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["status"].as_str().map(str::to_owned))
        .collect();
    for status in ["PENDING", "CONFIRMED", "SHIPPED", "DELIVERED"] {
        assert!(
            timeline.iter().any(|s| s == status),
            "timeline lacks {status}: {timeline:?}"
        );
    }
    let cancel = platform
        .post_as(
            &format!("/api/orders/{order_id}/cancel"),
            Some(&customer.token),
            json!({}),
        )
        .await;
    assert_eq!(cancel.status, 409);
    assert_eq!(cancel.code(), "ORDER_NOT_CANCELLABLE");

    let initial = HashMap::from([(lamp, 5), (mug, 10)]);
    assert_invariants(platform, &admin, &initial).await;
}

#[tokio::test]
async fn the_correlation_id_of_a_request_reaches_every_event_it_causes() {
    the_correlation_id_of_a_request_reaches_every_event_it_causes_on(
        &Platform::start_with(&[]).await,
    )
    .await;
}

pub async fn the_correlation_id_of_a_request_reaches_every_event_it_causes_on(platform: &Platform) {
    let admin = platform.admin().await;
    let customer = platform.register("grace@example.com").await;
    let book = platform.create_product(&admin, "Book", 1500, 3).await;
    let response = platform
        .http
        .post(platform.url("/api/orders"))
        .bearer_auth(&customer.token)
        .header("X-Correlation-Id", "checkout-42")
        .json(&json!({
            "items": [{"productId": book, "quantity": 1}],
            "shippingAddress": {"name": "Grace", "line1": "1 Harbour St", "city": "Arlington", "postalCode": "22201", "country": "US"},
            "paymentMethod": {"token": "tok_visa"},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["x-correlation-id"], "checkout-42");
    let order: Value = response.json().await.unwrap();
    let order_id = order["id"].as_str().unwrap().to_owned();
    platform
        .wait_for_order(&customer, &order_id, "CONFIRMED")
        .await;
    wait_until_quiet(platform, &admin).await;
    let events = platform
        .get_as(
            &format!("/api/admin/events?aggregateId={order_id}"),
            &admin.token,
        )
        .await;
    assert_eq!(events.status, 200, "{events:?}");
    let events = events.body.as_array().unwrap().clone();
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    for expected in [
        "OrderCreated",
        "InventoryReserved",
        "PaymentAuthorized",
        "OrderConfirmed",
        "ShipmentCreated",
    ] {
        assert!(
            types.contains(&expected),
            "{expected} missing from {types:?}"
        );
    }
    for event in &events {
        assert_eq!(event["correlationId"], "checkout-42", "{event}");
    }
    assert!(
        !types.contains(&"ShipmentRequested"),
        "the address goes to shipping only, not into the admin event index"
    );
    // Every event but the first names the event that caused it.
    let ids: Vec<&str> = events
        .iter()
        .map(|e| e["eventId"].as_str().unwrap())
        .collect();
    for event in events.iter().filter(|e| e["eventType"] != "OrderCreated") {
        let cause = event["causationId"].as_str().unwrap_or_default();
        assert!(!cause.is_empty(), "{event} has no cause");
    }
    assert!(
        events[0]["causationId"].is_null(),
        "the API call's event has no cause"
    );
    assert!(ids.len() >= 5);
}

/// The sixty placements below all run at once: a platform under that test takes them all (by
/// default an orders instance places 32 at once and refuses the next with 503).
pub const SIXTY_AT_ONCE: (&str, &str) = ("EMPORIUM_MAX_PLACEMENTS_IN_FLIGHT", "60");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_orders_for_twenty_units_confirm_exactly_twenty() {
    sixty_orders_for_twenty_units_confirm_exactly_twenty_on(
        &Platform::start_with(&[SIXTY_AT_ONCE]).await,
    )
    .await;
}

pub async fn sixty_orders_for_twenty_units_confirm_exactly_twenty_on(platform: &Platform) {
    let admin = platform.admin().await;
    let widget = platform.create_product(&admin, "Widget", 1000, 20).await;
    let mut customers = Vec::new();
    for i in 0..6 {
        customers.push(platform.register(&format!("buyer{i}@example.com")).await);
    }
    let placed = futures_util::future::join_all((0..60).map(|n| {
        let customer = &customers[n % customers.len()];
        let widget = &widget;
        async move {
            let reply = platform
                .place_order(customer, &[(widget, 1)], "tok_visa")
                .await;
            assert_eq!(reply.status, 202, "{reply:?}");
            (customer, reply.body["id"].as_str().unwrap().to_owned())
        }
    }))
    .await;
    let mut confirmed = 0;
    let mut out_of_stock = 0;
    for (customer, order) in &placed {
        let status = platform
            .poll("the order to settle", || async {
                let reply = platform
                    .get_as(&format!("/api/orders/{order}"), &customer.token)
                    .await;
                (reply.body["status"] == "CONFIRMED" || reply.body["status"] == "CANCELLED")
                    .then_some(reply.body)
            })
            .await;
        match status["status"].as_str() {
            Some("CONFIRMED") => confirmed += 1,
            Some("CANCELLED") => {
                assert_eq!(status["cancellationReason"], "OUT_OF_STOCK", "{status}");
                out_of_stock += 1;
            }
            other => panic!("unexpected status {other:?}"),
        }
    }
    assert_eq!((confirmed, out_of_stock), (20, 40));
    let level = stock(platform, &widget).await;
    assert_eq!(
        (level["available"].as_i64(), level["reserved"].as_i64()),
        (Some(0), Some(20)),
        "{level}"
    );
    assert_invariants(platform, &admin, &HashMap::from([(widget, 20)])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placing_and_cancelling_at_once_conserves_stock_and_voids_payments() {
    placing_and_cancelling_at_once_conserves_stock_and_voids_payments_on(
        &Platform::start_with(&[]).await,
    )
    .await;
}

pub async fn placing_and_cancelling_at_once_conserves_stock_and_voids_payments_on(
    platform: &Platform,
) {
    let admin = platform.admin().await;
    let gadget = platform.create_product(&admin, "Gadget", 700, 6).await;
    let customer = platform.register("racer@example.com").await;
    let ids = futures_util::future::join_all((0..16).map(|_| {
        let (customer, gadget) = (&customer, &gadget);
        async move {
            let placed = platform
                .place_order(customer, &[(gadget, 1)], "tok_mastercard")
                .await;
            assert_eq!(placed.status, 202, "{placed:?}");
            let id = placed.body["id"].as_str().unwrap().to_owned();
            // Cancel at once: the saga is somewhere between created and confirmed.
            let cancel = platform
                .post_as(
                    &format!("/api/orders/{id}/cancel"),
                    Some(&customer.token),
                    json!({}),
                )
                .await;
            assert!(cancel.status == 200 || cancel.status == 409, "{cancel:?}");
            id
        }
    }))
    .await;
    wait_until_quiet(platform, &admin).await;
    for id in &ids {
        let order = platform
            .get_as(&format!("/api/orders/{id}"), &customer.token)
            .await
            .body;
        if order["status"] == "CANCELLED" {
            for payment in payments(platform, &customer, id).await {
                assert!(
                    payment["status"] == "VOIDED" || payment["status"] == "DECLINED",
                    "cancelled order {id} has payment {payment}"
                );
            }
        }
    }
    assert_invariants(platform, &admin, &HashMap::from([(gadget, 6)])).await;
}

/// What redelivery must not change: stock, orders, payments, shipments, notifications.
async fn snapshot(
    platform: &Platform,
    admin: &Session,
    customer: &Session,
    product: &str,
    orders: &[String],
) -> Vec<Value> {
    let mut view = vec![stock(platform, product).await];
    for order in orders {
        let body = platform
            .get_as(&format!("/api/orders/{order}"), &customer.token)
            .await
            .body;
        view.push(body);
        view.push(json!(payments(platform, admin, order).await));
        view.push(json!(shipments(platform, admin, order).await));
    }
    let notes = platform
        .get_as("/api/notifications/me?limit=100", &customer.token)
        .await;
    view.push(json!(notes.body["items"].as_array().map(Vec::len)));
    view
}

/// Every event in the log delivered a second time to every consumer (the log's records appended
/// again, with the platform stopped) changes nothing.
#[tokio::test]
async fn every_event_delivered_twice_takes_effect_once() {
    use emporium_platform::{
        bus::{EventBus, OutboxLog, Record},
        storage::{Db, query},
    };

    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_path_buf();
    let admin_env = [
        ("EMPORIUM_ADMIN_EMAIL", crate::support::ADMIN_EMAIL),
        ("EMPORIUM_ADMIN_PASSWORD", crate::support::ADMIN_PASSWORD),
    ];
    let platform = Platform::start_in(&data_dir, &admin_env).await;
    let admin = platform.admin().await;
    let customer = platform.register("twice@example.com").await;
    let pen = platform.create_product(&admin, "Pen", 300, 4).await;
    let ok = platform
        .place_order(&customer, &[(&pen, 2)], "tok_visa")
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let declined = platform
        .place_order(&customer, &[(&pen, 1)], "tok_chargeDeclined")
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let too_many = platform
        .place_order(&customer, &[(&pen, 9)], "tok_visa")
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    platform.wait_for_order(&customer, &ok, "CONFIRMED").await;
    platform
        .wait_for_order(&customer, &declined, "CANCELLED")
        .await;
    platform
        .wait_for_order(&customer, &too_many, "CANCELLED")
        .await;
    wait_until_quiet(&platform, &admin).await;

    let orders = [ok.clone(), declined.clone(), too_many.clone()];
    let before = snapshot(&platform, &admin, &customer, &pen, &orders).await;
    assert!(platform.terminate().await.success());

    // Append every record of every topic again, as a broker redelivering everything would: the
    // records are in the outboxes of the services' databases, each the log of what it emitted.
    let mut again = Vec::new();
    for file in std::fs::read_dir(&data_dir).unwrap() {
        let path = file.unwrap().path();
        if path.extension().is_none_or(|extension| extension != "db") {
            continue;
        }
        let db = Db::open_sqlite("source", &path).await.unwrap();
        let rows = query("SELECT topic, key, payload, headers FROM outbox ORDER BY id")
            .fetch_all(&mut db.reader().await.unwrap())
            .await
            .unwrap();
        for row in rows {
            let topic: String = row.get(0).unwrap();
            if emporium_events::Topic::ALL
                .iter()
                .any(|known| known.as_str() == topic)
            {
                again.push(Record {
                    topic,
                    key: row.get(1).unwrap(),
                    payload: row.get(2).unwrap(),
                    headers: serde_json::from_str(&row.get::<String>(3).unwrap()).unwrap(),
                });
            }
        }
        db.close().await;
    }
    let log = OutboxLog::open(&data_dir.join("events.db"), 8)
        .await
        .unwrap();
    let types: Vec<String> = again
        .iter()
        .filter_map(|r| r.headers.get("event-type").cloned())
        .collect();
    for saga_event in [
        "OrderCreated",
        "InventoryReserved",
        "InventoryRejected",
        "PaymentAuthorized",
        "PaymentFailed",
        "OrderConfirmed",
        "OrderCancelled",
        "ShipmentRequested",
        "ShipmentCreated",
    ] {
        assert!(
            types.iter().any(|t| t == saga_event),
            "{saga_event} is redelivered too: {types:?}"
        );
    }
    log.publish(&again).await.unwrap();
    drop(log);

    let platform = Platform::start_in(&data_dir, &admin_env).await;
    let admin = platform.admin().await;
    wait_until_quiet(&platform, &admin).await;
    let after = snapshot(&platform, &admin, &customer, &pen, &orders).await;
    assert_eq!(before, after, "redelivered events took effect again");
}
