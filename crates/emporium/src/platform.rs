//! The composition root: what a process runs ([`Part`]: everything, one service, or the gateway)
//! on the backends the configuration names (SQLite files, the embedded log and an in-process
//! cache, or PostgreSQL, Kafka and Redis), with the relays, the consumers and the HTTP server.

use std::{fs::File, net::SocketAddr, sync::Arc};

use anyhow::{Context, bail};
use axum::{Router, extract::DefaultBodyLimit, middleware};
use emporium_gateway::client::Upstreams;
use emporium_platform::{
    api,
    auth::Tokens,
    bus::{EventBus, OutboxLog, dlq},
    cache::{Cache, MemoryCache, RedisCache},
    config::Config,
    http::{self, Health, HealthCheck},
    service::{Service, ServiceContext, Workers},
    storage::{Db, Dialect, relay::Relay},
    telemetry,
};
use tokio::{net::TcpListener, sync::watch, task::JoinSet};
use tower_http::timeout::TimeoutLayer;

/// What one process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Every service, the operations endpoints and the gateway, in process (`emporium up`).
    Everything,
    /// One service, with its own `/api` routes, `/health` and `/metrics` (`emporium serve <name>`).
    Service(&'static str),
    /// The gateway alone, reaching the services over HTTP (`emporium gateway`).
    Gateway,
}

/// Every service of the platform, in start order.
pub fn services() -> Vec<Arc<dyn Service>> {
    vec![
        Arc::new(emporium_users::UsersService),
        Arc::new(emporium_catalog::CatalogService),
        Arc::new(emporium_inventory::InventoryService),
        Arc::new(emporium_orders::OrdersService),
        Arc::new(emporium_payments::PaymentsService),
        Arc::new(emporium_shipping::ShippingService),
        Arc::new(emporium_notifications::NotificationsService),
        Arc::new(emporium_recommendations::RecommendationsService),
        Arc::new(emporium_promotions::PromotionsService),
    ]
}

/// The operations service: the admin event index, statistics, dead letters and the live feed.
pub const OPERATIONS: &str = crate::operations::NAME;

/// Every name `emporium serve` accepts: each owns a database named after it.
pub fn service_names() -> Vec<&'static str> {
    services()
        .iter()
        .map(|s| s.name())
        .chain([OPERATIONS])
        .collect()
}

/// The name as `emporium serve` knows it, or an error listing the known ones.
pub fn service_name(name: &str) -> anyhow::Result<&'static str> {
    service_names()
        .into_iter()
        .find(|known| *known == name)
        .with_context(|| {
            format!(
                "no service `{name}`; the services are {}",
                service_names().join(", ")
            )
        })
}

/// Holds the data directory for this process: two platforms on one directory would each think they
/// own the event log's offsets.
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    pub fn acquire(config: &Config) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!(
                "cannot create the data directory {} (data_dir)",
                config.data_dir.display()
            )
        })?;
        let path = config.data_dir.join(".lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        if file.try_lock().is_err() {
            bail!(
                "the data directory {} is in use by another Emporium process; stop it first or choose another data_dir",
                config.data_dir.display()
            );
        }
        Ok(DataDirLock { _file: file })
    }
}

/// The event bus the configuration names: Kafka, or the embedded log in the data directory (also
/// returned as itself, to attach the SQLite databases to).
async fn open_bus(config: &Config) -> anyhow::Result<(Arc<dyn EventBus>, Option<OutboxLog>)> {
    if let Some(brokers) = &config.kafka_brokers {
        use emporium_platform::bus::kafka::{KafkaEventLog, KafkaOptions};
        let options = KafkaOptions {
            namespace: config.namespace.clone().unwrap_or_default(),
            session_timeout: config.bus.session_timeout,
            ..KafkaOptions::new(brokers, config.bus.partitions)
        };
        let kafka = KafkaEventLog::connect_with(options)
            .await
            .with_context(|| format!("cannot reach the Kafka brokers {brokers} (kafka_brokers)"))?;
        return Ok((Arc::new(kafka), None));
    }
    let log = OutboxLog::open(&config.sqlite_path("events"), config.bus.partitions)
        .await
        .context("cannot open the event log")?;
    Ok((Arc::new(log.clone()), Some(log)))
}

