//! The live dashboard: its files and the event stream over HTTP, and (with
//! `EMPORIUM_BROWSER_TESTS=1`) the page in headless Chromium while orders go through the saga.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use reqwest::Method;
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::Command,
};

use crate::support::{ADMIN_EMAIL, ADMIN_PASSWORD, Platform, Reply, Session};

const DEADLINE: Duration = Duration::from_secs(30);

/// Reads Server-Sent Events from a streaming response.
struct EventStream {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

/// One SSE event: its name and its data parsed as JSON.
#[derive(Debug)]
struct SseEvent {
    name: String,
    data: Value,
}

impl EventStream {
    async fn open(platform: &Platform, token: &str) -> EventStream {
        let response = platform
            .http
            .get(platform.url("/api/events/stream"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        EventStream {
            response,
            buffer: Vec::new(),
        }
    }

    /// The next event with data, or `None` when the stream has ended.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let block = String::from_utf8(block).unwrap();
                let mut name = "message".to_owned();
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        name = value.trim_start().to_owned();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push(value.strip_prefix(' ').unwrap_or(value));
                    }
                }
                if !data.is_empty() {
                    return Some(SseEvent {
                        name,
                        data: serde_json::from_str(&data.join("\n")).unwrap(),
                    });
                }
                continue;
            }
            match self.response.chunk().await.unwrap() {
                Some(bytes) => self.buffer.extend_from_slice(&bytes),
                None => return None,
            }
        }
    }

    /// Reads until `wanted` holds for an event; returns that event.
    async fn until(&mut self, what: &str, wanted: impl Fn(&SseEvent) -> bool) -> SseEvent {
        tokio::time::timeout(DEADLINE, async {
            loop {
                let event = self
                    .next()
                    .await
                    .unwrap_or_else(|| panic!("the stream ended before {what}"));
                if wanted(&event) {
                    return event;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {what} on the stream in time"))
    }
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn the_page_and_its_files_are_served_from_the_binary_with_their_types_and_a_strict_policy() {
    let platform = Platform::start().await;
    let page = platform.get("/dashboard").await;
    assert_eq!(page.status(), 200);
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    let policy = header(&page, "content-security-policy").to_owned();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
    ] {
        assert!(policy.contains(directive), "{policy}");
    }
    assert!(!policy.contains("unsafe"), "{policy}");
    assert_eq!(header(&page, "x-content-type-options"), "nosniff");
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"data-testid="dashboard""#));

    for (path, content_type, marker) in [
        (
            "/dashboard/dashboard.js",
            "text/javascript; charset=utf-8",
            "/api/events/stream",
        ),
        (
            "/dashboard/dashboard.css",
            "text/css; charset=utf-8",
            ".tile",
        ),
        ("/dashboard/favicon.svg", "image/svg+xml", "<svg"),
    ] {
        assert!(
            html.contains(&format!("\"{path}\"")),
            "the page loads {path}"
        );
        let asset = platform.get(path).await;
        assert_eq!(asset.status(), 200, "{path}");
        assert_eq!(header(&asset, "content-type"), content_type, "{path}");
        assert_eq!(header(&asset, "content-security-policy"), policy, "{path}");
        assert!(asset.text().await.unwrap().contains(marker), "{path}");
    }
    assert_eq!(platform.get("/dashboard/nothing.js").await.status(), 404);

    // Started without an admin: the page is told so, to explain how to configure one.
    let config = platform
        .call(Method::GET, "/dashboard/config.json", None, None)
        .await;
    assert_eq!(config.status, 200);
    assert_eq!(config.body, serde_json::json!({"adminConfigured": false}));
    assert!(html.contains("EMPORIUM_ADMIN_EMAIL") && html.contains("EMPORIUM_ADMIN_PASSWORD"));
}

#[tokio::test]
async fn the_event_stream_is_for_admins_only() {
    let platform = Platform::start_with(&[]).await;
    let config = platform
        .call(Method::GET, "/dashboard/config.json", None, None)
        .await;
    assert_eq!(config.body, serde_json::json!({"adminConfigured": true}));

    let anonymous = platform
        .call(Method::GET, "/api/events/stream", None, None)
        .await;
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    assert_eq!(anonymous.code(), "UNAUTHENTICATED");
    let customer = platform.register("curious@example.com").await;
    let refused = platform.get_as("/api/events/stream", &customer.token).await;
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(refused.code(), "FORBIDDEN");
}

#[tokio::test]
async fn the_event_stream_delivers_each_event_and_the_stats_to_an_admin() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let customer = platform.register("watched@example.com").await;
    let lamp = platform.create_product(&admin, "Lamp", 2500, 5).await;
    let mut stream = EventStream::open(&platform, &admin.token).await;
    let stats = stream.until("a stats event", |e| e.name == "stats").await;
    assert!(
        stats.data["ordersByStatus"]["PENDING"].is_number(),
        "{stats:?}"
    );
    assert!(stats.data["consumerLag"].is_array(), "{stats:?}");
    assert_eq!(stats.data["deadLetters"], 0);

    let order = order_id(
        &platform
            .place_order(&customer, &[(&lamp, 1)], "tok_visa")
            .await,
    );
    let created = stream
        .until("the order's OrderCreated", |e| {
            e.name == "OrderCreated" && e.data["aggregateId"] == order.as_str()
        })
        .await;
    assert_eq!(created.data["eventType"], "OrderCreated");
    assert_eq!(created.data["payload"]["orderId"], order.as_str());
    assert!(created.data["eventId"].is_string() && created.data["occurredAt"].is_string());
    stream
        .until("the order's OrderConfirmed", |e| {
            e.name == "OrderConfirmed" && e.data["aggregateId"] == order.as_str()
        })
        .await;
    // The stats follow: the order is counted as confirmed within a few ticks.
    stream
        .until("stats counting the confirmed order", |e| {
            e.name == "stats" && e.data["ordersByStatus"]["CONFIRMED"] == 1
        })
        .await;
}

#[tokio::test]
async fn an_open_event_stream_does_not_hold_up_shutdown() {
    // With a minute of grace, a stream that kept the server open would keep the process alive.
    let platform = Platform::start_with(&[("EMPORIUM_HTTP__SHUTDOWN_GRACE", "60s")]).await;
    let admin = platform.admin().await;
    let mut stream = EventStream::open(&platform, &admin.token).await;
    stream.until("a stats event", |e| e.name == "stats").await;
    let started = Instant::now();
    let status = platform.terminate().await;
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "stopping took {:?}",
        started.elapsed()
    );
    // The stream ended cleanly (no reset connection): the reader sees its end.
    tokio::time::timeout(DEADLINE, async { while stream.next().await.is_some() {} })
        .await
        .expect("the stream ended");
}

fn order_id(reply: &Reply) -> String {
    assert_eq!(reply.status, 202, "{reply:?}");
    reply.body["id"].as_str().unwrap().to_owned()
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The browser test: the page in Debian's headless Chromium, driven by
/// `crates/emporium/tests/browser/dashboard.mjs` (playwright-core), while this test places orders
/// through the API. With `EMPORIUM_BLESS=1` it rewrites `docs/dashboard.png`, the README's picture.
/// Needs `scripts/browser-setup` (CI runs it).
#[tokio::test]
async fn the_page_shows_orders_arrive_and_change_status_in_a_real_browser() {
    if std::env::var("EMPORIUM_BROWSER_TESTS").as_deref() != Ok("1") {
        eprintln!(
            "skipped: the browser test runs with EMPORIUM_BROWSER_TESTS=1 (it needs Chromium and \
             node_modules: run scripts/browser-setup first; .ci/run does both)"
        );
        return;
    }
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run scripts/browser-setup"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: run scripts/browser-setup"
    );

    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let customer = platform.register("ada@example.com").await;
    let lamp = platform.create_product(&admin, "Lamp", 2500, 50).await;
    let chair = platform
        .create_product(&admin, "Desk chair", 12900, 50)
        .await;

    // The README's picture is rewritten only on purpose (EMPORIUM_BLESS=1), like the other committed
    // documents; otherwise the screenshot goes to a temporary directory.
    let shots = tempfile::tempdir().unwrap();
    let screenshot = if std::env::var_os("EMPORIUM_BLESS").is_some() {
        repository().join("docs/dashboard.png")
    } else {
        shots.path().join("dashboard.png")
    };
    let mut browser = Command::new("node")
        .arg(browser_dir.join("dashboard.mjs"))
        .current_dir(&browser_dir)
        .env("EMPORIUM_URL", &platform.base)
        .env("EMPORIUM_ADMIN_EMAIL", ADMIN_EMAIL)
        .env("EMPORIUM_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("EMPORIUM_CUSTOMER_EMAIL", "ada@example.com")
        .env("EMPORIUM_CUSTOMER_PASSWORD", "correct-horse-battery")
        .env("DASHBOARD_SCREENSHOT", &screenshot)
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (Debian package nodejs)");
    let mut stdin = browser.stdin.take().unwrap();
    let mut stdout = BufReader::new(browser.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), stdout.next_line())
        .await
        .expect("the browser signed in in time")
        .unwrap();
    assert_eq!(
        ready.as_deref(),
        Some("ready"),
        "the browser script did not get to the dashboard"
    );

    // The page is watching: orders now go through the saga in front of it.
    let mut confirmed = Vec::new();
    for items in [
        vec![(lamp.as_str(), 1)],
        vec![(chair.as_str(), 1), (lamp.as_str(), 2)],
        vec![(lamp.as_str(), 3)],
    ] {
        confirmed.push(order_id(
            &platform.place_order(&customer, &items, "tok_visa").await,
        ));
    }
    let shipped = order_id(
        &platform
            .place_order(&customer, &[(&chair, 1)], "tok_mastercard")
            .await,
    );
    let cancelled = order_id(
        &platform
            .place_order(&customer, &[(&lamp, 1)], "tok_chargeDeclined")
            .await,
    );
    for order in confirmed.iter().chain([&shipped]) {
        platform.wait_for_order(&customer, order, "CONFIRMED").await;
    }
    platform
        .wait_for_order(&customer, &cancelled, "CANCELLED")
        .await;
    dispatch(&platform, &admin, &shipped).await;
    platform
        .wait_for_order(&customer, &shipped, "SHIPPED")
        .await;
    // Every consumer has caught up, so the saga's timeline is complete when the page shows it.
    platform
        .wait_for("every consumer group to catch up", || async {
            let stats = platform.get_as("/api/admin/stats", &admin.token).await;
            stats.body["consumerLag"]
                .as_array()
                .is_some_and(|groups| groups.iter().all(|g| g["lag"] == 0))
        })
        .await;

    let announce =
        serde_json::json!({"confirmed": confirmed, "shipped": shipped, "cancelled": cancelled});
    stdin
        .write_all(format!("{announce}\n").as_bytes())
        .await
        .unwrap();
    stdin.flush().await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(120), browser.wait())
        .await
        .expect("the browser checks finished in time")
        .unwrap();
    assert!(
        status.success(),
        "the browser checks failed (see the log above)"
    );
    let png = std::fs::read(&screenshot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG"),
        "{} is a PNG",
        screenshot.display()
    );
}

/// Dispatches the order's shipment as admin, once shipping has created it.
async fn dispatch(platform: &Platform, admin: &Session, order: &str) {
    let shipment = platform
        .poll("the shipment", || async {
            let reply = platform
                .get_as(&format!("/api/shipments?orderId={order}"), &admin.token)
                .await;
            reply.body.as_array()?.first()?["id"]
                .as_str()
                .map(str::to_owned)
        })
        .await;
    let dispatched = platform
        .call(
            Method::POST,
            &format!("/api/shipments/{shipment}/dispatch"),
            Some(&admin.token),
            None,
        )
        .await;
    assert_eq!(dispatched.status, 200, "{dispatched:?}");
}
