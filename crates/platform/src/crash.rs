//! Crash points: named places where a test can make the process die as `kill -9` would.
//!
//! `EMPORIUM_CRASH_AT=<name>` (or `<name>:<n>` for the n-th time the point is reached) kills the
//! process there with SIGKILL, exactly as `kill -9` would: no destructors, no flushing, nothing a real
//! crash would get. Unset, a point costs one relaxed atomic load.

use std::sync::{
    OnceLock,
    atomic::{AtomicU64, Ordering},
};

struct Target {
    name: String,
    nth: u64,
    hits: AtomicU64,
}

fn target() -> Option<&'static Target> {
    static TARGET: OnceLock<Option<Target>> = OnceLock::new();
    TARGET
        .get_or_init(|| {
            let spec = std::env::var("EMPORIUM_CRASH_AT").ok()?;
            let (name, nth) = match spec.split_once(':') {
                Some((name, n)) => (name.to_owned(), n.parse().unwrap_or(1)),
                None => (spec, 1),
            };
            Some(Target {
                name,
                nth,
                hits: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Kills the process if `EMPORIUM_CRASH_AT` names this point (and this is the chosen hit).
pub fn point(name: &str) {
    if let Some(target) = target()
        && target.name == name
        && target.hits.fetch_add(1, Ordering::Relaxed) + 1 == target.nth
    {
        eprintln!("crash point {name} reached: kill -9");
        // `kill` from the system rather than a libc call: the crate forbids unsafe code.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &std::process::id().to_string()])
            .status();
        // Only if `kill` could not be run: still die without clean-up.
        std::process::abort();
    }
}
