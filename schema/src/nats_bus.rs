//! The server-mode command bus, shared by the gateway and the sagas: commands go to the JetStream work queue,
//! deduplicated by command id; the answer comes back on `outcome.<id>`, or
//! from the outcomes bucket when JetStream dropped a duplicate (a retry
//! whose first attempt was already decided).

use std::time::Duration;

use crate::ports::{CommandBus, Dispatched, PortError, Readiness};
use crate::{CommandEnvelope, CommandOutcome, Namespace};
use async_nats::jetstream::{self, kv};
use async_nats::{HeaderMap, header::NATS_MESSAGE_ID};
use async_trait::async_trait;
use futures::StreamExt;
use uuid::Uuid;

pub struct NatsCommandBus {
    client: async_nats::Client,
    js: jetstream::Context,
    outcomes: kv::Store,
    ns: Namespace,
}

impl NatsCommandBus {
    pub fn new(client: async_nats::Client, outcomes: kv::Store, ns: Namespace) -> Self {
        Self { js: jetstream::new(client.clone()), client, outcomes, ns }
    }
}

#[async_trait]
impl CommandBus for NatsCommandBus {
    async fn dispatch(&self, command: CommandEnvelope, wait: Duration) -> Result<Dispatched, PortError> {
        // Listen before publishing, so a fast answer is not missed.
        let mut answers =
            self.client.subscribe(self.ns.outcome_subject(&command.id)).await.map_err(PortError::backend)?;
        let mut headers = HeaderMap::new();
        headers.insert(NATS_MESSAGE_ID, command.id.to_string().as_str());
        let subject = self.ns.command_subject(&command.aggregate_type, &command.type_name);
        let payload = serde_json::to_vec(&command).map_err(PortError::backend)?;
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
        let answer = tokio::time::timeout(wait, async {
            while let Some(message) = answers.next().await {
                if let Ok(outcome) = serde_json::from_slice::<CommandOutcome>(&message.payload) {
                    return Some(outcome);
                }
            }
            None
        })
        .await;
        Ok(match answer {
            Ok(Some(outcome)) => Dispatched::Decided(outcome),
            _ => Dispatched::Pending,
        })
    }

    async fn outcome(&self, command_id: Uuid) -> Result<Option<CommandOutcome>, PortError> {
        let stored = self.outcomes.get(command_id.to_string()).await.map_err(PortError::backend)?;
        stored.map(|bytes| serde_json::from_slice(&bytes).map_err(PortError::backend)).transpose()
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
