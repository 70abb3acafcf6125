//! Consumers: the one obvious way for a service to handle events.
//!
//! A service implements [`EventHandler`] — apply one event inside a transaction, emit what follows —
//! and [`Consumer::spawn`] does the rest, the same on every bus:
//! - **exactly-once effect**: each event's id is recorded in the inbox in the handler's transaction,
//!   and a redelivered event is skipped; the offset is committed only after that transaction;
//! - **batching**: a batch from one partition is applied in one transaction when every event in it
//!   succeeds; if one fails, the batch is rolled back and applied one event at a time;
//! - **group commit**: batches of several partitions that are ready at the same moment are applied
//!   together in one transaction (each partition's events in their order), since a transaction costs
//!   its `BEGIN`, `COMMIT` and connection hand-offs however many events it carries; if that
//!   transaction fails, each batch falls back to being applied on its own, as above;
//! - **retries**: a failing event is retried with exponential backoff and full jitter, up to
//!   `max_attempts`, then moved to `<topic>.dlq` with the error and attempt count, and the partition
//!   moves on; an event that cannot be decoded goes there at once;
//! - **infrastructure errors** (database down) never dead-letter: the batch is redelivered after a pause.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use std::panic::AssertUnwindSafe;

use async_trait::async_trait;
use emporium_events::Envelope;
use futures_util::FutureExt;
use tokio::sync::oneshot;
use tracing::Instrument;
use uuid::Uuid;

use super::{BatchHandler, Delivery, EventBus, InfraError, SubscribeOptions, Subscription, dlq};
use crate::{
    config::BusConfig,
    storage::{Db, EventContext, StorageError, Tx},
};

/// Events applied per consumer transaction, by group: what batching buys (each transaction costs
/// its `BEGIN`, `COMMIT` and connection hand-offs however many events it applies).
pub const TRANSACTION_EVENTS_METRIC: &str = "emporium_consumer_transaction_events";
/// Events per batch handed over by the bus (one partition's), by group.
pub const BATCH_EVENTS_METRIC: &str = "emporium_consumer_batch_events";

/// Why an event could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The event (or the code handling it) is at fault: retry, then dead-letter.
    #[error("{0}")]
    Failed(String),
    /// The infrastructure is: pause and redeliver, never dead-letter.
    #[error("infrastructure: {0}")]
    Infra(String),
}

impl From<StorageError> for HandlerError {
    fn from(e: StorageError) -> Self {
        if e.is_unavailable() {
            HandlerError::Infra(e.to_string())
        } else {
            HandlerError::Failed(e.to_string())
        }
    }
}

/// What a service writes to handle events.
///
/// A handler works **only on its database** through `tx`: the transaction may be rolled back and the
/// event applied again (a later event in the same batch failed, a retry), so an effect outside the
/// database — an email, a call to a payment provider — would happen twice. Record the intent in `tx`
/// instead and perform it after commit from that record. Events of one key arrive in order per
/// topic; across topics (an order's payment event and its inventory event) they may arrive in any
/// order, and handlers must accept that.
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// The event types [`EventHandler::handle`] acts on, or `None` (the default) for every event of
    /// its topics. The consumer passes over the others by their `event-type` header, before
    /// decoding them or recording them in the inbox: a batch of nothing but those costs no
    /// transaction. List exactly the types `handle` matches: one left out is never handled.
    fn event_types(&self) -> Option<&'static [&'static str]> {
        None
    }

    /// Applies `event` inside `tx`. The event is already recorded in the inbox; events emitted with
    /// [`Tx::emit`] name it as their cause. Events a handler does not care about are simply ignored.
    async fn handle(&self, tx: &mut Tx, event: &Envelope) -> Result<(), HandlerError>;
}

/// The types among `event_types` that are no event of `topics`: what a handler's
/// [`EventHandler::event_types`] must not hold (a misspelt type would never be handled). For the
/// handlers' tests.
pub fn foreign_event_types<'a>(
    event_types: &[&'a str],
    topics: &[emporium_events::Topic],
) -> Vec<&'a str> {
    event_types
        .iter()
        .copied()
        .filter(|event_type| {
            !emporium_events::Event::CATALOG
                .iter()
                .any(|info| info.event_type == *event_type && topics.contains(&info.topic))
        })
        .collect()
}

