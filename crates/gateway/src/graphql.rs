//! GraphQL at `/graphql` (GraphiQL on `GET`), subscriptions over `graphql-transport-ws` at
//! `/graphql/ws`. It mirrors the REST resources with the same names, fields and rules
//! (CONTRACT.md §3): every resolver calls the owning service's REST endpoint through the same
//! [`ServiceClient`] as REST forwarding, as the caller, so a service's rules and errors are the same
//! whichever door a client uses. `Product.stock` and `OrderItem.product` are resolved in batches by
//! DataLoaders, one service call per query level, not one per item.

use std::{collections::HashMap, sync::Arc};

use async_graphql::{
    ComplexObject, Context, Enum, ErrorExtensions, ID, InputObject, MaybeUndefined, Object, Schema,
    SimpleObject, Subscription,
    connection::{Connection, Edge},
    dataloader::{DataLoader, Loader},
};
use axum::http::{HeaderValue, Method};
use chrono::{DateTime, Utc};
use emporium_events::Envelope;
use emporium_platform::api::encode_cursor;
use futures_util::{Stream, stream};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::sync::broadcast;

use crate::client::{ServiceClient, ServiceError, SharedUpstreams};

pub type EmporiumSchema = Schema<Query, Mutation, SubscriptionRoot>;

/// Where subscriptions hear about events: a fresh receiver of the live event flow.
pub type EventFeed = Arc<dyn Fn() -> broadcast::Receiver<Arc<Envelope>> + Send + Sync>;

/// The schema, with its limits.
pub fn schema(
    upstreams: SharedUpstreams,
    feed: EventFeed,
    depth: usize,
    complexity: usize,
) -> EmporiumSchema {
    Schema::build(Query, Mutation, SubscriptionRoot)
        .data(upstreams)
        .data(feed)
        .limit_depth(depth)
        .limit_complexity(complexity)
        .finish()
}

/// Who is asking: their `Authorization` header, passed to services untouched (services check it).
#[derive(Clone, Default)]
pub struct Caller {
    pub authorization: Option<HeaderValue>,
}

/// Per-request data: the caller and the batch loaders (a loader's cache lives for one request).
pub fn request_data(
    request: async_graphql::Request,
    upstreams: &SharedUpstreams,
    caller: Caller,
) -> async_graphql::Request {
    let (products, stock) = loaders(upstreams);
    request.data(caller).data(products).data(stock)
}

/// Fresh batch loaders (their cache lives as long as they do: one request or one subscription).
pub fn loaders(
    upstreams: &SharedUpstreams,
) -> (DataLoader<ProductLoader>, DataLoader<StockLoader>) {
    (
        DataLoader::new(ProductLoader(upstreams.clone()), tokio::spawn),
        DataLoader::new(StockLoader(upstreams.clone()), tokio::spawn),
    )
}

// ------------------------------------------------------------------ errors

impl From<ServiceError> for async_graphql::Error {
    fn from(e: ServiceError) -> Self {
        async_graphql::Error::new(if e.detail.is_empty() {
            e.code.clone()
        } else {
            e.detail.clone()
        })
        .extend_with(|_, ext| {
            ext.set("code", e.code.as_str());
            ext.set("status", e.status);
            if !e.errors.is_empty() {
                let fields: Vec<async_graphql::Value> = e
                    .errors
                    .iter()
                    .map(|f| {
                        let mut map = async_graphql::indexmap::IndexMap::new();
                        map.insert(
                            async_graphql::Name::new("field"),
                            async_graphql::Value::from(f.field.as_str()),
                        );
                        map.insert(
                            async_graphql::Name::new("message"),
                            async_graphql::Value::from(f.message.as_str()),
                        );
                        async_graphql::Value::Object(map)
                    })
                    .collect();
                ext.set("errors", fields);
            }
        })
    }
}

fn field_error(field: &str, message: &str) -> async_graphql::Error {
    ServiceError {
        status: 400,
        code: "VALIDATION_ERROR".to_owned(),
        detail: format!("{field}: {message}"),
        errors: vec![crate::client::FieldProblem {
            field: field.to_owned(),
            message: message.to_owned(),
        }],
    }
    .into()
}

