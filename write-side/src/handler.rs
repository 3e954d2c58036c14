//! The command handler: routes a command to its aggregate, decides it in the
//! event store, then publishes the new events. Publication is best effort
//! here: whatever fails stays in the outbox for the relay.

use std::sync::Arc;

use schema::ports::EventPublisher;
use schema::{CommandEnvelope, CommandOutcome, EventEnvelope};
use tracing::{instrument, warn};

use crate::aggregate::Aggregate;
use crate::event_store::{SqlEventStore, StoreError};
use crate::order::Order;

/// The aggregate types this build handles, for `--only` and consumer filters.
pub const AGGREGATES: &[&str] = &[Order::TYPE];

#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The message can never be handled: dead-letter it.
    #[error("poison command: {0}")]
    Poison(String),
    /// The store failed; a later delivery may succeed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for HandleError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Contract(reason) => Self::Poison(reason),
            other => Self::Store(other),
        }
    }
}

#[derive(Clone)]
pub struct CommandHandler {
    store: SqlEventStore,
    publisher: Arc<dyn EventPublisher>,
}

impl CommandHandler {
    pub fn new(store: SqlEventStore, publisher: Arc<dyn EventPublisher>) -> Self {
        Self { store, publisher }
    }

    pub fn store(&self) -> &SqlEventStore {
        &self.store
    }

    /// Decides the command (or returns its stored outcome) and publishes the
    /// events it appended. Once this returns `Ok`, the outcome is committed.
    #[instrument(skip_all, fields(command_id = %command.id, command = %command.type_name))]
    pub async fn handle(&self, command: &CommandEnvelope) -> Result<CommandOutcome, HandleError> {
        let decision = match command.aggregate_type.as_str() {
            Order::TYPE => self.store.execute::<Order>(command).await?,
            other => {
                return Err(HandleError::Poison(format!(
                    "no handler for aggregate type `{other}`"
                )));
            }
        };
        if !decision.new_events.is_empty() {
            self.publish(&decision.new_events).await;
        }
        Ok(decision.outcome)
    }

    async fn publish(&self, events: &[EventEnvelope]) {
        match self.publisher.publish(events).await {
            Ok(()) => {
                let ids: Vec<_> = events.iter().map(|event| event.id).collect();
                if let Err(error) = self.store.mark_published(&ids).await {
                    warn!(%error, "published, but the outbox rows remain; the relay will publish them again");
                }
            }
            Err(error) => warn!(%error, "publishing failed; the outbox relay will retry"),
        }
    }
}
