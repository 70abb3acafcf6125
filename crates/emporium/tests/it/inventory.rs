//! End-to-end tests of the inventory service through the gateway.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Platform, Reply, Session};

async fn stock(platform: &Platform, product: &str) -> Reply {
    platform
        .call(
            Method::GET,
            &format!("/api/inventory/{product}"),
            None,
            None,
        )
        .await
}

async fn adjust(platform: &Platform, session: &Session, product: &str, body: Value) -> Reply {
    platform
        .post_as(
            &format!("/api/inventory/{product}/adjust"),
            Some(&session.token),
            body,
        )
        .await
}

fn order_id(reply: &Reply) -> String {
    assert_eq!(reply.status, 202, "{reply:?}");
    reply.body["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn stock_appears_after_a_product_is_created() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    // `create_product` waits until the stock is visible.
    let lamp = platform.create_product(&admin, "Lamp", 2500, 7).await;
    let reply = stock(&platform, &lamp).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["productId"], lamp.as_str());
    assert_eq!(reply.body["available"], 7);
    assert_eq!(reply.body["reserved"], 0);
    assert!(reply.body["updatedAt"].as_str().unwrap().ends_with('Z'));

    let listing = platform.get_as("/api/inventory", &admin.token).await;
    assert_eq!(listing.status, 200, "{listing:?}");
    assert_eq!(listing.body["totalAvailable"], 7);
    assert_eq!(listing.body["items"][0]["productId"], lamp.as_str());
    assert_eq!(listing.body["items"][0]["committed"], 0);
    assert!(listing.body["nextCursor"].is_null());
}

#[tokio::test]
async fn admins_adjust_stock_but_never_below_zero() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let mug = platform.create_product(&admin, "Mug", 900, 10).await;

    let up = adjust(
        &platform,
        &admin,
        &mug,
        json!({"delta": 5, "reason": "delivery"}),
    )
    .await;
    assert_eq!(up.status, 200, "{up:?}");
    assert_eq!(up.body["available"], 15);
    let down = adjust(&platform, &admin, &mug, json!({"delta": -15})).await;
    assert_eq!(down.status, 200, "{down:?}");
    assert_eq!(down.body["available"], 0);

    let refused = adjust(&platform, &admin, &mug, json!({"delta": -1})).await;
    assert_eq!(refused.status, 409, "{refused:?}");
    assert_eq!(refused.code(), "INSUFFICIENT_STOCK");
    assert_eq!(stock(&platform, &mug).await.body["available"], 0);
}

#[tokio::test]
async fn the_admin_endpoints_need_an_admin() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let customer = platform.register("shopper@example.com").await;
    let mug = platform.create_product(&admin, "Mug", 900, 10).await;

    let anonymous = platform
        .call(Method::GET, "/api/inventory", None, None)
        .await;
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    assert_eq!(anonymous.code(), "UNAUTHENTICATED");
    let customer_list = platform.get_as("/api/inventory", &customer.token).await;
    assert_eq!(customer_list.status, 403, "{customer_list:?}");
    assert_eq!(customer_list.code(), "FORBIDDEN");

    let path = format!("/api/inventory/{mug}/adjust");
    let anonymous = platform.post_as(&path, None, json!({"delta": 1})).await;
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    let by_customer = adjust(&platform, &customer, &mug, json!({"delta": 1})).await;
    assert_eq!(by_customer.status, 403, "{by_customer:?}");
    assert_eq!(stock(&platform, &mug).await.body["available"], 10);
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_field() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let mug = platform.create_product(&admin, "Mug", 900, 10).await;

    for (body, field) in [
        (json!({"delta": 0}), "delta"),
        (json!({"delta": 1_000_001}), "delta"),
        (json!({"delta": -1_000_001}), "delta"),
        (json!({"delta": "5"}), "delta"),
        (json!({"delta": 1.5}), "delta"),
        (json!({"delta": null}), "delta"),
        (json!({"reason": "no delta"}), "delta"),
        (json!({"delta": 1, "reason": "x".repeat(501)}), "reason"),
        (json!({"delta": 1, "reason": 7}), "reason"),
        (json!([1]), "body"),
    ] {
        let reply = adjust(&platform, &admin, &mug, body.clone()).await;
        assert_eq!(reply.status, 400, "{body}: {reply:?}");
        assert_eq!(reply.code(), "VALIDATION_ERROR");
        assert_eq!(reply.fields(), vec![field.to_owned()], "{body}: {reply:?}");
    }

    let url = platform.url(&format!("/api/inventory/{mug}/adjust"));
    let malformed = platform
        .http
        .post(&url)
        .bearer_auth(&admin.token)
        .header("content-type", "application/json")
        .body("{\"delta\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    let problem: Value = malformed.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "body");
    let wrong_type = platform
        .http
        .post(&url)
        .bearer_auth(&admin.token)
        .header("content-type", "text/plain")
        .body("delta=1")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), 415);

    // Unknown products, well-formed or not, are 404 on every endpoint.
    let unknown = uuid::Uuid::now_v7().to_string();
    for product in [unknown.as_str(), "not-an-id"] {
        assert_eq!(stock(&platform, product).await.status, 404);
        let reply = adjust(&platform, &admin, product, json!({"delta": 1})).await;
        assert_eq!(reply.status, 404, "{reply:?}");
        assert_eq!(reply.code(), "NOT_FOUND");
    }

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("cursor=zz", "cursor"),
        ("limit=1&limit=2", "limit"),
    ] {
        let reply = platform
            .get_as(&format!("/api/inventory?{query}"), &admin.token)
            .await;
        assert_eq!(reply.status, 400, "{query}: {reply:?}");
        assert_eq!(reply.fields(), vec![field.to_owned()], "{query}");
    }
    // Nothing above changed the stock.
    assert_eq!(stock(&platform, &mug).await.body["available"], 10);
}

