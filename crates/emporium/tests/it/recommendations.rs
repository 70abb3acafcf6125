//! End-to-end tests of the recommendations service through the gateway: rankings from real
//! confirmed orders, the product page, bad input, and the recommendations email.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Platform, Reply, Session};

/// Places an order for `products` (one of each) as `session` and waits until it is confirmed.
async fn buy(platform: &Platform, session: &Session, products: &[&str]) -> String {
    let items: Vec<(&str, i64)> = products.iter().map(|p| (*p, 1)).collect();
    let reply = platform.place_order(session, &items, "tok_visa").await;
    assert_eq!(reply.status, 202, "{reply:?}");
    let id = reply.body["id"].as_str().unwrap().to_owned();
    platform.wait_for_order(session, &id, "CONFIRMED").await;
    id
}

/// Polls `path` (as `token`, if any) until its recommendations satisfy `done`; returns them.
async fn recommendations_until(
    platform: &Platform,
    path: &str,
    token: Option<&str>,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    platform
        .poll(what, || async {
            let reply = platform.call(Method::GET, path, token, None).await;
            assert_eq!(reply.status, 200, "{path}: {reply:?}");
            let items = reply.body.as_array().cloned().unwrap_or_default();
            done(&items).then_some(items)
        })
        .await
}

fn names(items: &[Value]) -> Vec<&str> {
    items
        .iter()
        .map(|i| i["product"]["name"].as_str().unwrap_or_default())
        .collect()
}

#[track_caller]
fn assert_names_limit(reply: &Reply) {
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_eq!(reply.code(), "VALIDATION_ERROR", "{reply:?}");
    assert_eq!(reply.fields(), ["limit"], "{reply:?}");
}

#[tokio::test]
async fn buyers_of_a_are_recommended_b_and_everyone_else_best_sellers() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let machine = platform
        .create_product(&admin, "Espresso Machine", 30000, 100)
        .await;
    let grinder = platform.create_product(&admin, "Grinder", 5000, 100).await;
    let novel = platform.create_product(&admin, "Novel", 1500, 100).await;
    for email in ["u1@example.com", "u2@example.com"] {
        let buyer = platform.register(email).await;
        buy(&platform, &buyer, &[&machine, &grinder]).await;
    }
    let reader = platform.register("u3@example.com").await;
    buy(&platform, &reader, &[&novel]).await;
    let ada = platform.register("ada@example.com").await;
    buy(&platform, &ada, &[&machine]).await;

    // Ada bought the machine: the grinder, bought with it twice, comes first, naming it.
    let mine = recommendations_until(
        &platform,
        "/api/recommendations/me",
        Some(&ada.token),
        "ada's recommendations to count every order",
        // 2 co-purchases + 0.5 * category affinity 1 * 2 sales + 0.1 * 2 sales: every order in.
        |items| names(items) == ["Grinder", "Novel"] && items[0]["score"] == 3.2,
    )
    .await;
    assert_eq!(mine[0]["reason"], "Often bought with Espresso Machine");
    assert_eq!(mine[1]["reason"], "Popular in test");
    let product = &mine[0]["product"];
    assert_eq!(product["id"], grinder.as_str());
    assert_eq!(product["price"], json!({"amount": 5000, "currency": "USD"}));
    assert_eq!(product["category"], "test");
    // The catalog's Product, exactly.
    let catalog = platform
        .call(Method::GET, &format!("/api/products/{grinder}"), None, None)
        .await;
    let mut keys: Vec<&String> = product.as_object().unwrap().keys().collect();
    let mut catalog_keys: Vec<&String> = catalog.body.as_object().unwrap().keys().collect();
    keys.sort();
    catalog_keys.sort();
    assert_eq!(keys, catalog_keys);
    for field in ["id", "name", "description", "category", "price"] {
        assert_eq!(product[field], catalog.body[field], "{field}");
    }
    // GraphQL shows the same, reason included.
    let graphql = platform
        .graphql(
            Some(&ada.token),
            "{ recommendations(limit: 2) { score reason product { name stock } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        graphql["data"]["recommendations"][0],
        json!({"score": 3.2, "reason": "Often bought with Espresso Machine",
               "product": {"name": "Grinder", "stock": 98}}),
        "{graphql}"
    );

    // Someone who bought nothing gets the best sellers.
    let newcomer = platform.register("new@example.com").await;
    let best = recommendations_until(
        &platform,
        "/api/recommendations/me",
        Some(&newcomer.token),
        "best sellers",
        |items| !items.is_empty(),
    )
    .await;
    assert_eq!(names(&best), ["Espresso Machine", "Grinder", "Novel"]);
    assert!(
        best.iter().all(|i| i["reason"] == "Best seller"),
        "{best:?}"
    );

    // The product page (public): bought with it first, never itself.
    let page = format!("/api/products/{machine}/recommendations");
    let on_machine = platform.call(Method::GET, &page, None, None).await;
    assert_eq!(on_machine.status, 200, "{on_machine:?}");
    let items = on_machine.body.as_array().unwrap();
    assert_eq!(names(items), ["Grinder", "Novel"]);
    assert_eq!(items[0]["reason"], "Often bought with Espresso Machine");
    let one = platform
        .call(Method::GET, &format!("{page}?limit=1"), None, None)
        .await;
    assert_eq!(names(one.body.as_array().unwrap()), ["Grinder"]);

    // A deleted product is recommended no more, and has no page.
    let deleted = platform
        .call(
            Method::DELETE,
            &format!("/api/products/{novel}"),
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!(deleted.status, 204, "{deleted:?}");
    recommendations_until(
        &platform,
        &page,
        None,
        "the deletion to reach recommendations",
        |items| names(items) == ["Grinder"],
    )
    .await;
    let gone = platform
        .call(
            Method::GET,
            &format!("/api/products/{novel}/recommendations"),
            None,
            None,
        )
        .await;
    assert_eq!(gone.status, 404, "{gone:?}");
    assert_eq!(gone.code(), "NOT_FOUND");
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_field() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let product = platform.create_product(&admin, "Mug", 1200, 5).await;
    let ada = platform.register("ada@example.com").await;
    for limit in ["0", "101", "-1", "ten", "2.5"] {
        let me = platform
            .get_as(
                &format!("/api/recommendations/me?limit={limit}"),
                &ada.token,
            )
            .await;
        assert_names_limit(&me);
        let page = platform
            .call(
                Method::GET,
                &format!("/api/products/{product}/recommendations?limit={limit}"),
                None,
                None,
            )
            .await;
        assert_names_limit(&page);
    }
    let twice = platform
        .get_as("/api/recommendations/me?limit=1&limit=2", &ada.token)
        .await;
    assert_names_limit(&twice);
    let fine = platform
        .get_as("/api/recommendations/me?limit=100", &ada.token)
        .await;
    assert_eq!(fine.status, 200, "{fine:?}");
    assert_eq!(fine.body, json!([]), "nothing has sold yet");

    let anonymous = platform
        .call(Method::GET, "/api/recommendations/me", None, None)
        .await;
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    for path in [
        format!("/api/products/{}/recommendations", uuid_like()),
        "/api/products/not-an-id/recommendations".to_owned(),
    ] {
        let missing = platform.call(Method::GET, &path, None, None).await;
        assert_eq!(missing.status, 404, "{path}: {missing:?}");
        assert_eq!(missing.code(), "NOT_FOUND");
    }
}

