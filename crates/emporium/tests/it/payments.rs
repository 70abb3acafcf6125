//! End-to-end tests of the payments service through the gateway.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Platform, Reply, Session};

fn order_id(reply: &Reply) -> String {
    assert_eq!(reply.status, 202, "{reply:?}");
    reply.body["id"].as_str().unwrap().to_owned()
}

async fn payments(platform: &Platform, session: &Session, order: &str) -> Reply {
    platform
        .get_as(&format!("/api/payments?orderId={order}"), &session.token)
        .await
}

/// Waits until the order's one payment is there; returns it.
async fn the_payment(platform: &Platform, session: &Session, order: &str) -> Value {
    platform
        .poll("the order's payment", || async {
            let reply = payments(platform, session, order).await;
            (reply.status == 200 && reply.body.as_array().is_some_and(|p| !p.is_empty()))
                .then_some(reply.body)
        })
        .await
        .as_array()
        .map(|list| {
            assert_eq!(list.len(), 1, "one payment per order: {list:?}");
            list[0].clone()
        })
        .unwrap()
}

#[tokio::test]
async fn an_authorized_payment_is_listed_for_the_orders_owner() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let customer = platform.register("payer@example.com").await;
    let lamp = platform.create_product(&admin, "Lamp", 2500, 5).await;

    let order = order_id(
        &platform
            .place_order(&customer, &[(&lamp, 2)], "tok_visa")
            .await,
    );
    let confirmed = platform
        .wait_for_order(&customer, &order, "CONFIRMED")
        .await;
    let payment = the_payment(&platform, &customer, &order).await;
    assert_eq!(payment["orderId"], order.as_str());
    assert_eq!(payment["status"], "AUTHORIZED");
    assert_eq!(
        payment["amount"],
        json!({"amount": 5000, "currency": "USD"})
    );
    assert_eq!(payment["amount"], confirmed["total"]);
    assert!(payment["declineReason"].is_null());
    assert!(payment["id"].as_str().is_some());
    assert!(payment["createdAt"].as_str().is_some());
    // An admin sees it too.
    assert_eq!(the_payment(&platform, &admin, &order).await, payment);
}

#[tokio::test]
async fn each_declined_token_cancels_the_order_with_its_reason() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let customer = platform.register("payer@example.com").await;
    let lamp = platform.create_product(&admin, "Lamp", 2500, 10).await;

    let mut orders = Vec::new();
    for (token, reason) in [
        ("tok_chargeDeclined", "card_declined"),
        ("tok_insufficientFunds", "insufficient_funds"),
        ("tok_doesNotExist", "invalid_payment_method"),
    ] {
        let order = order_id(&platform.place_order(&customer, &[(&lamp, 1)], token).await);
        orders.push((token, reason, order));
    }
    for (token, reason, order) in &orders {
        let cancelled = platform.wait_for_order(&customer, order, "CANCELLED").await;
        assert_eq!(
            cancelled["cancellationReason"], "PAYMENT_DECLINED",
            "{token}"
        );
        let payment = the_payment(&platform, &customer, order).await;
        assert_eq!(payment["status"], "DECLINED", "{token}");
        assert_eq!(payment["declineReason"], *reason, "{token}");
    }
    // Every reservation went back.
    platform
        .wait_for("the stock to be released", || async {
            let level = platform
                .call(Method::GET, &format!("/api/inventory/{lamp}"), None, None)
                .await;
            level.body["available"] == 10 && level.body["reserved"] == 0
        })
        .await;
}

#[tokio::test]
async fn a_total_above_the_payment_limit_is_declined() {
    let platform = Platform::start_with(&[("EMPORIUM_PAYMENT_LIMIT", "5000")]).await;
    let admin = platform.admin().await;
    let customer = platform.register("payer@example.com").await;
    let lamp = platform.create_product(&admin, "Lamp", 2500, 10).await;

    let at_limit = order_id(
        &platform
            .place_order(&customer, &[(&lamp, 2)], "tok_visa")
            .await,
    );
    let over = order_id(
        &platform
            .place_order(&customer, &[(&lamp, 3)], "tok_visa")
            .await,
    );
    platform
        .wait_for_order(&customer, &at_limit, "CONFIRMED")
        .await;
    platform.wait_for_order(&customer, &over, "CANCELLED").await;
    let payment = the_payment(&platform, &customer, &over).await;
    assert_eq!(payment["status"], "DECLINED");
    assert_eq!(payment["declineReason"], "amount_limit_exceeded");
    assert_eq!(payment["amount"]["amount"], 7500);
}

