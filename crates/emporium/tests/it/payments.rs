//! End-to-end tests of the payments service through the gateway.
