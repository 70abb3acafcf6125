//! End-to-end tests of the catalog service through the gateway.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Platform, Reply, Session};

/// Sends a body as-is with the given content type.
async fn raw(
    platform: &Platform,
    method: Method,
    path: &str,
    token: &str,
    content_type: &str,
    body: &str,
) -> Reply {
    let response = platform
        .http
        .request(method, platform.url(path))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
    }
}

async fn create(platform: &Platform, admin: &Session, body: Value) -> Reply {
    platform
        .post_as("/api/products", Some(&admin.token), body)
        .await
}

/// Creates a product and returns its id.
async fn product(
    platform: &Platform,
    admin: &Session,
    name: &str,
    description: Option<&str>,
    category: &str,
) -> String {
    let reply = create(
        platform,
        admin,
        json!({"name": name, "description": description, "category": category,
               "price": {"amount": 1000, "currency": "USD"}}),
    )
    .await;
    assert_eq!(reply.status, 201, "{reply:?}");
    reply.body["id"].as_str().unwrap().to_owned()
}

async fn patch(platform: &Platform, admin: &Session, id: &str, body: Value) -> Reply {
    platform
        .call(
            Method::PATCH,
            &format!("/api/products/{id}"),
            Some(&admin.token),
            Some(body),
        )
        .await
}

async fn delete(platform: &Platform, token: Option<&str>, id: &str) -> Reply {
    platform
        .call(Method::DELETE, &format!("/api/products/{id}"), token, None)
        .await
}

async fn get(platform: &Platform, path: &str) -> Reply {
    platform.call(Method::GET, path, None, None).await
}

/// The names on one page of `GET path`.
async fn names(platform: &Platform, path: &str) -> Vec<String> {
    let reply = get(platform, path).await;
    assert_eq!(reply.status, 200, "{path}: {reply:?}");
    reply.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The catalog's events about product `id` (other services' events on the same key, such as
/// inventory's, left out), once at least `count` are in the log.
async fn product_events(
    platform: &Platform,
    admin: &Session,
    id: &str,
    count: usize,
) -> Vec<Value> {
    platform
        .poll(&format!("{count} events of product {id}"), || async {
            let reply = platform
                .get_as(&format!("/api/admin/events?aggregateId={id}"), &admin.token)
                .await;
            let events: Vec<Value> = reply
                .body
                .as_array()?
                .iter()
                .filter(|e| e["source"] == "catalog")
                .cloned()
                .collect();
            (events.len() >= count).then_some(events)
        })
        .await
}

#[tokio::test]
async fn an_admin_creates_reads_updates_and_deletes_a_product() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let created = create(
        &platform,
        &admin,
        json!({"name": "  Desk Lamp ", "description": "Bright", "category": "lighting",
               "price": {"amount": 1999, "currency": "USD"}, "initialStock": 7}),
    )
    .await;
    assert_eq!(created.status, 201, "{created:?}");
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created.headers["location"].to_str().unwrap(),
        format!("/api/products/{id}")
    );
    assert_eq!(created.body["name"], "Desk Lamp");
    assert_eq!(created.body["description"], "Bright");
    assert_eq!(created.body["category"], "lighting");
    assert_eq!(
        created.body["price"],
        json!({"amount": 1999, "currency": "USD"})
    );
    assert_eq!(created.body["createdAt"], created.body["updatedAt"]);
    assert!(created.body.get("initialStock").is_none());

    let read = get(&platform, &format!("/api/products/{id}")).await;
    assert_eq!((read.status, &read.body), (200, &created.body));

    let updated = patch(
        &platform,
        &admin,
        &id,
        json!({"price": {"amount": 2499, "currency": "EUR"}, "name": "Desk Lamp XL"}),
    )
    .await;
    assert_eq!(updated.status, 200, "{updated:?}");
    assert_eq!(updated.body["name"], "Desk Lamp XL");
    assert_eq!(
        updated.body["price"],
        json!({"amount": 2499, "currency": "EUR"})
    );
    assert_eq!(updated.body["description"], "Bright");
    assert_eq!(updated.body["category"], "lighting");
    assert_eq!(updated.body["createdAt"], created.body["createdAt"]);
    let at = |body: &Value, key: &str| {
        chrono::DateTime::parse_from_rfc3339(body[key].as_str().unwrap()).unwrap()
    };
    assert!(at(&updated.body, "updatedAt") >= at(&created.body, "updatedAt"));
    assert_eq!(
        get(&platform, &format!("/api/products/{id}")).await.body,
        updated.body
    );

    let deleted = delete(&platform, Some(&admin.token), &id).await;
    assert_eq!(deleted.status, 204);
    assert_eq!(
        get(&platform, &format!("/api/products/{id}")).await.status,
        404
    );
    assert_eq!(
        patch(&platform, &admin, &id, json!({"name": "Ghost"}))
            .await
            .status,
        404
    );
    let again = delete(&platform, Some(&admin.token), &id).await;
    assert_eq!((again.status, again.code()), (404, "NOT_FOUND"));
    assert!(names(&platform, "/api/products").await.is_empty());

    let events = product_events(&platform, &admin, &id, 3).await;
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["ProductCreated", "ProductUpdated", "ProductDeleted"]
    );
    assert_eq!(events[0]["payload"]["initialStock"], 7);
    assert_eq!(events[0]["payload"]["name"], "Desk Lamp");
    assert_eq!(
        events[1]["payload"],
        json!({"productId": id, "name": "Desk Lamp XL", "description": "Bright",
               "category": "lighting", "price": {"amount": 2499, "currency": "EUR"}})
    );
}

