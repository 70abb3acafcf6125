//! The users service's tables and the SQL on them (portable between SQLite and PostgreSQL).

use chrono::{DateTime, Utc};
use emporium_events::{Preferences, Role};
use emporium_platform::storage::{Conn, Migration, Row, StorageError, query};
use uuid::Uuid;

pub const MIGRATIONS: &[Migration] = &[
    // `email` as the user typed it; `email_key` (lower case) is what must be unique.
    Migration::portable(
        100,
        "users",
        "CREATE TABLE users (
            id                   TEXT   PRIMARY KEY,
            email                TEXT   NOT NULL,
            email_key            TEXT   NOT NULL UNIQUE,
            name                 TEXT   NOT NULL,
            role                 TEXT   NOT NULL,
            phone                TEXT,
            pref_order_updates   BIGINT NOT NULL,
            pref_promotions      BIGINT NOT NULL,
            pref_recommendations BIGINT NOT NULL,
            password_hash        TEXT   NOT NULL,
            created_at           BIGINT NOT NULL,
            updated_at           BIGINT NOT NULL)",
    ),
    Migration::portable(
        101,
        "refresh_tokens",
        "CREATE TABLE refresh_tokens (
            id          TEXT   PRIMARY KEY,
            user_id     TEXT   NOT NULL REFERENCES users (id),
            secret_hash TEXT   NOT NULL,
            created_at  BIGINT NOT NULL,
            expires_at  BIGINT NOT NULL,
            used_at     BIGINT)",
    ),
    Migration::portable(
        102,
        "refresh_tokens_by_user",
        "CREATE INDEX refresh_tokens_by_user ON refresh_tokens (user_id, used_at)",
    ),
    // Counted here rather than in memory so that a restart does not reset an attacker's count,
    // and every instance of the service sees the same count.
    Migration::portable(
        103,
        "login_failures",
        "CREATE TABLE login_failures (
            id        TEXT   PRIMARY KEY,
            email_key TEXT   NOT NULL,
            failed_at BIGINT NOT NULL)",
    ),
    Migration::portable(
        104,
        "login_failures_by_email",
        "CREATE INDEX login_failures_by_email ON login_failures (email_key, failed_at)",
    ),
    // One row per address being guessed at, taken (upserted) first by every login attempt: it
    // queues concurrent attempts on one address, so that each counts the attempts before it.
    Migration::portable(
        105,
        "login_locks",
        "CREATE TABLE login_locks (
            email_key    TEXT   PRIMARY KEY,
            attempted_at BIGINT NOT NULL)",
    ),
];

/// A user as stored, password hash included: it never leaves this crate's application layer.
#[derive(Debug, Clone)]
pub struct UserRecord {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub phone: Option<String>,
    pub preferences: Preferences,
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
}

const USER_COLUMNS: &str = "id, email, name, role, phone, pref_order_updates, pref_promotions, \
     pref_recommendations, password_hash, created_at";

impl UserRecord {
    fn from_row(row: &Row) -> Result<Self, StorageError> {
        let id: Uuid = row.get("id")?;
        let corrupt = |what: &str| StorageError::Query(format!("user {id}: bad {what}"));
        Ok(UserRecord {
            id,
            role: row
                .get::<String>("role")?
                .parse()
                .map_err(|_| corrupt("role"))?,
            created_at: DateTime::from_timestamp_millis(row.get("created_at")?)
                .ok_or_else(|| corrupt("created_at"))?,
            email: row.get("email")?,
            name: row.get("name")?,
            phone: row.get("phone")?,
            preferences: Preferences {
                order_updates: row.get("pref_order_updates")?,
                promotions: row.get("pref_promotions")?,
                recommendations: row.get("pref_recommendations")?,
            },
            password_hash: row.get("password_hash")?,
        })
    }
}

/// A user to insert.
pub struct NewUser<'a> {
    pub id: Uuid,
    pub email: &'a str,
    pub email_key: &'a str,
    pub name: &'a str,
    pub role: Role,
    pub preferences: Preferences,
    pub password_hash: &'a str,
    pub now_ms: i64,
}

