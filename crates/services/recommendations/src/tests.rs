//! The read model, the use cases and the cache against a real database, events applied through
//! the service's handler as its consumer would. Each test runs on SQLite (`sqlite::…`) and on
//! PostgreSQL (`postgres::…`) when `EMPORIUM_TEST_DATABASE_URL` names a server
//! ([`emporium_platform::on_both_backends`]).

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use emporium_events::{
    CancellationReason, Envelope, Event, InventoryRejected, LowStock, Money, OrderCancelled,
    OrderConfirmed, OrderCreated, OrderLine, ProductCreated, ProductDeleted, ProductUpdated,
    RecommendationsIssued, StockAdjusted,
};
use emporium_platform::{
    bus::consumer::EventHandler,
    cache::{Cache, CacheError, MemoryCache},
    storage::{
        EventContext, query,
        testing::{TestDb, take_emitted},
    },
};
use uuid::Uuid;

use crate::{
    NAME,
    app::{self, Error, Recommendation, Recommender},
    consumers::RecommendationsHandler,
    store,
};

const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

emporium_platform::on_both_backends!(
    NAME,
    store::MIGRATIONS;
    a_buyer_of_a_is_recommended_what_others_bought_with_it,
    a_new_user_gets_best_sellers_and_nothing_sold_gives_nothing,
    only_confirmed_orders_count_and_a_cancelled_one_stops_counting,
    redelivered_events_take_effect_once,
    the_product_is_described_as_the_catalog_events_say,
    deleted_products_are_neither_recommended_nor_recommended_for,
    out_of_stock_products_are_left_out_by_the_latest_announcement,
    the_generation_moves_exactly_when_a_ranking_could_change,
    answers_are_cached_until_the_model_changes,
    a_broken_cache_is_bypassed,
    a_confirmed_order_issues_recommendations_at_most_once_per_period,
    nothing_to_recommend_sends_nothing_and_keeps_the_period_open,
);

struct Fixture {
    db: TestDb,
    recommender: Recommender,
    handler: RecommendationsHandler,
}

impl From<TestDb> for Fixture {
    fn from(db: TestDb) -> Fixture {
        Fixture::with_cache(db, Arc::new(MemoryCache::new(1024 * 1024)))
    }
}

impl Fixture {
    fn with_cache(db: TestDb, cache: Arc<dyn Cache>) -> Fixture {
        Fixture {
            recommender: Recommender {
                db: db.clone(),
                cache,
            },
            db,
            handler: RecommendationsHandler { email_period: WEEK },
        }
    }

    /// Applies an event as the consumer does: in a transaction that first records it in the
    /// inbox, skipping it when already there.
    async fn deliver(&self, envelope: &Envelope) {
        let mut tx = self
            .db
            .begin(EventContext::caused_by(NAME, envelope))
            .await
            .unwrap();
        if tx.record_in_inbox(NAME, envelope.event_id).await.unwrap() {
            self.handler.handle(&mut tx, envelope).await.unwrap();
        }
        tx.commit().await.unwrap();
    }

    async fn send(&self, event: Event) -> Envelope {
        let envelope = Envelope::new("test", "corr-1", None, event);
        self.deliver(&envelope).await;
        envelope
    }

    async fn send_at(&self, event: Event, at: DateTime<Utc>) -> Envelope {
        let mut envelope = Envelope::new("test", "corr-1", None, event);
        envelope.occurred_at = at;
        self.deliver(&envelope).await;
        envelope
    }

    async fn product(&self, name: &str, category: &str) -> Uuid {
        let id = Uuid::now_v7();
        self.send(Event::ProductCreated(ProductCreated {
            product_id: id,
            name: name.into(),
            description: Some(format!("A fine {name}")),
            category: category.into(),
            price: Money::new(1999, "USD"),
            initial_stock: 10,
        }))
        .await;
        id
    }

    async fn create_order(&self, user: Uuid, products: &[Uuid]) -> Uuid {
        let order_id = Uuid::now_v7();
        self.send(Event::OrderCreated(OrderCreated {
            order_id,
            user_id: user,
            items: products
                .iter()
                .map(|p| OrderLine {
                    product_id: *p,
                    quantity: 1,
                    unit_price: Money::new(1999, "USD"),
                })
                .collect(),
            total: Money::new(1999 * products.len() as i64, "USD"),
            payment_token: "tok_visa".into(),
        }))
        .await;
        order_id
    }