#[tokio::test]
async fn a_provider_that_stays_down_ends_provider_unavailable() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let customer = platform.register("payer@example.com").await;
    let lamp = platform.create_product(&admin, "Lamp", 2500, 10).await;

    let order = order_id(
        &platform
            .place_order(&customer, &[(&lamp, 1)], "tok_providerError")
            .await,
    );
    let cancelled = platform
        .wait_for_order(&customer, &order, "CANCELLED")
        .await;
    assert_eq!(cancelled["cancellationReason"], "PAYMENT_DECLINED");
    let payment = the_payment(&platform, &customer, &order).await;
    assert_eq!(payment["status"], "DECLINED");
    assert_eq!(payment["declineReason"], "provider_unavailable");

    // One failing order does not open the breaker: the next good card goes through.
    let next = order_id(
        &platform
            .place_order(&customer, &[(&lamp, 1)], "tok_mastercard")
            .await,
    );
    platform.wait_for_order(&customer, &next, "CONFIRMED").await;
}

#[tokio::test]
async fn cancelling_a_confirmed_order_voids_its_payment() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let customer = platform.register("payer@example.com").await;
    let lamp = platform.create_product(&admin, "Lamp", 2500, 10).await;

    let order = order_id(
        &platform
            .place_order(&customer, &[(&lamp, 1)], "tok_visa")
            .await,
    );
    platform
        .wait_for_order(&customer, &order, "CONFIRMED")
        .await;
    let cancel = platform
        .post_as(
            &format!("/api/orders/{order}/cancel"),
            Some(&customer.token),
            json!({}),
        )
        .await;
    assert_eq!(cancel.status, 200, "{cancel:?}");
    platform
        .wait_for("the payment to be voided", || async {
            payments(&platform, &customer, &order).await.body[0]["status"] == "VOIDED"
        })
        .await;
}

#[tokio::test]
async fn payments_are_private_to_their_order_owner() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let owner = platform.register("owner@example.com").await;
    let other = platform.register("other@example.com").await;
    let lamp = platform.create_product(&admin, "Lamp", 2500, 10).await;
    let order = order_id(
        &platform
            .place_order(&owner, &[(&lamp, 1)], "tok_visa")
            .await,
    );
    platform.wait_for_order(&owner, &order, "CONFIRMED").await;
    the_payment(&platform, &owner, &order).await;

    let snooping = payments(&platform, &other, &order).await;
    assert_eq!(snooping.status, 404, "{snooping:?}");
    assert_eq!(snooping.code(), "NOT_FOUND");
    let anonymous = platform
        .call(
            Method::GET,
            &format!("/api/payments?orderId={order}"),
            None,
            None,
        )
        .await;
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    // An order payments has not heard of has no payments, for anyone: nothing to leak, and its
    // owner is not told it does not exist while the saga catches up.
    let unknown = uuid::Uuid::now_v7().to_string();
    for session in [&owner, &other, &admin] {
        let reply = payments(&platform, session, &unknown).await;
        assert_eq!((reply.status, &reply.body), (200, &json!([])), "{reply:?}");
    }
}

#[tokio::test]
async fn bad_payment_queries_name_the_field() {
    let platform = Platform::start_with(&[]).await;
    let customer = platform.register("payer@example.com").await;
    for path in [
        "/api/payments",
        "/api/payments?orderId=",
        "/api/payments?orderId=not-an-id",
        "/api/payments?orderid=0190b8a2-7c4e-7a1b-9c3d-123456789abc",
        "/api/payments?orderId=0190b8a2-7c4e-7a1b-9c3d-123456789abc&orderId=x",
    ] {
        let reply = platform.get_as(path, &customer.token).await;
        assert_eq!(reply.status, 400, "{path}: {reply:?}");
        assert_eq!(reply.code(), "VALIDATION_ERROR");
        assert_eq!(reply.fields(), vec!["orderId".to_owned()], "{path}");
    }
}