fn caller<'a>(ctx: &Context<'a>) -> Option<&'a HeaderValue> {
    ctx.data_opt::<Caller>()
        .and_then(|c| c.authorization.as_ref())
}

fn service<'a>(ctx: &Context<'a>, name: &str) -> Result<&'a ServiceClient, async_graphql::Error> {
    Ok(ctx.data::<SharedUpstreams>()?.get(name)?)
}

async fn get<T: DeserializeOwned>(
    ctx: &Context<'_>,
    name: &str,
    path: &str,
) -> async_graphql::Result<T> {
    Ok(service(ctx, name)?
        .json(Method::GET, path, caller(ctx), None::<&()>)
        .await?)
}

/// `GET` that answers `None` for a 404, as GraphQL does for a missing object.
async fn find<T: DeserializeOwned>(
    ctx: &Context<'_>,
    name: &str,
    path: &str,
) -> async_graphql::Result<Option<T>> {
    match service(ctx, name)?
        .json(Method::GET, path, caller(ctx), None::<&()>)
        .await
    {
        Ok(found) => Ok(Some(found)),
        Err(e) if e.status == 404 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn send<T: DeserializeOwned>(
    ctx: &Context<'_>,
    name: &str,
    method: Method,
    path: &str,
    body: &impl Serialize,
) -> async_graphql::Result<T> {
    Ok(service(ctx, name)?
        .json(method, path, caller(ctx), Some(body))
        .await?)
}

/// A path segment from a client's id: only what an id can be, so it cannot change the path.
fn segment(id: &str, field: &str) -> async_graphql::Result<String> {
    if !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Ok(id.to_owned())
    } else {
        Err(field_error(field, "is not a valid id"))
    }
}

fn query_string(pairs: &[(&str, Option<String>)]) -> String {
    let pairs: Vec<(&str, &str)> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (*k, v)))
        .collect();
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

/// `first` → `limit`: 1–100, default 20, as REST.
fn page_size(first: Option<i32>) -> async_graphql::Result<Option<String>> {
    match first {
        None => Ok(None),
        Some(n) if (1..=100).contains(&n) => Ok(Some(n.to_string())),
        Some(_) => Err(field_error("first", "must be between 1 and 100")),
    }
}

/// A REST page.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page<T> {
    items: Vec<T>,
    next_cursor: Option<String>,
}

/// A REST page as a Relay connection. Each edge's cursor is the one REST would give after that
/// item (lists are keyed by id), so `after` works with any edge.
fn connection<T: async_graphql::OutputType>(
    page: Page<T>,
    after: bool,
    id: impl Fn(&T) -> &str,
) -> Connection<String, T> {
    let mut connection = Connection::new(after, page.next_cursor.is_some());
    connection.edges.extend(
        page.items
            .into_iter()
            .map(|item| Edge::new(encode_cursor(id(&item)), item)),
    );
    connection
}

/// A REST list as a connection: `filters` plus `first`/`after` as `limit`/`cursor`.
async fn list<T: DeserializeOwned + async_graphql::OutputType>(
    ctx: &Context<'_>,
    service: &str,
    resource: &str,
    mut filters: Vec<(&str, Option<String>)>,
    first: Option<i32>,
    after: Option<String>,
    id: impl Fn(&T) -> &str,
) -> async_graphql::Result<Connection<String, T>> {
    filters.push(("limit", page_size(first)?));
    filters.push(("cursor", after.clone()));
    let path = format!("{resource}?{}", query_string(&filters));
    let page: Page<T> = get(ctx, service, &path).await?;
    Ok(connection(page, after.is_some(), id))
}

// ------------------------------------------------------------------ types

/// `{amount, currency}`: integer minor units and an ISO 4217 code.
#[derive(Debug, Clone, SimpleObject, InputObject, Serialize, Deserialize)]
#[graphql(input_name = "MoneyInput")]
pub struct Money {
    pub amount: i64,
    pub currency: String,
}

