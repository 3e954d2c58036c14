//! Server mode: each side on real NATS JetStream and PostgreSQL/CockroachDB.
//! Every process creates the streams, buckets and tables it touches
//! (idempotently), so they can start in any order and scale to N copies.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use async_nats::jetstream;
use gateway::{Gateway, Services};
use read_side::nats::{JetStreamEventFeed, NatsNotifier};
use read_side::{Projector, ViewStore, projections};
use schema::Namespace;
use schema::nats::{StreamSettings, ensure_commands_stream, ensure_events_stream, ensure_outcomes_bucket};
use schema::nats_bus::{NatsCommandBus, NatsReadiness};
use schema::ports::{EventFeed, EventLog, Notifier, Readiness};
use sqlx::AnyPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use write_side::nats::{ConsumerSettings, JetStreamEventPublisher, run_command_consumer};
use write_side::{CommandHandler, OutboxRelay, RelaySettings, SagaRunner, SqlEventStore};

use crate::config::{Common, Server, WriteSideArgs};

/// Connections shared by the sides in one process.
#[derive(Clone)]
pub struct Infra {
    pub client: async_nats::Client,
    pub pool: AnyPool,
    pub ns: Namespace,
    pub streams: StreamSettings,
}

impl Infra {
    /// Connects to both, failing fast with one line naming what is unreachable.
    pub async fn connect(common: &Common, server: &Server, role: &str) -> anyhow::Result<Self> {
        let ns = Namespace::new(&common.namespace)?;
        let client = schema::nats::connect(&server.nats, &format!("conveyor-{role}"))
            .await
            .with_context(|| format!("cannot reach NATS at {}", server.nats))?;
        let pool = schema::sql::connect(&server.database, server.db_connections)
            .await
            .with_context(|| format!("cannot reach the database at {}", redact(&server.database)))?;
        let streams = StreamSettings { replicas: server.stream_replicas, ..Default::default() };
        Ok(Self { client, pool, ns, streams })
    }

    fn event_store(&self) -> SqlEventStore {
        SqlEventStore::new(self.pool.clone())
    }
}

