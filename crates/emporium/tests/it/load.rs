//! `emporium load` against a running platform: the JSON report, the counts and the invariants.

use std::{process::Stdio, time::Duration};

use serde_json::Value;
use tokio::process::Command;

use crate::support::{ADMIN_EMAIL, ADMIN_PASSWORD, BINARY, Platform};

/// Runs `emporium load` against `platform` from an empty working directory with nothing but the
/// admin credentials in its environment; returns the exit status, the parsed JSON line and stderr.
async fn load(platform: &Platform, extra: &[&str]) -> (std::process::ExitStatus, Value, String) {
    let cwd = tempfile::tempdir().unwrap();
    let mut args = vec!["load", "--url", platform.base.as_str()];
    args.extend_from_slice(extra);
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(BINARY)
            .args(&args)
            .current_dir(cwd.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("EMPORIUM_ADMIN_EMAIL", ADMIN_EMAIL)
            .env("EMPORIUM_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the load run finished in time")
    .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "--json prints exactly one line; stdout: {stdout}\nstderr: {stderr}"
    );
    let report: Value = serde_json::from_str(lines[0]).unwrap();
    // It talks to the platform over HTTP only: no data directory, no files where it runs.
    assert_eq!(
        std::fs::read_dir(cwd.path()).unwrap().count(),
        0,
        "load created files in its working directory"
    );
    (output.status, report, stderr)
}

