//! The cache port: a byte store with per-entry time to live, for read-aside caching of answers a
//! service can always recompute from its database.
//!
//! # Contract (every adapter MUST)
//! - **Bytes in, bytes out.** [`Cache::get`] returns exactly the bytes the last [`Cache::set`] of
//!   that key stored (an empty value is a value, not a miss), or `None`.
//! - **Time to live.** An entry is not returned once its `ttl` has passed since the `set` that
//!   stored it; a `set` over an existing key replaces both the value and its ttl.
//! - **Delete.** After [`Cache::delete`] returns, `get` of that key is `None`; deleting a missing
//!   key is not an error.
//! - **Losing entries is allowed.** A cache may evict anything at any time (memory pressure, a
//!   restart): callers treat it as an optimisation, never as storage, and recompute on a miss.
//! - **Errors are the backend's trouble** ([`CacheError`]): callers should fall back to computing
//!   the answer rather than fail the request.
//!
//! Keys are plain strings; callers namespace them (`recommendations:...`) so that one backend can
//! serve several services.
//!
//! Adapters: [`MemoryCache`] (in-process, on moka) here and [`RedisCache`] for the distributed
//! mode. Both pass the [`conformance`] suite (feature `conformance`).

mod redis;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;

pub use self::redis::RedisCache;

/// The cache backend failed (unreachable, timed out, refused the command).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache unavailable: {0}")]
    Unavailable(String),
}

/// A byte cache with per-entry time to live. See the module docs for the contract.
#[async_trait]
pub trait Cache: Send + Sync {
    /// The value stored under `key`, if present and not expired.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError>;

    /// Stores `value` under `key` for `ttl`, replacing any previous value and ttl.
    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), CacheError>;

    /// Forgets `key` (fine if it is not there).
    async fn delete(&self, key: &str) -> Result<(), CacheError>;
}

/// Counts one read-aside lookup of the cache named `cache` (the caller's namespace, such as
/// `catalog`) in `emporium_cache_hits_total{cache}` when the answer came from the cache, or in
/// `emporium_cache_misses_total{cache}` when it had to be computed (a failing cache included), so
/// that an operator sees the hit ratio per use.
pub fn count_lookup(cache: &'static str, hit: bool) {
    let name = if hit {
        "emporium_cache_hits_total"
    } else {
        "emporium_cache_misses_total"
    };
    metrics::counter!(name, "cache" => cache).increment(1);
}

/// What [`MemoryCache`] keeps per key: the bytes and the ttl they were stored with.
#[derive(Clone)]
struct Entry {
    bytes: Arc<[u8]>,
    ttl: Duration,
}

/// Expires each entry `ttl` after the `set` that stored it.
struct PerEntryTtl;

impl moka::Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Entry,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }

    // moka's default keeps the old deadline on an overwrite; the contract says a `set` replaces it.
    fn expire_after_update(
        &self,
        _key: &String,
        value: &Entry,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// The in-process adapter: a bounded moka cache, weighed in bytes (key plus value), least
/// recently used entries evicted first when full. Never fails. Its clock is the system's monotonic
/// clock, not tokio's, so paused test time does not expire entries.
#[derive(Clone)]
pub struct MemoryCache {
    inner: moka::sync::Cache<String, Entry>,
}

impl MemoryCache {
    /// A cache holding at most about `max_bytes` of keys and values.
    pub fn new(max_bytes: u64) -> MemoryCache {
        let inner = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, entry: &Entry| {
                u32::try_from(key.len().saturating_add(entry.bytes.len())).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryTtl)
            .build();
        MemoryCache { inner }
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        Ok(self.inner.get(key).map(|entry| entry.bytes.to_vec()))
    }

    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), CacheError> {
        self.inner.insert(
            key.to_owned(),
            Entry {
                bytes: value.into(),
                ttl,
            },
        );
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        self.inner.invalidate(key);
        Ok(())
    }
}

/// The cache port's conformance suite: one `pub async fn` per property of the contract above.
/// An adapter's tests call every one of them with a cache on the backend under test (see this
/// module's tests for [`MemoryCache`]). Keys are unique per call, so the checks can share one
/// backend. Waits poll a condition with a generous deadline.
#[cfg(feature = "conformance")]
pub mod conformance {
    // A test suite: failing loudly is its job.
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    /// Applies the macro `$apply` to the name of every check of the suite, so that each adapter's
    /// tests run the whole list: `emporium_platform::cache_conformance_checks!(my_tests);`.
    #[macro_export]
    macro_rules! cache_conformance_checks {
        ($apply:ident) => {
            $apply!(
                a_missing_key_reads_as_none,
                a_value_is_read_back_byte_for_byte,
                set_replaces_the_value_of_that_key_only,
                delete_forgets_a_key,
                an_entry_expires_after_its_ttl,
                set_replaces_the_ttl,
                concurrent_writes_are_whole,
            );
        };
    }

    use std::time::Duration;

    use uuid::Uuid;

    use super::Cache;

    const DEADLINE: Duration = Duration::from_secs(30);
    const LONG: Duration = Duration::from_secs(600);

    fn unique(name: &str) -> String {
        format!("conformance:{name}:{}", Uuid::now_v7().simple())
    }

    /// Polls until `key` reads as `None`; fails after the deadline.
    async fn wait_until_gone(cache: &dyn Cache, key: &str) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while cache.get(key).await.unwrap().is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{key} never expired"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A key never set reads as `None`.
    pub async fn a_missing_key_reads_as_none(cache: &dyn Cache) {
        assert_eq!(cache.get(&unique("missing")).await.unwrap(), None);
    }

