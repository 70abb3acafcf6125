//! GraphQL at `/graphql` and `/graphql/ws` on the real binary: queries, mutations, errors with the
//! REST codes, depth and complexity limits, batched loading, the `orderUpdated` subscription.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

use crate::support::{Platform, Session};

impl Platform {
    /// Runs a GraphQL operation over HTTP; returns the whole response (`data` and `errors`).
    pub async fn graphql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let mut request = self
            .http
            .post(self.url("/graphql"))
            .json(&json!({"query": query, "variables": variables}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status(),
            200,
            "GraphQL answers 200 even with errors"
        );
        response.json().await.unwrap()
    }

    /// A counter from `/metrics`, summed over the series whose labels contain `labels`.
    pub async fn metric(&self, name: &str, labels: &str) -> f64 {
        let text = self.get("/metrics").await.text().await.unwrap();
        text.lines()
            .filter(|line| line.starts_with(name) && line.contains(labels))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// The first error's `extensions.code`.
fn code(response: &Value) -> &str {
    response["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {response}"))
}

const PLACE_ORDER: &str = r#"mutation Place($input: PlaceOrderInput!) {
  placeOrder(input: $input) { id status total { amount currency } items { quantity product { name } } }
}"#;

fn order_input(items: &[(&str, i64)], token: &str) -> Value {
    let items: Vec<Value> = items
        .iter()
        .map(|(id, quantity)| json!({"productId": id, "quantity": quantity}))
        .collect();
    json!({"input": {
        "items": items,
        "shippingAddress": {"name": "Ada Lovelace", "line1": "12 Analytical Row", "city": "London", "postalCode": "N1 9GU", "country": "GB"},
        "paymentMethod": {"token": token},
    }})
}

#[tokio::test]
async fn a_customer_registers_browses_orders_and_cancels_through_graphql() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let lamp = platform.create_product(&admin, "Lamp", 2500, 10).await;

    let registered = platform
        .graphql(
            None,
            r#"mutation { register(input: {email: "grace@example.com", password: "correct-horse-battery", name: "Grace"}) { accessToken user { email role } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(registered["data"]["register"]["user"]["role"], "customer");
    let logged_in = platform
        .graphql(
            None,
            r#"mutation { login(email: "grace@example.com", password: "correct-horse-battery") { accessToken refreshToken user { name } } }"#,
            json!({}),
        )
        .await;
    let token = logged_in["data"]["login"]["accessToken"].as_str().unwrap();
    assert!(logged_in["data"]["login"]["refreshToken"].is_string());

    let me = platform
        .graphql(
            Some(token),
            "{ me { email preferences { promotions } } }",
            json!({}),
        )
        .await;
    assert_eq!(me["data"]["me"]["email"], "grace@example.com");
    assert_eq!(me["data"]["me"]["preferences"]["promotions"], true);

    let products = platform
        .graphql(
            None,
            r#"{ products(first: 5, q: "lamp") { nodes { id name price { amount currency } stock } pageInfo { hasNextPage } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(
        products["data"]["products"]["nodes"],
        json!([{"id": lamp, "name": "Lamp", "price": {"amount": 2500, "currency": "USD"}, "stock": 10}])
    );
    assert_eq!(
        products["data"]["products"]["pageInfo"]["hasNextPage"],
        false
    );
    let stock = platform
        .graphql(
            None,
            "query($id: ID!) { inventory(productId: $id) { available reserved } product(id: $id) { name } }",
            json!({"id": lamp}),
        )
        .await;
    assert_eq!(stock["data"]["inventory"]["available"], 10);
    assert_eq!(stock["data"]["product"]["name"], "Lamp");

    let placed = platform
        .graphql(
            Some(token),
            PLACE_ORDER,
            order_input(&[(&lamp, 2)], "tok_visa"),
        )
        .await;
    let order = &placed["data"]["placeOrder"];
    assert_eq!(order["status"], "PENDING", "{placed}");
    assert_eq!(order["total"], json!({"amount": 5000, "currency": "USD"}));
    assert_eq!(order["items"][0]["product"]["name"], "Lamp");
    let order_id = order["id"].as_str().unwrap().to_owned();

    let session = Session {
        token: token.to_owned(),
        user_id: String::new(),
    };
    platform
        .wait_for_order(&session, &order_id, "CONFIRMED")
        .await;
    let orders = platform
        .graphql(
            Some(token),
            "{ orders(first: 10) { edges { cursor node { id status payment { status } } } } }",
            json!({}),
        )
        .await;
    let edges = orders["data"]["orders"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 1);
    assert_eq!(edges[0]["node"]["status"], "CONFIRMED");
    assert_eq!(edges[0]["node"]["payment"]["status"], "AUTHORIZED");

    let cancelled = platform
        .graphql(
            Some(token),
            "mutation($id: ID!) { cancelOrder(id: $id) { status cancellationReason } }",
            json!({"id": order_id}),
        )
        .await;
    assert_eq!(
        cancelled["data"]["cancelOrder"],
        json!({"status": "CANCELLED", "cancellationReason": "CUSTOMER_REQUEST"})
    );
    let again = platform
        .graphql(
            Some(token),
            "mutation($id: ID!) { cancelOrder(id: $id) { status } }",
            json!({"id": order_id}),
        )
        .await;
    assert_eq!(code(&again), "ORDER_NOT_CANCELLABLE");
    assert_eq!(again["errors"][0]["extensions"]["status"], 409);
}

