//! The dispatcher: after commit, takes queued notifications critical first, then standard, then
//! marketing, a batch at a time: claims the batch in one transaction, sends each, and records the
//! outcomes with their `NotificationSent` / `NotificationFailed` events in one transaction.
//!
//! Delivery is at least once: a crash after sending and before recording sends again once the
//! claim's lease runs out (emails carry the notification id as `Message-ID`, so a receiver can drop
//! the copy). A claim is a lease on the row (`due_at` moved forward), so several instances of the
//! service can dispatch from one database without sending the same notification twice.

use std::{sync::Arc, time::Duration};

use emporium_events::{Event, NotificationFailed, NotificationSent};
use emporium_platform::storage::{Db, EventContext, StorageError, Tx};
use tokio::sync::{Notify, watch};

use crate::{
    NAME,
    sender::{self, Outgoing, SendOutcome, Senders},
    store::{self, Due},
};

/// How the dispatcher paces itself.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// How often it looks for due notifications when nobody wakes it.
    pub poll: Duration,
    /// Rows taken per look; it looks again at once after a full batch, so a critical notification
    /// queued meanwhile waits for at most this many sends.
    pub batch: i64,
    /// Attempts at a message before it is `FAILED`.
    pub max_attempts: i64,
    /// First retry delay, doubled per attempt, capped at `backoff_max`.
    pub backoff: Duration,
    pub backoff_max: Duration,
    /// How long a claim holds a row; longer than a send may take.
    pub lease: Duration,
    /// A send taking longer fails this attempt.
    pub send_timeout: Duration,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            poll: Duration::from_millis(100),
            batch: 16,
            max_attempts: 5,
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            lease: Duration::from_secs(60),
            send_timeout: Duration::from_secs(30),
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Sends queued notifications.
pub struct Dispatcher {
    pub db: Db,
    pub senders: Senders,
    /// Rung when the API queues a notification.
    pub wake: Arc<Notify>,
    pub pace: Pace,
}

impl Dispatcher {
    /// Runs until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                break;
            }
            let keep_going = || !*stop.borrow();
            let busy = match self.dispatch_batch(keep_going).await {
                Ok(taken) => taken >= self.pace.batch,
                Err(e) => {
                    tracing::warn!(error = %e, "notification dispatch failed; retrying");
                    false
                }
            };
            if busy {
                continue;
            }
            tokio::select! {
                changed = stop.changed() => if changed.is_err() { break },
                () = self.wake.notified() => {},
                () = tokio::time::sleep(self.pace.poll) => {},
            }
        }
    }

    /// Sends one batch of due notifications; returns how many were due.
    pub async fn dispatch_due(&self) -> Result<i64, StorageError> {
        self.dispatch_batch(|| true).await
    }

    /// Sends one batch, checking `keep_going` before each message so that a stop does not wait
    /// for the rest of the batch (what is left is released, still queued).
    async fn dispatch_batch(&self, keep_going: impl Fn() -> bool) -> Result<i64, StorageError> {
        let now = chrono::Utc::now().timestamp_millis();
        let due = store::due(&mut self.db.reader().await?, now, self.pace.batch).await?;
        let taken = due.len() as i64;
        if due.is_empty() {
            return Ok(0);
        }
        let mut tx = self.db.begin(EventContext::request(NAME, "")).await?;
        let mut claimed = Vec::with_capacity(due.len());
        for notification in due {
            // The batch is sent one after another: each claim outlasts the sends before it, so
            // that no other dispatcher takes a row this one has still to send.
            let queued_sends = self.pace.send_timeout.saturating_mul(claimed.len() as u32);
            let lease_until = now
                .saturating_add(millis(self.pace.lease))
                .saturating_add(millis(queued_sends));
            if store::claim(tx.conn(), notification.id, now, lease_until).await? {
                claimed.push(notification);
            }
        }
        tx.commit().await?;

        let mut outcomes = Vec::with_capacity(claimed.len());
        let mut unsent = Vec::new();
        for notification in claimed {
            if keep_going() {
                let result = self.send(&notification).await;
                outcomes.push((notification, result));
            } else {
                unsent.push(notification.id);
            }
        }

        let mut tx = self.db.begin(EventContext::request(NAME, "")).await?;
        for (notification, result) in outcomes {
            tx.set_context(EventContext {
                source: NAME,
                correlation_id: notification.correlation_id.clone(),
                causation_id: notification.event_id,
            });
            self.record(&mut tx, notification, result).await?;
        }
        for id in unsent {
            store::release(tx.conn(), id, now).await?;
        }
        tx.commit().await?;
        Ok(taken)
    }

    async fn send(&self, n: &Due) -> Result<(), String> {
        let outgoing = Outgoing {
            id: n.id,
            channel: n.channel,
            recipient: n.recipient.clone(),
            subject: n.subject.clone(),
            body: n.body.clone(),
        };
        let sent = sender::send(&self.senders, &outgoing);
        match tokio::time::timeout(self.pace.send_timeout, sent).await {
            Ok(SendOutcome::Sent) => Ok(()),
            Ok(SendOutcome::Failed { error }) => Err(error),
            Err(_) => Err(format!(
                "sending took longer than {:?}",
                self.pace.send_timeout
            )),
        }
    }

    /// Records how sending `n` went, with its event.
    async fn record(
        &self,
        tx: &mut Tx,
        n: Due,
        result: Result<(), String>,
    ) -> Result<(), StorageError> {
        let template = n.template.clone().unwrap_or_default();
        match result {
            Ok(()) => {
                if store::mark_sent(tx.conn(), n.id).await? {
                    tx.emit(Event::NotificationSent(NotificationSent {
                        notification_id: n.id,
                        user_id: n.user_id,
                        template,
                        channel: n.channel,
                        priority: n.priority,
                    }))?;
                }
                metrics::counter!("emporium_notifications_sent_total", "channel" => n.channel.as_str())
                    .increment(1);
            }
            Err(error) if n.attempts + 1 < self.pace.max_attempts => {
                let exponent = u32::try_from(n.attempts).unwrap_or(u32::MAX).min(20);
                let delay = self
                    .pace
                    .backoff
                    .saturating_mul(2u32.saturating_pow(exponent))
                    .min(self.pace.backoff_max);
                tracing::warn!(notification_id = %n.id, attempt = n.attempts + 1, %error, "sending failed; will retry");
                store::mark_retry(
                    tx.conn(),
                    n.id,
                    chrono::Utc::now().timestamp_millis() + millis(delay),
                    &error,
                )
                .await?;
            }
            Err(error) => {
                tracing::error!(notification_id = %n.id, %error, "sending failed for good");
                if store::mark_failed(tx.conn(), n.id, &error).await? {
                    tx.emit(Event::NotificationFailed(NotificationFailed {
                        notification_id: n.id,
                        user_id: n.user_id,
                        template,
                        channel: n.channel,
                        error,
                    }))?;
                }
                metrics::counter!("emporium_notifications_failed_total", "channel" => n.channel.as_str())
                    .increment(1);
            }
        }
        Ok(())
    }
}
