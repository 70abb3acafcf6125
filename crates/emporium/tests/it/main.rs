//! Black-box tests of the `emporium` binary: started on port 0 with a fresh data directory, spoken
//! to over HTTP. One test binary made of modules, so it links once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

mod admin;
mod catalog;
mod cli;
mod dashboard;
mod deploy;
mod distributed;
mod gateway;
mod graphql;
mod inventory;
mod load;
mod notifications;
mod ops;
mod orders;
mod payments;
mod promotions;
mod recommendations;
mod saga;
mod shipping;
mod users;
