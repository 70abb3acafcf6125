//! Bearer tokens: issued by the users service, checked by every service (a service never trusts a
//! header a client could set, only a signature it can verify).
//!
//! Access tokens are HS256 JWTs with the user id and role. The signing secret comes from
//! `jwt_secret`, or in embedded mode from `<data_dir>/jwt.secret`, generated on first start.

use std::{path::Path, sync::Arc};

use axum::{extract::FromRequestParts, http::request::Parts};
use emporium_events::Role;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::api::ApiError;

/// Access tokens live this long (seconds).
pub const ACCESS_TTL_SECS: i64 = 15 * 60;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Uuid,
    pub role: Role,
    pub iat: i64,
    pub exp: i64,
}

/// Signs and verifies access tokens. Put an `Arc<Tokens>` in the router's extensions.
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl Tokens {
    pub fn new(secret: &[u8]) -> Arc<Tokens> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        Arc::new(Tokens {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        })
    }

    /// The secret from configuration, else the one kept in `data_dir` (created on first use).
    pub fn load(configured: Option<&str>, data_dir: &Path) -> std::io::Result<Arc<Tokens>> {
        if let Some(secret) = configured {
            return Ok(Tokens::new(secret.as_bytes()));
        }
        let path = data_dir.join("jwt.secret");
        match std::fs::read_to_string(&path) {
            Ok(secret) if secret.trim().len() >= 32 => Ok(Tokens::new(secret.trim().as_bytes())),
            _ => {
                let secret = random_token(32);
                std::fs::write(&path, &secret)?;
                Ok(Tokens::new(secret.as_bytes()))
            }
        }
    }

    /// An access token for this user; returns the token and its lifetime in seconds.
    pub fn issue(&self, user: Uuid, role: Role) -> Result<(String, i64), ApiError> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user,
            role,
            iat: now,
            exp: now + ACCESS_TTL_SECS,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| ApiError::internal(format!("cannot sign a token: {e}")))?;
        Ok((token, ACCESS_TTL_SECS))
    }

    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|_| ApiError::unauthenticated("invalid or expired token"))
    }
}

/// `n` random bytes as lowercase hex (for secrets and refresh tokens).
pub fn random_token(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    // The OS random source failing is not something to recover from; fall back to v4-grade ids
    // rather than panic (both come from the OS generator).
    if getrandom::fill(&mut bytes).is_err() {
        bytes = (0..n).map(|_| fastrand::u8(..)).collect();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The authenticated caller. Rejects with 401 when the token is missing or bad.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser {
    pub id: Uuid,
    pub role: Role,
}

impl AuthUser {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// 403 unless admin.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden("this needs the admin role"))
        }
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

impl<S: Send + Sync> FromRequestParts<S> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let tokens = parts
            .extensions
            .get::<Arc<Tokens>>()
            .cloned()
            .ok_or_else(|| ApiError::internal("token verifier missing from the router"))?;
        let token =
            bearer(parts).ok_or_else(|| ApiError::unauthenticated("a bearer token is required"))?;
        let claims = tokens.verify(token)?;
        Ok(AuthUser {
            id: claims.sub,
            role: claims.role,
        })
    }
}

/// An admin caller: 401 without a valid token, 403 with a customer's.
#[derive(Debug, Clone, Copy)]
pub struct Admin(pub AuthUser);

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        user.require_admin()?;
        Ok(Admin(user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_with_its_secret_only() {
        let tokens = Tokens::new(&[7u8; 32]);
        let user = Uuid::now_v7();
        let (token, ttl) = tokens.issue(user, Role::Admin).unwrap();
        assert_eq!(ttl, ACCESS_TTL_SECS);
        let claims = tokens.verify(&token).unwrap();
        assert_eq!(claims.sub, user);
        assert_eq!(claims.role, Role::Admin);
        let other = Tokens::new(&[8u8; 32]);
        assert!(other.verify(&token).is_err());
        assert!(tokens.verify("not.a.token").is_err());
    }

    #[test]
    fn the_generated_secret_is_kept_in_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let first = Tokens::load(None, dir.path()).unwrap();
        let (token, _) = first.issue(Uuid::now_v7(), Role::Customer).unwrap();
        let second = Tokens::load(None, dir.path()).unwrap();
        assert!(
            second.verify(&token).is_ok(),
            "a restart keeps tokens valid"
        );
        assert_eq!(random_token(16).len(), 32);
    }
}