/// Retry policy for failing events.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub backoff: Duration,
    pub backoff_max: Duration,
}

impl RetryPolicy {
    pub fn from_config(bus: &BusConfig) -> Self {
        RetryPolicy {
            max_attempts: bus.max_attempts.max(1),
            backoff: bus.retry_backoff,
            backoff_max: bus.retry_backoff_max,
        }
    }

    /// Full jitter: uniform in `[0, min(max, base * 2^(attempt-1))]`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self
            .backoff
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(20)))
            .min(self.backoff_max);
        ceiling.mul_f64(fastrand::f64())
    }
}

/// A service's consumer: one group, some topics, one handler, one database.
pub struct Consumer<H> {
    /// The service name (`source` of emitted events).
    source: &'static str,
    /// The consumer group, also the inbox's consumer name.
    group: String,
    db: Db,
    bus: Arc<dyn EventBus>,
    handler: H,
    retry: RetryPolicy,
    /// Decoded batches waiting for the next group commit, one per partition at most (a partition
    /// hands over its next batch only once this one is settled).
    pending: Mutex<Vec<Pending>>,
    /// Held by the one task applying pending batches; the others queue behind it, and whichever
    /// gets it next applies everything that queued meanwhile.
    applying: tokio::sync::Mutex<()>,
}

/// A partition's batch waiting for a group commit, and where to say how it went.
struct Pending {
    events: Arc<[Arc<Envelope>]>,
    settled: oneshot::Sender<GroupOutcome>,
}

/// How a group commit went, for each batch in it.
#[derive(Debug)]
enum GroupOutcome {
    Committed,
    /// The database is in trouble: every batch in it is redelivered.
    Infra(String),
    /// An event failed: the transaction was rolled back, and each batch is applied on its own. The
    /// batch holding the failed event gets its index and error: that was its first attempt.
    Alone(Option<(usize, String)>),
}

impl<H: EventHandler> Consumer<H> {
    pub fn new(
        source: &'static str,
        group: impl Into<String>,
        db: Db,
        bus: Arc<dyn EventBus>,
        handler: H,
        retry: RetryPolicy,
    ) -> Self {
        Consumer {
            source,
            group: group.into(),
            db,
            bus,
            handler,
            retry,
            pending: Mutex::new(Vec::new()),
            applying: tokio::sync::Mutex::new(()),
        }
    }

