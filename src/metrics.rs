//! `--metrics-listen`: serves the process's Prometheus metrics (see
//! [`schema::metrics`]) at `GET /metrics`, on a listener of its own so the
//! GraphQL port's limits, auth and CORS never touch the scraper, and a
//! scraper never reaches GraphQL.
//!
//! What the code does not count as it happens is read at scrape time by the
//! samplers each process kind registers: its SQL pools, its JetStream
//! consumers' pending messages, the in-process feed's queues, open sagas.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use futures::FutureExt;
use schema::Namespace;
use schema::metrics::{Sampler, metrics};
use schema::ports::Backlog;
use sqlx::AnyPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long one sampler may take before the scrape goes on without it.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds `listen` (when set) and serves `/metrics` until `shutdown`.
/// Returns the bound address.
pub async fn serve(
    listen: Option<SocketAddr>,
    samplers: Vec<Sampler>,
    tasks: &mut JoinSet<anyhow::Result<()>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<SocketAddr>> {
    let Some(listen) = listen else { return Ok(None) };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} for metrics"))?;
    let address = listener.local_addr()?;
    let samplers = Arc::new(samplers);
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let samplers = samplers.clone();
            async move { scrape(&samplers).await }
        }),
    );
    let stop = shutdown.clone();
    tasks.spawn(async move {
        axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await.context("metrics server failed")
    });
    // No "http://" here: tests find the GraphQL address by that.
    tracing::info!("metrics served on {address} at /metrics");
    Ok(Some(address))
}

async fn scrape(samplers: &[Sampler]) -> axum::response::Response {
    futures::future::join_all(samplers.iter().map(|sample| tokio::time::timeout(SAMPLE_TIMEOUT, sample()))).await;
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], metrics().encode()).into_response()
}

/// A pool's idle and busy connections.
pub fn pool(name: &'static str, pool: AnyPool) -> Sampler {
    Arc::new(move || {
        metrics().pool(name, pool.size(), pool.num_idle());
        futures::future::ready(()).boxed()
    })
}

/// Sagas still open (the orders not yet decided).
pub fn sagas(backlog: Arc<dyn Backlog>) -> Sampler {
    Arc::new(move || {
        let backlog = backlog.clone();
        async move {
            match backlog.undecided_orders().await {
                Ok(open) => {
                    metrics().sagas_active.set(i64::try_from(open).unwrap_or(i64::MAX));
                }
                Err(error) => tracing::debug!(%error, "could not count open sagas for metrics"),
            }
        }
        .boxed()
    })
}

/// A JetStream consumer's messages not yet acknowledged (pending and in
/// flight); for a projector's consumer, also its projection's lag.
pub fn consumer(js: jetstream::Context, ns: &Namespace, stream: &str, consumer: String) -> Sampler {
    let stream = ns.resource(stream);
    let name = ns.resource(&consumer);
    Arc::new(move || {
        let (js, stream, name, consumer) = (js.clone(), stream.clone(), name.clone(), consumer.clone());
        async move {
            let info = async { js.get_stream(&stream).await?.consumer_info(&name).await.map_err(anyhow::Error::from) };
            match info.await {
                Ok(info) => {
                    let pending = i64::try_from(info.num_pending).unwrap_or(i64::MAX)
                        + i64::try_from(info.num_ack_pending).unwrap_or(i64::MAX);
                    metrics().nats_pending.get_or_create(&[("consumer", consumer.clone())]).set(pending);
                    if let Some(projection) = consumer.strip_prefix("projector_") {
                        metrics()
                            .projection_lag_events
                            .get_or_create(&[("projection", projection.to_owned())])
                            .set(pending);
                    }
                }
                Err(error) => tracing::debug!(error = %format!("{error:#}"), consumer, "no consumer info for metrics"),
            }
        }
        .boxed()
    })
}

/// Embedded mode: the events queued in process for each projector.
pub fn in_process_feed(hub: read_side::embedded::InProcessEventHub) -> Sampler {
    Arc::new(move || {
        for (consumer, queued) in hub.queued() {
            if let Some(projection) = consumer.strip_prefix("projector_") {
                let queued = i64::try_from(queued).unwrap_or(i64::MAX);
                metrics().projection_lag_events.get_or_create(&[("projection", projection.to_owned())]).set(queued);
            }
        }
        futures::future::ready(()).boxed()
    })
}

/// A projector's transactions and statements, from the counts it keeps.
pub fn projector(projector: read_side::Projector) -> Sampler {
    Arc::new(move || {
        let (name, counts) = (projector.name(), projector.counts());
        let m = metrics();
        let labels = |key: &'static str, value: &str| [("projection", name.to_owned()), (key, value.to_owned())];
        m.catch_up(&m.projector_transactions.get_or_create(&labels("result", "committed")), counts.commits);
        let rolled_back = counts.attempts.saturating_sub(counts.commits);
        m.catch_up(&m.projector_transactions.get_or_create(&labels("result", "rolled_back")), rolled_back);
        m.catch_up(&m.projector_statements.get_or_create(&labels("kind", "checkpoint")), counts.checkpoint_statements);
        m.catch_up(&m.projector_statements.get_or_create(&labels("kind", "view")), counts.view_statements);
        futures::future::ready(()).boxed()
    })
}

/// The event store's streams read back, and the saga's saves apart from
/// their steps, from the counts they keep.
pub fn write_side(store: write_side::SqlEventStore, saga: Option<write_side::SagaRunner>) -> Sampler {
    Arc::new(move || {
        let m = metrics();
        m.catch_up(&m.streams_read, store.streams_read());
        if let Some(saga) = &saga {
            m.catch_up(&m.saga_saves_apart, saga.saves_apart());
        }
        futures::future::ready(()).boxed()
    })
}
