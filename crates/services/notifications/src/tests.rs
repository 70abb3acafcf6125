//! Store- and handler-level tests on a real database: the handler writes rows, the dispatcher
//! sends them in priority order. Each test runs on SQLite (`sqlite::…`) and on PostgreSQL
//! (`postgres::…`) when `EMPORIUM_TEST_DATABASE_URL` names a server
//! ([`emporium_platform::on_both_backends`]).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use emporium_events::{
    Channel, Envelope, Event, LowStock, Money, OrderConfirmed, Preferences, Priority,
    ProductCreated, Role, UserRegistered, UserUpdated,
};
use emporium_platform::{
    bus::consumer::EventHandler,
    storage::{Db, EventContext, query, testing::TestDb},
};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::{
    NAME,
    consumers::Handler,
    dispatch::{Dispatcher, Pace},
    domain::Status,
    sender::{Outgoing, Sender, Senders},
    store::{self, NewNotification},
};

emporium_platform::on_both_backends!(
    NAME,
    store::MIGRATIONS;
    the_dispatcher_serves_critical_then_standard_then_marketing,
    a_claimed_notification_is_not_taken_twice,
    registering_queues_a_welcome_that_the_dispatcher_sends,
    an_order_update_to_a_user_who_opted_out_is_stored_suppressed_and_never_sent,
    an_order_update_is_critical_by_email_and_sms_when_the_user_has_a_phone,
    the_same_event_handled_twice_makes_one_notification_per_channel,
    an_order_event_that_arrives_before_the_user_waits_for_the_contact,
    a_later_profile_update_changes_the_contact_and_an_older_one_does_not,
    low_stock_goes_to_every_admin_with_the_product_name,
    a_template_that_no_longer_renders_fails_the_notification_with_an_event,
    a_failing_sender_is_retried_then_the_notification_fails_with_an_event,
    seeding_again_keeps_an_admins_edit_and_restores_nothing_else,
    the_dispatcher_loop_ends_when_told_to_stop,
    a_promoted_account_is_not_welcomed_twice,
    a_launched_promotion_reaches_every_opted_in_contact_once_and_no_one_else,
    marketing_beyond_the_limit_is_suppressed_until_the_window_has_passed,
    marketing_a_user_opted_out_of_does_not_use_up_their_limit,
);

/// A test's database with the templates seeded, as the service seeds them at start.
struct Seeded {
    db: TestDb,
}

async fn seeded(db: TestDb) -> Seeded {
    let mut tx = db.begin(EventContext::request(NAME, "test")).await.unwrap();
    store::seed_templates(tx.conn()).await.unwrap();
    tx.commit().await.unwrap();
    Seeded { db }
}

/// Applies `envelope` as the consumer would, in its own transaction, bypassing the inbox (so a
/// second call shows what the unique key alone does).
async fn handle(db: &Db, envelope: &Envelope) {
    let mut tx = db
        .begin(EventContext::caused_by(NAME, envelope))
        .await
        .unwrap();
    Handler::default().handle(&mut tx, envelope).await.unwrap();
    tx.commit().await.unwrap();
}

fn envelope(event: Event) -> Envelope {
    Envelope::new("test", "corr-1", None, event)
}

fn registered(user_id: Uuid, role: Role, phone: Option<&str>, prefs: Preferences) -> Envelope {
    envelope(Event::UserRegistered(UserRegistered {
        user_id,
        email: format!("{}@example.com", &user_id.simple().to_string()[24..]),
        name: "Ada".into(),
        phone: phone.map(str::to_owned),
        role,
        preferences: prefs,
    }))
}

fn confirmed(user_id: Uuid) -> Envelope {
    envelope(Event::OrderConfirmed(OrderConfirmed {
        order_id: Uuid::now_v7(),
        user_id,
        total: Money::new(2598, "USD"),
    }))
}

/// (template, channel, status, subject) of every notification, oldest first.
async fn rows(db: &Db) -> Vec<(String, String, String, String)> {
    query("SELECT template, channel, status, subject FROM notifications ORDER BY id")
        .fetch_all(&mut db.reader().await.unwrap())
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get::<Option<String>>(0).unwrap().unwrap_or_default(),
                r.get(1).unwrap(),
                r.get(2).unwrap(),
                r.get(3).unwrap(),
            )
        })
        .collect()
}