    /// Applies `events` (one partition's batch, in order) in a transaction shared with the batches
    /// of other partitions that are ready at the same time.
    ///
    /// The batch joins the queue, then waits its turn; the task whose turn it is applies everything
    /// queued, in one transaction, and tells each batch the outcome. Nothing else of a partition is
    /// delivered until its batch is settled, so per-key order holds, and the offsets of every batch
    /// in the transaction are committed only after it.
    async fn apply_together(&self, events: Arc<[Arc<Envelope>]>) -> GroupOutcome {
        let (settled, mut outcome) = oneshot::channel();
        self.lock_pending().push(Pending { events, settled });
        let _turn = self.applying.lock().await;
        match outcome.try_recv() {
            // Applied by the task that had the turn before us.
            Ok(outcome) => return outcome,
            // Taken by a task that was stopped before settling it (its transaction rolled back).
            Err(oneshot::error::TryRecvError::Closed) => {
                return GroupOutcome::Infra("group commit interrupted".to_owned());
            }
            // Still queued: whoever takes a batch settles it before giving up the turn.
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        // Partitions woken by the same append are about to queue their batches: let them.
        tokio::task::yield_now().await;
        let batches = std::mem::take(&mut *self.lock_pending());
        let events: Vec<&Envelope> = batches
            .iter()
            .flat_map(|pending| pending.events.iter().map(|event| &**event))
            .collect();
        let result = self.apply_all(&events).await;
        let mut failure = match result {
            Ok(()) => None,
            Err((index, HandlerError::Failed(error))) => Some((index, error)),
            Err((_, HandlerError::Infra(e))) => {
                for pending in batches {
                    let _ = pending.settled.send(GroupOutcome::Infra(e.clone()));
                }
                return outcome.await.unwrap_or_else(|_| {
                    GroupOutcome::Infra("group commit interrupted".to_owned())
                });
            }
        };
        // `failure` counts events from the first batch on; each batch learns whether it holds it.
        let mut start = 0;
        for pending in batches {
            let len = pending.events.len();
            let settled = match &mut failure {
                None => GroupOutcome::Committed,
                Some((index, error)) if (start..start + len).contains(index) => {
                    GroupOutcome::Alone(Some((*index - start, std::mem::take(error))))
                }
                Some(_) => GroupOutcome::Alone(None),
            };
            start += len;
            // A closed receiver is a partition stopped while it waited: its batch is redelivered.
            let _ = pending.settled.send(settled);
        }
        outcome
            .await
            .unwrap_or_else(|_| GroupOutcome::Infra("group commit interrupted".to_owned()))
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Vec<Pending>> {
        // Pushes and takes only: a panic cannot leave the queue half-changed.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Subscribes to `topics` and starts delivering.
    pub async fn spawn(
        self,
        topics: &[&str],
        max_batch: usize,
    ) -> Result<Subscription, super::BusError> {
        let bus = self.bus.clone();
        let options = SubscribeOptions {
            group: self.group.clone(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            max_batch,
        };
        bus.subscribe(options, Arc::new(self)).await
    }

    /// Applies the events in one transaction. On failure nothing is left behind and the error says
    /// which event failed (the ones before it succeeded in the rolled-back transaction).
    async fn apply_all(&self, events: &[&Envelope]) -> Result<(), (usize, HandlerError)> {
        let mut tx = self
            .db
            .begin(EventContext::request(self.source, ""))
            .await
            .map_err(|e| (0, e.into()))?;
        // Every event's id into the inbox at once: one statement, not one per event.
        let ids: Vec<Uuid> = events.iter().map(|envelope| envelope.event_id).collect();
        let mut first_seen = tx
            .record_all_in_inbox(&self.group, &ids)
            .await
            .map_err(|e| (0, e.into()))?;
        let mut applied = 0;
        for envelope in events {
            // An id twice in the run (redelivered in the same batch) takes effect the first time.
            let recorded_now = first_seen.remove(&envelope.event_id);
            self.apply_recorded(&mut tx, envelope, recorded_now)
                .await
                .map_err(|e| (applied, e))?;
            applied += 1;
        }
        tx.commit()
            .await
            .map_err(|e| (applied.saturating_sub(1), e.into()))?;
        crate::crash::point("consumer.after_commit");
        metrics::histogram!(TRANSACTION_EVENTS_METRIC, "group" => self.group.clone())
            .record(applied as f64);
        Ok(())
    }

    /// Applies a run of decoded events: all in one transaction when they all succeed; otherwise the
    /// ones before the failing event again in one transaction, the failing one with retries (its
    /// first attempt already made), and then the rest the same way.
    async fn apply_run(&self, events: &[(&Delivery, Arc<Envelope>)]) -> Result<(), InfraError> {
        self.apply_run_after(events, None).await
    }

    /// [`Self::apply_run`] when the first attempt at the whole run was already made and failed at
    /// `known_failure` (index, error), if given.
    async fn apply_run_after(
        &self,
        events: &[(&Delivery, Arc<Envelope>)],
        mut known_failure: Option<(usize, String)>,
    ) -> Result<(), InfraError> {
        let mut rest = events;
        while !rest.is_empty() {
            let (failed_at, error) = match known_failure.take() {
                Some(failure) => failure,
                None => match self.apply_all(&envelopes(rest)).await {
                    Ok(()) => return Ok(()),
                    Err((_, HandlerError::Infra(e))) => return Err(InfraError(e)),
                    Err((index, HandlerError::Failed(error))) => (index, error),
                },
            };
            let (before, from_failure) = rest.split_at(failed_at);
            if !before.is_empty() {
                match self.apply_all(&envelopes(before)).await {
                    Ok(()) => {}
                    Err((_, HandlerError::Infra(e))) => return Err(InfraError(e)),
                    // Not the same outcome twice: take them one at a time.
                    Err((_, HandlerError::Failed(_))) => {
                        for (delivery, envelope) in before {
                            self.apply_with_retries(delivery, envelope, 1, None).await?;
                        }
                    }
                }
            }
            if let Some(((delivery, envelope), after)) = from_failure.split_first() {
                self.apply_with_retries(delivery, envelope, 2, Some(error))
                    .await?;
                rest = after;
            } else {
                rest = from_failure;
            }
        }
        Ok(())
    }

    /// Applies one event in its own transaction.
    async fn apply_one(&self, envelope: &Envelope) -> Result<bool, HandlerError> {
        let mut tx = self
            .db
            .begin(EventContext::caused_by(self.source, envelope))
            .await?;
        let applied = self.apply_in(&mut tx, envelope).await?;
        tx.commit().await?;
        Ok(applied)
    }

    async fn apply_in(&self, tx: &mut Tx, envelope: &Envelope) -> Result<bool, HandlerError> {
        let recorded_now = tx.record_in_inbox(&self.group, envelope.event_id).await?;
        self.apply_recorded(tx, envelope, recorded_now).await
    }

    /// Applies `envelope` in `tx` if its id was `recorded_now` in the inbox; skips a duplicate.
    async fn apply_recorded(
        &self,
        tx: &mut Tx,
        envelope: &Envelope,
        recorded_now: bool,
    ) -> Result<bool, HandlerError> {
        if !recorded_now {
            metrics::counter!("emporium_events_duplicate_total", "group" => self.group.clone())
                .increment(1);
            tracing::debug!(event_id = %envelope.event_id, "duplicate event skipped");
            return Ok(false);
        }
        tx.set_context(EventContext::caused_by(self.source, envelope));
        let span = tracing::info_span!("event", service = self.source, group = %self.group, event_type = envelope.event.event_type(),
            event_id = %envelope.event_id, correlation_id = %envelope.correlation_id);
        let started = std::time::Instant::now();
        // A panicking handler is a failing handler: retried, then dead-lettered, never a dead partition.
        let result = AssertUnwindSafe(self.handler.handle(tx, envelope).instrument(span))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                Err(HandlerError::Failed(format!(
                    "handler panicked: {}",
                    super::panic_message(panic.as_ref())
                )))
            });
        metrics::histogram!("emporium_event_handler_seconds", "group" => self.group.clone())
            .record(started.elapsed().as_secs_f64());
        result.map(|()| true)
    }

    /// One event, with retries from `attempt` on (`last_error` from the attempt before, if any);
    /// dead-lettered when they run out.
    async fn apply_with_retries(
        &self,
        delivery: &Delivery,
        envelope: &Envelope,
        mut attempt: u32,
        last_error: Option<String>,
    ) -> Result<(), InfraError> {
        if let Some(error) = last_error {
            if attempt > self.retry.max_attempts {
                return self.dead_letter(delivery, &error, attempt - 1).await;
            }
            self.wait_before_retry(envelope, attempt - 1, &error).await;
        }
        loop {
            match self.apply_one(envelope).await {
                Ok(_) => return Ok(()),
                Err(HandlerError::Infra(e)) => return Err(InfraError(e)),
                Err(HandlerError::Failed(error)) if attempt >= self.retry.max_attempts => {
                    return self.dead_letter(delivery, &error, attempt).await;
                }
                Err(HandlerError::Failed(error)) => {
                    self.wait_before_retry(envelope, attempt, &error).await;
                    attempt += 1;
                }
            }
        }
    }

    async fn wait_before_retry(&self, envelope: &Envelope, attempt: u32, error: &str) {
        let delay = self.retry.delay(attempt);
        tracing::warn!(group = %self.group, event_id = %envelope.event_id, attempt, error,
            retry_in_ms = delay.as_millis() as u64, "event handler failed; retrying");
        tokio::time::sleep(delay).await;
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        error: &str,
        attempts: u32,
    ) -> Result<(), InfraError> {
        tracing::error!(group = %self.group, topic = %delivery.record.topic, partition = delivery.partition,
            offset = delivery.offset, attempts, error, "event moved to the dead-letter topic");
        let record = dlq::dead_letter_record(delivery, &self.group, error, attempts);
        self.bus.publish(&[record]).await?;
        metrics::counter!("emporium_dead_letters_total", "group" => self.group.clone(),
            "topic" => delivery.record.topic.clone())
        .increment(1);
        Ok(())
    }
}

#[async_trait]
impl<H: EventHandler> BatchHandler for Consumer<H> {
    async fn handle(&self, batch: &[Delivery]) -> Result<(), InfraError> {
        for delivery in batch {
            metrics::counter!("emporium_events_consumed_total", "group" => self.group.clone(),
                "topic" => delivery.record.topic.clone())
            .increment(1);
        }
        if batch.is_empty() {
            return Ok(());
        }
        metrics::histogram!(BATCH_EVENTS_METRIC, "group" => self.group.clone())
            .record(batch.len() as f64);
        let batch: Vec<&Delivery> = match self.handler.event_types() {
            None => batch.iter().collect(),
            Some(types) => batch
                .iter()
                .filter(|delivery| {
                    delivery
                        .record
                        .header(super::headers::EVENT_TYPE)
                        .is_none_or(|event_type| types.contains(&event_type))
                })
                .collect(),
        };
        if batch.is_empty() {
            return Ok(());
        }
        let decoded: Result<Arc<[Arc<Envelope>]>, _> = batch.iter().map(|d| decode(d)).collect();
        if let Ok(events) = decoded {
            match self.apply_together(events.clone()).await {
                GroupOutcome::Committed => return Ok(()),
                GroupOutcome::Infra(e) => return Err(InfraError(e)),
                GroupOutcome::Alone(known_failure) => {
                    let run: Vec<(&Delivery, Arc<Envelope>)> =
                        batch.iter().copied().zip(events.iter().cloned()).collect();
                    return self.apply_run_after(&run, known_failure).await;
                }
            }
        }
        // Runs of decodable events go through `apply_run`; an undecodable one is dead-lettered at once
        // (no retry can fix it), keeping the partition's order.
        let mut run: Vec<(&Delivery, Arc<Envelope>)> = Vec::with_capacity(batch.len());
        for delivery in batch {
            match decode(delivery) {
                Ok(envelope) => run.push((delivery, envelope)),
                Err(e) => {
                    self.apply_run(&run).await?;
                    run.clear();
                    self.dead_letter(delivery, &format!("cannot decode event: {e}"), 1)
                        .await?;
                }
            }
        }
        self.apply_run(&run).await
    }
}

fn envelopes<'a>(run: &'a [(&Delivery, Arc<Envelope>)]) -> Vec<&'a Envelope> {
    run.iter().map(|(_, envelope)| &**envelope).collect()
}

/// The delivery's envelope: the one the bus holds, or decoded from the payload.
fn decode(delivery: &Delivery) -> Result<Arc<Envelope>, serde_json::Error> {
    match &delivery.decoded {
        Some(envelope) => Ok(envelope.clone()),
        None => Envelope::from_json(&delivery.record.payload).map(Arc::new),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_and_is_capped() {
        let policy = RetryPolicy {
            max_attempts: 5,
            backoff: Duration::from_millis(100),
            backoff_max: Duration::from_millis(350),
        };
        fastrand::seed(7);
        for attempt in 1..=10 {
            let ceiling = Duration::from_millis((100u64 << (attempt - 1)).min(350));
            for _ in 0..50 {
                assert!(policy.delay(attempt) <= ceiling);
            }
        }
        // Jitter spreads retries: not every delay is the same.
        let delays: std::collections::HashSet<_> = (0..20).map(|_| policy.delay(3)).collect();
        assert!(delays.len() > 1);
    }
}
