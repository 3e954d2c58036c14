//! Publication off the answer's path. A lane hands the events of each
//! committed batch to its publication task and answers its callers at once;
//! the task publishes them in the order they were committed (one lane holds
//! a stream, one task publishes a lane: per-stream order holds), retrying a
//! failed publish before anything behind it, then forgets their outbox rows
//! in one statement. A crash in between leaves the rows for the relay.

use std::sync::Arc;
use std::time::Duration;

use schema::EventEnvelope;
use schema::ports::EventPublisher;
use sqlx::AnyPool;
use tokio::sync::mpsc;
use tracing::warn;

use super::rows;

/// Events published per call, at most: one call sends them all, then awaits the acks.
const MAX_EVENTS: usize = 1024;

/// The sending side, held by a lane.
#[derive(Clone)]
pub(super) struct Publication {
    sender: mpsc::Sender<Vec<EventEnvelope>>,
}

impl Publication {
    pub fn start(pool: AnyPool, publisher: Arc<dyn EventPublisher>) -> Self {
        // Bounded: a transport that stays down slows the lanes instead of
        // filling memory; the events are safe in the outbox meanwhile.
        let (sender, receiver) = mpsc::channel(1024);
        tokio::spawn(run(receiver, pool, publisher));
        Self { sender }
    }

    pub async fn send(&self, events: Vec<EventEnvelope>) {
        if self.sender.send(events).await.is_err() {
            warn!("publication stopped; the outbox relay will publish these events");
        }
    }
}

async fn run(mut receiver: mpsc::Receiver<Vec<EventEnvelope>>, pool: AnyPool, publisher: Arc<dyn EventPublisher>) {
    while let Some(mut events) = receiver.recv().await {
        while events.len() < MAX_EVENTS {
            match receiver.try_recv() {
                Ok(more) => events.extend(more),
                Err(_) => break,
            }
        }
        let mut attempt: u64 = 0;
        while let Err(error) = publisher.publish(&events).await {
            attempt += 1;
            warn!(%error, attempt, events = events.len(), "publishing committed events failed; retrying");
            tokio::time::sleep(Duration::from_millis(50 * attempt.min(20))).await;
        }
        let ids: Vec<_> = events.iter().map(|event| event.id).collect();
        let forgotten = schema::sql::retry("forget published events", || async {
            let mut conn = pool.acquire().await?;
            rows::delete_outbox(&mut conn, &ids).await
        })
        .await;
        if let Err(error) = forgotten {
            warn!(%error, "published, but the outbox rows remain; the relay will publish them again");
        }
    }
}
