//! The use cases and the scheduler against a real database, SQLite (`sqlite::…`) and PostgreSQL
//! (`postgres::…`, when `EMPORIUM_TEST_DATABASE_URL` names a server; see
//! [`emporium_platform::on_both_backends`]). Launch times are given explicitly
//! (`launch_due(db, now)`), so downtime is a jump of `now`, not a wait.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use emporium_events::{Envelope, Event, PromotionLaunched};
use emporium_platform::storage::{
    Db,
    testing::{TestDb, take_emitted},
};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::{
    NAME,
    app::{self, App, CreatePromotion},
    store::{self, PromotionRow},
};

emporium_platform::on_both_backends!(
    NAME,
    store::MIGRATIONS;
    every_invalid_field_of_a_new_promotion_is_named,
    a_promotion_without_a_start_launches_once_at_once,
    a_launch_missed_while_the_platform_was_down_happens_once_when_it_is_back,
    a_cron_promotion_launches_every_occurrence_and_only_the_latest_missed_one,
    two_schedulers_racing_for_one_occurrence_launch_it_once,
    an_occurrence_already_recorded_is_not_emitted_again,
    pages_of_promotions_are_newest_first,
    the_scheduler_wakes_for_a_new_promotion_launches_it_on_time_and_stops_when_told,
);

struct Fixture {
    app: App,
    /// Owns the database (and, on SQLite, its directory) that `app` uses.
    _db: TestDb,
}

impl From<TestDb> for Fixture {
    fn from(db: TestDb) -> Fixture {
        Fixture {
            app: App {
                db: db.clone(),
                wake: Arc::new(Notify::new()),
            },
            _db: db,
        }
    }
}

impl Fixture {
    fn db(&self) -> &Db {
        &self.app.db
    }

    async fn create(&self, request: CreatePromotion, now: DateTime<Utc>) -> PromotionRow {
        self.app.create(request, "corr-promo", now).await.unwrap()
    }

    /// The launches in the outbox so far (taken out of it by one statement: a running scheduler
    /// may emit meanwhile).
    async fn launched(&self) -> Vec<(Envelope, PromotionLaunched)> {
        take_emitted(self.db())
            .await
            .into_iter()
            .map(|envelope| match &envelope.event {
                Event::PromotionLaunched(e) => {
                    let e = e.clone();
                    (envelope, e)
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    async fn row(&self, id: Uuid) -> PromotionRow {
        self.app.get(id).await.unwrap()
    }
}

fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 15, h, m, s).unwrap()
}

fn request(starts_at: Option<&str>, cron: Option<&str>) -> CreatePromotion {
    CreatePromotion {
        name: "Spring sale".into(),
        message: "Every mug 20% off.".into(),
        product_ids: None,
        category: Some("kitchen".into()),
        starts_at: starts_at.map(str::to_owned),
        cron: cron.map(str::to_owned),
    }
}

async fn every_invalid_field_of_a_new_promotion_is_named(f: Fixture) {
    let bad = CreatePromotion {
        name: " ".into(),
        message: "x".repeat(2001),
        product_ids: Some(vec![Uuid::now_v7().to_string(), "mug".into()]),
        category: Some(String::new()),
        starts_at: Some("tomorrow at nine".into()),
        cron: Some("every monday".into()),
    };
    let error = f.app.create(bad, "c", at(10, 0, 0)).await.unwrap_err();
    assert_eq!(error.status.as_u16(), 400);
    let fields: Vec<&str> = error.errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "name",
            "message",
            "productIds",
            "category",
            "startsAt",
            "cron"
        ]
    );
    // Lengths count characters, not bytes.
    let ok = CreatePromotion {
        name: "é".repeat(200),
        ..request(None, None)
    };
    assert!(f.app.create(ok, "c", at(10, 0, 0)).await.is_ok());
    let long = CreatePromotion {
        name: "é".repeat(201),
        ..request(None, None)
    };
    let error = f.app.create(long, "c", at(10, 0, 0)).await.unwrap_err();
    assert_eq!(error.errors[0].field, "name");

