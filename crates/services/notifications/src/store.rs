//! The service's SQL: contacts, product names, templates, notifications and parked events.
//! Portable between SQLite and PostgreSQL (`$n` parameters, `ON CONFLICT`, text ids, epoch millis).

use emporium_events::{Channel, Preferences, Priority, Role};
use emporium_platform::{
    api::PageRequest,
    storage::{Conn, Migration, Row, StorageError, placeholders, query},
};
use uuid::Uuid;

use crate::domain::{self, Contact, Status};

pub const MIGRATIONS: &[Migration] = &[
    Migration::portable(
        100,
        "contacts",
        // `version`: occurredAt (millis) of the user event that last wrote the row, so that a late
        // event never overwrites a newer one.
        "CREATE TABLE contacts (
            user_id         TEXT   PRIMARY KEY,
            email           TEXT   NOT NULL,
            name            TEXT   NOT NULL,
            phone           TEXT,
            role            TEXT   NOT NULL,
            order_updates   BIGINT NOT NULL,
            promotions      BIGINT NOT NULL,
            recommendations BIGINT NOT NULL,
            version         BIGINT NOT NULL)",
    ),
    Migration::portable(
        101,
        "contacts_role",
        "CREATE INDEX contacts_role ON contacts (role)",
    ),
    Migration::portable(
        102,
        "templates",
        "CREATE TABLE templates (
            name       TEXT   PRIMARY KEY,
            subject    TEXT   NOT NULL,
            body       TEXT   NOT NULL,
            shipped    BIGINT NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL)",
    ),
    Migration::portable(
        103,
        "notifications",
        // `dedupe_key` (event, user, channel) is null for an admin's message. `due_at`: when the
        // dispatcher may take it next (a retry's backoff, or a claim's lease).
        "CREATE TABLE notifications (
            id             TEXT   PRIMARY KEY,
            dedupe_key     TEXT   UNIQUE,
            event_id       TEXT,
            correlation_id TEXT   NOT NULL,
            user_id        TEXT,
            channel        TEXT   NOT NULL,
            priority       TEXT   NOT NULL,
            priority_rank  BIGINT NOT NULL,
            template       TEXT,
            recipient      TEXT   NOT NULL,
            subject        TEXT   NOT NULL,
            body           TEXT   NOT NULL,
            status         TEXT   NOT NULL,
            error          TEXT,
            attempts       BIGINT NOT NULL,
            due_at         BIGINT NOT NULL,
            created_at     BIGINT NOT NULL,
            sent_at        BIGINT,
            read_at        BIGINT)",
    ),
    Migration::portable(
        104,
        "notifications_queue",
        "CREATE INDEX notifications_queue ON notifications (status, priority_rank, id)",
    ),
    Migration::portable(
        105,
        "notifications_user",
        "CREATE INDEX notifications_user ON notifications (user_id, id)",
    ),
    Migration::portable(
        106,
        "parked_events",
        // Events that name a user this service has not heard of yet (user-events and order-events
        // are separate sequences): applied when the user's contact arrives.
        "CREATE TABLE parked_events (
            event_id  TEXT   PRIMARY KEY,
            user_id   TEXT   NOT NULL,
            envelope  TEXT   NOT NULL,
            parked_at BIGINT NOT NULL)",
    ),
    Migration::portable(
        107,
        "parked_events_user",
        "CREATE INDEX parked_events_user ON parked_events (user_id)",
    ),
    Migration::portable(
        108,
        "products",
        "CREATE TABLE products (
            product_id TEXT   PRIMARY KEY,
            name       TEXT   NOT NULL,
            version    BIGINT NOT NULL)",
    ),
    Migration::portable(
        109,
        "contacts_email",
        "CREATE INDEX contacts_email ON contacts (email)",
    ),
];

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::Query(format!("corrupt {what}: {e}"))
}

// ------------------------------------------------------------------ contacts