#[tokio::test]
async fn edges_page_through_a_list_with_their_cursors() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    for name in ["A", "B", "C"] {
        platform.create_product(&admin, name, 100, 1).await;
    }
    let query = "query($after: String) { products(first: 2, after: $after) { edges { cursor node { name } } pageInfo { hasNextPage hasPreviousPage } } }";
    let first = platform.graphql(None, query, json!({})).await;
    let edges = first["data"]["products"]["edges"]
        .as_array()
        .unwrap()
        .clone();
    let names: Vec<&str> = edges
        .iter()
        .map(|e| e["node"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["C", "B"], "newest first");
    assert_eq!(first["data"]["products"]["pageInfo"]["hasNextPage"], true);
    // Any edge's cursor continues after that edge.
    let after_first = platform
        .graphql(None, query, json!({"after": edges[0]["cursor"]}))
        .await;
    let names: Vec<&str> = after_first["data"]["products"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["B", "A"]);
    assert_eq!(
        after_first["data"]["products"]["pageInfo"],
        json!({"hasNextPage": false, "hasPreviousPage": true})
    );
}

#[tokio::test]
async fn errors_carry_the_rest_codes() {
    let platform = Platform::start_with(&[]).await;
    let customer = platform.register("errors@example.com").await;

    let anonymous = platform.graphql(None, "{ me { id } }", json!({})).await;
    assert_eq!(code(&anonymous), "UNAUTHENTICATED");
    assert_eq!(anonymous["data"], Value::Null);

    let forbidden = platform
        .graphql(
            Some(&customer.token),
            r#"mutation { createProduct(input: {name: "X", category: "c", price: {amount: 1, currency: "USD"}}) { id } }"#,
            json!({}),
        )
        .await;
    assert_eq!(code(&forbidden), "FORBIDDEN");

    let unknown = platform
        .graphql(
            Some(&customer.token),
            PLACE_ORDER,
            order_input(&[("0190b8a0-0000-7000-8000-000000000000", 1)], "tok_visa"),
        )
        .await;
    assert_eq!(code(&unknown), "UNKNOWN_PRODUCT");
    assert_eq!(unknown["errors"][0]["extensions"]["status"], 422);

    let invalid = platform
        .graphql(
            Some(&customer.token),
            PLACE_ORDER,
            order_input(&[("0190b8a0-0000-7000-8000-000000000000", 0)], "tok_visa"),
        )
        .await;
    assert_eq!(code(&invalid), "VALIDATION_ERROR");
    let fields: Vec<&str> = invalid["errors"][0]["extensions"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["items[0].quantity"]);

    let bad_page = platform
        .graphql(None, "{ products(first: 500) { nodes { id } } }", json!({}))
        .await;
    assert_eq!(code(&bad_page), "VALIDATION_ERROR");
    let bad_id = platform
        .graphql(None, r#"{ product(id: "../users/me") { id } }"#, json!({}))
        .await;
    assert_eq!(code(&bad_id), "VALIDATION_ERROR");
    let missing = platform
        .graphql(
            None,
            r#"{ product(id: "0190b8a0-0000-7000-8000-000000000000") { id } }"#,
            json!({}),
        )
        .await;
    assert_eq!(missing["data"]["product"], Value::Null, "{missing}");
    assert!(missing["errors"].is_null());
}

#[tokio::test]
async fn deep_or_costly_queries_are_refused() {
    let platform = Platform::start_with(&[
        ("EMPORIUM_GATEWAY__GRAPHQL_DEPTH_LIMIT", "4"),
        ("EMPORIUM_GATEWAY__GRAPHQL_COMPLEXITY_LIMIT", "200"),
    ])
    .await;
    let customer = platform.register("limits@example.com").await;
    let shallow = platform
        .graphql(
            None,
            "{ products(first: 10) { nodes { name } } }",
            json!({}),
        )
        .await;
    assert!(shallow["errors"].is_null(), "{shallow}");
    let deep = platform
        .graphql(
            Some(&customer.token),
            "{ orders { nodes { items { product { price { amount } } } } } }",
            json!({}),
        )
        .await;
    assert!(
        deep["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nested too deep"),
        "{deep}"
    );
    let costly = platform
        .graphql(
            None,
            "{ products(first: 100) { nodes { id name description category stock } } }",
            json!({}),
        )
        .await;
    assert!(
        costly["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("too complex"),
        "{costly}"
    );
}

#[tokio::test]
async fn stock_and_order_products_load_in_one_call_per_level() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let mut ids = Vec::new();
    for name in ["One", "Two", "Three", "Four", "Five"] {
        ids.push(platform.create_product(&admin, name, 100, 5).await);
    }
    let inventory_calls = r#"service="inventory""#;
    let catalog_calls = r#"service="catalog""#;
    let counter = "emporium_gateway_upstream_requests_total";

    let before = platform.metric(counter, inventory_calls).await;
    let products = platform
        .graphql(
            None,
            "{ products(first: 10) { nodes { name stock } } }",
            json!({}),
        )
        .await;
    let nodes = products["data"]["products"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 5);
    assert!(nodes.iter().all(|n| n["stock"] == 5), "{products}");
    assert_eq!(
        platform.metric(counter, inventory_calls).await - before,
        1.0,
        "five products' stock in one inventory call"
    );

    let customer = platform.register("batch@example.com").await;
    let items: Vec<(&str, i64)> = ids.iter().map(|id| (id.as_str(), 1)).collect();
    let placed = platform
        .graphql(
            Some(&customer.token),
            PLACE_ORDER,
            order_input(&items, "tok_visa"),
        )
        .await;
    assert!(placed["errors"].is_null(), "{placed}");
    let before = platform.metric(counter, catalog_calls).await;
    let orders = platform
        .graphql(
            Some(&customer.token),
            "{ orders { nodes { items { product { name stock } } } } }",
            json!({}),
        )
        .await;
    let items = orders["data"]["orders"]["nodes"][0]["items"]
        .as_array()
        .unwrap();
    assert_eq!(items.len(), 5);
    assert!(items.iter().all(|i| i["product"]["name"].is_string()));
    assert_eq!(
        platform.metric(counter, catalog_calls).await - before,
        1.0,
        "five order lines' products in one catalog call"
    );
}

#[tokio::test]
async fn the_sdl_is_served_for_graphiql_and_malformed_requests_are_problems() {
    let platform = Platform::start_with(&[]).await;
    let page = platform.get("/graphql").await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("graphiql"));

    let malformed = platform
        .http
        .post(platform.url("/graphql"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    let body: Value = malformed.json().await.unwrap();
    assert_eq!(body["code"], "VALIDATION_ERROR");

    let huge = "x".repeat(300 * 1024);
    let oversized = platform
        .http
        .post(platform.url("/graphql"))
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"query": "{{ products {{ nodes {{ id }} }} }}", "x": "{huge}"}}"#
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(oversized.status(), 413);
    let body: Value = oversized.json().await.unwrap();
    assert_eq!(body["code"], "PAYLOAD_TOO_LARGE");
}