/// Event types in the outbox, in order.
async fn outbox(db: &Db) -> Vec<Envelope> {
    query("SELECT payload FROM outbox ORDER BY id")
        .scalars::<Vec<u8>>(&mut db.reader().await.unwrap())
        .await
        .unwrap()
        .iter()
        .map(|payload| Envelope::from_json(payload).unwrap())
        .collect()
}

/// A sender that records what it was asked to send, and can be told to fail.
#[derive(Default)]
struct Recorder {
    sent: Mutex<Vec<Outgoing>>,
    fail: bool,
}

#[async_trait]
impl Sender for Recorder {
    async fn send(&self, message: &Outgoing) -> Result<(), String> {
        self.sent.lock().unwrap().push(message.clone());
        if self.fail {
            Err("mailbox unavailable".into())
        } else {
            Ok(())
        }
    }
}

fn dispatcher(db: &Db, recorder: Arc<Recorder>, pace: Pace) -> Dispatcher {
    Dispatcher {
        db: db.clone(),
        senders: Senders {
            email: recorder.clone(),
            sms: recorder.clone(),
            push: recorder,
        },
        wake: Arc::new(Notify::new()),
        pace,
    }
}

fn queued(priority: Priority, subject: &str) -> NewNotification {
    NewNotification {
        id: Uuid::now_v7(),
        dedupe_key: None,
        event_id: None,
        correlation_id: "corr".into(),
        user_id: None,
        channel: Channel::Email,
        priority,
        template: None,
        recipient: "ada@example.com".into(),
        subject: subject.into(),
        body: "body".into(),
        status: Status::Queued,
        error: None,
    }
}

