//! The users service: accounts, passwords, sign-in and the tokens every other service trusts.
//!
//! It owns the `users` database: accounts (Argon2id password hashes that never leave this crate),
//! single-use refresh tokens (stored hashed) and recent login failures (the rate limit survives
//! restarts and is shared by every instance). A login attempt is counted before its password is
//! checked, queued behind the other attempts on the same address, so parallel guesses cannot
//! slip past the limit; a success removes it and the failures before it.
//!
//! - REST: `POST /api/auth/register|login|refresh`, `GET|PATCH /api/users/me`, `GET /api/users`
//!   (admin), `GET /api/users/{id}` (admin or self).
//! - Emits on `user-events`: `UserRegistered` (registration and admin bootstrap: creation, or
//!   promotion of an existing account) and `UserUpdated` (a profile change), each in the
//!   transaction that makes the change.
//! - Consumes nothing.
//! - At start-up, makes sure the configured admin account (`admin_email`, `admin_password`)
//!   exists with the role admin and that password.

pub mod app;
pub mod domain;
pub mod http;
pub mod secrets;
pub mod store;

use async_trait::async_trait;
use axum::Router;
use emporium_platform::{
    service::{Service, ServiceContext, Workers},
    storage::Migration,
};
use utoipa::OpenApi;

pub const NAME: &str = "users";

/// The users service.
pub struct UsersService;

#[async_trait]
impl Service for UsersService {
    fn name(&self) -> &'static str {
        NAME
    }

    fn migrations(&self) -> &'static [Migration] {
        store::MIGRATIONS
    }

    fn router(&self, ctx: &ServiceContext) -> Router {
        http::router(app::Users::new(ctx.db.clone(), ctx.tokens.clone()))
    }

    async fn start(&self, ctx: &ServiceContext, _workers: &mut Workers) -> anyhow::Result<()> {
        if let (Some(email), Some(password)) = (&ctx.config.admin_email, &ctx.config.admin_password)
        {
            app::Users::new(ctx.db.clone(), ctx.tokens.clone())
                .bootstrap_admin(email, password)
                .await?;
        }
        Ok(())
    }
}

#[derive(OpenApi)]
#[openapi(
    paths(
        http::register,
        http::login,
        http::refresh,
        http::me,
        http::update_me,
        http::list,
        http::one
    ),
    components(schemas(
        http::UserView,
        http::PreferencesView,
        http::AuthResponse,
        http::RegisterRequest,
        http::LoginRequest,
        http::RefreshRequest,
        http::UpdateMeRequest,
        http::PreferencesUpdate,
        http::UserPage
    )),
    tags((name = "users", description = "Accounts, sign-in and tokens"))
)]
struct ApiDoc;

/// The OpenAPI description of the users service's paths.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_lists_every_path() {
        let doc = openapi();
        for path in [
            "/api/auth/register",
            "/api/auth/login",
            "/api/auth/refresh",
            "/api/users/me",
            "/api/users",
            "/api/users/{id}",
        ] {
            assert!(doc.paths.paths.contains_key(path), "{path}");
        }
        let json = serde_json::to_string(&doc).unwrap();
        assert!(!json.contains("password_hash") && !json.contains("passwordHash"));
    }
}
