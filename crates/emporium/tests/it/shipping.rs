//! End-to-end tests of the shipping service through the gateway.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Platform, Reply, Session};

fn order_id(reply: &Reply) -> String {
    assert_eq!(reply.status, 202, "{reply:?}");
    reply.body["id"].as_str().unwrap().to_owned()
}

async fn shipments(platform: &Platform, session: &Session, order: &str) -> Reply {
    platform
        .get_as(&format!("/api/shipments?orderId={order}"), &session.token)
        .await
}

/// Waits until the order's shipment exists and `ready(shipment)`; returns it.
async fn shipment_when(
    platform: &Platform,
    session: &Session,
    order: &str,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    platform
        .poll(what, || async {
            let reply = shipments(platform, session, order).await;
            let list = reply.body.as_array().filter(|_| reply.status == 200)?;
            assert!(list.len() <= 1, "one shipment per order: {list:?}");
            list.first().filter(|s| ready(s)).cloned()
        })
        .await
}

/// A customer's confirmed order for one unit of a fresh product; returns the order id.
async fn confirmed_order(platform: &Platform, admin: &Session, customer: &Session) -> String {
    let lamp = platform.create_product(admin, "Lamp", 2500, 5).await;
    let order = order_id(
        &platform
            .place_order(customer, &[(&lamp, 1)], "tok_visa")
            .await,
    );
    platform.wait_for_order(customer, &order, "CONFIRMED").await;
    order
}

async fn post(platform: &Platform, path: &str, session: Option<&Session>) -> Reply {
    platform
        .call(Method::POST, path, session.map(|s| s.token.as_str()), None)
        .await
}

#[tokio::test]
async fn a_confirmed_order_gets_a_ready_shipment() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let customer = platform.register("buyer@example.com").await;
    let order = confirmed_order(&platform, &admin, &customer).await;

    let shipment = shipment_when(&platform, &customer, &order, "the shipment", |_| true).await;
    assert_eq!(shipment["orderId"], order.as_str());
    assert_eq!(shipment["status"], "READY");
    let tracking = shipment["trackingNumber"].as_str().unwrap();
    assert!(
        tracking.len() == 13
            && tracking.starts_with("EMP")
            && tracking[3..].chars().all(|c| c.is_ascii_alphanumeric()),
        "{tracking}"
    );
    assert!(!shipment["carrier"].as_str().unwrap().is_empty());
    assert!(shipment["createdAt"].as_str().is_some() && shipment["updatedAt"].as_str().is_some());
    // With the dispatch delay off (the test profile), it stays READY.
    let order_view = platform
        .get_as(&format!("/api/orders/{order}"), &customer.token)
        .await;
    assert_eq!(order_view.body["status"], "CONFIRMED");
}

#[tokio::test]
async fn admins_dispatch_then_deliver_and_other_moves_are_conflicts() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let customer = platform.register("buyer@example.com").await;
    let order = confirmed_order(&platform, &admin, &customer).await;
    let shipment = shipment_when(&platform, &customer, &order, "the shipment", |_| true).await;
    let id = shipment["id"].as_str().unwrap();
    let dispatch = format!("/api/shipments/{id}/dispatch");
    let deliver = format!("/api/shipments/{id}/deliver");

    let early = post(&platform, &deliver, Some(&admin)).await;
    assert_eq!(early.status, 409, "{early:?}");
    assert_eq!(early.code(), "SHIPMENT_NOT_DELIVERABLE");

    let dispatched = post(&platform, &dispatch, Some(&admin)).await;
    assert_eq!(dispatched.status, 200, "{dispatched:?}");
    assert_eq!(dispatched.body["status"], "DISPATCHED");
    assert_eq!(
        dispatched.body["trackingNumber"],
        shipment["trackingNumber"]
    );
    let again = post(&platform, &dispatch, Some(&admin)).await;
    assert_eq!(again.status, 409, "{again:?}");
    assert_eq!(again.code(), "SHIPMENT_NOT_DISPATCHABLE");
    platform.wait_for_order(&customer, &order, "SHIPPED").await;
    // Dispatch captures the payment and turns the reservation into a sale.
    platform
        .wait_for("the payment captured", || async {
            let reply = platform
                .get_as(&format!("/api/payments?orderId={order}"), &customer.token)
                .await;
            reply.body[0]["status"] == "CAPTURED"
        })
        .await;
    platform
        .wait_for("the reservation committed", || async {
            let listing = platform.get_as("/api/inventory", &admin.token).await;
            let item = &listing.body["items"][0];
            item["committed"] == 1 && item["reserved"] == 0 && item["available"] == 4
        })
        .await;

    let delivered = post(&platform, &deliver, Some(&admin)).await;
    assert_eq!(delivered.status, 200, "{delivered:?}");
    assert_eq!(delivered.body["status"], "DELIVERED");
    let again = post(&platform, &deliver, Some(&admin)).await;
    assert_eq!(again.status, 409, "{again:?}");
    assert_eq!(again.code(), "SHIPMENT_NOT_DELIVERABLE");
    let after = post(&platform, &dispatch, Some(&admin)).await;
    assert_eq!(after.code(), "SHIPMENT_NOT_DISPATCHABLE");
    platform
        .wait_for_order(&customer, &order, "DELIVERED")
        .await;
    let listed = shipments(&platform, &customer, &order).await;
    assert_eq!(listed.body[0]["status"], "DELIVERED");
}