#[derive(Debug, Clone, SimpleObject, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Preferences {
    pub order_updates: bool,
    pub promotions: bool,
    pub recommendations: bool,
}

#[derive(Debug, Clone, SimpleObject, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: ID,
    pub email: String,
    pub name: String,
    /// `customer` or `admin`.
    pub role: String,
    pub phone: Option<String>,
    pub preferences: Preferences,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, SimpleObject, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthPayload {
    pub user: User,
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub token_type: String,
    pub expires_in: i64,
}

#[derive(Debug, Clone, SimpleObject, Deserialize)]
#[graphql(complex)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    pub id: ID,
    pub name: String,
    pub description: Option<String>,
    pub category: String,
    pub price: Money,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[ComplexObject]
impl Product {
    /// Units available now (null when inventory does not know the product yet).
    async fn stock(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<i64>> {
        let loader = ctx.data::<DataLoader<StockLoader>>()?;
        Ok(loader
            .load_one(self.id.to_string())
            .await
            .map_err(batch_error)?
            .map(|s| s.available))
    }
}

#[derive(Debug, Clone, SimpleObject, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stock {
    pub product_id: ID,
    pub available: i64,
    pub reserved: i64,
    pub updated_at: DateTime<Utc>,
}

/// Stock as admins see it (the answer to `adjustStock`).
#[derive(Debug, Clone, SimpleObject, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StockLevels {
    pub product_id: ID,
    pub available: i64,
    pub reserved: i64,
    pub committed: i64,
    pub low: bool,
    pub deleted: bool,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Shipped,
    Delivered,
    Cancelled,
}

impl OrderStatus {
    fn as_rest(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::Confirmed => "CONFIRMED",
            OrderStatus::Shipped => "SHIPPED",
            OrderStatus::Delivered => "DELIVERED",
            OrderStatus::Cancelled => "CANCELLED",
        }
    }

    fn is_final(self) -> bool {
        matches!(self, OrderStatus::Delivered | OrderStatus::Cancelled)
    }
}

#[derive(Debug, Clone, SimpleObject, Deserialize)]
#[graphql(complex)]
#[serde(rename_all = "camelCase")]
pub struct OrderItem {
    pub product_id: ID,
    /// The product's name when the order was placed.
    pub name: String,
    pub unit_price: Money,
    pub quantity: i64,
    pub line_total: Money,
}

#[ComplexObject]
impl OrderItem {
    /// The product as the catalog has it now (null once deleted).
    async fn product(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Product>> {
        let loader = ctx.data::<DataLoader<ProductLoader>>()?;
        loader
            .load_one(self.product_id.to_string())
            .await
            .map_err(batch_error)
    }
}

#[derive(Debug, Clone, SimpleObject, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Address {
    pub name: String,
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    pub country: String,
}

#[derive(Debug, Clone, SimpleObject, Deserialize)]
pub struct PaymentSummary {
    pub id: ID,
    pub status: String,
}

#[derive(Debug, Clone, SimpleObject, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShipmentSummary {
    pub id: ID,
    pub status: String,
    pub tracking_number: Option<String>,
}

/// A step of the order's life: a status it reached, or an event that happened to it.
#[derive(Debug, Clone, SimpleObject, Deserialize)]
pub struct TimelineEntry {
    pub status: Option<String>,
    pub event: Option<String>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, SimpleObject, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub id: ID,
    pub user_id: ID,
    pub status: OrderStatus,
    pub cancellation_reason: Option<String>,
    pub items: Vec<OrderItem>,
    pub total: Money,
    pub shipping_address: Address,
    pub payment: Option<PaymentSummary>,
    pub shipment: Option<ShipmentSummary>,
    pub timeline: Vec<TimelineEntry>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, SimpleObject, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Template {
    pub name: String,
    pub subject: String,
    pub body: String,
    pub variables: Vec<String>,
    pub shipped: bool,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, SimpleObject, Deserialize)]
pub struct Recommendation {
    pub product: Product,
    pub score: f64,
    /// Why it is recommended, in words.
    pub reason: String,
}

// ------------------------------------------------------------------ loaders

