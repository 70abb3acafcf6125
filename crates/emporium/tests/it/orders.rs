//! End-to-end tests of the orders service through the gateway.
