//! End-to-end tests of the users service through the gateway.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{ADMIN_EMAIL, ADMIN_PASSWORD, Platform, Reply, Session};

const PASSWORD: &str = "correct-horse-battery";

/// Sends a body as-is with the given content type.
async fn raw(
    platform: &Platform,
    method: Method,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: &str,
) -> Reply {
    let mut request = platform
        .http
        .request(method, platform.url(path))
        .header("content-type", content_type)
        .body(body.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
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

/// Fails if a reply carries anything that looks like a password or its hash.
fn assert_no_secrets(reply: &Reply) {
    let text = reply.body.to_string();
    for secret in ["$argon2", "password", "Hash", PASSWORD, ADMIN_PASSWORD] {
        assert!(!text.contains(secret), "{secret} leaked in {text}");
    }
}

async fn login(platform: &Platform, email: &str, password: &str) -> Reply {
    platform
        .post_as(
            "/api/auth/login",
            None,
            json!({"email": email, "password": password}),
        )
        .await
}

async fn patch_me(platform: &Platform, token: &str, body: Value) -> Reply {
    platform
        .call(Method::PATCH, "/api/users/me", Some(token), Some(body))
        .await
}

/// The users service's events about `aggregate`, once at least `count` are in the log.
async fn events_of(
    platform: &Platform,
    admin: &Session,
    aggregate: &str,
    count: usize,
) -> Vec<Value> {
    platform
        .poll(&format!("{count} events of {aggregate}"), || async {
            let reply = platform
                .get_as(
                    &format!("/api/admin/events?aggregateId={aggregate}"),
                    &admin.token,
                )
                .await;
            let events: Vec<Value> = reply
                .body
                .as_array()?
                .iter()
                .filter(|e| e["source"] == "users")
                .cloned()
                .collect();
            (events.len() >= count).then_some(events)
        })
        .await
}

#[tokio::test]
async fn registering_logging_in_and_refreshing_give_working_tokens() {
    let platform = Platform::start_with(&[]).await;
    let registered = platform
        .post_as(
            "/api/auth/register",
            None,
            json!({"email": "Ada@Example.com", "password": PASSWORD, "name": "  Ada Lovelace "}),
        )
        .await;
    assert_eq!(registered.status, 201, "{registered:?}");
    assert_no_secrets(&registered);
    let user = &registered.body["user"];
    assert_eq!(user["email"], "Ada@Example.com");
    assert_eq!(user["name"], "Ada Lovelace");
    assert_eq!(user["role"], "customer");
    assert_eq!(user["phone"], Value::Null);
    assert_eq!(
        user["preferences"],
        json!({"orderUpdates": true, "promotions": true, "recommendations": true})
    );
    assert!(user["createdAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(registered.body["tokenType"], "Bearer");
    assert!(registered.body["expiresIn"].as_i64().unwrap() > 0);
    let user_id = user["id"].as_str().unwrap();

    let me = platform
        .get_as(
            "/api/users/me",
            registered.body["accessToken"].as_str().unwrap(),
        )
        .await;
    assert_eq!((me.status, &me.body), (200, user));

    // The address is one account in any case.
    let logged_in = login(&platform, "ada@EXAMPLE.com", PASSWORD).await;
    assert_eq!(logged_in.status, 200, "{logged_in:?}");
    assert_no_secrets(&logged_in);
    assert_eq!(logged_in.body["user"]["id"], user_id);
    assert_eq!(logged_in.body["tokenType"], "Bearer");
    let first_refresh = logged_in.body["refreshToken"].as_str().unwrap().to_owned();

    let refreshed = platform
        .post_as(
            "/api/auth/refresh",
            None,
            json!({"refreshToken": first_refresh}),
        )
        .await;
    assert_eq!(refreshed.status, 200, "{refreshed:?}");
    assert_no_secrets(&refreshed);
    let second_refresh = refreshed.body["refreshToken"].as_str().unwrap().to_owned();
    assert_ne!(second_refresh, first_refresh);
    let me = platform
        .get_as(
            "/api/users/me",
            refreshed.body["accessToken"].as_str().unwrap(),
        )
        .await;
    assert_eq!(me.body["id"], user_id);

    // A refresh token works once; its reuse also ends the tokens that came from it.
    let reused = platform
        .post_as(
            "/api/auth/refresh",
            None,
            json!({"refreshToken": first_refresh}),
        )
        .await;
    assert_eq!((reused.status, reused.code()), (401, "UNAUTHENTICATED"));
    let after_reuse = platform
        .post_as(
            "/api/auth/refresh",
            None,
            json!({"refreshToken": second_refresh}),
        )
        .await;
    assert_eq!(after_reuse.status, 401);

    let admin = platform.admin().await;
    let events = events_of(&platform, &admin, user_id, 1).await;
    assert_eq!(events[0]["eventType"], "UserRegistered");
    assert_eq!(events[0]["payload"]["email"], "Ada@Example.com");
    assert_eq!(events[0]["payload"]["role"], "customer");
    assert_eq!(events[0]["payload"]["preferences"]["promotions"], true);
}

#[tokio::test]
async fn a_profile_patch_merges_preferences_and_emits_user_updated() {
    let platform = Platform::start_with(&[]).await;
    let ada = platform.register("ada@example.com").await;
    let patched = patch_me(
        &platform,
        &ada.token,
        json!({"name": "Countess Lovelace", "phone": "+44 20 7946 0000", "preferences": {"promotions": false}}),
    )
    .await;
    assert_eq!(patched.status, 200, "{patched:?}");
    assert_no_secrets(&patched);
    assert_eq!(patched.body["name"], "Countess Lovelace");
    assert_eq!(patched.body["phone"], "+44 20 7946 0000");
    assert_eq!(
        patched.body["preferences"],
        json!({"orderUpdates": true, "promotions": false, "recommendations": true})
    );

    // Another partial change keeps what the first one set.
    let again = patch_me(
        &platform,
        &ada.token,
        json!({"phone": null, "preferences": {"recommendations": false}}),
    )
    .await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.body["name"], "Countess Lovelace");
    assert_eq!(again.body["phone"], Value::Null);
    assert_eq!(
        again.body["preferences"],
        json!({"orderUpdates": true, "promotions": false, "recommendations": false})
    );
    let me = platform.get_as("/api/users/me", &ada.token).await;
    assert_eq!(me.body, again.body);

    let admin = platform.admin().await;
    let events = events_of(&platform, &admin, &ada.user_id, 3).await;
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["UserRegistered", "UserUpdated", "UserUpdated"]);
    assert_eq!(events[1]["payload"]["phone"], "+44 20 7946 0000");
    assert_eq!(events[2]["payload"]["phone"], Value::Null);
    assert_eq!(
        events[2]["payload"]["preferences"]["recommendations"],
        false
    );
    assert_eq!(events[2]["payload"]["email"], "ada@example.com");
}

#[tokio::test]
async fn an_email_is_taken_in_any_case() {
    let platform = Platform::start_with(&[]).await;
    platform.register("grace@example.com").await;
    for email in ["grace@example.com", "GRACE@Example.COM", ADMIN_EMAIL] {
        let again = platform
            .post_as(
                "/api/auth/register",
                None,
                json!({"email": email, "password": PASSWORD, "name": "Grace"}),
            )
            .await;
        assert_eq!(
            (again.status, again.code()),
            (409, "EMAIL_TAKEN"),
            "{email}"
        );
    }
}

#[tokio::test]
async fn registration_rejects_bad_input_naming_the_field() {
    let platform = Platform::start_with(&[]).await;
    let cases = [
        (
            json!({"email": "not-an-email", "password": PASSWORD, "name": "Ada"}),
            vec!["email"],
        ),
        (
            json!({"email": "a@example.com", "password": "short", "name": "Ada"}),
            vec!["password"],
        ),
        (
            json!({"email": "a@example.com", "password": PASSWORD, "name": "  "}),
            vec!["name"],
        ),
        (
            json!({"email": "a@example.com", "password": PASSWORD, "name": "x".repeat(101)}),
            vec!["name"],
        ),
        (
            json!({"email": "bad", "password": "1234567", "name": ""}),
            vec!["email", "password", "name"],
        ),
        (json!({"password": PASSWORD, "name": "Ada"}), vec!["email"]),
        (
            json!({"email": "a@example.com", "name": "Ada"}),
            vec!["password"],
        ),
        (
            json!({"email": "a@example.com", "password": PASSWORD}),
            vec!["name"],
        ),
        (
            json!({"email": 7, "password": PASSWORD, "name": "Ada"}),
            vec!["email"],
        ),
        (
            json!({"email": "a@example.com", "password": PASSWORD, "name": null}),
            vec!["name"],
        ),
    ];
    for (body, fields) in cases {
        let reply = platform
            .post_as("/api/auth/register", None, body.clone())
            .await;
        assert_eq!(reply.status, 400, "{body}: {reply:?}");
        assert_eq!(reply.code(), "VALIDATION_ERROR");
        assert_eq!(reply.fields(), fields, "{body}");
    }
    let malformed = raw(
        &platform,
        Method::POST,
        "/api/auth/register",
        None,
        "application/json",
        "{\"email\":",
    )
    .await;
    assert_eq!(
        (malformed.status, malformed.fields()),
        (400, vec!["body".to_owned()])
    );
    let not_object = raw(
        &platform,
        Method::POST,
        "/api/auth/register",
        None,
        "application/json",
        "[1]",
    )
    .await;
    assert_eq!(
        (not_object.status, not_object.fields()),
        (400, vec!["body".to_owned()])
    );
    let form = raw(
        &platform,
        Method::POST,
        "/api/auth/register",
        None,
        "text/plain",
        "email=a@example.com",
    )
    .await;
    assert_eq!((form.status, form.code()), (415, "UNSUPPORTED_MEDIA_TYPE"));
    // Nothing was created by any of them.
    assert_eq!(
        login(&platform, "a@example.com", PASSWORD).await.status,
        401
    );
}

#[tokio::test]
async fn login_and_refresh_reject_bad_input() {
    let platform = Platform::start_with(&[]).await;
    let missing = platform
        .post_as("/api/auth/login", None, json!({"email": "a@example.com"}))
        .await;
    assert_eq!(
        (missing.status, missing.fields()),
        (400, vec!["password".to_owned()])
    );
    let wrong_type = platform
        .post_as(
            "/api/auth/login",
            None,
            json!({"email": "a@example.com", "password": 12345678}),
        )
        .await;
    assert_eq!(
        (wrong_type.status, wrong_type.fields()),
        (400, vec!["password".to_owned()])
    );
    let form = raw(
        &platform,
        Method::POST,
        "/api/auth/login",
        None,
        "text/plain",
        "x",
    )
    .await;
    assert_eq!(form.status, 415);

    let no_token = platform.post_as("/api/auth/refresh", None, json!({})).await;
    assert_eq!(
        (no_token.status, no_token.fields()),
        (400, vec!["refreshToken".to_owned()])
    );
    let uuid = uuid::Uuid::now_v7();
    for garbage in [
        "nonsense".to_owned(),
        format!("{uuid}.{}", "ab".repeat(32)),
        String::new(),
    ] {
        let reply = platform
            .post_as("/api/auth/refresh", None, json!({"refreshToken": garbage}))
            .await;
        assert_eq!(
            (reply.status, reply.code()),
            (401, "UNAUTHENTICATED"),
            "{garbage}"
        );
    }
    // A real token's id with a forged secret is refused too.
    platform.register("ada@example.com").await;
    let real = login(&platform, "ada@example.com", PASSWORD).await.body["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let (id, _) = real.split_once('.').unwrap();
    let forged = platform
        .post_as(
            "/api/auth/refresh",
            None,
            json!({"refreshToken": format!("{id}.{}", "0".repeat(64))}),
        )
        .await;
    assert_eq!(forged.status, 401);
    let genuine = platform
        .post_as("/api/auth/refresh", None, json!({"refreshToken": real}))
        .await;
    assert_eq!(
        genuine.status, 200,
        "a forgery does not spend the real token"
    );
}

#[tokio::test]
async fn unknown_email_and_wrong_password_get_the_same_401() {
    let platform = Platform::start_with(&[]).await;
    platform.register("known@example.com").await;
    let wrong_password = login(&platform, "known@example.com", "not-the-password").await;
    let unknown_email = login(&platform, "nobody@example.com", "not-the-password").await;
    let not_an_email = login(&platform, "not-an-email", "not-the-password").await;
    for reply in [&wrong_password, &unknown_email, &not_an_email] {
        assert_eq!((reply.status, reply.code()), (401, "INVALID_CREDENTIALS"));
        assert!(reply.headers.get("retry-after").is_none());
    }
    assert_eq!(wrong_password.body["detail"], unknown_email.body["detail"]);
    assert_eq!(wrong_password.body["detail"], not_an_email.body["detail"]);
    assert_eq!(wrong_password.body["title"], unknown_email.body["title"]);
    assert_eq!(wrong_password.body["type"], unknown_email.body["type"]);
}

#[tokio::test]
async fn repeated_login_failures_are_rate_limited_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("EMPORIUM_ADMIN_EMAIL", ADMIN_EMAIL),
        ("EMPORIUM_ADMIN_PASSWORD", ADMIN_PASSWORD),
    ];
    let platform = Platform::start_in(dir.path(), &env).await;
    platform.register("target@example.com").await;
    for attempt in 1..=5 {
        let reply = login(&platform, "target@example.com", "guess-guess").await;
        assert_eq!(reply.status, 401, "attempt {attempt}");
    }
    // Now even the right password is refused, with a wait of up to the 15-minute window.
    let limited = login(&platform, "TARGET@example.com", PASSWORD).await;
    assert_eq!((limited.status, limited.code()), (429, "RATE_LIMITED"));
    let wait: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=15 * 60).contains(&wait), "{wait}");
    // Guessing accounts that do not exist is limited the same way.
    for _ in 1..=5 {
        assert_eq!(
            login(&platform, "ghost@example.com", "guess-guess")
                .await
                .status,
            401
        );
    }
    assert_eq!(
        login(&platform, "ghost@example.com", "guess-guess")
            .await
            .status,
        429
    );
    // Other addresses are not affected.
    assert_eq!(
        login(&platform, ADMIN_EMAIL, ADMIN_PASSWORD).await.status,
        200
    );

    assert!(platform.terminate().await.success());
    let platform = Platform::start_in(dir.path(), &env).await;
    let still = login(&platform, "target@example.com", PASSWORD).await;
    assert_eq!((still.status, still.code()), (429, "RATE_LIMITED"));
    assert!(still.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn parallel_guesses_cannot_outrun_the_login_rate_limit() {
    let platform = Platform::start_with(&[]).await;
    platform.register("target@example.com").await;
    // All at once: each attempt is counted before its password is checked, so no more than the
    // limit of five is ever checked, however many arrive together.
    let mut attempts = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let request = platform
            .http
            .post(platform.url("/api/auth/login"))
            .json(&json!({"email": "target@example.com", "password": "guess-guess"}));
        attempts.spawn(async move { request.send().await.unwrap().status().as_u16() });
    }
    let mut statuses = attempts.join_all().await;
    statuses.sort_unstable();
    assert_eq!(statuses, [[401; 5].as_slice(), &[429; 7]].concat());
    let limited = login(&platform, "target@example.com", PASSWORD).await;
    assert_eq!((limited.status, limited.code()), (429, "RATE_LIMITED"));
}

