//! End-to-end tests of the notifications service through the gateway.
