//! The parts of the distributed mode that need no outside server: one service as its own process,
//! the gateway in front of it over HTTP, `migrate`, and the refusals that keep an operator from a
//! half-configured cluster.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use crate::{
    saga,
    support::{Platform, SECRET, SERVICES, Session, command, gateway_variable},
};

#[tokio::test]
async fn the_gateway_reaches_a_service_running_as_its_own_process() {
    let service_dir = tempfile::tempdir().unwrap();
    let catalog = Platform::start_part(
        service_dir.path(),
        &["serve", "catalog"],
        &[("EMPORIUM_JWT_SECRET", SECRET)],
    )
    .await;
    let health: Value = catalog.get("/health").await.json().await.unwrap();
    assert_eq!(health["service"], "catalog");
    assert_eq!(health["checks"]["catalog"], "UP", "{health}");
    assert!(
        health["checks"].get("orders").is_none(),
        "a service process opens its own database only: {health}"
    );
    // Its own routes only.
    assert_eq!(catalog.get("/api/orders").await.status(), 404);

    let gateway_dir = tempfile::tempdir().unwrap();
    let address = catalog.base.clone();
    let gateway = Platform::start_part(
        gateway_dir.path(),
        &["gateway"],
        &[
            ("EMPORIUM_JWT_SECRET", SECRET),
            (gateway_variable("catalog").as_str(), &address),
        ],
    )
    .await;
    let products = gateway.get("/api/products?limit=5").await;
    assert_eq!(products.status(), 200);
    let body: Value = products.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"items": [], "nextCursor": null}));
    // The catalog's own problem, with its code, comes back through the gateway unchanged.
    let missing = gateway
        .get("/api/products/0190b8a0-0000-7000-8000-000000000000")
        .await;
    assert_eq!(missing.status(), 404);
    let problem: Value = missing.json().await.unwrap();
    assert_eq!(problem["code"], "NOT_FOUND");
    // A service with no address configured is unavailable, not a hang.
    let orders = gateway.get("/api/orders").await;
    assert_eq!(orders.status(), 503);
    let problem: Value = orders.json().await.unwrap();
    assert_eq!(problem["code"], "SERVICE_UNAVAILABLE");
    // GraphQL goes the same way.
    let graphql: Value = gateway
        .http
        .post(gateway.url("/graphql"))
        .json(&serde_json::json!({"query": "{ products(first: 3) { nodes { id } } }"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(graphql["data"]["products"]["nodes"], serde_json::json!([]));
}

#[tokio::test]
async fn separate_processes_must_share_a_configured_token_secret() {
    let dir = tempfile::tempdir().unwrap();
    let output = command(dir.path())
        .args(["serve", "catalog"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("jwt_secret"), "{stderr}");
}

#[tokio::test]
async fn an_unknown_service_is_refused_with_the_known_names() {
    let dir = tempfile::tempdir().unwrap();
    let output = command(dir.path())
        .args(["serve", "billing"])
        .env("EMPORIUM_JWT_SECRET", SECRET)
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no service `billing`") && stderr.contains("recommendations"),
        "{stderr}"
    );
}

#[tokio::test]
async fn migrate_prepares_every_database_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let output = command(dir.path()).arg("migrate").output().await.unwrap();
    assert!(output.status.success(), "{output:?}");
    for name in ["users", "orders", "promotions", "operations"] {
        assert!(dir.path().join(format!("{name}.db")).exists(), "{name}.db");
    }
    // Migrations are recorded: running them again changes nothing and succeeds.
    let again = command(dir.path())
        .args(["migrate", "--service", "orders"])
        .output()
        .await
        .unwrap();
    assert!(again.status.success(), "{again:?}");
}

/// Clusters run one at a time: they share the servers, and the outage test pauses the broker.
static SERVERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Every service as its own process on PostgreSQL and Kafka (plus extra instances of some), the
/// gateway in front. Each cluster has a namespace of its own on the servers (fresh databases,
/// topics and groups), so runs never see each other's data.
struct Cluster {
    /// The gateway; its `peers` are the service processes still running.
    gateway: Platform,
    /// Every service process, by service name, in start order.
    instances: Vec<(&'static str, Platform)>,
    _servers: tokio::sync::MutexGuard<'static, ()>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts the cluster with one instance of every service, `extra` more of the named ones and
    /// `env` for every process; `None` (after saying so) when the servers are not configured.
    async fn start(test: &str, extra: &[&'static str], env: &[(&str, &str)]) -> Option<Cluster> {
        let (Ok(database), Ok(brokers)) = (
            std::env::var("EMPORIUM_TEST_DATABASE_URL"),
            std::env::var("EMPORIUM_TEST_KAFKA_BROKERS"),
        ) else {
            eprintln!(
                "skipped {test}: needs EMPORIUM_TEST_DATABASE_URL and EMPORIUM_TEST_KAFKA_BROKERS (scripts/dev-services)"
            );
            return None;
        };
        let servers = SERVERS.lock().await;
        let namespace = format!("it{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
        let mut common = vec![
            ("EMPORIUM_JWT_SECRET", SECRET),
            ("EMPORIUM_DATABASE_URL", database.as_str()),
            ("EMPORIUM_KAFKA_BROKERS", brokers.as_str()),
            ("EMPORIUM_NAMESPACE", namespace.as_str()),
            ("EMPORIUM_ADMIN_EMAIL", crate::support::ADMIN_EMAIL),
            ("EMPORIUM_ADMIN_PASSWORD", crate::support::ADMIN_PASSWORD),
        ];
        // The cache on Redis too, when there is one: every process shares it as in production.
        let redis = std::env::var("EMPORIUM_TEST_REDIS_URL").ok();
        if let Some(redis) = &redis {
            common.push(("EMPORIUM_REDIS_URL", redis.as_str()));
        }
        common.extend_from_slice(env);
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<&'static str> = SERVICES.iter().chain(extra).copied().collect();
        let mut instances = Vec::new();
        for (n, service) in names.into_iter().enumerate() {
            let data = dir.path().join(format!("{service}-{n}"));
            std::fs::create_dir_all(&data).unwrap();
            let process = Platform::start_part(&data, &["serve", service], &common).await;
            instances.push((service, process));
        }
        // The gateway reaches the first instance of each service (HTTP is stateless: any would do).
        let addresses: Vec<(String, String)> = SERVICES
            .iter()
            .map(|service| {
                let first = instances.iter().find(|(name, _)| name == service).unwrap();
                (gateway_variable(service), first.1.base.clone())
            })
            .collect();
        let mut env = common.clone();
        env.extend(addresses.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let gateway_dir = dir.path().join("gateway");
        std::fs::create_dir_all(&gateway_dir).unwrap();
        let mut gateway = Platform::start_part(&gateway_dir, &["gateway"], &env).await;
        gateway.peers = instances.iter().map(|(_, p)| p.base.clone()).collect();
        Some(Cluster {
            gateway,
            instances,
            _servers: servers,
            _dir: dir,
        })
    }

    /// The `n`th instance of `service` (0 is the one the gateway calls).
    fn instance(&mut self, service: &str, n: usize) -> &mut Platform {
        self.instances
            .iter_mut()
            .filter(|(name, _)| *name == service)
            .nth(n)
            .map(|(_, p)| p)
            .unwrap()
    }

    /// Forgets a process that is gone (the quiet check reads every peer's metrics).
    fn forget(&mut self, base: &str) {
        self.gateway.peers.retain(|peer| peer != base);
    }
}

/// The saga tests of the embedded platform, through a cluster with two inventory and two payment
/// instances sharing their groups' partitions. Needs the servers that `scripts/dev-services`
/// starts (`.ci/run` does); without them it says so and passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_saga_tests_pass_through_a_cluster_with_two_inventory_and_two_payment_instances() {
    let Some(cluster) = Cluster::start(
        "the_saga_tests_pass_through_a_cluster",
        &["inventory", "payments"],
        &[saga::SIXTY_AT_ONCE],
    )
    .await
    else {
        return;
    };
    let platform = &cluster.gateway;
    saga::an_order_goes_all_the_way_to_delivered_on(platform).await;
    saga::the_correlation_id_of_a_request_reaches_every_event_it_causes_on(platform).await;
    saga::sixty_orders_for_twenty_units_confirm_exactly_twenty_on(platform).await;
    saga::placing_and_cancelling_at_once_conserves_stock_and_voids_payments_on(platform).await;
    // The admin statistics (served by the operations process) cover every service's group.
    let admin = platform.admin().await;
    let stats = platform.get_as("/api/admin/stats", &admin.token).await;
    let groups: HashSet<&str> = stats.body["consumerLag"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["group"].as_str())
        .collect();
    for group in [
        "catalog",
        "inventory",
        "orders",
        "payments",
        "shipping",
        "notifications",
        "recommendations",
        "operations",
    ] {
        assert!(groups.contains(group), "{group} missing from {stats:?}");
    }
    // Both instances of each doubled service took part: the group's partitions were shared.
    let consumed = |p: &Platform, group: &'static str| {
        let http = p.http.clone();
        let url = p.url("/metrics");
        async move {
            let text = http.get(url).send().await.unwrap().text().await.unwrap();
            text.lines()
                .filter(|l| {
                    l.starts_with("emporium_events_consumed_total{")
                        && l.contains(&format!("group=\"{group}\""))
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        }
    };
    for service in ["inventory", "payments"] {
        let instances: Vec<&Platform> = cluster
            .instances
            .iter()
            .filter(|(name, _)| *name == service)
            .map(|(_, p)| p)
            .collect();
        assert_eq!(instances.len(), 2);
        for instance in instances {
            assert!(
                consumed(instance, service).await > 0.0,
                "an instance of {service} at {} consumed nothing",
                instance.base
            );
        }
    }
}

/// What a stream of orders left: each order placed, with its customer.
struct Placed {
    orders: Vec<(usize, String)>,
}

/// Places `count` orders one after the other, `pause` apart, over `customers` and `products` (one
/// or two units each, chosen by a fixed rule, so every run places the same orders). `placed` counts
/// them as they go, for whoever waits for the stream to be under way.
async fn stream_orders(
    platform: &Platform,
    customers: &[Session],
    products: &[String],
    count: usize,
    pause: std::time::Duration,
    placed: &std::sync::atomic::AtomicUsize,
) -> Placed {
    let mut orders = Vec::with_capacity(count);
    for n in 0..count {
        let customer = n % customers.len();
        let product = &products[(n * 7) % products.len()];
        let quantity = 1 + (n % 2) as i64;
        let reply = platform
            .place_order(&customers[customer], &[(product, quantity)], "tok_visa")
            .await;
        assert_eq!(reply.status, 202, "order {n}: {reply:?}");
        orders.push((customer, reply.body["id"].as_str().unwrap().to_owned()));
        placed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(pause).await;
    }
    Placed { orders }
}

/// Products with `stock` units each and customers, for a stream of orders.
async fn shop(
    platform: &Platform,
    admin: &Session,
    products: usize,
    stock: i64,
    customers: usize,
) -> (Vec<String>, HashMap<String, i64>, Vec<Session>) {
    let mut ids = Vec::new();
    for n in 0..products {
        ids.push(
            platform
                .create_product(admin, &format!("Item {n}"), 1000 + n as i64, stock)
                .await,
        );
    }
    let initial = ids.iter().map(|id| (id.clone(), stock)).collect();
    let mut sessions = Vec::new();
    for n in 0..customers {
        sessions.push(platform.register(&format!("stream{n}@example.com")).await);
    }
    (ids, initial, sessions)
}

/// Nothing lost, nothing duplicated: the platform knows exactly the orders placed, none is left
/// `PENDING` (with the other invariants of CONTRACT §4), and each product's reserved plus
/// committed units are exactly the units of the orders that went through: a reservation applied
/// twice, or lost, would show here.
async fn assert_nothing_lost_or_duplicated(
    platform: &Platform,
    admin: &Session,
    placed: &Placed,
    initial: &HashMap<String, i64>,
) {
    saga::assert_invariants(platform, admin, initial).await;
    let orders = saga::all_orders(platform, admin).await;
    let known: HashSet<&str> = orders.iter().filter_map(|o| o["id"].as_str()).collect();
    let placed_ids: HashSet<&str> = placed.orders.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(known, placed_ids, "the orders the platform knows");
    let mut held: HashMap<String, i64> = HashMap::new();
    for order in &orders {
        if order["status"] == "CANCELLED" {
            continue;
        }
        for item in order["items"].as_array().unwrap() {
            *held
                .entry(item["productId"].as_str().unwrap().to_owned())
                .or_default() += item["quantity"].as_i64().unwrap();
        }
    }
    let listing = platform
        .get_as("/api/inventory?limit=100", &admin.token)
        .await;
    for level in listing.body["items"].as_array().unwrap() {
        let product = level["productId"].as_str().unwrap();
        let reserved_or_committed =
            level["reserved"].as_i64().unwrap() + level["committed"].as_i64().unwrap_or(0);
        assert_eq!(
            reserved_or_committed,
            held.get(product).copied().unwrap_or(0),
            "units held for {product}: {level}"
        );
    }
}

/// Two inventory instances share the group's partitions; one is killed (`SIGKILL`, no goodbye)
/// in the middle of a stream of orders. The other takes its partitions over once the broker gives
/// up on the dead member (`bus.session_timeout`, 10 s), and when the stream ends every invariant holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inventory_instance_killed_under_a_stream_of_orders_loses_and_duplicates_nothing() {
    let Some(mut cluster) = Cluster::start(
        "an_inventory_instance_killed_under_a_stream_of_orders",
        &["inventory", "payments"],
        &[],
    )
    .await
    else {
        return;
    };
    let admin = cluster.gateway.admin().await;
    let (products, initial, customers) = shop(&cluster.gateway, &admin, 6, 25, 4).await;
    let placed = std::sync::atomic::AtomicUsize::new(0);
    let gateway = &cluster.gateway;
    let victim = cluster
        .instances
        .iter_mut()
        .filter(|(name, _)| *name == "inventory")
        .nth(1)
        .map(|(_, p)| p)
        .unwrap();
    let victim_base = victim.base.clone();
    let kill = async {
        // Under way, and the victim holds partitions (it has handled events of its own).
        gateway
            .wait_for("the stream under way, the victim busy", || async {
                let busy = gateway
                    .http
                    .get(format!("{victim_base}/metrics"))
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap()
                    .lines()
                    .any(|l| {
                        l.starts_with("emporium_events_consumed_total{")
                            && l.contains("group=\"inventory\"")
                            && !l.ends_with(" 0")
                    });
                busy && placed.load(std::sync::atomic::Ordering::SeqCst) >= 30
            })
            .await;
        victim.child.start_kill().unwrap();
        victim.child.wait().await.unwrap();
    };
    let stream = stream_orders(
        gateway,
        &customers,
        &products,
        120,
        std::time::Duration::from_millis(20),
        &placed,
    );
    let (placed_orders, ()) = tokio::join!(stream, kill);
    cluster.forget(&victim_base);
    assert_nothing_lost_or_duplicated(&cluster.gateway, &admin, &placed_orders, &initial).await;
    // The survivor did take the victim's partitions over: it owns them all now, and is caught up.
    let survivor = cluster.instance("inventory", 0).base.clone();
    let lags = cluster
        .gateway
        .peer_series("emporium_consumer_lag", "group=\"inventory\"")
        .await;
    assert!(
        !lags.is_empty() && lags.iter().all(|l| *l == 0.0),
        "{survivor}: {lags:?}"
    );
}

/// Resumes the paused broker however the test ends.
struct Resume(String);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0])
            .status();
    }
}

