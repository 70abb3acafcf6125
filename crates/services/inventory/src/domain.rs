//! Inventory decisions, without IO: how an order's lines become a reservation, what each saga
//! event does to an order's reservation, what an admin adjustment may do, and when stock counts as
//! low. The store applies them; these functions only decide.

use std::collections::BTreeMap;

use emporium_events::StockLine;
use uuid::Uuid;

/// `LowStock` is emitted when a product's available units fall to this many or fewer.
///
/// A constant of the service rather than a platform setting (the configuration file is shared by
/// every service and rejects unknown keys); change it here.
pub const LOW_STOCK_THRESHOLD: i64 = 5;

/// The largest change one admin adjustment may make, either way.
pub const MAX_ADJUSTMENT: i64 = 1_000_000;

/// The longest `reason` an adjustment may carry, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// What inventory remembers about an order of the saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderState {
    /// Every line is held for the order.
    Reserved,
    /// The order could not be reserved in full; nothing was held.
    Rejected,
    /// The order was cancelled after its reservation; the stock went back.
    Released,
    /// The order shipped (`OrderShipped`); its reserved units became a sale.
    Committed,
    /// The order was cancelled before anything was held (or after a rejection); a later
    /// `OrderCreated` for it reserves nothing.
    Cancelled,
}

impl OrderState {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::Reserved => "RESERVED",
            OrderState::Rejected => "REJECTED",
            OrderState::Released => "RELEASED",
            OrderState::Committed => "COMMITTED",
            OrderState::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(text: &str) -> Option<OrderState> {
        [
            OrderState::Reserved,
            OrderState::Rejected,
            OrderState::Released,
            OrderState::Committed,
            OrderState::Cancelled,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// What to do with an `OrderCreated`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnCreated {
    /// Try to reserve every line (all or none).
    Reserve,
    /// Already decided (a duplicate) or cancelled first: do nothing.
    Ignore,
}

pub fn on_created(state: Option<OrderState>) -> OnCreated {
    match state {
        None => OnCreated::Reserve,
        Some(_) => OnCreated::Ignore,
    }
}

/// What to do with an `OrderCancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnCancelled {
    /// Give the held units back (`InventoryReleased`) and remember the order as released.
    Release,
    /// Nothing is held; remember the cancellation so that nothing will be.
    Remember,
    /// Nothing to do: already released or cancelled, or shipped (the units are gone).
    Ignore,
}

pub fn on_cancelled(state: Option<OrderState>) -> OnCancelled {
    match state {
        Some(OrderState::Reserved) => OnCancelled::Release,
        None | Some(OrderState::Rejected) => OnCancelled::Remember,
        Some(OrderState::Released | OrderState::Committed | OrderState::Cancelled) => {
            OnCancelled::Ignore
        }
    }
}

/// Does an `OrderShipped` commit the order's reservation? Only a held reservation can become a
/// sale; a released one stays released (orders never ships a cancelled order, so this is a
/// replay or a bug upstream, and the units already went back).
pub fn commits_on_ship(state: Option<OrderState>) -> bool {
    state == Some(OrderState::Reserved)
}

/// An order's lines that cannot be reserved at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidLines(pub String);

/// The lines to reserve for an order: one per product (repeated products are added up), sorted by
/// product id so that concurrent reservations lock rows in the same order.
pub fn reservation_lines(
    items: impl IntoIterator<Item = (Uuid, i64)>,
) -> Result<Vec<StockLine>, InvalidLines> {
    let mut merged: BTreeMap<Uuid, i64> = BTreeMap::new();
    for (product_id, quantity) in items {
        if quantity <= 0 {
            return Err(InvalidLines(format!(
                "quantity {quantity} of product {product_id} is not positive"
            )));
        }
        let total = merged.entry(product_id).or_insert(0);
        *total = total
            .checked_add(quantity)
            .ok_or_else(|| InvalidLines(format!("quantity of product {product_id} overflows")))?;
    }
    if merged.is_empty() {
        return Err(InvalidLines("the order has no lines".to_owned()));
    }
    Ok(merged
        .into_iter()
        .map(|(product_id, quantity)| StockLine {
            product_id,
            quantity,
        })
        .collect())
}

/// The first line that could not be reserved, and what was available for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shortfall {
    pub product_id: Uuid,
    pub requested: i64,
    pub available: i64,
}

/// Stock levels of one product. Conserved: `initial + adjustments = available + reserved +
/// committed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Levels {
    pub initial: i64,
    pub adjustments: i64,
    pub available: i64,
    pub reserved: i64,
    pub committed: i64,
}

impl Levels {
    pub fn new(initial: i64) -> Levels {
        Levels {
            initial,
            adjustments: 0,
            available: initial,
            reserved: 0,
            committed: 0,
        }
    }

    /// The conservation invariant of the contract, and no negative level.
    pub fn is_conserved(&self) -> bool {
        self.initial + self.adjustments == self.available + self.reserved + self.committed
            && self.available >= 0
            && self.reserved >= 0
            && self.committed >= 0
    }
}

/// Why an adjustment is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdjustError {
    /// `available` would go below zero; it is this much now.
    Insufficient { available: i64 },
}