#[tokio::test]
async fn a_description_can_be_cleared_and_an_empty_patch_changes_nothing() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let id = product(&platform, &admin, "Chair", Some("Wooden"), "furniture").await;
    let before = get(&platform, &format!("/api/products/{id}")).await.body;
    let unchanged = patch(&platform, &admin, &id, json!({})).await;
    assert_eq!((unchanged.status, &unchanged.body), (200, &before));
    let same = patch(&platform, &admin, &id, json!({"name": "Chair"})).await;
    assert_eq!((same.status, &same.body), (200, &before));
    let cleared = patch(&platform, &admin, &id, json!({"description": null})).await;
    assert_eq!(cleared.status, 200);
    assert_eq!(cleared.body["description"], Value::Null);
    assert_eq!(cleared.body["name"], "Chair");
    // Without initialStock a product starts with none (the default is 0).
    let events = product_events(&platform, &admin, &id, 2).await;
    assert_eq!(events[0]["payload"]["initialStock"], 0);
    assert_eq!(
        events.len(),
        2,
        "edits that change nothing emit nothing: {events:?}"
    );
    assert_eq!(events[1]["payload"]["description"], Value::Null);
}

#[tokio::test]
async fn products_are_searched_by_text_and_category_in_any_case() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    product(
        &platform,
        &admin,
        "Desk Lamp",
        Some("Bright LED"),
        "Lighting",
    )
    .await;
    product(&platform, &admin, "Standing Desk", None, "furniture").await;
    product(
        &platform,
        &admin,
        "Chair",
        Some("Goes with any DESK"),
        "furniture",
    )
    .await;
    product(&platform, &admin, "100% Cotton Shirt", None, "clothes").await;
    let gone = product(&platform, &admin, "Old Desk", None, "furniture").await;
    assert_eq!(
        delete(&platform, Some(&admin.token), &gone).await.status,
        204
    );

    assert_eq!(
        names(&platform, "/api/products?q=desk").await,
        ["Chair", "Standing Desk", "Desk Lamp"],
        "name or description, any case, newest first, deleted left out"
    );
    assert_eq!(names(&platform, "/api/products?q=led").await, ["Desk Lamp"]);
    assert_eq!(
        names(&platform, "/api/products?category=FURNITURE").await,
        ["Chair", "Standing Desk"]
    );
    assert_eq!(
        names(&platform, "/api/products?q=desk&category=lighting").await,
        ["Desk Lamp"]
    );
    assert_eq!(
        names(&platform, "/api/products?q=100%25").await,
        ["100% Cotton Shirt"]
    );
    assert!(
        names(&platform, "/api/products?q=%25%25%25")
            .await
            .is_empty(),
        "% is no wildcard"
    );
    assert!(
        names(&platform, "/api/products?q=nothing-like-it")
            .await
            .is_empty()
    );
    assert!(
        names(&platform, "/api/products?category=furn")
            .await
            .is_empty(),
        "category is exact"
    );
    assert_eq!(
        names(&platform, "/api/products?q=&category=").await.len(),
        4,
        "blank is no filter"
    );
}

