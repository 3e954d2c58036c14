//! Embedded mode: the whole system in one process with no infrastructure.
//! SQLite holds the event store and the views; commands, events and view
//! changes travel in-process. The aggregates, handlers, projectors and
//! resolvers are the same ones server mode runs.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use gateway::{Admission, Gateway, Services};
use read_side::embedded::{BroadcastNotifier, InProcessEventHub};
use read_side::{Projector, ViewStore, projections};
use schema::ports::{Backlog, EventFeed, EventLog, EventPublisher, Notifier, Readiness};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use write_side::{
    CommandHandler, InProcessCommandBus, OutboxRelay, RelaySettings, SagaRunner, SqlBacklog, SqlEventStore, StepRoute,
};

use crate::config::Common;
use crate::server::supervise;

/// A started embedded system.
pub struct Embedded {
    pub address: SocketAddr,
    /// Where `/metrics` is served, with `--metrics-listen`.
    pub metrics_address: Option<SocketAddr>,
    /// The gRPC API's address (docs/grpc.md).
    pub grpc_address: Option<SocketAddr>,
    pub store: SqlEventStore,
    pub views: ViewStore,
    /// The gateway's admission limits and backlog readings.
    pub admission: Admission,
    tasks: JoinSet<anyhow::Result<()>>,
    shutdown: CancellationToken,
}