    fn confirmed(order_id: Uuid, user: Uuid) -> Event {
        Event::OrderConfirmed(OrderConfirmed {
            order_id,
            user_id: user,
            total: Money::new(1999, "USD"),
        })
    }

    fn cancelled(order_id: Uuid, user: Uuid) -> Event {
        Event::OrderCancelled(OrderCancelled {
            order_id,
            user_id: user,
            reason: CancellationReason::CustomerRequest,
        })
    }

    /// An order for `products`, created and confirmed.
    async fn buy(&self, user: Uuid, products: &[Uuid]) -> Uuid {
        let order = self.create_order(user, products).await;
        self.send(Fixture::confirmed(order, user)).await;
        order
    }

    async fn stock(&self, product: Uuid, available: i64, at: DateTime<Utc>) {
        self.send_at(
            Event::StockAdjusted(StockAdjusted {
                product_id: product,
                delta: 0,
                available,
                reserved: 0,
                reason: None,
            }),
            at,
        )
        .await;
    }

    async fn for_user(&self, user: Uuid) -> Vec<Recommendation> {
        self.recommender.for_user(user, 10).await.unwrap()
    }

    async fn for_product(&self, product: Uuid) -> Vec<Recommendation> {
        self.recommender.for_product(product, 10).await.unwrap()
    }

    async fn generation(&self) -> i64 {
        let mut conn = self.db.reader().await.unwrap();
        store::generation(&mut conn).await.unwrap()
    }

    /// The events emitted since the last call (the outbox, emptied).
    async fn emitted(&self) -> Vec<Event> {
        take_emitted(&self.db)
            .await
            .into_iter()
            .map(|e| e.event)
            .collect()
    }
}

fn ids(recs: &[Recommendation]) -> Vec<Uuid> {
    recs.iter().map(|r| r.product.id).collect()
}

async fn a_buyer_of_a_is_recommended_what_others_bought_with_it(f: Fixture) {
    let machine = f.product("Espresso Machine", "Coffee").await;
    let grinder = f.product("Grinder", "Coffee").await;
    let mug = f.product("Mug", "Kitchen").await;
    for _ in 0..2 {
        f.buy(Uuid::now_v7(), &[machine, grinder]).await;
    }
    f.buy(Uuid::now_v7(), &[mug]).await;
    let ada = Uuid::now_v7();
    f.buy(ada, &[machine]).await;

    let recs = f.for_user(ada).await;
    assert_eq!(ids(&recs), [grinder, mug]);
    assert_eq!(recs[0].reason, "Often bought with Espresso Machine");
    // 2 co-purchases + 0.5 * Coffee affinity 1 * 2 sales + 0.1 * 2 sales.
    assert_eq!(recs[0].score, 3.2);
    assert_eq!(recs[1].reason, "Best seller");
    let product = &recs[0].product;
    assert_eq!(
        (product.name.as_str(), product.category.as_str()),
        ("Grinder", "Coffee")
    );
    assert_eq!(product.description.as_deref(), Some("A fine Grinder"));
    assert_eq!(product.price, Money::new(1999, "USD"));

    let on_machine = f.for_product(machine).await;
    assert_eq!(ids(&on_machine), [grinder, mug]);
    assert_eq!(on_machine[0].reason, "Often bought with Espresso Machine");
    assert!(f.for_product(grinder).await[0].product.id == machine);
}

async fn a_new_user_gets_best_sellers_and_nothing_sold_gives_nothing(f: Fixture) {
    let stranger = Uuid::now_v7();
    let mug = f.product("Mug", "Kitchen").await;
    let kettle = f.product("Kettle", "Kitchen").await;
    assert!(f.for_user(stranger).await.is_empty());
    f.buy(Uuid::now_v7(), &[kettle]).await;
    f.buy(Uuid::now_v7(), &[kettle, mug]).await;
    let recs = f.for_user(stranger).await;
    assert_eq!(ids(&recs), [kettle, mug]);
    assert!(recs.iter().all(|r| r.reason == "Best seller"));
    assert_eq!(recs[0].score, 0.2);
}

