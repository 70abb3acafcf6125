//! The users service's REST API (CONTRACT §2 "Users and auth").

use axum::{
    Json, Router,
    extract::{FromRequestParts, Path, Query, State},
    http::{StatusCode, request::Parts},
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use emporium_events::Preferences;
use emporium_platform::{
    api::{ApiError, ApiJson, Page, PageRequest, parse_id},
    auth::{Admin, AuthUser},
    telemetry::CorrelationId,
};
use serde::{Deserialize, Deserializer, Serialize, de::DeserializeOwned};
use utoipa::{IntoParams, ToSchema};

use crate::{
    app::{Session, User, Users},
    domain::{Change, PreferencesPatch, ProfilePatch},
};

pub fn router(users: Users) -> Router {
    Router::new()
        .route("/api/auth/register", post(register))
        .route("/api/auth/login", post(login))
        .route("/api/auth/refresh", post(refresh))
        .route("/api/users/me", get(me).patch(update_me))
        .route("/api/users", get(list))
        .route("/api/users/{id}", get(one))
        .with_state(users)
}

// ------------------------------------------------------------------ wire types

/// A user account. The password hash is never part of it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub id: uuid::Uuid,
    pub email: String,
    pub name: String,
    /// `customer` or `admin`.
    #[schema(value_type = String, example = "customer")]
    pub role: emporium_events::Role,
    pub phone: Option<String>,
    pub preferences: PreferencesView,
    pub created_at: DateTime<Utc>,
}

/// What a user agreed to receive.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreferencesView {
    pub order_updates: bool,
    pub promotions: bool,
    pub recommendations: bool,
}

impl From<Preferences> for PreferencesView {
    fn from(p: Preferences) -> Self {
        PreferencesView {
            order_updates: p.order_updates,
            promotions: p.promotions,
            recommendations: p.recommendations,
        }
    }
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        UserView {
            id: u.id,
            email: u.email,
            name: u.name,
            role: u.role,
            phone: u.phone,
            preferences: u.preferences.into(),
            created_at: u.created_at,
        }
    }
}

/// Tokens for a signed-in user.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthResponse {
    pub user: UserView,
    /// A JWT for `Authorization: Bearer`.
    pub access_token: String,
    /// Login and refresh only: trade it once at `POST /api/auth/refresh` for new tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
}

impl From<Session> for AuthResponse {
    fn from(s: Session) -> Self {
        AuthResponse {
            user: s.user.into(),
            access_token: s.access_token,
            refresh_token: s.refresh_token,
            token_type: "Bearer",
            expires_in: s.expires_in,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisterRequest {
    pub email: String,
    /// At least 8 characters.
    pub password: String,
    /// 1 to 100 characters.
    pub name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// Fields to change; absent fields stay. `phone: null` removes the phone.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateMeRequest {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<PreferencesUpdate>)]
    pub preferences: Option<Option<PreferencesUpdate>>,
}

/// Preference flags to change; absent flags keep their value.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreferencesUpdate {
    pub order_updates: Option<bool>,
    pub promotions: Option<bool>,
    pub recommendations: Option<bool>,
}

/// A field that is present, possibly `null` (with `#[serde(default)]`, an absent one is `None`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

impl UpdateMeRequest {
    fn into_patch(self) -> ProfilePatch {
        ProfilePatch {
            name: Change::from_field(self.name),
            phone: Change::from_field(self.phone),
            preferences: Change::from_field(self.preferences).map(|p| PreferencesPatch {
                order_updates: p.order_updates,
                promotions: p.promotions,
                recommendations: p.recommendations,
            }),
        }
    }
}

/// `?limit=&cursor=`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct PageQuery {
    /// 1 to 100, default 20.
    pub limit: Option<String>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page of users.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserPage {
    pub items: Vec<UserView>,
    pub next_cursor: Option<String>,
}

/// Query parameters whose errors are problems naming `query`, like every other 400.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| Params(value))
            .map_err(|rejection| ApiError::field("query", rejection.body_text()))
    }
}

// ------------------------------------------------------------------ handlers

/// Create a customer account.
#[utoipa::path(post, path = "/api/auth/register", tag = "users", request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered and signed in", body = AuthResponse),
        (status = 400, description = "Invalid email, password shorter than 8 characters or bad name"),
        (status = 409, description = "`EMAIL_TAKEN`"),
        (status = 415, description = "Not JSON"),
    ))]