/// A URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Starts the command consumers (one per aggregate group), the outbox
/// relay, and, with the order group, the order saga.
pub async fn start_write_side(
    infra: &Infra,
    common: &Common,
    aggregates: &[&'static str],
    consumer: ConsumerSettings,
    tasks: &mut JoinSet<anyhow::Result<()>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let store = infra.event_store();
    store.migrate().await.context("event store migration failed")?;
    let js = jetstream::new(infra.client.clone());
    ensure_commands_stream(&js, &infra.ns, &infra.streams).await.context("cannot create the commands stream")?;
    ensure_events_stream(&js, &infra.ns, &infra.streams).await.context("cannot create the events stream")?;
    let outcomes =
        ensure_outcomes_bucket(&js, &infra.ns, &infra.streams).await.context("cannot create the outcomes bucket")?;
    let publisher = Arc::new(JetStreamEventPublisher::new(js, infra.ns.clone()));
    let handler = CommandHandler::new(store.clone(), publisher.clone(), Arc::new(common.domain.provider()));
    if aggregates.contains(&schema::order::AGGREGATE) {
        let bus = Arc::new(NatsCommandBus::new(infra.client.clone(), outcomes.clone(), infra.ns.clone()));
        let saga = SagaRunner::new(store.clone(), bus, common.domain.saga());
        let feed: Arc<dyn EventFeed> =
            Arc::new(JetStreamEventFeed::new(infra.client.clone(), infra.ns.clone()).with_ack_wait(consumer.ack_wait));
        let stop = shutdown.clone();
        tasks.spawn(async move {
            saga.run(feed, stop).await;
            Ok(())
        });
    }
    let relay = OutboxRelay::new(store, publisher, RelaySettings::default());
    let stop = shutdown.clone();
    tasks.spawn(async move {
        relay.run(stop).await;
        Ok(())
    });
    for &aggregate in aggregates {
        let (client, ns, handler, outcomes, stop) =
            (infra.client.clone(), infra.ns.clone(), handler.clone(), outcomes.clone(), shutdown.clone());
        let settings = consumer.clone();
        tasks.spawn(async move {
            run_command_consumer(client, ns, aggregate, handler, outcomes, settings, stop)
                .await
                .map_err(|error| anyhow::anyhow!("{aggregate} command consumer failed: {error}"))
        });
    }
    Ok(())
}

/// Starts one projector per view, each with its workers.
pub async fn start_read_side(
    infra: &Infra,
    common: &Common,
    tasks: &mut JoinSet<anyhow::Result<()>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    read_side::migrate(&infra.pool).await.context("view migration failed")?;
    // Projectors read missing events from the store, which may not exist yet.
    infra.event_store().migrate().await.context("event store migration failed")?;
    let js = jetstream::new(infra.client.clone());
    ensure_events_stream(&js, &infra.ns, &infra.streams).await.context("cannot create the events stream")?;
    let feed: Arc<dyn EventFeed> = Arc::new(JetStreamEventFeed::new(infra.client.clone(), infra.ns.clone()));
    let log: Arc<dyn EventLog> = Arc::new(infra.event_store());
    let notifier: Arc<dyn Notifier> = Arc::new(NatsNotifier::new(infra.client.clone(), infra.ns.clone()));
    for projection in projections() {
        let projector = Projector::new(infra.pool.clone(), projection, log.clone(), notifier.clone())
            .with_batch(common.projector_batch)
            .with_workers(common.projector_workers);
        let (feed, stop) = (feed.clone(), shutdown.clone());
        tasks.spawn(async move {
            projector.run(feed, false, stop).await;
            Ok(())
        });
    }
    Ok(())
}

/// Binds the gateway; returns its address and its view store (whose
/// statement count tests read). It serves until `shutdown`.
pub async fn start_gateway(
    infra: &Infra,
    common: &Common,
    tasks: &mut JoinSet<anyhow::Result<()>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<(SocketAddr, ViewStore)> {
    read_side::migrate(&infra.pool).await.context("view migration failed")?;
    let js = jetstream::new(infra.client.clone());
    ensure_commands_stream(&js, &infra.ns, &infra.streams).await.context("cannot create the commands stream")?;
    let outcomes =
        ensure_outcomes_bucket(&js, &infra.ns, &infra.streams).await.context("cannot create the outcomes bucket")?;
    let views = ViewStore::new(infra.pool.clone());
    let services = Services::new(
        Arc::new(NatsCommandBus::new(infra.client.clone(), outcomes, infra.ns.clone())),
        views.clone(),
        Arc::new(NatsNotifier::new(infra.client.clone(), infra.ns.clone())),
        common.mutation_wait,
        shutdown.clone(),
    );
    let readiness: Vec<(&'static str, Arc<dyn Readiness>)> =
        vec![("nats", Arc::new(NatsReadiness(infra.client.clone()))), ("database", Arc::new(views.clone()))];
    let gateway = Gateway::build(&common.http()?, services, readiness)
        .await
        .with_context(|| format!("cannot listen on {}", common.listen))?;
    let address = gateway.local_addr()?;
    tasks.spawn(async move { gateway.run_until_stopped().await.context("gateway failed") });
    Ok((address, views))
}

/// Waits for every task; the first failure stops the others.
pub async fn supervise(mut tasks: JoinSet<anyhow::Result<()>>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let result = joined.map_err(anyhow::Error::from).and_then(|result| result);
        if let Err(error) = result {
            tracing::error!(error = %format!("{error:#}"), "component failed; stopping");
            shutdown.cancel();
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(()), Err)
}

pub async fn run_gateway(common: &Common, server: &Server, shutdown: CancellationToken) -> anyhow::Result<()> {
    let infra = Infra::connect(common, server, "gateway").await?;
    let mut tasks = JoinSet::new();
    let (address, _) = start_gateway(&infra, common, &mut tasks, &shutdown).await?;
    tracing::info!(namespace = %infra.ns, "gateway serving GraphQL at http://{address}/graphql, the order page at /app, GraphiQL at /graphiql");
    finish(infra, tasks, shutdown).await
}

pub async fn run_write_side(common: &Common, args: &WriteSideArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let infra = Infra::connect(common, &args.server, "write-side").await?;
    let aggregates: Vec<&'static str> = if args.only.is_empty() {
        write_side::AGGREGATES.to_vec()
    } else {
        args.only.iter().map(|aggregate| aggregate.name()).collect()
    };
    let mut tasks = JoinSet::new();
    let consumer = ConsumerSettings { concurrency: args.concurrency, ack_wait: args.ack_wait, ..Default::default() };
    start_write_side(&infra, common, &aggregates, consumer, &mut tasks, &shutdown).await?;
    tracing::info!(namespace = %infra.ns, ?aggregates, "write side running");
    finish(infra, tasks, shutdown).await
}

pub async fn run_read_side(common: &Common, server: &Server, shutdown: CancellationToken) -> anyhow::Result<()> {
    let infra = Infra::connect(common, server, "read-side").await?;
    let mut tasks = JoinSet::new();
    start_read_side(&infra, common, &mut tasks, &shutdown).await?;
    tracing::info!(namespace = %infra.ns, "read side running");
    finish(infra, tasks, shutdown).await
}

pub async fn run_all(common: &Common, server: &Server, shutdown: CancellationToken) -> anyhow::Result<()> {
    let infra = Infra::connect(common, server, "all").await?;
    let mut tasks = JoinSet::new();
    start_write_side(&infra, common, write_side::AGGREGATES, ConsumerSettings::default(), &mut tasks, &shutdown)
        .await?;
    start_read_side(&infra, common, &mut tasks, &shutdown).await?;
    let (address, _) = start_gateway(&infra, common, &mut tasks, &shutdown).await?;
    tracing::info!(namespace = %infra.ns, "conveyor (all sides) serving GraphQL at http://{address}/graphql, the order page at /app, GraphiQL at /graphiql");
    finish(infra, tasks, shutdown).await
}

/// Runs until stopped, then flushes what NATS still buffers.
async fn finish(infra: Infra, tasks: JoinSet<anyhow::Result<()>>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let result = supervise(tasks, shutdown).await;
    if let Err(error) = infra.client.flush().await {
        tracing::warn!(%error, "could not flush NATS on shutdown");
    }
    infra.pool.close().await;
    tracing::info!("stopped");
    result
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(super::redact("postgres://app:s3cret@db:5432/x"), "postgres://app:***@db:5432/x");
        assert_eq!(super::redact("postgres://db:5432/x"), "postgres://db:5432/x");
    }
}
