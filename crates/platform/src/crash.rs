//! Crash points: named places where a test can make the process die as `kill -9` would.
//!
//! `EMPORIUM_CRASH_AT=<name>` (or `<name>:<n>` for the n-th time the point is reached) aborts the
//! process there: no destructors, no flushing, nothing a real crash would get. Unset, a point costs
//! one relaxed atomic load.

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

/// Aborts the process if `EMPORIUM_CRASH_AT` names this point (and this is the chosen hit).
pub fn point(name: &str) {
    if let Some(target) = target()
        && target.name == name
        && target.hits.fetch_add(1, Ordering::Relaxed) + 1 == target.nth
    {
        eprintln!("crash point {name} reached: aborting");
        std::process::abort();
    }
}