#[tokio::test]
async fn control_characters_in_account_fields_are_refused_naming_the_field() {
    let platform = Platform::start_with(&[]).await;
    for (body, field) in [
        (
            json!({"email": "a@example.com", "password": PASSWORD, "name": "Ada\u{0}"}),
            "name",
        ),
        (
            json!({"email": "a@example.com", "password": PASSWORD, "name": "Ada\nLovelace"}),
            "name",
        ),
        (
            json!({"email": "a@example.com", "password": PASSWORD, "name": "\u{1b}[31mAda"}),
            "name",
        ),
        (
            json!({"email": "a\u{0}@example.com", "password": PASSWORD, "name": "Ada"}),
            "email",
        ),
    ] {
        let reply = platform
            .post_as("/api/auth/register", None, body.clone())
            .await;
        assert_eq!(reply.status, 400, "{body}: {reply:?}");
        assert_eq!(reply.fields(), [field], "{body}");
    }
    // An address no account can have is a failed login, not an error.
    let reply = login(&platform, "a\u{0}@example.com", PASSWORD).await;
    assert_eq!((reply.status, reply.code()), (401, "INVALID_CREDENTIALS"));

    let ada = platform.register("ada@example.com").await;
    for (body, field) in [
        (json!({"name": "Ada\u{0}"}), "name"),
        (json!({"name": "Ada\u{7f}"}), "name"),
        (json!({"name": "Ada\u{85}Lovelace"}), "name"),
        (json!({"phone": "+44 20 7946 0000\u{0}"}), "phone"),
    ] {
        let reply = patch_me(&platform, &ada.token, body.clone()).await;
        assert_eq!(reply.status, 400, "{body}: {reply:?}");
        assert_eq!(reply.fields(), [field], "{body}");
    }
    // Surrounding whitespace is trimmed, not refused.
    let reply = patch_me(&platform, &ada.token, json!({"name": "\tAda\n"})).await;
    assert_eq!((reply.status, &reply.body["name"]), (200, &json!("Ada")));
}