/// The levels after an admin adds `delta` (negative: removes) units. The store runs the same rule
/// as a conditional `UPDATE` so that it holds under concurrency; this is its statement.
pub fn adjust(levels: Levels, delta: i64) -> Result<Levels, AdjustError> {
    match levels.available.checked_add(delta) {
        Some(available) if available >= 0 => Ok(Levels {
            available,
            adjustments: levels.adjustments + delta,
            ..levels
        }),
        _ => Err(AdjustError::Insufficient {
            available: levels.available,
        }),
    }
}

/// The low-stock flag after `available` changed, and whether this change crossed into low stock
/// (emit `LowStock` then). Crossing back above the threshold re-arms the alert; staying low does
/// not repeat it.
pub fn low_stock(was_low: bool, available: i64, threshold: i64) -> (bool, bool) {
    let is_low = available <= threshold;
    (is_low, is_low && !was_low)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn lines_are_merged_per_product_and_sorted() {
        let lines = reservation_lines([(id(2), 1), (id(1), 3), (id(2), 4)]).unwrap();
        assert_eq!(
            lines,
            vec![
                StockLine {
                    product_id: id(1),
                    quantity: 3
                },
                StockLine {
                    product_id: id(2),
                    quantity: 5
                },
            ]
        );
    }

    #[test]
    fn lines_without_a_positive_quantity_cannot_be_reserved() {
        assert!(reservation_lines([(id(1), 1), (id(2), 0)]).is_err());
        assert!(reservation_lines([(id(1), -3)]).is_err());
        assert!(reservation_lines(Vec::new()).is_err());
        assert!(reservation_lines([(id(1), i64::MAX), (id(1), 1)]).is_err());
    }

    #[test]
    fn a_new_order_is_reserved_and_a_known_one_is_not_again() {
        assert_eq!(on_created(None), OnCreated::Reserve);
        for state in [
            OrderState::Reserved,
            OrderState::Rejected,
            OrderState::Released,
            OrderState::Committed,
            // Cancelled before it was created: never reserve.
            OrderState::Cancelled,
        ] {
            assert_eq!(on_created(Some(state)), OnCreated::Ignore, "{state:?}");
        }
    }

    #[test]
    fn cancelling_releases_only_a_held_reservation() {
        assert_eq!(
            on_cancelled(Some(OrderState::Reserved)),
            OnCancelled::Release
        );
        assert_eq!(on_cancelled(None), OnCancelled::Remember);
        assert_eq!(
            on_cancelled(Some(OrderState::Rejected)),
            OnCancelled::Remember
        );
        for state in [
            OrderState::Released,
            OrderState::Committed,
            OrderState::Cancelled,
        ] {
            assert_eq!(on_cancelled(Some(state)), OnCancelled::Ignore, "{state:?}");
        }
    }

    #[test]
    fn only_a_held_reservation_is_committed_when_the_order_ships() {
        assert!(commits_on_ship(Some(OrderState::Reserved)));
        for state in [
            None,
            Some(OrderState::Rejected),
            Some(OrderState::Released),
            Some(OrderState::Committed),
            Some(OrderState::Cancelled),
        ] {
            assert!(!commits_on_ship(state), "{state:?}");
        }
    }

    #[test]
    fn order_states_round_trip_through_their_names() {
        for state in [
            OrderState::Reserved,
            OrderState::Rejected,
            OrderState::Released,
            OrderState::Committed,
            OrderState::Cancelled,
        ] {
            assert_eq!(OrderState::parse(state.as_str()), Some(state));
        }
        assert_eq!(OrderState::parse("LOST"), None);
    }

    #[test]
    fn adjustments_keep_stock_conserved_and_never_negative() {
        let levels = Levels::new(10);
        let up = adjust(levels, 5).unwrap();
        assert_eq!(up.available, 15);
        assert!(up.is_conserved());
        let down = adjust(up, -15).unwrap();
        assert_eq!(down.available, 0);
        assert!(down.is_conserved());
        assert_eq!(
            adjust(down, -1),
            Err(AdjustError::Insufficient { available: 0 })
        );
        assert!(adjust(Levels::new(i64::MAX), 1).is_err());
    }

    #[test]
    fn conservation_fails_when_units_appear_or_vanish() {
        let mut levels = Levels::new(10);
        levels.reserved = 1;
        assert!(!levels.is_conserved());
        levels.available = 9;
        assert!(levels.is_conserved());
    }

    #[test]
    fn low_stock_is_signalled_once_per_crossing() {
        let t = 5;
        // Falling to the threshold crosses.
        assert_eq!(low_stock(false, 5, t), (true, true));
        // Staying low does not signal again.
        assert_eq!(low_stock(true, 3, t), (true, false));
        assert_eq!(low_stock(true, 0, t), (true, false));
        // Rising above re-arms; staying above never signals.
        assert_eq!(low_stock(true, 6, t), (false, false));
        assert_eq!(low_stock(false, 100, t), (false, false));
        // And the next fall signals again.
        assert_eq!(low_stock(false, 4, t), (true, true));
    }
}