#[tokio::test]
async fn the_admin_listing_pages_and_totals_the_stock() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let mut products = Vec::new();
    for (name, units) in [("A", 1), ("B", 2), ("C", 3)] {
        products.push(platform.create_product(&admin, name, 100, units).await);
    }
    let first = platform
        .get_as("/api/inventory?limit=2", &admin.token)
        .await;
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.body["items"].as_array().unwrap().len(), 2);
    assert_eq!(first.body["totalAvailable"], 6);
    let cursor = first.body["nextCursor"].as_str().unwrap();
    let second = platform
        .get_as(
            &format!("/api/inventory?limit=2&cursor={cursor}"),
            &admin.token,
        )
        .await;
    assert_eq!(second.body["items"].as_array().unwrap().len(), 1);
    assert!(second.body["nextCursor"].is_null());
    let mut seen: Vec<String> = first.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second.body["items"].as_array().unwrap())
        .map(|i| i["productId"].as_str().unwrap().to_owned())
        .collect();
    seen.sort();
    products.sort();
    assert_eq!(seen, products);
}

#[tokio::test]
async fn an_order_that_cannot_be_filled_is_rejected_and_takes_no_stock() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let customer = platform.register("shopper@example.com").await;
    let plenty = platform.create_product(&admin, "Plenty", 500, 10).await;
    let scarce = platform.create_product(&admin, "Scarce", 500, 1).await;

    let placed = platform
        .place_order(&customer, &[(&plenty, 3), (&scarce, 2)], "tok_visa")
        .await;
    let order = order_id(&placed);
    let cancelled = platform
        .wait_for_order(&customer, &order, "CANCELLED")
        .await;
    assert_eq!(cancelled["cancellationReason"], "OUT_OF_STOCK");
    for (product, units) in [(&plenty, 10), (&scarce, 1)] {
        let level = stock(&platform, product).await;
        assert_eq!(level.body["available"], units, "{level:?}");
        assert_eq!(level.body["reserved"], 0, "{level:?}");
    }
}

#[tokio::test]
async fn a_reservation_holds_stock_until_the_order_is_cancelled() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let customer = platform.register("shopper@example.com").await;
    let lamp = platform.create_product(&admin, "Lamp", 2500, 5).await;

    let order = order_id(
        &platform
            .place_order(&customer, &[(&lamp, 2)], "tok_visa")
            .await,
    );
    platform
        .wait_for_order(&customer, &order, "CONFIRMED")
        .await;
    let held = stock(&platform, &lamp).await;
    assert_eq!(
        (
            held.body["available"].clone(),
            held.body["reserved"].clone()
        ),
        (json!(3), json!(2))
    );

    let cancel = platform
        .post_as(
            &format!("/api/orders/{order}/cancel"),
            Some(&customer.token),
            json!({}),
        )
        .await;
    assert_eq!(cancel.status, 200, "{cancel:?}");
    platform
        .wait_for("the reservation to be released", || async {
            let level = stock(&platform, &lamp).await;
            level.body["available"] == 5 && level.body["reserved"] == 0
        })
        .await;
}

#[tokio::test]
async fn levels_of_many_products_come_in_one_request_without_the_deleted_ones() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let lamp = platform.create_product(&admin, "Lamp", 100, 3).await;
    let desk = platform.create_product(&admin, "Desk", 100, 7).await;
    let gone = platform.create_product(&admin, "Gone", 100, 1).await;
    let deleted = platform
        .call(
            Method::DELETE,
            &format!("/api/products/{gone}"),
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!(deleted.status, 204);
    platform
        .wait_for("inventory to hear of the deletion", || async {
            stock(&platform, &gone).await.status == 404
        })
        .await;
    let unknown = "0190b8a0-0000-7000-8000-000000000000";
    let reply = platform
        .call(
            Method::GET,
            &format!("/api/inventory/levels?productIds={lamp},{desk},{gone},{unknown}"),
            None,
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let mut found: Vec<(String, i64)> = reply.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["productId"].as_str().unwrap().to_owned(),
                s["available"].as_i64().unwrap(),
            )
        })
        .collect();
    found.sort();
    let mut expected = vec![(lamp.clone(), 3), (desk.clone(), 7)];
    expected.sort();
    assert_eq!(found, expected);

    let products = platform
        .call(
            Method::GET,
            &format!("/api/products?ids={lamp},{gone}"),
            None,
            None,
        )
        .await;
    assert_eq!(products.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(products.body["items"][0]["name"], "Lamp");

    for (path, field) in [
        (
            "/api/inventory/levels?productIds=lamp".to_owned(),
            "productIds",
        ),
        ("/api/inventory/levels".to_owned(), "productIds"),
        (
            format!(
                "/api/inventory/levels?productIds={}",
                vec![unknown; 101].join(",")
            ),
            "productIds",
        ),
        ("/api/products?ids=lamp".to_owned(), "ids"),
    ] {
        let reply = platform.call(Method::GET, &path, None, None).await;
        assert_eq!(reply.status, 400, "{path}: {reply:?}");
        assert_eq!(reply.fields(), [field], "{path}");
    }
}
