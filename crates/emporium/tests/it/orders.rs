//! End-to-end tests of the orders service through the gateway: placing (202 + Location), listing
//! with filters and pages, privacy, cancellation, idempotency keys, unknown and deleted products,
//! every bad input, and the saga timeout.
//!
//! Two things shape these tests:
//! - Orders prices from its own read model of the catalog, built from `product-events`, so a new
//!   product is orderable a moment after the catalog created it. [`place_when_known`] waits for
//!   that by repeating one placement under one `Idempotency-Key` until it is no longer
//!   `UNKNOWN_PRODUCT`: the repeats are safe, because only a placed order is remembered under the
//!   key and every repeat after it replays that same order.
//! - To hold an order in `PENDING` for certain, [`InventoryOutage`] holds the inventory database's
//!   write lock, as an outage of that database would: inventory cannot reserve, so payments never
//!   authorizes and the order cannot move on its own. When the lock is released, inventory catches
//!   up, and its late reservation meets an order that is already cancelled. An [`Outage`] of the
//!   orders database holds the carrier's dispatch back from orders in the same way.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Platform, Reply, Session};

fn order_body(items: &[(&str, i64)], token: &str) -> Value {
    let items: Vec<Value> = items
        .iter()
        .map(|(product, quantity)| json!({"productId": product, "quantity": quantity}))
        .collect();
    json!({
        "items": items,
        "shippingAddress": {"name": "Ada Lovelace", "line1": "12 Analytical Row", "city": "London",
            "postalCode": "N1 9GU", "country": "GB"},
        "paymentMethod": {"token": token},
    })
}

