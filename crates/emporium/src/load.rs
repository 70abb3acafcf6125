//! `emporium load`: a load generator for the order pipeline, spoken to over HTTP like any client.
//!
//! It logs in as the admin, creates its own products and customers, places orders at a fixed rate
//! (open loop) or as fast as `--concurrency` requests in flight allow (closed loop), and measures
//! placement latency (request → `202`) and saga latency (request → the order seen out of `PENDING`
//! and `CONFIRMED`). Then it waits for the platform to settle and checks the invariants of
//! CONTRACT §4 on what it created: no oversell, stock conserved, reservations matching the confirmed
//! orders, no order lost, nothing left `PENDING`.
//!
//! In the same run it measures the HTTP ceiling (`GET /health/live` with the same client at the
//! same concurrency), so the order rate can be read as a ratio. The raw SQLite commit rate is
//! `emporium bench-bus`'s job and is not repeated here.
//!
//! How sagas are observed, and why: one poller pages `GET /api/orders?status=PENDING` as the admin.
//! The orders service answers that from its `(status, created_at)` index, so a poll costs about the
//! number of sagas in flight, whatever the number of orders placed so far; an order of ours that was
//! accepted before a poll began and is absent from it has left `PENDING`. Polling each order by id
//! would cost at least one request per order (more with retries), and paging `status=CONFIRMED`
//! would read every confirmed order ever placed on each poll. The poller never runs more than half
//! the time (it sleeps at least as long as its last poll took), so it cannot dominate the load. The
//! outcome of each order (confirmed or cancelled, and the server's own timestamps) is read once,
//! after the run, per customer.
//!
//! Tokens expire after 15 minutes and runs may last longer (100,000 orders at 100/s): the admin
//! and every customer log in again every [`RENEW_EVERY`].

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt::Write as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail};
use chrono::{DateTime, Utc};
use clap::Args;
use emporium_platform::config::human_duration;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

#[derive(Args)]
pub struct LoadArgs {
    /// Base URL of the gateway, e.g. http://127.0.0.1:4000.
    #[arg(long)]
    url: String,
    /// Orders to place.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    orders: u64,
    /// Orders per second, scheduled by the clock whatever the responses do (open loop). Without
    /// it, orders go as fast as `--concurrency` requests in flight allow (closed loop).
    #[arg(long, value_parser = positive_rate)]
    rate: Option<f64>,
    /// Requests in flight without `--rate`; also the concurrency of the HTTP ceiling measurement.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=4096))]
    concurrency: u64,
    /// Print exactly one JSON line on stdout instead of the report (and no progress bar).
    #[arg(long)]
    json: bool,
    /// Admin account to set up with.
    #[arg(long, env = "EMPORIUM_ADMIN_EMAIL")]
    admin_email: String,
    /// Its password (better from the environment: a flag shows in the process list).
    #[arg(long, env = "EMPORIUM_ADMIN_PASSWORD", hide_env_values = true)]
    admin_password: String,
    /// Products to create and order from.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100))]
    products: u64,
    /// Customers to register and place orders as.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1000))]
    customers: u64,
    /// Initial stock of each product. By default there is enough for every order; a smaller
    /// number makes orders compete for stock, so that the oversell checks bite.
    #[arg(long, value_parser = clap::value_parser!(i64).range(0..=1_000_000_000))]
    stock: Option<i64>,
    /// How long to measure the HTTP ceiling (`GET /health/live`); `0s` skips it.
    #[arg(long, default_value = "3s", value_parser = human_duration::parse)]
    ceiling_time: Duration,
    /// The platform's saga timeout: how long after the last order to wait for sagas to end.
    #[arg(long, default_value = "30s", value_parser = human_duration::parse)]
    saga_timeout: Duration,
    /// Interval between polls for finished sagas (the resolution of the saga latency).
    #[arg(long, default_value = "50ms", value_parser = human_duration::parse)]
    poll: Duration,
}

fn positive_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 && rate <= 1_000_000.0 => Ok(rate),
        _ => Err(format!(
            "expected orders per second, more than 0, got `{text}`"
        )),
    }
}

/// Units per order line at most; with distinct products per order, also the most one order takes
/// of one product, which sizes the default stock.
const MAX_QUANTITY: u64 = 2;
/// Lines per order at most.
const MAX_LINES: usize = 3;
/// A safety cap on requests in flight in open-loop mode: beyond a few thousand the generator runs
/// out of sockets rather than measuring anything. Latency is still measured from the scheduled
/// time, so a request held back by the cap counts as slow.
const MAX_IN_FLIGHT: usize = 4096;
/// After the saga timeout, how long the platform's sweeper gets to cancel what is overdue (it looks
/// at least once a second) before a `PENDING` order counts as stuck.
const SWEEP_GRACE: Duration = Duration::from_secs(10);
/// How long setup steps and settling may take before the run gives up.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);
const PASSWORD: &str = "load-generator-password";

/// How often the generator's sessions log in again: well within the tokens' 15 minutes.
const RENEW_EVERY: Duration = Duration::from_secs(10 * 60);

/// A session's bearer token, replaced by [`renew_sessions`] before it expires.
#[derive(Clone)]
struct Token(Arc<Mutex<String>>);

impl Token {
    fn new(token: String) -> Self {
        Token(Arc::new(Mutex::new(token)))
    }

