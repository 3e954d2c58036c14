//! The outbox relay: publishes, in stream order, events that were committed
//! but whose publication a crash or a transport failure left unconfirmed.
//! Duplicates are harmless: JetStream drops a repeated `Nats-Msg-Id` within
//! its window and projectors skip what they have applied.

use std::sync::Arc;
use std::time::Duration;

use schema::ports::EventPublisher;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::event_store::SqlEventStore;

#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// How often to look for stranded events.
    pub interval: Duration,
    /// How old an outbox row must be before the relay takes it over from its handler.
    pub grace: Duration,
    pub batch: u32,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self { interval: Duration::from_secs(1), grace: Duration::from_secs(5), batch: 500 }
    }
}

pub struct OutboxRelay {
    store: SqlEventStore,
    publisher: Arc<dyn EventPublisher>,
    settings: RelaySettings,
}

impl OutboxRelay {
    pub fn new(store: SqlEventStore, publisher: Arc<dyn EventPublisher>, settings: RelaySettings) -> Self {
        Self { store, publisher, settings }
    }

    /// Publishes everything stranded now, older than the grace period.
    /// Returns how many events it published.
    pub async fn publish_stranded(&self, grace: Duration) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
        let mut total = 0;
        loop {
            let events = self.store.unpublished(grace, self.settings.batch).await?;
            if events.is_empty() {
                return Ok(total);
            }
            self.publisher.publish(&events).await?;
            let ids: Vec<_> = events.iter().map(|event| event.id).collect();
            self.store.mark_published(&ids).await?;
            total += events.len();
        }
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.publish_stranded(self.settings.grace).await {
                Ok(0) => {}
                Ok(count) => info!(count, "outbox relay published stranded events"),
                Err(error) => warn!(%error, "outbox relay failed; retrying next round"),
            }
        }
    }
}
