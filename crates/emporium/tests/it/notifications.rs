//! End-to-end tests of the notifications service through the gateway.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Platform, Reply, Session};

/// The caller's notifications (first page, newest first).
async fn mine(platform: &Platform, session: &Session) -> Vec<Value> {
    let reply = platform
        .get_as("/api/notifications/me?limit=100", &session.token)
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body["items"].as_array().cloned().unwrap_or_default()
}

/// Waits (up to 30 s) until the caller has a notification from `template` with `status`; returns it.
async fn wait_for_notification(
    platform: &Platform,
    session: &Session,
    template: &str,
    status: &str,
) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let all = mine(platform, session).await;
        if let Some(found) = all
            .iter()
            .find(|n| n["template"] == template && n["status"] == status)
        {
            return found.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {status} {template} notification; last seen: {all:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Waits (up to 30 s) for the order's shipment; returns it.
async fn wait_for_shipment(platform: &Platform, admin: &Session, order_id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let reply = platform
            .get_as(&format!("/api/shipments?orderId={order_id}"), &admin.token)
            .await;
        if reply.status == 200 && reply.body[0].is_object() {
            return reply.body[0].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no shipment for {order_id}: {reply:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The `.eml` files written so far, as text, with a quoted-printable body decoded (lettre picks
/// that encoding for lines longer than 76 characters).
fn mail_files(platform: &Platform) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(platform.data_dir.join("mail")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .map(|p| decode_mail(&std::fs::read_to_string(p).unwrap()))
        .collect()
}

fn decode_mail(raw: &str) -> String {
    let Some((headers, body)) = raw.split_once("\r\n\r\n") else {
        return raw.to_owned();
    };
    if !headers.contains("Content-Transfer-Encoding: quoted-printable") {
        return raw.to_owned();
    }
    let joined = body.replace("=\r\n", "");
    let bytes = joined.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'=', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    format!("{headers}\r\n\r\n{}", String::from_utf8_lossy(&decoded))
}

/// A request with a raw body and content type.
async fn raw(
    platform: &Platform,
    method: Method,
    path: &str,
    token: &str,
    content_type: Option<&str>,
    body: &str,
) -> Reply {
    let mut request = platform
        .http
        .request(method, platform.url(path))
        .bearer_auth(token)
        .body(body.to_owned());
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
    }
}

async fn put_as(platform: &Platform, path: &str, token: &str, body: Value) -> Reply {
    platform
        .call(Method::PUT, path, Some(token), Some(body))
        .await
}

#[track_caller]
fn assert_field(reply: &Reply, status: u16, field: &str) {
    assert_eq!(reply.status, status, "{reply:?}");
    assert!(
        reply.fields().iter().any(|f| f == field),
        "expected the problem to name `{field}`: {reply:?}"
    );
}

#[tokio::test]
async fn registering_sends_a_welcome_email_to_the_new_customer() {
    let platform = Platform::start_with(&[]).await;
    let ada = platform.register("ada@example.com").await;

    let welcome = wait_for_notification(&platform, &ada, "welcome", "SENT").await;
    assert_eq!(welcome["channel"], "email");
    assert_eq!(welcome["priority"], "standard");
    assert_eq!(welcome["subject"], "Welcome to Emporium, Test Customer!");
    assert!(welcome["sentAt"].is_string(), "{welcome}");
    assert!(welcome["createdAt"].is_string(), "{welcome}");
    assert!(welcome["readAt"].is_null(), "{welcome}");

    let mails = mail_files(&platform);
    let mail = mails
        .iter()
        .find(|m| m.contains("\r\nTo: ada@example.com\r\n"))
        .unwrap_or_else(|| panic!("no .eml for ada among {mails:?}"));
    assert!(
        mail.contains("Subject: Welcome to Emporium, Test Customer!"),
        "{mail}"
    );
    assert!(
        mail.contains(&format!(
            "Message-ID: <{}@",
            welcome["id"].as_str().unwrap()
        )),
        "{mail}"
    );
    assert!(mail.contains("Hello Test Customer,"), "{mail}");

    // Only the user's own notifications are listed.
    let bob = platform.register("bob@example.com").await;
    wait_for_notification(&platform, &bob, "welcome", "SENT").await;
    let bobs = mine(&platform, &bob).await;
    assert_eq!(bobs.len(), 1, "{bobs:?}");
    assert_ne!(bobs[0]["id"], welcome["id"]);
}

#[tokio::test]
async fn a_confirmed_order_notifies_its_customer_as_critical() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let product = platform.create_product(&admin, "Teapot", 2599, 5).await;
    let ada = platform.register("ada@example.com").await;
    let placed = platform
        .place_order(&ada, &[(product.as_str(), 1)], "tok_visa")
        .await;
    assert_eq!(placed.status, 202, "{placed:?}");
    let order_id = placed.body["id"].as_str().unwrap().to_owned();
    platform.wait_for_order(&ada, &order_id, "CONFIRMED").await;

    let confirmed = wait_for_notification(&platform, &ada, "order_confirmed", "SENT").await;
    assert_eq!(confirmed["priority"], "critical");
    assert_eq!(confirmed["channel"], "email");
    assert_eq!(
        confirmed["subject"],
        format!("Your order {order_id} is confirmed")
    );
    let mails = mail_files(&platform);
    assert!(
        mails
            .iter()
            .any(|m| m.contains(&order_id) && m.contains("25.99 USD")),
        "no confirmation mail with the order id and total: {mails:?}"
    );
}

#[tokio::test]
async fn shipping_delivery_and_cancellation_notify_the_customer() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let product = platform.create_product(&admin, "Kettle", 1500, 10).await;
    let ada = platform.register("ada@example.com").await;

    // One order shipped and delivered.
    let placed = platform
        .place_order(&ada, &[(product.as_str(), 1)], "tok_visa")
        .await;
    assert_eq!(placed.status, 202, "{placed:?}");
    let shipped_order = placed.body["id"].as_str().unwrap().to_owned();
    platform
        .wait_for_order(&ada, &shipped_order, "CONFIRMED")
        .await;
    let shipment = wait_for_shipment(&platform, &admin, &shipped_order).await;
    let shipment_id = shipment["id"].as_str().unwrap();
    let tracking = shipment["trackingNumber"].as_str().unwrap();
    let reply = platform
        .post_as(
            &format!("/api/shipments/{shipment_id}/dispatch"),
            Some(&admin.token),
            json!({}),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let shipped = wait_for_notification(&platform, &ada, "order_shipped", "SENT").await;
    assert_eq!(shipped["priority"], "critical");
    assert!(
        mail_files(&platform).iter().any(|m| m.contains(tracking)),
        "no shipping mail with the tracking number {tracking}"
    );
    platform
        .wait_for_order(&ada, &shipped_order, "SHIPPED")
        .await;
    let reply = platform
        .post_as(
            &format!("/api/shipments/{shipment_id}/deliver"),
            Some(&admin.token),
            json!({}),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let delivered = wait_for_notification(&platform, &ada, "order_delivered", "SENT").await;
    assert_eq!(
        delivered["subject"],
        format!("Your order {shipped_order} was delivered")
    );

    // Another cancelled by the customer.
    let placed = platform
        .place_order(&ada, &[(product.as_str(), 1)], "tok_visa")
        .await;
    let cancelled_order = placed.body["id"].as_str().unwrap().to_owned();
    platform
        .wait_for_order(&ada, &cancelled_order, "CONFIRMED")
        .await;
    let reply = platform
        .post_as(
            &format!("/api/orders/{cancelled_order}/cancel"),
            Some(&ada.token),
            json!({}),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let cancelled = wait_for_notification(&platform, &ada, "order_cancelled", "SENT").await;
    assert_eq!(
        cancelled["subject"],
        format!("Your order {cancelled_order} was cancelled")
    );
    assert!(
        mail_files(&platform)
            .iter()
            .any(|m| m.contains(&cancelled_order) && m.contains("you asked us to cancel it")),
        "no cancellation mail with the reason"
    );
    // Each event made exactly one notification.
    let all = mine(&platform, &ada).await;
    for template in [
        "welcome",
        "order_confirmed",
        "order_shipped",
        "order_delivered",
        "order_cancelled",
    ] {
        let expected = if template == "order_confirmed" { 2 } else { 1 };
        let count = all.iter().filter(|n| n["template"] == template).count();
        assert_eq!(count, expected, "{template}: {all:?}");
    }
}

#[tokio::test]
async fn templates_can_be_listed_edited_and_rendered() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;

    let list = platform
        .get_as("/api/templates?limit=100", &admin.token)
        .await;
    assert_eq!(list.status, 200, "{list:?}");
    let names: Vec<&str> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for shipped in [
        "welcome",
        "order_confirmed",
        "order_cancelled",
        "order_shipped",
        "order_delivered",
        "promotion",
        "recommendations",
        "low_stock",
    ] {
        assert!(names.contains(&shipped), "{shipped} missing from {names:?}");
    }
    let page = platform
        .get_as("/api/templates?limit=2", &admin.token)
        .await;
    assert_eq!(page.body["items"].as_array().unwrap().len(), 2);
    let cursor = page.body["nextCursor"].as_str().unwrap();
    let next = platform
        .get_as(
            &format!("/api/templates?limit=2&cursor={cursor}"),
            &admin.token,
        )
        .await;
    assert_eq!(next.status, 200);
    assert_ne!(next.body["items"][0]["name"], page.body["items"][0]["name"]);

    let shipped = platform
        .get_as("/api/templates/order_shipped", &admin.token)
        .await;
    assert_eq!(shipped.status, 200, "{shipped:?}");
    assert_eq!(shipped.body["shipped"], true);
    assert!(
        shipped.body["variables"]
            .as_array()
            .unwrap()
            .contains(&json!("trackingNumber")),
        "{shipped:?}"
    );

    let rendered = platform
        .post_as(
            "/api/templates/order_shipped/render",
            Some(&admin.token),
            json!({"variables": {"name": "Ada", "orderId": "o-1", "trackingNumber": "TRK9"}}),
        )
        .await;
    assert_eq!(rendered.status, 200, "{rendered:?}");
    assert_eq!(rendered.body["subject"], "Your order o-1 is on its way");
    assert!(rendered.body["body"].as_str().unwrap().contains("TRK9"));

    // Strict: a variable the template uses but the request lacks is an error, not "".
    let missing = platform
        .post_as(
            "/api/templates/order_shipped/render",
            Some(&admin.token),
            json!({"variables": {"name": "Ada", "orderId": "o-1"}}),
        )
        .await;
    assert_field(&missing, 422, "variables");
    assert_eq!(missing.code(), "TEMPLATE_RENDER_FAILED");

    // Edit the welcome template; the next registration uses it.
    let edited = put_as(
        &platform,
        "/api/templates/welcome",
        &admin.token,
        json!({"subject": "Hi {{ name | upper }}", "body": "Welcome aboard, {{ name }}.\n"}),
    )
    .await;
    assert_eq!(edited.status, 200, "{edited:?}");
    assert_eq!(edited.body["subject"], "Hi {{ name | upper }}");
    let read_back = platform
        .get_as("/api/templates/welcome", &admin.token)
        .await;
    assert_eq!(read_back.body["body"], "Welcome aboard, {{ name }}.\n");
    let ada = platform.register("ada@example.com").await;
    let welcome = wait_for_notification(&platform, &ada, "welcome", "SENT").await;
    assert_eq!(welcome["subject"], "Hi TEST CUSTOMER");

    // A new template is created (201) and can be rendered.
    let created = put_as(
        &platform,
        "/api/templates/maintenance",
        &admin.token,
        json!({"subject": "Maintenance on {{ day }}", "body": "We will be down on {{ day }}."}),
    )
    .await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.body["shipped"], false);
    let rendered = platform
        .post_as(
            "/api/templates/maintenance/render",
            Some(&admin.token),
            json!({"variables": {"day": "Sunday"}}),
        )
        .await;
    assert_eq!(rendered.body["subject"], "Maintenance on Sunday");

    // Templates that do not compile are refused, naming the part.
    let broken = put_as(
        &platform,
        "/api/templates/welcome",
        &admin.token,
        json!({"subject": "Hi {{ name", "body": "ok"}),
    )
    .await;
    assert_field(&broken, 400, "subject");
    assert_eq!(broken.code(), "VALIDATION_ERROR");
    let broken = put_as(
        &platform,
        "/api/templates/welcome",
        &admin.token,
        json!({"subject": "ok", "body": "{% for x in xs %}never closed"}),
    )
    .await;
    assert_field(&broken, 400, "body");
    // The refused edits left the template as it was.
    let unchanged = platform
        .get_as("/api/templates/welcome", &admin.token)
        .await;
    assert_eq!(unchanged.body["subject"], "Hi {{ name | upper }}");

    // Unknown templates.
    for path in ["/api/templates/nope", "/api/templates/Not-A-Name"] {
        let reply = platform.get_as(path, &admin.token).await;
        assert_eq!(reply.status, 404, "{path}: {reply:?}");
        assert_eq!(reply.code(), "NOT_FOUND");
    }
    let reply = platform
        .post_as(
            "/api/templates/nope/render",
            Some(&admin.token),
            json!({"variables": {}}),
        )
        .await;
    assert_eq!(reply.status, 404, "{reply:?}");
}

#[tokio::test]
async fn an_admin_can_send_messages_on_every_channel() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let ada = platform.register("ada@example.com").await;
    wait_for_notification(&platform, &ada, "welcome", "SENT").await;

    // A template to a known customer's address: it shows in their list.
    let sent = platform
        .post_as(
            "/api/notifications",
            Some(&admin.token),
            json!({"channel": "email", "recipient": "ada@example.com", "template": "promotion",
                   "variables": {"name": "Ada", "promotionName": "Spring sale", "message": "20% off"}}),
        )
        .await;
    assert_eq!(sent.status, 202, "{sent:?}");
    assert_eq!(sent.body["status"], "QUEUED");
    let id = sent.body["id"].as_str().unwrap().to_owned();
    let promotion = wait_for_notification(&platform, &ada, "promotion", "SENT").await;
    assert_eq!(promotion["id"], id.as_str());
    assert_eq!(promotion["subject"], "Spring sale");
    assert!(
        mail_files(&platform)
            .iter()
            .any(|m| m.contains("Subject: Spring sale") && m.contains("20% off")),
        "no promotion mail"
    );

    // A literal message to any address.
    let literal = platform
        .post_as(
            "/api/notifications",
            Some(&admin.token),
            json!({"channel": "email", "recipient": "someone@elsewhere.test",
                   "subject": "Hello there", "body": "Just a note.", "priority": "critical"}),
        )
        .await;
    assert_eq!(literal.status, 202, "{literal:?}");
    platform
        .wait_for("the literal mail", || async {
            mail_files(&platform)
                .iter()
                .any(|m| m.contains("To: someone@elsewhere.test") && m.contains("Just a note."))
        })
        .await;

    // SMS to a phone number, push to a user: the log sinks.
    let sms = platform
        .post_as(
            "/api/notifications",
            Some(&admin.token),
            json!({"channel": "sms", "recipient": "+44 7700 900123", "subject": "Code", "body": "Your code is 1234"}),
        )
        .await;
    assert_eq!(sms.status, 202, "{sms:?}");
    let push = platform
        .post_as(
            "/api/notifications",
            Some(&admin.token),
            json!({"channel": "push", "recipient": ada.user_id, "subject": "Ping", "body": "Pong"}),
        )
        .await;
    assert_eq!(push.status, 202, "{push:?}");
    let push_id = push.body["id"].clone();
    platform
        .wait_for("the push message to be sent", || async {
            mine(&platform, &ada).await.iter().any(|n| {
                n["id"] == push_id
                    && n["status"] == "SENT"
                    && n["channel"] == "push"
                    && n["template"].is_null()
            })
        })
        .await;
}

#[tokio::test]
async fn notifications_can_be_marked_read() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let ada = platform.register("ada@example.com").await;
    let bob = platform.register("bob@example.com").await;
    let welcome = wait_for_notification(&platform, &ada, "welcome", "SENT").await;
    let bobs_welcome = wait_for_notification(&platform, &bob, "welcome", "SENT").await;
    for subject in ["one", "two"] {
        let reply = platform
            .post_as(
                "/api/notifications",
                Some(&admin.token),
                json!({"channel": "email", "recipient": "ada@example.com", "subject": subject, "body": "b"}),
            )
            .await;
        assert_eq!(reply.status, 202, "{reply:?}");
    }
    platform
        .wait_for("three notifications for ada", || async {
            mine(&platform, &ada).await.len() == 3
        })
        .await;

    // Pagination, newest first.
    let first = platform
        .get_as("/api/notifications/me?limit=2", &ada.token)
        .await;
    assert_eq!(first.body["items"].as_array().unwrap().len(), 2);
    assert_eq!(first.body["items"][0]["subject"], "two");
    let cursor = first.body["nextCursor"].as_str().unwrap();
    let second = platform
        .get_as(
            &format!("/api/notifications/me?limit=2&cursor={cursor}"),
            &ada.token,
        )
        .await;
    assert_eq!(second.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(second.body["items"][0]["id"], welcome["id"]);
    assert!(second.body["nextCursor"].is_null());

    // By id; someone else's id is ignored.
    let read = platform
        .post_as(
            "/api/notifications/me/read",
            Some(&ada.token),
            json!({"ids": [welcome["id"], bobs_welcome["id"]]}),
        )
        .await;
    assert_eq!(read.status, 200, "{read:?}");
    assert_eq!(read.body["marked"], 1);
    let again = platform
        .post_as(
            "/api/notifications/me/read",
            Some(&ada.token),
            json!({"ids": [welcome["id"]]}),
        )
        .await;
    assert_eq!(again.body["marked"], 0, "already read");
    assert!(
        mine(&platform, &bob).await[0]["readAt"].is_null(),
        "bob's stays unread"
    );
    let listed = mine(&platform, &ada).await;
    let read_welcome = listed.iter().find(|n| n["id"] == welcome["id"]).unwrap();
    assert!(read_welcome["readAt"].is_string(), "{read_welcome}");

    // Without ids (and even without a body): all of mine.
    let all = platform
        .call(
            Method::POST,
            "/api/notifications/me/read",
            Some(&ada.token),
            None,
        )
        .await;
    assert_eq!(all.status, 200, "{all:?}");
    assert_eq!(all.body["marked"], 2);
    let all = platform
        .post_as("/api/notifications/me/read", Some(&bob.token), json!({}))
        .await;
    assert_eq!(all.body["marked"], 1);
    assert!(
        mine(&platform, &ada)
            .await
            .iter()
            .all(|n| n["readAt"].is_string())
    );
}

#[tokio::test]
async fn notification_endpoints_need_the_right_caller() {
    let platform = Platform::start_with(&[]).await;
    let customer = platform.register("ada@example.com").await;
    let send =
        json!({"channel": "email", "recipient": "x@example.com", "subject": "s", "body": "b"});
    let template = json!({"subject": "s", "body": "b"});
    let render = json!({"variables": {"name": "Ada", "email": "ada@example.com"}});
    // Reading and previewing templates is for any signed-in user (CONTRACT §2); changing them
    // and sending messages is for admins.
    let cases: Vec<(Method, &str, Option<Value>, bool)> = vec![
        (Method::GET, "/api/notifications/me", None, false),
        (
            Method::POST,
            "/api/notifications/me/read",
            Some(json!({})),
            false,
        ),
        (Method::POST, "/api/notifications", Some(send), true),
        (Method::GET, "/api/templates", None, false),
        (Method::GET, "/api/templates/welcome", None, false),
        (Method::PUT, "/api/templates/welcome", Some(template), true),
        (
            Method::POST,
            "/api/templates/welcome/render",
            Some(render),
            false,
        ),
    ];
    for (method, path, body, admin_only) in cases {
        let anonymous = platform
            .call(method.clone(), path, None, body.clone())
            .await;
        assert_eq!(anonymous.status, 401, "{method} {path}: {anonymous:?}");
        assert_eq!(anonymous.code(), "UNAUTHENTICATED");
        let bad_token = platform
            .call(method.clone(), path, Some("not-a-token"), body.clone())
            .await;
        assert_eq!(bad_token.status, 401, "{method} {path}: {bad_token:?}");
        if admin_only {
            let reply = platform
                .call(method.clone(), path, Some(&customer.token), body)
                .await;
            assert_eq!(reply.status, 403, "{method} {path}: {reply:?}");
            assert_eq!(reply.code(), "FORBIDDEN");
        } else {
            let reply = platform
                .call(method.clone(), path, Some(&customer.token), body)
                .await;
            assert_eq!(reply.status, 200, "{method} {path}: {reply:?}");
        }
    }
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_field() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let token = admin.token.as_str();
    let send = |body: Value| platform.post_as("/api/notifications", Some(token), body);

    // POST /api/notifications
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!({"recipient": "a@b.co", "subject": "s", "body": "b"}),
            400,
            "channel",
        ),
        (
            json!({"channel": "fax", "recipient": "a@b.co", "subject": "s", "body": "b"}),
            400,
            "channel",
        ),
        (
            json!({"channel": "email", "subject": "s", "body": "b"}),
            400,
            "recipient",
        ),
        (
            json!({"channel": "email", "recipient": 42, "subject": "s", "body": "b"}),
            400,
            "recipient",
        ),
        (
            json!({"channel": "email", "recipient": "not-an-email", "subject": "s", "body": "b"}),
            400,
            "recipient",
        ),
        (
            json!({"channel": "sms", "recipient": "a@b.co", "subject": "s", "body": "b"}),
            400,
            "recipient",
        ),
        (
            json!({"channel": "sms", "recipient": "12", "subject": "s", "body": "b"}),
            400,
            "recipient",
        ),
        (
            json!({"channel": "push", "recipient": "a@b.co", "subject": "s", "body": "b"}),
            400,
            "recipient",
        ),
        (
            json!({"channel": "push", "recipient": "0190a1b2-0000-7000-8000-000000000000", "subject": "s", "body": "b"}),
            422,
            "recipient",
        ),
        (
            json!({"channel": "email", "recipient": "a@b.co"}),
            400,
            "template",
        ),
        (
            json!({"channel": "email", "recipient": "a@b.co", "template": "welcome", "subject": "s", "body": "b"}),
            400,
            "template",
        ),
        (
            json!({"channel": "email", "recipient": "a@b.co", "subject": "s"}),
            400,
            "body",
        ),
        (
            json!({"channel": "email", "recipient": "a@b.co", "subject": "", "body": "b"}),
            400,
            "subject",
        ),
        (
            json!({"channel": "email", "recipient": "a@b.co", "template": "no_such_template", "variables": {}}),
            422,
            "template",
        ),
        (
            json!({"channel": "email", "recipient": "a@b.co", "template": "Bad Name"}),
            400,
            "template",
        ),
        (
            json!({"channel": "email", "recipient": "a@b.co", "template": "welcome", "variables": {}}),
            422,
            "variables",
        ),
        (
            json!({"channel": "email", "recipient": "a@b.co", "template": "welcome", "variables": [1]}),
            400,
            "variables",
        ),
        (
            json!({"channel": "email", "recipient": "a@b.co", "subject": "s", "body": "b", "priority": "urgent"}),
            400,
            "priority",
        ),
    ];
    for (body, status, field) in cases {
        let reply = send(body.clone()).await;
        assert_field(&reply, status, field);
        if status == 400 {
            assert_eq!(reply.code(), "VALIDATION_ERROR", "{body}");
        }
    }
    let reply = send(
        json!({"channel": "email", "recipient": "a@b.co", "template": "nope_x", "variables": {}}),
    )
    .await;
    assert_eq!(reply.code(), "UNKNOWN_TEMPLATE");
    let reply = send(
        json!({"channel": "email", "recipient": "a@b.co", "template": "welcome", "variables": {}}),
    )
    .await;
    assert_eq!(reply.code(), "TEMPLATE_RENDER_FAILED");

    // Malformed JSON and wrong content types, on every endpoint with a body.
    for (method, path) in [
        (Method::POST, "/api/notifications"),
        (Method::POST, "/api/notifications/me/read"),
        (Method::PUT, "/api/templates/welcome"),
        (Method::POST, "/api/templates/welcome/render"),
    ] {
        let reply = raw(
            &platform,
            method.clone(),
            path,
            token,
            Some("application/json"),
            "{\"a\": ",
        )
        .await;
        assert_field(&reply, 400, "body");
        let reply = raw(
            &platform,
            method.clone(),
            path,
            token,
            Some("text/plain"),
            "{}",
        )
        .await;
        assert_eq!(reply.status, 415, "{method} {path}: {reply:?}");
        assert_eq!(reply.code(), "UNSUPPORTED_MEDIA_TYPE");
    }
    let reply = raw(
        &platform,
        Method::POST,
        "/api/notifications/me/read",
        token,
        None,
        "{\"ids\":[]}",
    )
    .await;
    assert_eq!(
        reply.status, 415,
        "a body needs its content type: {reply:?}"
    );

    // PUT /api/templates/{name}
    let put = |path: &'static str, body: Value| put_as(&platform, path, token, body);
    assert_field(
        &put("/api/templates/welcome", json!({"subject": "s"})).await,
        400,
        "body",
    );
    assert_field(
        &put("/api/templates/welcome", json!({"subject": 1, "body": "b"})).await,
        400,
        "subject",
    );
    assert_field(
        &put(
            "/api/templates/welcome",
            json!({"subject": "s", "body": "{{ x }"}),
        )
        .await,
        400,
        "body",
    );
    assert_field(
        &put(
            "/api/templates/welcome",
            json!({"subject": " ", "body": "b"}),
        )
        .await,
        400,
        "subject",
    );
    assert_field(
        &put(
            "/api/templates/Bad-Name",
            json!({"subject": "s", "body": "b"}),
        )
        .await,
        400,
        "name",
    );

    // POST /api/templates/{name}/render
    let reply = platform
        .post_as(
            "/api/templates/welcome/render",
            Some(token),
            json!({"variables": [1, 2]}),
        )
        .await;
    assert_field(&reply, 400, "variables");

    // Lists
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=x", "limit"),
        ("cursor=zz", "cursor"),
    ] {
        for path in ["/api/notifications/me", "/api/templates"] {
            let reply = platform.get_as(&format!("{path}?{query}"), token).await;
            assert_field(&reply, 400, field);
        }
    }

    // POST /api/notifications/me/read
    let read = |body: Value| platform.post_as("/api/notifications/me/read", Some(token), body);
    assert_field(&read(json!({"ids": "all"})).await, 400, "ids");
    assert_field(&read(json!({"ids": ["not-an-id"]})).await, 400, "ids[0]");
    assert_field(&read(json!({"ids": [1]})).await, 400, "ids[0]");
    let reply = read(json!({"ids": ["0190a1b2-0000-7000-8000-000000000000"]})).await;
    assert_eq!(reply.status, 200, "an unknown id marks nothing: {reply:?}");
    assert_eq!(reply.body["marked"], 0);
}
