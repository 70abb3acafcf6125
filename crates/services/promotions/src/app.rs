//! Promotions' use cases: creating one (checked field by field), reading them, and the scheduler,
//! which launches each due occurrence in one transaction (the launch record, the promotion's next
//! launch and its `PromotionLaunched` event).

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use emporium_events::{Event, PromotionLaunched};
use emporium_platform::{
    api::{ApiError, Checks, Page, PageRequest},
    storage::{Db, EventContext, StorageError},
};
use serde::Deserialize;
use tokio::sync::{Notify, watch};
use uuid::Uuid;

use crate::{
    NAME,
    domain::{self, MAX_CATEGORY, MAX_MESSAGE, MAX_NAME, MAX_PRODUCTS},
    store::{self, PromotionRow, millis, time},
};

/// The service's API use cases.
#[derive(Clone)]
pub struct App {
    pub db: Db,
    /// Wakes the scheduler after a promotion is created, so that it reconsiders its next wake-up.
    pub wake: Arc<Notify>,
}

/// A new promotion (`POST /api/promotions`).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatePromotion {
    /// 1 to 200 characters; the subject of the message.
    #[schema(example = "Spring sale")]
    pub name: String,
    /// 1 to 2000 characters.
    #[schema(example = "Every mug 20% off this week.")]
    pub message: String,
    /// The products on promotion (ids, not checked against the catalog); at most 1000.
    pub product_ids: Option<Vec<String>>,
    /// The category on promotion, 1 to 100 characters. No products and no category: store-wide.
    pub category: Option<String>,
    /// RFC 3339. Alone: the launch time (now when absent or past). With `cron`: when the schedule
    /// begins.
    #[schema(example = "2030-04-01T09:00:00Z")]
    pub starts_at: Option<String>,
    /// A cron pattern, evaluated in UTC: five fields, or six with seconds first.
    #[schema(example = "0 9 * * MON")]
    pub cron: Option<String>,
}

/// Records `field: message` unless `result` is fine; returns its value.
fn checked<T>(checks: &mut Checks, field: &str, result: Result<T, String>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(message) => {
            checks.check(false, field, message);
            None
        }
    }
}

fn text(value: &str, max: usize) -> Result<String, String> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        Err("must not be empty".into())
    } else if trimmed.chars().count() > max {
        Err(format!("must be at most {max} characters"))
    } else {
        Ok(trimmed.to_owned())
    }
}

fn product_ids(ids: &[String]) -> Result<Vec<Uuid>, String> {
    if ids.len() > MAX_PRODUCTS {
        return Err(format!("at most {MAX_PRODUCTS} products"));
    }
    let mut parsed: Vec<Uuid> = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        let id = Uuid::parse_str(id.trim())
            .map_err(|_| format!("item {i} ({id:?}) is not a product id (a UUID)"))?;
        if !parsed.contains(&id) {
            parsed.push(id);
        }
    }
    Ok(parsed)
}

fn instant(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("must be an RFC 3339 date-time such as 2030-04-01T09:00:00Z ({e})"))
}

impl App {
    /// Creates a promotion at `now` and wakes the scheduler. Every invalid field is named.
    pub async fn create(
        &self,
        request: CreatePromotion,
        correlation_id: &str,
        now: DateTime<Utc>,
    ) -> Result<PromotionRow, ApiError> {
        let mut checks = Checks::new();
        let name = checked(&mut checks, "name", text(&request.name, MAX_NAME));
        let message = checked(&mut checks, "message", text(&request.message, MAX_MESSAGE));
        let products = checked(
            &mut checks,
            "productIds",
            product_ids(request.product_ids.as_deref().unwrap_or_default()),
        );
        let category = match &request.category {
            None => Some(None),
            Some(category) => {
                checked(&mut checks, "category", text(category, MAX_CATEGORY)).map(Some)
            }
        };
        let starts_at = match &request.starts_at {
            None => Some(None),
            Some(starts) => checked(&mut checks, "startsAt", instant(starts)).map(Some),
        };
        let cron = match &request.cron {
            None => Some(None),
            Some(cron) => checked(&mut checks, "cron", domain::parse_cron(cron.trim())).map(Some),
        };
        let mut first = None;
        if let (Some(starts_at), Some(cron)) = (starts_at, &cron) {
            first = domain::first_launch(starts_at, cron.as_ref(), now);
            checks.check(
                first.is_some(),
                "cron",
                "never occurs once the schedule has begun",
            );
        }
        checks.finish()?;
        let (
            Some(name),
            Some(message),
            Some(products),
            Some(category),
            Some(starts_at),
            Some(first),
        ) = (name, message, products, category, starts_at, first)
        else {
            return Err(ApiError::internal("a checked field has no value"));
        };

        let row = PromotionRow {
            id: Uuid::now_v7(),
            name,
            message,
            product_ids: serde_json::to_string(&products)
                .map_err(|e| ApiError::internal(format!("cannot store product ids: {e}")))?,
            category,
            starts_at: starts_at.map(millis),
            cron: request.cron.as_deref().map(|c| c.trim().to_owned()),
            correlation_id: correlation_id.to_owned(),
            created_at: millis(now),
            last_launched_at: None,
            next_launch_at: Some(millis(first)),
        };
        let mut tx = self
            .db
            .begin(EventContext::request(NAME, correlation_id))
            .await?;
        store::insert(tx.conn(), &row).await?;
        tx.commit().await?;
        self.wake.notify_waiters();
        Ok(row)
    }