/// A service's database: a SQLite file in the data directory, or its own database on the
/// PostgreSQL server.
async fn open_db(config: &Config, name: &str) -> anyhow::Result<Db> {
    if let Some(url) = &config.database_url {
        let database = match &config.namespace {
            Some(namespace) => format!("{namespace}_{name}"),
            None => name.to_owned(),
        };
        return Db::open_postgres(&database, url).await.with_context(|| {
            format!("cannot open the {name} database on the PostgreSQL server (database_url)")
        });
    }
    Db::open_sqlite(name, &config.sqlite_path(name))
        .await
        .with_context(|| format!("cannot open the {name} database"))
}

/// Bytes of keys and values the in-process cache holds (shared by every service of the process).
const MEMORY_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Prefix of every key this platform stores in Redis, so that the server can be shared.
const REDIS_KEY_PREFIX: &str = "emporium:";

/// The one cache of a process: Redis, shared by every instance, when `redis_url` is set; else an
/// in-process cache. A Redis that cannot be reached stops start-up rather than falling back to a
/// cache per instance, which the invalidations made by other instances would not reach.
async fn open_cache(config: &Config) -> anyhow::Result<Arc<dyn Cache>> {
    if let Some(url) = &config.redis_url {
        // The URL is not repeated: it may carry a password.
        // Keys of one namespace stay apart from another's on a shared server.
        let prefix = match &config.namespace {
            Some(namespace) => format!("{REDIS_KEY_PREFIX}{namespace}:"),
            None => REDIS_KEY_PREFIX.to_owned(),
        };
        let redis = RedisCache::connect(url, prefix)
            .await
            .context("cannot reach the Redis server (redis_url)")?;
        return Ok(Arc::new(redis));
    }
    Ok(Arc::new(MemoryCache::new(MEMORY_CACHE_BYTES)))
}

