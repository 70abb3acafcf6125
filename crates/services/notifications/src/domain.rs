//! The notification rules, with no IO: which events notify whom, on which channels, at which
//! priority; the shipped templates; rendering; and the checks on what admins send.
//!
//! Decisions written down here (and in the crate docs):
//! - **Channels.** Email always (every contact has an address). SMS as well for `critical`
//!   notifications when the contact has a phone. Push only when an admin sends one: there is no
//!   device registry, so no event targets it.
//! - **Preferences** are applied when the event is handled: an order update to a user who turned
//!   `orderUpdates` off is stored `SUPPRESSED`, so the user (and support) can still see that it
//!   happened and why nothing arrived.
//! - **Strict undefined.** Templates render with minijinja's strict undefined behaviour: a variable
//!   the template uses but the caller did not supply is an error, never an empty string. A template
//!   may opt out per variable with `{{ x | default("…") }}` or `{% if x is defined %}`.

use std::collections::{BTreeMap, BTreeSet};

use emporium_events::{
    CancellationReason, Channel, Event, Money, Preferences, Priority, Role, UnknownValue,
};
use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Map, Value, json};
use uuid::Uuid;

// ------------------------------------------------------------------ statuses

/// Where a notification is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Waiting for the dispatcher.
    Queued,
    Sent,
    /// Could not be rendered or delivered (after the dispatcher's retries).
    Failed,
    /// Not sent because the user's preferences say no.
    Suppressed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "QUEUED",
            Status::Sent => "SENT",
            Status::Failed => "FAILED",
            Status::Suppressed => "SUPPRESSED",
        }
    }

    pub fn parse(text: &str) -> Result<Status, UnknownValue> {
        match text {
            "QUEUED" => Ok(Status::Queued),
            "SENT" => Ok(Status::Sent),
            "FAILED" => Ok(Status::Failed),
            "SUPPRESSED" => Ok(Status::Suppressed),
            _ => Err(UnknownValue {
                kind: "Status",
                value: text.to_owned(),
            }),
        }
    }
}

/// The dispatcher serves lower ranks first: critical, then standard, then marketing.
pub fn rank(priority: Priority) -> i64 {
    match priority {
        Priority::Critical => 0,
        Priority::Standard => 1,
        Priority::Marketing => 2,
    }
}

// ----------------------------------------------------------------- contacts

/// What notifications knows about a user, from `user-events`.
#[derive(Debug, Clone, PartialEq)]
pub struct Contact {
    pub user_id: Uuid,
    pub email: String,
    pub name: String,
    pub phone: Option<String>,
    pub role: Role,
    pub preferences: Preferences,
}

/// The preference that may veto a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    OrderUpdates,
    Promotions,
    Recommendations,
}

impl Gate {
    pub fn allows(self, preferences: &Preferences) -> bool {
        match self {
            Gate::OrderUpdates => preferences.order_updates,
            Gate::Promotions => preferences.promotions,
            Gate::Recommendations => preferences.recommendations,
        }
    }
}

// ------------------------------------------------------------------ events

/// Who an event notifies, with what.
#[derive(Debug, Clone, PartialEq)]
pub enum Audience {
    /// One user, by id.
    User(Uuid),
    /// Every admin contact.
    Admins,
    /// Every contact (the request's gate still decides who is sent it).
    Everyone,
}

/// What an event asks of this service.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub audience: Audience,
    pub template: &'static str,
    pub priority: Priority,
    /// The event's variables; the contact's `name` and `email` are added per recipient.
    pub variables: Map<String, Value>,
    pub gate: Option<Gate>,
}

