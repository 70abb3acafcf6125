//! Starting the real binary for a test.
// Shared by the test modules; not every module uses every helper.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

pub const BINARY: &str = env!("CARGO_BIN_EXE_emporium");

/// A token secret long enough for the configuration check, for processes started without a data
/// directory's generated one (`emporium serve` in the distributed profile).
pub const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";

/// Every service `emporium serve` knows, in start order; each owns a database named after it.
pub const SERVICES: [&str; 10] = [
    "users",
    "catalog",
    "inventory",
    "orders",
    "payments",
    "shipping",
    "notifications",
    "recommendations",
    "promotions",
    "operations",
];

/// `EMPORIUM_GATEWAY__SERVICES__<NAME>`: where the gateway reaches `name` (figment lowercases the
/// key: `[gateway.services] <name>`).
pub fn gateway_variable(name: &str) -> String {
    format!("EMPORIUM_GATEWAY__SERVICES__{}", name.to_uppercase())
}

/// A running platform, killed when dropped.
pub struct Platform {
    pub child: Child,
    pub base: String,
    pub data_dir: PathBuf,
    _dir: Option<tempfile::TempDir>,
    pub http: reqwest::Client,
    /// When this is the gateway of a cluster (one process per service): the base URLs of the
    /// service processes, whose `/metrics` tell their consumer lag and outbox backlog.
    pub peers: Vec<String>,
}

/// The binary with the test profile and a data dir; the caller adds what it needs.
pub fn command(data_dir: &Path) -> Command {
    let mut command = Command::new(BINARY);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("EMPORIUM_PROFILE", "test")
        .env("EMPORIUM_DATA_DIR", data_dir)
        .env(
            "EMPORIUM_LOG",
            std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

impl Platform {
    /// Starts the platform on a fresh temporary data directory.
    pub async fn start() -> Platform {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_path_buf();
        let mut platform = Platform::start_in(&data_dir, &[]).await;
        platform._dir = Some(dir);
        platform
    }

    /// Starts the platform on `data_dir` with extra environment.
    pub async fn start_in(data_dir: &Path, env: &[(&str, &str)]) -> Platform {
        Platform::start_part(data_dir, &[], env).await
    }

    /// Starts `emporium <args>` (`serve catalog`, `gateway`; nothing for the whole platform) on
    /// `data_dir` with extra environment.
    pub async fn start_part(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Platform {
        let mut command = command(data_dir);
        command.args(args).envs(env.iter().copied()).stdout(
            if std::env::var_os("TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            },
        );
        command.stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let address = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                // "Emporium is up on http://…", "The catalog service is up on http://…"
                if let Some((_, rest)) = line.split_once(" is up on http://") {
                    return rest.split_whitespace().next().unwrap().to_owned();
                }
                eprintln!("emporium: {line}");
            }
            panic!("the platform exited before it was up");
        })
        .await
        .expect("the platform came up in time");
        // Keep draining stderr so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Platform {
            child,
            base: format!("http://{address}"),
            data_dir: data_dir.to_path_buf(),
            _dir: None,
            // No idle connections kept: a server that answers 413 before reading a whole body closes
            // that connection, and a pooled client could pick it for the next request and fail.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            peers: Vec::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().unwrap();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("the platform stopped in time")
            .unwrap()
    }
}

/// The admin account the tests start the platform with.
pub const ADMIN_EMAIL: &str = "admin@emporium.test";
pub const ADMIN_PASSWORD: &str = "admin-password-1";

/// A logged-in caller.
#[derive(Debug, Clone)]
pub struct Session {
    pub token: String,
    pub user_id: String,
}

/// A response: status and JSON body (`Value::Null` when the body is empty or not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: serde_json::Value,
}

impl Reply {
    /// The problem document's `code`.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }

