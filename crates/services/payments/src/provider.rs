//! The payment provider as the service sees it, and how the service calls it: a few quick
//! retries with exponential backoff, behind the service's [`CircuitBreaker`].
//!
//! The provider of the contract is [`SimulatedProvider`], which answers with the plain
//! [`authorizer::authorize`] function (the same function the `payment-authorizer` Lambda runs).
//! Its answer depends on the request and the limit alone, so calling it again when a handler's
//! transaction is replayed gives the same answer: no double effect can come from here.

use std::time::Duration;

use async_trait::async_trait;
use emporium_events::DeclineReason;

use crate::{
    authorizer::{self, AuthorizationOutcome, AuthorizationRequest},
    breaker::CircuitBreaker,
};

/// A payment provider.
#[async_trait]
pub trait PaymentProvider: Send + Sync + 'static {
    /// Authorized, declined, or [`AuthorizationOutcome::Unavailable`] when the provider failed
    /// transiently.
    async fn authorize(&self, request: &AuthorizationRequest) -> AuthorizationOutcome;
}

/// The provider of the contract: [`authorizer::authorize`].
#[derive(Debug, Clone, Copy)]
pub struct SimulatedProvider {
    /// `EMPORIUM_PAYMENT_LIMIT`: the largest total it authorizes.
    pub limit: i64,
}

#[async_trait]
impl PaymentProvider for SimulatedProvider {
    async fn authorize(&self, request: &AuthorizationRequest) -> AuthorizationOutcome {
        authorizer::authorize(request, self.limit)
    }
}

/// How often, and how patiently, a failing provider is retried. Kept short on purpose: the
/// handler waits holding the service's write transaction (SQLite's single writer), so the whole
/// budget is `backoff * (2^(attempts-1) - 1)` = 150 ms by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts: u32,
    /// The wait after the first failure; doubled after each further one.
    pub backoff: Duration,
}

pub const RETRY_ATTEMPTS: u32 = 3;
pub const RETRY_BACKOFF: Duration = Duration::from_millis(50);

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: RETRY_ATTEMPTS,
            backoff: RETRY_BACKOFF,
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        self.backoff
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(16)))
    }
}

/// The breaker refused this order's calls before any of them had failed: nothing is known about
/// its card yet, and declining it would make it pay for someone else's failures. Ask again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deferred;