/// The notification an event asks for, if any. `product_name` is the catalog's name for a
/// `LowStock` product, when known.
pub fn request_for(event: &Event, product_name: Option<&str>) -> Option<Request> {
    let order = |user_id, template, variables: Value| {
        Some(Request {
            audience: Audience::User(user_id),
            template,
            priority: Priority::Critical,
            variables: into_map(variables),
            gate: Some(Gate::OrderUpdates),
        })
    };
    match event {
        Event::UserRegistered(e) => Some(Request {
            audience: Audience::User(e.user_id),
            template: "welcome",
            priority: Priority::Standard,
            variables: Map::new(),
            gate: None,
        }),
        Event::OrderConfirmed(e) => order(
            e.user_id,
            "order_confirmed",
            json!({
                "orderId": e.order_id,
                "total": format_money(&e.total),
                "amount": e.total.amount,
                "currency": e.total.currency,
            }),
        ),
        Event::OrderCancelled(e) => order(
            e.user_id,
            "order_cancelled",
            json!({
                "orderId": e.order_id,
                "reason": e.reason.as_str(),
                "reasonText": reason_text(e.reason),
            }),
        ),
        Event::OrderShipped(e) => order(
            e.user_id,
            "order_shipped",
            json!({
                "orderId": e.order_id,
                "shipmentId": e.shipment_id,
                "trackingNumber": e.tracking_number,
            }),
        ),
        Event::OrderDelivered(e) => order(
            e.user_id,
            "order_delivered",
            json!({"orderId": e.order_id, "shipmentId": e.shipment_id}),
        ),
        Event::LowStock(e) => Some(Request {
            audience: Audience::Admins,
            template: "low_stock",
            priority: Priority::Standard,
            variables: into_map(json!({
                "productId": e.product_id,
                "productName": product_name.map_or_else(|| e.product_id.to_string(), str::to_owned),
                "available": e.available,
                "threshold": e.threshold,
            })),
            gate: None,
        }),
        Event::RecommendationsIssued(e) => Some(Request {
            audience: Audience::User(e.user_id),
            template: "recommendations",
            priority: Priority::Standard,
            variables: into_map(json!({
                "productIds": e.product_ids,
                // Named by `name_products` from this service's copy of the catalog's names.
                "products": e.product_ids.iter().map(|id| json!({"productId": id})).collect::<Vec<_>>(),
            })),
            gate: Some(Gate::Recommendations),
        }),
        Event::PromotionLaunched(e) => Some(Request {
            audience: Audience::Everyone,
            template: "promotion",
            priority: Priority::Marketing,
            variables: into_map(json!({
                "promotionId": e.promotion_id,
                "promotionName": e.name,
                "message": e.message,
                "productIds": e.product_ids,
                "category": e.category,
                "scheduledFor": e.scheduled_for,
            })),
            gate: Some(Gate::Promotions),
        }),
        _ => None,
    }
}

/// Gives each of a `recommendations` request's `products` its `name` from `names` (the catalog's
/// names this service keeps, by product id). A product with no known name is left out: an id
/// means nothing to a customer. `false` when none is left, so there is nothing to send.
pub fn name_products(request: &mut Request, names: &BTreeMap<Uuid, String>) -> bool {
    let Some(Value::Array(products)) = request.variables.get_mut("products") else {
        return false;
    };
    products.retain_mut(|product| {
        let name = product
            .get("productId")
            .and_then(Value::as_str)
            .and_then(|id| Uuid::parse_str(id).ok())
            .and_then(|id| names.get(&id));
        match (name, product.as_object_mut()) {
            (Some(name), Some(fields)) => {
                fields.insert("name".to_owned(), name.clone().into());
                true
            }
            _ => false,
        }
    });
    !products.is_empty()
}

/// One notification to write: the plan for one (recipient, channel).
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub user_id: Uuid,
    pub channel: Channel,
    /// Email address, phone number or user id, by channel.
    pub recipient: String,
    pub variables: Map<String, Value>,
    /// `false`: store it `SUPPRESSED`.
    pub allowed: bool,
}

/// The channels a notification of `priority` uses for `contact`, with the recipient on each.
pub fn channels_for(contact: &Contact, priority: Priority) -> Vec<(Channel, String)> {
    let mut channels = vec![(Channel::Email, contact.email.clone())];
    if priority == Priority::Critical
        && let Some(phone) = contact.phone.as_deref().and_then(normalize_phone)
    {
        channels.push((Channel::Sms, phone));
    }
    channels
}