#[tokio::test]
async fn pages_cover_every_product_once_newest_first() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let mut created = Vec::new();
    for n in 0..7 {
        let category = if n % 2 == 0 { "even" } else { "odd" };
        created.push(product(&platform, &admin, &format!("Item {n}"), None, category).await);
    }
    let walk = |query: &'static str| {
        let platform = &platform;
        async move {
            let mut seen = Vec::new();
            let mut sizes = Vec::new();
            let mut path = format!("/api/products?limit=3{query}");
            loop {
                let page = get(platform, &path).await;
                assert_eq!(page.status, 200, "{page:?}");
                let items = page.body["items"].as_array().unwrap();
                sizes.push(items.len());
                seen.extend(items.iter().map(|p| p["id"].as_str().unwrap().to_owned()));
                match page.body["nextCursor"].as_str() {
                    Some(cursor) => path = format!("/api/products?limit=3{query}&cursor={cursor}"),
                    None => break,
                }
            }
            (seen, sizes)
        }
    };
    let (seen, sizes) = walk("").await;
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);
    assert_eq!(sizes, [3, 3, 1]);

    let (even, sizes) = walk("&category=even").await;
    let expected: Vec<String> = created.iter().step_by(2).rev().cloned().collect();
    assert_eq!(even, expected);
    assert_eq!(sizes, [3, 1]);

    // A full last page says there is no next one.
    let all = get(&platform, "/api/products?limit=7").await;
    assert_eq!(all.body["items"].as_array().unwrap().len(), 7);
    assert_eq!(all.body["nextCursor"], Value::Null);
    // The default page size is 20.
    assert_eq!(
        get(&platform, "/api/products").await.body["items"]
            .as_array()
            .unwrap()
            .len(),
        7
    );
}

#[tokio::test]
async fn only_admins_change_the_catalog() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let customer = platform.register("shopper@example.com").await;
    let id = product(&platform, &admin, "Lamp", None, "lighting").await;
    let body = json!({"name": "Mine", "category": "x", "price": {"amount": 1, "currency": "USD"}});

    let anonymous = platform.post_as("/api/products", None, body.clone()).await;
    assert_eq!(
        (anonymous.status, anonymous.code()),
        (401, "UNAUTHENTICATED")
    );
    let as_customer = platform
        .post_as("/api/products", Some(&customer.token), body.clone())
        .await;
    assert_eq!((as_customer.status, as_customer.code()), (403, "FORBIDDEN"));
    let path = format!("/api/products/{id}");
    let patch_anonymous = platform
        .call(Method::PATCH, &path, None, Some(body.clone()))
        .await;
    assert_eq!(patch_anonymous.status, 401);
    let patch_customer = platform
        .call(
            Method::PATCH,
            &path,
            Some(&customer.token),
            Some(body.clone()),
        )
        .await;
    assert_eq!(patch_customer.status, 403);
    assert_eq!(delete(&platform, None, &id).await.status, 401);
    assert_eq!(
        delete(&platform, Some(&customer.token), &id).await.status,
        403
    );
    let bad_token = delete(&platform, Some("forged.token.here"), &id).await;
    assert_eq!(bad_token.status, 401);

    // Nothing changed, and reading stays public.
    assert_eq!(names(&platform, "/api/products").await, ["Lamp"]);
    assert_eq!(get(&platform, &path).await.body["name"], "Lamp");
}