/// A `graphql-transport-ws` client: connects, initialises with the token, subscribes.
async fn subscribe(
    platform: &Platform,
    token: Option<&str>,
    query: &str,
    variables: Value,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = platform.url("/graphql/ws").replacen("http", "ws", 1);
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let payload = token.map_or(
        json!({}),
        |t| json!({"Authorization": format!("Bearer {t}")}),
    );
    socket
        .send(Message::text(
            json!({"type": "connection_init", "payload": payload}).to_string(),
        ))
        .await
        .unwrap();
    let ack = next_message(&mut socket).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    socket
        .send(Message::text(
            json!({"id": "1", "type": "subscribe", "payload": {"query": query, "variables": variables}})
                .to_string(),
        ))
        .await
        .unwrap();
    socket
}

async fn next_message(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .expect("a message within 30 s")
            .expect("the socket stays open")
            .unwrap();
        match message {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Close(frame) => {
                return json!({"type": "closed", "frame": format!("{frame:?}")});
            }
            _ => continue,
        }
    }
}

const ORDER_UPDATED: &str =
    "subscription($id: ID!) { orderUpdated(id: $id) { id status shipment { status } } }";

#[tokio::test]
async fn a_subscriber_sees_each_status_of_its_order_as_it_happens() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let lamp = platform.create_product(&admin, "Lamp", 2500, 10).await;
    let customer = platform.register("watcher@example.com").await;
    let placed = platform
        .place_order(&customer, &[(&lamp, 1)], "tok_visa")
        .await;
    let order_id = placed.body["id"].as_str().unwrap().to_owned();

    let mut socket = subscribe(
        &platform,
        Some(&customer.token),
        ORDER_UPDATED,
        json!({"id": order_id}),
    )
    .await;
    let mut seen = Vec::new();
    // The first message is the order as it is now: PENDING, or CONFIRMED if the saga was quicker.
    let first = next_message(&mut socket).await;
    assert_eq!(first["type"], "next", "{first}");
    seen.push(first["payload"]["data"]["orderUpdated"]["status"].clone());
    if seen[0] == "PENDING" {
        let confirmed = next_message(&mut socket).await;
        seen.push(confirmed["payload"]["data"]["orderUpdated"]["status"].clone());
    }
    assert_eq!(seen.last().unwrap(), "CONFIRMED", "{seen:?}");

    let shipment = platform
        .poll("the shipment", || async {
            let reply = platform
                .get_as(&format!("/api/shipments?orderId={order_id}"), &admin.token)
                .await;
            reply.body[0]["id"].as_str().map(str::to_owned)
        })
        .await;
    let dispatched = platform
        .post_as(
            &format!("/api/shipments/{shipment}/dispatch"),
            Some(&admin.token),
            json!({}),
        )
        .await;
    assert_eq!(dispatched.status, 200, "{dispatched:?}");
    let shipped = next_message(&mut socket).await;
    assert_eq!(
        shipped["payload"]["data"]["orderUpdated"]["status"], "SHIPPED",
        "{shipped}"
    );
    let delivered = platform
        .post_as(
            &format!("/api/shipments/{shipment}/deliver"),
            Some(&admin.token),
            json!({}),
        )
        .await;
    assert_eq!(delivered.status, 200, "{delivered:?}");
    let last = next_message(&mut socket).await;
    assert_eq!(
        last["payload"]["data"]["orderUpdated"],
        json!({"id": order_id, "status": "DELIVERED", "shipment": {"status": "DELIVERED"}})
    );
    // A delivered order changes no more: the server completes the subscription.
    let complete = next_message(&mut socket).await;
    assert_eq!(complete, json!({"id": "1", "type": "complete"}));
}