/// The notifications `request` makes for `contact`: one per channel, suppressed when the
/// request's preference gate says no.
pub fn plan(request: &Request, contact: &Contact) -> Vec<Planned> {
    let allowed = request
        .gate
        .is_none_or(|gate| gate.allows(&contact.preferences));
    let mut variables = request.variables.clone();
    variables
        .entry("name")
        .or_insert_with(|| contact.name.clone().into());
    variables
        .entry("email")
        .or_insert_with(|| contact.email.clone().into());
    channels_for(contact, request.priority)
        .into_iter()
        .map(|(channel, recipient)| Planned {
            user_id: contact.user_id,
            channel,
            recipient,
            variables: variables.clone(),
            allowed,
        })
        .collect()
}

/// The second line of defence against duplicates (the inbox is the first): one notification per
/// (event, recipient, channel).
pub fn dedupe_key(event_id: Uuid, user_id: Uuid, channel: Channel) -> String {
    format!("{event_id}:{user_id}:{channel}")
}

/// At most `limit` `marketing` messages per user per `window` (config `notifications`); beyond
/// it they are stored `SUPPRESSED`, like those a user opted out of. A message is one event (or one
/// admin's message), whatever its channels; suppressed and failed ones do not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarketingLimit {
    pub limit: u32,
    pub window: std::time::Duration,
}

impl Default for MarketingLimit {
    /// The shipped configuration's: 3 a day.
    fn default() -> Self {
        MarketingLimit {
            limit: 3,
            window: std::time::Duration::from_secs(24 * 60 * 60),
        }
    }
}

impl MarketingLimit {
    pub fn from_config(config: &emporium_platform::config::NotificationsConfig) -> Self {
        MarketingLimit {
            limit: config.marketing_limit,
            window: config.marketing_window,
        }
    }

    /// The start (epoch millis) of the window that ends at `now`.
    pub fn window_start(&self, now: i64) -> i64 {
        now.saturating_sub(i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX))
    }

    /// Whether a user who received `received` marketing messages in the window may get another.
    pub fn allows(&self, received: i64) -> bool {
        received < i64::from(self.limit)
    }
}

fn into_map(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// What a customer reads for a cancellation reason.
pub fn reason_text(reason: CancellationReason) -> &'static str {
    match reason {
        CancellationReason::OutOfStock => "some items were out of stock",
        CancellationReason::PaymentDeclined => "the payment was declined",
        CancellationReason::CustomerRequest => "you asked us to cancel it",
        CancellationReason::Timeout => "we could not complete it in time",
        CancellationReason::ProductUnavailable => "a product is no longer available",
    }
}

/// `1999 USD` → `19.99 USD`, with the currency's usual number of decimals (ISO 4217 exponents for
/// the common exceptions; two otherwise).
pub fn format_money(money: &Money) -> String {
    let decimals = match money.currency.as_str() {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    };
    let sign = if money.amount < 0 { "-" } else { "" };
    let units = money.amount.unsigned_abs();
    if decimals == 0 {
        return format!("{sign}{units} {}", money.currency);
    }
    let scale = 10u64.pow(decimals);
    format!(
        "{sign}{}.{:0width$} {}",
        units / scale,
        units % scale,
        money.currency,
        width = decimals as usize
    )
}

// ---------------------------------------------------------------- templates

/// A template shipped with the service: seeded at start-up, never overwriting an admin's edit.
#[derive(Debug, Clone, Copy)]
pub struct ShippedTemplate {
    pub name: &'static str,
    pub subject: &'static str,
    pub body: &'static str,
}

