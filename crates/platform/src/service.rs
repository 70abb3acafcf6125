//! What a service gives the platform, so that one composition root can run any of them, all in one
//! process (embedded) or one per process (distributed), with the same code.

use std::{future::Future, sync::Arc};

use async_trait::async_trait;
use axum::Router;
use emporium_events::Topic;
use tokio::{sync::watch, task::JoinSet};

use crate::{
    auth::Tokens,
    bus::{
        BusError, EventBus, Subscription,
        consumer::{Consumer, EventHandler, RetryPolicy},
    },
    cache::Cache,
    config::Config,
    storage::{Db, Migration},
};

/// Everything a service needs at run time.
#[derive(Clone)]
pub struct ServiceContext {
    pub name: &'static str,
    pub db: Db,
    pub bus: Arc<dyn EventBus>,
    pub config: Arc<Config>,
    pub tokens: Arc<Tokens>,
    /// The process's one cache (Redis when `redis_url` is set, shared by every instance; else in
    /// process), shared by its services: keys are namespaced by service (`catalog:...`).
    pub cache: Arc<dyn Cache>,
    /// Turns true when the platform stops: background loops end.
    pub stop: watch::Receiver<bool>,
}

/// A service's consumers and background tasks, stopped together.
#[derive(Default)]
pub struct Workers {
    subscriptions: Vec<Subscription>,
    tasks: JoinSet<()>,
}

impl Workers {
    /// Consumes `topics` with `handler` in the service's consumer group (named after the service).
    pub async fn consume<H: EventHandler>(
        &mut self,
        ctx: &ServiceContext,
        topics: &[Topic],
        handler: H,
    ) -> Result<(), BusError> {
        let topics: Vec<&str> = topics.iter().map(|t| t.as_str()).collect();
        let consumer = Consumer::new(
            ctx.name,
            ctx.name,
            ctx.db.clone(),
            ctx.bus.clone(),
            handler,
            RetryPolicy::from_config(&ctx.config.bus),
        );
        self.subscriptions.push(
            consumer
                .spawn(&topics, ctx.config.bus.consumer_batch)
                .await?,
        );
        Ok(())
    }

    /// Keeps a subscription made some other way (for example the dead-letter collector).
    pub fn keep(&mut self, subscription: Subscription) {
        self.subscriptions.push(subscription);
    }

    /// Runs a background loop; it must end when `ctx.stop` turns true.
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    /// Stops consumers (their batch in progress finishes) and waits for the background loops.
    pub async fn stop(mut self) {
        for subscription in self.subscriptions {
            subscription.stop().await;
        }
        while self.tasks.join_next().await.is_some() {}
    }
}

/// A service of the platform.
#[async_trait]
pub trait Service: Send + Sync + 'static {
    /// Its name: database, consumer group, `source` of its events, metrics label.
    fn name(&self) -> &'static str;

    /// Its schema (versions from 100 up; the platform's own tables come first).
    fn migrations(&self) -> &'static [Migration];

    /// Its `/api/...` routes. The platform adds `Arc<Tokens>` to the request extensions, the
    /// correlation-id layer and the error conventions around them.
    fn router(&self, ctx: &ServiceContext) -> Router;

    /// The topics its consumer group (named after it) reads; none by default. The operations
    /// service reports the lag of every service's group from this, wherever the service runs.
    fn topics(&self) -> Vec<Topic> {
        Vec::new()
    }

    /// Starts its consumers and background loops (and anything it must do at start-up); its
    /// consumer group reads [`Service::topics`].
    async fn start(&self, ctx: &ServiceContext, workers: &mut Workers) -> anyhow::Result<()>;
}
