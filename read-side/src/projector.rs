//! The projector: applies each event to a projection exactly once, in stream
//! order, advancing the projection's per-stream checkpoint in the same
//! transaction as the view rows, then announces the change.
//!
//! An event already applied is skipped; an event ahead of the checkpoint
//! first pulls the missing versions from the event store (the truth), so a
//! transport that drops or reorders messages costs latency, never data.
//!
//! Under load the feed has several events ready at once: they are applied in
//! one transaction (up to [`BATCH`] by default), in delivery order, each still checked
//! against its stream's checkpoint, which that transaction advances. One
//! commit then covers them all; a gap or a failure in the batch rolls it
//! back and its events go through one by one, with the gap repair.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use schema::EventEnvelope;
use schema::envelope::stream_id;
use schema::ports::{Acknowledge, EventDelivery, EventFeed, EventLog, Notifier, StreamHead, ViewChange};
use schema::sql;
use sqlx::{AnyConnection, AnyPool};
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument, warn};

use crate::projection::{Projection, ProjectionError};

/// The most events one transaction applies, by default: enough to amortize
/// the commit, few enough that a retried transaction redoes little.
pub const BATCH: usize = 64;

pub struct Projector {
    pool: AnyPool,
    projection: Arc<dyn Projection>,
    log: Arc<dyn EventLog>,
    notifier: Arc<dyn Notifier>,
    batch: usize,
}

impl Projector {
    pub fn new(
        pool: AnyPool,
        projection: Arc<dyn Projection>,
        log: Arc<dyn EventLog>,
        notifier: Arc<dyn Notifier>,
    ) -> Self {
        Self { pool, projection, log, notifier, batch: BATCH }
    }

