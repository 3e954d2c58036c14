//! Embedded-mode command bus: the gateway's commands go straight to the
//! handler in the same process. A command is decided when `dispatch`
//! returns `Decided`; `Pending` means it is still being decided in the
//! background (it is not durable until then, unlike in server mode).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use schema::ports::{CommandBus, Dispatched, PortError};
use schema::{CommandEnvelope, CommandOutcome};
use tokio::sync::Semaphore;
use tracing::error;
use uuid::Uuid;

use crate::handler::{CommandHandler, HandleError};

pub struct InProcessCommandBus {
    handler: CommandHandler,
    /// Bounds the commands decided at once, as the server consumer does.
    permits: Arc<Semaphore>,
}

impl InProcessCommandBus {
    pub fn new(handler: CommandHandler, concurrency: usize) -> Self {
        Self { handler, permits: Arc::new(Semaphore::new(concurrency)) }
    }
}

#[async_trait]
impl CommandBus for InProcessCommandBus {
    async fn dispatch(&self, command: CommandEnvelope, wait: Duration) -> Result<Dispatched, PortError> {
        let handler = self.handler.clone();
        let permits = self.permits.clone();
        // Spawned so that a gateway timeout does not abandon the decision.
        let task = tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.map_err(PortError::backend)?;
            handler.handle(&command).await.map_err(|error| match error {
                HandleError::Poison(reason) => PortError::Unavailable(format!("command handler: {reason}")),
                HandleError::Store(error) => {
                    error!(%error, "embedded command failed");
                    PortError::backend(error)
                }
                HandleError::Unavailable(reason) => PortError::Unavailable(reason),
            })
        });
        match tokio::time::timeout(wait, task).await {
            Ok(Ok(result)) => result.map(Dispatched::Decided),
            Ok(Err(join_error)) => Err(PortError::backend(join_error)),
            Err(_elapsed) => Ok(Dispatched::Pending),
        }
    }

    async fn outcome(&self, command_id: Uuid) -> Result<Option<CommandOutcome>, PortError> {
        self.handler.store().outcome(command_id).await.map_err(PortError::backend)
    }
}
