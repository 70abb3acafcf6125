//! The topics of the event bus (CONTRACT §4).

use crate::values::vocabulary;

vocabulary! {
    /// A topic of the bus. Every event belongs to exactly one; see [`crate::Event::topic`].
    pub enum Topic {
        User = "user-events",
        Product = "product-events",
        Order = "order-events",
        Inventory = "inventory-events",
        Payment = "payment-events",
        Shipment = "shipment-events",
        /// Orders → shipping only: carries the shipping address, which no other service sees.
        ShippingRequest = "shipping-requests",
        Promotion = "promotion-events",
        Recommendation = "recommendation-events",
        Notification = "notification-events",
    }
}

impl Topic {
    /// Where a handler that keeps failing parks this topic's events: `<topic>.dlq`.
    pub fn dlq_name(self) -> &'static str {
        // Spelled out rather than formatted so callers get a `&'static str` without allocating.
        match self {
            Self::User => "user-events.dlq",
            Self::Product => "product-events.dlq",
            Self::Order => "order-events.dlq",
            Self::Inventory => "inventory-events.dlq",
            Self::Payment => "payment-events.dlq",
            Self::Shipment => "shipment-events.dlq",
            Self::ShippingRequest => "shipping-requests.dlq",
            Self::Promotion => "promotion-events.dlq",
            Self::Recommendation => "recommendation-events.dlq",
            Self::Notification => "notification-events.dlq",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_the_contract_ones() {
        let names: Vec<&str> = Topic::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(
            names,
            [
                "user-events",
                "product-events",
                "order-events",
                "inventory-events",
                "payment-events",
                "shipment-events",
                "shipping-requests",
                "promotion-events",
                "recommendation-events",
                "notification-events",
            ]
        );
    }

    #[test]
    fn dlq_names_and_parsing() {
        for t in Topic::ALL {
            assert_eq!(t.dlq_name(), format!("{}.dlq", t.as_str()));
            assert_eq!(t.as_str().parse::<Topic>().unwrap(), *t);
            assert_eq!(t.to_string(), t.as_str());
        }
        assert!("orders".parse::<Topic>().is_err());
        assert!("order-events.dlq".parse::<Topic>().is_err());
    }
}
