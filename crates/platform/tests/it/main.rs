//! The platform's integration tests: one binary, one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[cfg(feature = "kafka")]
mod bus_kafka;
mod bus_outbox;
mod cache_redis;
mod crash;
mod storage;
mod storage_port;