async fn only_confirmed_orders_count_and_a_cancelled_one_stops_counting(f: Fixture) {
    let a = f.product("A", "x").await;
    let b = f.product("B", "x").await;
    let buyer = Uuid::now_v7();
    let order = f.create_order(buyer, &[a, b]).await;
    assert!(f.for_product(a).await.is_empty(), "a pending order counts");

    f.send(Fixture::confirmed(order, buyer)).await;
    assert_eq!(ids(&f.for_product(a).await), [b]);
    assert_eq!(ids(&f.for_user(Uuid::now_v7()).await).len(), 2);

    f.send(Fixture::cancelled(order, buyer)).await;
    assert!(
        f.for_product(a).await.is_empty(),
        "the cancelled order still counts"
    );
    assert!(f.for_user(Uuid::now_v7()).await.is_empty());
    assert!(f.for_user(buyer).await.is_empty());

    // A pending order cancelled never counts, even if a confirmation came late.
    let never = f.create_order(buyer, &[a, b]).await;
    f.send(Fixture::cancelled(never, buyer)).await;
    f.send(Fixture::confirmed(never, buyer)).await;
    assert!(f.for_product(a).await.is_empty());
}

async fn redelivered_events_take_effect_once(f: Fixture) {
    let a = f.product("A", "x").await;
    let b = f.product("B", "x").await;
    let c = f.product("C", "x").await;
    let buyer = Uuid::now_v7();
    let order = f.create_order(buyer, &[a, b]).await;
    let confirmed = f.send(Fixture::confirmed(order, buyer)).await;
    // Through the inbox: skipped.
    f.deliver(&confirmed).await;
    // Around it (a replay from the dead-letter topic gets a new id): the order's state decides.
    f.send(Fixture::confirmed(order, buyer)).await;
    let other = f.buy(Uuid::now_v7(), &[a, c]).await;
    let recs = f.for_product(a).await;
    assert_eq!(ids(&recs), [b, c]);
    // Counted once: 1 co-purchase + 0.5 * 1 sale + 0.1 * 1 sale, the same for both.
    assert_eq!(recs[0].score, recs[1].score);
    assert_eq!(recs[0].score, 1.6);

    let cancelled = f.send(Fixture::cancelled(other, Uuid::now_v7())).await;
    f.deliver(&cancelled).await;
    f.send(Fixture::cancelled(other, Uuid::now_v7())).await;
    assert_eq!(ids(&f.for_product(a).await), [b], "uncounted once");
    let sales: i64 = query("SELECT orders FROM sales WHERE product_id = $1")
        .bind(a)
        .scalar(&mut f.db.reader().await.unwrap())
        .await
        .unwrap();
    assert_eq!(sales, 1);
}

async fn the_product_is_described_as_the_catalog_events_say(f: Fixture) {
    let created_at = DateTime::parse_from_rfc3339("2025-01-02T03:04:05.678Z")
        .unwrap()
        .with_timezone(&Utc);
    let updated_at = created_at + chrono::Duration::hours(1);
    let a = Uuid::now_v7();
    let b = Uuid::now_v7();
    for (id, name) in [(a, "A"), (b, "B")] {
        f.send_at(
            Event::ProductCreated(ProductCreated {
                product_id: id,
                name: name.into(),
                description: None,
                category: "x".into(),
                price: Money::new(500, "EUR"),
                initial_stock: 1,
            }),
            created_at,
        )
        .await;
    }
    f.buy(Uuid::now_v7(), &[a, b]).await;
    f.send_at(
        Event::ProductUpdated(ProductUpdated {
            product_id: b,
            name: "Better B".into(),
            description: Some("now with more".into()),
            category: "y".into(),
            price: Money::new(750, "EUR"),
        }),
        updated_at,
    )
    .await;
    f.send_at(
        Event::ProductUpdated(ProductUpdated {
            product_id: a,
            name: "Anchor".into(),
            description: None,
            category: "x".into(),
            price: Money::new(500, "EUR"),
        }),
        updated_at,
    )
    .await;

    let recs = f.for_product(a).await;
    let product = &recs[0].product;
    assert_eq!(product.id, b);
    assert_eq!(product.name, "Better B");
    assert_eq!(product.description.as_deref(), Some("now with more"));
    assert_eq!(product.category, "y");
    assert_eq!(product.price, Money::new(750, "EUR"));
    assert_eq!(product.created_at, created_at);
    assert_eq!(product.updated_at, updated_at);
    assert_eq!(recs[0].reason, "Often bought with Anchor", "the new name");
    let json = serde_json::to_value(&recs[0]).unwrap();
    let mut keys: Vec<&String> = json["product"].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "category",
            "createdAt",
            "description",
            "id",
            "name",
            "price",
            "updatedAt"
        ]
    );
    assert_eq!(json["product"]["createdAt"], "2025-01-02T03:04:05.678Z");
}

