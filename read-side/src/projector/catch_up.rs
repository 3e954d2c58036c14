//! Catching a view up from the event store: at the start of embedded mode,
//! after the feed lost messages, for a new view, and for a rebuild's copy.

use std::collections::HashMap;

use schema::EventEnvelope;
use schema::envelope::stream_id;
use schema::ports::StreamHead;
use sqlx::AnyConnection;
use tracing::{Instrument as _, debug, warn};

use super::{Applied, Projector, checkpoints};
use crate::projection::ProjectionError;

impl Projector {
    /// Applies everything in the event store past this projection's
    /// checkpoints: the start of embedded mode, and repairs after the feed
    /// lost messages. From empty checkpoints, it rebuilds the view.
    /// Only the streams whose head is past their checkpoint are read, so a
    /// restart with the views current reads no events at all; what is read
    /// is applied in batches.
    pub async fn catch_up(&self) -> Result<u64, ProjectionError> {
        let applied = checkpoints::all(&mut *self.pool.acquire().await?, self.projection.name()).await?;
        let mut count = 0;
        let mut ready = Vec::new();
        for head in self.behind(&applied).await? {
            let done = applied.get(&stream_id(&head.aggregate_type, &head.aggregate_id)).copied().unwrap_or(0);
            ready.extend(self.log.read_stream(&head.aggregate_type, &head.aggregate_id, done + 1, head.version).await?);
            // Whole batches now; the rest waits for the next streams' events.
            let whole = ready.len() - ready.len() % self.batch;
            if whole > 0 {
                count += self.apply_read(ready.drain(..whole).collect()).await?;
            }
        }
        count += self.apply_read(ready).await?;
        checkpoints::mark_built(&self.pool, self.projection.name()).await?;
        Ok(count)
    }

    /// [`Self::catch_up`] inside a transaction the caller owns, on its
    /// connection (a rebuild's switch). Nothing is announced, and any
    /// failure (a gap, a row not there yet) is returned, for the caller to
    /// roll back and try again.
    pub async fn catch_up_in(&self, conn: &mut AnyConnection) -> Result<u64, ProjectionError> {
        let applied = checkpoints::all(conn, self.projection.name()).await?;
        let mut events = Vec::new();
        for head in self.behind(&applied).await? {
            let done = applied.get(&stream_id(&head.aggregate_type, &head.aggregate_id)).copied().unwrap_or(0);
            events
                .extend(self.log.read_stream(&head.aggregate_type, &head.aggregate_id, done + 1, head.version).await?);
        }
        let mut count = 0;
        for chunk in events.chunks(self.batch) {
            let batch: Vec<&EventEnvelope> = chunk.iter().collect();
            for (event, applied) in chunk.iter().zip(self.apply_in(conn, &batch).await?.0) {
                if let Applied::Skipped(reason) = applied {
                    warn!(%reason, event = %event.id, projection = self.projection.name(), "skipped an unreadable event");
                }
            }
            count += chunk.len() as u64;
        }
        Ok(count)
    }

    /// The heads of the projection's streams that are past `applied`, the
    /// projection's first type first: the rows the others refer to (an
    /// order's, before its stock and payment steps) exist by then.
    async fn behind(&self, applied: &HashMap<String, u64>) -> Result<Vec<StreamHead>, ProjectionError> {
        let types = self.projection.aggregate_types();
        let rank = |head: &StreamHead| types.iter().position(|kind| *kind == head.aggregate_type);
        let mut heads: Vec<(usize, StreamHead)> = self
            .log
            .stream_heads()
            .await?
            .into_iter()
            .filter(|head| {
                head.version > applied.get(&stream_id(&head.aggregate_type, &head.aggregate_id)).copied().unwrap_or(0)
            })
            .filter_map(|head| Some((rank(&head)?, head)))
            .collect();
        heads.sort_by(|(a, left), (b, right)| (a, &left.aggregate_id).cmp(&(b, &right.aggregate_id)));
        Ok(heads.into_iter().map(|(_, head)| head).collect())
    }

    /// Whether this projection's view was ever caught up with the whole
    /// event store. Embedded mode rebuilds a view that was not (a new data
    /// directory's, a new view's, one from before this mark existed) and
    /// otherwise reads no events at start: its hub keeps an event in the
    /// outbox until every view has it.
    pub async fn is_built(&self) -> Result<bool, ProjectionError> {
        Ok(checkpoints::is_built(&self.pool, self.projection.name()).await?)
    }

    /// Applies events read from the store, a batch at a time; a batch that
    /// fails goes one by one, so one bad event does not hold up the rest.
    async fn apply_read(&self, events: Vec<EventEnvelope>) -> Result<u64, ProjectionError> {
        let mut skipped = Vec::new();
        for chunk in events.chunks(self.batch) {
            let batch: Vec<&EventEnvelope> = chunk.iter().collect();
            // Traced, each event stays in its trace (the store keeps its context).
            let spans: Vec<tracing::Span> = chunk.iter().map(super::span).collect();
            match self.apply_batch(&batch).await {
                Ok(results) => {
                    for ((event, applied), span) in chunk.iter().zip(results).zip(spans) {
                        self.record(event, applied, &mut skipped).instrument(span).await;
                    }
                }
                Err(error) => {
                    debug!(%error, "a catch-up batch failed; applying its events one by one");
                    for (event, span) in chunk.iter().zip(spans) {
                        skipped.extend(self.handle(event).instrument(span).await?);
                    }
                }
            }
        }
        for reason in skipped {
            // Read from the store, not the feed: there is no message to dead-letter.
            warn!(%reason, projection = self.projection.name(), "skipped an unreadable event");
        }
        Ok(events.len() as u64)
    }
}