    fn get(&self) -> String {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, token: String) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = token;
    }
}

/// Logs the admin and every customer in again `every` ([`RENEW_EVERY`]), for as long as it runs.
/// A failed login keeps the old token (it is still valid for a while) and is tried at the next turn.
async fn renew_sessions(
    api: Api,
    fixture: Arc<Fixture>,
    admin_email: String,
    admin_password: String,
    every: Duration,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tick.tick().await;
        let sessions = std::iter::once((
            &fixture.admin,
            admin_email.as_str(),
            admin_password.as_str(),
        ))
        .chain(
            fixture
                .customers
                .iter()
                .map(|c| (&c.token, c.email.as_str(), PASSWORD)),
        );
        for (token, email, password) in sessions {
            match api
                .post::<SessionDoc>(
                    "/api/auth/login",
                    None,
                    &json!({"email": email, "password": password}),
                    StatusCode::OK,
                )
                .await
            {
                Ok(session) => token.set(session.access_token),
                Err(e) => {
                    tracing::warn!(email, error = %e, "cannot renew a session; keeping its token")
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------ HTTP

/// What went wrong with one request, as the report counts it.
#[derive(Debug)]
enum CallError {
    Network(String),
    Status {
        status: u16,
        code: Option<String>,
        detail: Option<String>,
    },
    /// A success status with a body that is not what the contract says.
    BadBody(String),
}

impl CallError {
    /// The key under `errors`: the problem `code`, else `HTTP_<status>`, or `NETWORK`.
    fn code(&self) -> String {
        match self {
            CallError::Network(_) => "NETWORK".into(),
            CallError::Status { status, code, .. } => {
                code.clone().unwrap_or_else(|| format!("HTTP_{status}"))
            }
            CallError::BadBody(_) => "BAD_RESPONSE".into(),
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Network(e) => write!(f, "network error: {e}"),
            CallError::Status {
                status,
                code,
                detail,
            } => write!(
                f,
                "HTTP {status} {}: {}",
                code.as_deref().unwrap_or("(no problem code)"),
                detail.as_deref().unwrap_or("")
            ),
            CallError::BadBody(e) => write!(f, "unexpected response body: {e}"),
        }
    }
}

impl std::error::Error for CallError {}

/// reqwest's message alone ("error sending request") hides the cause (refused, reset, timed out).
fn network(e: reqwest::Error) -> CallError {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let _ = write!(message, ": {cause}");
        source = cause.source();
    }
    CallError::Network(message)
}

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(url: &str) -> anyhow::Result<Api> {
        let base = url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--url must be an http:// URL, got `{url}`");
        }
        let http = reqwest::Client::builder()
            // Longer than the platform's own request timeout (10 s by default), so that a slow
            // answer is the platform's 503 rather than our guess.
            .timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            // Keep every connection an open-loop burst opened: closing them would make the next
            // burst pay for new TCP connections, which is the generator's cost, not the platform's.
            .pool_max_idle_per_host(MAX_IN_FLIGHT)
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Api { http, base })
    }

    /// Sends one request; `Ok` only for `expected`, with the JSON body (`Null` when empty).
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        token: Option<&str>,
        body: Option<&Value>,
        expected: StatusCode,
    ) -> Result<Value, CallError> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(network)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(network)?;
        let parsed = if bytes.is_empty() {
            Ok(Value::Null)
        } else {
            serde_json::from_slice::<Value>(&bytes)
        };
        if status != expected {
            let problem = parsed.unwrap_or(Value::Null);
            return Err(CallError::Status {
                status: status.as_u16(),
                code: problem["code"].as_str().map(str::to_owned),
                detail: problem["detail"].as_str().map(str::to_owned),
            });
        }
        parsed.map_err(|e| CallError::BadBody(e.to_string()))
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
        token: Option<&str>,
    ) -> Result<T, CallError> {
        let value = self
            .call(Method::GET, path, query, token, None, StatusCode::OK)
            .await?;
        serde_json::from_value(value).map_err(|e| CallError::BadBody(format!("{path}: {e}")))
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
        expected: StatusCode,
    ) -> Result<T, CallError> {
        let value = self
            .call(Method::POST, path, &[], token, Some(body), expected)
            .await?;
        serde_json::from_value(value).map_err(|e| CallError::BadBody(format!("{path}: {e}")))
    }

    /// Every page of a `{items, nextCursor}` listing.
    async fn all_pages<T: DeserializeOwned>(
        &self,
        path: &str,
        filter: &[(&str, &str)],
        token: &str,
    ) -> Result<Vec<T>, CallError> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut query: Vec<(&str, &str)> = filter.to_vec();
            query.push(("limit", "100"));
            if let Some(cursor) = cursor.as_deref() {
                query.push(("cursor", cursor));
            }
            let page: PageDoc<T> = self.get(path, &query, Some(token)).await?;
            items.extend(page.items);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(items),
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageDoc<T> {
    items: Vec<T>,
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionDoc {
    access_token: String,
    user: IdDoc,
}

#[derive(Deserialize)]
struct IdDoc {
    id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StockDoc {
    product_id: String,
    available: i64,
    reserved: i64,
    #[serde(default)]
    committed: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatsDoc {
    consumer_lag: Vec<LagDoc>,
}

#[derive(Deserialize)]
struct LagDoc {
    group: String,
    lag: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderDoc {
    id: String,
    status: String,
    cancellation_reason: Option<String>,
    items: Vec<ItemDoc>,
    created_at: DateTime<Utc>,
    #[serde(default)]
    timeline: Vec<TimelineDoc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ItemDoc {
    product_id: String,
    quantity: i64,
}

#[derive(Deserialize)]
struct TimelineDoc {
    status: Option<String>,
    at: DateTime<Utc>,
}

impl OrderDoc {
    /// When the orders service recorded `CONFIRMED`, if it ever did.
    fn confirmed_at(&self) -> Option<DateTime<Utc>> {
        self.timeline
            .iter()
            .find(|t| t.status.as_deref() == Some("CONFIRMED"))
            .map(|t| t.at)
    }
}

// ---------------------------------------------------------------------------- the run

/// What the run created: who places orders, and what they order.
struct Fixture {
    admin: Token,
    customers: Vec<Customer>,
    products: Vec<String>,
    stock: i64,
}

struct Customer {
    id: String,
    email: String,
    token: Token,
}

/// One placement attempt.
struct Placed {
    /// When it was due (open loop) or sent (closed loop): latencies are measured from here.
    started: Instant,
    latency: Duration,
    outcome: Result<String, String>,
}

/// Accepted orders on their way through the saga, shared by the placers and the observer.
#[derive(Default)]
struct Tracker {
    /// Accepted, not yet seen out of `PENDING`: when the `202` arrived.
    outstanding: HashMap<String, Instant>,
    /// Seen out of `PENDING`: when.
    finished: HashMap<String, Instant>,
    last_accepted: Option<Instant>,
}

struct Observed {
    polls: u64,
    pages: u64,
    errors: u64,
    /// Gave up waiting: some orders were still `PENDING` after the saga timeout and the grace.
    timed_out: bool,
}

pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    let connections = usize::try_from(args.concurrency).unwrap_or(MAX_IN_FLIGHT);
    let api = Api::new(&args.url)?;
    let say = |message: &str| {
        if !args.json {
            eprintln!("{message}");
        }
    };
    api.call(Method::GET, "/health/live", &[], None, None, StatusCode::OK)
        .await
        .with_context(|| format!("{} does not answer GET /health/live", api.base))?;
    let admin: SessionDoc = api
        .post(
            "/api/auth/login",
            None,
            &json!({"email": args.admin_email, "password": args.admin_password}),
            StatusCode::OK,
        )
        .await
        .context("admin login (EMPORIUM_ADMIN_EMAIL, EMPORIUM_ADMIN_PASSWORD)")?;
    let admin = admin.access_token;

    // Start from a quiet platform, so that the ceiling and the first orders do not compete with
    // whatever an earlier run left in the consumers' queues.
    if !settle(&api, &admin).await? {
        say("The platform is still busy (consumer lag) after a minute; measuring anyway.");
    }
    let health_live_per_sec = if args.ceiling_time.is_zero() {
        None
    } else {
        say(&format!(
            "Measuring the HTTP ceiling: GET /health/live, {} in flight, {:?}…",
            args.concurrency, args.ceiling_time
        ));
        Some(health_live_rate(&api, connections, args.ceiling_time).await?)
    };

    say("Creating products and customers…");
    let fixture = set_up(&api, admin, &args).await?;

    let tracker = Arc::new(Mutex::new(Tracker::default()));
    let placing_done = Arc::new(AtomicBool::new(false));
    let progress = if args.json {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(args.orders);
        if let Ok(style) =
            ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} placed, {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message("0 sagas ended");
        bar
    };
    let fixture = Arc::new(fixture);
    let renewing = tokio::spawn(renew_sessions(
        api.clone(),
        fixture.clone(),
        args.admin_email.clone(),
        args.admin_password.clone(),
        RENEW_EVERY,
    ));
    let observer = tokio::spawn(observe(
        api.clone(),
        fixture.admin.clone(),
        tracker.clone(),
        placing_done.clone(),
        args.poll,
        args.saga_timeout,
        progress.clone(),
    ));
    let began = Instant::now();
    let placed = match args.rate {
        Some(rate) => {
            place_open_loop(
                &api,
                &fixture,
                &tracker,
                &progress,
                args.orders,
                rate,
                began,
            )
            .await
        }
        None => {
            place_closed_loop(
                &api,
                &fixture,
                &tracker,
                &progress,
                args.orders,
                connections,
            )
            .await
        }
    };
    let placing_secs = placed
        .iter()
        .map(|p| p.started + p.latency)
        .max()
        .map_or(0.0, |end| end.duration_since(began).as_secs_f64());
    placing_done.store(true, Ordering::Release);
    let observed = observer.await.context("the saga observer failed")?;
    progress.finish_and_clear();

    say("Waiting for the platform to settle…");
    let settled = settle(&api, &fixture.admin.get()).await?;
    let orders: Vec<OrderDoc> = {
        let mut all = Vec::new();
        for customer in &fixture.customers {
            all.extend(
                api.all_pages::<OrderDoc>(
                    "/api/orders",
                    &[("userId", customer.id.as_str())],
                    &fixture.admin.get(),
                )
                .await
                .context("reading back the orders placed")?,
            );
        }
        all
    };
    let stock: Vec<StockDoc> = api
        .all_pages("/api/inventory", &[], &fixture.admin.get())
        .await
        .context("reading the stock levels")?;

    renewing.abort();
    let finished = std::mem::take(&mut tracker.lock().unwrap_or_else(|e| e.into_inner()).finished);
    let report = Report::build(ReportInput {
        args: &args,
        fixture: &fixture,
        placed: &placed,
        began,
        placing_secs,
        finished: &finished,
        observed: &observed,
        orders: &orders,
        stock: &stock,
        settled,
        health_live_per_sec,
    })?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.human(&args));
    }
    if !report.invariants_hold {
        bail!(
            "invariants failed: {}",
            report.invariant_failures.join("; ")
        );
    }
    Ok(())
}

/// Waits until every consumer group has caught up. Two readings in a row, 100 ms apart: an event
/// still in an outbox is not lag yet, and the second look gives the relay time to publish it.
/// `false` when the platform did not settle within [`SETTLE_LIMIT`].
async fn settle(api: &Api, admin: &str) -> anyhow::Result<bool> {
    let deadline = Instant::now() + SETTLE_LIMIT;
    let mut quiet_readings = 0;
    while Instant::now() < deadline {
        let stats: StatsDoc = api
            .get("/api/admin/stats", &[], Some(admin))
            .await
            .context("GET /api/admin/stats")?;
        if stats.consumer_lag.iter().all(|g| g.lag == 0) {
            quiet_readings += 1;
            if quiet_readings == 2 {
                return Ok(true);
            }
        } else {
            quiet_readings = 0;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(false)
}

/// `GET /health/live` answered per second with `connections` requests in flight for `time`: what
/// this client and the gateway's HTTP stack can do at all on this machine.
async fn health_live_rate(api: &Api, connections: usize, time: Duration) -> anyhow::Result<f64> {
    let began = Instant::now();
    let deadline = began + time;
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (api, ok, failed) = (api.clone(), ok.clone(), failed.clone());
        workers.spawn(async move {
            while Instant::now() < deadline {
                let counter = match api
                    .call(Method::GET, "/health/live", &[], None, None, StatusCode::OK)
                    .await
                {
                    Ok(_) => &ok,
                    Err(_) => &failed,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let elapsed = began.elapsed().as_secs_f64();
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} GET /health/live requests failed while measuring the HTTP ceiling");
    }
    Ok(ok.load(Ordering::Relaxed) as f64 / elapsed)
}

/// Creates the products (with their stock) and registers the customers, then waits until the
/// stock is visible and the orders service knows the products, so that no order meets a product
/// the platform has not heard of yet.
async fn set_up(api: &Api, admin: String, args: &LoadArgs) -> anyhow::Result<Fixture> {
    // Enough for every order: an order takes at most MAX_QUANTITY units of any one product.
    let stock = args.stock.unwrap_or_else(|| {
        i64::try_from(args.orders.saturating_mul(MAX_QUANTITY)).unwrap_or(i64::MAX)
    });
    let run = uuid::Uuid::now_v7().simple().to_string();
    // The random tail of a v7 id: two runs started in the same millisecond still differ.
    let run = run.get(20..).unwrap_or(&run).to_owned();
    let mut products = Vec::new();
    for i in 0..args.products {
        let product: IdDoc = api
            .post(
                "/api/products",
                Some(&admin),
                &json!({
                    "name": format!("Load {run} product {i}"),
                    "description": "created by emporium load",
                    "category": "load",
                    "price": {"amount": fastrand::i64(500..=5000), "currency": "USD"},
                    "initialStock": stock,
                }),
                StatusCode::CREATED,
            )
            .await
            .context("creating a product (POST /api/products)")?;
        products.push(product.id);
    }
    let mut registering = tokio::task::JoinSet::new();
    for i in 0..args.customers {
        let api = api.clone();
        let email = format!("load-{run}-{i}@load.emporium.test");
        registering.spawn(async move {
            let session = api
                .post::<SessionDoc>(
                    "/api/auth/register",
                    None,
                    &json!({"email": email, "password": PASSWORD, "name": format!("Load customer {i}")}),
                    StatusCode::CREATED,
                )
                .await;
            session.map(|session| (email, session))
        });
    }
    let mut customers = Vec::new();
    while let Some(joined) = registering.join_next().await {
        let (email, session) = joined
            .context("a registration task failed")?
            .context("registering a customer (POST /api/auth/register)")?;
        customers.push(Customer {
            id: session.user.id,
            email,
            token: Token::new(session.access_token),
        });
    }
    let deadline = Instant::now() + SETTLE_LIMIT;
    for product in &products {
        loop {
            let visible = match api
                .get::<StockDoc>(&format!("/api/inventory/{product}"), &[], None)
                .await
            {
                Ok(levels) => levels.available == stock,
                Err(CallError::Status { status: 404, .. }) => false,
                Err(e) => return Err(anyhow!(e).context("waiting for the products' stock")),
            };
            if visible {
                break;
            }
            if Instant::now() > deadline {
                bail!("the stock of product {product} did not appear within {SETTLE_LIMIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The products' events are on the log now (inventory has seen them); once the orders group
    // has no lag, its price read model knows every product.
    loop {
        let stats: StatsDoc = api
            .get("/api/admin/stats", &[], Some(&admin))
            .await
            .context("GET /api/admin/stats")?;
        if stats
            .consumer_lag
            .iter()
            .any(|g| g.group == "orders" && g.lag == 0)
        {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the orders service did not catch up with the new products within {SETTLE_LIMIT:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Fixture {
        admin: Token::new(admin),
        customers,
        products,
        stock,
    })
}

/// A random order: 1–3 distinct products, 1–2 units each, paid with a card that succeeds.
fn order_body(products: &[String]) -> Value {
    let mut picked: Vec<&String> = products.iter().collect();
    fastrand::shuffle(&mut picked);
    picked.truncate(fastrand::usize(1..=MAX_LINES.min(products.len())));
    let items: Vec<Value> = picked
        .into_iter()
        .map(|product| json!({"productId": product, "quantity": fastrand::u64(1..=MAX_QUANTITY)}))
        .collect();
    json!({
        "items": items,
        "shippingAddress": {"name": "Load Generator", "line1": "1 Benchmark Way", "city": "Testville",
                            "postalCode": "12345", "country": "US"},
        "paymentMethod": {"token": "tok_visa"},
    })
}

/// Places one order, due at `started`, and registers it with the tracker when accepted.
async fn place_one(
    api: &Api,
    fixture: &Fixture,
    tracker: &Mutex<Tracker>,
    started: Instant,
) -> Placed {
    let customer = &fixture.customers[fastrand::usize(..fixture.customers.len())];
    let body = order_body(&fixture.products);
    let result = api
        .post::<IdDoc>(
            "/api/orders",
            Some(&customer.token.get()),
            &body,
            StatusCode::ACCEPTED,
        )
        .await;
    let now = Instant::now();
    let outcome = match result {
        Ok(order) => {
            let mut tracker = tracker.lock().unwrap_or_else(|e| e.into_inner());
            tracker.outstanding.insert(order.id.clone(), now);
            tracker.last_accepted = Some(now);
            Ok(order.id)
        }
        Err(e) => Err(e.code()),
    };
    Placed {
        started,
        latency: now.duration_since(started),
        outcome,
    }
}

/// Open loop: order `i` is due at `began + i / rate`, sent then whatever earlier ones are doing.
/// Its latency counts from when it was due, so a generator or server that falls behind shows up as
/// latency instead of silently lowering the rate (no coordinated omission).
async fn place_open_loop(
    api: &Api,
    fixture: &Arc<Fixture>,
    tracker: &Arc<Mutex<Tracker>>,
    progress: &ProgressBar,
    orders: u64,
    rate: f64,
    began: Instant,
) -> Vec<Placed> {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..orders {
        let due = began + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let (api, fixture, tracker, progress, in_flight) = (
            api.clone(),
            fixture.clone(),
            tracker.clone(),
            progress.clone(),
            in_flight.clone(),
        );
        tasks.spawn(async move {
            let _permit = in_flight.acquire_owned().await;
            let placed = place_one(&api, &fixture, &tracker, due).await;
            progress.inc(1);
            placed
        });
    }
    let mut placed = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        // A placer task cannot panic short of a bug; were it to, its order is simply not counted.
        if let Ok(one) = joined {
            placed.push(one);
        }
    }
    placed
}

/// Closed loop: `concurrency` placers, each sending its next order when the previous one is
/// answered.
async fn place_closed_loop(
    api: &Api,
    fixture: &Arc<Fixture>,
    tracker: &Arc<Mutex<Tracker>>,
    progress: &ProgressBar,
    orders: u64,
    concurrency: usize,
) -> Vec<Placed> {
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (api, fixture, tracker, progress, next) = (
            api.clone(),
            fixture.clone(),
            tracker.clone(),
            progress.clone(),
            next.clone(),
        );
        workers.spawn(async move {
            let mut placed = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < orders {
                placed.push(place_one(&api, &fixture, &tracker, Instant::now()).await);
                progress.inc(1);
            }
            placed
        });
    }
    let mut placed = Vec::new();
    while let Some(joined) = workers.join_next().await {
        if let Ok(mut some) = joined {
            placed.append(&mut some);
        }
    }
    placed
}

/// Follows accepted orders until each has left `PENDING` (see the module documentation for why by
/// paging the `PENDING` listing). Stops when placing is over and nothing is outstanding, or when
/// the saga timeout and the sweeper's grace have passed since the last accepted order.
async fn observe(
    api: Api,
    admin: Token,
    tracker: Arc<Mutex<Tracker>>,
    placing_done: Arc<AtomicBool>,
    poll: Duration,
    saga_timeout: Duration,
    progress: ProgressBar,
) -> Observed {
    let mut observed = Observed {
        polls: 0,
        pages: 0,
        errors: 0,
        timed_out: false,
    };
    loop {
        let done_placing = placing_done.load(Ordering::Acquire);
        let (outstanding, last_accepted) = {
            let tracker = tracker.lock().unwrap_or_else(|e| e.into_inner());
            (tracker.outstanding.len(), tracker.last_accepted)
        };
        if done_placing && outstanding == 0 {
            return observed;
        }
        if done_placing
            && last_accepted.is_none_or(|last| last.elapsed() > saga_timeout + SWEEP_GRACE)
        {
            observed.timed_out = true;
            return observed;
        }
        let began = Instant::now();
        if outstanding > 0 {
            observed.polls += 1;
            match pending_ids(&api, &admin.get(), &mut observed.pages).await {
                Ok(pending) => {
                    let seen = Instant::now();
                    let mut tracker = tracker.lock().unwrap_or_else(|e| e.into_inner());
                    let left: Vec<String> = tracker
                        .outstanding
                        .iter()
                        // Accepted before the poll began, so committed before the listing was read.
                        .filter(|(id, accepted)| **accepted < began && !pending.contains(*id))
                        .map(|(id, _)| id.clone())
                        .collect();
                    for id in left {
                        tracker.outstanding.remove(&id);
                        tracker.finished.insert(id, seen);
                    }
                    progress.set_message(format!("{} sagas ended", tracker.finished.len()));
                }
                Err(_) => observed.errors += 1,
            }
        }
        // At most half the time polling: a slow listing (many sagas in flight) spaces the polls out
        // instead of adding to the load that made it slow.
        tokio::time::sleep(poll.max(began.elapsed())).await;
    }
}

/// The ids of every `PENDING` order on the platform.
async fn pending_ids(
    api: &Api,
    admin: &str,
    pages: &mut u64,
) -> Result<HashSet<String>, CallError> {
    let mut ids = HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![("status", "PENDING"), ("limit", "100")];
        if let Some(cursor) = cursor.as_deref() {
            query.push(("cursor", cursor));
        }
        let page: PageDoc<IdDoc> = api.get("/api/orders", &query, Some(admin)).await?;
        *pages += 1;
        ids.extend(page.items.into_iter().map(|o| o.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(ids),
        }
    }
}

// ------------------------------------------------------------------------------ report

struct ReportInput<'a> {
    args: &'a LoadArgs,
    fixture: &'a Fixture,
    placed: &'a [Placed],
    began: Instant,
    placing_secs: f64,
    finished: &'a HashMap<String, Instant>,
    observed: &'a Observed,
    orders: &'a [OrderDoc],
    stock: &'a [StockDoc],
    settled: bool,
    health_live_per_sec: Option<f64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    mode: &'static str,
    rate: Option<f64>,
    concurrency: u64,
    orders: u64,
    accepted: u64,
    confirmed: u64,
    cancelled: BTreeMap<String, u64>,
    pending_after_settle: u64,
    /// First order due → last placement answered.
    duration_secs: f64,
    /// First order due → last saga seen confirmed.
    saga_secs: f64,
    accepted_per_sec: f64,
    sagas_per_sec: f64,
    placement_p50_ms: Option<f64>,
    placement_p95_ms: Option<f64>,
    placement_p99_ms: Option<f64>,
    placement_max_ms: Option<f64>,
    /// Request → seen confirmed by the poller (an upper bound, within about one poll interval).
    saga_p50_ms: Option<f64>,
    saga_p95_ms: Option<f64>,
    saga_p99_ms: Option<f64>,
    saga_max_ms: Option<f64>,
    /// The orders service's own clock: order created → `CONFIRMED`, millisecond resolution.
    saga_server_p50_ms: Option<f64>,
    saga_server_p99_ms: Option<f64>,
    saga_poll_ms: f64,
    observer_polls: u64,
    observer_pages: u64,
    /// The observer stopped waiting: orders were still `PENDING` after the saga timeout.
    observer_timed_out: bool,
    observer_errors: u64,
    health_live_per_sec: Option<f64>,
    accepted_vs_health_live: Option<f64>,
    errors: BTreeMap<String, u64>,
    settled: bool,
    invariants: BTreeMap<&'static str, bool>,
    invariants_hold: bool,
    invariant_failures: Vec<String>,
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    // Microseconds from 1 µs to an hour, three significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| anyhow!("histogram: {e}"))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// p-quantile in milliseconds, `None` when nothing was recorded.
fn quantile_ms(h: &Histogram<u64>, q: f64) -> Option<f64> {
    (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1000.0)
}

fn max_ms(h: &Histogram<u64>) -> Option<f64> {
    (!h.is_empty()).then(|| h.max() as f64 / 1000.0)
}

/// Rounded to what the measurement can tell apart, so the JSON stays readable.
fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

impl Report {
    fn build(input: ReportInput<'_>) -> anyhow::Result<Report> {
        let ReportInput {
            args,
            fixture,
            placed,
            began,
            placing_secs,
            finished,
            observed,
            orders,
            stock,
            settled,
            health_live_per_sec,
        } = input;
        let mut placement = histogram()?;
        let mut errors = BTreeMap::<String, u64>::new();
        let mut started_of = HashMap::new();
        for p in placed {
            placement.saturating_record(micros(p.latency));
            match &p.outcome {
                Ok(id) => {
                    started_of.insert(id.as_str(), p.started);
                }
                Err(code) => *errors.entry(code.clone()).or_default() += 1,
            }
        }
        let accepted = started_of.len() as u64;

        let mut saga = histogram()?;
        let mut saga_server = histogram()?;
        let mut confirmed = 0u64;
        let mut cancelled = BTreeMap::<String, u64>::new();
        let mut pending = 0u64;
        let mut last_confirmed: Option<Instant> = None;
        // Units each product should hold for orders that got through: reserved until shipped,
        // committed after. Cancelled orders hold nothing.
        let mut held = HashMap::<&str, i64>::new();
        let mut listed = HashSet::new();
        for order in orders {
            listed.insert(order.id.as_str());
            let confirmed_at = order.confirmed_at();
            match order.status.as_str() {
                "PENDING" => pending += 1,
                "CANCELLED" => {
                    *cancelled
                        .entry(
                            order
                                .cancellation_reason
                                .clone()
                                .unwrap_or_else(|| "UNKNOWN".into()),
                        )
                        .or_default() += 1;
                }
                _ => {
                    for item in &order.items {
                        *held.entry(item.product_id.as_str()).or_default() += item.quantity;
                    }
                }
            }
            let Some(confirmed_at) = confirmed_at else {
                continue;
            };
            confirmed += 1;
            let server_ms = (confirmed_at - order.created_at).num_milliseconds().max(0);
            saga_server.saturating_record(u64::try_from(server_ms).unwrap_or(0).max(1) * 1000);
            if let (Some(started), Some(seen)) =
                (started_of.get(order.id.as_str()), finished.get(&order.id))
            {
                saga.saturating_record(micros(seen.duration_since(*started)));
                last_confirmed = Some(last_confirmed.map_or(*seen, |l| l.max(*seen)));
            }
        }
        let saga_secs = last_confirmed.map_or(0.0, |last| last.duration_since(began).as_secs_f64());

        let mut invariant_failures = Vec::new();
        let lost: Vec<&str> = started_of
            .keys()
            .filter(|id| !listed.contains(**id))
            .copied()
            .collect();
        if !lost.is_empty() {
            invariant_failures.push(format!(
                "{} accepted orders are missing from the listings, e.g. {}",
                lost.len(),
                lost[0]
            ));
        }
        if pending > 0 {
            invariant_failures.push(format!(
                "{pending} orders still PENDING after the saga timeout and settling"
            ));
        }
        let levels: HashMap<&str, &StockDoc> =
            stock.iter().map(|s| (s.product_id.as_str(), s)).collect();
        let (mut oversold, mut not_conserved, mut mismatched) = (false, false, false);
        for product in &fixture.products {
            let Some(level) = levels.get(product.as_str()) else {
                invariant_failures.push(format!("product {product} has no stock record"));
                not_conserved = true;
                continue;
            };
            if level.available < 0 || level.reserved < 0 || level.committed < 0 {
                oversold = true;
                invariant_failures.push(format!(
                    "product {product}: negative stock (available {}, reserved {}, committed {})",
                    level.available, level.reserved, level.committed
                ));
            }
            let total = level.available + level.reserved + level.committed;
            if total != fixture.stock {
                not_conserved = true;
                invariant_failures.push(format!(
                    "product {product}: available + reserved + committed = {total}, initial {}",
                    fixture.stock
                ));
            }
            let expected = held.get(product.as_str()).copied().unwrap_or(0);
            if level.reserved + level.committed != expected {
                mismatched = true;
                invariant_failures.push(format!(
                    "product {product}: reserved + committed = {}, but confirmed orders hold {expected}",
                    level.reserved + level.committed
                ));
            }
        }
        let invariants = BTreeMap::from([
            ("noOversell", !oversold),
            ("stockConserved", !not_conserved),
            ("stockMatchesOrders", !mismatched),
            ("noOrderLost", lost.is_empty()),
            ("nothingPending", pending == 0),
        ]);

        let per_sec = |n: u64, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let accepted_per_sec = per_sec(accepted, placing_secs);
        let r1 = |x: Option<f64>| x.map(|x| round(x, 1));
        let r3 = |x: Option<f64>| x.map(|x| round(x, 3));
        Ok(Report {
            mode: if args.rate.is_some() { "rate" } else { "max" },
            rate: args.rate,
            concurrency: args.concurrency,
            orders: args.orders,
            accepted,
            confirmed,
            cancelled,
            pending_after_settle: pending,
            duration_secs: round(placing_secs, 3),
            saga_secs: round(saga_secs, 3),
            accepted_per_sec: round(accepted_per_sec, 1),
            sagas_per_sec: round(per_sec(confirmed, saga_secs), 1),
            placement_p50_ms: r3(quantile_ms(&placement, 0.5)),
            placement_p95_ms: r3(quantile_ms(&placement, 0.95)),
            placement_p99_ms: r3(quantile_ms(&placement, 0.99)),
            placement_max_ms: r3(max_ms(&placement)),
            saga_p50_ms: r3(quantile_ms(&saga, 0.5)),
            saga_p95_ms: r3(quantile_ms(&saga, 0.95)),
            saga_p99_ms: r3(quantile_ms(&saga, 0.99)),
            saga_max_ms: r3(max_ms(&saga)),
            saga_server_p50_ms: r1(quantile_ms(&saga_server, 0.5)),
            saga_server_p99_ms: r1(quantile_ms(&saga_server, 0.99)),
            saga_poll_ms: round(args.poll.as_secs_f64() * 1000.0, 3),
            observer_polls: observed.polls,
            observer_pages: observed.pages,
            observer_timed_out: observed.timed_out,
            observer_errors: observed.errors,
            health_live_per_sec: health_live_per_sec.map(|r| round(r, 1)),
            accepted_vs_health_live: health_live_per_sec
                .filter(|c| *c > 0.0)
                .map(|c| round(accepted_per_sec / c, 4)),
            errors,
            settled,
            invariants_hold: invariant_failures.is_empty(),
            invariants,
            invariant_failures,
        })
    }

    fn human(&self, args: &LoadArgs) -> String {
        let ms = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |x| format!("{x:.1}"));
        let mut out = String::new();
        let how = match self.rate {
            Some(rate) => format!("at {rate}/s (open loop)"),
            None => format!(
                "as fast as {} in flight allow (closed loop)",
                self.concurrency
            ),
        };
        let _ = writeln!(
            out,
            "Emporium load: {} orders {how} against {}",
            self.orders, args.url
        );
        let _ = writeln!(
            out,
            "  accepted        {} in {:.2} s = {:.1}/s",
            self.accepted, self.duration_secs, self.accepted_per_sec
        );
        let _ = writeln!(
            out,
            "  confirmed       {} in {:.2} s = {:.1} sagas/s; cancelled {}; PENDING after settling {}",
            self.confirmed,
            self.saga_secs,
            self.sagas_per_sec,
            self.cancelled.values().sum::<u64>(),
            self.pending_after_settle
        );
        for (reason, count) in &self.cancelled {
            let _ = writeln!(out, "    cancelled {reason}: {count}");
        }
        let _ = writeln!(
            out,
            "  placement ms    p50 {}  p95 {}  p99 {}  max {}",
            ms(self.placement_p50_ms),
            ms(self.placement_p95_ms),
            ms(self.placement_p99_ms),
            ms(self.placement_max_ms)
        );
        let _ = writeln!(
            out,
            "  saga ms         p50 {}  p95 {}  p99 {}  max {}  (seen by a poll every {} ms; server clock p50 {} p99 {})",
            ms(self.saga_p50_ms),
            ms(self.saga_p95_ms),
            ms(self.saga_p99_ms),
            ms(self.saga_max_ms),
            self.saga_poll_ms,
            ms(self.saga_server_p50_ms),
            ms(self.saga_server_p99_ms)
        );
        match (self.health_live_per_sec, self.accepted_vs_health_live) {
            (Some(ceiling), Some(ratio)) => {
                let _ = writeln!(
                    out,
                    "  HTTP ceiling    GET /health/live {ceiling:.0}/s at {} in flight; accepted/ceiling {ratio:.3}",
                    self.concurrency
                );
            }
            _ => {
                let _ = writeln!(out, "  HTTP ceiling    not measured");
            }
        }
        if self.errors.is_empty() {
            let _ = writeln!(out, "  errors          none");
        } else {
            for (code, count) in &self.errors {
                let _ = writeln!(out, "  error           {code}: {count}");
            }
        }
        let _ = writeln!(
            out,
            "  observer        {} polls, {} pages read, {} failed polls{}; platform settled: {}",
            self.observer_polls,
            self.observer_pages,
            self.observer_errors,
            if self.observer_timed_out {
                "; gave up waiting after the saga timeout"
            } else {
                ""
            },
            self.settled
        );
        if self.invariants_hold {
            let _ = writeln!(
                out,
                "  invariants      hold (no oversell, stock conserved, reservations match orders, no order lost, nothing PENDING)"
            );
        } else {
            for failure in &self.invariant_failures {
                let _ = writeln!(out, "  INVARIANT FAILED {failure}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every session logs in again on schedule and takes its new token; a refused login keeps the
    /// token it had. Against a stand-in for `POST /api/auth/login` that numbers its answers.
    #[tokio::test]
    async fn sessions_log_in_again_before_their_tokens_expire() {
        let logins = Arc::new(AtomicU64::new(0));
        let counter = logins.clone();
        let app = axum::Router::new().route(
            "/api/auth/login",
            axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                async move {
                    let email = body["email"].as_str().unwrap_or_default().to_owned();
                    if email == "refused@load.test" {
                        return (axum::http::StatusCode::UNAUTHORIZED, axum::Json(json!({})));
                    }
                    let session =
                        json!({"accessToken": format!("{email}#{n}"), "user": {"id": "u"}});
                    (axum::http::StatusCode::OK, axum::Json(session))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = Api::new(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let customer = |email: &str| Customer {
            id: "u".into(),
            email: email.into(),
            token: Token::new("first".into()),
        };
        let fixture = Arc::new(Fixture {
            admin: Token::new("first".into()),
            customers: vec![customer("ada@load.test"), customer("refused@load.test")],
            products: Vec::new(),
            stock: 0,
        });

        let renewing = tokio::spawn(renew_sessions(
            api,
            fixture.clone(),
            "admin@load.test".into(),
            "secret".into(),
            Duration::from_millis(20),
        ));
        let deadline = Instant::now() + Duration::from_secs(10);
        while logins.load(Ordering::SeqCst) < 6 {
            assert!(Instant::now() < deadline, "no second round of logins");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        renewing.abort();
        assert!(fixture.admin.get().starts_with("admin@load.test#"));
        assert!(
            fixture.customers[0]
                .token
                .get()
                .starts_with("ada@load.test#")
        );
        assert_eq!(fixture.customers[1].token.get(), "first");
    }
}