    /// At most `batch` events per transaction (at least one).
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// Applies `event` (and any missing predecessors), unless already applied.
    /// Returns the reasons for events that had to be skipped as unreadable,
    /// for the caller to dead-letter.
    #[instrument(skip_all, fields(projection = self.projection.name(), event = %event.id, version = event.stream_version))]
    pub async fn handle(&self, event: &EventEnvelope) -> Result<Vec<String>, ProjectionError> {
        let mut skipped = Vec::new();
        // The common case is one transaction; only a gap costs more.
        let applied = match self.apply_once(event).await {
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
                for earlier in &missing {
                    self.record(earlier, self.apply_once(earlier).await?, &mut skipped).await;
                }
                self.apply_once(event).await?
            }
            other => other?,
        };
        self.record(event, applied, &mut skipped).await;
        Ok(skipped)
    }

    async fn record(&self, event: &EventEnvelope, applied: Applied, skipped: &mut Vec<String>) {
        match applied {
            Applied::Changed(change) => self.announce(&change).await,
            Applied::Nothing => {}
            Applied::Skipped(reason) => skipped.push(format!("event {}: {reason}", event.id)),
        }
    }

    /// One transaction for one event.
    async fn apply_once(&self, event: &EventEnvelope) -> Result<Applied, ProjectionError> {
        sql::retry("project event", || async {
            let mut tx = self.pool.begin().await?;
            let applied = self.apply_in(&mut tx, event).await?;
            tx.commit().await?;
            Ok(applied)
        })
        .await
    }

    /// One transaction for several events, in order; the first that is
    /// ahead of its checkpoint (or fails) rolls them all back.
    async fn apply_batch(&self, events: &[&EventEnvelope]) -> Result<Vec<Applied>, ProjectionError> {
        sql::retry("project events", || async {
            let mut tx = self.pool.begin().await?;
            let mut results = Vec::with_capacity(events.len());
            for event in events {
                results.push(self.apply_in(&mut tx, event).await?);
            }
            tx.commit().await?;
            Ok(results)
        })
        .await
    }

    /// Within a transaction: re-check the checkpoint, apply, advance it.
    async fn apply_in(&self, tx: &mut AnyConnection, event: &EventEnvelope) -> Result<Applied, ProjectionError> {
        let name = self.projection.name();
        let stream = event.stream_id();
        let applied = checkpoint(tx, name, &stream).await?;
        if event.stream_version <= applied {
            return Ok(Applied::Nothing);
        }
        if event.stream_version != applied + 1 {
            return Err(ProjectionError::Behind { applied });
        }
        let applied = match self.projection.apply(tx, event).await {
            Ok(Some(change)) => Applied::Changed(change),
            Ok(None) => Applied::Nothing,
            // Skipped, so the stream is not blocked forever; the caller
            // dead-letters it with the reason.
            Err(ProjectionError::Contract(reason)) => Applied::Skipped(reason),
            Err(other) => return Err(other),
        };
        advance(tx, name, &stream, event.stream_version).await?;
        Ok(applied)
    }

    async fn announce(&self, change: &ViewChange) {
        if let Err(error) = self.notifier.notify(change).await {
            // Subscribers re-read the view on their next notification.
            warn!(%error, view = %change.view, id = %change.id, "change notification failed");
        }
    }

    /// Applies everything in the event store past this projection's
    /// checkpoints: the start of embedded mode, and repairs after the feed
    /// lost messages. From empty checkpoints, it rebuilds the view.
    /// Only the streams whose head is past their checkpoint are read, so a
    /// restart with the views current reads no events at all.
    pub async fn catch_up(&self) -> Result<u64, ProjectionError> {
        let applied = self.checkpoints().await?;
        let types = self.projection.aggregate_types();
        let mut count = 0;
        // The projection's first type first: the rows the others refer to
        // (an order's, before its stock and payment steps) exist by then.
        let rank = |head: &StreamHead| types.iter().position(|kind| *kind == head.aggregate_type);
        let mut heads: Vec<(usize, StreamHead)> =
            self.log.stream_heads().await?.into_iter().filter_map(|head| Some((rank(&head)?, head))).collect();
        heads.sort_by(|(a, left), (b, right)| (a, &left.aggregate_id).cmp(&(b, &right.aggregate_id)));
        for (_, head) in heads {
            let done = applied.get(&stream_id(&head.aggregate_type, &head.aggregate_id)).copied().unwrap_or(0);
            if head.version <= done {
                continue;
            }
            for event in self.log.read_stream(&head.aggregate_type, &head.aggregate_id, done + 1, head.version).await? {
                self.handle(&event).await?;
                count += 1;
            }
        }
        Ok(count)
    }

    async fn checkpoints(&self) -> Result<HashMap<String, u64>, sqlx::Error> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT stream_id, version FROM projection_checkpoints WHERE projection = $1")
                .bind(self.projection.name())
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(stream, version)| (stream, version as u64)).collect())
    }

    /// Consumes the feed until `shutdown`, finishing the event in hand.
    pub async fn run(self, feed: Arc<dyn EventFeed>, catch_up_first: bool, shutdown: CancellationToken) {
        let name = self.projection.name();
        let consumer = format!("projector_{name}");
        let subscription = loop {
            match feed.subscribe(&consumer, self.projection.aggregate_types()).await {
                Ok(stream) => break stream,
                Err(error) => {
                    warn!(%error, projection = name, "cannot subscribe to events; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        // Subscribed first, so nothing published during the catch-up is missed.
        let mut needs_catch_up = catch_up_first;
        let mut deliveries = Box::pin(subscription.take_until(shutdown.clone().cancelled_owned()));
        let mut repair = tokio::time::interval(Duration::from_secs(5));
        info!(projection = name, "projector running");
        loop {
            if needs_catch_up {
                match self.catch_up().await {
                    Ok(count) => {
                        needs_catch_up = false;
                        if count > 0 {
                            info!(projection = name, count, "caught up from the event store");
                        }
                    }
                    Err(error) => warn!(%error, projection = name, "catch-up failed; will retry"),
                }
            }
            tokio::select! {
                delivery = deliveries.next() => match delivery {
                    Some(Ok(first)) => {
                        // Whatever else is ready now joins it, without waiting.
                        let mut batch = vec![first];
                        while batch.len() < self.batch {
                            match deliveries.next().now_or_never() {
                                Some(Some(Ok(next))) => batch.push(next),
                                Some(Some(Err(error))) => {
                                    warn!(%error, projection = name, "event feed error; catching up from the store");
                                    needs_catch_up = true;
                                    break;
                                }
                                Some(None) | None => break,
                            }
                        }
                        needs_catch_up |= !self.process_batch(batch, feed.as_ref()).await;
                    }
                    Some(Err(error)) => {
                        warn!(%error, projection = name, "event feed error; catching up from the store");
                        needs_catch_up = true;
                    }
                    None => break,
                },
                _ = repair.tick(), if needs_catch_up => {}
            }
        }
        info!(projection = name, "projector stopped");
    }

    /// Applies a batch of deliveries in one transaction (see the module
    /// doc); returns false when some event could not be applied now.
    async fn process_batch(&self, batch: Vec<EventDelivery>, feed: &dyn EventFeed) -> bool {
        if batch.len() == 1 {
            return match batch.into_iter().next() {
                Some(delivery) => self.process(delivery, feed).await,
                None => true,
            };
        }
        // Unreadable deliveries are dead-lettered one by one.
        let (readable, unreadable): (Vec<_>, Vec<_>) = batch.into_iter().partition(|delivery| delivery.event.is_ok());
        let mut all_applied = true;
        for delivery in unreadable {
            all_applied &= self.process(delivery, feed).await;
        }
        // Owned copies: the deliveries themselves are not shared across awaits.
        let events: Vec<EventEnvelope> = readable.iter().filter_map(|delivery| delivery.event.clone().ok()).collect();
        let in_order: Vec<&EventEnvelope> = events.iter().collect();
        match self.apply_batch(&in_order).await {
            Ok(results) => {
                for ((delivery, event), applied) in readable.into_iter().zip(&events).zip(results) {
                    let mut skipped = Vec::new();
                    self.record(event, applied, &mut skipped).await;
                    self.settle(&delivery.raw, delivery.ack, skipped, feed).await;
                }
            }
            // A gap or a failure: one by one, with gap repair and retries.
            Err(_) => {
                for delivery in readable {
                    all_applied &= self.process(delivery, feed).await;
                }
            }
        }
        all_applied
    }

    /// After the commit: dead-letters what had to be skipped, then acks.
    async fn settle(&self, raw: &[u8], ack: Box<dyn Acknowledge>, skipped: Vec<String>, feed: &dyn EventFeed) {
        let source = format!("projector_{}", self.projection.name());
        for reason in skipped {
            warn!(%reason, "skipped an unreadable event");
            if let Err(error) = feed.dead_letter(&source, raw, &reason).await {
                warn!(%error, %reason, "dead-letter publish failed");
            }
        }
        if let Err(error) = ack.ack().await {
            warn!(%error, "ack failed; the event will be redelivered and skipped");
        }
    }

    /// Returns false when the event could not be applied now.
    async fn process(&self, delivery: EventDelivery, feed: &dyn EventFeed) -> bool {
        let source = format!("projector_{}", self.projection.name());
        let event = match delivery.event {
            Ok(event) => event,
            Err(reason) => {
                if let Err(error) = feed.dead_letter(&source, &delivery.raw, &reason).await {
                    warn!(%error, "dead-letter publish failed; redelivering");
                    let _ = delivery.ack.retry(Duration::from_secs(1)).await;
                    return true;
                }
                let _ = delivery.ack.reject().await;
                return true;
            }
        };
        match self.handle(&event).await {
            Ok(skipped) => {
                self.settle(&delivery.raw, delivery.ack, skipped, feed).await;
                true
            }
            Err(error) => {
                warn!(%error, event = %event.id, "projection failed; retrying later");
                let delay = Duration::from_millis(200 * delivery.ack.delivered().clamp(1, 25));
                let _ = delivery.ack.retry(delay).await;
                false
            }
        }
    }
}

enum Applied {
    Changed(ViewChange),
    Nothing,
    Skipped(String),
}

async fn checkpoint(conn: &mut AnyConnection, projection: &str, stream: &str) -> Result<u64, sqlx::Error> {
    let version: Option<i64> =
        sqlx::query_scalar("SELECT version FROM projection_checkpoints WHERE projection = $1 AND stream_id = $2")
            .bind(projection)
            .bind(stream)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(version.unwrap_or(0) as u64)
}

async fn advance(conn: &mut AnyConnection, projection: &str, stream: &str, version: u64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO projection_checkpoints (projection, stream_id, version) VALUES ($1, $2, $3) \
         ON CONFLICT (projection, stream_id) DO UPDATE SET version = excluded.version",
    )
    .bind(projection)
    .bind(stream)
    .bind(version as i64)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