/// Writes a contact unless a newer version is already there. `role` is set only by
/// `UserRegistered` (`UserUpdated` does not carry it).
pub async fn upsert_contact(
    conn: &mut Conn,
    contact: &Contact,
    set_role: bool,
    version: i64,
) -> Result<(), StorageError> {
    query(
        "INSERT INTO contacts
            (user_id, email, name, phone, role, order_updates, promotions, recommendations, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (user_id) DO UPDATE SET
            email = excluded.email, name = excluded.name, phone = excluded.phone,
            order_updates = excluded.order_updates, promotions = excluded.promotions,
            recommendations = excluded.recommendations, version = excluded.version
         WHERE contacts.version <= excluded.version",
    )
    .bind(contact.user_id)
    .bind(&contact.email)
    .bind(&contact.name)
    .bind(&contact.phone)
    .bind(contact.role.as_str())
    .bind(contact.preferences.order_updates)
    .bind(contact.preferences.promotions)
    .bind(contact.preferences.recommendations)
    .bind(version)
    .execute(conn)
    .await?;
    if set_role {
        query("UPDATE contacts SET role = $2 WHERE user_id = $1")
            .bind(contact.user_id)
            .bind(contact.role.as_str())
            .execute(conn)
            .await?;
    }
    Ok(())
}

const CONTACT_COLUMNS: &str =
    "user_id, email, name, phone, role, order_updates, promotions, recommendations";

fn contact_from(row: &Row) -> Result<Contact, StorageError> {
    let role: String = row.get("role")?;
    Ok(Contact {
        user_id: row.get("user_id")?,
        email: row.get("email")?,
        name: row.get("name")?,
        phone: row.get("phone")?,
        role: role
            .parse::<Role>()
            .map_err(|e| corrupt("contact role", e))?,
        preferences: Preferences {
            order_updates: row.get("order_updates")?,
            promotions: row.get("promotions")?,
            recommendations: row.get("recommendations")?,
        },
    })
}

pub async fn contact(conn: &mut Conn, user_id: Uuid) -> Result<Option<Contact>, StorageError> {
    let sql = format!("SELECT {CONTACT_COLUMNS} FROM contacts WHERE user_id = $1");
    query(&sql)
        .bind(user_id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(contact_from)
        .transpose()
}

pub async fn admin_contacts(conn: &mut Conn) -> Result<Vec<Contact>, StorageError> {
    let sql = format!("SELECT {CONTACT_COLUMNS} FROM contacts WHERE role = $1 ORDER BY user_id");
    query(&sql)
        .bind(Role::Admin.as_str())
        .fetch_all(conn)
        .await?
        .iter()
        .map(contact_from)
        .collect()
}

/// Every contact (the audience of a promotion).
pub async fn all_contacts(conn: &mut Conn) -> Result<Vec<Contact>, StorageError> {
    let sql = format!("SELECT {CONTACT_COLUMNS} FROM contacts ORDER BY user_id");
    query(&sql)
        .fetch_all(conn)
        .await?
        .iter()
        .map(contact_from)
        .collect()
}

/// The user an admin's message goes to, when the recipient is a known contact's address, phone or
/// id (so it shows in their `/api/notifications/me`).
pub async fn user_for_recipient(
    conn: &mut Conn,
    channel: Channel,
    recipient: &str,
) -> Result<Option<Uuid>, StorageError> {
    let column = match channel {
        Channel::Email => "email",
        Channel::Sms => "phone",
        Channel::Push => "user_id",
    };
    let sql = format!("SELECT user_id FROM contacts WHERE {column} = $1 ORDER BY user_id LIMIT 1");
    query(&sql).bind(recipient).scalar_optional(conn).await
}

// ------------------------------------------------------------------ products

pub async fn upsert_product(
    conn: &mut Conn,
    product_id: Uuid,
    name: &str,
    version: i64,
) -> Result<(), StorageError> {
    query(
        "INSERT INTO products (product_id, name, version) VALUES ($1, $2, $3)
         ON CONFLICT (product_id) DO UPDATE SET name = excluded.name, version = excluded.version
         WHERE products.version <= excluded.version",
    )
    .bind(product_id)
    .bind(name)
    .bind(version)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn product_name(
    conn: &mut Conn,
    product_id: Uuid,
) -> Result<Option<String>, StorageError> {
    query("SELECT name FROM products WHERE product_id = $1")
        .bind(product_id)
        .scalar_optional(conn)
        .await
}

// ----------------------------------------------------------------- templates

/// A stored template.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateRow {
    pub name: String,
    pub subject: String,
    pub body: String,
    pub shipped: bool,
    pub updated_at: i64,
}

fn template_from(row: &Row) -> Result<TemplateRow, StorageError> {
    Ok(TemplateRow {
        name: row.get("name")?,
        subject: row.get("subject")?,
        body: row.get("body")?,
        shipped: row.get("shipped")?,
        updated_at: row.get("updated_at")?,
    })
}

/// Adds the shipped templates that are missing; an admin's edits stay.
pub async fn seed_templates(conn: &mut Conn) -> Result<(), StorageError> {
    let now = now_ms();
    for template in domain::SHIPPED_TEMPLATES {
        query(
            "INSERT INTO templates (name, subject, body, shipped, created_at, updated_at)
             VALUES ($1, $2, $3, 1, $4, $4) ON CONFLICT (name) DO NOTHING",
        )
        .bind(template.name)
        .bind(template.subject)
        .bind(template.body)
        .bind(now)
        .execute(conn)
        .await?;
    }
    Ok(())
}

pub async fn template(conn: &mut Conn, name: &str) -> Result<Option<TemplateRow>, StorageError> {
    query("SELECT name, subject, body, shipped, updated_at FROM templates WHERE name = $1")
        .bind(name)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(template_from)
        .transpose()
}

/// Templates by name, `page.fetch()` of them after the cursor.
pub async fn list_templates(
    conn: &mut Conn,
    page: &PageRequest,
) -> Result<Vec<TemplateRow>, StorageError> {
    query(
        "SELECT name, subject, body, shipped, updated_at FROM templates
         WHERE ($1 IS NULL OR name > $1) ORDER BY name LIMIT $2",
    )
    .bind(&page.after)
    .bind(page.fetch())
    .fetch_all(conn)
    .await?
    .iter()
    .map(template_from)
    .collect()
}

/// Creates or replaces a template; `true` when it was created.
pub async fn put_template(
    conn: &mut Conn,
    name: &str,
    subject: &str,
    body: &str,
) -> Result<(TemplateRow, bool), StorageError> {
    let existed = template(conn, name).await?.is_some();
    let now = now_ms();
    let row = query(
        "INSERT INTO templates (name, subject, body, shipped, created_at, updated_at)
         VALUES ($1, $2, $3, 0, $4, $4)
         ON CONFLICT (name) DO UPDATE SET subject = excluded.subject, body = excluded.body,
            updated_at = excluded.updated_at
         RETURNING name, subject, body, shipped, updated_at",
    )
    .bind(name)
    .bind(subject)
    .bind(body)
    .bind(now)
    .fetch_one(conn)
    .await?;
    Ok((template_from(&row)?, !existed))
}

// ------------------------------------------------------------- notifications

/// A notification to store.
#[derive(Debug, Clone)]
pub struct NewNotification {
    pub id: Uuid,
    pub dedupe_key: Option<String>,
    pub event_id: Option<Uuid>,
    pub correlation_id: String,
    pub user_id: Option<Uuid>,
    pub channel: Channel,
    pub priority: Priority,
    pub template: Option<String>,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub status: Status,
    pub error: Option<String>,
}

/// Stores it; `false` when its dedupe key was already there (nothing written).
pub async fn insert_notification(
    conn: &mut Conn,
    n: &NewNotification,
) -> Result<bool, StorageError> {
    let now = now_ms();
    let done = query(
        "INSERT INTO notifications
            (id, dedupe_key, event_id, correlation_id, user_id, channel, priority, priority_rank,
             template, recipient, subject, body, status, error, attempts, due_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 0, $15, $15)
         ON CONFLICT (dedupe_key) DO NOTHING",
    )
    .bind(n.id)
    .bind(&n.dedupe_key)
    .bind(n.event_id)
    .bind(&n.correlation_id)
    .bind(n.user_id)
    .bind(n.channel.as_str())
    .bind(n.priority.as_str())
    .bind(domain::rank(n.priority))
    .bind(&n.template)
    .bind(&n.recipient)
    .bind(&n.subject)
    .bind(&n.body)
    .bind(n.status.as_str())
    .bind(&n.error)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done == 1)
}

/// How many `marketing` messages `user_id` received (queued or sent; an event's channels count
/// once) since `since` (epoch millis), for the marketing limit.
pub async fn marketing_received(
    conn: &mut Conn,
    user_id: Uuid,
    since: i64,
) -> Result<i64, StorageError> {
    query(
        "SELECT COUNT(DISTINCT COALESCE(event_id, id)) FROM notifications
         WHERE user_id = $1 AND priority = $2 AND status IN ($3, $4) AND created_at >= $5",
    )
    .bind(user_id)
    .bind(Priority::Marketing.as_str())
    .bind(Status::Queued.as_str())
    .bind(Status::Sent.as_str())
    .bind(since)
    .scalar(conn)
    .await
}

/// A notification as its user sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationRow {
    pub id: String,
    pub template: Option<String>,
    pub channel: String,
    pub priority: String,
    pub status: String,
    pub subject: String,
    pub created_at: i64,
    pub sent_at: Option<i64>,
    pub read_at: Option<i64>,
}

