//! The Lambda binaries for real: each is started the way Lambda starts it, against a local
//! emulation of the Lambda Runtime API (an axum server on 127.0.0.1:0 that hands out events on
//! `GET /2018-06-01/runtime/invocation/next` and receives what the function posts back), and the
//! outcome it posts is checked. One test binary, so it links once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::VecDeque,
    net::SocketAddr,
    path::Path,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path as UrlPath, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader},
    process::{Child, Command},
    sync::mpsc,
};
use uuid::Uuid;

/// How long anything may take before the test gives up: generous, since a slow machine is not a
/// failure; nothing waits this long when things work.
const PATIENCE: Duration = Duration::from_secs(60);

const AUTHORIZER: &str = env!("CARGO_BIN_EXE_payment-authorizer");
const SENDER: &str = env!("CARGO_BIN_EXE_notification-sender");

// ------------------------------------------------------------------ the Runtime API emulator

/// What the function posted back for one invocation.
#[derive(Debug)]
struct Posted {
    /// `response`, `error` or `init-error`.
    kind: &'static str,
    request_id: String,
    /// `Lambda-Runtime-Function-Error-Type`, on errors.
    error_type: Option<String>,
    body: Value,
}

/// An event for the function: its request id and its body.
type Invocation = (String, Vec<u8>);

#[derive(Clone)]
struct Emulator {
    /// Events not handed out yet.
    events: Arc<Mutex<VecDeque<Invocation>>>,
    posted: mpsc::UnboundedSender<Posted>,
}

/// The Runtime API, serving `events` in order, one per `next`.
struct RuntimeApi {
    addr: SocketAddr,
    request_ids: Vec<String>,
    posted: mpsc::UnboundedReceiver<Posted>,
}

impl RuntimeApi {
    async fn serving(events: &[Vec<u8>]) -> RuntimeApi {
        let with_ids: VecDeque<Invocation> = events
            .iter()
            .map(|event| (Uuid::new_v4().to_string(), event.clone()))
            .collect();
        let request_ids = with_ids.iter().map(|(id, _)| id.clone()).collect();
        let (tx, posted) = mpsc::unbounded_channel();
        let emulator = Emulator {
            events: Arc::new(Mutex::new(with_ids)),
            posted: tx,
        };
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(emulator);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        RuntimeApi {
            addr,
            request_ids,
            posted,
        }
    }

    /// The next thing the function posts.
    async fn posted(&mut self) -> Posted {
        tokio::time::timeout(PATIENCE, self.posted.recv())
            .await
            .expect("the function posted nothing in time")
            .expect("the emulator stopped")
    }
}

/// `GET .../invocation/next`: the next event with the headers Lambda sends; once there are none
/// left, it waits forever, as Lambda does between invocations.
async fn next(State(emulator): State<Emulator>) -> Response {
    let event = emulator.events.lock().unwrap().pop_front();
    let Some((request_id, body)) = event else {
        return std::future::pending().await;
    };
    let deadline = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + Duration::from_secs(300);
    (
        [
            (header::CONTENT_TYPE.as_str(), "application/json".to_owned()),
            ("Lambda-Runtime-Aws-Request-Id", request_id),
            (
                "Lambda-Runtime-Deadline-Ms",
                deadline.as_millis().to_string(),
            ),
            (
                "Lambda-Runtime-Invoked-Function-Arn",
                "arn:aws:lambda:eu-west-1:123456789012:function:emporium-test".to_owned(),
            ),
            (
                "Lambda-Runtime-Trace-Id",
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0"
                    .to_owned(),
            ),
        ],
        body,
    )
        .into_response()
}