    pub async fn get(&self, id: Uuid) -> Result<PromotionRow, ApiError> {
        store::by_id(&mut self.db.reader().await?, id)
            .await?
            .ok_or_else(|| ApiError::not_found("no such promotion"))
    }

    /// Promotions, newest first.
    pub async fn list(&self, page: &PageRequest) -> Result<Page<PromotionRow>, ApiError> {
        let rows = store::list(&mut self.db.reader().await?, page).await?;
        Ok(Page::from_rows(rows, page, |row| row.id.to_string()))
    }
}

/// Launches `promotion`'s occurrence due at `now`, if any, in one transaction: the promotion moves
/// to its next launch (only if no other scheduler moved it first), the launch is recorded (unique
/// per promotion and occurrence) and `PromotionLaunched` goes to the outbox. Returns whether it
/// launched.
pub async fn launch(
    db: &Db,
    promotion: &PromotionRow,
    now: DateTime<Utc>,
) -> Result<bool, StorageError> {
    let Some(expected) = promotion.next_launch_at else {
        return Ok(false);
    };
    let cron = promotion
        .cron
        .as_deref()
        .map(domain::parse_cron)
        .transpose()
        .map_err(|e| StorageError::Query(format!("promotion {}: stored cron {e}", promotion.id)))?;
    let Some(due) = domain::due(cron.as_ref(), time(expected)?, now) else {
        return Ok(false);
    };
    let mut tx = db
        .begin(EventContext::request(
            NAME,
            promotion.correlation_id.clone(),
        ))
        .await?;
    let scheduled_for = millis(due.occurrence);
    if !store::advance(
        tx.conn(),
        promotion.id,
        expected,
        millis(now),
        due.next.map(millis),
    )
    .await?
    {
        return Ok(false);
    }
    let first_time =
        store::record_launch(tx.conn(), promotion.id, scheduled_for, millis(now)).await?;
    if first_time {
        tx.emit(Event::PromotionLaunched(PromotionLaunched {
            promotion_id: promotion.id,
            name: promotion.name.clone(),
            message: promotion.message.clone(),
            product_ids: promotion.product_ids()?,
            category: promotion.category.clone(),
            scheduled_for: time(scheduled_for)?,
        }))?;
    }
    tx.commit().await?;
    Ok(first_time)
}

/// Promotions launched per look at the table.
const LAUNCH_BATCH: i64 = 100;

/// Launches every occurrence due at `now`; returns how many launched.
pub async fn launch_due(db: &Db, now: DateTime<Utc>) -> Result<usize, StorageError> {
    let mut launched = 0;
    loop {
        let due = store::due(&mut db.reader().await?, millis(now), LAUNCH_BATCH).await?;
        let mut moved = 0;
        for promotion in &due {
            if launch(db, promotion, now).await? {
                launched += 1;
            }
            moved += 1;
        }
        // Every launched promotion's next launch is after `now`, so a full batch means there may
        // be more: look again.
        if (moved as i64) < LAUNCH_BATCH {
            return Ok(launched);
        }
    }
}

/// The earliest pending launch of any promotion.
pub async fn next_due(db: &Db) -> Result<Option<DateTime<Utc>>, StorageError> {
    store::next_due(&mut db.reader().await?)
        .await?
        .map(time)
        .transpose()
}

/// How long the scheduler waits after a failed pass before trying again.
const RETRY: Duration = Duration::from_secs(1);

/// The scheduler: launches due promotions, then sleeps until the next launch is due, a promotion
/// is created (`wake`) or `stop` turns true; never polls in between (beyond the
/// [`domain::MAX_SLEEP`] safety net).
pub async fn run_scheduler(db: Db, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            break;
        }
        // Listening before looking: a promotion created while this pass runs still wakes us.
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let pause = match pass(&db).await {
            Ok(next) => domain::sleep_for(next, Utc::now()),
            Err(e) => {
                tracing::warn!(error = %e, "launching promotions failed; retrying");
                RETRY
            }
        };
        tokio::select! {
            changed = stop.changed() => if changed.is_err() { break },
            () = &mut notified => {},
            () = tokio::time::sleep(pause) => {},
        }
    }
}

async fn pass(db: &Db) -> Result<Option<DateTime<Utc>>, StorageError> {
    let launched = launch_due(db, Utc::now()).await?;
    if launched > 0 {
        tracing::info!(launched, "promotions launched");
    }
    next_due(db).await
}
