//! End-to-end tests of the users service through the gateway.
