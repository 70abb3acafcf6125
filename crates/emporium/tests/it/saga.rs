//! End-to-end tests of the saga service through the gateway.
