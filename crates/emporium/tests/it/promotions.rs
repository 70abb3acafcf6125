//! End-to-end tests of the promotions service and its marketing delivery, through the gateway:
//! launched on time to opted-in users once, and not again after a restart; a launch that fell due
//! while the platform was down happens once when it is back.

use std::path::Path;

use chrono::{DateTime, TimeDelta, Utc};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{ADMIN_EMAIL, ADMIN_PASSWORD, Platform, Reply, Session};

const ADMIN_ENV: [(&str, &str); 2] = [
    ("EMPORIUM_ADMIN_EMAIL", ADMIN_EMAIL),
    ("EMPORIUM_ADMIN_PASSWORD", ADMIN_PASSWORD),
];

async fn create(platform: &Platform, admin: &Session, body: Value) -> Reply {
    platform
        .post_as("/api/promotions", Some(&admin.token), body)
        .await
}

/// Creates a promotion that launches at `starts_at`; returns its id.
async fn promotion_at(
    platform: &Platform,
    admin: &Session,
    name: &str,
    starts_at: DateTime<Utc>,
) -> String {
    let reply = create(
        platform,
        admin,
        json!({"name": name, "message": format!("{name}: every mug 20% off."), "startsAt": starts_at.to_rfc3339()}),
    )
    .await;
    assert_eq!(reply.status, 201, "{reply:?}");
    let id = reply.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        reply.headers["location"].to_str().unwrap(),
        format!("/api/promotions/{id}")
    );
    assert_eq!(reply.body["status"], "SCHEDULED");
    id
}

/// The caller's notifications from the `promotion` template with `subject`.
async fn promotions_of(platform: &Platform, session: &Session, subject: &str) -> Vec<Value> {
    let reply = platform
        .get_as("/api/notifications/me?limit=100", &session.token)
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["template"] == "promotion" && n["subject"] == subject)
        .cloned()
        .collect()
}

/// Waits until the caller has a `promotion` notification with `subject` and `status`.
async fn wait_for_promotion(platform: &Platform, session: &Session, subject: &str, status: &str) {
    platform
        .wait_for(&format!("{subject} to be {status}"), || async {
            promotions_of(platform, session, subject)
                .await
                .iter()
                .any(|n| n["status"] == status)
        })
        .await;
}

/// Waits until the caller's welcome is sent: notifications knows them as a contact.
async fn wait_for_welcome(platform: &Platform, session: &Session) {
    platform
        .wait_for("the welcome", || async {
            let reply = platform
                .get_as("/api/notifications/me", &session.token)
                .await;
            reply.body["items"].as_array().is_some_and(|items| {
                items
                    .iter()
                    .any(|n| n["template"] == "welcome" && n["status"] == "SENT")
            })
        })
        .await;
}

/// The `PromotionLaunched` events of a promotion, as stored in the log.
async fn launches(platform: &Platform, admin: &Session, id: &str) -> Vec<Value> {
    let reply = platform
        .get_as(
            &format!("/api/admin/events?aggregateId={id}&type=PromotionLaunched"),
            &admin.token,
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body.as_array().unwrap().clone()
}

/// `.eml` files with `subject`, by recipient address (one entry per file).
fn mails_with(data_dir: &Path, subject: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("mail")) else {
        return Vec::new();
    };
    let mut to: Vec<String> = entries
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter(|mail| mail.contains(&format!("\r\nSubject: {subject}\r\n")))
        .filter_map(|mail| {
            mail.split("\r\n")
                .find_map(|line| line.strip_prefix("To: ").map(str::to_owned))
        })
        .collect();
    to.sort();
    to
}

fn in_millis(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap()
}

async fn login(platform: &Platform, email: &str) -> Session {
    let reply = platform
        .post_as(
            "/api/auth/login",
            None,
            json!({"email": email, "password": "correct-horse-battery"}),
        )
        .await;
    assert_eq!(reply.status, 200, "login {email}: {reply:?}");
    Session {
        token: reply.body["accessToken"].as_str().unwrap().to_owned(),
        user_id: reply.body["user"]["id"].as_str().unwrap().to_owned(),
    }
}

