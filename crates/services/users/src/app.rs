//! The users service's use cases: each loads what it needs, lets [`crate::domain`] decide, and
//! writes the new state with its events in one transaction.

use std::sync::Arc;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use emporium_events::{Event, Preferences, Role, UserRegistered, UserUpdated};
use emporium_platform::{
    api::{ApiError, PageRequest},
    auth::Tokens,
    storage::{Db, EventContext},
};
use uuid::Uuid;

use crate::{
    NAME,
    domain::{self, Bootstrap, LoginThrottle, Profile, ProfilePatch},
    secrets,
    store::{self, NewUser, UserRecord},
};

/// Refresh tokens live this long (milliseconds): a month of staying signed in.
pub const REFRESH_TTL_MS: i64 = 30 * 24 * 60 * 60 * 1000;

/// A user as the API shows it: never the password hash.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub phone: Option<String>,
    pub preferences: Preferences,
    pub created_at: DateTime<Utc>,
}

impl From<UserRecord> for User {
    fn from(r: UserRecord) -> Self {
        User {
            id: r.id,
            email: r.email,
            name: r.name,
            role: r.role,
            phone: r.phone,
            preferences: r.preferences,
            created_at: r.created_at,
        }
    }
}

/// What a successful register, login or refresh returns.
#[derive(Debug)]
pub struct Session {
    pub user: User,
    pub access_token: String,
    pub expires_in: i64,
    /// Login and refresh only.
    pub refresh_token: Option<String>,
}

/// The users application.
#[derive(Clone)]
pub struct Users {
    db: Db,
    tokens: Arc<Tokens>,
    throttle: LoginThrottle,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn invalid_credentials() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::UNAUTHORIZED,
        "INVALID_CREDENTIALS",
        "the email or password is wrong",
    )
}

fn invalid_refresh_token() -> ApiError {
    ApiError::unauthenticated("the refresh token is invalid, expired or already used")
}

impl Users {
    pub fn new(db: Db, tokens: Arc<Tokens>) -> Self {
        Users {
            db,
            tokens,
            throttle: LoginThrottle::default(),
        }
    }

    fn context(correlation_id: &str) -> EventContext {
        EventContext::request(NAME, correlation_id)
    }

    /// Creates a customer account; `EMAIL_TAKEN` if the address (in any case) has one.
    pub async fn register(
        &self,
        correlation_id: &str,
        email: &str,
        password: &str,
        name: &str,
    ) -> Result<Session, ApiError> {
        let registration = domain::registration(email, password, name)?;
        let hash = secrets::hash_password(registration.password.clone()).await?;
        let key = domain::email_key(&registration.email);
        let now = now_ms();
        let user = NewUser {
            id: Uuid::now_v7(),
            email: &registration.email,
            email_key: &key,
            name: &registration.name,
            role: Role::Customer,
            preferences: Preferences::default(),
            password_hash: &hash,
            now_ms: now,
        };
        let mut tx = self.db.begin(Self::context(correlation_id)).await?;
        if !store::insert_user(tx.conn(), &user).await? {
            return Err(ApiError::conflict(
                "EMAIL_TAKEN",
                "an account with this email already exists",
            ));
        }
        tx.emit(registered_event(&user, None))?;
        let record = store::user_by_id(tx.conn(), user.id)
            .await?
            .ok_or_else(|| ApiError::internal("the new user vanished"))?;
        tx.commit().await?;
        let (access_token, expires_in) = self.tokens.issue(record.id, record.role)?;
        Ok(Session {
            user: record.into(),
            access_token,
            expires_in,
            refresh_token: None,
        })
    }