#[tokio::test]
async fn only_the_owner_may_follow_an_order() {
    let platform = Platform::start_with(&[]).await;
    let admin = platform.admin().await;
    let lamp = platform.create_product(&admin, "Lamp", 2500, 10).await;
    let owner = platform.register("owner@example.com").await;
    let other = platform.register("other@example.com").await;
    let placed = platform
        .place_order(&owner, &[(&lamp, 1)], "tok_visa")
        .await;
    let order_id = placed.body["id"].as_str().unwrap().to_owned();

    let mut anonymous = subscribe(&platform, None, ORDER_UPDATED, json!({"id": order_id})).await;
    // The resolver refuses, so the refusal is a result with errors (`error` is for invalid
    // operations), and the subscription completes.
    let refused = next_message(&mut anonymous).await;
    assert_eq!(refused["type"], "next", "{refused}");
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"],
        "UNAUTHENTICATED"
    );
    assert_eq!(next_message(&mut anonymous).await["type"], "complete");

    let mut stranger = subscribe(
        &platform,
        Some(&other.token),
        ORDER_UPDATED,
        json!({"id": order_id}),
    )
    .await;
    let hidden = next_message(&mut stranger).await;
    assert_eq!(
        hidden["payload"]["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{hidden}"
    );
    assert_eq!(hidden["payload"]["data"], Value::Null);
}