#[tokio::test]
async fn a_successful_login_resets_the_failure_count() {
    let platform = Platform::start_with(&[]).await;
    platform.register("typo@example.com").await;
    for _ in 1..=4 {
        assert_eq!(
            login(&platform, "typo@example.com", "mistyped!")
                .await
                .status,
            401
        );
    }
    assert_eq!(
        login(&platform, "typo@example.com", PASSWORD).await.status,
        200
    );
    for _ in 1..=4 {
        assert_eq!(
            login(&platform, "typo@example.com", "mistyped!")
                .await
                .status,
            401
        );
    }
    assert_eq!(
        login(&platform, "typo@example.com", PASSWORD).await.status,
        200
    );
}

#[tokio::test]
async fn only_admins_list_users_and_pages_neither_repeat_nor_skip() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let mut expected = vec![admin.user_id.clone()];
    for n in 0..4 {
        expected.push(
            platform
                .register(&format!("user{n}@example.com"))
                .await
                .user_id,
        );
    }
    let mut seen = Vec::new();
    let mut path = "/api/users?limit=2".to_owned();
    loop {
        let page = platform.get_as(&path, &admin.token).await;
        assert_eq!(page.status, 200, "{page:?}");
        assert_no_secrets(&page);
        let items = page.body["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|u| u["id"].as_str().unwrap().to_owned()));
        match page.body["nextCursor"].as_str() {
            Some(cursor) => path = format!("/api/users?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, expected, "every user once, in creation order");

    let customer = platform.register("nosy@example.com").await;
    let forbidden = platform.get_as("/api/users", &customer.token).await;
    assert_eq!((forbidden.status, forbidden.code()), (403, "FORBIDDEN"));
    let anonymous = platform.call(Method::GET, "/api/users", None, None).await;
    assert_eq!(
        (anonymous.status, anonymous.code()),
        (401, "UNAUTHENTICATED")
    );
    let bad_token = platform.get_as("/api/users/me", "not-a-jwt").await;
    assert_eq!(bad_token.status, 401);
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=x", "limit"),
        ("cursor=zz", "cursor"),
    ] {
        let reply = platform
            .get_as(&format!("/api/users?{query}"), &admin.token)
            .await;
        assert_eq!(
            (reply.status, reply.fields()),
            (400, vec![field.to_owned()]),
            "{query}"
        );
    }
}

#[tokio::test]
async fn another_users_account_is_not_found() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let ada = platform.register("ada@example.com").await;
    let bob = platform.register("bob@example.com").await;

    let own = platform
        .get_as(&format!("/api/users/{}", ada.user_id), &ada.token)
        .await;
    assert_eq!(
        (own.status, own.body["email"].as_str()),
        (200, Some("ada@example.com"))
    );
    assert_no_secrets(&own);
    let other = platform
        .get_as(&format!("/api/users/{}", bob.user_id), &ada.token)
        .await;
    assert_eq!((other.status, other.code()), (404, "NOT_FOUND"));
    let as_admin = platform
        .get_as(&format!("/api/users/{}", bob.user_id), &admin.token)
        .await;
    assert_eq!(
        (as_admin.status, as_admin.body["email"].as_str()),
        (200, Some("bob@example.com"))
    );
    assert_no_secrets(&as_admin);
    let unknown = platform
        .get_as(
            &format!("/api/users/{}", uuid::Uuid::now_v7()),
            &admin.token,
        )
        .await;
    assert_eq!(unknown.status, 404);
    let not_an_id = platform.get_as("/api/users/not-an-id", &admin.token).await;
    assert_eq!(not_an_id.status, 404);
    let anonymous = platform
        .call(
            Method::GET,
            &format!("/api/users/{}", ada.user_id),
            None,
            None,
        )
        .await;
    assert_eq!(anonymous.status, 401);
}

#[tokio::test]
async fn a_profile_patch_rejects_bad_input_naming_the_field() {
    let platform = Platform::start_with(&[]).await;
    let ada = platform.register("ada@example.com").await;
    let cases = [
        (json!({"name": null}), vec!["name"]),
        (json!({"name": ""}), vec!["name"]),
        (json!({"name": "x".repeat(101)}), vec!["name"]),
        (json!({"name": 5}), vec!["name"]),
        (json!({"phone": "call me maybe"}), vec!["phone"]),
        (json!({"phone": 123456}), vec!["phone"]),
        (json!({"preferences": null}), vec!["preferences"]),
        (
            json!({"preferences": {"promotions": "no"}}),
            vec!["preferences.promotions"],
        ),
        (json!({"preferences": true}), vec!["preferences"]),
        (json!({"name": "", "phone": "x"}), vec!["name", "phone"]),
    ];
    for (body, fields) in cases {
        let reply = patch_me(&platform, &ada.token, body.clone()).await;
        assert_eq!(reply.status, 400, "{body}: {reply:?}");
        assert_eq!(reply.fields(), fields, "{body}");
    }
    let form = raw(
        &platform,
        Method::PATCH,
        "/api/users/me",
        Some(&ada.token),
        "text/plain",
        "name=x",
    )
    .await;
    assert_eq!(form.status, 415);
    let malformed = raw(
        &platform,
        Method::PATCH,
        "/api/users/me",
        Some(&ada.token),
        "application/json",
        "{",
    )
    .await;
    assert_eq!(
        (malformed.status, malformed.fields()),
        (400, vec!["body".to_owned()])
    );
    let anonymous = platform
        .call(
            Method::PATCH,
            "/api/users/me",
            None,
            Some(json!({"name": "Eve"})),
        )
        .await;
    assert_eq!(anonymous.status, 401);
    // None of it changed anything.
    let me = platform.get_as("/api/users/me", &ada.token).await;
    assert_eq!(me.body["name"], "Test Customer");
    assert_eq!(me.body["phone"], Value::Null);
}

#[tokio::test]
async fn the_admin_bootstrap_creates_the_account_and_promotes_an_existing_one() {
    // Created at start-up.
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let me = platform.get_as("/api/users/me", &admin.token).await;
    assert_eq!(
        (me.body["role"].as_str(), me.body["email"].as_str()),
        (Some("admin"), Some(ADMIN_EMAIL))
    );
    let events = events_of(&platform, &admin, &admin.user_id, 1).await;
    assert_eq!(events[0]["eventType"], "UserRegistered");
    assert_eq!(events[0]["payload"]["role"], "admin");
    drop(platform);

    // An existing customer with that address is promoted and given the configured password.
    let dir = tempfile::tempdir().unwrap();
    let platform = Platform::start_in(dir.path(), &[]).await;
    let boss = platform.register("boss@example.com").await;
    assert!(platform.terminate().await.success());
    let env = [
        ("EMPORIUM_ADMIN_EMAIL", "Boss@Example.com"),
        ("EMPORIUM_ADMIN_PASSWORD", "the-boss-password"),
    ];
    let platform = Platform::start_in(dir.path(), &env).await;
    assert_eq!(
        login(&platform, "boss@example.com", PASSWORD).await.status,
        401
    );
    let promoted = login(&platform, "boss@example.com", "the-boss-password").await;
    assert_eq!(promoted.status, 200, "{promoted:?}");
    assert_eq!(promoted.body["user"]["id"], boss.user_id.as_str());
    assert_eq!(promoted.body["user"]["role"], "admin");
    let token = promoted.body["accessToken"].as_str().unwrap();
    assert_eq!(platform.get_as("/api/users", token).await.status, 200);
    assert!(platform.terminate().await.success());

    // Starting again changes nothing (and emits nothing more).
    let platform = Platform::start_in(dir.path(), &env).await;
    let admin = Session {
        token: login(&platform, "boss@example.com", "the-boss-password")
            .await
            .body["accessToken"]
            .as_str()
            .unwrap()
            .to_owned(),
        user_id: boss.user_id.clone(),
    };
    // The relay publishes a database's events in order: once a later one is in the log, any the
    // bootstrap emitted at this start would be too.
    let later = platform.register("later@example.com").await;
    events_of(&platform, &admin, &later.user_id, 1).await;
    let events = events_of(&platform, &admin, &boss.user_id, 2).await;
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["UserRegistered", "UserRegistered"]);
    assert_eq!(events[1]["payload"]["role"], "admin");
}
