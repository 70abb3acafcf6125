//! Admission control for new orders: `POST /api/orders` answers 503 `SERVICE_UNAVAILABLE` with
//! `Retry-After` instead of accepting work it cannot finish in time, for two reasons.
//!
//! **Too many placements in flight** ([`Admission::enter`]): each instance places at most
//! `max_placements_in_flight` orders at once; the next one waits up to `max_placement_wait` for a
//! place and is refused then, before it reads or writes anything but its idempotency key (whose
//! repeat is answered whatever the load). Without the bound, requests above what the orders
//! database's writer can take queue in front of it and every placement waits seconds (measured in
//! docs/BENCHMARKS.md, "Placements in flight"); with it, a burst within the bound goes through
//! and an overload is told at once to come back.
//!
//! **The saga has fallen too far behind** ([`Admission::check`]): accepting more would only end in
//! `TIMEOUT` cancellations later.
//!
//! "Too far behind" is measured where it matters: [`OVERDUE_TO_REFUSE`] orders or more are still
//! `PENDING` after `max_saga_backlog` (one index read of `orders (status, created_at)`: the
//! creation time of the n-th oldest `PENDING` order, taken at most every [`SAMPLE_EVERY`] by
//! whichever request comes first; the others use the last sample). Every instance of the service
//! reads the same database, so they agree. A few stuck orders do not count: the sweeper deals with
//! those.
//!
//! The signal lags: when those orders cross the limit, every order admitted since is still
//! queued behind them, so under sustained overload a saga takes up to about (placement rate / saga
//! rate) × `max_saga_backlog`. Measured in docs/BENCHMARKS.md ("Overload"): with `5s`, a 30 s
//! burst at 1,000 orders/s ended with no `TIMEOUT` and sagas of 13–17 s; without admission control,
//! 691 orders were cancelled with `TIMEOUT`.

use std::{
    sync::atomic::{AtomicBool, AtomicI64, Ordering},
    time::Duration,
};

use chrono::Utc;
use emporium_platform::{
    api::ApiError,
    storage::{Db, StorageError},
};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::store;

/// How old a sample may be before a request takes a new one.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// How long a sample may take; one that takes longer leaves the last sample standing.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(1);

/// How many `PENDING` orders must be older than the limit before new orders are refused: a few
/// stuck sagas (an event dead-lettered, an order waiting for the timeout sweeper) are not an
/// overload and must not refuse every customer.
pub const OVERDUE_TO_REFUSE: usize = 100;

/// Fewer `PENDING` orders than [`OVERDUE_TO_REFUSE`].
const NOT_ENOUGH_PENDING: i64 = i64::MAX;

pub struct Admission {
    db: Db,
    max_backlog: Duration,
    sample_every: Duration,
    overdue_to_refuse: usize,
    /// When the sample was taken (ms since the epoch; 0: never).
    sampled_at: AtomicI64,
    /// `created_at` of the `overdue_to_refuse`-th oldest `PENDING` order then, or
    /// [`NOT_ENOUGH_PENDING`].
    threshold_order_at: AtomicI64,
    sampling: AtomicBool,
    /// One permit per placement that may run at once.
    in_flight: Semaphore,
    /// How long a placement waits for a permit before it is refused.
    max_wait: Duration,
}

/// Clears the sampling flag however the sampling request ends (also when its future is dropped:
/// a request timeout, a client gone).
struct Sampling<'a>(&'a AtomicBool);

impl Drop for Sampling<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Admission {
    pub fn new(db: Db, max_backlog: Duration, max_in_flight: usize, max_wait: Duration) -> Self {
        Self::with(db, max_backlog, SAMPLE_EVERY, OVERDUE_TO_REFUSE)
            .limit_in_flight(max_in_flight, max_wait)
    }

