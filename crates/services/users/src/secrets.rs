//! Password hashes and refresh tokens.
//!
//! Passwords are hashed with Argon2id at the crate's default cost (a PHC string with its own
//! salt), off the async threads. Refresh tokens are `<id>.<secret>`: the id finds the row, the
//! secret is 32 random bytes checked against a stored hash. A secret that random cannot be guessed,
//! so its hash need not be slow — only one-way, so that a copy of the database yields no usable
//! token; a cheap Argon2id (8 KiB, one pass, salted with the id) is that.

use std::sync::OnceLock;

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version,
    password_hash::SaltString,
};
use emporium_platform::{api::ApiError, auth::random_token};
use uuid::Uuid;

/// Runs `hash` (an Argon2id computation) on a blocking thread, at most one per core at a time.
/// Each takes a core and 19 MiB for its whole length: more at once only queue for the cores
/// while holding their memory (eight logins at once were most of the platform's peak memory).
async fn on_hashing_thread<T: Send + 'static>(
    hash: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    static SLOTS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    let slots = SLOTS.get_or_init(|| {
        tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
    });
    let _slot = slots
        .acquire()
        .await
        .map_err(|e| ApiError::internal(format!("password hashing slots closed: {e}")))?;
    tokio::task::spawn_blocking(hash)
        .await
        .map_err(|e| ApiError::internal(format!("password hashing task failed: {e}")))?
}

/// Hashes a password (Argon2id, random salt) on a blocking thread.
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    on_hashing_thread(move || hash_now(&password)).await
}

fn hash_now(password: &str) -> Result<String, ApiError> {
    // 16 random bytes as hex: hex digits are valid salt characters.
    let salt = SaltString::from_b64(&random_token(16))
        .map_err(|e| ApiError::internal(format!("cannot make a salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| ApiError::internal(format!("cannot hash a password: {e}")))
}

/// Does `password` match `hash`? With no hash (unknown account) a dummy hash of the same cost is
/// checked instead, so that the answer takes as long whether or not the account exists.
pub async fn verify_password(password: String, hash: Option<String>) -> Result<bool, ApiError> {
    on_hashing_thread(move || {
        let known = hash.is_some();
        let hash = match hash {
            Some(hash) => hash,
            None => dummy_hash()?.to_owned(),
        };
        let parsed = PasswordHash::new(&hash)
            .map_err(|e| ApiError::internal(format!("a stored password hash is corrupt: {e}")))?;
        let matches = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(known && matches)
    })
    .await
}

fn dummy_hash() -> Result<&'static str, ApiError> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    if let Some(hash) = DUMMY.get() {
        return Ok(hash);
    }
    let hash = hash_now(&random_token(16))?;
    Ok(DUMMY.get_or_init(|| hash))
}

/// A new refresh token: its id, the hash to store, and the token to hand out.
pub struct NewRefreshToken {
    pub id: Uuid,
    pub secret_hash: String,
    pub token: String,
}

pub fn new_refresh_token() -> Result<NewRefreshToken, ApiError> {
    let id = Uuid::now_v7();
    let secret = random_token(32);
    Ok(NewRefreshToken {
        id,
        secret_hash: hash_refresh_secret(id, &secret)?,
        token: format!("{id}.{secret}"),
    })
}

/// Splits a token as the client sent it; `None` if it cannot be one of ours.
pub fn parse_refresh_token(token: &str) -> Option<(Uuid, &str)> {
    let (id, secret) = token.trim().split_once('.')?;
    let valid_secret = secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit());
    valid_secret
        .then(|| Uuid::parse_str(id).ok().map(|id| (id, secret)))
        .flatten()
}

pub fn hash_refresh_secret(id: Uuid, secret: &str) -> Result<String, ApiError> {
    let params = Params::new(8, 1, 1, Some(32))
        .map_err(|e| ApiError::internal(format!("bad token hash parameters: {e}")))?;
    let mut out = [0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(secret.as_bytes(), id.as_bytes(), &mut out)
        .map_err(|e| ApiError::internal(format!("cannot hash a token: {e}")))?;
    Ok(out.iter().map(|b| format!("{b:02x}")).collect())
}

/// Compares two hashes without stopping at the first difference.
pub fn same_hash(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_password_matches_its_hash_only() {
        let hash = hash_password("correct-horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(!hash.contains("correct-horse"));
        assert!(
            verify_password("correct-horse".into(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(
            !verify_password("wrong-horse".into(), Some(hash))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn an_unknown_account_never_matches() {
        assert!(!verify_password("anything".into(), None).await.unwrap());
    }

    #[test]
    fn refresh_tokens_parse_back_and_their_hash_checks() {
        let token = new_refresh_token().unwrap();
        let (id, secret) = parse_refresh_token(&token.token).unwrap();
        assert_eq!(id, token.id);
        assert!(same_hash(
            &hash_refresh_secret(id, secret).unwrap(),
            &token.secret_hash
        ));
        let other = random_token(32);
        assert!(!same_hash(
            &hash_refresh_secret(id, &other).unwrap(),
            &token.secret_hash
        ));
        assert!(!token.token.contains(&token.secret_hash));
    }

    #[test]
    fn malformed_refresh_tokens_are_refused() {
        let id = Uuid::now_v7();
        for bad in [
            String::new(),
            "nonsense".into(),
            format!("{id}"),
            format!("{id}.abc"),
            format!("not-a-uuid.{}", random_token(32)),
            format!("{id}.{}", "z".repeat(64)),
        ] {
            assert!(parse_refresh_token(&bad).is_none(), "{bad}");
        }
    }
}