async fn the_dispatcher_serves_critical_then_standard_then_marketing(db: TestDb) {
    let t = seeded(db).await;
    let mut tx = t.db.begin(EventContext::request(NAME, "t")).await.unwrap();
    for (priority, subject) in [
        (Priority::Marketing, "marketing"),
        (Priority::Standard, "standard"),
        (Priority::Critical, "critical"),
    ] {
        assert!(
            store::insert_notification(tx.conn(), &queued(priority, subject))
                .await
                .unwrap()
        );
    }
    tx.commit().await.unwrap();

    let now = chrono::Utc::now().timestamp_millis();
    let due = store::due(&mut t.db.reader().await.unwrap(), now, 10)
        .await
        .unwrap();
    let subjects: Vec<&str> = due.iter().map(|d| d.subject.as_str()).collect();
    assert_eq!(subjects, ["critical", "standard", "marketing"]);

    let recorder = Arc::new(Recorder::default());
    let taken = dispatcher(&t.db, recorder.clone(), Pace::default())
        .dispatch_due()
        .await
        .unwrap();
    assert_eq!(taken, 3);
    let sent: Vec<String> = recorder
        .sent
        .lock()
        .unwrap()
        .iter()
        .map(|m| m.subject.clone())
        .collect();
    assert_eq!(sent, ["critical", "standard", "marketing"]);
    assert!(
        rows(&t.db)
            .await
            .iter()
            .all(|(_, _, status, _)| status == "SENT")
    );
    let events = outbox(&t.db).await;
    let types: Vec<&str> = events.iter().map(|e| e.event.event_type()).collect();
    assert_eq!(types, ["NotificationSent"; 3]);
    assert!(events.iter().all(|e| e.correlation_id == "corr"));
    // Nothing is left to send.
    assert!(
        store::due(&mut t.db.reader().await.unwrap(), now + 1_000_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_claimed_notification_is_not_taken_twice(db: TestDb) {
    let t = seeded(db).await;
    let n = queued(Priority::Critical, "once");
    let mut tx = t.db.begin(EventContext::request(NAME, "t")).await.unwrap();
    store::insert_notification(tx.conn(), &n).await.unwrap();
    let now = chrono::Utc::now().timestamp_millis() + 1;
    assert!(
        store::claim(tx.conn(), n.id, now, now + 60_000)
            .await
            .unwrap()
    );
    assert!(
        !store::claim(tx.conn(), n.id, now, now + 60_000)
            .await
            .unwrap()
    );
    // After the lease it can be taken again (the first dispatcher died).
    assert!(
        store::claim(tx.conn(), n.id, now + 60_000, now + 120_000)
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();
}

async fn registering_queues_a_welcome_that_the_dispatcher_sends(db: TestDb) {
    let t = seeded(db).await;
    let user = Uuid::now_v7();
    handle(
        &t.db,
        &registered(user, Role::Customer, None, Preferences::default()),
    )
    .await;
    assert_eq!(
        rows(&t.db).await,
        [(
            "welcome".into(),
            "email".into(),
            "QUEUED".into(),
            "Welcome to Emporium, Ada!".into()
        )]
    );
    let recorder = Arc::new(Recorder::default());
    dispatcher(&t.db, recorder.clone(), Pace::default())
        .dispatch_due()
        .await
        .unwrap();
    assert_eq!(rows(&t.db).await[0].2, "SENT");
    let sent = recorder.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].body.starts_with("Hello Ada,"), "{}", sent[0].body);
}

async fn an_order_update_to_a_user_who_opted_out_is_stored_suppressed_and_never_sent(db: TestDb) {
    let t = seeded(db).await;
    let user = Uuid::now_v7();
    let off = Preferences {
        order_updates: false,
        ..Preferences::default()
    };
    handle(
        &t.db,
        &registered(user, Role::Customer, Some("+15550100"), off),
    )
    .await;
    handle(&t.db, &confirmed(user)).await;
    let all = rows(&t.db).await;
    let order: Vec<_> = all
        .iter()
        .filter(|(template, ..)| template == "order_confirmed")
        .collect();
    assert_eq!(order.len(), 2, "email and sms: {all:?}");
    assert!(order.iter().all(|(_, _, status, _)| status == "SUPPRESSED"));

    let recorder = Arc::new(Recorder::default());
    dispatcher(&t.db, recorder.clone(), Pace::default())
        .dispatch_due()
        .await
        .unwrap();
    let sent = recorder.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1, "only the welcome: {sent:?}");
}

async fn an_order_update_is_critical_by_email_and_sms_when_the_user_has_a_phone(db: TestDb) {
    let t = seeded(db).await;
    let user = Uuid::now_v7();
    handle(
        &t.db,
        &registered(
            user,
            Role::Customer,
            Some("+1 555 0100"),
            Preferences::default(),
        ),
    )
    .await;
    handle(&t.db, &confirmed(user)).await;
    let recorder = Arc::new(Recorder::default());
    dispatcher(&t.db, recorder.clone(), Pace::default())
        .dispatch_due()
        .await
        .unwrap();
    let sent = recorder.sent.lock().unwrap().clone();
    let channels: Vec<Channel> = sent.iter().map(|m| m.channel).collect();
    // The critical ones first, though the welcome was queued before them.
    assert_eq!(channels, [Channel::Email, Channel::Sms, Channel::Email]);
    assert!(sent[0].body.contains("25.98 USD"), "{}", sent[0].body);
    assert_eq!(sent[1].recipient, "+15550100");
    assert_eq!(sent[2].subject, "Welcome to Emporium, Ada!");
}

async fn the_same_event_handled_twice_makes_one_notification_per_channel(db: TestDb) {
    let t = seeded(db).await;
    let user = Uuid::now_v7();
    let welcome = registered(
        user,
        Role::Customer,
        Some("+15550100"),
        Preferences::default(),
    );
    let order = confirmed(user);
    for _ in 0..2 {
        handle(&t.db, &welcome).await;
        handle(&t.db, &order).await;
    }
    let all = rows(&t.db).await;
    let count = |template: &str| all.iter().filter(|r| r.0 == template).count();
    assert_eq!(count("welcome"), 1, "{all:?}");
    assert_eq!(count("order_confirmed"), 2, "one email, one sms: {all:?}");
}

async fn an_order_event_that_arrives_before_the_user_waits_for_the_contact(db: TestDb) {
    let t = seeded(db).await;
    let user = Uuid::now_v7();
    handle(&t.db, &confirmed(user)).await;
    assert!(rows(&t.db).await.is_empty());
    handle(
        &t.db,
        &registered(user, Role::Customer, None, Preferences::default()),
    )
    .await;
    let templates: Vec<String> = rows(&t.db).await.into_iter().map(|r| r.0).collect();
    assert_eq!(templates, ["welcome", "order_confirmed"]);
    // Parked once, applied once.
    let parked: i64 = query("SELECT COUNT(*) FROM parked_events")
        .scalar(&mut t.db.reader().await.unwrap())
        .await
        .unwrap();
    assert_eq!(parked, 0);
}

async fn a_later_profile_update_changes_the_contact_and_an_older_one_does_not(db: TestDb) {
    let t = seeded(db).await;
    let user = Uuid::now_v7();
    handle(
        &t.db,
        &registered(user, Role::Admin, None, Preferences::default()),
    )
    .await;
    let update = |email: &str, at: i64| {
        let mut e = envelope(Event::UserUpdated(UserUpdated {
            user_id: user,
            email: email.into(),
            name: "Ada L.".into(),
            phone: None,
            preferences: Preferences::default(),
        }));
        e.occurred_at = chrono::DateTime::from_timestamp_millis(at).unwrap();
        e
    };
    let now = chrono::Utc::now().timestamp_millis();
    handle(&t.db, &update("new@example.com", now + 10_000)).await;
    handle(&t.db, &update("old@example.com", now + 5_000)).await;
    let mut conn = t.db.reader().await.unwrap();
    let contact = store::contact(&mut conn, user).await.unwrap().unwrap();
    assert_eq!(contact.email, "new@example.com");
    assert_eq!(contact.role, Role::Admin, "an update keeps the role");
}

async fn low_stock_goes_to_every_admin_with_the_product_name(db: TestDb) {
    let t = seeded(db).await;
    let (admin1, admin2, customer) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    handle(
        &t.db,
        &registered(admin1, Role::Admin, None, Preferences::default()),
    )
    .await;
    handle(
        &t.db,
        &registered(admin2, Role::Admin, None, Preferences::default()),
    )
    .await;
    handle(
        &t.db,
        &registered(customer, Role::Customer, None, Preferences::default()),
    )
    .await;
    let product_id = Uuid::now_v7();
    handle(
        &t.db,
        &envelope(Event::ProductCreated(ProductCreated {
            product_id,
            name: "Teapot".into(),
            description: None,
            category: "kitchen".into(),
            price: Money::new(100, "USD"),
            initial_stock: 3,
        })),
    )
    .await;
    handle(
        &t.db,
        &envelope(Event::LowStock(LowStock {
            product_id,
            available: 1,
            threshold: 2,
        })),
    )
    .await;
    let recipients: Vec<String> =
        query("SELECT user_id FROM notifications WHERE template = 'low_stock' ORDER BY user_id")
            .scalars(&mut t.db.reader().await.unwrap())
            .await
            .unwrap();
    let mut admins = vec![admin1.to_string(), admin2.to_string()];
    admins.sort();
    assert_eq!(recipients, admins);
    let low: Vec<_> = rows(&t.db)
        .await
        .into_iter()
        .filter(|r| r.0 == "low_stock")
        .collect();
    assert!(low.iter().all(|r| r.3 == "Low stock: Teapot"), "{low:?}");
}

async fn a_template_that_no_longer_renders_fails_the_notification_with_an_event(db: TestDb) {
    let t = seeded(db).await;
    let mut tx = t.db.begin(EventContext::request(NAME, "t")).await.unwrap();
    store::put_template(tx.conn(), "welcome", "Hi {{ nickname }}", "b")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let user = Uuid::now_v7();
    handle(
        &t.db,
        &registered(user, Role::Customer, None, Preferences::default()),
    )
    .await;
    assert_eq!(rows(&t.db).await[0].2, "FAILED");
    let events = outbox(&t.db).await;
    assert_eq!(events.len(), 1);
    match &events[0].event {
        Event::NotificationFailed(e) => {
            assert!(
                e.error.contains("nickname") || e.error.contains("undefined"),
                "{}",
                e.error
            );
            assert_eq!(e.user_id, Some(user));
        }
        other => panic!("unexpected {other:?}"),
    }
}

async fn a_failing_sender_is_retried_then_the_notification_fails_with_an_event(db: TestDb) {
    let t = seeded(db).await;
    let mut tx = t.db.begin(EventContext::request(NAME, "t")).await.unwrap();
    store::insert_notification(tx.conn(), &queued(Priority::Standard, "doomed"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let recorder = Arc::new(Recorder {
        fail: true,
        ..Recorder::default()
    });
    let pace = Pace {
        max_attempts: 2,
        backoff: Duration::ZERO,
        ..Pace::default()
    };
    let d = dispatcher(&t.db, recorder.clone(), pace);
    d.dispatch_due().await.unwrap();
    assert_eq!(rows(&t.db).await[0].2, "QUEUED", "one retry left");
    assert!(outbox(&t.db).await.is_empty());
    // The retry is due at once (zero backoff); wait out the same millisecond.
    tokio::time::sleep(Duration::from_millis(2)).await;
    d.dispatch_due().await.unwrap();
    assert_eq!(rows(&t.db).await[0].2, "FAILED");
    assert_eq!(recorder.sent.lock().unwrap().len(), 2);
    let events = outbox(&t.db).await;
    assert_eq!(events.len(), 1);
    assert!(
        matches!(&events[0].event, Event::NotificationFailed(e) if e.error == "mailbox unavailable")
    );
}

async fn seeding_again_keeps_an_admins_edit_and_restores_nothing_else(db: TestDb) {
    let t = seeded(db).await;
    let mut tx = t.db.begin(EventContext::request(NAME, "t")).await.unwrap();
    let (_, created) = store::put_template(tx.conn(), "welcome", "Hey {{ name }}", "Body")
        .await
        .unwrap();
    assert!(!created);
    store::seed_templates(tx.conn()).await.unwrap();
    let welcome = store::template(tx.conn(), "welcome")
        .await
        .unwrap()
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(welcome.subject, "Hey {{ name }}");
    assert!(welcome.shipped);
}

async fn the_dispatcher_loop_ends_when_told_to_stop(db: TestDb) {
    let t = seeded(db).await;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(
        dispatcher(&t.db, Arc::new(Recorder::default()), Pace::default()).run(stop_rx),
    );
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the loop stopped")
        .unwrap();
}

async fn a_promoted_account_is_not_welcomed_twice(db: TestDb) {
    let t = seeded(db).await;
    let user = Uuid::now_v7();
    handle(
        &t.db,
        &registered(user, Role::Customer, None, Preferences::default()),
    )
    .await;
    // The admin bootstrap promoting the same account announces it again as an admin.
    handle(
        &t.db,
        &registered(user, Role::Admin, None, Preferences::default()),
    )
    .await;
    let welcomes = rows(&t.db)
        .await
        .into_iter()
        .filter(|(template, ..)| template == "welcome")
        .count();
    assert_eq!(welcomes, 1);
    let mut conn = t.db.reader().await.unwrap();
    let contact = store::contact(&mut conn, user).await.unwrap().unwrap();
    assert_eq!(
        contact.role,
        Role::Admin,
        "the contact is updated all the same"
    );
}

// ---------------------------------------------------------------- marketing

fn launched(name: &str) -> Envelope {
    envelope(Event::PromotionLaunched(
        emporium_events::PromotionLaunched {
            promotion_id: Uuid::now_v7(),
            name: name.into(),
            message: "Every mug 20% off.".into(),
            product_ids: vec![],
            category: None,
            scheduled_for: chrono::Utc::now(),
        },
    ))
}

/// (user id, status) of every `promotion` notification, by user then age.
async fn promotions(db: &Db) -> Vec<(String, String)> {
    query(
        "SELECT user_id, status FROM notifications WHERE template = 'promotion'
         ORDER BY user_id, id",
    )
    .fetch_all(&mut db.reader().await.unwrap())
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0).unwrap(), r.get(1).unwrap()))
    .collect()
}