    /// What was set is read back byte for byte, including an empty value and non-UTF-8 bytes.
    pub async fn a_value_is_read_back_byte_for_byte(cache: &dyn Cache) {
        let cases: [Vec<u8>; 3] = [
            b"{\"hello\":\"world\"}".to_vec(),
            Vec::new(),
            (0..=255u8).rev().collect(),
        ];
        for (i, value) in cases.into_iter().enumerate() {
            let key = unique(&format!("bytes-{i}"));
            cache.set(&key, value.clone(), LONG).await.unwrap();
            assert_eq!(cache.get(&key).await.unwrap(), Some(value), "case {i}");
        }
    }

    /// A second `set` replaces the value; other keys are untouched.
    pub async fn set_replaces_the_value_of_that_key_only(cache: &dyn Cache) {
        let (a, b) = (unique("a"), unique("b"));
        cache.set(&a, b"first".to_vec(), LONG).await.unwrap();
        cache.set(&b, b"other".to_vec(), LONG).await.unwrap();
        cache.set(&a, b"second".to_vec(), LONG).await.unwrap();
        assert_eq!(
            cache.get(&a).await.unwrap().as_deref(),
            Some(&b"second"[..])
        );
        assert_eq!(cache.get(&b).await.unwrap().as_deref(), Some(&b"other"[..]));
    }

    /// `delete` forgets one key, leaves the others, and is fine on a missing key.
    pub async fn delete_forgets_a_key(cache: &dyn Cache) {
        let (a, b) = (unique("a"), unique("b"));
        cache.set(&a, b"1".to_vec(), LONG).await.unwrap();
        cache.set(&b, b"2".to_vec(), LONG).await.unwrap();
        cache.delete(&a).await.unwrap();
        assert_eq!(cache.get(&a).await.unwrap(), None);
        assert_eq!(cache.get(&b).await.unwrap().as_deref(), Some(&b"2"[..]));
        cache.delete(&a).await.unwrap();
        cache.delete(&unique("never-set")).await.unwrap();
    }

    /// An entry is there after `set` and gone once its ttl has passed; a long-lived neighbour
    /// stays.
    pub async fn an_entry_expires_after_its_ttl(cache: &dyn Cache) {
        let (short, long) = (unique("short"), unique("long"));
        cache
            .set(&short, b"soon gone".to_vec(), Duration::from_secs(2))
            .await
            .unwrap();
        cache.set(&long, b"stays".to_vec(), LONG).await.unwrap();
        assert!(
            cache.get(&short).await.unwrap().is_some(),
            "expired at once"
        );
        wait_until_gone(cache, &short).await;
        assert!(cache.get(&long).await.unwrap().is_some());
    }

    /// A `set` over an existing key replaces its ttl too: a short-lived entry rewritten with a
    /// long ttl outlives a sibling that kept the short one.
    pub async fn set_replaces_the_ttl(cache: &dyn Cache) {
        let (kept, rewritten) = (unique("kept"), unique("rewritten"));
        let short = Duration::from_secs(1);
        cache.set(&kept, b"short".to_vec(), short).await.unwrap();
        cache
            .set(&rewritten, b"short".to_vec(), short)
            .await
            .unwrap();
        cache.set(&rewritten, b"long".to_vec(), LONG).await.unwrap();
        wait_until_gone(cache, &kept).await;
        assert_eq!(
            cache.get(&rewritten).await.unwrap().as_deref(),
            Some(&b"long"[..])
        );
        // And the other way round: a long-lived entry rewritten with a short ttl expires.
        let shortened = unique("shortened");
        cache.set(&shortened, b"long".to_vec(), LONG).await.unwrap();
        cache
            .set(&shortened, b"short".to_vec(), short)
            .await
            .unwrap();
        wait_until_gone(cache, &shortened).await;
    }

    /// Concurrent writers of one key leave one of their values (never a mix), and concurrent
    /// writers of different keys lose nothing.
    pub async fn concurrent_writes_are_whole(cache: &dyn Cache) {
        let shared = unique("shared");
        let prefix = unique("each");
        let writes = (0..32u8).map(|i| {
            let shared = shared.clone();
            let own = format!("{prefix}:{i}");
            async move {
                cache.set(&shared, vec![i; 1024], LONG).await.unwrap();
                cache.set(&own, vec![i; 16], LONG).await.unwrap();
            }
        });
        futures_util::future::join_all(writes).await;
        let value = cache
            .get(&shared)
            .await
            .unwrap()
            .expect("one value is left");
        assert_eq!(value.len(), 1024);
        assert!(value.iter().all(|b| *b == value[0]), "a mixed value");
        for i in 0..32u8 {
            assert_eq!(
                cache.get(&format!("{prefix}:{i}")).await.unwrap(),
                Some(vec![i; 16])
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! conformance_tests {
        ($($name:ident),* $(,)?) => {$(
            #[tokio::test]
            async fn $name() {
                conformance::$name(&MemoryCache::new(64 * 1024 * 1024)).await;
            }
        )*};
    }

    crate::cache_conformance_checks!(conformance_tests);

    #[tokio::test]
    async fn a_full_memory_cache_evicts_instead_of_growing() {
        let cache = MemoryCache::new(64 * 1024);
        for i in 0..1000 {
            cache
                .set(&format!("k{i}"), vec![0; 1024], Duration::from_secs(600))
                .await
                .unwrap();
        }
        // moka applies evictions in the background of its own calls; this makes them happen now.
        cache.inner.run_pending_tasks();
        assert!(
            cache.inner.weighted_size() <= 64 * 1024,
            "{} bytes kept",
            cache.inner.weighted_size()
        );
        assert!(cache.inner.entry_count() < 1000);
    }
}