/// The user's notifications, newest first (ids are UUIDv7), after the cursor.
pub async fn list_for_user(
    conn: &mut Conn,
    user_id: Uuid,
    page: &PageRequest,
) -> Result<Vec<NotificationRow>, StorageError> {
    query(
        "SELECT id, template, channel, priority, status, subject, created_at, sent_at, read_at
         FROM notifications WHERE user_id = $1 AND ($2 IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3",
    )
    .bind(user_id)
    .bind(&page.after)
    .bind(page.fetch())
    .fetch_all(conn)
    .await?
    .iter()
    .map(|row| {
        Ok(NotificationRow {
            id: row.get("id")?,
            template: row.get("template")?,
            channel: row.get("channel")?,
            priority: row.get("priority")?,
            status: row.get("status")?,
            subject: row.get("subject")?,
            created_at: row.get("created_at")?,
            sent_at: row.get("sent_at")?,
            read_at: row.get("read_at")?,
        })
    })
    .collect()
}

/// Marks the user's unread notifications read: those in `ids` (others' ids match nothing), or all
/// of them. Returns how many it marked.
pub async fn mark_read(
    conn: &mut Conn,
    user_id: Uuid,
    ids: Option<&[Uuid]>,
) -> Result<u64, StorageError> {
    let now = now_ms();
    let done = match ids {
        None => {
            query("UPDATE notifications SET read_at = $2 WHERE user_id = $1 AND read_at IS NULL")
                .bind(user_id)
                .bind(now)
                .execute(conn)
                .await?
        }
        Some([]) => return Ok(0),
        Some(ids) => {
            let sql = format!(
                "UPDATE notifications SET read_at = $2
                 WHERE user_id = $1 AND read_at IS NULL AND id IN ({})",
                placeholders(3, ids.len())
            );
            query(&sql)
                .bind(user_id)
                .bind(now)
                .bind_all(ids.iter().copied())
                .execute(conn)
                .await?
        }
    };
    Ok(done)
}

// ---------------------------------------------------------------- dispatcher

/// A queued notification, as the dispatcher needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    pub id: Uuid,
    pub event_id: Option<Uuid>,
    pub correlation_id: String,
    pub user_id: Option<Uuid>,
    pub channel: Channel,
    pub priority: Priority,
    pub template: Option<String>,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub attempts: i64,
}