#[tokio::test]
async fn bad_product_input_is_rejected_naming_the_field() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let valid = json!({"name": "Lamp", "category": "lighting", "price": {"amount": 100, "currency": "USD"}});
    let with = |key: &str, value: Value| {
        let mut body = valid.clone();
        body[key] = value;
        body
    };
    let without = |key: &str| {
        let mut body = valid.clone();
        body.as_object_mut().unwrap().remove(key);
        body
    };
    let cases = [
        (without("name"), vec!["name"]),
        (with("name", json!("")), vec!["name"]),
        (with("name", json!("  ")), vec!["name"]),
        (with("name", json!("n".repeat(201))), vec!["name"]),
        (with("name", json!(42)), vec!["name"]),
        (
            with("description", json!("d".repeat(5001))),
            vec!["description"],
        ),
        (with("description", json!(["a"])), vec!["description"]),
        (without("category"), vec!["category"]),
        (with("category", json!("")), vec!["category"]),
        (with("category", json!("c".repeat(101))), vec!["category"]),
        (without("price"), vec!["price"]),
        (with("price", json!(100)), vec!["price"]),
        (
            with("price", json!({"amount": -1, "currency": "USD"})),
            vec!["price.amount"],
        ),
        (
            with("price", json!({"amount": 19.99, "currency": "USD"})),
            vec!["price.amount"],
        ),
        (
            with("price", json!({"amount": "100", "currency": "USD"})),
            vec!["price.amount"],
        ),
        (
            with("price", json!({"currency": "USD"})),
            vec!["price.amount"],
        ),
        (
            with("price", json!({"amount": 100})),
            vec!["price.currency"],
        ),
        (
            with("price", json!({"amount": 100, "currency": "usd"})),
            vec!["price.currency"],
        ),
        (
            with("price", json!({"amount": 100, "currency": "DOLLARS"})),
            vec!["price.currency"],
        ),
        (with("initialStock", json!(-1)), vec!["initialStock"]),
        (with("initialStock", json!(1.5)), vec!["initialStock"]),
        (with("initialStock", json!("3")), vec!["initialStock"]),
        (
            json!({"name": "", "category": "", "price": {"amount": -5, "currency": "x"}, "initialStock": -1}),
            vec![
                "name",
                "category",
                "price.amount",
                "price.currency",
                "initialStock",
            ],
        ),
    ];
    for (body, fields) in cases {
        let reply = create(&platform, &admin, body.clone()).await;
        assert_eq!(reply.status, 400, "{body}: {reply:?}");
        assert_eq!(reply.code(), "VALIDATION_ERROR");
        assert_eq!(reply.fields(), fields, "{body}");
    }
    for (content_type, body, status, field) in [
        ("application/json", "{\"name\":", 400, Some("body")),
        ("application/json", "[]", 400, Some("body")),
        ("text/plain", "name=Lamp", 415, None),
    ] {
        let reply = raw(
            &platform,
            Method::POST,
            "/api/products",
            &admin.token,
            content_type,
            body,
        )
        .await;
        assert_eq!(reply.status, status, "{body}");
        if let Some(field) = field {
            assert_eq!(reply.fields(), [field]);
        }
    }
    assert!(
        names(&platform, "/api/products").await.is_empty(),
        "nothing was created"
    );

    let id = product(&platform, &admin, "Lamp", Some("Bright"), "lighting").await;
    let patch_cases = [
        (json!({"name": null}), vec!["name"]),
        (json!({"name": ""}), vec!["name"]),
        (json!({"category": null}), vec!["category"]),
        (json!({"category": "c".repeat(101)}), vec!["category"]),
        (json!({"price": null}), vec!["price"]),
        (
            json!({"price": {"amount": -1, "currency": "USD"}}),
            vec!["price.amount"],
        ),
        (
            json!({"price": {"amount": 1, "currency": "US"}}),
            vec!["price.currency"],
        ),
        (
            json!({"price": {"amount": 1.5, "currency": "USD"}}),
            vec!["price.amount"],
        ),
        (
            json!({"description": "d".repeat(5001)}),
            vec!["description"],
        ),
        (json!({"description": 3}), vec!["description"]),
        (json!({"name": "", "price": null}), vec!["name", "price"]),
    ];
    for (body, fields) in patch_cases {
        let reply = patch(&platform, &admin, &id, body.clone()).await;
        assert_eq!(reply.status, 400, "{body}: {reply:?}");
        assert_eq!(reply.fields(), fields, "{body}");
    }
    let path = format!("/api/products/{id}");
    let form = raw(
        &platform,
        Method::PATCH,
        &path,
        &admin.token,
        "text/plain",
        "x",
    )
    .await;
    assert_eq!(form.status, 415);
    let malformed = raw(
        &platform,
        Method::PATCH,
        &path,
        &admin.token,
        "application/json",
        "{",
    )
    .await;
    assert_eq!(
        (malformed.status, malformed.fields()),
        (400, vec!["body".to_owned()])
    );
    let unchanged = get(&platform, &path).await.body;
    assert_eq!(
        (
            unchanged["name"].as_str(),
            unchanged["description"].as_str()
        ),
        (Some("Lamp"), Some("Bright"))
    );

    // Unknown ids, well-formed or not.
    for unknown in [uuid::Uuid::now_v7().to_string(), "not-an-id".to_owned()] {
        let path = format!("/api/products/{unknown}");
        assert_eq!(get(&platform, &path).await.status, 404, "{unknown}");
        assert_eq!(
            patch(&platform, &admin, &unknown, json!({"name": "x"}))
                .await
                .status,
            404
        );
        assert_eq!(
            delete(&platform, Some(&admin.token), &unknown).await.status,
            404
        );
    }

    // Listing parameters.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("cursor=zz", "cursor"),
        ("cursor=%ff", "cursor"),
    ] {
        let reply = get(&platform, &format!("/api/products?{query}")).await;
        assert_eq!(
            (reply.status, reply.fields()),
            (400, vec![field.to_owned()]),
            "{query}"
        );
    }
    let long_q = get(&platform, &format!("/api/products?q={}", "q".repeat(201))).await;
    assert_eq!(
        (long_q.status, long_q.fields()),
        (400, vec!["q".to_owned()])
    );
    let long_category = get(
        &platform,
        &format!("/api/products?category={}", "c".repeat(101)),
    )
    .await;
    assert_eq!(
        (long_category.status, long_category.fields()),
        (400, vec!["category".to_owned()])
    );
}