/// `POST .../invocation/{id}/response`: the function's result.
async fn response(
    State(emulator): State<Emulator>,
    UrlPath(request_id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    record(&emulator, "response", request_id, &headers, &body);
    StatusCode::ACCEPTED
}

/// `POST .../invocation/{id}/error`: the invocation failed.
async fn error(
    State(emulator): State<Emulator>,
    UrlPath(request_id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    record(&emulator, "error", request_id, &headers, &body);
    StatusCode::ACCEPTED
}

/// `POST .../init/error`: the function failed to start. Recorded so that a test expecting an
/// invocation's outcome sees it rather than waiting in vain.
async fn init_error(
    State(emulator): State<Emulator>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    record(&emulator, "init-error", String::new(), &headers, &body);
    StatusCode::ACCEPTED
}

fn record(
    emulator: &Emulator,
    kind: &'static str,
    request_id: String,
    headers: &HeaderMap,
    body: &[u8],
) {
    let error_type = headers
        .get("Lambda-Runtime-Function-Error-Type")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("the function posted non-JSON ({e}): {body:?}"));
    let _ = emulator.posted.send(Posted {
        kind,
        request_id,
        error_type,
        body,
    });
}

// ----------------------------------------------------------------------------- the function

/// A Lambda binary running against the emulator.
struct Function {
    child: Child,
    /// Its stdout (where Lambda functions log), line by line.
    stdout: mpsc::UnboundedReceiver<String>,
}

/// The environment Lambda gives every function (what `lambda_runtime`'s `Config::from_env` and
/// its client read), pointing at `api`.
fn lambda_env(api: SocketAddr, name: &str) -> Vec<(String, String)> {
    [
        ("AWS_LAMBDA_RUNTIME_API", api.to_string()),
        ("AWS_LAMBDA_FUNCTION_NAME", name.to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".to_owned()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            "2026/01/01/[$LATEST]0123456789abcdef".to_owned(),
        ),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Starts `binary` with exactly `env`: nothing of the caller's shell (an `EMPORIUM_SMTP_URL`, a
/// `RUST_LOG`) leaks into what the test checks.
fn spawn(binary: &str, env: &[(String, String)]) -> Function {
    let mut child = Command::new(binary)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (tx, stdout) = mpsc::unbounded_channel();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Function { child, stdout }
}

impl Function {
    /// The first line of its log that satisfies `wanted`.
    async fn logged(&mut self, wanted: impl Fn(&str) -> bool) -> String {
        let mut seen = Vec::new();
        let found = tokio::time::timeout(PATIENCE, async {
            while let Some(line) = self.stdout.recv().await {
                if wanted(&line) {
                    return Some(line);
                }
                seen.push(line);
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!(
                "no such line in the function's log; it logged:\n{}",
                seen.join("\n")
            ),
        }
    }

    async fn stop(mut self) {
        self.child.kill().await.unwrap();
    }
}

/// Runs `binary` (with `extra` variables) on `events`, returning one posted outcome per event.
async fn invoke(binary: &str, extra: &[(&str, &str)], events: &[Value]) -> (Vec<Posted>, Function) {
    let events: Vec<Vec<u8>> = events
        .iter()
        .map(|e| serde_json::to_vec(e).unwrap())
        .collect();
    invoke_raw(binary, extra, &events).await
}

async fn invoke_raw(
    binary: &str,
    extra: &[(&str, &str)],
    events: &[Vec<u8>],
) -> (Vec<Posted>, Function) {
    let mut api = RuntimeApi::serving(events).await;
    let mut env = lambda_env(
        api.addr,
        Path::new(binary).file_name().unwrap().to_str().unwrap(),
    );
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let function = spawn(binary, &env);
    let mut posted = Vec::new();
    for request_id in api.request_ids.clone() {
        let post = api.posted().await;
        assert_eq!(post.request_id, request_id, "{post:?}");
        posted.push(post);
    }
    (posted, function)
}

/// Runs a function that should not start, returning its exit code and stderr.
async fn failing_start(binary: &str, env: &[(String, String)]) -> (Option<i32>, String) {
    let mut function = spawn(binary, env);
    let status = tokio::time::timeout(PATIENCE, function.child.wait())
        .await
        .expect("the function kept running")
        .unwrap();
    let mut stderr = String::new();
    function
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    (status.code(), stderr)
}

// ---------------------------------------------------------------------- payment-authorizer

fn authorization(token: &str, amount: i64) -> Value {
    json!({
        "orderId": Uuid::now_v7(),
        "amount": {"amount": amount, "currency": "USD"},
        "paymentToken": token,
    })
}

#[tokio::test]
async fn the_payment_authorizer_authorizes_a_visa_card() {
    let (posted, function) = invoke(AUTHORIZER, &[], &[authorization("tok_visa", 1999)]).await;
    assert_eq!(posted[0].kind, "response", "{posted:?}");
    assert_eq!(posted[0].body, json!({"outcome": "authorized"}));
    function.stop().await;
}

#[tokio::test]
async fn the_payment_authorizer_declines_a_declined_card_as_card_declined() {
    let (posted, function) = invoke(
        AUTHORIZER,
        &[],
        &[authorization("tok_chargeDeclined", 1999)],
    )
    .await;
    assert_eq!(posted[0].kind, "response", "{posted:?}");
    assert_eq!(
        posted[0].body,
        json!({"outcome": "declined", "reason": "card_declined"})
    );
    function.stop().await;
}

#[tokio::test]
async fn the_payment_authorizer_declines_a_total_above_its_configured_limit() {
    let (posted, function) = invoke(
        AUTHORIZER,
        &[("EMPORIUM_PAYMENT_LIMIT", "5000")],
        &[
            authorization("tok_visa", 5000),
            authorization("tok_visa", 5001),
        ],
    )
    .await;
    assert_eq!(
        posted[0].body,
        json!({"outcome": "authorized"}),
        "{posted:?}"
    );
    assert_eq!(
        posted[1].body,
        json!({"outcome": "declined", "reason": "amount_limit_exceeded"}),
        "{posted:?}"
    );
    function.stop().await;
}

#[tokio::test]
async fn the_payment_authorizer_answers_unavailable_when_the_provider_fails() {
    let (posted, function) =
        invoke(AUTHORIZER, &[], &[authorization("tok_providerError", 1999)]).await;
    assert_eq!(posted[0].kind, "response", "{posted:?}");
    assert_eq!(posted[0].body, json!({"outcome": "unavailable"}));
    function.stop().await;
}

#[tokio::test]
async fn a_malformed_event_goes_to_the_error_endpoint_and_the_function_serves_the_next() {
    let mut negative = authorization("tok_visa", 1999);
    negative["amount"]["amount"] = json!(-1);
    let events = [
        b"{not json".to_vec(),
        serde_json::to_vec(&json!({"orderId": "nope", "amount": {"amount": 1, "currency": "USD"}, "paymentToken": "tok_visa"})).unwrap(),
        serde_json::to_vec(&negative).unwrap(),
        serde_json::to_vec(&authorization("tok_mastercard", 1999)).unwrap(),
    ];
    let (posted, function) = invoke_raw(AUTHORIZER, &[], &events).await;
    for (post, names) in posted[..3].iter().zip(["", "orderId", "amount.amount"]) {
        assert_eq!(post.kind, "error", "{post:?}");
        assert_eq!(post.error_type.as_deref(), Some("unhandled"), "{post:?}");
        let message = post.body["errorMessage"].as_str().unwrap();
        assert!(message.contains("deserialize"), "{post:?}");
        assert!(message.contains(names), "{names}: {post:?}");
    }
    // Still running: a bad event fails its invocation, not the function.
    assert_eq!(posted[3].kind, "response", "{:?}", posted[3]);
    assert_eq!(posted[3].body, json!({"outcome": "authorized"}));
    function.stop().await;
}

#[tokio::test]
async fn outside_lambda_or_misconfigured_the_function_stops_naming_the_variable() {
    let (code, stderr) = failing_start(AUTHORIZER, &[]).await;
    assert_eq!(code, Some(1), "an error, not a panic (101): {stderr}");
    assert!(stderr.contains("AWS_LAMBDA_RUNTIME_API"), "{stderr}");

    // A port nobody listens on: the function must stop before it calls it.
    let mut env = lambda_env("127.0.0.1:9".parse().unwrap(), "payment-authorizer");
    env.push(("EMPORIUM_PAYMENT_LIMIT".into(), "lots".into()));
    let (code, stderr) = failing_start(AUTHORIZER, &env).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("EMPORIUM_PAYMENT_LIMIT"), "{stderr}");

    let mut env = lambda_env("127.0.0.1:9".parse().unwrap(), "notification-sender");
    env.push((
        "EMPORIUM_SMTP_URL".into(),
        "smtps://mail.example.com".into(),
    ));
    let (code, stderr) = failing_start(SENDER, &env).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("EMPORIUM_SMTP_URL"), "{stderr}");
}

// --------------------------------------------------------------------- notification-sender

fn message(channel: &str, recipient: &str) -> (Uuid, Value) {
    let id = Uuid::now_v7();
    let event = json!({
        "notificationId": id,
        "channel": channel,
        "recipient": recipient,
        "subject": "Your order has shipped",
        "body": "Hello Ada,\n\nyour parcel is on its way.\n",
    });
    (id, event)
}

#[tokio::test]
async fn without_smtp_an_email_lands_as_an_eml_file_in_the_mail_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mail_dir = dir.path().join("mail");
    let (id, event) = message("email", "ada@example.com");
    let (posted, function) = invoke(
        SENDER,
        &[("EMPORIUM_MAIL_DIR", mail_dir.to_str().unwrap())],
        &[event],
    )
    .await;
    assert_eq!(posted[0].kind, "response", "{posted:?}");
    assert_eq!(posted[0].body, json!({"outcome": "sent"}));
    function.stop().await;

    let files: Vec<_> = std::fs::read_dir(&mail_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].extension().unwrap(), "eml");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let (headers, body) = text.split_once("\r\n\r\n").unwrap();
    let headers: Vec<&str> = headers.split("\r\n").collect();
    assert!(headers.contains(&"To: ada@example.com"), "{headers:?}");
    assert!(
        headers.contains(&"Subject: Your order has shipped"),
        "{headers:?}"
    );
    let message_id = format!("Message-ID: <{id}@emporium.local>");
    assert!(headers.contains(&message_id.as_str()), "{headers:?}");
    assert_eq!(body, "Hello Ada,\r\n\r\nyour parcel is on its way.\r\n");
}

#[tokio::test]
async fn an_sms_is_sent_through_the_log_sink() {
    let dir = tempfile::tempdir().unwrap();
    let mail_dir = dir.path().join("mail");
    let (id, event) = message("sms", "+15550100");
    let (posted, mut function) = invoke(
        SENDER,
        &[("EMPORIUM_MAIL_DIR", mail_dir.to_str().unwrap())],
        &[event],
    )
    .await;
    assert_eq!(posted[0].kind, "response", "{posted:?}");
    assert_eq!(posted[0].body, json!({"outcome": "sent"}));
    // The sink's line comes before the outcome is posted, so it is in the log by now.
    let line = function
        .logged(|line| line.contains(&id.to_string()) && line.contains("\"channel\":\"sms\""))
        .await;
    assert!(line.contains("\"to\":\"+15550100\""), "{line}");
    function.stop().await;
    assert_eq!(std::fs::read_dir(&mail_dir).unwrap().count(), 0, "no email");
}

#[tokio::test]
async fn an_undeliverable_message_is_a_failed_outcome_not_an_invocation_error() {
    let dir = tempfile::tempdir().unwrap();
    let mail_dir = dir.path().join("mail");
    let (_, bad_address) = message("email", "not an address");
    let (_, unknown_channel) = message("pigeon", "ada@example.com");
    let (posted, function) = invoke(
        SENDER,
        &[("EMPORIUM_MAIL_DIR", mail_dir.to_str().unwrap())],
        &[bad_address, unknown_channel],
    )
    .await;
    assert_eq!(posted[0].kind, "response", "{posted:?}");
    assert_eq!(posted[0].body["outcome"], "failed", "{posted:?}");
    assert!(
        posted[0].body["error"]
            .as_str()
            .unwrap()
            .contains("recipient"),
        "{posted:?}"
    );
    // A channel it does not know is a malformed event.
    assert_eq!(posted[1].kind, "error", "{posted:?}");
    assert!(
        posted[1].body["errorMessage"]
            .as_str()
            .unwrap()
            .contains("channel"),
        "{posted:?}"
    );
    function.stop().await;
}