fn uuid_like() -> &'static str {
    "0190a000-0000-7000-8000-000000000000"
}

/// The caller's notifications from the `recommendations` template.
async fn recommendation_notifications(platform: &Platform, session: &Session) -> Vec<Value> {
    let reply = platform
        .get_as("/api/notifications/me?limit=100", &session.token)
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n["template"] == "recommendations")
        .collect()
}

/// Waits until everything the recommendations service emitted so far is on the log and the
/// notifications service has consumed it.
async fn wait_for_quiet(platform: &Platform, admin: &Session) {
    platform
        .wait_for("the recommendations outbox to drain", || async {
            let metrics = platform.get("/metrics").await.text().await.unwrap();
            metrics.lines().any(|line| {
                line.strip_prefix("emporium_outbox_backlog{service=\"recommendations\"} ")
                    .and_then(|value| value.trim().parse::<f64>().ok())
                    == Some(0.0)
            })
        })
        .await;
    platform.wait_for_group(admin, "notifications").await;
}

#[tokio::test]
async fn the_recommendations_email_reaches_an_opted_in_user_once_and_not_one_who_opted_out() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let machine = platform
        .create_product(&admin, "Espresso Machine", 30000, 100)
        .await;
    let grinder = platform.create_product(&admin, "Grinder", 5000, 100).await;
    let novel = platform.create_product(&admin, "Novel", 1500, 100).await;
    let seed = platform.register("seed@example.com").await;
    buy(&platform, &seed, &[&machine, &grinder, &novel]).await;

    let ada = platform.register("ada@example.com").await;
    let bob = platform.register("bob@example.com").await;
    platform.opt_out(&admin, &bob, "recommendations").await;

    buy(&platform, &ada, &[&machine]).await;
    let sent = platform
        .poll("ada's recommendations email", || async {
            recommendation_notifications(&platform, &ada)
                .await
                .into_iter()
                .find(|n| n["status"] == "SENT")
        })
        .await;
    assert_eq!(sent["priority"], "standard");
    assert_eq!(sent["channel"], "email");
    assert_eq!(sent["subject"], "Picked for you, Test Customer");
    let mail_dir = platform.data_dir.join("mail");
    let mails: Vec<String> = std::fs::read_dir(&mail_dir)
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .filter(|m| m.contains("Picked for you") && m.contains("ada@example.com"))
        .collect();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert!(mails[0].contains("- Grinder"), "{}", mails[0]);

    // A second order within the period: counted (the grinder, now bought, leaves her list, the
    // novel is still there to recommend), and no second email once everything it could cause has
    // been delivered.
    buy(&platform, &ada, &[&grinder]).await;
    recommendations_until(
        &platform,
        "/api/recommendations/me",
        Some(&ada.token),
        "ada's second order to count",
        |items| !names(items).contains(&"Grinder"),
    )
    .await;
    wait_for_quiet(&platform, &admin).await;
    let all = recommendation_notifications(&platform, &ada).await;
    assert_eq!(all.len(), 1, "{all:?}");

    // Bob opted out: recorded as suppressed, never sent.
    buy(&platform, &bob, &[&machine]).await;
    platform
        .poll("bob's suppressed recommendations", || async {
            recommendation_notifications(&platform, &bob)
                .await
                .into_iter()
                .find(|n| n["status"] == "SUPPRESSED")
        })
        .await;
    wait_for_quiet(&platform, &admin).await;
    let bobs = recommendation_notifications(&platform, &bob).await;
    assert_eq!(bobs.len(), 1, "{bobs:?}");
    assert_eq!(bobs[0]["status"], "SUPPRESSED");
}