#[tokio::test]
async fn control_characters_in_product_text_are_refused_naming_the_field() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let valid = json!({"name": "Lamp", "category": "lighting", "price": {"amount": 100, "currency": "USD"}});
    let with = |key: &str, value: &str| {
        let mut body = valid.clone();
        body[key] = json!(value);
        body
    };
    let cases = [
        (with("name", "La\u{0}mp"), "name"),
        (with("name", "Desk\nlamp"), "name"),
        (with("name", "Lamp\u{7f}"), "name"),
        (with("category", "light\u{0}ing"), "category"),
        (with("category", "light\ting"), "category"),
        (with("description", "A lamp\u{0}"), "description"),
        (
            with("description", "A \u{1b}[31mred\u{1b}[0m lamp"),
            "description",
        ),
        (with("description", "A lamp\u{9b}"), "description"),
    ];
    for (body, field) in &cases {
        let reply = create(&platform, &admin, body.clone()).await;
        assert_eq!(reply.status, 400, "{body}: {reply:?}");
        assert_eq!(reply.fields(), [*field], "{body}");
    }
    // A description may have lines and tabs (and the carriage returns of CRLF line ends).
    let text = "Bright.\n\tDimmable.\r\nWarm white.";
    let created = create(&platform, &admin, with("description", text)).await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.body["description"], text);
    let id = created.body["id"].as_str().unwrap();

    for (body, field) in [
        (json!({"name": "La\u{0}mp"}), "name"),
        (json!({"category": "\u{1}"}), "category"),
        (json!({"description": "A\u{0}"}), "description"),
    ] {
        let reply = patch(&platform, &admin, id, body.clone()).await;
        assert_eq!(reply.status, 400, "{body}: {reply:?}");
        assert_eq!(reply.fields(), [field], "{body}");
    }
    // Searches are bound as query parameters: the same rule.
    for (path, field) in [
        ("/api/products?q=la%00mp", "q"),
        ("/api/products?category=light%00ing", "category"),
    ] {
        let reply = get(&platform, path).await;
        assert_eq!(reply.status, 400, "{path}: {reply:?}");
        assert_eq!(reply.fields(), [field], "{path}");
    }
    let unchanged = get(&platform, &format!("/api/products/{id}")).await;
    assert_eq!(unchanged.body["name"], "Lamp");
    assert_eq!(unchanged.body["description"], text);
}

