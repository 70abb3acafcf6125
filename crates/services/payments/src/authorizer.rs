//! The payment authorizer as one plain function, [`authorize`]: what payments knows when an
//! order's stock is reserved (the order, its total and its payment token) in, the simulated
//! provider's answer (CONTRACT §2 "Payments") out. No database, no clock, no retries.
//!
//! It has two callers:
//! - the service's consumer, on `InventoryReserved`: through [`crate::provider::SimulatedProvider`],
//!   wrapped in the platform's concerns around the call (a few retries behind the circuit breaker,
//!   [`crate::provider::authorize_with_retries`]), then the payment row and its event in one
//!   transaction ([`crate::app`]);
//! - the `payment-authorizer` AWS Lambda function (crate `emporium-lambdas`), whose event is an
//!   [`AuthorizationRequest`] and whose response an [`AuthorizationOutcome`], both as JSON
//!   (docs/LAMBDA.md).
//!
//! The answer depends on the request and the limit alone, so asking again (a replayed handler
//! transaction, a retried Lambda invocation) gives the same answer: no double effect can come
//! from here.

use emporium_events::{DeclineReason, Money};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `EMPORIUM_PAYMENT_LIMIT` when unset: the largest total the provider authorizes, minor units.
pub const DEFAULT_LIMIT: i64 = 1_000_000;

/// What is asked of the authorizer: `{"orderId", "amount": Money, "paymentToken"}`.
///
/// Deserializing checks what the types alone cannot (a total of zero or more, an ISO 4217
/// currency), so a malformed Lambda event is refused with an error naming the field instead of
/// being decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "UncheckedRequest")]
pub struct AuthorizationRequest {
    pub order_id: Uuid,
    /// The order's total.
    pub amount: Money,
    /// The provider token (`tok_visa`, ...); never card data.
    pub payment_token: String,
}

/// The request as it comes over the wire, before [`AuthorizationRequest`]'s checks.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UncheckedRequest {
    order_id: Uuid,
    amount: Money,
    payment_token: String,
}

/// A request the authorizer refuses to decide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidRequest {
    /// The JSON path of the field at fault.
    pub field: &'static str,
    pub message: &'static str,
}

impl TryFrom<UncheckedRequest> for AuthorizationRequest {
    type Error = InvalidRequest;

    fn try_from(raw: UncheckedRequest) -> Result<Self, InvalidRequest> {
        if raw.amount.amount < 0 {
            return Err(InvalidRequest {
                field: "amount.amount",
                message: "must be zero or more minor units",
            });
        }
        let currency = &raw.amount.currency;
        if !(currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase())) {
            return Err(InvalidRequest {
                field: "amount.currency",
                message: "must be an ISO 4217 code: three upper-case letters",
            });
        }
        Ok(AuthorizationRequest {
            order_id: raw.order_id,
            amount: raw.amount,
            payment_token: raw.payment_token,
        })
    }
}

/// The provider's answer: `{"outcome": "authorized"}`,
/// `{"outcome": "declined", "reason": "card_declined"}` or `{"outcome": "unavailable"}`.
///
/// There is no authorization id: the simulated provider has none, and the payment's id is minted
/// by the service when it records the payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum AuthorizationOutcome {
    Authorized,
    Declined {
        reason: DeclineReason,
    },
    /// The provider failed this time (a timeout, a 5xx): ask again. The service retries a few
    /// times and then declines with `provider_unavailable`; a Lambda caller does its own retrying.
    Unavailable,
}