/// The storage of one process: the event bus and the databases of the services it runs.
pub struct Stores {
    pub bus: Arc<dyn EventBus>,
    pub dbs: Vec<(&'static str, Db)>,
    _lock: Option<DataDirLock>,
}

impl Stores {
    /// Opens the bus and the databases of `names` (with their platform tables migrated).
    pub async fn open(config: &Config, names: &[&'static str]) -> anyhow::Result<Stores> {
        // SQLite files and the embedded log belong to one process at a time.
        let lock = if config.database_url.is_none() || config.kafka_brokers.is_none() {
            Some(DataDirLock::acquire(config)?)
        } else {
            None
        };
        let (bus, embedded) = open_bus(config).await?;
        let mut dbs = Vec::with_capacity(names.len());
        for name in names {
            let db = open_db(config, name).await?;
            if *name == OPERATIONS {
                db.migrate(dlq::MIGRATIONS)
                    .await
                    .context("cannot migrate the operations database")?;
            }
            // A SQLite database's outbox is the embedded log's source; PostgreSQL's is relayed.
            if let Some(log) = &embedded
                && db.dialect() == Dialect::Sqlite
            {
                log.attach(&db)
                    .await
                    .with_context(|| format!("cannot serve the {name} outbox as a log"))?;
            }
            dbs.push((*name, db));
        }
        Ok(Stores {
            bus,
            dbs,
            _lock: lock,
        })
    }

    pub fn db(&self, name: &str) -> Option<&Db> {
        self.dbs.iter().find(|(n, _)| *n == name).map(|(_, db)| db)
    }

    /// The dead-letter store, where the operations database is open.
    pub fn dead_letters(&self) -> Option<dlq::DeadLetterStore> {
        self.db(OPERATIONS)
            .map(|db| dlq::DeadLetterStore::new(db.clone(), self.bus.clone()))
    }

    async fn close(&self) {
        for (_, db) in &self.dbs {
            db.close().await;
        }
    }
}

/// Runs every migration of `names` (the service's tables and the platform's own) and returns.
pub async fn migrate(config: &Config, names: &[&'static str]) -> anyhow::Result<()> {
    let stores = Stores::open(config, names).await?;
    let operations = operations_service(&stores);
    for service in services().into_iter().chain(operations) {
        if let Some(db) = stores.db(service.name()) {
            db.migrate(service.migrations())
                .await
                .with_context(|| format!("cannot migrate the {} database", service.name()))?;
        }
    }
    stores.close().await;
    Ok(())
}

fn operations_service(stores: &Stores) -> Option<Arc<dyn Service>> {
    Some(Arc::new(crate::operations::OperationsService {
        dead_letters: stores.dead_letters()?,
        live: crate::operations::LiveFeed::new(),
    }))
}

/// A started process.
pub struct Running {
    workers: Vec<Workers>,
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    stop_relays: watch::Sender<bool>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    relays: JoinSet<()>,
    stores: Stores,
    grace: std::time::Duration,
}

/// Starts what `part` names, on the backends the configuration names.
pub async fn start(config: Config, part: Part) -> anyhow::Result<Running> {
    // Install the recorder before anything records.
    telemetry::metrics();
    let names: Vec<&'static str> = match part {
        Part::Everything => service_names(),
        Part::Service(name) => vec![name],
        Part::Gateway => Vec::new(),
    };
    if part != Part::Everything && config.jwt_secret.is_none() {
        bail!(
            "jwt_secret must be set when services run as separate processes: they must all verify the same tokens"
        );
    }
    let stores = Stores::open(&config, &names).await?;
    // Only services use the cache: the gateway alone never connects to Redis.
    let cache = match part {
        Part::Gateway => None,
        Part::Everything | Part::Service(_) => Some(open_cache(&config).await?),
    };
    let (stop, stop_rx) = watch::channel(false);
    // Relays stop last, after the consumers, so that what the last batches emit is published too.
    let (stop_relays, relays_stop_rx) = watch::channel(false);

    let mut relays = JoinSet::new();
    for (_, db) in stores.dbs.iter().filter(|(_, db)| !db.is_outbox_log()) {
        relays.spawn(
            Relay::new(db.clone(), stores.bus.clone(), config.bus.relay_batch)
                .run(relays_stop_rx.clone()),
        );
    }
    let config = Arc::new(config);
    let tokens = Tokens::load(config.jwt_secret.as_deref(), &config.data_dir)
        .context("cannot read or create the token secret in the data directory")?;
    let live = crate::operations::LiveFeed::new();
    let mut api = Router::new();
    let mut workers = Vec::new();
    let operations: Option<Arc<dyn Service>> =
        stores
            .dead_letters()
            .map(|dead_letters| -> Arc<dyn Service> {
                Arc::new(crate::operations::OperationsService {
                    dead_letters,
                    live: live.clone(),
                })
            });
    // The process serving the admin statistics reports every service's group, wherever it runs.
    if operations.is_some() {
        for service in services() {
            let topics = service.topics();
            let topics: Vec<&str> = topics.iter().map(|t| t.as_str()).collect();
            stores.bus.watch_group(service.name(), &topics);
        }
    }
    for service in services().into_iter().chain(operations) {
        let (Some(db), Some(cache)) = (stores.db(service.name()).cloned(), cache.clone()) else {
            continue;
        };
        db.migrate(service.migrations())
            .await
            .with_context(|| format!("cannot migrate the {} database", service.name()))?;
        let ctx = ServiceContext {
            name: service.name(),
            db,
            bus: stores.bus.clone(),
            config: config.clone(),
            tokens: tokens.clone(),
            cache,
            stop: stop_rx.clone(),
        };
        api = api.merge(service.router(&ctx));
        let mut service_workers = Workers::default();
        service
            .start(&ctx, &mut service_workers)
            .await
            .with_context(|| format!("cannot start the {} service", service.name()))?;
        workers.push(service_workers);
    }

    if part == Part::Gateway && config.kafka_brokers.is_some() {
        let instance = uuid::Uuid::now_v7().to_string();
        let mut feed = Workers::default();
        feed.keep(
            live.follow(stores.bus.as_ref(), &instance)
                .await
                .context("cannot follow the event bus for subscriptions and the dashboard")?,
        );
        workers.push(feed);
    }
    // The services' routes, as a service process serves them (and the embedded gateway calls them).
    let services = api
        .fallback(http::not_found)
        .layer(axum::Extension(tokens.clone()))
        .layer(DefaultBodyLimit::max(config.http.body_limit));
    let upstreams = match part {
        Part::Everything => Some(Upstreams::in_process(services.clone())),
        Part::Gateway => Some(Upstreams::over_http(
            &config.gateway.services,
            config.http.request_timeout,
        )),
        Part::Service(_) => None,
    };
    let front = match upstreams {
        Some(upstreams) => emporium_gateway::Gateway {
            upstreams,
            tokens: tokens.clone(),
            events: Arc::new(move || live.subscribe()),
            config: config.gateway.clone(),
            body_limit: config.http.body_limit,
        }
        .router()
        .merge(crate::dashboard::router(config.admin_email.is_some())),
        None => services,
    };
    // Redis is a dependency worth reporting; the in-process cache cannot be down.
    let shared_cache = cache.filter(|_| config.redis_url.is_some());
    let app = router(&config, &stores, shared_cache, front, part, tokens);
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (listen)", config.listen))?;
    let addr = listener.local_addr()?;
    let mut shutdown = stop_rx.clone();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
    });
    Ok(Running {
        workers,
        addr,
        stop,
        stop_relays,
        server,
        relays,
        stores,
        grace: config.http.shutdown_grace,
    })
}