    /// The fields named in a validation problem.
    pub fn fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .filter_map(|e| e["field"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Platform {
    /// Starts with a fresh data dir, the test admin configured, and `env` on top.
    pub async fn start_with(env: &[(&str, &str)]) -> Platform {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_path_buf();
        let mut all = vec![
            ("EMPORIUM_ADMIN_EMAIL", ADMIN_EMAIL),
            ("EMPORIUM_ADMIN_PASSWORD", ADMIN_PASSWORD),
        ];
        all.extend_from_slice(env);
        let mut platform = Platform::start_in(&data_dir, &all).await;
        platform._dir = Some(dir);
        platform
    }

    /// Sends `method path` with an optional bearer token and JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> Reply {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get_as(&self, path: &str, token: &str) -> Reply {
        self.call(reqwest::Method::GET, path, Some(token), None)
            .await
    }

    pub async fn post_as(&self, path: &str, token: Option<&str>, body: serde_json::Value) -> Reply {
        self.call(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    /// Registers a customer and returns their session.
    pub async fn register(&self, email: &str) -> Session {
        let reply = self
            .post_as(
                "/api/auth/register",
                None,
                serde_json::json!({"email": email, "password": "correct-horse-battery", "name": "Test Customer"}),
            )
            .await;
        assert_eq!(reply.status, 201, "register {email}: {reply:?}");
        Session {
            token: reply.body["accessToken"].as_str().unwrap().to_owned(),
            user_id: reply.body["user"]["id"].as_str().unwrap().to_owned(),
        }
    }

    /// Logs in as the test admin (the platform must have been started with [`Platform::start_with`]).
    pub async fn admin(&self) -> Session {
        let reply = self
            .post_as(
                "/api/auth/login",
                None,
                serde_json::json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}),
            )
            .await;
        assert_eq!(reply.status, 200, "admin login: {reply:?}");
        Session {
            token: reply.body["accessToken"].as_str().unwrap().to_owned(),
            user_id: reply.body["user"]["id"].as_str().unwrap().to_owned(),
        }
    }

    /// Creates a product (as admin) with `stock` units and waits until its stock is visible.
    pub async fn create_product(
        &self,
        admin: &Session,
        name: &str,
        price: i64,
        stock: i64,
    ) -> String {
        let reply = self
            .post_as(
                "/api/products",
                Some(&admin.token),
                serde_json::json!({"name": name, "category": "test", "price": {"amount": price, "currency": "USD"}, "initialStock": stock}),
            )
            .await;
        assert_eq!(reply.status, 201, "create product: {reply:?}");
        let id = reply.body["id"].as_str().unwrap().to_owned();
        self.wait_for(&format!("stock of {name}"), || async {
            let stock_reply = self
                .call(
                    reqwest::Method::GET,
                    &format!("/api/inventory/{id}"),
                    None,
                    None,
                )
                .await;
            stock_reply.status == 200 && stock_reply.body["available"] == stock
        })
        .await;
        // The product event is on the log now (inventory has it); once the orders service has caught
        // up too, its price read model knows the product and orders for it are accepted.
        self.wait_for_group(admin, "orders").await;
        id
    }

    /// Waits until consumer group `group` has consumed everything on the log so far.
    pub async fn wait_for_group(&self, admin: &Session, group: &str) {
        if !self.peers.is_empty() {
            let labels = format!("group=\"{group}\"");
            return self
                .wait_for(&format!("{group} to catch up"), || async {
                    let lags = self.peer_series("emporium_consumer_lag", &labels).await;
                    !lags.is_empty() && lags.iter().all(|lag| *lag == 0.0)
                })
                .await;
        }
        self.wait_for(&format!("{group} to catch up"), || async {
            let stats = self.get_as("/api/admin/stats", &admin.token).await;
            stats.body["consumerLag"]
                .as_array()
                .is_some_and(|groups| groups.iter().any(|g| g["group"] == group && g["lag"] == 0))
        })
        .await;
    }

    /// Turns `preference` (`promotions`, `recommendations`, ...) off for `session`, and waits until
    /// notifications knows: the `UserUpdated` is on the log and notifications has consumed it (the
    /// change travels on `user-events`, what it gates on other topics, so a test must wait).
    pub async fn opt_out(&self, admin: &Session, session: &Session, preference: &str) {
        let patched = self
            .call(
                reqwest::Method::PATCH,
                "/api/users/me",
                Some(&session.token),
                Some(serde_json::json!({"preferences": {preference: false}})),
            )
            .await;
        assert_eq!(patched.status, 200, "{patched:?}");
        let path = format!(
            "/api/admin/events?aggregateId={}&type=UserUpdated",
            session.user_id
        );
        self.wait_for("the UserUpdated in the log", || async {
            let events = self.get_as(&path, &admin.token).await;
            events.body.as_array().is_some_and(|e| !e.is_empty())
        })
        .await;
        self.wait_for_group(admin, "notifications").await;
    }

    /// Places an order for `items` (product id, quantity) paid with `payment_token`.
    pub async fn place_order(
        &self,
        session: &Session,
        items: &[(&str, i64)],
        payment_token: &str,
    ) -> Reply {
        let items: Vec<serde_json::Value> = items
            .iter()
            .map(|(product, quantity)| serde_json::json!({"productId": product, "quantity": quantity}))
            .collect();
        self.post_as(
            "/api/orders",
            Some(&session.token),
            serde_json::json!({
                "items": items,
                "shippingAddress": {"name": "Ada Lovelace", "line1": "12 Analytical Row", "city": "London", "postalCode": "N1 9GU", "country": "GB"},
                "paymentMethod": {"token": payment_token},
            }),
        )
        .await
    }

    /// Waits until the order (read as `session`) has `status`; returns it.
    pub async fn wait_for_order(
        &self,
        session: &Session,
        order_id: &str,
        status: &str,
    ) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            let reply = self
                .get_as(&format!("/api/orders/{order_id}"), &session.token)
                .await;
            if reply.status == 200 && reply.body["status"] == status {
                return reply.body;
            }
            last = reply.body;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("order {order_id} never reached {status}; last seen: {last}");
    }

    /// Polls `condition` every 20 ms for up to 30 s.
    pub async fn wait_for<F, Fut>(&self, what: &str, mut condition: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !condition().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Platform {
    /// The values of the series `name` whose labels contain `labels`, from every peer's `/metrics`.
    pub async fn peer_series(&self, name: &str, labels: &str) -> Vec<f64> {
        let mut values = Vec::new();
        for peer in &self.peers {
            let text = self
                .http
                .get(format!("{peer}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            values.extend(
                text.lines()
                    .filter(|line| line.starts_with(&format!("{name}{{")) && line.contains(labels))
                    .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok()),
            );
        }
        values
    }

    /// Whether every peer's consumer groups have caught up and every outbox is empty.
    pub async fn peers_are_quiet(&self) -> bool {
        let lags = self.peer_series("emporium_consumer_lag", "").await;
        let backlogs = self.peer_series("emporium_outbox_backlog", "").await;
        !lags.is_empty() && lags.iter().chain(&backlogs).all(|v| *v == 0.0)
    }

    /// Polls `probe` every 20 ms for up to 30 s until it returns `Some`; returns that value.
    pub async fn poll<T, F, Fut>(&self, what: &str, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(value) = probe().await {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
