//! The server-mode command bus, shared by the gateway and the sagas: commands go to the JetStream work queue,
//! deduplicated by command id; the answer comes back on `outcome.<id>`, or
//! from the outcomes bucket when JetStream dropped a duplicate (a retry
//! whose first attempt was already decided).
//!
//! One subscription to `outcome.*` per bus serves every waiting command (a
//! table of waiters by command id), instead of a subscribe and an
//! unsubscribe per command.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::ports::{CommandBus, Dispatched, PortError, Readiness};
use crate::{CommandEnvelope, CommandOutcome, Namespace};
use async_nats::jetstream::{self, kv};
use async_nats::{HeaderMap, header::NATS_MESSAGE_ID};
use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::{OnceCell, oneshot};
use uuid::Uuid;

type Waiters = Arc<Mutex<HashMap<Uuid, oneshot::Sender<CommandOutcome>>>>;

pub struct NatsCommandBus {
    client: async_nats::Client,
    js: jetstream::Context,
    outcomes: kv::Store,
    ns: Namespace,
    waiters: Waiters,
    /// The `outcome.*` subscription, made on first use.
    listening: OnceCell<()>,
}

impl NatsCommandBus {
    pub fn new(client: async_nats::Client, outcomes: kv::Store, ns: Namespace) -> Self {
        Self {
            js: jetstream::new(client.clone()),
            client,
            outcomes,
            ns,
            waiters: Waiters::default(),
            listening: OnceCell::new(),
        }
    }

    /// Subscribes to every outcome once; a task hands each to its waiter.
    async fn listen(&self) -> Result<(), PortError> {
        self.listening
            .get_or_try_init(|| async {
                let mut answers = self.client.subscribe(self.ns.outcome_filter()).await.map_err(PortError::backend)?;
                let waiters = self.waiters.clone();
                tokio::spawn(async move {
                    while let Some(message) = answers.next().await {
                        let Ok(outcome) = serde_json::from_slice::<CommandOutcome>(&message.payload) else { continue };
                        let waiter =
                            waiters.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&outcome.command_id);
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(outcome);
                        }
                    }
                });
                Ok::<_, PortError>(())
            })
            .await
            .map(|_| ())
    }

    fn forget(&self, command_id: &Uuid) {
        self.waiters.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(command_id);
    }
}

#[async_trait]
impl CommandBus for NatsCommandBus {
    async fn dispatch(&self, command: CommandEnvelope, wait: Duration) -> Result<Dispatched, PortError> {
        self.listen().await?;
        // Wait before publishing, so a fast answer is not missed.
        let (waiter, answer) = oneshot::channel();
        self.waiters.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(command.id, waiter);
        let result = self.publish_and_wait(&command, answer, wait).await;
        self.forget(&command.id);
        result
    }

    async fn outcome(&self, command_id: Uuid) -> Result<Option<CommandOutcome>, PortError> {
        let stored = self.outcomes.get(command_id.to_string()).await.map_err(PortError::backend)?;
        stored.map(|bytes| serde_json::from_slice(&bytes).map_err(PortError::backend)).transpose()
    }
}

impl NatsCommandBus {
    async fn publish_and_wait(
        &self,
        command: &CommandEnvelope,
        answer: oneshot::Receiver<CommandOutcome>,
        wait: Duration,
    ) -> Result<Dispatched, PortError> {
        let mut headers = HeaderMap::new();
        headers.insert(NATS_MESSAGE_ID, command.id.to_string().as_str());
        if let Some(traceparent) = &command.metadata.traceparent {
            headers.insert(crate::trace::TRACEPARENT, traceparent.as_str());
        }
        // The saga's own commands go to the internal subjects, which the
        // gateway's NATS user may not publish to.
        let subject = self.ns.subject_for_command(&command.aggregate_type, &command.type_name);
        let payload = serde_json::to_vec(command).map_err(PortError::backend)?;
        let ack = self
            .js
            .publish_with_headers(subject, headers, payload.into())
            .await
            .map_err(PortError::backend)?
            .await
            .map_err(PortError::backend)?;
        if ack.duplicate
            && let Some(outcome) = self.outcome(command.id).await?
        {
            return Ok(Dispatched::Decided(outcome));
        }
        Ok(match tokio::time::timeout(wait, answer).await {
            Ok(Ok(outcome)) => Dispatched::Decided(outcome),
            _ => Dispatched::Pending,
        })
    }
}

/// `/readyz` for NATS: the client is connected.
pub struct NatsReadiness(pub async_nats::Client);

#[async_trait]
impl Readiness for NatsReadiness {
    async fn check(&self) -> Result<(), PortError> {
        match self.0.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(PortError::Unavailable(format!("NATS ({state})"))),
        }
    }
}