/// Authorizes with retries behind the breaker: approved, or declined with the provider's reason,
/// or `provider_unavailable` when this order's own calls failed until the retries ran out or the
/// breaker opened. [`Deferred`] when the breaker refused the order before its own calls failed.
///
/// So a breaker opened by other orders' failures (one customer's `tok_providerError`) holds
/// everyone else's orders back until it closes, and declines none of them; an order whose own
/// calls fail is still declined, after at most `policy.attempts` calls, and is never deferred
/// again after its first failed call.
pub async fn authorize_with_retries(
    provider: &dyn PaymentProvider,
    breaker: &CircuitBreaker,
    policy: RetryPolicy,
    request: &AuthorizationRequest,
) -> Result<Result<(), DeclineReason>, Deferred> {
    let mut failed = false;
    for attempt in 1..=policy.attempts.max(1) {
        if breaker.acquire().is_err() {
            if !failed {
                tracing::warn!("payment provider circuit open; authorization deferred");
                return Err(Deferred);
            }
            tracing::warn!(
                attempt,
                "payment provider circuit open after this order's failures"
            );
            break;
        }
        match provider.authorize(request).await {
            AuthorizationOutcome::Authorized => {
                breaker.succeeded();
                return Ok(Ok(()));
            }
            // A decline is the provider working: it counts for the breaker like an approval.
            AuthorizationOutcome::Declined { reason } => {
                breaker.succeeded();
                return Ok(Err(reason));
            }
            AuthorizationOutcome::Unavailable => {
                breaker.failed();
                failed = true;
                tracing::warn!(attempt, "payment provider failed");
                if attempt < policy.attempts {
                    tokio::time::sleep(policy.delay(attempt)).await;
                }
            }
        }
    }
    Ok(Err(DeclineReason::ProviderUnavailable))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::breaker::{BreakerSettings, BreakerState};

    const LIMIT: i64 = 1_000_000;

    /// Fails `failures` times, then answers with the simulator.
    struct Flaky {
        failures: u32,
        calls: AtomicU32,
    }

    #[async_trait]
    impl PaymentProvider for Flaky {
        async fn authorize(&self, request: &AuthorizationRequest) -> AuthorizationOutcome {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            if call < self.failures {
                return AuthorizationOutcome::Unavailable;
            }
            SimulatedProvider { limit: LIMIT }.authorize(request).await
        }
    }

    fn flaky(failures: u32) -> Flaky {
        Flaky {
            failures,
            calls: AtomicU32::new(0),
        }
    }

    fn request(token: &str) -> AuthorizationRequest {
        AuthorizationRequest {
            order_id: uuid::Uuid::now_v7(),
            amount: emporium_events::Money::new(1999, "USD"),
            payment_token: token.into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_transient_failure_is_retried_with_backoff() {
        let provider = flaky(2);
        let breaker = CircuitBreaker::default();
        let started = tokio::time::Instant::now();
        let answer = authorize_with_retries(
            &provider,
            &breaker,
            RetryPolicy::default(),
            &request("tok_visa"),
        )
        .await;
        assert_eq!(answer, Ok(Ok(())));
        assert_eq!(provider.calls.load(Ordering::SeqCst), 3);
        // 50 ms, then 100 ms.
        assert_eq!(started.elapsed(), Duration::from_millis(150));
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_provider_that_stays_down_ends_provider_unavailable() {
        let breaker = CircuitBreaker::default();
        let started = tokio::time::Instant::now();
        let answer = authorize_with_retries(
            &SimulatedProvider { limit: LIMIT },
            &breaker,
            RetryPolicy::default(),
            &request("tok_providerError"),
        )
        .await;
        assert_eq!(answer, Ok(Err(DeclineReason::ProviderUnavailable)));
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(150),
            "no wait after the last attempt"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn declines_are_not_retried_and_do_not_trip_the_breaker() {
        let provider = flaky(0);
        let breaker = CircuitBreaker::new(BreakerSettings {
            failure_threshold: 1,
            cool_down: Duration::from_secs(5),
        });
        for _ in 0..3 {
            let answer = authorize_with_retries(
                &provider,
                &breaker,
                RetryPolicy::default(),
                &request("tok_chargeDeclined"),
            )
            .await;
            assert_eq!(answer, Ok(Err(DeclineReason::CardDeclined)));
        }
        assert_eq!(provider.calls.load(Ordering::SeqCst), 3);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    /// Two orders of three failing attempts against a breaker that opens at the fourth failure.
    async fn open(breaker: &CircuitBreaker) {
        let down = SimulatedProvider { limit: LIMIT };
        for _ in 0..2 {
            let answer = authorize_with_retries(
                &down,
                breaker,
                RetryPolicy::default(),
                &request("tok_providerError"),
            )
            .await;
            // The second order's third attempt is refused, but its own calls had failed: declined.
            assert_eq!(answer, Ok(Err(DeclineReason::ProviderUnavailable)));
        }
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_defers_other_orders_without_declining_them() {
        let breaker = CircuitBreaker::new(BreakerSettings {
            failure_threshold: 4,
            cool_down: Duration::from_secs(5),
        });
        open(&breaker).await;

        // A good card is not declined for someone else's failures: deferred at once, without
        // calling the provider.
        let provider = flaky(0);
        let started = tokio::time::Instant::now();
        let answer = authorize_with_retries(
            &provider,
            &breaker,
            RetryPolicy::default(),
            &request("tok_visa"),
        )
        .await;
        assert_eq!(answer, Err(Deferred));
        assert_eq!(provider.calls.load(Ordering::SeqCst), 0);
        assert_eq!(started.elapsed(), Duration::ZERO);

        // After the cool-down the trial call goes through and closes the breaker.
        tokio::time::advance(Duration::from_secs(5)).await;
        let answer = authorize_with_retries(
            &provider,
            &breaker,
            RetryPolicy::default(),
            &request("tok_visa"),
        )
        .await;
        assert_eq!(answer, Ok(Ok(())));
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_card_deferred_by_an_open_breaker_is_declined_once_its_own_call_fails() {
        let breaker = CircuitBreaker::new(BreakerSettings {
            failure_threshold: 4,
            cool_down: Duration::from_secs(5),
        });
        open(&breaker).await;
        let down = SimulatedProvider { limit: LIMIT };
        let policy = RetryPolicy::default();
        assert_eq!(
            authorize_with_retries(&down, &breaker, policy, &request("tok_providerError")).await,
            Err(Deferred),
            "refused before trying: deferred like everyone else"
        );
        // Redelivered after the cool-down: its trial call fails, the breaker opens again and
        // refuses its next attempt, and this time the order is declined, not deferred again.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(
            authorize_with_retries(&down, &breaker, policy, &request("tok_providerError")).await,
            Ok(Err(DeclineReason::ProviderUnavailable))
        );
        assert_eq!(breaker.state(), BreakerState::Open);
    }
}