    pub fn with(
        db: Db,
        max_backlog: Duration,
        sample_every: Duration,
        overdue_to_refuse: usize,
    ) -> Self {
        Admission {
            db,
            max_backlog,
            sample_every,
            overdue_to_refuse: overdue_to_refuse.max(1),
            sampled_at: AtomicI64::new(0),
            threshold_order_at: AtomicI64::new(NOT_ENOUGH_PENDING),
            sampling: AtomicBool::new(false),
            in_flight: Semaphore::new(Semaphore::MAX_PERMITS),
            max_wait: Duration::ZERO,
        }
    }

    /// At most `max` placements at once (at least one), the next waiting up to `max_wait` for a
    /// place; unlimited unless set.
    pub fn limit_in_flight(mut self, max: usize, max_wait: Duration) -> Self {
        self.in_flight = Semaphore::new(max.clamp(1, Semaphore::MAX_PERMITS));
        self.max_wait = max_wait;
        self
    }

    /// A place among the placements in flight, held until it is dropped: at once if one is free,
    /// else the first to free up within `max_wait` (first come, first served); refused after that.
    pub async fn enter(&self) -> Result<SemaphorePermit<'_>, ApiError> {
        let place = if self.max_wait.is_zero() {
            self.in_flight.try_acquire().ok()
        } else {
            // `Err` inside: the semaphore was closed, which nothing does.
            tokio::time::timeout(self.max_wait, self.in_flight.acquire())
                .await
                .ok()
                .and_then(Result::ok)
        };
        place.ok_or_else(|| {
            metrics::counter!("emporium_orders_refused_total", "reason" => "in_flight")
                .increment(1);
            ApiError::unavailable("too many orders are being placed at once; try again shortly")
        })
    }

    /// Places free among the placements in flight now.
    pub fn places_free(&self) -> usize {
        self.in_flight.available_permits()
    }

    /// `Ok` if a new order may be placed now.
    pub async fn check(&self) -> Result<(), ApiError> {
        self.check_at(Utc::now().timestamp_millis()).await
    }

    /// [`Admission::check`] as if the clock read `now` (ms since the epoch).
    pub async fn check_at(&self, now: i64) -> Result<(), ApiError> {
        let since_sample = now.saturating_sub(self.sampled_at.load(Ordering::Acquire));
        let due = since_sample < 0
            || u128::try_from(since_sample).unwrap_or(0) >= self.sample_every.as_millis();
        if due && !self.sampling.swap(true, Ordering::AcqRel) {
            let _sampling = Sampling(&self.sampling);
            match tokio::time::timeout(SAMPLE_TIMEOUT, self.threshold_order_now()).await {
                Ok(Ok(at)) => self
                    .threshold_order_at
                    .store(at.unwrap_or(NOT_ENOUGH_PENDING), Ordering::Release),
                // Unknown admits: the placement itself will meet the database's trouble and say
                // so; refusing on a guess would turn a hiccup into an outage.
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot read the saga backlog; admitting");
                    self.threshold_order_at
                        .store(NOT_ENOUGH_PENDING, Ordering::Release);
                }
                // Slow (the database is busy, likely with the backlog itself): the last sample
                // stands, and ages.
                Err(_) => tracing::debug!("reading the saga backlog timed out"),
            }
            self.sampled_at.store(now, Ordering::Release);
        }
        let threshold_order_at = self.threshold_order_at.load(Ordering::Acquire);
        if threshold_order_at == NOT_ENOUGH_PENDING {
            return Ok(());
        }
        let behind = Duration::from_millis(
            u64::try_from(now.saturating_sub(threshold_order_at)).unwrap_or(0),
        );
        if behind <= self.max_backlog {
            return Ok(());
        }
        metrics::counter!("emporium_orders_refused_total", "reason" => "saga_backlog").increment(1);
        Err(ApiError::unavailable(format!(
            "the order pipeline is behind: {} or more orders have waited for their saga longer \
             than {:?}; try again shortly",
            self.overdue_to_refuse, self.max_backlog
        )))
    }

    async fn threshold_order_now(&self) -> Result<Option<i64>, StorageError> {
        let mut conn = self.db.reader().await?;
        store::nth_oldest_pending(&mut conn, self.overdue_to_refuse).await
    }
}
