//! Shipping decisions, without IO: the shipment's state machine, tracking numbers and when a
//! shipment is due for automatic dispatch.

use std::time::Duration;

/// The simulated carrier.
pub const CARRIER: &str = "Emporium Express";

/// Tracking numbers: this prefix and ten characters from [`TRACKING_ALPHABET`].
pub const TRACKING_PREFIX: &str = "EMP";
pub const TRACKING_LENGTH: usize = 10;
const TRACKING_ALPHABET: &[u8] = b"0123456789ABCDEFGHJKLMNPQRSTUVWXYZ";

/// A shipment's lifecycle: `READY` → `DISPATCHED` → `DELIVERED`; `READY` → `CANCELLED` when the
/// order is cancelled before dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShipmentStatus {
    Ready,
    Dispatched,
    Delivered,
    Cancelled,
}

/// A transition the shipment's status does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotAllowed {
    pub from: ShipmentStatus,
}

impl ShipmentStatus {
    pub const ALL: [ShipmentStatus; 4] = [
        ShipmentStatus::Ready,
        ShipmentStatus::Dispatched,
        ShipmentStatus::Delivered,
        ShipmentStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ShipmentStatus::Ready => "READY",
            ShipmentStatus::Dispatched => "DISPATCHED",
            ShipmentStatus::Delivered => "DELIVERED",
            ShipmentStatus::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(text: &str) -> Option<ShipmentStatus> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The carrier takes the parcel.
    pub fn dispatch(self) -> Result<ShipmentStatus, NotAllowed> {
        match self {
            ShipmentStatus::Ready => Ok(ShipmentStatus::Dispatched),
            from => Err(NotAllowed { from }),
        }
    }

    /// The parcel arrives.
    pub fn deliver(self) -> Result<ShipmentStatus, NotAllowed> {
        match self {
            ShipmentStatus::Dispatched => Ok(ShipmentStatus::Delivered),
            from => Err(NotAllowed { from }),
        }
    }

    /// The order was cancelled: only a parcel still here can be held back.
    pub fn cancel(self) -> Result<ShipmentStatus, NotAllowed> {
        match self {
            ShipmentStatus::Ready => Ok(ShipmentStatus::Cancelled),
            from => Err(NotAllowed { from }),
        }
    }
}

/// A tracking number from `random`, which gives an index below its argument (e.g.
/// `|n| fastrand::usize(..n)`).
pub fn tracking_number(mut random: impl FnMut(usize) -> usize) -> String {
    let mut number = String::with_capacity(TRACKING_PREFIX.len() + TRACKING_LENGTH);
    number.push_str(TRACKING_PREFIX);
    for _ in 0..TRACKING_LENGTH {
        let index = random(TRACKING_ALPHABET.len()) % TRACKING_ALPHABET.len();
        number.push(char::from(TRACKING_ALPHABET[index]));
    }
    number
}

/// Shipments created at or before this instant (epoch millis) are due for automatic dispatch at
/// `now` with this delay.
pub fn dispatch_cutoff(now: i64, delay: Duration) -> i64 {
    now.saturating_sub(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX))
}

/// How often the dispatcher looks for due shipments: a quarter of the delay, between 20 ms and 1 s,
/// so a shipment leaves at most that much after its time.
pub fn dispatch_tick(delay: Duration) -> Duration {
    (delay / 4).clamp(Duration::from_millis(20), Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ShipmentStatus::*;

    #[test]
    fn a_ready_shipment_is_dispatched_then_delivered() {
        assert_eq!(Ready.dispatch(), Ok(Dispatched));
        assert_eq!(Dispatched.deliver(), Ok(Delivered));
    }

    #[test]
    fn only_a_ready_shipment_can_be_dispatched() {
        for from in [Dispatched, Delivered, Cancelled] {
            assert_eq!(from.dispatch(), Err(NotAllowed { from }));
        }
    }

    #[test]
    fn only_a_dispatched_shipment_can_be_delivered() {
        for from in [Ready, Delivered, Cancelled] {
            assert_eq!(from.deliver(), Err(NotAllowed { from }));
        }
    }

    #[test]
    fn only_a_ready_shipment_is_cancelled_with_its_order() {
        assert_eq!(Ready.cancel(), Ok(Cancelled));
        for from in [Dispatched, Delivered, Cancelled] {
            assert_eq!(from.cancel(), Err(NotAllowed { from }));
        }
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in ShipmentStatus::ALL {
            assert_eq!(ShipmentStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(ShipmentStatus::parse("LOST"), None);
    }

    #[test]
    fn tracking_numbers_are_the_prefix_and_ten_characters() {
        let number = tracking_number(|n| fastrand::usize(..n));
        assert_eq!(number.len(), 13);
        assert!(number.starts_with("EMP"));
        assert!(
            number[3..]
                .chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        );
        assert_eq!(tracking_number(|_| 0), "EMP0000000000");
        assert_ne!(
            tracking_number(|n| fastrand::usize(..n)),
            tracking_number(|n| fastrand::usize(..n))
        );
    }

    #[test]
    fn a_shipment_is_due_once_the_delay_has_passed() {
        let delay = Duration::from_millis(200);
        assert_eq!(dispatch_cutoff(10_000, delay), 9_800);
        assert_eq!(dispatch_cutoff(0, Duration::MAX), -i64::MAX, "no overflow");
        assert_eq!(dispatch_tick(delay), Duration::from_millis(50));
        assert_eq!(
            dispatch_tick(Duration::from_millis(10)),
            Duration::from_millis(20)
        );
        assert_eq!(
            dispatch_tick(Duration::from_secs(30)),
            Duration::from_secs(1)
        );
    }
}