/// Queued notifications that are due, critical first, then standard, then marketing; oldest first
/// within a priority.
pub async fn due(conn: &mut Conn, now: i64, limit: i64) -> Result<Vec<Due>, StorageError> {
    query(
        "SELECT id, event_id, correlation_id, user_id, channel, priority, template, recipient,
                subject, body, attempts
         FROM notifications WHERE status = $1 AND due_at <= $2
         ORDER BY priority_rank, id LIMIT $3",
    )
    .bind(Status::Queued.as_str())
    .bind(now)
    .bind(limit)
    .fetch_all(conn)
    .await?
    .iter()
    .map(|row| {
        let channel: String = row.get("channel")?;
        let priority: String = row.get("priority")?;
        Ok(Due {
            id: row.get("id")?,
            event_id: row.get("event_id")?,
            correlation_id: row.get("correlation_id")?,
            user_id: row.get("user_id")?,
            channel: channel.parse().map_err(|e| corrupt("channel", e))?,
            priority: priority.parse().map_err(|e| corrupt("priority", e))?,
            template: row.get("template")?,
            recipient: row.get("recipient")?,
            subject: row.get("subject")?,
            body: row.get("body")?,
            attempts: row.get("attempts")?,
        })
    })
    .collect()
}

/// Takes a queued notification for `lease_until - now` millis: `false` if another dispatcher
/// already has it. A dispatcher that dies while sending leaves it to be taken again after the
/// lease.
pub async fn claim(
    conn: &mut Conn,
    id: Uuid,
    now: i64,
    lease_until: i64,
) -> Result<bool, StorageError> {
    let done = query(
        "UPDATE notifications SET due_at = $3 WHERE id = $1 AND status = 'QUEUED' AND due_at <= $2",
    )
    .bind(id)
    .bind(now)
    .bind(lease_until)
    .execute(conn)
    .await?;
    Ok(done == 1)
}

