//! End-to-end tests of the shipping service through the gateway.
