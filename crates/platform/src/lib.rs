//! The ground every Emporium service stands on.
//!
//! - [`config`]: layered configuration with validation that names the key;
//! - [`bus`]: the event bus port, the embedded SQLite log, consumers with inbox, retries and dead letters;
//! - [`storage`]: a database per service, migrations, the transactional outbox and its relay;
//! - [`cache`]: the cache port (bytes with a time to live) and its in-process adapter;
//! - [`telemetry`]: JSON logs, Prometheus metrics, correlation ids;
//! - [`api`]: problem documents, the JSON extractor, field checks, pagination;
//! - [`auth`]: bearer tokens and the caller extractors;
//! - [`service`]: what a service provides to the platform (migrations, routes, consumers, workers);
//! - [`http`]: health and metrics endpoints;
//! - [`crash`]: crash points for the crash tests.

pub mod api;
pub mod auth;
pub mod bus;
pub mod cache;
pub mod config;
pub mod crash;
pub mod http;
pub mod service;
pub mod storage;
pub mod telemetry;

pub use emporium_events as events;