    /// Checks the credentials. Unknown address and wrong password get the same answer, in about
    /// the same time; after too many failures for one address, attempts are refused for a while.
    pub async fn login(
        &self,
        correlation_id: &str,
        email: &str,
        password: &str,
    ) -> Result<Session, ApiError> {
        let key = domain::email_key(email);
        if !domain::is_address(&key) {
            // No account can have it, so there is nothing to protect or count (and nothing
            // arbitrary is stored); the answer still costs a password check.
            secrets::verify_password(password.to_owned(), None).await?;
            return Err(invalid_credentials());
        }
        let now = now_ms();
        let window_start = self.throttle.window_start(now);
        // The attempt is counted before its password is checked, in one transaction that queues
        // behind any other attempt on this address: however many arrive at once, no more than the
        // limit get as far as the check. The transaction is kept short (the hash is checked after
        // it commits), since SQLite has a single writer.
        let found = {
            let mut tx = self.db.begin(Self::context(correlation_id)).await?;
            store::lock_login_attempts(tx.conn(), &key, now).await?;
            let earlier = store::login_failures(tx.conn(), &key, window_start).await?;
            if let Err(wait) = self.throttle.check(&earlier, now) {
                // Dropping the transaction rolls it back: a refused attempt is not counted, so
                // the lock-out ends on time however often it is knocked on.
                return Err(ApiError::rate_limited(wait));
            }
            store::record_login_attempt(tx.conn(), &key, now, window_start).await?;
            let found = store::user_by_email_key(tx.conn(), &key).await?;
            tx.commit().await?;
            found
        };
        let matches = secrets::verify_password(
            password.to_owned(),
            found.as_ref().map(|u| u.password_hash.clone()),
        )
        .await?;
        // A failure is already recorded: the attempt stands.
        let user = match found {
            Some(user) if matches => user,
            _ => return Err(invalid_credentials()),
        };
        let mut tx = self.db.begin(Self::context(correlation_id)).await?;
        store::clear_login_failures(tx.conn(), &key).await?;
        store::forget_expired_refresh_tokens(tx.conn(), user.id, now).await?;
        let refresh = secrets::new_refresh_token()?;
        store::insert_refresh_token(
            tx.conn(),
            refresh.id,
            user.id,
            &refresh.secret_hash,
            now,
            now + REFRESH_TTL_MS,
        )
        .await?;
        tx.commit().await?;
        let (access_token, expires_in) = self.tokens.issue(user.id, user.role)?;
        Ok(Session {
            user: user.into(),
            access_token,
            expires_in,
            refresh_token: Some(refresh.token),
        })
    }

    /// Trades a refresh token for new tokens. A token works once; presenting a used one again
    /// means it was copied, so every outstanding refresh token of that user is revoked too
    /// (refresh-token rotation with reuse detection, OAuth 2.0 Security BCP §4.14).
    pub async fn refresh(&self, correlation_id: &str, token: &str) -> Result<Session, ApiError> {
        let (id, secret) = secrets::parse_refresh_token(token).ok_or_else(invalid_refresh_token)?;
        let presented_hash = secrets::hash_refresh_secret(id, secret)?;
        let now = now_ms();
        let mut tx = self.db.begin(Self::context(correlation_id)).await?;
        let stored = store::refresh_token(tx.conn(), id)
            .await?
            .ok_or_else(invalid_refresh_token)?;
        if !secrets::same_hash(&presented_hash, &stored.secret_hash) {
            return Err(invalid_refresh_token());
        }
        let user_id = stored.user_id;
        if stored.used_at.is_some() {
            store::revoke_refresh_tokens(tx.conn(), user_id, now).await?;
            tx.commit().await?;
            tracing::warn!(user_id = %user_id, "a used refresh token was presented again; revoked the user's refresh tokens");
            return Err(invalid_refresh_token());
        }
        if stored.expires_at <= now || !store::use_refresh_token(tx.conn(), id, now).await? {
            return Err(invalid_refresh_token());
        }
        let user = store::user_by_id(tx.conn(), user_id)
            .await?
            .ok_or_else(invalid_refresh_token)?;
        let refresh = secrets::new_refresh_token()?;
        store::insert_refresh_token(
            tx.conn(),
            refresh.id,
            user.id,
            &refresh.secret_hash,
            now,
            now + REFRESH_TTL_MS,
        )
        .await?;
        tx.commit().await?;
        let (access_token, expires_in) = self.tokens.issue(user.id, user.role)?;
        Ok(Session {
            user: user.into(),
            access_token,
            expires_in,
            refresh_token: Some(refresh.token),
        })
    }

    /// A user by id, `None` if there is none.
    pub async fn find(&self, id: Uuid) -> Result<Option<User>, ApiError> {
        let mut conn = self.db.reader().await?;
        Ok(store::user_by_id(&mut conn, id).await?.map(User::from))
    }

    /// The caller's own account. A valid token for an account that does not exist (a database
    /// reset under the same secret) is not a session.
    pub async fn me(&self, id: Uuid) -> Result<User, ApiError> {
        self.find(id)
            .await?
            .ok_or_else(|| ApiError::unauthenticated("the account of this token no longer exists"))
    }

