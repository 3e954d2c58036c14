//! Server mode: each side on real NATS JetStream and PostgreSQL/CockroachDB.
//! Every process creates the streams, buckets and tables it touches
//! (idempotently), so they can start in any order and scale to N copies.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use async_nats::jetstream;
use gateway::{Admission, Gateway, Services};
use read_side::nats::{JetStreamEventFeed, NatsNotifier};
use read_side::{Projector, ViewStore, projections};
use schema::Namespace;
use schema::dead_letters::ensure_dead_letter_stream;
use schema::nats::{StreamSettings, ensure_commands_stream, ensure_events_stream, ensure_outcomes_bucket};
use schema::nats_bus::{NatsCommandBus, NatsReadiness};
use schema::ports::{Backlog, EventFeed, EventLog, Notifier, Readiness};
use sqlx::AnyPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use write_side::nats::{ConsumerSettings, JetStreamEventPublisher, run_command_consumer};
use write_side::{CommandHandler, OutboxRelay, RelaySettings, SagaRunner, SqlBacklog, SqlEventStore, StepRoute};

use schema::metrics::Sampler;

use crate::config::{Common, Server, WriteSideArgs};

/// Connections shared by the sides in one process.
#[derive(Clone)]
pub struct Infra {
    /// The write side's NATS connection (the only one in a one-side process).
    pub client: async_nats::Client,
    /// The read side's: `client` again in a one-side process, its own in
    /// `conveyor all` (and as its own NATS user in the e2e suite).
    pub read_client: async_nats::Client,
    /// The gateway's, likewise.
    pub gateway_client: async_nats::Client,
    /// The write side's pool (event store, sagas).
    pub pool: AnyPool,
    /// The projectors' pool: the same as `pool` in a one-side process, its
    /// own in `conveyor all`, so that a busy side cannot starve another.
    pub read_pool: AnyPool,
    /// The gateway's pool (view queries), likewise.
    pub gateway_pool: AnyPool,
    pub ns: Namespace,
    pub streams: StreamSettings,
    /// Deliveries before a consumer dead-letters a message (`--max-deliver`).
    pub max_deliver: i64,
}

impl Infra {
    /// Connects to both, failing fast with one line naming what is unreachable.
    pub async fn connect(common: &Common, server: &Server, role: &str, sides: Sides) -> anyhow::Result<Self> {
        let mut infra = Self::connect_write_side(common, server, role, sides).await?;
        if sides == Sides::All {
            infra.read_client = nats(server, "read-side").await?;
            infra.gateway_client = nats(server, "gateway").await?;
        }
        Ok(infra)
    }

    /// All sides in one process, each connected to NATS with its own
    /// settings (the e2e suite: each side as its own NATS user, so the
    /// permissions of scripts/nats-server.conf are what every side meets).
    pub async fn connect_each(
        common: &Common,
        write_side: &Server,
        read_side: &Server,
        gateway: &Server,
    ) -> anyhow::Result<Self> {
        let mut infra = Self::connect_write_side(common, write_side, "write-side", Sides::All).await?;
        infra.read_client = nats(read_side, "read-side").await?;
        infra.gateway_client = nats(gateway, "gateway").await?;
        Ok(infra)
    }

    async fn connect_write_side(common: &Common, server: &Server, role: &str, sides: Sides) -> anyhow::Result<Self> {
        let ns = Namespace::new(&common.namespace)?;
        let client = nats(server, role).await?;
        let connect = |size: u32, reads_only: bool| async move {
            let pool = if reads_only {
                schema::sql::connect_reader(&server.database, size).await
            } else {
                schema::sql::connect(&server.database, size).await
            };
            pool.with_context(|| format!("cannot reach the database at {}", redact(&server.database)))
        };
        // The gateway only reads (views, the saga backlog), one statement
        // at a time: its pool stays out of serializable isolation.
        let pool = connect(server.db_connections, role == GATEWAY_ROLE).await?;
        let (read_pool, gateway_pool) = if sides == Sides::All {
            let share = (server.db_connections / 2).max(2);
            (connect(share, false).await?, connect(share, true).await?)
        } else {
            (pool.clone(), pool.clone())
        };
        let streams = server.streams();
        Ok(Self {
            read_client: client.clone(),
            gateway_client: client.clone(),
            client,
            pool,
            read_pool,
            gateway_pool,
            ns,
            streams,
            max_deliver: server.max_deliver,
        })
    }