#[tokio::test]
async fn a_promotion_reaches_each_opted_in_user_once_and_is_not_sent_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let platform = Platform::start_in(dir.path(), &ADMIN_ENV).await;
    let admin = platform.admin().await;
    let ada = platform.register("ada@example.com").await;
    let bob = platform.register("bob@example.com").await;
    wait_for_welcome(&platform, &ada).await;
    wait_for_welcome(&platform, &bob).await;
    platform.opt_out(&admin, &bob, "promotions").await;

    // Whole milliseconds: what the service keeps of a time.
    let starts_at = in_millis(Utc::now() + TimeDelta::seconds(1));
    let spring = promotion_at(&platform, &admin, "Spring sale", starts_at).await;
    wait_for_promotion(&platform, &ada, "Spring sale", "SENT").await;
    wait_for_promotion(&platform, &bob, "Spring sale", "SUPPRESSED").await;
    let launched = launches(&platform, &admin, &spring).await;
    assert_eq!(launched.len(), 1, "{launched:?}");
    let scheduled_for: DateTime<Utc> = launched[0]["payload"]["scheduledFor"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(scheduled_for, starts_at);
    let occurred_at: DateTime<Utc> = launched[0]["occurredAt"].as_str().unwrap().parse().unwrap();
    assert!(
        occurred_at >= starts_at,
        "launched at {occurred_at}, not before its time"
    );
    let view = platform
        .get_as(&format!("/api/promotions/{spring}"), &admin.token)
        .await;
    assert_eq!(view.body["status"], "LAUNCHED", "{view:?}");
    assert!(view.body["lastLaunchedAt"].is_string() && view.body["nextLaunchAt"].is_null());

    assert!(platform.terminate().await.success());
    let platform = Platform::start_in(dir.path(), &ADMIN_ENV).await;
    let admin = platform.admin().await;
    let ada = login(&platform, "ada@example.com").await;
    let bob = login(&platform, "bob@example.com").await;
    // A second promotion launched after the restart: once it has arrived, the scheduler has
    // looked at the table since the restart and would have launched the first one again by now.
    promotion_at(&platform, &admin, "Summer sale", Utc::now()).await;
    wait_for_promotion(&platform, &ada, "Summer sale", "SENT").await;

    assert_eq!(launches(&platform, &admin, &spring).await.len(), 1);
    let adas = promotions_of(&platform, &ada, "Spring sale").await;
    assert_eq!(adas.len(), 1, "{adas:?}");
    assert_eq!(adas[0]["priority"], "marketing");
    assert_eq!(adas[0]["channel"], "email");
    let bobs = promotions_of(&platform, &bob, "Spring sale").await;
    assert_eq!(bobs.len(), 1, "{bobs:?}");
    assert_eq!(bobs[0]["status"], "SUPPRESSED");
    assert_eq!(
        mails_with(dir.path(), "Spring sale"),
        ["ada@example.com", ADMIN_EMAIL],
        "one email to each opted-in user (the admin is one), none to bob"
    );
}