async fn a_launched_promotion_reaches_every_opted_in_contact_once_and_no_one_else(db: TestDb) {
    let t = seeded(db).await;
    let mut users = [Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7()];
    users.sort();
    let [customer, admin, opted_out] = users;
    let off = Preferences {
        promotions: false,
        ..Preferences::default()
    };
    handle(
        &t.db,
        &registered(
            customer,
            Role::Customer,
            Some("+15550100"),
            Preferences::default(),
        ),
    )
    .await;
    handle(
        &t.db,
        &registered(admin, Role::Admin, None, Preferences::default()),
    )
    .await;
    handle(&t.db, &registered(opted_out, Role::Customer, None, off)).await;

    let launch = launched("Spring sale");
    // Delivered twice (the inbox is bypassed here): the unique key alone keeps it to one each.
    handle(&t.db, &launch).await;
    handle(&t.db, &launch).await;
    assert_eq!(
        promotions(&t.db).await,
        [
            (customer.to_string(), "QUEUED".to_owned()),
            (admin.to_string(), "QUEUED".to_owned()),
            (opted_out.to_string(), "SUPPRESSED".to_owned()),
        ],
        "one each, by email only; the opted-out user's is kept suppressed, as other gates do"
    );

    let recorder = Arc::new(Recorder::default());
    dispatcher(&t.db, recorder.clone(), Pace::default())
        .dispatch_due()
        .await
        .unwrap();
    let sent: Vec<Outgoing> = recorder
        .sent
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m.subject == "Spring sale")
        .cloned()
        .collect();
    let mut to: Vec<&str> = sent.iter().map(|m| m.recipient.as_str()).collect();
    to.sort_unstable();
    let email = |id: Uuid| format!("{}@example.com", &id.simple().to_string()[24..]);
    let mut expected = vec![email(customer), email(admin)];
    expected.sort();
    assert_eq!(to, expected);
    assert!(sent.iter().all(|m| m.channel == Channel::Email));
    let events = outbox(&t.db).await;
    assert!(events.iter().any(|e| matches!(
        &e.event,
        Event::NotificationSent(s) if s.template == "promotion" && s.priority == Priority::Marketing
    )));
}