    /// The event store, for reading (projectors' gap repair).
    fn event_log(&self) -> SqlEventStore {
        SqlEventStore::new(self.read_pool.clone())
    }
}

/// Connects to NATS as `server` says, named after the process's role.
async fn nats(server: &Server, role: &str) -> anyhow::Result<async_nats::Client> {
    schema::nats::connect(&server.nats, &format!("conveyor-{role}"), &server.nats_auth.auth()?)
        .await
        .with_context(|| format!("cannot reach NATS at {}", redact(&server.nats)))
}

/// The role of a gateway-only process (its pool only reads).
const GATEWAY_ROLE: &str = "gateway";

/// Which sides a process runs: one, or all of them (each gets its own pool).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sides {
    One,
    All,
}

/// A URL without its password (or token), for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                // A token alone.
                None => format!("{}***{}", &url[..scheme + 3], &url[at..]),
            }
        }
        _ => url.to_string(),
    }
}

/// Starts the command consumers (one per aggregate group), the outbox
/// relay, and, with the order group, the order saga (installed before any
/// command is taken: orders start their sagas in their own transaction).
pub async fn start_write_side(
    infra: &Infra,
    common: &Common,
    aggregates: &[&'static str],
    consumer: ConsumerSettings,
    tasks: &mut JoinSet<anyhow::Result<()>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Vec<Sampler>> {
    let js = jetstream::new(infra.client.clone());
    let mut samplers = vec![crate::metrics::pool("write", infra.pool.clone())];
    for aggregate in aggregates {
        let consumer = format!("write_side_{aggregate}");
        samplers.push(crate::metrics::consumer(js.clone(), &infra.ns, "COMMANDS", consumer));
    }
    ensure_commands_stream(&js, &infra.ns, &infra.streams).await.context("cannot create the commands stream")?;
    ensure_events_stream(&js, &infra.ns, &infra.streams).await.context("cannot create the events stream")?;
    let outcomes =
        ensure_outcomes_bucket(&js, &infra.ns, &infra.streams).await.context("cannot create the outcomes bucket")?;
    ensure_dead_letter_stream(&js, &infra.ns, &infra.streams.dead_letters, infra.streams.replicas)
        .await
        .context("cannot create the dead-letter stream")?;
    let publisher = Arc::new(JetStreamEventPublisher::new(js, infra.ns.clone()));
    let store =
        SqlEventStore::publishing(infra.pool.clone(), publisher.clone(), common.stream_events.lanes(&infra.pool));
    store.migrate().await.context("event store migration failed")?;
    let handler = CommandHandler::new(store.clone(), Arc::new(common.domain.provider()))
        .with_provider_timeout(common.domain.saga_step_timeout);
    if aggregates.contains(&schema::order::AGGREGATE) {
        let route = if write_side::AGGREGATES.iter().all(|group| aggregates.contains(group)) {
            StepRoute::local(handler.clone(), aggregates)
        } else {
            let bus = Arc::new(NatsCommandBus::new(infra.client.clone(), outcomes.clone(), infra.ns.clone()));
            StepRoute::split(handler.clone(), aggregates, bus)
        };
        let saga =
            SagaRunner::new(store.clone(), route, common.domain.saga()).context("cannot start the order saga")?;
        samplers.push(crate::metrics::sagas(Arc::new(SqlBacklog::new(infra.pool.clone()))));
        samplers.push(crate::metrics::write_side(store.clone(), Some(saga.clone())));
        let stop = shutdown.clone();
        tasks.spawn(async move {
            saga.run(stop).await;
            Ok(())
        });
    }
    if !aggregates.contains(&schema::order::AGGREGATE) {
        samplers.push(crate::metrics::write_side(store.clone(), None));
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
        let settings = ConsumerSettings { max_deliver: infra.max_deliver, ..consumer.clone() };
        tasks.spawn(async move {
            run_command_consumer(client, ns, aggregate, handler, outcomes, settings, stop)
                .await
                .map_err(|error| anyhow::anyhow!("{aggregate} command consumer failed: {error}"))
        });
    }
    Ok(samplers)
}

/// Starts one projector per view, each with its workers.
pub async fn start_read_side(
    infra: &Infra,
    common: &Common,
    tasks: &mut JoinSet<anyhow::Result<()>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Vec<Sampler>> {
    read_side::migrate(&infra.read_pool).await.context("view migration failed")?;
    // Projectors read missing events from the store, which may not exist yet.
    infra.event_log().migrate().await.context("event store migration failed")?;
    let js = jetstream::new(infra.read_client.clone());
    ensure_events_stream(&js, &infra.ns, &infra.streams).await.context("cannot create the events stream")?;
    ensure_dead_letter_stream(&js, &infra.ns, &infra.streams.dead_letters, infra.streams.replicas)
        .await
        .context("cannot create the dead-letter stream")?;
    let feed: Arc<dyn EventFeed> = Arc::new(
        JetStreamEventFeed::new(infra.read_client.clone(), infra.ns.clone()).with_max_deliver(infra.max_deliver),
    );
    let log: Arc<dyn EventLog> = Arc::new(infra.event_log());
    let notifier: Arc<dyn Notifier> = Arc::new(NatsNotifier::new(infra.read_client.clone(), infra.ns.clone()));
    let mut samplers = vec![crate::metrics::pool("read", infra.read_pool.clone())];
    for projection in projections() {
        let projector = Projector::new(infra.read_pool.clone(), projection, log.clone(), notifier.clone())
            .with_batch(common.projector_batch)
            .with_workers(common.projector_workers);
        let consumer = format!("projector_{}", projector.name());
        samplers.push(crate::metrics::consumer(js.clone(), &infra.ns, "EVENTS", consumer));
        samplers.push(crate::metrics::projector(projector.clone()));
        let (feed, stop) = (feed.clone(), shutdown.clone());
        tasks.spawn(async move {
            projector.run(feed, false, stop).await;
            Ok(())
        });
    }
    Ok(samplers)
}

/// A bound gateway, with the handles tests read.
pub struct StartedGateway {
    pub address: SocketAddr,
    /// The gRPC API's address (docs/grpc.md).
    pub grpc_address: Option<SocketAddr>,
    /// Its view store (whose statement count tests read).
    pub views: ViewStore,
    /// Its admission limits and backlog readings.
    pub admission: Admission,
}

/// Binds the gateway, which serves until `shutdown`.
pub async fn start_gateway(
    infra: &Infra,
    common: &Common,
    tasks: &mut JoinSet<anyhow::Result<()>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<StartedGateway> {
    read_side::migrate(&infra.gateway_pool).await.context("view migration failed")?;
    let js = jetstream::new(infra.gateway_client.clone());
    ensure_commands_stream(&js, &infra.ns, &infra.streams).await.context("cannot create the commands stream")?;
    let outcomes =
        ensure_outcomes_bucket(&js, &infra.ns, &infra.streams).await.context("cannot create the outcomes bucket")?;
    let views = ViewStore::new(infra.gateway_pool.clone());
    // The sagas live in the same database as the views this pool reaches.
    let backlog: Arc<dyn Backlog> = Arc::new(SqlBacklog::new(infra.gateway_pool.clone()));
    let admission = Admission::start(common.admission(), Some(backlog), shutdown.clone());
    let services = Services::new(
        Arc::new(NatsCommandBus::new(infra.gateway_client.clone(), outcomes, infra.ns.clone())),
        views.clone(),
        Arc::new(NatsNotifier::new(infra.gateway_client.clone(), infra.ns.clone())),
        common.mutation_wait,
        shutdown.clone(),
    )
    .with_admission(admission.clone())
    // gRPC's EventStore reads the store on the gateway's read-only pool.
    .with_event_log(Arc::new(SqlEventStore::new(infra.gateway_pool.clone())));
    let readiness: Vec<(&'static str, Arc<dyn Readiness>)> =
        vec![("nats", Arc::new(NatsReadiness(infra.gateway_client.clone()))), ("database", Arc::new(views.clone()))];
    let gateway = Gateway::build(&common.http()?, services, readiness)
        .await
        .with_context(|| format!("cannot listen on {} (GraphQL) or {} (gRPC)", common.listen, common.grpc_listen))?;
    let address = gateway.local_addr()?;
    let grpc_address = gateway.grpc_addr()?;
    tasks.spawn(async move { gateway.run_until_stopped().await.context("gateway failed") });
    Ok(StartedGateway { address, grpc_address, views, admission })
}

/// Says where the gRPC API listens.
pub fn log_grpc(address: Option<SocketAddr>) {
    if let Some(address) = address {
        tracing::info!("gRPC API (conveyor.v1.Orders, conveyor.v1.EventStore, health, reflection) at {address}");
    }
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
    // A bad setting fails before anything is reached.
    common.stream_events.settings()?;
    let infra = Infra::connect(common, server, GATEWAY_ROLE, Sides::One).await?;
    let mut tasks = JoinSet::new();
    let started = start_gateway(&infra, common, &mut tasks, &shutdown).await?;
    let address = started.address;
    let samplers = vec![crate::metrics::pool("gateway", infra.gateway_pool.clone())];
    crate::metrics::serve(common.metrics_listen, samplers, &mut tasks, &shutdown).await?;
    tracing::info!(namespace = %infra.ns, "gateway serving GraphQL at http://{address}/graphql, the order page at /app, GraphiQL at /graphiql");
    log_grpc(started.grpc_address);
    finish(infra, tasks, shutdown).await
}

pub async fn run_write_side(common: &Common, args: &WriteSideArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let infra = Infra::connect(common, &args.server, "write-side", Sides::One).await?;
    let aggregates: Vec<&'static str> = if args.only.is_empty() {
        write_side::AGGREGATES.to_vec()
    } else {
        args.only.iter().map(|aggregate| aggregate.name()).collect()
    };
    let mut tasks = JoinSet::new();
    let consumer = ConsumerSettings { concurrency: args.concurrency, ack_wait: args.ack_wait, ..Default::default() };
    let samplers = start_write_side(&infra, common, &aggregates, consumer, &mut tasks, &shutdown).await?;
    crate::metrics::serve(common.metrics_listen, samplers, &mut tasks, &shutdown).await?;
    tracing::info!(namespace = %infra.ns, ?aggregates, "write side running");
    finish(infra, tasks, shutdown).await
}

pub async fn run_read_side(common: &Common, server: &Server, shutdown: CancellationToken) -> anyhow::Result<()> {
    let infra = Infra::connect(common, server, "read-side", Sides::One).await?;
    let mut tasks = JoinSet::new();
    let samplers = start_read_side(&infra, common, &mut tasks, &shutdown).await?;
    crate::metrics::serve(common.metrics_listen, samplers, &mut tasks, &shutdown).await?;
    tracing::info!(namespace = %infra.ns, "read side running");
    finish(infra, tasks, shutdown).await
}

pub async fn run_all(common: &Common, server: &Server, shutdown: CancellationToken) -> anyhow::Result<()> {
    // A bad setting fails before anything is reached.
    common.stream_events.settings()?;
    let infra = Infra::connect(common, server, "all", Sides::All).await?;
    let mut tasks = JoinSet::new();
    let mut samplers =
        start_write_side(&infra, common, write_side::AGGREGATES, ConsumerSettings::default(), &mut tasks, &shutdown)
            .await?;
    samplers.extend(start_read_side(&infra, common, &mut tasks, &shutdown).await?);
    let started = start_gateway(&infra, common, &mut tasks, &shutdown).await?;
    let address = started.address;
    samplers.push(crate::metrics::pool("gateway", infra.gateway_pool.clone()));
    crate::metrics::serve(common.metrics_listen, samplers, &mut tasks, &shutdown).await?;
    tracing::info!(namespace = %infra.ns, "conveyor (all sides) serving GraphQL at http://{address}/graphql, the order page at /app, GraphiQL at /graphiql");
    log_grpc(started.grpc_address);
    finish(infra, tasks, shutdown).await
}

/// Runs until stopped, then flushes what NATS still buffers.
async fn finish(infra: Infra, tasks: JoinSet<anyhow::Result<()>>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let result = supervise(tasks, shutdown).await;
    for client in [&infra.client, &infra.read_client, &infra.gateway_client] {
        if let Err(error) = client.flush().await {
            tracing::warn!(%error, "could not flush NATS on shutdown");
        }
    }
    infra.pool.close().await;
    infra.read_pool.close().await;
    infra.gateway_pool.close().await;
    tracing::info!("stopped");
    result
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(super::redact("postgres://app:s3cret@db:5432/x"), "postgres://app:***@db:5432/x");
        assert_eq!(super::redact("postgres://db:5432/x"), "postgres://db:5432/x");
        assert_eq!(super::redact("nats://s3cret-token@nats:4222"), "nats://***@nats:4222");
    }
}