pub const SHIPPED_TEMPLATES: &[ShippedTemplate] = &[
    ShippedTemplate {
        name: "welcome",
        subject: "Welcome to Emporium, {{ name }}!",
        body: "Hello {{ name }},\n\nYour Emporium account ({{ email }}) is ready. Happy shopping!\n\nThe Emporium team\n",
    },
    ShippedTemplate {
        name: "order_confirmed",
        subject: "Your order {{ orderId }} is confirmed",
        body: "Hello {{ name }},\n\nThank you for your order {{ orderId }}. Your payment of {{ total }} is authorized and we are preparing your parcel.\n\nThe Emporium team\n",
    },
    ShippedTemplate {
        name: "order_cancelled",
        subject: "Your order {{ orderId }} was cancelled",
        body: "Hello {{ name }},\n\nYour order {{ orderId }} was cancelled: {{ reasonText }}. You have not been charged.\n\nThe Emporium team\n",
    },
    ShippedTemplate {
        name: "order_shipped",
        subject: "Your order {{ orderId }} is on its way",
        body: "Hello {{ name }},\n\nYour order {{ orderId }} has shipped. Tracking number: {{ trackingNumber }}.\n\nThe Emporium team\n",
    },
    ShippedTemplate {
        name: "order_delivered",
        subject: "Your order {{ orderId }} was delivered",
        body: "Hello {{ name }},\n\nYour order {{ orderId }} has been delivered. We hope you enjoy it!\n\nThe Emporium team\n",
    },
    ShippedTemplate {
        name: "promotion",
        subject: "{{ promotionName }}",
        body: "Hello {{ name }},\n\n{{ message }}\n\nThe Emporium team\n\nYou receive this because you opted in to promotions; turn them off in your profile.\n",
    },
    ShippedTemplate {
        name: "recommendations",
        subject: "Picked for you, {{ name }}",
        body: "Hello {{ name }},\n\nBased on what you bought, you might like:\n{% for product in products %}- {{ product.name }}{% if product.price is defined %} ({{ product.price }}){% endif %}\n{% endfor %}\nThe Emporium team\n",
    },
    ShippedTemplate {
        name: "low_stock",
        subject: "Low stock: {{ productName }}",
        body: "Hello {{ name }},\n\n{{ productName }} ({{ productId }}) is down to {{ available }} units available (threshold {{ threshold }}). Consider restocking.\n",
    },
];

/// Variables that render every shipped template: for tests and as an example for admins.
pub fn sample_variables(template: &str) -> Map<String, Value> {
    let mut vars = into_map(json!({"name": "Ada Lovelace", "email": "ada@example.com"}));
    let extra = match template {
        "order_confirmed" => {
            json!({"orderId": "0190-order", "total": "19.99 USD", "amount": 1999, "currency": "USD"})
        }
        "order_cancelled" => {
            json!({"orderId": "0190-order", "reason": "PAYMENT_DECLINED", "reasonText": "the payment was declined"})
        }
        "order_shipped" => {
            json!({"orderId": "0190-order", "shipmentId": "0190-shipment", "trackingNumber": "EMP123456"})
        }
        "order_delivered" => json!({"orderId": "0190-order", "shipmentId": "0190-shipment"}),
        "promotion" => {
            json!({"promotionName": "Summer sale", "message": "Everything 20% off this week."})
        }
        "recommendations" => {
            json!({"products": [{"name": "Mug", "price": "12.99 USD"}, {"name": "Teapot"}]})
        }
        "low_stock" => {
            json!({"productId": "0190-product", "productName": "Mug", "available": 2, "threshold": 5})
        }
        _ => json!({}),
    };
    vars.extend(into_map(extra));
    vars
}

/// A template's name: what goes in URLs and events. Lowercase letters, digits, `_`; 1–64.
pub fn check_template_name(name: &str) -> Result<(), &'static str> {
    let mut chars = name.chars();
    let starts_well = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    if starts_well
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        Ok(())
    } else {
        Err("must be 1-64 characters: a lowercase letter, then lowercase letters, digits or _")
    }
}

pub const MAX_SUBJECT_SOURCE: usize = 1_000;
pub const MAX_BODY_SOURCE: usize = 100_000;

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env
}