async fn marketing_beyond_the_limit_is_suppressed_until_the_window_has_passed(db: TestDb) {
    let t = seeded(db).await;
    let handler = Handler {
        marketing: crate::domain::MarketingLimit {
            limit: 2,
            window: Duration::from_secs(24 * 60 * 60),
        },
    };
    let apply = |envelope: Envelope| {
        let db = t.db.clone();
        async move {
            let mut tx = db
                .begin(EventContext::caused_by(NAME, &envelope))
                .await
                .unwrap();
            handler.handle(&mut tx, &envelope).await.unwrap();
            tx.commit().await.unwrap();
        }
    };
    let user = Uuid::now_v7();
    apply(registered(
        user,
        Role::Customer,
        None,
        Preferences::default(),
    ))
    .await;
    // Other priorities do not count.
    apply(confirmed(user)).await;
    for name in ["first", "second", "third"] {
        apply(launched(name)).await;
    }
    let statuses = |all: Vec<(String, String)>| -> Vec<String> {
        all.into_iter().map(|(_, status)| status).collect()
    };
    assert_eq!(
        statuses(promotions(&t.db).await),
        ["QUEUED", "QUEUED", "SUPPRESSED"]
    );

    // A day later the first two are out of the window.
    // Readers are read-only: the update takes a transaction.
    let mut tx = t.db.begin(EventContext::request(NAME, "t")).await.unwrap();
    query("UPDATE notifications SET created_at = created_at - $1")
        .bind(25 * 60 * 60 * 1000_i64)
        .execute(tx.conn())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    apply(launched("fourth")).await;
    assert_eq!(
        statuses(promotions(&t.db).await),
        ["QUEUED", "QUEUED", "SUPPRESSED", "QUEUED"]
    );
}