/// The broker stops answering for a few seconds (its process paused, for less than
/// `bus.session_timeout`, so that groups keep their members) while orders keep coming:
/// placements are still accepted (the outboxes hold their events; admission control is set well
/// above the outage, as its default is meant to be above a broker's hiccup but not a real
/// outage), `/health` says which outbox is stuck, and once the broker is back every event arrives
/// and every invariant holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_under_load_delays_events_but_loses_none() {
    let Ok(broker_pid) = std::env::var("EMPORIUM_TEST_KAFKA_PID") else {
        eprintln!(
            "skipped: needs EMPORIUM_TEST_KAFKA_PID, the broker process to pause (scripts/dev-services)"
        );
        return;
    };
    let Some(cluster) = Cluster::start(
        "a_broker_outage_under_load_delays_events_but_loses_none",
        &[],
        &[
            ("EMPORIUM_BUS__OUTBOX_MAX_AGE", "1s"),
            ("EMPORIUM_MAX_SAGA_BACKLOG", "30s"),
        ],
    )
    .await
    else {
        return;
    };
    let admin = cluster.gateway.admin().await;
    let (products, initial, customers) = shop(&cluster.gateway, &admin, 4, 30, 3).await;
    let orders_process = cluster
        .instances
        .iter()
        .find(|(name, _)| *name == "orders")
        .map(|(_, p)| p)
        .unwrap();
    let placed = std::sync::atomic::AtomicUsize::new(0);
    let outage = async {
        cluster
            .gateway
            .wait_for("the stream under way", || async {
                placed.load(std::sync::atomic::Ordering::SeqCst) >= 20
            })
            .await;
        let paused = std::process::Command::new("kill")
            .args(["-STOP", &broker_pid])
            .status()
            .unwrap();
        assert!(paused.success(), "cannot pause the broker {broker_pid}");
        let resume = Resume(broker_pid.clone());
        let started = tokio::time::Instant::now();
        // Readiness sees it: the orders outbox holds events older than bus.outbox_max_age.
        let mut reported = None;
        while started.elapsed() < std::time::Duration::from_secs(4) {
            let health = orders_process.get("/health").await;
            let status = health.status();
            let body: Value = health.json().await.unwrap();
            if status == 503 && body["checks"]["orders-outbox"] == "DOWN" {
                reported = Some(body);
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        drop(resume);
        reported
    };
    let stream = stream_orders(
        &cluster.gateway,
        &customers,
        &products,
        80,
        std::time::Duration::from_millis(20),
        &placed,
    );
    let (placed_orders, reported) = tokio::join!(stream, outage);
    let reported = reported.expect("/health of orders reported its stuck outbox during the outage");
    assert_eq!(reported["checks"]["orders"], "UP", "{reported}");
    assert_nothing_lost_or_duplicated(&cluster.gateway, &admin, &placed_orders, &initial).await;
    // Ready again everywhere.
    for (name, process) in &cluster.instances {
        cluster
            .gateway
            .wait_for(&format!("{name} ready again"), || async {
                process.get("/health").await.status() == 200
            })
            .await;
    }
}
