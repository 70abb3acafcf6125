//! Events in: contacts and product names kept current, notifications written for the events that
//! ask for them. A handler only writes rows (the transaction may be replayed); the dispatcher
//! sends after commit.

use async_trait::async_trait;
use emporium_events::{Envelope, Event, NotificationFailed, Priority};
use emporium_platform::{
    bus::consumer::{EventHandler, HandlerError},
    storage::Tx,
};
use uuid::Uuid;

use crate::{
    domain::{self, Audience, Contact, MarketingLimit, Status},
    store::{self, NewNotification},
};

/// The notifications service's handler for `user-events`, `product-events`, `order-events`,
/// `inventory-events`, `promotion-events` and `recommendation-events`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Handler {
    pub marketing: MarketingLimit,
}

#[async_trait]
impl EventHandler for Handler {
    async fn handle(&self, tx: &mut Tx, envelope: &Envelope) -> Result<(), HandlerError> {
        let version = envelope.occurred_at.timestamp_millis();
        match &envelope.event {
            Event::UserRegistered(e) => {
                let contact = Contact {
                    user_id: e.user_id,
                    email: e.email.clone(),
                    name: e.name.clone(),
                    phone: e.phone.clone(),
                    role: e.role,
                    preferences: e.preferences,
                };
                // A second `UserRegistered` for a known user is the admin bootstrap promoting an
                // existing account: update the contact, but welcome each user once.
                let known = store::contact(tx.conn(), e.user_id).await?.is_some();
                store::upsert_contact(tx.conn(), &contact, true, version).await?;
                if !known {
                    notify(tx, envelope, &self.marketing).await?;
                }
                apply_parked(tx, e.user_id, &self.marketing).await
            }
            Event::UserUpdated(e) => {
                let contact = Contact {
                    user_id: e.user_id,
                    email: e.email.clone(),
                    name: e.name.clone(),
                    phone: e.phone.clone(),
                    // Kept as it is for a known user; a user first seen here is a customer until
                    // their `UserRegistered` says otherwise.
                    role: emporium_events::Role::Customer,
                    preferences: e.preferences,
                };
                store::upsert_contact(tx.conn(), &contact, false, version).await?;
                apply_parked(tx, e.user_id, &self.marketing).await
            }
            Event::ProductCreated(e) => {
                Ok(store::upsert_product(tx.conn(), e.product_id, &e.name, version).await?)
            }
            Event::ProductUpdated(e) => {
                Ok(store::upsert_product(tx.conn(), e.product_id, &e.name, version).await?)
            }
            _ => notify(tx, envelope, &self.marketing).await,
        }
    }
}

/// Writes the notifications `envelope` asks for, once per (event, recipient, channel). An event for
/// a user whose contact has not arrived yet is parked until it does. A `marketing` message beyond
/// the user's `marketing` limit is stored `SUPPRESSED`.
pub async fn notify(
    tx: &mut Tx,
    envelope: &Envelope,
    marketing: &MarketingLimit,
) -> Result<(), HandlerError> {
    let product_name = match &envelope.event {
        Event::LowStock(e) => store::product_name(tx.conn(), e.product_id).await?,
        _ => None,
    };
    let Some(mut request) = domain::request_for(&envelope.event, product_name.as_deref()) else {
        return Ok(());
    };
    if let Event::RecommendationsIssued(e) = &envelope.event {
        let mut names = std::collections::BTreeMap::new();
        for id in &e.product_ids {
            if let Some(name) = store::product_name(tx.conn(), *id).await? {
                names.insert(*id, name);
            }
        }
        if !domain::name_products(&mut request, &names) {
            tracing::warn!(user_id = %e.user_id, event_id = %envelope.event_id, "no recommended product has a known name; nothing sent");
            return Ok(());
        }
    }
    let contacts = match request.audience {
        Audience::User(user_id) => match store::contact(tx.conn(), user_id).await? {
            Some(contact) => vec![contact],
            None => {
                let json = envelope
                    .to_json()
                    .map_err(|e| HandlerError::Failed(format!("cannot park the event: {e}")))?;
                let json = String::from_utf8(json)
                    .map_err(|e| HandlerError::Failed(format!("cannot park the event: {e}")))?;
                tracing::debug!(%user_id, event_id = %envelope.event_id, "no contact yet; event parked");
                store::park(tx.conn(), envelope.event_id, user_id, &json).await?;
                return Ok(());
            }
        },
        Audience::Admins => store::admin_contacts(tx.conn()).await?,
        Audience::Everyone => store::all_contacts(tx.conn()).await?,
    };
    let template = store::template(tx.conn(), request.template).await?;
    let now = chrono::Utc::now().timestamp_millis();
    for contact in &contacts {
        // Counted in this transaction, so the messages written for earlier events of the batch
        // count too.
        let over_limit = request.priority == Priority::Marketing
            && !marketing.allows(
                store::marketing_received(tx.conn(), contact.user_id, marketing.window_start(now))
                    .await?,
            );
        for planned in domain::plan(&request, contact) {
            let rendered = match &template {
                Some(t) => domain::render(&t.subject, &t.body, &planned.variables)
                    .map_err(|e| format!("template {} does not render: {e}", request.template)),
                None => Err(format!("template {} does not exist", request.template)),
            };
            let (status, subject, body, error) = match (planned.allowed && !over_limit, rendered) {
                (false, rendered) => {
                    let (subject, body) = rendered.map(|r| (r.subject, r.body)).unwrap_or_default();
                    (Status::Suppressed, subject, body, None)
                }
                (true, Ok(r)) => (Status::Queued, r.subject, r.body, None),
                (true, Err(error)) => (Status::Failed, String::new(), String::new(), Some(error)),
            };
            let notification = NewNotification {
                id: Uuid::now_v7(),
                dedupe_key: Some(domain::dedupe_key(
                    envelope.event_id,
                    planned.user_id,
                    planned.channel,
                )),
                event_id: Some(envelope.event_id),
                correlation_id: envelope.correlation_id.clone(),
                user_id: Some(planned.user_id),
                channel: planned.channel,
                priority: request.priority,
                template: Some(request.template.to_owned()),
                recipient: planned.recipient,
                subject,
                body,
                status,
                error: error.clone(),
            };
            let inserted = store::insert_notification(tx.conn(), &notification).await?;
            if inserted && let Some(error) = error {
                tracing::warn!(notification_id = %notification.id, %error, "notification failed to render");
                tx.emit(Event::NotificationFailed(NotificationFailed {
                    notification_id: notification.id,
                    user_id: notification.user_id,
                    template: request.template.to_owned(),
                    channel: notification.channel,
                    error,
                }))?;
            }
        }
    }
    Ok(())
}

/// Applies the events that were waiting for `user_id`'s contact.
async fn apply_parked(
    tx: &mut Tx,
    user_id: Uuid,
    marketing: &MarketingLimit,
) -> Result<(), HandlerError> {
    for json in store::take_parked(tx.conn(), user_id).await? {
        match Envelope::from_json(json.as_bytes()) {
            Ok(parked) => notify(tx, &parked, marketing).await?,
            // It parsed when it was parked; a build that cannot read it any more must not block
            // this user's events forever.
            Err(e) => tracing::error!(%user_id, error = %e, "dropping an unreadable parked event"),
        }
    }
    Ok(())
}