async fn marketing_a_user_opted_out_of_does_not_use_up_their_limit(db: TestDb) {
    let t = seeded(db).await;
    let handler = Handler {
        marketing: crate::domain::MarketingLimit {
            limit: 1,
            window: Duration::from_secs(60 * 60),
        },
    };
    let user = Uuid::now_v7();
    let off = Preferences {
        promotions: false,
        ..Preferences::default()
    };
    let on = Preferences::default();
    let update = |preferences| {
        envelope(Event::UserUpdated(UserUpdated {
            user_id: user,
            email: "ada@example.com".into(),
            name: "Ada".into(),
            phone: None,
            preferences,
        }))
    };
    for envelope in [
        registered(user, Role::Customer, None, off),
        launched("while opted out"),
        update(on),
        launched("opted in"),
        launched("one too many"),
    ] {
        let mut tx =
            t.db.begin(EventContext::caused_by(NAME, &envelope))
                .await
                .unwrap();
        handler.handle(&mut tx, &envelope).await.unwrap();
        tx.commit().await.unwrap();
    }
    let statuses: Vec<String> = promotions(&t.db)
        .await
        .into_iter()
        .map(|(_, status)| status)
        .collect();
    assert_eq!(statuses, ["SUPPRESSED", "QUEUED", "SUPPRESSED"]);
}
