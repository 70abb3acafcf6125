//! The composition root of the embedded platform: one process, every service, the event log, the
//! relays, the consumers and the gateway's HTTP server.

use std::{fs::File, net::SocketAddr, sync::Arc};

use anyhow::{Context, bail};
use axum::{Router, extract::DefaultBodyLimit, middleware};
use emporium_platform::{
    api,
    auth::Tokens,
    bus::{EventBus, SqliteEventLog, dlq},
    config::Config,
    http::{self, Health, HealthCheck},
    service::{Service, ServiceContext, Workers},
    storage::{Db, relay::Relay},
    telemetry,
};
use tokio::{net::TcpListener, sync::watch, task::JoinSet};
use tower_http::timeout::TimeoutLayer;

/// Every service of the platform, in start order.
pub fn implemented() -> Vec<Arc<dyn Service>> {
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

/// Every service of the platform; each owns a database named after it.
pub const SERVICES: [&str; 9] = [
    "users",
    "catalog",
    "inventory",
    "orders",
    "payments",
    "shipping",
    "notifications",
    "recommendations",
    "promotions",
];

/// The operations database: dead letters and other platform-wide records.
const OPERATIONS: &str = "operations";

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

/// The platform's storage: the event log, a database per service, the operations database.
pub struct Stores {
    pub bus: Arc<dyn EventBus>,
    pub services: Vec<(&'static str, Db)>,
    pub operations: Db,
    pub dead_letters: dlq::DeadLetterStore,
    _lock: DataDirLock,
}

impl Stores {
    pub async fn open(config: &Config) -> anyhow::Result<Stores> {
        let lock = DataDirLock::acquire(config)?;
        let log = SqliteEventLog::open(&config.sqlite_path("events"), config.bus.partitions)
            .await
            .context("cannot open the event log")?;
        let bus: Arc<dyn EventBus> = Arc::new(log);
        let mut services = Vec::with_capacity(SERVICES.len());
        for name in SERVICES {
            let db = Db::open_sqlite(name, &config.sqlite_path(name))
                .await
                .with_context(|| format!("cannot open the {name} database"))?;
            services.push((name, db));
        }
        let operations = Db::open_sqlite(OPERATIONS, &config.sqlite_path(OPERATIONS))
            .await
            .context("cannot open the operations database")?;
        operations
            .migrate(dlq::MIGRATIONS)
            .await
            .context("cannot migrate the operations database")?;
        let dead_letters = dlq::DeadLetterStore::new(operations.clone(), bus.clone());
        Ok(Stores {
            bus,
            services,
            operations,
            dead_letters,
            _lock: lock,
        })
    }

    async fn close(&self) {
        for (_, db) in &self.services {
            db.close().await;
        }
        self.operations.close().await;
    }
}

/// A started platform.
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

pub async fn start(config: Config) -> anyhow::Result<Running> {
    // Install the recorder before anything records.
    telemetry::metrics();
    let stores = Stores::open(&config).await?;
    let (stop, stop_rx) = watch::channel(false);
    // Relays stop last, after the consumers, so that what the last batches emit is published too.
    let (stop_relays, relays_stop_rx) = watch::channel(false);

    let mut relays = JoinSet::new();
    for (_, db) in &stores.services {
        relays.spawn(
            Relay::new(db.clone(), stores.bus.clone(), config.bus.relay_batch)
                .run(relays_stop_rx.clone()),
        );
    }
    let config = Arc::new(config);
    let tokens = Tokens::load(config.jwt_secret.as_deref(), &config.data_dir)
        .context("cannot read or create the token secret in the data directory")?;
    let mut api = Router::new();
    let mut workers = Vec::new();
    let live = crate::operations::LiveFeed::new();
    let operations: Arc<dyn Service> = Arc::new(crate::operations::OperationsService {
        dead_letters: stores.dead_letters.clone(),
        live: live.clone(),
    });
    for service in implemented().into_iter().chain([operations]) {
        let db = stores
            .services
            .iter()
            .chain([&(OPERATIONS, stores.operations.clone())])
            .find(|(name, _)| *name == service.name())
            .map(|(_, db)| db.clone())
            .with_context(|| format!("no database for service {}", service.name()))?;
        db.migrate(service.migrations())
            .await
            .with_context(|| format!("cannot migrate the {} database", service.name()))?;
        let ctx = ServiceContext {
            name: service.name(),
            db,
            bus: stores.bus.clone(),
            config: config.clone(),
            tokens: tokens.clone(),
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

    // The services' routes, reached by the gateway in process (distributed: over HTTP).
    let services = api
        .fallback(http::not_found)
        .layer(axum::Extension(tokens.clone()))
        .layer(DefaultBodyLimit::max(config.http.body_limit));
    let gateway = emporium_gateway::Gateway {
        upstreams: emporium_gateway::client::Upstreams::in_process(services),
        tokens: tokens.clone(),
        events: Arc::new(move || live.subscribe()),
        config: config.gateway.clone(),
        body_limit: config.http.body_limit,
    }
    .router();
    let app = router(&config, &stores, gateway, tokens);
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

fn router(config: &Config, stores: &Stores, gateway: Router, tokens: Arc<Tokens>) -> Router {
    let mut checks: Vec<(String, Arc<dyn HealthCheck>)> = stores
        .services
        .iter()
        .map(|(name, db)| {
            (
                (*name).to_owned(),
                Arc::new(db.clone()) as Arc<dyn HealthCheck>,
            )
        })
        .collect();
    checks.push(("event-log".to_owned(), Arc::new(stores.bus.clone())));
    checks.push((OPERATIONS.to_owned(), Arc::new(stores.operations.clone())));
    let health = Health {
        service: "gateway".to_owned(),
        checks,
    };
    let refresh = {
        let bus = stores.bus.clone();
        let services = stores.services.clone();
        let dead_letters = stores.dead_letters.clone();
        move || {
            let bus = bus.clone();
            let services = services.clone();
            let dead_letters = dead_letters.clone();
            async move { refresh_gauges(bus.as_ref(), &services, &dead_letters).await }
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
        .merge(gateway)
        .merge(crate::dashboard::router(config.admin_email.is_some()))
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
    services: &[(&'static str, Db)],
    dead_letters: &dlq::DeadLetterStore,
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
    for (name, db) in services {
        if let Ok(backlog) = db.outbox_backlog().await {
            metrics::gauge!("emporium_outbox_backlog", "service" => *name).set(backlog as f64);
        }
    }
    if let Ok(pending) = dead_letters.pending().await {
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