/// `POST /api/orders` with an optional `Idempotency-Key`.
async fn post_order(platform: &Platform, token: &str, body: &Value, key: Option<&str>) -> Reply {
    let mut request = platform
        .http
        .post(platform.url("/api/orders"))
        .bearer_auth(token)
        .json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    Reply {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

/// Places `body` once the orders service knows its products (see the module docs).
async fn place_when_known(platform: &Platform, session: &Session, body: &Value) -> Reply {
    let key = uuid::Uuid::now_v7().to_string();
    platform
        .poll("orders to learn the products", || async {
            let reply = post_order(platform, &session.token, body, Some(&key)).await;
            (reply.code() != "UNKNOWN_PRODUCT").then_some(reply)
        })
        .await
}

/// Places an order for `product` and returns its id.
async fn order_of(platform: &Platform, session: &Session, product: &str, quantity: i64) -> String {
    let placed = place_when_known(
        platform,
        session,
        &order_body(&[(product, quantity)], "tok_visa"),
    )
    .await;
    assert_eq!(placed.status, 202, "{placed:?}");
    placed.body["id"].as_str().unwrap().to_owned()
}

/// A service database's write lock, held until [`Outage::end`]: an outage of that database.
struct Outage(rusqlite::Connection);

impl Outage {
    async fn begin(platform: &Platform, file: &str) -> Outage {
        let conn = rusqlite::Connection::open(platform.data_dir.join(file)).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        Outage(conn)
    }

    async fn end(self) {
        self.0.execute_batch("ROLLBACK").unwrap();
    }
}

/// The inventory database's write lock (see the module's documentation).
struct InventoryOutage;

impl InventoryOutage {
    async fn begin(platform: &Platform) -> Outage {
        Outage::begin(platform, "inventory.db").await
    }
}

fn statuses(order: &Value) -> Vec<String> {
    order["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["status"].as_str().map(str::to_owned))
        .collect()
}

async fn stock(platform: &Platform, product: &str) -> (i64, i64) {
    let reply = platform
        .call(
            Method::GET,
            &format!("/api/inventory/{product}"),
            None,
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    (
        reply.body["available"].as_i64().unwrap(),
        reply.body["reserved"].as_i64().unwrap(),
    )
}

#[tokio::test]
async fn placing_an_order_answers_202_with_its_location_and_catalog_prices() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let ada = platform.register("ada@example.com").await;
    let lamp = platform.create_product(&admin, "Lamp", 2500, 5).await;
    let mug = platform.create_product(&admin, "Mug", 800, 10).await;

    let placed = place_when_known(
        &platform,
        &ada,
        &order_body(&[(&lamp, 2), (&mug, 3)], "tok_visa"),
    )
    .await;
    assert_eq!(placed.status, 202, "{placed:?}");
    let order = &placed.body;
    let id = order["id"].as_str().unwrap();
    assert_eq!(
        placed.headers["location"],
        format!("/api/orders/{id}").as_str()
    );
    assert_eq!(order["status"], "PENDING");
    assert_eq!(order["userId"], ada.user_id.as_str());
    assert_eq!(order["cancellationReason"], Value::Null);
    assert_eq!(
        order["total"],
        json!({"amount": 2 * 2500 + 3 * 800, "currency": "USD"})
    );
    assert_eq!(
        order["items"],
        json!([
            {"productId": lamp, "name": "Lamp", "unitPrice": {"amount": 2500, "currency": "USD"},
             "quantity": 2, "lineTotal": {"amount": 5000, "currency": "USD"}},
            {"productId": mug, "name": "Mug", "unitPrice": {"amount": 800, "currency": "USD"},
             "quantity": 3, "lineTotal": {"amount": 2400, "currency": "USD"}},
        ])
    );
    assert_eq!(
        order["shippingAddress"],
        json!({"name": "Ada Lovelace", "line1": "12 Analytical Row", "line2": null, "city": "London",
               "postalCode": "N1 9GU", "country": "GB"})
    );
    assert_eq!(
        (&order["payment"], &order["shipment"]),
        (&Value::Null, &Value::Null)
    );
    assert_eq!(statuses(order), ["PENDING"]);
    for time in ["createdAt", "updatedAt"] {
        let text = order[time].as_str().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(text).is_ok(),
            "{time}: {text}"
        );
    }

    // The Location is where the order lives; the saga moves it on with a valid card.
    let shown = platform
        .get_as(&format!("/api/orders/{id}"), &ada.token)
        .await;
    assert_eq!(shown.status, 200, "{shown:?}");
    assert_eq!(shown.body["id"], id);
    let confirmed = platform.wait_for_order(&ada, id, "CONFIRMED").await;
    assert_eq!(confirmed["payment"]["status"], "AUTHORIZED");
    assert_eq!(statuses(&confirmed), ["PENDING", "CONFIRMED"]);
    let events: Vec<&str> = confirmed["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["event"].as_str())
        .collect();
    assert!(events.contains(&"PaymentAuthorized"), "{confirmed}");
}

#[tokio::test]
async fn listings_filter_by_status_and_page_newest_first() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let ada = platform.register("ada@example.com").await;
    let grace = platform.register("grace@example.com").await;
    let lamp = platform.create_product(&admin, "Lamp", 2500, 50).await;
    let mut adas = Vec::new();
    for _ in 0..5 {
        adas.push(order_of(&platform, &ada, &lamp, 1).await);
    }
    let graces = order_of(&platform, &grace, &lamp, 1).await;
    let cancel = platform
        .post_as(
            &format!("/api/orders/{}/cancel", adas[1]),
            Some(&ada.token),
            json!({}),
        )
        .await;
    assert_eq!(cancel.status, 200, "{cancel:?}");

    let ids = |reply: &Reply| -> Vec<String> {
        reply.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut seen = Vec::new();
    let mut path = "/api/orders?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let page = platform.get_as(&path, &ada.token).await;
        assert_eq!(page.status, 200, "{page:?}");
        assert!(ids(&page).len() <= 2);
        seen.extend(ids(&page));
        pages += 1;
        match page.body["nextCursor"].as_str() {
            Some(cursor) => path = format!("/api/orders?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    let newest_first: Vec<String> = adas.iter().rev().cloned().collect();
    assert_eq!(
        (seen, pages),
        (newest_first, 3),
        "ada sees her five orders, newest first, in three pages"
    );

    let cancelled = platform
        .get_as("/api/orders?status=CANCELLED", &ada.token)
        .await;
    assert_eq!(ids(&cancelled), [adas[1].clone()]);
    assert_eq!(
        cancelled.body["items"][0]["cancellationReason"],
        "CUSTOMER_REQUEST"
    );
    assert_eq!(cancelled.body["nextCursor"], Value::Null);
    let delivered = platform
        .get_as("/api/orders?status=DELIVERED", &ada.token)
        .await;
    assert_eq!(ids(&delivered), Vec::<String>::new());

    let hers = platform.get_as("/api/orders", &grace.token).await;
    assert_eq!(
        ids(&hers),
        std::slice::from_ref(&graces),
        "grace sees only hers"
    );
    let peeking = platform
        .get_as(&format!("/api/orders?userId={}", ada.user_id), &grace.token)
        .await;
    assert_eq!(
        ids(&peeking),
        Vec::<String>::new(),
        "a customer cannot list another's orders"
    );

    let everyone = platform.get_as("/api/orders?limit=100", &admin.token).await;
    assert_eq!(ids(&everyone).len(), 6, "the admin sees every order");
    let graces_only = platform
        .get_as(
            &format!("/api/orders?userId={}", grace.user_id),
            &admin.token,
        )
        .await;
    assert_eq!(ids(&graces_only), [graces]);
}

#[tokio::test]
async fn another_customers_order_does_not_exist_for_them() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let ada = platform.register("ada@example.com").await;
    let mallory = platform.register("mallory@example.com").await;
    let lamp = platform.create_product(&admin, "Lamp", 2500, 5).await;
    let order = order_of(&platform, &ada, &lamp, 1).await;

    let peek = platform
        .get_as(&format!("/api/orders/{order}"), &mallory.token)
        .await;
    assert_eq!((peek.status, peek.code()), (404, "NOT_FOUND"), "{peek:?}");
    let cancel = platform
        .post_as(
            &format!("/api/orders/{order}/cancel"),
            Some(&mallory.token),
            json!({}),
        )
        .await;
    assert_eq!(
        (cancel.status, cancel.code()),
        (404, "NOT_FOUND"),
        "{cancel:?}"
    );
    let anonymous = platform
        .call(Method::GET, &format!("/api/orders/{order}"), None, None)
        .await;
    assert_eq!(
        (anonymous.status, anonymous.code()),
        (401, "UNAUTHENTICATED")
    );

    // Mallory's attempt changed nothing; the owner and the admin still see the order.
    let own = platform
        .get_as(&format!("/api/orders/{order}"), &ada.token)
        .await;
    assert_eq!(own.status, 200);
    assert_ne!(own.body["cancellationReason"], "CUSTOMER_REQUEST");
    assert_eq!(
        platform
            .get_as(&format!("/api/orders/{order}"), &admin.token)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_pending_order_can_be_cancelled_once_and_its_stock_comes_back() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let ada = platform.register("ada@example.com").await;
    let lamp = platform.create_product(&admin, "Lamp", 2500, 5).await;

    let outage = InventoryOutage::begin(&platform).await;
    let order = order_of(&platform, &ada, &lamp, 2).await;
    let cancelled = platform
        .post_as(
            &format!("/api/orders/{order}/cancel"),
            Some(&ada.token),
            json!({}),
        )
        .await;
    assert_eq!(cancelled.status, 200, "{cancelled:?}");
    assert_eq!(cancelled.body["status"], "CANCELLED");
    assert_eq!(cancelled.body["cancellationReason"], "CUSTOMER_REQUEST");
    assert_eq!(
        statuses(&cancelled.body),
        ["PENDING", "CANCELLED"],
        "it was still PENDING"
    );
    let twice = platform
        .post_as(
            &format!("/api/orders/{order}/cancel"),
            Some(&ada.token),
            json!({}),
        )
        .await;
    assert_eq!(
        (twice.status, twice.code()),
        (409, "ORDER_NOT_CANCELLABLE"),
        "{twice:?}"
    );
    outage.end().await;

    // Inventory catches up: its late reservation does not revive the order, and is released.
    crate::saga::wait_until_quiet(&platform, &admin).await;
    let after = platform
        .get_as(&format!("/api/orders/{order}"), &ada.token)
        .await
        .body;
    assert_eq!(
        (&after["status"], &after["cancellationReason"]),
        (&json!("CANCELLED"), &json!("CUSTOMER_REQUEST"))
    );
    assert_eq!(stock(&platform, &lamp).await, (5, 0));

    // A confirmed order can be cancelled too.
    let confirmed = order_of(&platform, &ada, &lamp, 1).await;
    platform.wait_for_order(&ada, &confirmed, "CONFIRMED").await;
    let cancel = platform
        .post_as(
            &format!("/api/orders/{confirmed}/cancel"),
            Some(&ada.token),
            json!({}),
        )
        .await;
    assert_eq!(
        (cancel.status, &cancel.body["status"]),
        (200, &json!("CANCELLED")),
        "{cancel:?}"
    );
    assert_eq!(
        statuses(&cancel.body),
        ["PENDING", "CONFIRMED", "CANCELLED"]
    );
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_response_and_refuses_another_body() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let ada = platform.register("ada@example.com").await;
    let grace = platform.register("grace@example.com").await;
    let lamp = platform.create_product(&admin, "Lamp", 2500, 50).await;
    let body = order_body(&[(&lamp, 1)], "tok_visa");
    // Makes sure the product is known; the repeats below are what this test is about.
    order_of(&platform, &ada, &lamp, 1).await;

    let first = post_order(&platform, &ada.token, &body, Some("checkout-7")).await;
    assert_eq!(first.status, 202, "{first:?}");
    let id = first.body["id"].as_str().unwrap().to_owned();
    platform.wait_for_order(&ada, &id, "CONFIRMED").await;
    let again = post_order(&platform, &ada.token, &body, Some("checkout-7")).await;
    assert_eq!(again.status, 202);
    assert_eq!(
        again.body, first.body,
        "the first response, even though the order has moved on"
    );
    assert_eq!(again.headers["location"], first.headers["location"]);
    assert_eq!(again.headers["idempotent-replayed"], "true");

    let other = order_body(&[(&lamp, 2)], "tok_visa");
    let reused = post_order(&platform, &ada.token, &other, Some("checkout-7")).await;
    assert_eq!(
        (reused.status, reused.code()),
        (422, "IDEMPOTENCY_KEY_REUSED"),
        "{reused:?}"
    );

    // A key is the user's own: Grace's "checkout-7" is another order.
    let hers = post_order(&platform, &grace.token, &body, Some("checkout-7")).await;
    assert_eq!(hers.status, 202);
    assert_ne!(hers.body["id"], first.body["id"]);

    let listed = platform.get_as("/api/orders?limit=100", &ada.token).await;
    assert_eq!(
        listed.body["items"].as_array().unwrap().len(),
        2,
        "the probe order and checkout-7, once"
    );

    let bad = post_order(&platform, &ada.token, &body, Some("has spaces")).await;
    assert_eq!(
        (bad.status, bad.fields()),
        (400, vec!["Idempotency-Key".to_owned()]),
        "{bad:?}"
    );
}

#[tokio::test]
async fn unknown_and_deleted_products_are_unprocessable() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let ada = platform.register("ada@example.com").await;
    let lamp = platform.create_product(&admin, "Lamp", 2500, 5).await;
    let mug = platform.create_product(&admin, "Mug", 800, 5).await;
    order_of(&platform, &ada, &lamp, 1).await;
    order_of(&platform, &ada, &mug, 1).await;

    let ghost = uuid::Uuid::now_v7().to_string();
    for unknown in [ghost.as_str(), "not-a-product-id"] {
        let reply = post_order(
            &platform,
            &ada.token,
            &order_body(&[(&lamp, 1), (unknown, 1)], "tok_visa"),
            None,
        )
        .await;
        assert_eq!(
            (reply.status, reply.code()),
            (422, "UNKNOWN_PRODUCT"),
            "{reply:?}"
        );
        assert_eq!(reply.fields(), ["items[1].productId"]);
    }

    let deleted = platform
        .call(
            Method::DELETE,
            &format!("/api/products/{mug}"),
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!(deleted.status, 204, "{deleted:?}");
    let refused = platform
        .poll("orders to learn of the deletion", || async {
            let reply = post_order(
                &platform,
                &ada.token,
                &order_body(&[(&lamp, 1), (&mug, 2)], "tok_visa"),
                None,
            )
            .await;
            (reply.status != 202).then_some(reply)
        })
        .await;
    assert_eq!(
        (refused.status, refused.code()),
        (422, "UNKNOWN_PRODUCT"),
        "{refused:?}"
    );
    assert_eq!(refused.fields(), ["items[1].productId"]);
}

#[tokio::test]
async fn every_bad_input_is_a_problem_naming_the_field() {
    let platform = Platform::start_with(&[]).await;
    let ada = platform.register("ada@example.com").await;
    let product = uuid::Uuid::now_v7().to_string();
    let good = order_body(&[(&product, 1)], "tok_visa");
    // `good` with the field at `pointer` set (added if absent) to `value`.
    let with = |pointer: &str, value: Value| {
        let mut body = good.clone();
        let (parent, field) = pointer.rsplit_once('/').unwrap();
        match body.pointer_mut(parent).unwrap() {
            Value::Array(items) => items[field.parse::<usize>().unwrap()] = value,
            parent => parent[field] = value,
        }
        body
    };
    let without = |section: &str, field: &str| {
        let mut body = good.clone();
        let target = if section.is_empty() {
            &mut body
        } else {
            &mut body[section]
        };
        target.as_object_mut().unwrap().remove(field);
        body
    };
    let many: Vec<Value> = (0..101)
        .map(|i| json!({"productId": format!("p{i}"), "quantity": 1}))
        .collect();
    let cases: Vec<(&str, Value, &str)> = vec![
        ("no items", without("", "items"), "items"),
        ("items not a list", with("/items", json!("lamp")), "items"),
        ("empty items", with("/items", json!([])), "items"),
        ("101 items", with("/items", json!(many)), "items"),
        (
            "quantity zero",
            with("/items/0/quantity", json!(0)),
            "items[0].quantity",
        ),
        (
            "quantity 1001",
            with("/items/0/quantity", json!(1001)),
            "items[0].quantity",
        ),
        (
            "quantity negative",
            with("/items/0/quantity", json!(-3)),
            "items[0].quantity",
        ),
        (
            "quantity a string",
            with("/items/0/quantity", json!("two")),
            "items[0].quantity",
        ),
        (
            "quantity a fraction",
            with("/items/0/quantity", json!(1.5)),
            "items[0].quantity",
        ),
        (
            "no productId",
            with("/items/0", json!({"quantity": 1})),
            "items[0].productId",
        ),
        (
            "empty productId",
            with("/items/0/productId", json!("")),
            "items[0].productId",
        ),
        (
            "productId a number",
            with("/items/0/productId", json!(7)),
            "items[0].productId",
        ),
        (
            "product twice",
            with(
                "/items",
                json!([{"productId": product, "quantity": 1}, {"productId": product, "quantity": 2}]),
            ),
            "items[1].productId",
        ),
        (
            "no address",
            without("", "shippingAddress"),
            "shippingAddress",
        ),
        (
            "address not an object",
            with("/shippingAddress", json!("London")),
            "shippingAddress",
        ),
        (
            "no city",
            without("shippingAddress", "city"),
            "shippingAddress.city",
        ),
        (
            "blank name",
            with("/shippingAddress/name", json!("   ")),
            "shippingAddress.name",
        ),
        (
            "long line1",
            with("/shippingAddress/line1", json!("x".repeat(201))),
            "shippingAddress.line1",
        ),
        (
            "long line2",
            with("/shippingAddress/line2", json!("x".repeat(201))),
            "shippingAddress.line2",
        ),
        (
            "empty postal code",
            with("/shippingAddress/postalCode", json!("")),
            "shippingAddress.postalCode",
        ),
        (
            "three-letter country",
            with("/shippingAddress/country", json!("GBR")),
            "shippingAddress.country",
        ),
        (
            "digit country",
            with("/shippingAddress/country", json!("G1")),
            "shippingAddress.country",
        ),
        (
            "no payment method",
            without("", "paymentMethod"),
            "paymentMethod",
        ),
        (
            "no token",
            with("/paymentMethod", json!({})),
            "paymentMethod.token",
        ),
        (
            "empty token",
            with("/paymentMethod/token", json!("")),
            "paymentMethod.token",
        ),
        (
            "token a number",
            with("/paymentMethod/token", json!(42)),
            "paymentMethod.token",
        ),
        ("an array body", json!([good.clone()]), "body"),
    ];
    for (case, body, field) in cases {
        let reply = post_order(&platform, &ada.token, &body, None).await;
        assert_eq!(
            (reply.status, reply.code()),
            (400, "VALIDATION_ERROR"),
            "{case}: {reply:?}"
        );
        assert!(
            reply.fields().contains(&field.to_owned()),
            "{case}: expected {field} in {reply:?}"
        );
    }

    let raw = |content_type: &'static str, body: Vec<u8>| {
        platform
            .http
            .post(platform.url("/api/orders"))
            .bearer_auth(&ada.token)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let malformed = raw("application/json", b"{\"items\": [".to_vec())
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    let problem: Value = malformed.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "body");
    let text = raw("text/plain", serde_json::to_vec(&good).unwrap())
        .await
        .unwrap();
    assert_eq!(text.status(), 415);
    assert_eq!(
        text.json::<Value>().await.unwrap()["code"],
        "UNSUPPORTED_MEDIA_TYPE"
    );
    let huge = raw(
        "application/json",
        format!("{{\"pad\":\"{}\"}}", "x".repeat(300_000)).into_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(huge.status(), 413);
    let anonymous = platform.post_as("/api/orders", None, good.clone()).await;
    assert_eq!(
        (anonymous.status, anonymous.code()),
        (401, "UNAUTHENTICATED")
    );

    for (query, field) in [
        ("status=LOST", "status"),
        ("status=pending", "status"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("cursor=zz", "cursor"),
        ("userId=nobody", "userId"),
    ] {
        let reply = platform
            .get_as(&format!("/api/orders?{query}"), &ada.token)
            .await;
        assert_eq!(
            (reply.status, reply.fields()),
            (400, vec![field.to_owned()]),
            "{query}: {reply:?}"
        );
    }
    for id in [uuid::Uuid::now_v7().to_string(), "not-an-id".to_owned()] {
        let shown = platform
            .get_as(&format!("/api/orders/{id}"), &ada.token)
            .await;
        assert_eq!((shown.status, shown.code()), (404, "NOT_FOUND"), "{id}");
        let cancel = platform
            .post_as(
                &format!("/api/orders/{id}/cancel"),
                Some(&ada.token),
                json!({}),
            )
            .await;
        assert_eq!((cancel.status, cancel.code()), (404, "NOT_FOUND"), "{id}");
    }
}

/// The inventory database is locked (an outage), so the order cannot progress: after
/// `EMPORIUM_SAGA_TIMEOUT` the sweeper cancels it with `TIMEOUT`. When inventory recovers, its late
/// reservation neither revives the order nor keeps the stock.
#[tokio::test]
async fn an_order_stuck_in_pending_is_cancelled_with_timeout() {
    let platform = Platform::start_with(&[("EMPORIUM_SAGA_TIMEOUT", "1s")]).await;
    let admin = platform.admin().await;
    let ada = platform.register("ada@example.com").await;
    let lamp = platform.create_product(&admin, "Lamp", 2500, 5).await;

    let outage = InventoryOutage::begin(&platform).await;
    let order = order_of(&platform, &ada, &lamp, 2).await;
    let cancelled = platform.wait_for_order(&ada, &order, "CANCELLED").await;
    assert_eq!(cancelled["cancellationReason"], "TIMEOUT");
    assert_eq!(statuses(&cancelled), ["PENDING", "CANCELLED"]);
    let at = |field: &str| {
        chrono::DateTime::parse_from_rfc3339(cancelled[field].as_str().unwrap()).unwrap()
    };
    assert!(
        at("updatedAt") - at("createdAt") >= chrono::TimeDelta::seconds(1),
        "not cancelled before the timeout: {cancelled}"
    );
    outage.end().await;

    crate::saga::wait_until_quiet(&platform, &admin).await;
    let after = platform
        .get_as(&format!("/api/orders/{order}"), &ada.token)
        .await
        .body;
    assert_eq!(
        (&after["status"], &after["cancellationReason"]),
        (&json!("CANCELLED"), &json!("TIMEOUT")),
        "{after}"
    );
    assert_eq!(
        stock(&platform, &lamp).await,
        (5, 0),
        "the late reservation was released"
    );
    let payments = platform
        .get_as(&format!("/api/payments?orderId={order}"), &ada.token)
        .await;
    assert_eq!(payments.status, 200, "{payments:?}");
    for payment in payments.body.as_array().unwrap() {
        assert!(
            payment["status"] == "VOIDED" || payment["status"] == "DECLINED",
            "{payment}"
        );
    }
}

/// The customer cancels a CONFIRMED order while the carrier's dispatch is on its way to orders
/// (held back by an outage of the orders database). Money and stock follow the order's final
/// status, whichever of the two orders applies first: payments and inventory act on orders'
/// `OrderCancelled`/`OrderShipped` (one of them per order), never on the carrier's
/// `ShipmentDispatched`.
#[tokio::test]
async fn a_cancellation_racing_the_dispatch_never_leaves_money_or_stock_behind() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let ada = platform.register("ada@example.com").await;
    let lamp = platform.create_product(&admin, "Lamp", 2500, 5).await;
    let order = order_of(&platform, &ada, &lamp, 1).await;
    platform.wait_for_order(&ada, &order, "CONFIRMED").await;
    let shipment = platform
        .poll("the shipment", || async {
            let reply = platform
                .get_as(&format!("/api/shipments?orderId={order}"), &ada.token)
                .await;
            reply.body[0]["id"].as_str().map(str::to_owned)
        })
        .await;
    let payment_status = || async {
        platform
            .get_as(&format!("/api/payments?orderId={order}"), &ada.token)
            .await
            .body[0]["status"]
            .clone()
    };

    let outage = Outage::begin(&platform, "orders.db").await;
    // Sent first, so orders most likely takes the cancellation before the dispatch.
    let cancel_path = format!("/api/orders/{order}/cancel");
    let cancelling = platform.post_as(&cancel_path, Some(&ada.token), json!({}));
    let dispatching = async {
        let dispatched = platform
            .post_as(
                &format!("/api/shipments/{shipment}/dispatch"),
                Some(&admin.token),
                json!({}),
            )
            .await;
        assert_eq!(dispatched.status, 200, "{dispatched:?}");
        platform
            .wait_for("the dispatch on the log", || async {
                platform
                    .get_as(
                        &format!("/api/admin/events?aggregateId={order}&type=ShipmentDispatched"),
                        &admin.token,
                    )
                    .await
                    .body
                    .as_array()
                    .is_some_and(|events| events.len() == 1)
            })
            .await;
        platform
            .wait_for("payments and inventory to catch up", || async {
                let stats = platform.get_as("/api/admin/stats", &admin.token).await;
                stats.body["consumerLag"].as_array().is_some_and(|groups| {
                    groups
                        .iter()
                        .filter(|g| g["group"] == "payments" || g["group"] == "inventory")
                        .all(|g| g["lag"] == 0)
                })
            })
            .await;
        // Orders has not decided yet, so neither money nor stock has moved.
        assert_eq!(payment_status().await, "AUTHORIZED");
        assert_eq!(stock(&platform, &lamp).await, (4, 1));
        outage.end().await;
    };
    let (cancelled, ()) = tokio::join!(cancelling, dispatching);

    crate::saga::wait_until_quiet(&platform, &admin).await;
    let after = platform
        .get_as(&format!("/api/orders/{order}"), &ada.token)
        .await
        .body;
    let committed = platform
        .get_as("/api/inventory?limit=100", &admin.token)
        .await
        .body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["productId"] == lamp.as_str())
        .map(|i| i["committed"].clone())
        .unwrap();
    if cancelled.status == 200 {
        // The cancellation came first: the parcel is to be recalled; the order stays cancelled.
        assert_eq!(
            (&after["status"], &after["cancellationReason"]),
            (&json!("CANCELLED"), &json!("CUSTOMER_REQUEST")),
            "{after}"
        );
        assert_eq!(after["shipment"]["status"], "DISPATCHED");
        assert_eq!(payment_status().await, "VOIDED");
        assert_eq!(
            (stock(&platform, &lamp).await, committed),
            ((5, 0), json!(0))
        );
    } else {
        // The dispatch came first: the cancellation was refused.
        assert_eq!(
            (cancelled.status, cancelled.code()),
            (409, "ORDER_NOT_CANCELLABLE"),
            "{cancelled:?}"
        );
        assert_eq!(after["status"], "SHIPPED", "{after}");
        assert_eq!(payment_status().await, "CAPTURED");
        assert_eq!(
            (stock(&platform, &lamp).await, committed),
            ((4, 0), json!(1))
        );
    }
}