/// Inserts `user`; `false` if the email key is taken.
pub async fn insert_user(conn: &mut Conn, user: &NewUser<'_>) -> Result<bool, StorageError> {
    let inserted = query(
        "INSERT INTO users (id, email, email_key, name, role, phone, pref_order_updates,
             pref_promotions, pref_recommendations, password_hash, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, NULL, $6, $7, $8, $9, $10, $10)
         ON CONFLICT (email_key) DO NOTHING",
    )
    .bind(user.id)
    .bind(user.email)
    .bind(user.email_key)
    .bind(user.name)
    .bind(user.role.as_str())
    .bind(user.preferences.order_updates)
    .bind(user.preferences.promotions)
    .bind(user.preferences.recommendations)
    .bind(user.password_hash)
    .bind(user.now_ms)
    .execute(conn)
    .await?;
    Ok(inserted == 1)
}

pub async fn user_by_id(conn: &mut Conn, id: Uuid) -> Result<Option<UserRecord>, StorageError> {
    let row = query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(UserRecord::from_row).transpose()
}

pub async fn user_by_email_key(
    conn: &mut Conn,
    email_key: &str,
) -> Result<Option<UserRecord>, StorageError> {
    let row = query(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE email_key = $1"
    ))
    .bind(email_key)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(UserRecord::from_row).transpose()
}

/// Up to `limit` users with ids after `after`, in id (= creation) order.
pub async fn list_users(
    conn: &mut Conn,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<UserRecord>, StorageError> {
    let rows = query(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE id > $1 ORDER BY id LIMIT $2"
    ))
    .bind(after.unwrap_or(""))
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter().map(UserRecord::from_row).collect()
}

