//! The small closed vocabularies that events and the REST API share.
//!
//! Each is declared with its wire string next to the variant, so `as_str`, `FromStr` and serde
//! cannot drift apart.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A string that is not one of a vocabulary's values, e.g. a `role` column holding `"root"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownValue {
    /// The vocabulary, e.g. `Role`.
    pub kind: &'static str,
    /// What was found.
    pub value: String,
}

impl fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown {} {:?}", self.kind, self.value)
    }
}

impl std::error::Error for UnknownValue {}

macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $wire:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(
            Debug,
            Clone,
            Copy,
            PartialEq,
            Eq,
            Hash,
            ::serde::Serialize,
            ::serde::Deserialize,
            ::schemars::JsonSchema,
        )]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $wire)] $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The wire form, as in JSON and the database.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $wire,)+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::UnknownValue;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($wire => Ok(Self::$variant),)+
                    _ => Err($crate::UnknownValue { kind: stringify!($name), value: s.to_owned() }),
                }
            }
        }
    };
}

pub(crate) use vocabulary;

vocabulary! {
    /// What a user may do; carried in the JWT and on `UserRegistered`.
    pub enum Role {
        Customer = "customer",
        Admin = "admin",
    }
}

vocabulary! {
    /// Why an order ended `CANCELLED`.
    pub enum CancellationReason {
        /// Inventory could not reserve every item.
        OutOfStock = "OUT_OF_STOCK",
        /// The payment provider declined or stayed unavailable.
        PaymentDeclined = "PAYMENT_DECLINED",
        /// The customer cancelled through the API.
        CustomerRequest = "CUSTOMER_REQUEST",
        /// The saga was still `PENDING` after `EMPORIUM_SAGA_TIMEOUT`.
        Timeout = "TIMEOUT",
        /// A product was deleted or otherwise cannot be sold any more.
        ProductUnavailable = "PRODUCT_UNAVAILABLE",
    }
}

vocabulary! {
    /// Why the (simulated) payment provider refused an authorization.
    pub enum DeclineReason {
        /// The issuer refused the card (`tok_chargeDeclined`).
        CardDeclined = "card_declined",
        /// Not enough funds (`tok_insufficientFunds`).
        InsufficientFunds = "insufficient_funds",
        /// A token the provider does not know.
        InvalidPaymentMethod = "invalid_payment_method",
        /// The total is above `EMPORIUM_PAYMENT_LIMIT`.
        AmountLimitExceeded = "amount_limit_exceeded",
        /// The provider kept failing until retries ran out.
        ProviderUnavailable = "provider_unavailable",
    }
}

vocabulary! {
    /// How a notification reaches a user.
    pub enum Channel {
        Email = "email",
        Sms = "sms",
        Push = "push",
    }
}

vocabulary! {
    /// Delivery order of notifications: critical before standard before marketing.
    pub enum Priority {
        /// Order lifecycle and security.
        Critical = "critical",
        /// Welcome mails, recommendations.
        Standard = "standard",
        /// Promotions: only to opted-in users, rate limited.
        Marketing = "marketing",
    }
}

/// What a user agreed to receive. Every flag defaults to `true` when absent, as the contract says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Preferences {
    pub order_updates: bool,
    pub promotions: bool,
    pub recommendations: bool,
}

impl Default for Preferences {
    fn default() -> Self {
        Self {
            order_updates: true,
            promotions: true,
            recommendations: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn assert_wire_forms<T>(all: &[T], as_str: fn(T) -> &'static str, expected: &[&str])
    where
        T: Copy + fmt::Debug + PartialEq + Serialize + FromStr<Err = UnknownValue>,
    {
        let wire: Vec<&str> = all.iter().map(|v| as_str(*v)).collect();
        assert_eq!(wire, expected);
        for v in all {
            let json = serde_json::to_value(v).unwrap();
            assert_eq!(json, serde_json::Value::from(as_str(*v)), "{v:?}");
            assert_eq!(as_str(*v).parse::<T>().unwrap(), *v);
        }
    }

    #[test]
    fn wire_forms_match_the_contract() {
        assert_wire_forms(Role::ALL, Role::as_str, &["customer", "admin"]);
        assert_wire_forms(
            CancellationReason::ALL,
            CancellationReason::as_str,
            &[
                "OUT_OF_STOCK",
                "PAYMENT_DECLINED",
                "CUSTOMER_REQUEST",
                "TIMEOUT",
                "PRODUCT_UNAVAILABLE",
            ],
        );
        assert_wire_forms(
            DeclineReason::ALL,
            DeclineReason::as_str,
            &[
                "card_declined",
                "insufficient_funds",
                "invalid_payment_method",
                "amount_limit_exceeded",
                "provider_unavailable",
            ],
        );
        assert_wire_forms(Channel::ALL, Channel::as_str, &["email", "sms", "push"]);
        assert_wire_forms(
            Priority::ALL,
            Priority::as_str,
            &["critical", "standard", "marketing"],
        );
    }

    #[test]
    fn unknown_values_are_rejected() {
        let err = "root".parse::<Role>().unwrap_err();
        assert_eq!(err.to_string(), r#"unknown Role "root""#);
        assert!(serde_json::from_str::<Role>(r#""Admin""#).is_err());
    }

    #[test]
    fn preferences_default_to_true_and_use_camel_case() {
        let p: Preferences = serde_json::from_str(r#"{"promotions":false}"#).unwrap();
        assert_eq!(
            p,
            Preferences {
                order_updates: true,
                promotions: false,
                recommendations: true
            }
        );
        let json = serde_json::to_value(p).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"orderUpdates":true,"promotions":false,"recommendations":true})
        );
    }
}
