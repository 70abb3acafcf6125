//! End-to-end tests of the inventory service through the gateway.
