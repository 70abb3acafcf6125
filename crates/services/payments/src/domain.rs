//! Payment decisions, without IO: when an order is ready to be authorized, and what a
//! cancellation or the order shipping does to its payment.

/// A payment's lifecycle: `AUTHORIZED` → `CAPTURED` (shipped) or `VOIDED` (cancelled before
/// capture); `DECLINED` from the start. Only `AUTHORIZED` moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStatus {
    Authorized,
    Captured,
    Voided,
    Declined,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Authorized => "AUTHORIZED",
            PaymentStatus::Captured => "CAPTURED",
            PaymentStatus::Voided => "VOIDED",
            PaymentStatus::Declined => "DECLINED",
        }
    }

    pub fn parse(text: &str) -> Option<PaymentStatus> {
        [
            PaymentStatus::Authorized,
            PaymentStatus::Captured,
            PaymentStatus::Voided,
            PaymentStatus::Declined,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    /// The status after the order ships, if it changes (`PaymentCaptured`).
    pub fn capture(self) -> Option<PaymentStatus> {
        (self == PaymentStatus::Authorized).then_some(PaymentStatus::Captured)
    }

    /// The status after the order is cancelled, if it changes (`PaymentVoided`). A captured
    /// payment stays captured: giving money back would be a refund, not a void.
    pub fn void(self) -> Option<PaymentStatus> {
        (self == PaymentStatus::Authorized).then_some(PaymentStatus::Voided)
    }
}

/// What payments knows of an order. Its events arrive on two topics (`order-events` and
/// `inventory-events`) in either order, so each fact is recorded as it comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OrderFacts {
    /// `OrderCreated` seen: the amount, token and owner are known.
    pub created: bool,
    /// `InventoryReserved` seen.
    pub reserved: bool,
    /// `OrderCancelled` seen.
    pub cancelled: bool,
    /// The order already has its one payment (authorized or declined).
    pub has_payment: bool,
}

impl OrderFacts {
    /// Authorize now? Only once everything is known, only once per order, never after a
    /// cancellation.
    pub fn ready_to_authorize(self) -> bool {
        self.created && self.reserved && !self.cancelled && !self.has_payment
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_is_authorized_once_both_created_and_reserved() {
        let created_and_reserved = OrderFacts {
            created: true,
            reserved: true,
            ..OrderFacts::default()
        };
        assert!(created_and_reserved.ready_to_authorize());
        for facts in [
            OrderFacts::default(),
            OrderFacts {
                created: true,
                ..OrderFacts::default()
            },
            // The reservation arrived before the order (another topic).
            OrderFacts {
                reserved: true,
                ..OrderFacts::default()
            },
            OrderFacts {
                cancelled: true,
                ..created_and_reserved
            },
            OrderFacts {
                has_payment: true,
                ..created_and_reserved
            },
        ] {
            assert!(!facts.ready_to_authorize(), "{facts:?}");
        }
    }

    #[test]
    fn only_an_authorized_payment_is_captured_or_voided() {
        use PaymentStatus::*;
        assert_eq!(Authorized.capture(), Some(Captured));
        assert_eq!(Authorized.void(), Some(Voided));
        for status in [Captured, Voided, Declined] {
            assert_eq!(status.capture(), None, "{status:?}");
            assert_eq!(status.void(), None, "{status:?}");
        }
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in [
            PaymentStatus::Authorized,
            PaymentStatus::Captured,
            PaymentStatus::Voided,
            PaymentStatus::Declined,
        ] {
            assert_eq!(PaymentStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(PaymentStatus::parse("REFUNDED"), None);
    }
}