async fn deleted_products_are_neither_recommended_nor_recommended_for(f: Fixture) {
    let a = f.product("A", "x").await;
    let b = f.product("B", "x").await;
    let c = f.product("C", "x").await;
    f.buy(Uuid::now_v7(), &[a, b, c]).await;
    f.send(Event::ProductDeleted(ProductDeleted { product_id: b }))
        .await;
    assert_eq!(ids(&f.for_product(a).await), [c]);
    assert!(!ids(&f.for_user(Uuid::now_v7()).await).contains(&b));
    assert!(matches!(
        f.recommender.for_product(b, 10).await,
        Err(Error::ProductNotFound)
    ));
    assert!(matches!(
        f.recommender.for_product(Uuid::now_v7(), 10).await,
        Err(Error::ProductNotFound)
    ));
}

async fn out_of_stock_products_are_left_out_by_the_latest_announcement(f: Fixture) {
    let a = f.product("A", "x").await;
    let b = f.product("B", "x").await;
    f.buy(Uuid::now_v7(), &[a, b]).await;
    let t0 = Utc::now();
    let later = |s| t0 + chrono::Duration::seconds(s);

    f.stock(b, 0, later(1)).await;
    assert!(f.for_product(a).await.is_empty(), "sold out");
    // An older announcement arriving late (another partition) changes nothing.
    f.stock(b, 7, later(0)).await;
    assert!(f.for_product(a).await.is_empty());
    f.stock(b, 3, later(2)).await;
    assert_eq!(ids(&f.for_product(a).await), [b], "restocked");

    // The other two events that carry `available`.
    f.send_at(
        Event::InventoryRejected(InventoryRejected {
            order_id: Uuid::now_v7(),
            product_id: b,
            requested: 5,
            available: 0,
        }),
        later(3),
    )
    .await;
    assert!(f.for_product(a).await.is_empty());
    f.send_at(
        Event::LowStock(LowStock {
            product_id: b,
            available: 2,
            threshold: 5,
        }),
        later(4),
    )
    .await;
    assert_eq!(ids(&f.for_product(a).await), [b], "low is not out");
}

async fn the_generation_moves_exactly_when_a_ranking_could_change(f: Fixture) {
    let start = f.generation().await;
    let a = f.product("A", "x").await;
    assert_eq!(f.generation().await, start + 1, "a product event");
    let buyer = Uuid::now_v7();
    let order = f.create_order(buyer, &[a]).await;
    assert_eq!(
        f.generation().await,
        start + 1,
        "a pending order changes nothing"
    );
    f.send(Fixture::confirmed(order, buyer)).await;
    assert_eq!(f.generation().await, start + 2, "an order counted");
    let t0 = Utc::now();
    f.stock(a, 5, t0).await;
    assert_eq!(f.generation().await, start + 2, "still in stock");
    f.stock(a, 0, t0 + chrono::Duration::seconds(1)).await;
    assert_eq!(f.generation().await, start + 3, "out of stock");
    f.send(Fixture::cancelled(order, buyer)).await;
    assert_eq!(f.generation().await, start + 4, "an order uncounted");
}

async fn answers_are_cached_until_the_model_changes(f: Fixture) {
    let a = f.product("A", "x").await;
    let b = f.product("B", "x").await;
    let c = f.product("C", "x").await;
    f.buy(Uuid::now_v7(), &[a, b]).await;
    let first = f.for_product(a).await;
    assert_eq!(ids(&first), [b]);
    // Behind the model's back (no new generation): the cached answer is served.
    let mut tx = f.db.begin(EventContext::request(NAME, "c")).await.unwrap();
    query("UPDATE products SET name = 'Renamed' WHERE id = $1")
        .bind(b)
        .execute(tx.conn())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(f.for_product(a).await, first, "not from the cache");
    assert_eq!(
        f.recommender.for_product(a, 5).await.unwrap()[0]
            .product
            .name,
        "Renamed",
        "another limit is another key"
    );
    // An event that changes the model: a new generation, a fresh answer.
    f.buy(Uuid::now_v7(), &[a, c]).await;
    let fresh = f.for_product(a).await;
    assert_eq!(ids(&fresh), [b, c]);
    assert_eq!(fresh[0].product.name, "Renamed");
}

/// A cache whose backend is down.
struct BrokenCache {
    calls: AtomicUsize,
}

#[async_trait]
impl Cache for BrokenCache {
    async fn get(&self, _: &str) -> Result<Option<Vec<u8>>, CacheError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Err(CacheError::Unavailable("connection refused".into()))
    }
    async fn set(&self, _: &str, _: Vec<u8>, _: Duration) -> Result<(), CacheError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Err(CacheError::Unavailable("connection refused".into()))
    }
    async fn delete(&self, _: &str) -> Result<(), CacheError> {
        Err(CacheError::Unavailable("connection refused".into()))
    }
}