impl Embedded {
    /// Opens (or creates) the data directory, catches the views up, binds
    /// the listener. Fails with one clear line when the directory is not
    /// writable or the port is taken.
    pub async fn start(common: &Common, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let data_dir = &common.data_dir;
        ensure_writable(data_dir)?;
        let events_url = sqlite_url(&data_dir.join("events.sqlite"));
        let views_url = sqlite_url(&data_dir.join("views.sqlite"));
        // One connection for the event store: SQLite has one writer anyway,
        // and queuing in the pool beats retrying on SQLITE_BUSY.
        let events_pool = schema::sql::connect(&events_url, 1)
            .await
            .with_context(|| format!("cannot open the event store in {}", data_dir.display()))?;
        let views_pool = schema::sql::connect(&views_url, 4)
            .await
            .with_context(|| format!("cannot open the views in {}", data_dir.display()))?;
        let hub = InProcessEventHub::new(4096);
        let publisher: Arc<dyn EventPublisher> = Arc::new(hub.clone());
        let store =
            SqlEventStore::publishing(events_pool.clone(), publisher.clone(), common.stream_events.lanes(&events_pool));
        store.migrate().await.context("event store migration failed")?;
        read_side::migrate(&views_pool).await.context("view migration failed")?;

        let feed: Arc<dyn EventFeed> = Arc::new(hub.clone());
        let notifier: Arc<dyn Notifier> = Arc::new(BroadcastNotifier::new(4096));
        let log: Arc<dyn EventLog> = Arc::new(store.clone());
        let mut tasks = JoinSet::new();

        let views = ViewStore::new(views_pool.clone());
        let mut projectors = 0;
        let mut samplers = vec![
            crate::metrics::pool("events", events_pool.clone()),
            crate::metrics::pool("views", views_pool.clone()),
            crate::metrics::in_process_feed(hub.clone()),
        ];
        for projection in projections() {
            let projector = Projector::new(views_pool.clone(), projection, log.clone(), notifier.clone())
                .with_batch(common.projector_batch)
                .with_workers(common.projector_workers);
            // A view never built is built from the store before serving; a
            // built one lacks at most what is still in the outbox.
            if !projector.is_built().await.context("reading the views failed")? {
                projector.catch_up().await.context("building the views failed")?;
            }
            samplers.push(crate::metrics::projector(projector.clone()));
            let (feed, stop) = (feed.clone(), shutdown.clone());
            tasks.spawn(async move {
                projector.run(feed, false, stop).await;
                Ok(())
            });
            projectors += 1;
        }
        hub.wait_for_subscribers(projectors, std::time::Duration::from_secs(10)).await?;
        // Rows a `conveyor projection rebuild` changed, announced here.
        let announcements =
            read_side::rebuild::announcements::relay(views_pool.clone(), notifier.clone(), shutdown.clone());
        tasks.spawn(async move {
            announcements.await;
            Ok(())
        });

        // Events a crash left in the outbox go out (and are projected)
        // before anything new: the first query sees every accepted order.
        let relay = OutboxRelay::new(store.clone(), publisher.clone(), RelaySettings::default());
        relay.publish_stranded(std::time::Duration::ZERO).await.map_err(|error| anyhow::anyhow!("{error}"))?;
        let stop = shutdown.clone();
        tasks.spawn(async move {
            relay.run(stop).await;
            Ok(())
        });

        let handler = CommandHandler::new(store.clone(), Arc::new(common.domain.provider()))
            .with_provider_timeout(common.domain.saga_step_timeout);
        // Sagas start in their orders' transactions, so none is missing
        // after a crash: the sweeper resumes them, nothing reads the log.
        let saga = SagaRunner::new(
            store.clone(),
            StepRoute::local(handler.clone(), write_side::AGGREGATES),
            common.domain.saga(),
        )
        .context("cannot start the order saga")?;
        samplers.push(crate::metrics::write_side(store.clone(), Some(saga.clone())));
        let bus = Arc::new(InProcessCommandBus::new(handler, 1024));
        let stop = shutdown.clone();
        tasks.spawn(async move {
            saga.run(stop).await;
            Ok(())
        });
        // The backlog is counted over a connection of its own: the event
        // store's one connection is the writer's, and a WAL reader never
        // waits for it.
        let backlog_pool = schema::sql::connect(&events_url, 1)
            .await
            .with_context(|| format!("cannot open the event store in {}", data_dir.display()))?;
        let backlog: Arc<dyn Backlog> = Arc::new(SqlBacklog::new(backlog_pool));
        let backlog_for_metrics = backlog.clone();
        let admission = Admission::start(common.admission(), Some(backlog), shutdown.clone());
        let services = Services::new(bus, views.clone(), notifier, common.mutation_wait, shutdown.clone())
            .with_admission(admission.clone())
            // gRPC's EventStore reads the same SQLite store, on a reader connection of its own.
            .with_event_log(Arc::new(SqlEventStore::new(
                schema::sql::connect(&events_url, 1)
                    .await
                    .with_context(|| format!("cannot open the event store in {}", data_dir.display()))?,
            )));
        let readiness: Vec<(&'static str, Arc<dyn Readiness>)> = vec![("database", Arc::new(views.clone()))];
        let gateway = Gateway::build(&common.http()?, services, readiness).await.with_context(|| {
            format!("cannot listen on {} (GraphQL) or {} (gRPC)", common.listen, common.grpc_listen)
        })?;
        let address = gateway.local_addr()?;
        let grpc_address = gateway.grpc_addr()?;
        tasks.spawn(async move { gateway.run_until_stopped().await.context("gateway failed") });
        samplers.push(crate::metrics::sagas(backlog_for_metrics));
        let metrics_address = crate::metrics::serve(common.metrics_listen, samplers, &mut tasks, &shutdown).await?;
        Ok(Self { address, metrics_address, grpc_address, store, views, admission, tasks, shutdown })
    }

    /// Runs until the shutdown token is cancelled or a component fails.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        supervise(self.tasks, self.shutdown).await
    }
}

pub async fn run(common: &Common, shutdown: CancellationToken) -> anyhow::Result<()> {
    // A bad setting fails before anything is opened.
    common.stream_events.settings()?;
    let embedded = Embedded::start(common, shutdown).await?;
    let data = std::fs::canonicalize(&common.data_dir).unwrap_or_else(|_| common.data_dir.clone());
    tracing::info!(
        "Conveyor is running (embedded): open http://{}/app (orders, live) or http://{}/graphiql — data in {}",
        embedded.address,
        embedded.address,
        data.display()
    );
    crate::server::log_grpc(embedded.grpc_address);
    embedded.run_until_stopped().await
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

/// Creates the directory and proves it writable, for a clear error up front.
fn ensure_writable(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let probe = dir.join(".conveyor-write-test");
    std::fs::write(&probe, b"ok").with_context(|| format!("the data directory {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}