    let never = request(None, Some("0 0 30 2 *"));
    let error = f.app.create(never, "c", at(10, 0, 0)).await.unwrap_err();
    assert_eq!(error.errors[0].field, "cron");
    assert!(error.errors[0].message.contains("never"), "{error:?}");
}

async fn a_promotion_without_a_start_launches_once_at_once(f: Fixture) {
    let created = at(10, 0, 0) + TimeDelta::milliseconds(123);
    let product = Uuid::now_v7();
    let row = f
        .create(
            CreatePromotion {
                product_ids: Some(vec![product.to_string(), product.to_string()]),
                ..request(None, None)
            },
            created,
        )
        .await;
    assert_eq!(row.next_launch_at, Some(created.timestamp_millis()));
    assert_eq!(row.product_ids().unwrap(), [product], "duplicates dropped");

    assert_eq!(app::launch_due(f.db(), created).await.unwrap(), 1);
    assert_eq!(app::launch_due(f.db(), created).await.unwrap(), 0);
    assert_eq!(
        app::launch_due(f.db(), created + TimeDelta::days(1))
            .await
            .unwrap(),
        0
    );
    let launched = f.launched().await;
    let [(envelope, event)] = launched.as_slice() else {
        panic!("{launched:?}")
    };
    assert_eq!(envelope.aggregate_id, row.id.to_string());
    assert_eq!(envelope.correlation_id, "corr-promo");
    assert_eq!(event.scheduled_for, created);
    assert_eq!(event.product_ids, [product]);
    assert_eq!(event.category.as_deref(), Some("kitchen"));
    let after = f.row(row.id).await;
    assert_eq!(after.next_launch_at, None);
    assert_eq!(after.last_launched_at, Some(created.timestamp_millis()));
}

async fn a_launch_missed_while_the_platform_was_down_happens_once_when_it_is_back(f: Fixture) {
    let row = f
        .create(request(Some("2030-01-15T12:00:00Z"), None), at(10, 0, 0))
        .await;
    assert_eq!(app::launch_due(f.db(), at(11, 59, 59)).await.unwrap(), 0);
    assert!(f.launched().await.is_empty(), "not due yet");
    assert_eq!(
        app::next_due(f.db()).await.unwrap(),
        Some(at(12, 0, 0)),
        "the scheduler sleeps until then"
    );

    // Down from 11:59:59 until 15:00; then started again, twice.
    assert_eq!(app::launch_due(f.db(), at(15, 0, 0)).await.unwrap(), 1);
    assert_eq!(app::launch_due(f.db(), at(15, 0, 1)).await.unwrap(), 0);
    let launched = f.launched().await;
    let [(_, event)] = launched.as_slice() else {
        panic!("{launched:?}")
    };
    assert_eq!(event.scheduled_for, at(12, 0, 0), "for its own time");
    assert_eq!(
        f.row(row.id).await.last_launched_at,
        Some(at(15, 0, 0).timestamp_millis()),
        "launched late"
    );
    assert_eq!(app::next_due(f.db()).await.unwrap(), None);
}

async fn a_cron_promotion_launches_every_occurrence_and_only_the_latest_missed_one(f: Fixture) {
    let row = f
        .create(
            request(Some("2030-01-15T10:00:00Z"), Some("0 * * * *")),
            at(9, 30, 0),
        )
        .await;
    assert_eq!(row.next_launch_at, Some(at(10, 0, 0).timestamp_millis()));

    assert_eq!(app::launch_due(f.db(), at(10, 0, 0)).await.unwrap(), 1);
    // Down from 10:00 to 13:30: 11:00, 12:00 and 13:00 were missed; 13:00 is launched, once.
    assert_eq!(app::launch_due(f.db(), at(13, 30, 0)).await.unwrap(), 1);
    assert_eq!(app::launch_due(f.db(), at(13, 59, 59)).await.unwrap(), 0);
    assert_eq!(app::launch_due(f.db(), at(14, 0, 0)).await.unwrap(), 1);
    let times: Vec<DateTime<Utc>> = f
        .launched()
        .await
        .into_iter()
        .map(|(_, e)| e.scheduled_for)
        .collect();
    assert_eq!(times, [at(10, 0, 0), at(13, 0, 0), at(14, 0, 0)]);
    assert_eq!(
        f.row(row.id).await.next_launch_at,
        Some(at(15, 0, 0).timestamp_millis())
    );
}

