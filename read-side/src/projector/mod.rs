//! The projector: applies each event to a projection exactly once, in stream
//! order, advancing the projection's per-stream checkpoint in the same
//! transaction as the view rows, then announces the change.
//!
//! An event already applied is skipped; an event ahead of the checkpoint
//! first pulls the missing versions from the event store (the truth), so a
//! transport that drops or reorders messages costs latency, never data.
//!
//! Events are applied in batches: one transaction reads the checkpoints of
//! every stream in the batch in one statement, applies the events in order
//! (each checked against its stream's checkpoint, which the batch advances
//! as it goes), writes the advanced checkpoints back in one statement and
//! commits. So a batch costs two checkpoint statements plus the
//! projection's own writes, whatever its size. A gap or a failure in the
//! batch rolls it back and its events go through one by one, with the gap
//! repair. [`workers`] feeds the batches: one worker per partition of the
//! streams, so per-stream order holds while streams proceed in parallel.

mod catch_up;
mod checkpoints;
mod counts;
mod verify;
mod workers;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use schema::EventEnvelope;
use schema::ports::{EventLog, Notifier, ViewChange};
use schema::sql;
use sqlx::{Any, AnyConnection, AnyPool, Transaction};
use tracing::{debug, info, instrument, warn};

pub use counts::ProjectorCounts;

use crate::projection::{Inserts, Projection, ProjectionError, ViewTx};
use counts::Counters;

/// The most events one transaction applies, by default: enough to amortize
/// the commit, few enough that a retried transaction redoes little.
pub const BATCH: usize = 64;

/// Workers per projection, by default: one. More workers pay only where
/// streams change disjoint rows and the database commits them in parallel
/// without false conflicts; here (PostgreSQL at SERIALIZABLE, or SQLite's one
/// writer, and orders whose customer and product rows they share) two and
/// four measured slower, with a retry for every other batch
/// (docs/benchmarks.md).
pub const WORKERS: usize = 1;

/// How many times a batch that refers to a row not projected yet is tried
/// again (after 1, 2, 4 … ms) before it is given back to the feed.
const NOT_YET_WAITS: u32 = 8;

#[derive(Clone)]
pub struct Projector {
    pool: AnyPool,
    projection: Arc<dyn Projection>,
    log: Arc<dyn EventLog>,
    notifier: Arc<dyn Notifier>,
    batch: usize,
    workers: usize,
    /// SQLite: take the write lock when the transaction begins. A deferred
    /// transaction reads the checkpoints first and, when another writer
    /// committed meanwhile, fails at its first write (SQLITE_BUSY_SNAPSHOT)
    /// and redoes everything; an immediate one waits its turn instead.
    immediate: bool,
    /// Whether delivered events are looked up in the event store before
    /// they are applied: always, but for a feed of the store's own copies.
    verify_deliveries: bool,
    counters: Arc<Counters>,
}

impl Projector {
    pub fn new(
        pool: AnyPool,
        projection: Arc<dyn Projection>,
        log: Arc<dyn EventLog>,
        notifier: Arc<dyn Notifier>,
    ) -> Self {
        let immediate = pool.connect_options().database_url.scheme() == "sqlite";
        Self {
            pool,
            projection,
            log,
            notifier,
            batch: BATCH,
            workers: WORKERS,
            immediate,
            verify_deliveries: true,
            counters: Arc::default(),
        }
    }