    /// Applies the caller's profile patch; emits `UserUpdated` if anything changed.
    pub async fn update_me(
        &self,
        correlation_id: &str,
        id: Uuid,
        patch: &ProfilePatch,
    ) -> Result<User, ApiError> {
        let mut tx = self.db.begin(Self::context(correlation_id)).await?;
        let current = store::user_by_id(tx.conn(), id).await?.ok_or_else(|| {
            ApiError::unauthenticated("the account of this token no longer exists")
        })?;
        let before = Profile {
            name: current.name.clone(),
            phone: current.phone.clone(),
            preferences: current.preferences,
        };
        let after = before.patched(patch)?;
        if after == before {
            return Ok(current.into());
        }
        store::update_profile(
            tx.conn(),
            id,
            &after.name,
            after.phone.as_deref(),
            after.preferences,
            now_ms(),
        )
        .await?;
        tx.emit(Event::UserUpdated(UserUpdated {
            user_id: id,
            email: current.email.clone(),
            name: after.name.clone(),
            phone: after.phone.clone(),
            preferences: after.preferences,
        }))?;
        tx.commit().await?;
        Ok(User {
            name: after.name,
            phone: after.phone,
            preferences: after.preferences,
            ..current.into()
        })
    }

    /// A page of users in creation order; the cursor is the last id.
    pub async fn list(&self, page: &PageRequest) -> Result<Vec<User>, ApiError> {
        let mut conn = self.db.reader().await?;
        Ok(
            store::list_users(&mut conn, page.after.as_deref(), page.fetch())
                .await?
                .into_iter()
                .map(User::from)
                .collect(),
        )
    }

    /// Makes sure the configured admin account exists with the role admin and the configured
    /// password. Emits `UserRegistered` when it creates the account, and also when it promotes an
    /// existing one: that event is the only one carrying the role, and who the admins are is what
    /// notifications needs to know (low-stock alerts).
    pub async fn bootstrap_admin(&self, email: &str, password: &str) -> anyhow::Result<()> {
        let email = email.trim();
        if !emporium_platform::api::is_email(email) {
            bail!("invalid configuration: `admin_email` is not an email address");
        }
        let length = password.chars().count();
        if !(domain::PASSWORD_MIN..=domain::PASSWORD_MAX).contains(&length) {
            bail!(
                "invalid configuration: `admin_password` must be {} to {} characters",
                domain::PASSWORD_MIN,
                domain::PASSWORD_MAX
            );
        }
        let key = domain::email_key(email);
        let existing = {
            let mut conn = self.db.reader().await?;
            store::user_by_email_key(&mut conn, &key).await?
        };
        let password_matches = match &existing {
            Some(user) => {
                secrets::verify_password(password.to_owned(), Some(user.password_hash.clone()))
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?
            }
            None => false,
        };
        let decision = domain::bootstrap(existing.as_ref().map(|u| (u.role, password_matches)));
        if decision == Bootstrap::Nothing {
            return Ok(());
        }
        let hash = secrets::hash_password(password.to_owned())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let now = now_ms();
        let correlation = format!("bootstrap-{}", Uuid::now_v7());
        let mut tx = self.db.begin(Self::context(&correlation)).await?;
        match (decision, existing) {
            (
                Bootstrap::Update {
                    promote,
                    reset_password,
                },
                Some(user),
            ) => {
                if promote {
                    store::set_role(tx.conn(), user.id, Role::Admin, now).await?;
                    tx.emit(Event::UserRegistered(UserRegistered {
                        user_id: user.id,
                        email: user.email.clone(),
                        name: user.name.clone(),
                        phone: user.phone.clone(),
                        role: Role::Admin,
                        preferences: user.preferences,
                    }))?;
                }
                if reset_password {
                    store::set_password_hash(tx.conn(), user.id, &hash, now).await?;
                    // Whoever held the old password may hold refresh tokens too.
                    store::revoke_refresh_tokens(tx.conn(), user.id, now).await?;
                }
                tracing::info!(user_id = %user.id, promote, reset_password, "updated the configured admin account");
            }
            _ => {
                let user = NewUser {
                    id: Uuid::now_v7(),
                    email,
                    email_key: &key,
                    name: "Administrator",
                    role: Role::Admin,
                    preferences: Preferences::default(),
                    password_hash: &hash,
                    now_ms: now,
                };
                let created = store::insert_user(tx.conn(), &user)
                    .await
                    .context("cannot create the admin account")?;
                if !created {
                    bail!("the admin account was created concurrently; restart to settle it");
                }
                tx.emit(registered_event(&user, None))?;
                tracing::info!(user_id = %user.id, "created the configured admin account");
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

fn registered_event(user: &NewUser<'_>, phone: Option<String>) -> Event {
    Event::UserRegistered(UserRegistered {
        user_id: user.id,
        email: user.email.to_owned(),
        name: user.name.to_owned(),
        phone,
        role: user.role,
        preferences: user.preferences,
    })
}