#[tokio::test]
async fn shipments_dispatch_by_themselves_after_the_delay() {
    let platform = Platform::start_with(&[("EMPORIUM_SHIPPING_DISPATCH_DELAY", "200ms")]).await;
    let admin = platform.admin().await;
    let customer = platform.register("buyer@example.com").await;
    let order = confirmed_order(&platform, &admin, &customer).await;

    let shipment = shipment_when(&platform, &customer, &order, "automatic dispatch", |s| {
        s["status"] == "DISPATCHED"
    })
    .await;
    platform.wait_for_order(&customer, &order, "SHIPPED").await;
    // The admin endpoint cannot dispatch it a second time.
    let id = shipment["id"].as_str().unwrap();
    let again = post(
        &platform,
        &format!("/api/shipments/{id}/dispatch"),
        Some(&admin),
    )
    .await;
    assert_eq!(again.status, 409, "{again:?}");
}

#[tokio::test]
async fn cancelling_a_confirmed_order_cancels_its_shipment() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let customer = platform.register("buyer@example.com").await;
    let order = confirmed_order(&platform, &admin, &customer).await;
    let shipment = shipment_when(&platform, &customer, &order, "the shipment", |_| true).await;

    let cancel = platform
        .post_as(
            &format!("/api/orders/{order}/cancel"),
            Some(&customer.token),
            json!({}),
        )
        .await;
    assert_eq!(cancel.status, 200, "{cancel:?}");
    shipment_when(
        &platform,
        &customer,
        &order,
        "the shipment cancelled",
        |s| s["status"] == "CANCELLED",
    )
    .await;
    let id = shipment["id"].as_str().unwrap();
    let dispatch = post(
        &platform,
        &format!("/api/shipments/{id}/dispatch"),
        Some(&admin),
    )
    .await;
    assert_eq!(dispatch.status, 409, "{dispatch:?}");
    assert_eq!(dispatch.code(), "SHIPMENT_NOT_DISPATCHABLE");
}

#[tokio::test]
async fn shipments_are_private_and_their_endpoints_need_an_admin() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let customer = platform.register("buyer@example.com").await;
    let other = platform.register("other@example.com").await;
    let order = confirmed_order(&platform, &admin, &customer).await;
    let shipment = shipment_when(&platform, &customer, &order, "the shipment", |_| true).await;
    let id = shipment["id"].as_str().unwrap();

    let snooping = shipments(&platform, &other, &order).await;
    assert_eq!(snooping.status, 404, "{snooping:?}");
    assert_eq!(shipments(&platform, &admin, &order).await.body[0], shipment);
    let anonymous = platform
        .call(
            Method::GET,
            &format!("/api/shipments?orderId={order}"),
            None,
            None,
        )
        .await;
    assert_eq!(anonymous.status, 401);

    for action in ["dispatch", "deliver"] {
        let path = format!("/api/shipments/{id}/{action}");
        let anonymous = post(&platform, &path, None).await;
        assert_eq!(anonymous.status, 401, "{action}: {anonymous:?}");
        let by_customer = post(&platform, &path, Some(&customer)).await;
        assert_eq!(by_customer.status, 403, "{action}: {by_customer:?}");
        assert_eq!(by_customer.code(), "FORBIDDEN");
        for unknown in [uuid::Uuid::now_v7().to_string(), "not-an-id".to_owned()] {
            let reply = post(
                &platform,
                &format!("/api/shipments/{unknown}/{action}"),
                Some(&admin),
            )
            .await;
            assert_eq!(reply.status, 404, "{action} {unknown}: {reply:?}");
            assert_eq!(reply.code(), "NOT_FOUND");
        }
    }
    // None of that moved the shipment.
    assert_eq!(
        shipments(&platform, &customer, &order).await.body[0]["status"],
        "READY"
    );
}

#[tokio::test]
async fn bad_shipment_queries_name_the_field() {
    let platform = Platform::start_with(&[]).await;
    let customer = platform.register("buyer@example.com").await;
    for path in [
        "/api/shipments",
        "/api/shipments?orderId=",
        "/api/shipments?orderId=12345",
        "/api/shipments?orderId=0190b8a2-7c4e-7a1b-9c3d-123456789abc&orderId=x",
    ] {
        let reply = platform.get_as(path, &customer.token).await;
        assert_eq!(reply.status, 400, "{path}: {reply:?}");
        assert_eq!(reply.fields(), vec!["orderId".to_owned()], "{path}");
    }
}

#[tokio::test]
async fn an_order_shipping_has_not_heard_of_has_no_shipments_for_anyone() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let customer = platform.register("buyer@example.com").await;
    // Nothing to leak, and the order's owner is not told it does not exist while the saga
    // catches up.
    let unknown = uuid::Uuid::now_v7().to_string();
    for session in [&customer, &admin] {
        let reply = shipments(&platform, session, &unknown).await;
        assert_eq!((reply.status, &reply.body), (200, &json!([])), "{reply:?}");
    }
    // A PENDING order (no shipment requested yet) reads the same for its owner.
    let lamp = platform.create_product(&admin, "Lamp", 2500, 5).await;
    let order = order_id(
        &platform
            .place_order(&customer, &[(&lamp, 1)], "tok_chargeDeclined")
            .await,
    );
    let reply = shipments(&platform, &customer, &order).await;
    assert_eq!((reply.status, &reply.body), (200, &json!([])), "{reply:?}");
}