fn router(
    config: &Config,
    stores: &Stores,
    shared_cache: Option<Arc<dyn Cache>>,
    front: Router,
    part: Part,
    tokens: Arc<Tokens>,
) -> Router {
    let mut checks: Vec<(String, Arc<dyn HealthCheck>)> = stores
        .dbs
        .iter()
        .map(|(name, db)| {
            (
                (*name).to_owned(),
                Arc::new(db.clone()) as Arc<dyn HealthCheck>,
            )
        })
        .collect();
    checks.extend(stores.dbs.iter().map(|(name, db)| {
        (
            format!("{name}-outbox"),
            Arc::new(http::OutboxCheck {
                db: db.clone(),
                max_age: config.bus.outbox_max_age,
            }) as Arc<dyn HealthCheck>,
        )
    }));
    checks.push(("event-log".to_owned(), Arc::new(stores.bus.clone())));
    if let Some(cache) = shared_cache {
        checks.push(("cache".to_owned(), Arc::new(cache)));
    }
    let health = Health {
        service: match part {
            Part::Service(name) => name.to_owned(),
            Part::Everything | Part::Gateway => "gateway".to_owned(),
        },
        checks,
    };
    let refresh = {
        let bus = stores.bus.clone();
        let dbs = stores.dbs.clone();
        let dead_letters = stores.dead_letters();
        move || {
            let bus = bus.clone();
            let dbs = dbs.clone();
            let dead_letters = dead_letters.clone();
            async move { refresh_gauges(bus.as_ref(), &dbs, dead_letters.as_ref()).await }
        }
    };
    let openapi = crate::openapi::json();
    http::ops_router(health, refresh)
        .route(
            "/api/openapi.json",
            axum::routing::get(move || {
                let openapi = openapi.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        openapi,
                    )
                }
            }),
        )
        .merge(front)
        .fallback(http::not_found)
        .layer(axum::Extension(tokens))
        // Extractors reading the body stop at the limit and answer 413 PAYLOAD_TOO_LARGE.
        .layer(DefaultBodyLimit::max(config.http.body_limit))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            config.http.request_timeout,
        ))
        .layer(middleware::from_fn(api::problems_everywhere))
        .layer(middleware::from_fn(telemetry::http_layer))
}

/// Gauges computed at scrape time: consumer lag, outbox backlog, pending dead letters.
async fn refresh_gauges(
    bus: &dyn EventBus,
    dbs: &[(&'static str, Db)],
    dead_letters: Option<&dlq::DeadLetterStore>,
) {
    if let Ok(lags) = bus.lag().await {
        let mut per_group: std::collections::BTreeMap<(String, String), u64> = Default::default();
        for lag in lags {
            *per_group
                .entry((lag.group.clone(), lag.topic.clone()))
                .or_default() += lag.lag();
        }
        for ((group, topic), lag) in per_group {
            metrics::gauge!("emporium_consumer_lag", "group" => group, "topic" => topic)
                .set(lag as f64);
        }
    }
    for (name, db) in dbs {
        if let Ok(backlog) = db.outbox_backlog().await {
            metrics::gauge!("emporium_outbox_backlog", "service" => *name).set(backlog as f64);
        }
    }
    if let Some(dead_letters) = dead_letters
        && let Ok(pending) = dead_letters.pending().await
    {
        metrics::gauge!("emporium_dead_letters_pending").set(pending as f64);
    }
}

impl Running {
    /// Stops in order: no new requests (in-flight ones get the grace period), consumers finish their
    /// batch and commit, relays publish what is left, databases close.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        match tokio::time::timeout(self.grace, &mut self.server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server ended with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server task failed"),
            Err(_) => {
                tracing::warn!("requests still running after the grace period; closing them");
                self.server.abort();
            }
        }
        for workers in self.workers {
            workers.stop().await;
        }
        let _ = self.stop_relays.send(true);
        while self.relays.join_next().await.is_some() {}
        self.stores.close().await;
        Ok(())
    }
}