/// A product read twice is a cache miss, then a hit (`emporium_cache_*_total{cache="catalog"}`);
/// a change is read at once after it, and a deleted product is 404, on whichever cache `env`
/// gives the platform.
async fn product_reads_go_through_the_cache(env: &[(&str, &str)]) {
    let platform = Platform::start_with(env).await;
    let admin = platform.admin().await;
    let id = product(&platform, &admin, "Lamp", None, "lighting").await;
    let path = format!("/api/products/{id}");
    let lookups = || async {
        let catalog = r#"cache="catalog""#;
        (
            platform.metric("emporium_cache_hits_total", catalog).await,
            platform
                .metric("emporium_cache_misses_total", catalog)
                .await,
        )
    };
    assert_eq!(lookups().await, (0.0, 0.0));
    let first = get(&platform, &path).await;
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(get(&platform, &path).await.body, first.body);
    assert_eq!(lookups().await, (1.0, 1.0), "a miss, then a hit");

    let updated = patch(&platform, &admin, &id, json!({"name": "Desk Lamp"})).await;
    assert_eq!(updated.status, 200, "{updated:?}");
    assert_eq!(get(&platform, &path).await.body, updated.body);
    assert_eq!(lookups().await, (1.0, 2.0), "the update forgot it");

    assert_eq!(delete(&platform, Some(&admin.token), &id).await.status, 204);
    assert_eq!(get(&platform, &path).await.status, 404);
}

#[tokio::test]
async fn product_reads_go_through_the_in_process_cache() {
    product_reads_go_through_the_cache(&[]).await;
}

#[tokio::test]
async fn product_reads_go_through_redis_when_redis_url_is_set() {
    let Ok(url) = std::env::var("EMPORIUM_TEST_REDIS_URL") else {
        eprintln!(
            "skipped: the catalog on Redis needs EMPORIUM_TEST_REDIS_URL \
             (run scripts/dev-services; .ci/run does)"
        );
        return;
    };
    product_reads_go_through_the_cache(&[("EMPORIUM_REDIS_URL", &url)]).await;
}

/// With Redis, `/health` reports it; the in-process cache is not a dependency to report.
#[tokio::test]
async fn health_reports_redis_when_it_is_the_cache() {
    let Ok(url) = std::env::var("EMPORIUM_TEST_REDIS_URL") else {
        eprintln!(
            "skipped: needs EMPORIUM_TEST_REDIS_URL (run scripts/dev-services; .ci/run does)"
        );
        return;
    };
    let with_redis = Platform::start_with(&[("EMPORIUM_REDIS_URL", &url)]).await;
    let health: serde_json::Value = with_redis.get("/health").await.json().await.unwrap();
    assert_eq!(health["checks"]["cache"], "UP", "{health}");
    let in_process = Platform::start_with(&[]).await;
    let health: serde_json::Value = in_process.get("/health").await.json().await.unwrap();
    assert!(health["checks"].get("cache").is_none(), "{health}");
}
