//! The gateway: Emporium's one entry point (CONTRACT.md §1–§3).
//!
//! - REST: `/api/<resource>` goes unchanged to the service that owns it ([`client::ROUTES`]),
//!   through one [`client::ServiceClient`] per service whose transport is the service's router in
//!   this process (embedded) or its HTTP address (distributed).
//! - GraphQL at `/graphql` (GraphiQL on `GET`), subscriptions at `/graphql/ws` ([`graphql`]).
//! - At the edge, before any service ([`edge`]): a bad token is refused (each service checks the
//!   token again: none trusts a header a client could set), per-client rate limits (429 with
//!   `Retry-After`), CORS from configuration, security headers.
//!
//! It owns no data and consumes no events itself: subscriptions read the live event flow it is
//! given.

pub mod client;
pub mod edge;
pub mod graphql;

use std::sync::Arc;

use async_graphql::http::GraphiQLSource;
use async_graphql_axum::{GraphQLProtocol, GraphQLRequest, GraphQLResponse, GraphQLWebSocket};
use axum::{
    Router,
    extract::{Request, State, WebSocketUpgrade},
    http::{HeaderMap, HeaderValue, header},
    middleware,
    response::{Html, IntoResponse, Response},
    routing::{any, get},
};
use emporium_platform::{api::ApiError, auth::Tokens, config::GatewayConfig};
use tower_http::limit::RequestBodyLimitLayer;

use crate::{
    client::{SharedUpstreams, Upstreams},
    graphql::{Caller, EmporiumSchema, EventFeed},
};

/// What the gateway is built from.
pub struct Gateway {
    pub upstreams: Upstreams,
    pub tokens: Arc<Tokens>,
    pub events: EventFeed,
    pub config: GatewayConfig,
    /// Largest request body, bytes.
    pub body_limit: usize,
}

#[derive(Clone)]
struct GraphqlState {
    schema: EmporiumSchema,
    upstreams: SharedUpstreams,
    tokens: Arc<Tokens>,
}

impl Gateway {
    /// The GraphQL schema this gateway serves (also for writing its SDL).
    pub fn schema(&self, upstreams: SharedUpstreams) -> EmporiumSchema {
        graphql::schema(
            upstreams,
            self.events.clone(),
            self.config.graphql_depth_limit,
            self.config.graphql_complexity_limit,
        )
    }

    /// `/api/*` forwarding and GraphQL, behind the edge's guard, CORS and security headers.
    pub fn router(self) -> Router {
        let upstreams: SharedUpstreams = Arc::new(self.upstreams.clone());
        let state = GraphqlState {
            schema: self.schema(upstreams.clone()),
            upstreams: upstreams.clone(),
            tokens: self.tokens.clone(),
        };
        let edge = edge::Edge {
            tokens: self.tokens.clone(),
            limiter: Arc::new(edge::Limiter::new(&self.config)),
        };
        let graphql = Router::new()
            .route("/graphql", get(graphiql).post(execute))
            .route("/graphql/ws", get(subscribe))
            .with_state(state)
            .layer(RequestBodyLimitLayer::new(self.body_limit));
        let rest = Router::new()
            .route("/api/{*path}", any(forward))
            .with_state(upstreams);
        let mut router = graphql
            .merge(rest)
            .layer(middleware::from_fn_with_state(edge, edge::guard));
        if let Some(cors) = edge::cors(&self.config.cors_origins) {
            router = router.layer(cors);
        }
        router.layer(middleware::from_fn(edge::security_headers))
    }
}

async fn forward(State(upstreams): State<SharedUpstreams>, request: Request) -> Response {
    let Some(service) = client::owner(request.uri().path()) else {
        return ApiError::not_found("no such resource").into_response();
    };
    match upstreams.get(service) {
        Ok(client) => client.call(request).await,
        Err(_) => ApiError::unavailable(format!("the {service} service has no address configured"))
            .into_response(),
    }
}

async fn execute(
    State(state): State<GraphqlState>,
    headers: HeaderMap,
    request: GraphQLRequest,
) -> GraphQLResponse {
    let caller = Caller {
        authorization: headers.get(header::AUTHORIZATION).cloned(),
    };
    let request = graphql::request_data(request.into_inner(), &state.upstreams, caller);
    state.schema.execute(request).await.into()
}

/// GraphiQL loads its scripts from a CDN: its page gets a policy that allows just that.
async fn graphiql() -> Response {
    let page = GraphiQLSource::build()
        .endpoint("/graphql")
        .subscription_endpoint("/graphql/ws")
        .finish();
    let mut response = Html(page).into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self' 'unsafe-inline' https://unpkg.com; \
             style-src 'self' 'unsafe-inline' https://unpkg.com; img-src 'self' data: https://unpkg.com; \
             connect-src 'self' ws: wss:; font-src 'self' data: https://unpkg.com",
        ),
    );
    response
}

/// `graphql-transport-ws` (or the older `graphql-ws`). The token comes in the `connection_init`
/// payload (`{"Authorization": "Bearer ..."}`), since browsers cannot set headers on a WebSocket;
/// a bad token closes the connection there.
async fn subscribe(
    State(state): State<GraphqlState>,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| {
            let schema = state.schema.clone();
            let upstreams = state.upstreams.clone();
            let tokens = state.tokens.clone();
            GraphQLWebSocket::new(socket, schema, protocol)
                .on_connection_init(move |payload| async move {
                    let authorization = connection_token(&payload);
                    if let Some(value) = &authorization {
                        let token = value
                            .to_str()
                            .ok()
                            .and_then(|v| v.strip_prefix("Bearer "))
                            .unwrap_or_default();
                        tokens
                            .verify(token)
                            .map_err(|e| async_graphql::Error::new(e.detail))?;
                    }
                    let mut data = async_graphql::Data::default();
                    data.insert(Caller { authorization });
                    let (products, stock) = graphql::loaders(&upstreams);
                    data.insert(products);
                    data.insert(stock);
                    Ok(data)
                })
                .serve()
        })
}

/// `Authorization` (any case) from a `connection_init` payload.
fn connection_token(payload: &serde_json::Value) -> Option<HeaderValue> {
    let object = payload.as_object()?;
    object
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case("authorization"))
        .and_then(|(_, value)| value.as_str())
        .and_then(|value| HeaderValue::from_str(value).ok())
}