async fn two_schedulers_racing_for_one_occurrence_launch_it_once(f: Fixture) {
    let row = f
        .create(request(None, Some("0 * * * *")), at(9, 30, 0))
        .await;
    // Both read the promotion before either launched it.
    let (a, b) = tokio::join!(
        app::launch(f.db(), &row, at(10, 0, 0)),
        app::launch(f.db(), &row, at(10, 0, 0)),
    );
    assert_eq!([a.unwrap(), b.unwrap()].iter().filter(|l| **l).count(), 1);
    // A stale copy read before the launch does nothing later either.
    assert!(!app::launch(f.db(), &row, at(10, 30, 0)).await.unwrap());
    assert_eq!(f.launched().await.len(), 1);
}

async fn an_occurrence_already_recorded_is_not_emitted_again(f: Fixture) {
    let row = f
        .create(request(None, Some("0 * * * *")), at(9, 30, 0))
        .await;
    let mut tx = f
        .db()
        .begin(emporium_platform::storage::EventContext::request(NAME, "t"))
        .await
        .unwrap();
    assert!(
        store::record_launch(tx.conn(), row.id, at(10, 0, 0).timestamp_millis(), 0)
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();
    assert!(!app::launch(f.db(), &row, at(10, 0, 0)).await.unwrap());
    assert!(f.launched().await.is_empty());
    // The promotion still moves on to its next occurrence.
    assert_eq!(
        f.row(row.id).await.next_launch_at,
        Some(at(11, 0, 0).timestamp_millis())
    );
}

async fn pages_of_promotions_are_newest_first(f: Fixture) {
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(f.create(request(None, None), at(10, 0, 0)).await.id);
    }
    let first = emporium_platform::api::PageRequest::parse(Some("2"), None).unwrap();
    let page = f.app.list(&first).await.unwrap();
    let got: Vec<Uuid> = page.items.iter().map(|r| r.id).collect();
    assert_eq!(got, [ids[2], ids[1]]);
    let next =
        emporium_platform::api::PageRequest::parse(None, page.next_cursor.as_deref()).unwrap();
    let page = f.app.list(&next).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].id, ids[0]);
    assert!(page.next_cursor.is_none());
}

/// Real time from here: the loop reads the clock.
async fn the_scheduler_wakes_for_a_new_promotion_launches_it_on_time_and_stops_when_told(
    f: Fixture,
) {
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let scheduler = tokio::spawn(app::run_scheduler(
        f.db().clone(),
        f.app.wake.clone(),
        stop_rx,
    ));
    // Give it time to find nothing and go to sleep for its longest pause (a minute). The outcome
    // does not hang on this pause: a scheduler still looking would simply find the promotion on
    // its first look. The pause makes the wake-up the path this test takes.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let starts = Utc::now() + TimeDelta::milliseconds(300);
    let row = f
        .create(request(Some(&starts.to_rfc3339()), None), Utc::now())
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let launched = loop {
        let launched = f.launched().await;
        if !launched.is_empty() {
            break launched;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the scheduler slept through the new promotion"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(launched.len(), 1);
    assert_eq!(launched[0].1.promotion_id, row.id);
    let launched_at = f.row(row.id).await.last_launched_at.unwrap();
    assert!(
        launched_at >= starts.timestamp_millis(),
        "not before its time"
    );

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), scheduler)
        .await
        .expect("the scheduler stopped")
        .unwrap();
    assert!(f.launched().await.is_empty(), "launched once");
}