/// Products by id, from the catalog, a page of ids per call.
pub struct ProductLoader(SharedUpstreams);

impl Loader<String> for ProductLoader {
    type Value = Product;
    type Error = Arc<ServiceError>;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Product>, Self::Error> {
        let mut found = HashMap::new();
        for chunk in keys.chunks(100) {
            let path = format!(
                "/api/products?{}",
                query_string(&[
                    ("ids", Some(chunk.join(","))),
                    ("limit", Some(chunk.len().to_string())),
                ])
            );
            let page: Page<Product> = self
                .0
                .get("catalog")?
                .json(Method::GET, &path, None, None::<&()>)
                .await?;
            found.extend(page.items.into_iter().map(|p| (p.id.to_string(), p)));
        }
        Ok(found)
    }
}

/// Stock by product id, from inventory, a page of ids per call.
pub struct StockLoader(SharedUpstreams);

impl Loader<String> for StockLoader {
    type Value = Stock;
    type Error = Arc<ServiceError>;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Stock>, Self::Error> {
        let mut found = HashMap::new();
        for chunk in keys.chunks(100) {
            let path = format!(
                "/api/inventory/levels?{}",
                query_string(&[("productIds", Some(chunk.join(",")))])
            );
            let list: StockList = self
                .0
                .get("inventory")?
                .json(Method::GET, &path, None, None::<&()>)
                .await?;
            found.extend(
                list.items
                    .into_iter()
                    .map(|s| (s.product_id.to_string(), s)),
            );
        }
        Ok(found)
    }
}

#[derive(Deserialize)]
struct StockList {
    items: Vec<Stock>,
}

/// A loader's error, shared by every item of its batch.
fn batch_error(e: Arc<ServiceError>) -> async_graphql::Error {
    ServiceError::clone(&e).into()
}

// ------------------------------------------------------------------ queries

pub struct Query;

#[Object]
impl Query {
    /// The signed-in user.
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<User> {
        get(ctx, "users", "/api/users/me").await
    }

    /// Products for sale, newest first, optionally searched.
    #[graphql(complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1")]
    async fn products(
        &self,
        ctx: &Context<'_>,
        q: Option<String>,
        category: Option<String>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Product>> {
        let filters = vec![("q", q), ("category", category)];
        list(
            ctx,
            "catalog",
            "/api/products",
            filters,
            first,
            after,
            |p: &Product| p.id.as_str(),
        )
        .await
    }

    /// One product; null if missing or deleted.
    async fn product(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Product>> {
        find(
            ctx,
            "catalog",
            &format!("/api/products/{}", segment(&id, "id")?),
        )
        .await
    }

    /// The caller's orders (an admin's: everyone's, or one user's with `userId`).
    #[graphql(complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1")]
    async fn orders(
        &self,
        ctx: &Context<'_>,
        status: Option<OrderStatus>,
        user_id: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Order>> {
        let filters = vec![
            ("status", status.map(|s| s.as_rest().to_owned())),
            ("userId", user_id.map(|id| id.to_string())),
        ];
        list(
            ctx,
            "orders",
            "/api/orders",
            filters,
            first,
            after,
            |o: &Order| o.id.as_str(),
        )
        .await
    }

    /// One of the caller's orders (any order, for an admin); null if there is none.
    async fn order(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Order>> {
        find(
            ctx,
            "orders",
            &format!("/api/orders/{}", segment(&id, "id")?),
        )
        .await
    }

    /// A product's stock; null if the product is unknown or deleted.
    async fn inventory(
        &self,
        ctx: &Context<'_>,
        product_id: ID,
    ) -> async_graphql::Result<Option<Stock>> {
        find(
            ctx,
            "inventory",
            &format!("/api/inventory/{}", segment(&product_id, "productId")?),
        )
        .await
    }

    /// Products for the signed-in user, each with its reason.
    #[graphql(complexity = "limit.unwrap_or(10).max(0) as usize * child_complexity + 1")]
    async fn recommendations(
        &self,
        ctx: &Context<'_>,
        limit: Option<i32>,
    ) -> async_graphql::Result<Vec<Recommendation>> {
        let path = format!(
            "/api/recommendations/me?{}",
            query_string(&[("limit", limit.map(|l| l.to_string()))])
        );
        get(ctx, "recommendations", &path).await
    }

    /// Notification templates.
    #[graphql(complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1")]
    async fn templates(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Template>> {
        let filters = Vec::new();
        list(
            ctx,
            "notifications",
            "/api/templates",
            filters,
            first,
            after,
            |t: &Template| t.name.as_str(),
        )
        .await
    }
}

// ------------------------------------------------------------------ mutations

#[derive(InputObject, Serialize)]
pub struct RegisterInput {
    pub email: String,
    pub password: String,
    pub name: String,
}

#[derive(InputObject, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateProductInput {
    pub name: String,
    pub description: Option<String>,
    pub category: String,
    pub price: Money,
    pub initial_stock: Option<i64>,
}

/// Only the fields given change; `description: null` clears it.
#[derive(InputObject, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateProductInput {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "MaybeUndefined::is_undefined")]
    pub description: MaybeUndefined<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<Money>,
}

#[derive(InputObject, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderItemInput {
    pub product_id: ID,
    pub quantity: i64,
}

#[derive(InputObject, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AddressInput {
    pub name: String,
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    pub country: String,
}

#[derive(InputObject, Serialize)]
pub struct PaymentMethodInput {
    pub token: String,
}

/// The body of `POST /api/orders`.
#[derive(InputObject, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlaceOrderInput {
    pub items: Vec<OrderItemInput>,
    pub shipping_address: AddressInput,
    pub payment_method: PaymentMethodInput,
}