/// Gives a claimed notification back, due at `due_at`, without counting an attempt (a dispatcher
/// stopping before it sent it).
pub async fn release(conn: &mut Conn, id: Uuid, due_at: i64) -> Result<(), StorageError> {
    query("UPDATE notifications SET due_at = $2 WHERE id = $1 AND status = 'QUEUED'")
        .bind(id)
        .bind(due_at)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn mark_sent(conn: &mut Conn, id: Uuid) -> Result<bool, StorageError> {
    let done = query(
        "UPDATE notifications SET status = 'SENT', sent_at = $2, attempts = attempts + 1, error = NULL
         WHERE id = $1 AND status = 'QUEUED'",
    )
    .bind(id)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(done == 1)
}

/// Leaves it queued for another attempt at `due_at`.
pub async fn mark_retry(
    conn: &mut Conn,
    id: Uuid,
    due_at: i64,
    error: &str,
) -> Result<(), StorageError> {
    query(
        "UPDATE notifications SET attempts = attempts + 1, due_at = $2, error = $3
         WHERE id = $1 AND status = 'QUEUED'",
    )
    .bind(id)
    .bind(due_at)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn mark_failed(conn: &mut Conn, id: Uuid, error: &str) -> Result<bool, StorageError> {
    let done = query(
        "UPDATE notifications SET status = 'FAILED', attempts = attempts + 1, error = $2
         WHERE id = $1 AND status = 'QUEUED'",
    )
    .bind(id)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(done == 1)
}

// ------------------------------------------------------------- parked events

pub async fn park(
    conn: &mut Conn,
    event_id: Uuid,
    user_id: Uuid,
    envelope: &str,
) -> Result<(), StorageError> {
    query(
        "INSERT INTO parked_events (event_id, user_id, envelope, parked_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(event_id)
    .bind(user_id)
    .bind(envelope)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

/// Removes and returns the envelopes parked for `user_id`, oldest first.
pub async fn take_parked(conn: &mut Conn, user_id: Uuid) -> Result<Vec<String>, StorageError> {
    let envelopes: Vec<String> =
        query("SELECT envelope FROM parked_events WHERE user_id = $1 ORDER BY parked_at, event_id")
            .bind(user_id)
            .scalars(conn)
            .await?;
    if !envelopes.is_empty() {
        query("DELETE FROM parked_events WHERE user_id = $1")
            .bind(user_id)
            .execute(conn)
            .await?;
    }
    Ok(envelopes)
}
