//! The admin's operations endpoints: events, stats, dead letters.

use emporium_platform::bus::{Delivery, EventBus, OutboxLog, Record, dlq};
use serde_json::json;

use crate::support::{ADMIN_EMAIL, ADMIN_PASSWORD, Platform};

#[tokio::test]
async fn dead_letters_are_listed_replayed_and_deleted_over_http() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = OutboxLog::open(&dir.path().join("events.db"), 8)
            .await
            .unwrap();
        let delivery = Delivery {
            partition: 1,
            offset: 4,
            appended_at: chrono::Utc::now(),
            // A real event (for a product nobody knows), so that replaying it harms no consumer.
            record: Record::from_envelope(&emporium_events::Envelope::new(
                "catalog",
                "c-1",
                None,
                emporium_events::Event::ProductDeleted(emporium_events::ProductDeleted {
                    product_id: uuid::Uuid::now_v7(),
                }),
            ))
            .unwrap()
            .into(),
            decoded: None,
        };
        log.publish(&[dlq::dead_letter_record(&delivery, "inventory", "kaput", 3)])
            .await
            .unwrap();
    }
    let platform = Platform::start_in(
        dir.path(),
        &[
            ("EMPORIUM_ADMIN_EMAIL", ADMIN_EMAIL),
            ("EMPORIUM_ADMIN_PASSWORD", ADMIN_PASSWORD),
        ],
    )
    .await;
    let admin = platform.admin().await;
    let customer = platform.register("nosy@example.com").await;
    assert_eq!(
        platform
            .get_as("/api/admin/dlq", &customer.token)
            .await
            .status,
        403
    );
    assert_eq!(
        platform
            .call(reqwest::Method::GET, "/api/admin/dlq", None, None)
            .await
            .status,
        401
    );

    let letters = platform
        .poll("the dead letter to be collected", || async {
            let letters = platform.get_as("/api/admin/dlq", &admin.token).await.body;
            letters
                .as_array()
                .is_some_and(|l| !l.is_empty())
                .then_some(letters)
        })
        .await;
    let letter = &letters[0];
    assert_eq!(letter["topic"], "product-events");
    assert_eq!(letter["group"], "inventory");
    assert_eq!(letter["error"], "kaput");
    assert_eq!(letter["attempts"], 3);
    assert_eq!(letter["eventType"], "ProductDeleted");
    let id = letter["id"].as_str().unwrap().to_owned();
    let stats = platform.get_as("/api/admin/stats", &admin.token).await;
    assert_eq!(stats.body["deadLetters"], 1, "{stats:?}");

    let replayed = platform
        .post_as(
            &format!("/api/admin/dlq/{id}/replay"),
            Some(&admin.token),
            json!({}),
        )
        .await;
    assert_eq!(replayed.status, 200, "{replayed:?}");
    assert!(replayed.body["replayedAt"].is_string());
    let stats = platform.get_as("/api/admin/stats", &admin.token).await;
    assert_eq!(
        stats.body["deadLetters"], 0,
        "a replayed letter is no longer pending"
    );

    let deleted = platform
        .call(
            reqwest::Method::DELETE,
            &format!("/api/admin/dlq/{id}"),
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!(deleted.status, 204);
    let again = platform
        .call(
            reqwest::Method::DELETE,
            &format!("/api/admin/dlq/{id}"),
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!(again.status, 404);
    assert_eq!(again.code(), "NOT_FOUND");
    let unknown = platform
        .post_as("/api/admin/dlq/nope/replay", Some(&admin.token), json!({}))
        .await;
    assert_eq!(unknown.status, 404);
}

#[tokio::test]
async fn events_are_listed_by_aggregate_and_type_and_bad_filters_are_400() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let customer = platform.register("listed@example.com").await;
    let events = platform
        .poll("UserRegistered in the index", || async {
            let events = platform
                .get_as(
                    &format!("/api/admin/events?aggregateId={}", customer.user_id),
                    &admin.token,
                )
                .await
                .body;
            events
                .as_array()
                .is_some_and(|e| !e.is_empty())
                .then_some(events)
        })
        .await;
    assert_eq!(events[0]["eventType"], "UserRegistered");
    assert_eq!(events[0]["aggregateId"], customer.user_id.as_str());
    assert_eq!(events[0]["version"], 1);
    let by_type = platform
        .get_as(
            "/api/admin/events?type=UserRegistered&limit=5",
            &admin.token,
        )
        .await;
    assert!(
        by_type
            .body
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["eventType"] == "UserRegistered")
    );
    let bad_type = platform
        .get_as("/api/admin/events?type=Nonsense", &admin.token)
        .await;
    assert_eq!(
        (bad_type.status, bad_type.fields()),
        (400, vec!["type".to_owned()])
    );
    let bad_limit = platform
        .get_as("/api/admin/events?limit=0", &admin.token)
        .await;
    assert_eq!(
        (bad_limit.status, bad_limit.fields()),
        (400, vec!["limit".to_owned()])
    );
    assert_eq!(
        platform
            .get_as("/api/admin/events", &customer.token)
            .await
            .status,
        403
    );
}