pub struct Mutation;

#[Object]
impl Mutation {
    async fn register(
        &self,
        ctx: &Context<'_>,
        input: RegisterInput,
    ) -> async_graphql::Result<AuthPayload> {
        send(ctx, "users", Method::POST, "/api/auth/register", &input).await
    }

    async fn login(
        &self,
        ctx: &Context<'_>,
        email: String,
        password: String,
    ) -> async_graphql::Result<AuthPayload> {
        let body = serde_json::json!({"email": email, "password": password});
        send(ctx, "users", Method::POST, "/api/auth/login", &body).await
    }

    /// Admin.
    async fn create_product(
        &self,
        ctx: &Context<'_>,
        input: CreateProductInput,
    ) -> async_graphql::Result<Product> {
        send(ctx, "catalog", Method::POST, "/api/products", &input).await
    }

    /// Admin.
    async fn update_product(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateProductInput,
    ) -> async_graphql::Result<Product> {
        let path = format!("/api/products/{}", segment(&id, "id")?);
        send(ctx, "catalog", Method::PATCH, &path, &input).await
    }

    /// Admin. True once the product is deleted.
    async fn delete_product(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        let path = format!("/api/products/{}", segment(&id, "id")?);
        service(ctx, "catalog")?
            .empty(Method::DELETE, &path, caller(ctx))
            .await?;
        Ok(true)
    }

    /// Admin: adds (or, negative, removes) units.
    async fn adjust_stock(
        &self,
        ctx: &Context<'_>,
        product_id: ID,
        delta: i64,
        reason: Option<String>,
    ) -> async_graphql::Result<StockLevels> {
        let path = format!(
            "/api/inventory/{}/adjust",
            segment(&product_id, "productId")?
        );
        let body = serde_json::json!({"delta": delta, "reason": reason});
        send(ctx, "inventory", Method::POST, &path, &body).await
    }

    /// Places an order; it is `PENDING` until the saga decides (follow it with `orderUpdated`).
    async fn place_order(
        &self,
        ctx: &Context<'_>,
        input: PlaceOrderInput,
    ) -> async_graphql::Result<Order> {
        send(ctx, "orders", Method::POST, "/api/orders", &input).await
    }

