//! A circuit breaker for the payment provider, shared by every authorization of the service.
//!
//! Closed: calls go through, consecutive failures are counted. After `failure_threshold` of them it
//! opens: calls fail at once, without touching the provider, for `cool_down`. Then it half-opens:
//! one trial call goes through (others still fail fast); its success closes the breaker, its
//! failure opens it for another cool-down. A trial that never reports back (its handler was
//! dropped mid-call) is given up after a cool-down, so the breaker cannot stay half-open for good:
//! orders refused by it are redelivered until it closes. Time is tokio's, so tests can pause it.

use std::{sync::Mutex, time::Duration};

use tokio::time::Instant;

/// Consecutive provider failures that open the breaker.
pub const FAILURE_THRESHOLD: u32 = 5;

/// How long the breaker stays open before it lets a trial call through.
pub const COOL_DOWN: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    pub failure_threshold: u32,
    pub cool_down: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failure_threshold: FAILURE_THRESHOLD,
            cool_down: COOL_DOWN,
        }
    }
}

/// The breaker's state, as seen from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug, Clone, Copy)]
enum Inner {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// `trial`: since when the one call allowed through is under way.
    HalfOpen {
        trial: Option<Instant>,
    },
}

/// The call was refused: the breaker is open (or half-open with its trial under way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Open;

#[derive(Debug)]
pub struct CircuitBreaker {
    settings: BreakerSettings,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    pub fn new(settings: BreakerSettings) -> CircuitBreaker {
        CircuitBreaker {
            settings,
            inner: Mutex::new(Inner::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The state is a plain value: a panic elsewhere cannot leave it half-written.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Asks to make a call. After `Ok`, report the outcome with [`Self::succeeded`] or
    /// [`Self::failed`].
    pub fn acquire(&self) -> Result<(), Open> {
        let mut inner = self.lock();
        let now = Instant::now();
        match *inner {
            Inner::Closed { .. } => Ok(()),
            Inner::Open { until } if now < until => Err(Open),
            Inner::HalfOpen { trial: Some(since) } if now < since + self.settings.cool_down => {
                Err(Open)
            }
            // Cooled down, or the trial under way was lost: this call is the trial.
            Inner::Open { .. } | Inner::HalfOpen { .. } => {
                *inner = Inner::HalfOpen { trial: Some(now) };
                Ok(())
            }
        }
    }

    /// The provider answered (an approval or a decline alike): it is healthy.
    pub fn succeeded(&self) {
        *self.lock() = Inner::Closed { failures: 0 };
    }

    /// The provider failed.
    pub fn failed(&self) {
        let mut inner = self.lock();
        let open = Inner::Open {
            until: Instant::now() + self.settings.cool_down,
        };
        *inner = match *inner {
            Inner::Closed { failures } if failures + 1 < self.settings.failure_threshold => {
                Inner::Closed {
                    failures: failures + 1,
                }
            }
            Inner::Closed { .. } | Inner::HalfOpen { .. } => open,
            // A call that started before the breaker opened: it stays open as it was.
            Inner::Open { until } => Inner::Open { until },
        };
    }

    pub fn state(&self) -> BreakerState {
        match *self.lock() {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { until } if Instant::now() >= until => BreakerState::HalfOpen,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        CircuitBreaker::new(BreakerSettings::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerSettings {
            failure_threshold: 3,
            cool_down: Duration::from_secs(10),
        })
    }

    fn fail_times(breaker: &CircuitBreaker, n: u32) {
        for _ in 0..n {
            breaker.acquire().unwrap();
            breaker.failed();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn it_opens_after_consecutive_failures_and_fails_fast() {
        let b = breaker();
        fail_times(&b, 2);
        assert_eq!(b.state(), BreakerState::Closed);
        fail_times(&b, 1);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.acquire(), Err(Open));
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(b.acquire(), Err(Open), "still cooling down");
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_count() {
        let b = breaker();
        fail_times(&b, 2);
        b.acquire().unwrap();
        b.succeeded();
        fail_times(&b, 2);
        assert_eq!(b.state(), BreakerState::Closed, "not three in a row");
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_cool_down_one_trial_goes_through_and_its_success_closes() {
        let b = breaker();
        fail_times(&b, 3);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.acquire(), Ok(()), "the trial");
        assert_eq!(b.acquire(), Err(Open), "only one trial at a time");
        b.succeeded();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.acquire(), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_trial_that_never_reports_back_is_given_up_after_a_cool_down() {
        let b = breaker();
        fail_times(&b, 3);
        tokio::time::advance(Duration::from_secs(10)).await;
        b.acquire().unwrap();
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(b.acquire(), Err(Open), "the trial may still answer");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.acquire(), Ok(()), "a new trial");
        assert_eq!(b.acquire(), Err(Open));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_trial_opens_it_again_for_a_full_cool_down() {
        let b = breaker();
        fail_times(&b, 3);
        tokio::time::advance(Duration::from_secs(10)).await;
        b.acquire().unwrap();
        b.failed();
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(b.acquire(), Err(Open));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.acquire(), Ok(()));
    }
}