/// The authorizer: the simulated provider's rules. The token is checked first (a card the
/// provider cannot use says nothing about the amount), then the limit (inclusive), then what the
/// card's issuer says.
pub fn authorize(request: &AuthorizationRequest, limit: i64) -> AuthorizationOutcome {
    use AuthorizationOutcome::{Authorized, Declined, Unavailable};
    let issuer = match request.payment_token.as_str() {
        "tok_providerError" => return Unavailable,
        "tok_visa" | "tok_mastercard" => Authorized,
        "tok_chargeDeclined" => Declined {
            reason: DeclineReason::CardDeclined,
        },
        "tok_insufficientFunds" => Declined {
            reason: DeclineReason::InsufficientFunds,
        },
        _ => {
            return Declined {
                reason: DeclineReason::InvalidPaymentMethod,
            };
        }
    };
    if request.amount.amount > limit {
        return Declined {
            reason: DeclineReason::AmountLimitExceeded,
        };
    }
    issuer
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const LIMIT: i64 = 1_000_000;

    fn request(token: &str, amount: i64) -> AuthorizationRequest {
        AuthorizationRequest {
            order_id: Uuid::now_v7(),
            amount: Money::new(amount, "USD"),
            payment_token: token.into(),
        }
    }

    fn declined(reason: DeclineReason) -> AuthorizationOutcome {
        AuthorizationOutcome::Declined { reason }
    }

    #[test]
    fn every_token_gets_its_answer() {
        let cases = [
            ("tok_visa", AuthorizationOutcome::Authorized),
            ("tok_mastercard", AuthorizationOutcome::Authorized),
            ("tok_chargeDeclined", declined(DeclineReason::CardDeclined)),
            (
                "tok_insufficientFunds",
                declined(DeclineReason::InsufficientFunds),
            ),
            ("tok_providerError", AuthorizationOutcome::Unavailable),
            ("tok_unknown", declined(DeclineReason::InvalidPaymentMethod)),
            ("", declined(DeclineReason::InvalidPaymentMethod)),
            ("TOK_VISA", declined(DeclineReason::InvalidPaymentMethod)),
        ];
        for (token, expected) in cases {
            assert_eq!(
                authorize(&request(token, 1999), LIMIT),
                expected,
                "{token:?}"
            );
        }
    }

    #[test]
    fn the_limit_is_inclusive_and_applies_to_usable_cards() {
        assert_eq!(
            authorize(&request("tok_visa", LIMIT), LIMIT),
            AuthorizationOutcome::Authorized
        );
        let over = declined(DeclineReason::AmountLimitExceeded);
        for token in ["tok_visa", "tok_mastercard", "tok_chargeDeclined"] {
            assert_eq!(
                authorize(&request(token, LIMIT + 1), LIMIT),
                over,
                "{token}"
            );
        }
        // A token the provider cannot use is refused as such, whatever the amount.
        assert_eq!(
            authorize(&request("tok_nope", LIMIT + 1), LIMIT),
            declined(DeclineReason::InvalidPaymentMethod)
        );
    }

    #[test]
    fn the_default_limit_is_the_platform_s() {
        let config = emporium_platform::config::Config::defaults(None).unwrap();
        assert_eq!(config.payment_limit, DEFAULT_LIMIT);
    }

    #[test]
    fn requests_and_outcomes_have_the_documented_json_shape() {
        let order_id = Uuid::now_v7();
        let wire = json!({
            "orderId": order_id,
            "amount": {"amount": 1999, "currency": "USD"},
            "paymentToken": "tok_visa",
        });
        let parsed: AuthorizationRequest = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(
            parsed,
            AuthorizationRequest {
                order_id,
                amount: Money::new(1999, "USD"),
                payment_token: "tok_visa".into(),
            }
        );
        assert_eq!(serde_json::to_value(&parsed).unwrap(), wire);

        let outcomes = [
            (
                AuthorizationOutcome::Authorized,
                json!({"outcome": "authorized"}),
            ),
            (
                declined(DeclineReason::CardDeclined),
                json!({"outcome": "declined", "reason": "card_declined"}),
            ),
            (
                AuthorizationOutcome::Unavailable,
                json!({"outcome": "unavailable"}),
            ),
        ];
        for (outcome, json) in outcomes {
            assert_eq!(serde_json::to_value(outcome).unwrap(), json);
            assert_eq!(
                serde_json::from_value::<AuthorizationOutcome>(json).unwrap(),
                outcome
            );
        }
    }

    #[test]
    fn a_request_that_cannot_be_decided_is_refused_naming_the_field() {
        let with = |amount: serde_json::Value| {
            serde_json::from_value::<AuthorizationRequest>(json!({
                "orderId": Uuid::now_v7(),
                "amount": amount,
                "paymentToken": "tok_visa",
            }))
            .unwrap_err()
            .to_string()
        };
        let error = with(json!({"amount": -1, "currency": "USD"}));
        assert!(error.starts_with("amount.amount: "), "{error}");
        for currency in ["usd", "USDX", "", "ÜSD"] {
            let error = with(json!({"amount": 1, "currency": currency}));
            assert!(
                error.starts_with("amount.currency: "),
                "{currency:?}: {error}"
            );
        }
        let error = with(json!({"amount": 19.99, "currency": "USD"}));
        assert!(
            error.contains("integer") || error.contains("i64"),
            "{error}"
        );

        let missing = serde_json::from_value::<AuthorizationRequest>(json!({
            "orderId": Uuid::now_v7(),
            "amount": {"amount": 1, "currency": "USD"},
        }))
        .unwrap_err()
        .to_string();
        assert!(missing.contains("paymentToken"), "{missing}");
    }
}