/// What every successful run reports: the fields scripts read, sane numbers, all orders accepted
/// and confirmed, no errors, the invariants holding.
fn check_report(report: &Value, orders: u64) {
    for field in [
        "acceptedPerSec",
        "sagasPerSec",
        "placementP50Ms",
        "placementP95Ms",
        "placementP99Ms",
        "placementMaxMs",
        "sagaP50Ms",
        "sagaP95Ms",
        "sagaP99Ms",
        "durationSecs",
        "healthLivePerSec",
        "acceptedVsHealthLive",
    ] {
        let value = report[field].as_f64();
        assert!(
            value.is_some_and(|v| v > 0.0),
            "{field} should be a positive number: {report}"
        );
    }
    let ms = |field: &str| report[field].as_f64().unwrap();
    assert!(ms("placementP50Ms") <= ms("placementP99Ms"), "{report}");
    assert!(ms("placementP99Ms") <= ms("placementMaxMs"), "{report}");
    assert!(ms("sagaP50Ms") <= ms("sagaP99Ms"), "{report}");
    // A saga is seen confirmed after its order was accepted.
    assert!(ms("sagaP50Ms") >= ms("placementP50Ms"), "{report}");
    assert_eq!(report["orders"], orders, "{report}");
    assert_eq!(report["accepted"], orders, "{report}");
    assert_eq!(report["confirmed"], orders, "{report}");
    assert_eq!(report["pendingAfterSettle"], 0, "{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    assert_eq!(report["cancelled"], serde_json::json!({}), "{report}");
    assert_eq!(report["invariantsHold"], true, "{report}");
    for (name, holds) in report["invariants"].as_object().unwrap() {
        assert_eq!(holds, true, "invariant {name}: {report}");
    }
    assert_eq!(report["settled"], true, "{report}");
}

#[tokio::test]
async fn load_with_concurrency_places_every_order_and_the_invariants_hold() {
    let platform = Platform::start_with(&[]).await;
    let (status, report, stderr) = load(
        &platform,
        &["--orders", "30", "--concurrency", "4", "--json"],
    )
    .await;
    assert!(status.success(), "{stderr}\n{report}");
    check_report(&report, 30);
    assert_eq!(report["mode"], "max");
    assert_eq!(report["concurrency"], 4);
    // The stock it created was conserved and is held by exactly the confirmed orders: checked by
    // the run itself; here, from the outside, that the platform agrees nothing is pending.
    let admin = platform.admin().await;
    let pending = platform
        .get_as("/api/orders?status=PENDING", &admin.token)
        .await;
    assert_eq!(pending.body["items"], serde_json::json!([]), "{pending:?}");
}

#[tokio::test]
async fn load_at_a_fixed_rate_keeps_the_schedule() {
    let platform = Platform::start_with(&[]).await;
    let (status, report, stderr) = load(
        &platform,
        &[
            "--orders",
            "30",
            "--rate",
            "50",
            "--ceiling-time",
            "1s",
            "--json",
        ],
    )
    .await;
    assert!(status.success(), "{stderr}\n{report}");
    check_report(&report, 30);
    assert_eq!(report["mode"], "rate");
    assert_eq!(report["rate"], 50.0);
    // Open loop: 30 orders at 50/s are due over 0.58 s, so placing takes at least that long and
    // the accepted rate cannot beat the schedule.
    let duration = report["durationSecs"].as_f64().unwrap();
    assert!(duration >= 0.58, "{report}");
    assert!(
        report["acceptedPerSec"].as_f64().unwrap() <= 52.0,
        "{report}"
    );
}

/// With less stock than the orders want, some orders are cancelled `OUT_OF_STOCK`, none is
/// oversold, and the run still ends with its invariants holding.
#[tokio::test]
async fn load_with_scarce_stock_cancels_instead_of_overselling() {
    let platform = Platform::start_with(&[]).await;
    let (status, report, stderr) = load(
        &platform,
        &[
            "--orders",
            "30",
            "--concurrency",
            "8",
            "--products",
            "2",
            "--stock",
            "10",
            "--ceiling-time",
            "0s",
            "--json",
        ],
    )
    .await;
    assert!(status.success(), "{stderr}\n{report}");
    assert_eq!(report["accepted"], 30, "{report}");
    assert_eq!(report["invariantsHold"], true, "{report}");
    let cancelled = report["cancelled"]["OUT_OF_STOCK"].as_u64().unwrap_or(0);
    let confirmed = report["confirmed"].as_u64().unwrap();
    assert!(cancelled > 0, "20 units cannot serve 30 orders: {report}");
    assert_eq!(confirmed + cancelled, 30, "{report}");
    assert!(report["healthLivePerSec"].is_null(), "{report}");
}

/// The checks are not a rubber stamp: stock added behind the run's back (an admin adjustment while
/// orders are being placed) breaks `available + reserved + committed = initial` as the run sees it,
/// and the run says so and exits non-zero.
#[tokio::test]
async fn load_fails_when_stock_is_not_what_it_created() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let run = load(
        &platform,
        &[
            "--orders",
            "60",
            "--rate",
            "20",
            "--products",
            "1",
            "--ceiling-time",
            "0s",
            "--json",
        ],
    );
    let meddle = async {
        // Once orders are flowing, the run's product exists and its stock was checked.
        let product: String = platform
            .poll("the first order of the run", || async {
                let orders = platform.get_as("/api/orders?limit=1", &admin.token).await;
                orders.body["items"][0]["items"][0]["productId"]
                    .as_str()
                    .map(str::to_owned)
            })
            .await;
        let adjusted = platform
            .post_as(
                &format!("/api/inventory/{product}/adjust"),
                Some(&admin.token),
                serde_json::json!({"delta": 5, "reason": "behind the load run's back"}),
            )
            .await;
        assert_eq!(adjusted.status, 200, "{adjusted:?}");
    };
    let ((status, report, stderr), ()) = tokio::join!(run, meddle);
    assert_eq!(status.code(), Some(1), "{stderr}\n{report}");
    assert!(stderr.contains("invariants failed"), "{stderr}");
    assert_eq!(report["invariantsHold"], false, "{report}");
    assert_eq!(report["invariants"]["stockConserved"], false, "{report}");
    assert_eq!(report["invariants"]["noOversell"], true, "{report}");
    assert!(
        report["invariantFailures"][0]
            .as_str()
            .is_some_and(|f| f.contains("initial")),
        "{report}"
    );
}