/// The ```graphql blocks of the README, in order.
fn readme_examples() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    readme
        .split("```graphql\n")
        .skip(1)
        .map(|block| block.split("```").next().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_readme_examples_run() {
    let dir = tempfile::tempdir().unwrap();
    let platform = Platform::start_in(
        dir.path(),
        &[
            ("EMPORIUM_ADMIN_EMAIL", "admin@example.com"),
            ("EMPORIUM_ADMIN_PASSWORD", "change-me-please"),
        ],
    )
    .await;
    let examples = readme_examples();
    assert_eq!(examples.len(), 5, "the README's GraphQL examples");
    let login = platform.graphql(None, &examples[0], json!({})).await;
    let token = login["data"]["login"]["accessToken"]
        .as_str()
        .unwrap_or_else(|| panic!("{login}"))
        .to_owned();
    let admin = Session {
        token: token.clone(),
        user_id: String::new(),
    };
    let lamp = platform.create_product(&admin, "Lamp", 2500, 5).await;
    let products = platform
        .graphql(Some(&token), &examples[1], json!({}))
        .await;
    assert_eq!(
        products["data"]["products"]["nodes"][0]["stock"], 5,
        "{products}"
    );
    let placed = platform
        .graphql(Some(&token), &examples[2], json!({"productId": lamp}))
        .await;
    let order_id = placed["data"]["placeOrder"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{placed}"))
        .to_owned();
    let orders = platform
        .graphql(Some(&token), &examples[3], json!({}))
        .await;
    assert_eq!(
        orders["data"]["orders"]["nodes"][0]["items"][0]["product"]["name"], "Lamp",
        "{orders}"
    );
    let mut socket = subscribe(
        &platform,
        Some(&token),
        &examples[4],
        json!({"id": order_id}),
    )
    .await;
    let first = next_message(&mut socket).await;
    assert!(
        first["payload"]["data"]["orderUpdated"]["status"].is_string(),
        "{first}"
    );
}
