//! Emporium's events: the envelope every bus carries, the payload of every event type, the topics,
//! and the small vocabularies (money, roles, reasons, channels) that events share with the REST API.
//!
//! This crate owns the wire format of CONTRACT §4. Services depend on it instead of defining their
//! own copies, so a producer and its consumers cannot disagree on a field name. The JSON Schemas
//! under `docs/events/` are generated from these types and checked by this crate's tests.
//!
//! ```
//! use emporium_events::{Envelope, Event, OrderCancelled, CancellationReason};
//! use uuid::Uuid;
//!
//! let event = Event::OrderCancelled(OrderCancelled {
//!     order_id: Uuid::now_v7(),
//!     user_id: Uuid::now_v7(),
//!     reason: CancellationReason::CustomerRequest,
//! });
//! let envelope = Envelope::new("orders", "corr-42", None, event);
//! let bytes = envelope.to_json()?;
//! assert_eq!(Envelope::from_json(&bytes)?, envelope);
//! # Ok::<(), serde_json::Error>(())
//! ```

mod envelope;
mod event;
mod money;
mod payloads;
mod schema;
mod topic;
mod values;

pub use envelope::Envelope;
pub use event::{Event, EventInfo};
pub use money::Money;
pub use payloads::*;
pub use schema::schemas;
pub use topic::Topic;
pub use values::{
    CancellationReason, Channel, DeclineReason, Preferences, Priority, Role, UnknownValue,
};