async fn a_broken_cache_is_bypassed(db: TestDb) {
    let cache = Arc::new(BrokenCache {
        calls: AtomicUsize::new(0),
    });
    let f = Fixture::with_cache(db, cache.clone());
    let a = f.product("A", "x").await;
    let b = f.product("B", "x").await;
    f.buy(Uuid::now_v7(), &[a, b]).await;
    assert_eq!(ids(&f.for_product(a).await), [b]);
    assert_eq!(
        cache.calls.load(Ordering::Relaxed),
        2,
        "tried to get, then set"
    );
}

/// Confirms `order` at `now` straight through the use case (the handler uses the wall clock).
async fn confirm_at(f: &Fixture, order: Uuid, user: Uuid, now: i64, commit: bool) {
    let mut tx = f.db.begin(EventContext::request(NAME, "c")).await.unwrap();
    let Event::OrderConfirmed(event) = Fixture::confirmed(order, user) else {
        unreachable!()
    };
    app::order_confirmed(&mut tx, &event, now, WEEK)
        .await
        .unwrap();
    if commit {
        tx.commit().await.unwrap();
    }
}

async fn a_confirmed_order_issues_recommendations_at_most_once_per_period(f: Fixture) {
    let products: Vec<Uuid> = make_products(&f, 8).await;
    // Everything has sold, so there is something to recommend.
    f.buy(Uuid::now_v7(), &products).await;
    f.emitted().await;

    let ada = Uuid::now_v7();
    let week = i64::try_from(WEEK.as_millis()).unwrap();
    let t0 = 1_000_000_000_000;
    let first = f.create_order(ada, &[products[0]]).await;
    // A transaction that rolls back leaves no trace: the redelivery sends.
    confirm_at(&f, first, ada, t0, false).await;
    assert!(f.emitted().await.is_empty());
    confirm_at(&f, first, ada, t0, true).await;
    let events = f.emitted().await;
    let [
        Event::RecommendationsIssued(RecommendationsIssued {
            user_id,
            product_ids,
        }),
    ] = events.as_slice()
    else {
        panic!("{events:?}")
    };
    assert_eq!(*user_id, ada);
    assert_eq!(product_ids.len(), 5, "the top five");
    assert!(!product_ids.contains(&products[0]), "not what ada bought");
    let mut conn = f.db.reader().await.unwrap();
    assert_eq!(
        store::email_sent_at(&mut conn, ada).await.unwrap(),
        Some(t0)
    );
    drop(conn);

    // Within the period: counted, not emailed.
    let second = f.create_order(ada, &[products[1]]).await;
    confirm_at(&f, second, ada, t0 + week - 1, true).await;
    assert!(f.emitted().await.is_empty());
    // A redelivered confirmation a period later does not send either: it was counted already.
    confirm_at(&f, second, ada, t0 + week, true).await;
    assert!(f.emitted().await.is_empty());
    // The next order a period after the email does.
    let third = f.create_order(ada, &[products[2]]).await;
    confirm_at(&f, third, ada, t0 + week, true).await;
    let events = f.emitted().await;
    assert!(
        matches!(events.as_slice(), [Event::RecommendationsIssued(e)] if !e.product_ids.contains(&products[1])),
        "{events:?}"
    );
}

async fn nothing_to_recommend_sends_nothing_and_keeps_the_period_open(f: Fixture) {
    let only = f.product("Only", "x").await;
    let ada = Uuid::now_v7();
    f.buy(ada, &[only]).await;
    assert!(f.emitted().await.is_empty(), "ada bought all there is");
    let mut conn = f.db.reader().await.unwrap();
    assert_eq!(store::email_sent_at(&mut conn, ada).await.unwrap(), None);
    drop(conn);
    let another = f.product("Another", "x").await;
    f.buy(Uuid::now_v7(), &[another]).await;
    f.emitted().await;
    f.buy(ada, &[only]).await;
    let events = f.emitted().await;
    assert!(
        matches!(events.as_slice(), [Event::RecommendationsIssued(e)] if e.product_ids == [another]),
        "{events:?}"
    );
}

async fn make_products(f: &Fixture, n: usize) -> Vec<Uuid> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(f.product(&format!("P{i}"), "x").await);
    }
    out
}
