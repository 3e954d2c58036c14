//! Nothing a projector applies comes from the bus: a delivered batch is
//! looked up in the event store by event id, in one statement, and the
//! store's copies replace the messages. A delivery the store does not vouch
//! for is dead-lettered and changes nothing, so a checkpoint only ever
//! advances over the store's events (invariant 8).

use std::collections::HashMap;
use std::time::Duration;

use schema::EventEnvelope;
use tracing::warn;
use uuid::Uuid;

use super::Projector;
use super::counts::Counters;
use super::workers::Ready;

impl Projector {
    /// Swaps each delivered event for the event store's copy, looked up for
    /// the whole batch in one statement, and dead-letters the deliveries the
    /// store does not vouch for: an id it does not have, or one it has as
    /// another stream's, version's or type's event. `None` when the store
    /// could not be read (every delivery is then retried).
    pub(super) async fn verify(&self, batch: Vec<Ready>) -> Option<Vec<Ready>> {
        if !self.verify_deliveries {
            return Some(batch);
        }
        let ids: Vec<Uuid> = batch.iter().map(|ready| ready.event.id).collect();
        Counters::add(&self.counters.verify_statements, 1);
        let stored: HashMap<Uuid, EventEnvelope> = match self.log.read_events(&ids).await {
            Ok(events) => events.into_iter().map(|event| (event.id, event)).collect(),
            Err(error) => {
                warn!(%error, projection = self.projection.name(), "cannot check events against the store; retrying");
                for ready in batch {
                    let delay = Duration::from_millis(200 * ready.ack.delivered().clamp(1, 25));
                    let _ = ready.ack.retry(delay).await;
                }
                return None;
            }
        };
        let mut verified = Vec::with_capacity(batch.len());
        for Ready { event: claimed, ack } in batch {
            match stored.get(&claimed.id) {
                Some(copy)
                    if copy.aggregate_type == claimed.aggregate_type
                        && copy.aggregate_id == claimed.aggregate_id
                        && copy.stream_version == claimed.stream_version
                        && copy.type_name == claimed.type_name =>
                {
                    let mut copy = copy.clone();
                    // Tracing data only: the store's, else the delivery's
                    // (events appended before the store kept it).
                    if copy.metadata.traceparent.is_none() {
                        copy.metadata.traceparent = claimed.metadata.traceparent;
                    }
                    verified.push(Ready { event: copy, ack });
                }
                Some(copy) => {
                    let reason = format!(
                        "event {} claims to be {} v{} {} but the event store has it as {} v{} {}",
                        claimed.id,
                        claimed.stream_id(),
                        claimed.stream_version,
                        claimed.type_name,
                        copy.stream_id(),
                        copy.stream_version,
                        copy.type_name
                    );
                    self.dead_letter(ack, &reason).await;
                }
                None => {
                    let reason = format!(
                        "event {} ({} v{} {}) is not in the event store",
                        claimed.id,
                        claimed.stream_id(),
                        claimed.stream_version,
                        claimed.type_name
                    );
                    self.dead_letter(ack, &reason).await;
                }
            }
        }
        Some(verified)
    }
}
