//! The cache conformance suite against Redis, when `EMPORIUM_TEST_REDIS_URL` names a server
//! (`scripts/dev-services` starts one; `.ci/run` does). Without it each test says it is skipped and
//! passes.

use emporium_platform::cache::{RedisCache, conformance};
use uuid::Uuid;

/// A cache whose keys are prefixed with the test's name and a fresh id, so runs and tests sharing
/// the server never see each other's keys (`redis-cli keys 'emporium-it:*'` shows them).
async fn redis(test: &str) -> Option<RedisCache> {
    let Ok(url) = std::env::var("EMPORIUM_TEST_REDIS_URL") else {
        eprintln!(
            "skipped: {test} on Redis needs EMPORIUM_TEST_REDIS_URL \
             (run scripts/dev-services; .ci/run does)"
        );
        return None;
    };
    let prefix = format!("emporium-it:{test}:{}:", Uuid::now_v7().simple());
    Some(RedisCache::connect(&url, prefix).await.unwrap())
}

macro_rules! conformance_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            if let Some(cache) = redis(stringify!($name)).await {
                conformance::$name(&cache).await;
            }
        }
    )*};
}

emporium_platform::cache_conformance_checks!(conformance_tests);

#[tokio::test]
async fn an_unreachable_redis_is_a_cache_error_not_a_hang() {
    // Nothing listens on port 1: connecting fails fast and says so.
    let error = RedisCache::connect("redis://127.0.0.1:1", "x:")
        .await
        .err()
        .expect("no server there");
    assert!(error.to_string().contains("cache unavailable"), "{error}");
}
