//! The platform's integration tests: one binary, one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bus_sqlite;
mod crash;
mod storage;