/// The part of a template at fault, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateError {
    /// `subject` or `body`.
    pub part: &'static str,
    pub message: String,
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.part, self.message)
    }
}

fn describe(error: &minijinja::Error) -> String {
    let mut message = error.to_string();
    if let Some(detail) = error.detail()
        && !message.contains(detail)
    {
        message = format!("{message}: {detail}");
    }
    message
}

/// Checks that `subject` and `body` are templates; every fault, each naming its part.
pub fn check_template(subject: &str, body: &str) -> Vec<TemplateError> {
    let env = environment();
    let mut errors = Vec::new();
    for (part, source, max) in [
        ("subject", subject, MAX_SUBJECT_SOURCE),
        ("body", body, MAX_BODY_SOURCE),
    ] {
        if source.trim().is_empty() {
            errors.push(TemplateError {
                part,
                message: "must not be empty".into(),
            });
        } else if source.len() > max {
            errors.push(TemplateError {
                part,
                message: format!("must be at most {max} bytes"),
            });
        } else if let Err(e) = env.template_from_str(source) {
            errors.push(TemplateError {
                part,
                message: format!("is not a valid template: {}", describe(&e)),
            });
        }
    }
    errors
}

/// The variables a template uses (top-level names), sorted.
pub fn variables_of(subject: &str, body: &str) -> Vec<String> {
    let env = environment();
    let mut names = BTreeSet::new();
    for source in [subject, body] {
        if let Ok(template) = env.template_from_str(source) {
            names.extend(template.undeclared_variables(false));
        }
    }
    names.into_iter().collect()
}

/// A rendered message.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub subject: String,
    pub body: String,
}

/// Renders both parts with `variables` (strict: a missing variable is an error). The subject is
/// folded onto one line.
pub fn render(
    subject: &str,
    body: &str,
    variables: &Map<String, Value>,
) -> Result<Rendered, TemplateError> {
    let env = environment();
    let render = |part, source: &str| {
        env.render_str(source, variables)
            .map_err(|e| TemplateError {
                part,
                message: describe(&e),
            })
    };
    let subject = render("subject", subject)?;
    let body = render("body", body)?;
    Ok(Rendered {
        subject: one_line(&subject),
        body,
    })
}