    async fn cancel_order(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Order> {
        let path = format!("/api/orders/{}/cancel", segment(&id, "id")?);
        send(ctx, "orders", Method::POST, &path, &serde_json::json!({})).await
    }
}

// ------------------------------------------------------------------ subscriptions

pub struct SubscriptionRoot;

/// The order events that change an order's status.
const STATUS_EVENTS: [&str; 4] = [
    "OrderConfirmed",
    "OrderCancelled",
    "OrderShipped",
    "OrderDelivered",
];

#[Subscription]
impl SubscriptionRoot {
    /// The order now, then again each time its status changes, until it is `DELIVERED` or
    /// `CANCELLED`. Only the order's owner (or an admin) may follow it.
    async fn order_updated(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Order>> + use<>> {
        let authorization = caller(ctx).cloned().ok_or_else(|| {
            async_graphql::Error::from(ServiceError {
                status: 401,
                code: "UNAUTHENTICATED".to_owned(),
                detail: "send `Authorization: Bearer <token>` in the connection_init payload"
                    .to_owned(),
                errors: Vec::new(),
            })
        })?;
        let orders = service(ctx, "orders")?.clone();
        let path = format!("/api/orders/{}", segment(&id, "id")?);
        // Listen before looking, so that no change falls between the two.
        let events = (ctx.data::<EventFeed>()?)();
        let first: Order = orders
            .json(Method::GET, &path, Some(&authorization), None::<&()>)
            .await?;
        let watch = Watch {
            orders,
            path,
            authorization,
            id: id.to_string(),
            events,
            last: None,
            pending: Some(first),
        };
        Ok(stream::unfold(watch, Watch::next))
    }
}

/// The state of one `orderUpdated` subscription.
struct Watch {
    orders: ServiceClient,
    path: String,
    authorization: HeaderValue,
    id: String,
    events: broadcast::Receiver<Arc<Envelope>>,
    last: Option<OrderStatus>,
    pending: Option<Order>,
}

impl Watch {
    async fn next(mut self) -> Option<(async_graphql::Result<Order>, Watch)> {
        loop {
            if let Some(order) = self.pending.take() {
                if self.last == Some(order.status) {
                    continue;
                }
                if self.last.is_some_and(OrderStatus::is_final) {
                    return None;
                }
                self.last = Some(order.status);
                return Some((Ok(order), self));
            }
            if self.last.is_some_and(OrderStatus::is_final) {
                return None;
            }
            match self.events.recv().await {
                Ok(event)
                    if event.aggregate_id == self.id
                        && STATUS_EVENTS.contains(&event.event.event_type()) => {}
                Ok(_) => continue,
                // Missed some: look at the order itself.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
            match self
                .orders
                .json::<Order>(
                    Method::GET,
                    &self.path,
                    Some(&self.authorization),
                    None::<&()>,
                )
                .await
            {
                Ok(order) => self.pending = Some(order),
                Err(e) => return Some((Err(e.into()), self)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Upstreams;

    /// `docs/schema.graphql` is the schema clients code against: it changes only on purpose
    /// (`EMPORIUM_BLESS=1 cargo test -p emporium-gateway` rewrites it).
    #[test]
    fn the_committed_sdl_is_the_schema_served() {
        let events: EventFeed = Arc::new(|| broadcast::channel(1).1);
        let sdl = schema(Arc::new(Upstreams::default()), events, 15, 5000).sdl();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/schema.graphql");
        if std::env::var_os("EMPORIUM_BLESS").is_some() {
            std::fs::write(path, &sdl).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == sdl,
            "docs/schema.graphql is out of date; rerun with EMPORIUM_BLESS=1 after a deliberate change"
        );
    }

    #[test]
    fn first_is_checked_like_rests_limit() {
        assert_eq!(page_size(None).unwrap(), None);
        assert_eq!(page_size(Some(100)).unwrap().as_deref(), Some("100"));
        assert!(page_size(Some(0)).is_err());
        assert!(page_size(Some(101)).is_err());
    }

    #[test]
    fn ids_cannot_change_the_path_they_are_put_in() {
        assert!(segment("0190b8a0-0000-7000-8000-000000000000", "id").is_ok());
        for bad in ["", "../users/me", "a/b", "a?b=c", "a%2Fb", &"x".repeat(65)] {
            assert!(segment(bad, "id").is_err(), "{bad}");
        }
    }
}
