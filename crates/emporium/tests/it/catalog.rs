//! End-to-end tests of the catalog service through the gateway.