/// A subject is one header line: line breaks become spaces.
pub fn one_line(text: &str) -> String {
    text.split(['\r', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

// --------------------------------------------------------------- recipients

/// A phone number as SMS needs it: optional `+`, then 7–15 digits; spaces, dashes, dots and
/// parentheses are dropped.
pub fn normalize_phone(text: &str) -> Option<String> {
    let trimmed = text.trim();
    let (plus, rest) = match trimmed.strip_prefix('+') {
        Some(rest) => ("+", rest),
        None => ("", trimmed),
    };
    let mut digits = String::new();
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return None,
        }
    }
    (7..=15)
        .contains(&digits.len())
        .then(|| format!("{plus}{digits}"))
}

/// Checks an admin's recipient for `channel`; returns it normalized.
pub fn check_recipient(channel: Channel, recipient: &str) -> Result<String, &'static str> {
    let recipient = recipient.trim();
    match channel {
        Channel::Email => {
            if emporium_platform::api::is_email(recipient)
                && recipient.parse::<lettre::Address>().is_ok()
            {
                Ok(recipient.to_owned())
            } else {
                Err("must be an email address for the email channel")
            }
        }
        Channel::Sms => normalize_phone(recipient)
            .ok_or("must be a phone number (optional +, 7-15 digits) for the sms channel"),
        Channel::Push => Uuid::parse_str(recipient)
            .map(|id| id.to_string())
            .map_err(|_| "must be a user id for the push channel"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use emporium_events::{LowStock, OrderConfirmed, OrderShipped, UserRegistered};

    fn contact(phone: Option<&str>, preferences: Preferences) -> Contact {
        Contact {
            user_id: Uuid::now_v7(),
            email: "ada@example.com".into(),
            name: "Ada".into(),
            phone: phone.map(str::to_owned),
            role: Role::Customer,
            preferences,
        }
    }

    #[test]
    fn every_shipped_template_compiles_and_renders_with_its_sample_variables() {
        for template in SHIPPED_TEMPLATES {
            assert!(
                check_template(template.subject, template.body).is_empty(),
                "{}",
                template.name
            );
            let rendered = render(
                template.subject,
                template.body,
                &sample_variables(template.name),
            )
            .unwrap_or_else(|e| panic!("{}: {e}", template.name));
            assert!(!rendered.subject.is_empty(), "{}", template.name);
            assert!(
                !rendered.body.contains("{{"),
                "{}: {}",
                template.name,
                rendered.body
            );
        }
        let names: Vec<&str> = SHIPPED_TEMPLATES.iter().map(|t| t.name).collect();
        assert_eq!(
            names,
            [
                "welcome",
                "order_confirmed",
                "order_cancelled",
                "order_shipped",
                "order_delivered",
                "promotion",
                "recommendations",
                "low_stock"
            ]
        );
    }

    #[test]
    fn a_missing_variable_is_an_error_not_an_empty_string() {
        let mut vars = sample_variables("order_shipped");
        vars.remove("trackingNumber");
        let shipped = SHIPPED_TEMPLATES[3];
        let error = render(shipped.subject, shipped.body, &vars).unwrap_err();
        assert_eq!(error.part, "body");
        assert!(error.message.contains("undefined"), "{}", error.message);
        // An opt-out keeps working under strict mode.
        let rendered = render(
            "Hi {{ nick | default('there') }}",
            "{% if x is defined %}x{% endif %}.",
            &Map::new(),
        )
        .unwrap();
        assert_eq!(rendered.subject, "Hi there");
        assert_eq!(rendered.body, ".");
    }

    #[test]
    fn the_rendered_order_confirmation_carries_the_formatted_total() {
        let event = Event::OrderConfirmed(OrderConfirmed {
            order_id: Uuid::now_v7(),
            user_id: Uuid::now_v7(),
            total: Money::new(123456, "EUR"),
        });
        let request = request_for(&event, None).unwrap();
        let planned = plan(&request, &contact(None, Preferences::default()));
        let t = SHIPPED_TEMPLATES[1];
        let rendered = render(t.subject, t.body, &planned[0].variables).unwrap();
        assert!(rendered.body.contains("1234.56 EUR"), "{}", rendered.body);
        assert!(rendered.body.starts_with("Hello Ada,"));
    }

    #[test]
    fn broken_templates_name_the_part() {
        let errors = check_template("Hi {{ name", "fine {{ x }}");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].part, "subject");
        let errors = check_template("ok", "{% for x in y %}");
        assert_eq!(errors[0].part, "body");
        assert_eq!(check_template(" ", "b")[0].message, "must not be empty");
    }

    #[test]
    fn variables_of_lists_what_a_template_needs() {
        let t = SHIPPED_TEMPLATES[6];
        assert_eq!(variables_of(t.subject, t.body), ["name", "products"]);
    }

    #[test]
    fn subjects_are_one_line() {
        let rendered = render("a\n{{ x }}\r\nb", "body", &into_map(json!({"x": "y"}))).unwrap();
        assert_eq!(rendered.subject, "a y b");
    }

    #[test]
    fn given_a_customer_who_turned_order_updates_off_when_the_order_ships_then_it_is_suppressed() {
        let event = Event::OrderShipped(OrderShipped {
            order_id: Uuid::now_v7(),
            user_id: Uuid::now_v7(),
            shipment_id: Uuid::now_v7(),
            tracking_number: "T1".into(),
        });
        let request = request_for(&event, None).unwrap();
        assert_eq!(request.priority, Priority::Critical);
        let off = Preferences {
            order_updates: false,
            ..Preferences::default()
        };
        let planned = plan(&request, &contact(None, off));
        assert_eq!(planned.len(), 1);
        assert!(!planned[0].allowed);
        let planned = plan(&request, &contact(None, Preferences::default()));
        assert!(planned[0].allowed);
    }

    #[test]
    fn given_a_phone_critical_notifications_also_go_by_sms_and_standard_ones_do_not() {
        let with_phone = contact(Some("+44 20 7946-0958"), Preferences::default());
        assert_eq!(
            channels_for(&with_phone, Priority::Critical),
            [
                (Channel::Email, "ada@example.com".to_owned()),
                (Channel::Sms, "+442079460958".to_owned())
            ]
        );
        assert_eq!(channels_for(&with_phone, Priority::Standard).len(), 1);
        let bad_phone = contact(Some("call me"), Preferences::default());
        assert_eq!(channels_for(&bad_phone, Priority::Critical).len(), 1);
    }

    #[test]
    fn welcome_is_standard_and_ungated_and_low_stock_goes_to_admins() {
        let user_id = Uuid::now_v7();
        let welcome = request_for(
            &Event::UserRegistered(UserRegistered {
                user_id,
                email: "a@b.co".into(),
                name: "A".into(),
                phone: None,
                role: Role::Customer,
                preferences: Preferences::default(),
            }),
            None,
        )
        .unwrap();
        assert_eq!(welcome.audience, Audience::User(user_id));
        assert_eq!(
            (welcome.template, welcome.priority, welcome.gate),
            ("welcome", Priority::Standard, None)
        );
        let product_id = Uuid::now_v7();
        let low = request_for(
            &Event::LowStock(LowStock {
                product_id,
                available: 1,
                threshold: 5,
            }),
            Some("Mug"),
        )
        .unwrap();
        assert_eq!(low.audience, Audience::Admins);
        assert_eq!(low.variables["productName"], "Mug");
        let unnamed = request_for(
            &Event::LowStock(LowStock {
                product_id,
                available: 1,
                threshold: 5,
            }),
            None,
        )
        .unwrap();
        assert_eq!(unnamed.variables["productName"], product_id.to_string());
    }

    #[test]
    fn a_launched_promotion_is_marketing_to_everyone_who_opted_in() {
        let event = Event::PromotionLaunched(emporium_events::PromotionLaunched {
            promotion_id: Uuid::now_v7(),
            name: "Spring sale".into(),
            message: "Every mug 20% off.".into(),
            product_ids: vec![],
            category: None,
            scheduled_for: chrono::Utc::now(),
        });
        let request = request_for(&event, None).unwrap();
        assert_eq!(request.audience, Audience::Everyone);
        assert_eq!(
            (request.template, request.priority, request.gate),
            ("promotion", Priority::Marketing, Some(Gate::Promotions))
        );
        let opted_in = plan(
            &request,
            &contact(Some("+15550100"), Preferences::default()),
        );
        assert_eq!(
            opted_in.len(),
            1,
            "email only: sms is for critical messages"
        );
        assert!(opted_in[0].allowed);
        let t = SHIPPED_TEMPLATES[5];
        let rendered = render(t.subject, t.body, &opted_in[0].variables).unwrap();
        assert_eq!(rendered.subject, "Spring sale");
        assert!(
            rendered.body.contains("Every mug 20% off."),
            "{}",
            rendered.body
        );
        let off = Preferences {
            promotions: false,
            ..Preferences::default()
        };
        assert!(!plan(&request, &contact(None, off))[0].allowed);
    }

    #[test]
    fn the_marketing_limit_allows_so_many_per_window() {
        let limit = MarketingLimit {
            limit: 2,
            window: std::time::Duration::from_secs(60),
        };
        assert!(limit.allows(0) && limit.allows(1));
        assert!(!limit.allows(2));
        assert_eq!(limit.window_start(100_000), 40_000);
        let none = MarketingLimit { limit: 0, ..limit };
        assert!(!none.allows(0));
        let forever = MarketingLimit {
            window: std::time::Duration::MAX,
            ..limit
        };
        assert_eq!(forever.window_start(0), -i64::MAX, "no overflow");
        assert_eq!(MarketingLimit::default().limit, 3);
    }

    #[test]
    fn issued_recommendations_are_a_standard_email_gated_on_the_preference_naming_known_products() {
        let user_id = Uuid::now_v7();
        let (mug, teapot, unknown) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let event = Event::RecommendationsIssued(emporium_events::RecommendationsIssued {
            user_id,
            product_ids: vec![mug, unknown, teapot],
        });
        let mut request = request_for(&event, None).unwrap();
        assert_eq!(request.audience, Audience::User(user_id));
        assert_eq!(
            (request.template, request.priority, request.gate),
            (
                "recommendations",
                Priority::Standard,
                Some(Gate::Recommendations)
            )
        );
        let names = BTreeMap::from([(mug, "Mug".to_owned()), (teapot, "Teapot".to_owned())]);
        assert!(name_products(&mut request, &names));
        let opted_in = contact(None, Preferences::default());
        let planned = plan(&request, &opted_in);
        assert_eq!(planned.len(), 1, "email only: it is not critical");
        assert!(planned[0].allowed);
        let t = SHIPPED_TEMPLATES[6];
        let rendered = render(t.subject, t.body, &planned[0].variables).unwrap();
        assert_eq!(rendered.subject, "Picked for you, Ada");
        assert!(
            rendered.body.contains("- Mug\n- Teapot\n"),
            "in the event's order, the unnamed one left out: {}",
            rendered.body
        );
        let opted_out = Preferences {
            recommendations: false,
            ..Preferences::default()
        };
        assert!(!plan(&request, &contact(None, opted_out))[0].allowed);

        let mut nameless = request_for(&event, None).unwrap();
        assert!(!name_products(&mut nameless, &BTreeMap::new()));
    }

    #[test]
    fn priorities_rank_critical_first_and_marketing_last() {
        let mut all = vec![Priority::Marketing, Priority::Standard, Priority::Critical];
        all.sort_by_key(|p| rank(*p));
        assert_eq!(
            all,
            [Priority::Critical, Priority::Standard, Priority::Marketing]
        );
    }

    #[test]
    fn money_uses_the_currency_decimals() {
        assert_eq!(format_money(&Money::new(1999, "USD")), "19.99 USD");
        assert_eq!(format_money(&Money::new(5, "USD")), "0.05 USD");
        assert_eq!(format_money(&Money::new(500, "JPY")), "500 JPY");
        assert_eq!(format_money(&Money::new(1500, "KWD")), "1.500 KWD");
        assert_eq!(format_money(&Money::new(-250, "EUR")), "-2.50 EUR");
    }

    #[test]
    fn recipients_are_checked_per_channel() {
        assert!(check_recipient(Channel::Email, "ada@example.com").is_ok());
        assert!(check_recipient(Channel::Email, "+4412345678").is_err());
        assert_eq!(
            check_recipient(Channel::Sms, "+1 (555) 010-9999").unwrap(),
            "+15550109999"
        );
        assert!(check_recipient(Channel::Sms, "ada@example.com").is_err());
        assert!(check_recipient(Channel::Sms, "123").is_err());
        let id = Uuid::now_v7().to_string();
        assert_eq!(check_recipient(Channel::Push, &id).unwrap(), id);
        assert!(check_recipient(Channel::Push, "ada@example.com").is_err());
    }

    #[test]
    fn template_names_are_checked() {
        assert!(check_template_name("order_confirmed").is_ok());
        assert!(check_template_name("x2").is_ok());
        for bad in ["", "Order", "9lives", "a-b", "a b", &"a".repeat(65)] {
            assert!(check_template_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn statuses_round_trip() {
        for status in [
            Status::Queued,
            Status::Sent,
            Status::Failed,
            Status::Suppressed,
        ] {
            assert_eq!(Status::parse(status.as_str()).unwrap(), status);
        }
        assert!(Status::parse("sent").is_err());
    }
}