pub async fn register(
    State(users): State<Users>,
    correlation: CorrelationId,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<AuthResponse>), ApiError> {
    let session = users
        .register(&correlation.0, &body.email, &body.password, &body.name)
        .await?;
    Ok((StatusCode::CREATED, Json(session.into())))
}

/// Sign in with email and password.
#[utoipa::path(post, path = "/api/auth/login", tag = "users", request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in", body = AuthResponse),
        (status = 401, description = "`INVALID_CREDENTIALS`, the same for an unknown email and a wrong password"),
        (status = 429, description = "`RATE_LIMITED`: too many failures for this email; see `Retry-After`"),
    ))]
pub async fn login(
    State(users): State<Users>,
    correlation: CorrelationId,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Json<AuthResponse>, ApiError> {
    let session = users
        .login(&correlation.0, &body.email, &body.password)
        .await?;
    Ok(Json(session.into()))
}

/// Trade a refresh token (once) for new tokens.
#[utoipa::path(post, path = "/api/auth/refresh", tag = "users", request_body = RefreshRequest,
    responses(
        (status = 200, description = "New access and refresh tokens", body = AuthResponse),
        (status = 401, description = "Unknown, expired or already used refresh token"),
    ))]
pub async fn refresh(
    State(users): State<Users>,
    correlation: CorrelationId,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<Json<AuthResponse>, ApiError> {
    let session = users.refresh(&correlation.0, &body.refresh_token).await?;
    Ok(Json(session.into()))
}

/// The caller's account.
#[utoipa::path(get, path = "/api/users/me", tag = "users", security(("bearer" = [])),
    responses(
        (status = 200, body = UserView),
        (status = 401, description = "No or bad token"),
    ))]
pub async fn me(State(users): State<Users>, caller: AuthUser) -> Result<Json<UserView>, ApiError> {
    Ok(Json(users.me(caller.id).await?.into()))
}

/// Change the caller's name, phone or preferences.
#[utoipa::path(patch, path = "/api/users/me", tag = "users", security(("bearer" = [])),
    request_body = UpdateMeRequest,
    responses(
        (status = 200, body = UserView),
        (status = 400, description = "A field is invalid (named in `errors`)"),
        (status = 401, description = "No or bad token"),
    ))]
pub async fn update_me(
    State(users): State<Users>,
    caller: AuthUser,
    correlation: CorrelationId,
    ApiJson(body): ApiJson<UpdateMeRequest>,
) -> Result<Json<UserView>, ApiError> {
    let user = users
        .update_me(&correlation.0, caller.id, &body.into_patch())
        .await?;
    Ok(Json(user.into()))
}

/// Every account, in creation order (admin).
#[utoipa::path(get, path = "/api/users", tag = "users", security(("bearer" = [])),
    params(PageQuery),
    responses(
        (status = 200, body = UserPage),
        (status = 400, description = "Bad `limit` or `cursor`"),
        (status = 401, description = "No or bad token"),
        (status = 403, description = "Not an admin"),
    ))]
pub async fn list(
    State(users): State<Users>,
    Admin(_): Admin,
    Params(query): Params<PageQuery>,
) -> Result<Json<Page<UserView>>, ApiError> {
    let request = PageRequest::parse(query.limit.as_deref(), query.cursor.as_deref())?;
    let rows = users.list(&request).await?;
    let page = Page::from_rows(rows, &request, |u| u.id.to_string());
    Ok(Json(Page {
        items: page.items.into_iter().map(UserView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One account (admin, or the account's owner; anyone else gets 404).
#[utoipa::path(get, path = "/api/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = String, Path, description = "User id")),
    responses(
        (status = 200, body = UserView),
        (status = 401, description = "No or bad token"),
        (status = 404, description = "No such user, or not yours"),
    ))]
pub async fn one(
    State(users): State<Users>,
    caller: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<UserView>, ApiError> {
    let id = parse_id(&id, "user")?;
    if !caller.is_admin() && caller.id != id {
        return Err(ApiError::not_found("no such user"));
    }
    users
        .find(id)
        .await?
        .map(|u| Json(u.into()))
        .ok_or_else(|| ApiError::not_found("no such user"))
}
