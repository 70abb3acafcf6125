//! The Redis adapter of the cache port, for the distributed mode: every instance of a service
//! reads and fills one shared cache.
//!
//! Values are Redis strings set with `SET key value PX ttl`, so Redis itself expires them and a
//! `set` replaces value and ttl in one command. Keys are stored under a prefix, so that several
//! deployments (or test runs) can share one server. The connection is a redis-rs
//! `ConnectionManager`: one multiplexed connection that reconnects by itself after Redis restarts,
//! with short timeouts, because a cache that hangs is worse than a miss.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Cache, CacheError};

/// How long a connect or a command may take before it counts as the cache being unavailable.
const TIMEOUT: Duration = Duration::from_secs(2);

const MAX_TTL_MILLIS: u64 = 100 * 365 * 24 * 3600 * 1000;

#[derive(Clone)]
pub struct RedisCache {
    conn: ConnectionManager,
    prefix: String,
}

fn unavailable(e: redis::RedisError) -> CacheError {
    CacheError::Unavailable(e.to_string())
}

impl RedisCache {
    /// Connects to the server at `url` (`redis://host:port[/db]`); every key is stored as
    /// `prefix` followed by the caller's key.
    pub async fn connect(url: &str, prefix: impl Into<String>) -> Result<RedisCache, CacheError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT));
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(unavailable)?;
        Ok(RedisCache {
            conn,
            prefix: prefix.into(),
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

#[async_trait]
impl Cache for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        redis::cmd("GET")
            .arg(self.key(key))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), CacheError> {
        // Redis refuses a zero expiry and one past the end of its clock: a sub-millisecond ttl is
        // as good as the shortest one, a century as good as forever.
        let millis = u64::try_from(ttl.as_millis())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_TTL_MILLIS);
        redis::cmd("SET")
            .arg(self.key(key))
            .arg(value)
            .arg("PX")
            .arg(millis)
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        redis::cmd("DEL")
            .arg(self.key(key))
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }
}
