//! Money as it crosses every boundary of the platform.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An amount in integer minor units of an ISO 4217 currency (`1999` USD is $19.99).
///
/// Integers rather than floats so that totals add up exactly in every service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Money {
    /// Minor units (cents for USD).
    pub amount: i64,
    /// ISO 4217 code, e.g. `USD`.
    pub currency: String,
}

impl Money {
    /// `Money::new(1999, "USD")` is $19.99.
    pub fn new(amount: i64, currency: impl Into<String>) -> Self {
        Self {
            amount,
            currency: currency.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_serialises_as_the_contract_shows() {
        let json = serde_json::to_string(&Money::new(1999, "USD")).unwrap();
        assert_eq!(json, r#"{"amount":1999,"currency":"USD"}"#);
        let back: Money = serde_json::from_str(&json).unwrap();
        assert_eq!(back, Money::new(1999, "USD"));
    }

    #[test]
    fn money_rejects_fractional_amounts() {
        // Floats would silently lose cents; the contract says never floats.
        assert!(serde_json::from_str::<Money>(r#"{"amount":19.99,"currency":"USD"}"#).is_err());
    }
}