    /// At most `batch` events per transaction (at least one).
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// `workers` tasks apply the feed's events, each the streams of its
    /// partition (at least one).
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// The projection's name.
    pub fn name(&self) -> &'static str {
        self.projection.name()
    }

    /// What this projector (and its clones) cost the database so far.
    pub fn counts(&self) -> ProjectorCounts {
        self.counters.snapshot()
    }

    /// Applies `event` (and any missing predecessors), unless already applied.
    /// Returns the reasons for events that had to be skipped as unreadable,
    /// for the caller to dead-letter.
    #[instrument(skip_all, fields(projection = self.projection.name(), event = %event.id, version = event.stream_version))]
    pub async fn handle(&self, event: &EventEnvelope) -> Result<Vec<String>, ProjectionError> {
        let mut skipped = Vec::new();
        // The common case is one transaction; only a gap costs more.
        match self.apply_batch(&[event]).await {
            Ok(results) => {
                for applied in results {
                    self.record(event, applied, &mut skipped).await;
                }
            }
            Err(ProjectionError::Behind { applied }) => {
                let stream = event.stream_id();
                let missing = self
                    .log
                    .read_stream(&event.aggregate_type, &event.aggregate_id, applied + 1, event.stream_version - 1)
                    .await?;
                let contiguous =
                    missing.iter().zip(applied + 1..).all(|(missing, version)| missing.stream_version == version);
                if !contiguous || missing.len() as u64 != event.stream_version - applied - 1 {
                    return Err(ProjectionError::Gap { stream, version: event.stream_version });
                }
                info!(stream, missing = missing.len(), "repaired a gap from the event store");
                let mut events: Vec<&EventEnvelope> = missing.iter().collect();
                events.push(event);
                for chunk in events.chunks(self.batch) {
                    for (event, applied) in chunk.iter().zip(self.apply_batch(chunk).await?) {
                        self.record(event, applied, &mut skipped).await;
                    }
                }
            }
            Err(other) => return Err(other),
        }
        Ok(skipped)
    }

    async fn record(&self, event: &EventEnvelope, applied: Applied, skipped: &mut Vec<String>) {
        match applied {
            Applied::Changed(change) => {
                let age = (chrono::Utc::now() - event.timestamp).to_std().unwrap_or_default();
                schema::metrics::metrics().change_age("notified", age);
                self.announce(&change).await
            }
            Applied::Nothing => {}
            Applied::Skipped(reason) => skipped.push(format!("event {}: {reason}", event.id)),
        }
    }

    async fn announce(&self, change: &ViewChange) {
        // Traced, the push to subscribers continues this event's trace.
        let traced;
        let change = match schema::trace::current() {
            Some(traceparent) => {
                traced = ViewChange { traceparent: Some(traceparent), ..change.clone() };
                &traced
            }
            None => change,
        };
        if let Err(error) = self.notifier.notify(change).await {
            // Subscribers re-read the view on their next notification.
            warn!(%error, view = %change.view, id = %change.id, "change notification failed");
        }
    }

    /// One transaction for `events`, in order (see the module doc), run
    /// again on serialization failures, and after a short wait when an
    /// event refers to a row another stream has not created yet.
    async fn apply_batch(&self, events: &[&EventEnvelope]) -> Result<Vec<Applied>, ProjectionError> {
        let mut waits = 0;
        loop {
            match sql::retry("project events", || self.transaction(events)).await {
                Err(ProjectionError::NotYet { needs, stream }) if waits < NOT_YET_WAITS => {
                    debug!(needs, stream, waits, "waiting for another stream's events");
                    tokio::time::sleep(Duration::from_millis(1 << waits)).await;
                    waits += 1;
                }
                other => return other,
            }
        }
    }

    /// One attempt: read the batch's checkpoints, apply, write them back, commit.
    async fn transaction(&self, events: &[&EventEnvelope]) -> Result<Vec<Applied>, ProjectionError> {
        Counters::add(&self.counters.attempts, 1);
        let mut tx = self.begin().await?;
        let (results, count) = self.apply_in(&mut tx, events).await?;
        tx.commit().await?;
        Counters::add(&self.counters.commits, 1);
        Counters::add(&self.counters.events, count);
        if count > 0 {
            // How far behind the view is: the age of the oldest event this
            // transaction brought in.
            let oldest = events.iter().map(|event| event.timestamp).min().unwrap_or_else(chrono::Utc::now);
            let age = (chrono::Utc::now() - oldest).to_std().unwrap_or_default();
            schema::metrics::metrics().projected(self.projection.name(), count, age);
        }
        Ok(results)
    }

    /// The body of a batch's transaction, on a transaction the caller owns
    /// (and commits): reads the batch's checkpoints, applies what is next
    /// of each stream, writes the advanced checkpoints. Returns each event's
    /// result and how many were applied.
    async fn apply_in(
        &self,
        conn: &mut AnyConnection,
        events: &[&EventEnvelope],
    ) -> Result<(Vec<Applied>, u64), ProjectionError> {
        let name = self.projection.name();
        let streams: Vec<String> =
            events.iter().map(|event| event.stream_id()).collect::<BTreeSet<_>>().into_iter().collect();
        let mut applied = checkpoints::read(conn, name, &streams).await?;
        Counters::add(&self.counters.checkpoint_statements, 1);
        let mut advanced = BTreeMap::new();
        let mut results = Vec::with_capacity(events.len());
        let mut count = 0;
        let mut later = Inserts::default();
        for event in events {
            let stream = event.stream_id();
            let done = applied.get(&stream).copied().unwrap_or(0);
            if event.stream_version <= done {
                results.push(Applied::Nothing);
                continue;
            }
            if event.stream_version != done + 1 {
                return Err(ProjectionError::Behind { applied: done });
            }
            let mut view = ViewTx::new(conn, &self.counters.view_statements, &mut later);
            results.push(match self.projection.apply(&mut view, event).await {
                Ok(Some(change)) => Applied::Changed(change),
                Ok(None) => Applied::Nothing,
                // Skipped, so the stream is not blocked forever; the caller
                // dead-letters it with the reason.
                Err(ProjectionError::Contract(reason)) => Applied::Skipped(reason),
                Err(other) => return Err(other),
            });
            applied.insert(stream.clone(), event.stream_version);
            advanced.insert(stream, event.stream_version);
            count += 1;
        }
        let gathered = later.write(conn).await?;
        Counters::add(&self.counters.view_statements, gathered);
        if !advanced.is_empty() {
            checkpoints::write(conn, name, &advanced).await?;
            Counters::add(&self.counters.checkpoint_statements, 1);
        }
        Ok((results, count))
    }

    async fn begin(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        if self.immediate { self.pool.begin_with("BEGIN IMMEDIATE").await } else { self.pool.begin().await }
    }
}

enum Applied {
    Changed(ViewChange),
    Nothing,
    Skipped(String),
}

/// The projector's span for one event, delivered or read from the store
/// (none unless traced): the child of the context the event carries.
fn span(event: &EventEnvelope) -> tracing::Span {
    if !schema::trace::enabled() {
        return tracing::Span::none();
    }
    let destination = format!("evt.{}", event.aggregate_type);
    schema::trace::process(&destination, &event.id.to_string(), event.metadata.traceparent.as_deref())
}