pub async fn update_profile(
    conn: &mut Conn,
    id: Uuid,
    name: &str,
    phone: Option<&str>,
    preferences: Preferences,
    now_ms: i64,
) -> Result<(), StorageError> {
    query(
        "UPDATE users SET name = $2, phone = $3, pref_order_updates = $4, pref_promotions = $5,
             pref_recommendations = $6, updated_at = $7
         WHERE id = $1",
    )
    .bind(id)
    .bind(name)
    .bind(phone)
    .bind(preferences.order_updates)
    .bind(preferences.promotions)
    .bind(preferences.recommendations)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn set_role(
    conn: &mut Conn,
    id: Uuid,
    role: Role,
    now_ms: i64,
) -> Result<(), StorageError> {
    query("UPDATE users SET role = $2, updated_at = $3 WHERE id = $1")
        .bind(id)
        .bind(role.as_str())
        .bind(now_ms)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn set_password_hash(
    conn: &mut Conn,
    id: Uuid,
    password_hash: &str,
    now_ms: i64,
) -> Result<(), StorageError> {
    query("UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1")
        .bind(id)
        .bind(password_hash)
        .bind(now_ms)
        .execute(conn)
        .await?;
    Ok(())
}

// ------------------------------------------------------------------ refresh tokens

pub async fn insert_refresh_token(
    conn: &mut Conn,
    id: Uuid,
    user_id: Uuid,
    secret_hash: &str,
    now_ms: i64,
    expires_ms: i64,
) -> Result<(), StorageError> {
    query(
        "INSERT INTO refresh_tokens (id, user_id, secret_hash, created_at, expires_at, used_at)
         VALUES ($1, $2, $3, $4, $5, NULL)",
    )
    .bind(id)
    .bind(user_id)
    .bind(secret_hash)
    .bind(now_ms)
    .bind(expires_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// A stored refresh token.
#[derive(Debug)]
pub struct RefreshRow {
    pub user_id: Uuid,
    pub secret_hash: String,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

impl RefreshRow {
    fn from_row(row: &Row) -> Result<Self, StorageError> {
        Ok(RefreshRow {
            user_id: row.get("user_id")?,
            secret_hash: row.get("secret_hash")?,
            expires_at: row.get("expires_at")?,
            used_at: row.get("used_at")?,
        })
    }
}

pub async fn refresh_token(conn: &mut Conn, id: Uuid) -> Result<Option<RefreshRow>, StorageError> {
    let row =
        query("SELECT user_id, secret_hash, expires_at, used_at FROM refresh_tokens WHERE id = $1")
            .bind(id)
            .fetch_optional(conn)
            .await?;
    row.as_ref().map(RefreshRow::from_row).transpose()
}

/// Marks the token used; `false` if it already was (someone else used it first).
pub async fn use_refresh_token(
    conn: &mut Conn,
    id: Uuid,
    now_ms: i64,
) -> Result<bool, StorageError> {
    let updated = query("UPDATE refresh_tokens SET used_at = $2 WHERE id = $1 AND used_at IS NULL")
        .bind(id)
        .bind(now_ms)
        .execute(conn)
        .await?;
    Ok(updated == 1)
}

/// Ends every refresh token of the user still unused, and forgets the long-dead ones.
pub async fn revoke_refresh_tokens(
    conn: &mut Conn,
    user_id: Uuid,
    now_ms: i64,
) -> Result<(), StorageError> {
    query("UPDATE refresh_tokens SET used_at = $2 WHERE user_id = $1 AND used_at IS NULL")
        .bind(user_id)
        .bind(now_ms)
        .execute(conn)
        .await?;
    forget_expired_refresh_tokens(conn, user_id, now_ms).await
}

/// Deletes the user's tokens that have expired: they can only ever answer 401, which an unknown
/// token gets as well.
pub async fn forget_expired_refresh_tokens(
    conn: &mut Conn,
    user_id: Uuid,
    now_ms: i64,
) -> Result<(), StorageError> {
    query("DELETE FROM refresh_tokens WHERE user_id = $1 AND expires_at <= $2")
        .bind(user_id)
        .bind(now_ms)
        .execute(conn)
        .await?;
    Ok(())
}

// ------------------------------------------------------------------ login failures

/// Takes the address's login lock for the rest of the transaction. SQLite has one writer, so
/// its write transactions are queued anyway; PostgreSQL holds the upserted row locked until
/// commit, so concurrent attempts on one address queue here too (and others do not wait).
pub async fn lock_login_attempts(
    conn: &mut Conn,
    email_key: &str,
    now_ms: i64,
) -> Result<(), StorageError> {
    query(
        "INSERT INTO login_locks (email_key, attempted_at) VALUES ($1, $2)
         ON CONFLICT (email_key) DO UPDATE SET attempted_at = excluded.attempted_at",
    )
    .bind(email_key)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// When the attempts for this address that did not succeed happened (epoch ms, ascending), since
/// `since`. Attempts still being checked count too: each is recorded before its password is
/// checked, and only a success removes it.
pub async fn login_failures(
    conn: &mut Conn,
    email_key: &str,
    since_ms: i64,
) -> Result<Vec<i64>, StorageError> {
    query(
        "SELECT failed_at FROM login_failures WHERE email_key = $1 AND failed_at > $2
         ORDER BY failed_at",
    )
    .bind(email_key)
    .bind(since_ms)
    .scalars(conn)
    .await
}

/// Records an attempt as failed until it proves otherwise, and forgets this address's failures
/// that have left the window.
pub async fn record_login_attempt(
    conn: &mut Conn,
    email_key: &str,
    now_ms: i64,
    window_start_ms: i64,
) -> Result<(), StorageError> {
    query("DELETE FROM login_failures WHERE email_key = $1 AND failed_at <= $2")
        .bind(email_key)
        .bind(window_start_ms)
        .execute(conn)
        .await?;
    query("INSERT INTO login_failures (id, email_key, failed_at) VALUES ($1, $2, $3)")
        .bind(Uuid::now_v7())
        .bind(email_key)
        .bind(now_ms)
        .execute(conn)
        .await?;
    Ok(())
}

/// A successful login clears the count (its own attempt included) and the address's lock row.
pub async fn clear_login_failures(conn: &mut Conn, email_key: &str) -> Result<(), StorageError> {
    query("DELETE FROM login_failures WHERE email_key = $1")
        .bind(email_key)
        .execute(conn)
        .await?;
    query("DELETE FROM login_locks WHERE email_key = $1")
        .bind(email_key)
        .execute(conn)
        .await?;
    Ok(())
}