#[tokio::test]
async fn a_promotion_that_fell_due_while_the_platform_was_down_launches_once_when_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let platform = Platform::start_in(dir.path(), &ADMIN_ENV).await;
    let admin = platform.admin().await;
    let ada = platform.register("ada@example.com").await;
    wait_for_welcome(&platform, &ada).await;
    let starts_at = in_millis(Utc::now() + TimeDelta::seconds(4));
    let flash = promotion_at(&platform, &admin, "Flash sale", starts_at).await;
    assert!(platform.terminate().await.success());

    // Down until it is due (a known instant, so waiting for it guesses nothing).
    while Utc::now() <= starts_at {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let restarted_at = Utc::now();
    let platform = Platform::start_in(dir.path(), &ADMIN_ENV).await;
    let admin = platform.admin().await;
    let ada = login(&platform, "ada@example.com").await;
    wait_for_promotion(&platform, &ada, "Flash sale", "SENT").await;
    promotion_at(&platform, &admin, "Later sale", Utc::now()).await;
    wait_for_promotion(&platform, &ada, "Later sale", "SENT").await;

    let launched = launches(&platform, &admin, &flash).await;
    assert_eq!(launched.len(), 1, "{launched:?}");
    let occurred_at: DateTime<Utc> = launched[0]["occurredAt"].as_str().unwrap().parse().unwrap();
    assert!(
        occurred_at >= restarted_at,
        "launched by the second run ({occurred_at}), not before the stop"
    );
    assert_eq!(
        launched[0]["payload"]["scheduledFor"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        starts_at
    );
    assert_eq!(promotions_of(&platform, &ada, "Flash sale").await.len(), 1);
}

#[tokio::test]
async fn promotions_are_for_admins_and_bad_fields_are_named() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let customer = platform.register("carol@example.com").await;
    let body = json!({"name": "Spring sale", "message": "Every mug 20% off."});

    let anonymous = platform
        .post_as("/api/promotions", None, body.clone())
        .await;
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    let forbidden = platform
        .post_as("/api/promotions", Some(&customer.token), body.clone())
        .await;
    assert_eq!(forbidden.status, 403, "{forbidden:?}");
    assert_eq!(
        platform
            .call(Method::GET, "/api/promotions", None, None)
            .await
            .status,
        401
    );
    assert_eq!(
        platform
            .get_as("/api/promotions", &customer.token)
            .await
            .status,
        403
    );

    let bad = create(
        &platform,
        &admin,
        json!({"name": "", "message": "m", "productIds": ["not-an-id"], "startsAt": "next tuesday", "cron": "every day"}),
    )
    .await;
    assert_eq!(bad.status, 400, "{bad:?}");
    assert_eq!(bad.code(), "VALIDATION_ERROR");
    assert_eq!(bad.fields(), ["name", "productIds", "startsAt", "cron"]);
    let missing = create(&platform, &admin, json!({"name": "x"})).await;
    assert_eq!(
        (missing.status, missing.fields()),
        (400, vec!["message".to_owned()])
    );
    let too_long = create(
        &platform,
        &admin,
        json!({"name": "x", "message": "m".repeat(2001)}),
    )
    .await;
    assert_eq!(
        (too_long.status, too_long.fields()),
        (400, vec!["message".to_owned()])
    );

    let weekly = create(
        &platform,
        &admin,
        json!({"name": "Mondays", "message": "Mugs on Monday.", "cron": "0 9 * * MON",
               "startsAt": "2030-01-01T00:00:00Z", "category": "kitchen"}),
    )
    .await;
    assert_eq!(weekly.status, 201, "{weekly:?}");
    // 2030-01-07 is the first Monday of the schedule.
    assert_eq!(weekly.body["nextLaunchAt"], "2030-01-07T09:00:00Z");
    assert_eq!(weekly.body["status"], "SCHEDULED");
    assert_eq!(weekly.body["cron"], "0 9 * * MON");
    assert_eq!(weekly.body["category"], "kitchen");
    assert_eq!(weekly.body["productIds"], json!([]));
    let id = weekly.body["id"].as_str().unwrap();
    let one = platform
        .get_as(&format!("/api/promotions/{id}"), &admin.token)
        .await;
    assert_eq!((one.status, &one.body), (200, &weekly.body));
    assert_eq!(
        platform
            .get_as(&format!("/api/promotions/{id}"), &customer.token)
            .await
            .status,
        403
    );
    let list = platform
        .get_as("/api/promotions?limit=10", &admin.token)
        .await;
    assert_eq!(list.status, 200, "{list:?}");
    assert_eq!(list.body["items"][0]["id"], id);
    let unknown = platform
        .get_as(
            "/api/promotions/0190f0a4-0000-7000-8000-000000000000",
            &admin.token,
        )
        .await;
    assert_eq!(unknown.status, 404, "{unknown:?}");
    let bad_limit = platform
        .get_as("/api/promotions?limit=0", &admin.token)
        .await;
    assert_eq!(
        (bad_limit.status, bad_limit.fields()),
        (400, vec!["limit".to_owned()])
    );
}
