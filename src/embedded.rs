//! Embedded mode: the whole system in one process with no infrastructure.
//! SQLite holds the event store and the views; commands, events and view
//! changes travel in-process. The aggregates, handlers, projectors and
//! resolvers are the same ones server mode runs.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use gateway::{Gateway, Services};
use read_side::embedded::{BroadcastNotifier, InProcessEventHub};
use read_side::{Projector, ViewStore, projections};
use schema::ports::{EventFeed, EventLog, EventPublisher, Notifier, Readiness};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use write_side::{CommandHandler, InProcessCommandBus, OutboxRelay, RelaySettings, SagaRunner, SqlEventStore};

use crate::config::Common;
use crate::server::supervise;

/// A started embedded system.
pub struct Embedded {
    pub address: SocketAddr,
    pub store: SqlEventStore,
    pub views: ViewStore,
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
        let store = SqlEventStore::new(events_pool);
        store.migrate().await.context("event store migration failed")?;
        read_side::migrate(&views_pool).await.context("view migration failed")?;

        let hub = InProcessEventHub::new(4096);
        let publisher: Arc<dyn EventPublisher> = Arc::new(hub.clone());
        let feed: Arc<dyn EventFeed> = Arc::new(hub);
        let notifier: Arc<dyn Notifier> = Arc::new(BroadcastNotifier::new(4096));
        let log: Arc<dyn EventLog> = Arc::new(store.clone());
        let mut tasks = JoinSet::new();

        // Events a crash left unpublished go out before anything new.
        let relay = OutboxRelay::new(store.clone(), publisher.clone(), RelaySettings::default());
        relay.publish_stranded(std::time::Duration::ZERO).await.map_err(|error| anyhow::anyhow!("{error}"))?;
        let stop = shutdown.clone();
        tasks.spawn(async move {
            relay.run(stop).await;
            Ok(())
        });

        let views = ViewStore::new(views_pool.clone());
        for projection in projections() {
            let projector = Projector::new(views_pool.clone(), projection, log.clone(), notifier.clone())
                .with_batch(common.projector_batch)
                .with_workers(common.projector_workers);
            // Catch up from the store before serving, so the first query sees every accepted order.
            projector.catch_up().await.context("catching the views up failed")?;
            let (feed, stop) = (feed.clone(), shutdown.clone());
            tasks.spawn(async move {
                projector.run(feed, true, stop).await;
                Ok(())
            });
        }

        let handler = CommandHandler::new(store.clone(), publisher, Arc::new(common.domain.provider()));
        let bus = Arc::new(InProcessCommandBus::new(handler, 64));
        let saga = SagaRunner::new(store.clone(), bus.clone(), common.domain.saga());
        // Nothing in process survives a crash: sagas catch up from the store.
        saga.catch_up(log.as_ref()).await.context("catching the order sagas up failed")?;
        let stop = shutdown.clone();
        let saga_feed = feed.clone();
        tasks.spawn(async move {
            saga.run(saga_feed, stop).await;
            Ok(())
        });
        let services = Services::new(bus, views.clone(), notifier, common.mutation_wait, shutdown.clone());
        let readiness: Vec<(&'static str, Arc<dyn Readiness>)> = vec![("database", Arc::new(views.clone()))];
        let gateway = Gateway::build(&common.http()?, services, readiness)
            .await
            .with_context(|| format!("cannot listen on {}", common.listen))?;
        let address = gateway.local_addr()?;
        tasks.spawn(async move { gateway.run_until_stopped().await.context("gateway failed") });
        Ok(Self { address, store, views, tasks, shutdown })
    }

    /// Runs until the shutdown token is cancelled or a component fails.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        supervise(self.tasks, self.shutdown).await
    }
}

pub async fn run(common: &Common, shutdown: CancellationToken) -> anyhow::Result<()> {
    let embedded = Embedded::start(common, shutdown).await?;
    let data = std::fs::canonicalize(&common.data_dir).unwrap_or_else(|_| common.data_dir.clone());
    tracing::info!(
        "Conveyor is running (embedded): open http://{}/app (orders, live) or http://{}/graphiql — data in {}",
        embedded.address,
        embedded.address,
        data.display()
    );
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
