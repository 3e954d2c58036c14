//! Server-mode adapters: commands arrive from the JetStream work queue
//! (taken only from where they may come, [`crate::origin`]), events leave
//! through the events stream, outcomes go to the outcome subject and the
//! outcomes bucket. A command that cannot be handled is kept in the
//! `<ns>_DLQ` stream ([`schema::dead_letters`]) and, once given up,
//! answered FAILED.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull, kv};
use async_nats::{HeaderMap, header::NATS_MESSAGE_ID};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use schema::ports::{EventPublisher, PortError};
use schema::{CommandEnvelope, CommandOutcome, EventEnvelope, Namespace};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::handler::{CommandHandler, HandleError};
use crate::origin::check_origin;

/// Publishes events to `<ns>.evt.<aggregate>.<id>` with `Nats-Msg-Id` = event id.
pub struct JetStreamEventPublisher {
    js: jetstream::Context,
    ns: Namespace,
}

impl JetStreamEventPublisher {
    pub fn new(js: jetstream::Context, ns: Namespace) -> Self {
        Self { js, ns }
    }
}

#[async_trait]
impl EventPublisher for JetStreamEventPublisher {
    async fn publish(&self, events: &[EventEnvelope]) -> Result<(), PortError> {
        // Send all, then await the acks: one connection keeps the order.
        let mut acks = Vec::with_capacity(events.len());
        for event in events {
            let mut headers = HeaderMap::new();
            headers.insert(NATS_MESSAGE_ID, event.id.to_string().as_str());
            if let Some(traceparent) = &event.metadata.traceparent {
                headers.insert(schema::trace::TRACEPARENT, traceparent.as_str());
            }
            let payload = serde_json::to_vec(event).map_err(PortError::backend)?;
            let subject = self.ns.event_subject(&event.aggregate_type, &event.aggregate_id);
            acks.push(
                self.js.publish_with_headers(subject, headers, payload.into()).await.map_err(PortError::backend)?,
            );
        }
        for ack in acks {
            ack.await.map_err(PortError::backend)?;
        }
        Ok(())
    }
}

/// How the command consumer runs.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Commands taken at once by one consumer (they are committed in groups).
    pub concurrency: usize,
    /// Deliveries before a command that keeps failing is dead-lettered.
    pub max_deliver: i64,
    /// How long JetStream waits for an ack before delivering again.
    pub ack_wait: Duration,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self { concurrency: 256, max_deliver: 20, ack_wait: Duration::from_secs(10) }
    }
}

/// Consumes the commands of one handler group (`aggregate`) until `shutdown`,
/// then finishes the commands in flight.
pub async fn run_command_consumer(
    client: async_nats::Client,
    ns: Namespace,
    aggregate: &str,
    handler: CommandHandler,
    outcomes: kv::Store,
    settings: ConsumerSettings,
    shutdown: CancellationToken,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let js = jetstream::new(client.clone());
    let stream = js.get_stream(ns.resource("COMMANDS")).await?;
    let name = ns.resource(&format!("write_side_{aggregate}"));
    // Create or update: a consumer from an earlier release gets the new
    // filters (the internal subjects) and delivery settings.
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(name.clone()),
            // The clients' commands and the saga's (internal) ones.
            filter_subjects: vec![ns.command_filter(aggregate), ns.internal_command_filter(aggregate)],
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: settings.ack_wait,
            // No limit here: JetStream's own would drop the message
            // silently (an advisory only). Deliveries are counted in
            // `process`, which dead-letters at `max_deliver` and keeps
            // the message until the dead-letter stream has taken it.
            max_deliver: -1,
            max_ack_pending: (settings.concurrency * 4) as i64,
            ..Default::default()
        })
        .await?;
    let messages = consumer.messages().await?.take_until(shutdown.cancelled_owned());
    info!(consumer = %name, "write side consuming commands");
    let context = Arc::new(Context {
        js: jetstream::new(client.clone()),
        client,
        ns,
        handler,
        outcomes,
        max_deliver: settings.max_deliver,
    });
    messages
        .for_each_concurrent(settings.concurrency, |message| {
            let context = context.clone();
            async move {
                match message {
                    Ok(message) => context.process(message).await,
                    Err(error) => warn!(%error, "command consumer error; continuing"),
                }
            }
        })
        .await;
    info!(consumer = %name, "write side drained");
    Ok(())
}

struct Context {
    client: async_nats::Client,
    js: jetstream::Context,
    ns: Namespace,
    handler: CommandHandler,
    outcomes: kv::Store,
    max_deliver: i64,
}

impl Context {
    async fn process(&self, message: jetstream::Message) {
        let delivered = message.info().map(|info| info.delivered).unwrap_or(1);
        let command: CommandEnvelope = match serde_json::from_slice(&message.payload) {
            Ok(command) => command,
            Err(error) => {
                self.dead_letter(message, &format!("not a command envelope: {error}")).await;
                return;
            }
        };
        if delivered > self.max_deliver {
            // Its earlier deliveries ended unsettled (a crash, a hang past ack_wait).
            let reason = format!("delivered {delivered} times without an answer");
            if self.dead_letter(message, &reason).await {
                self.announce_failed(&command, delivered).await;
            }
            return;
        }
        if let Err(reason) = check_origin(&self.ns, &message.subject, &command) {
            // Refused without an outcome: an outcome under this id could
            // answer (and so block) the genuine command that carries it.
            self.dead_letter(message, &reason).await;
            return;
        }
        match self.handler.handle(&command).await {
            Ok(outcome) => match self.announce(&outcome).await {
                Ok(()) => settle(&message, AckKind::Ack).await,
                Err(error) => {
                    warn!(%error, command_id = %command.id, "outcome stored but not announced; redelivering");
                    settle(&message, AckKind::Nak(Some(Duration::from_millis(200)))).await;
                }
            },
            Err(HandleError::Poison(reason)) => {
                if self.dead_letter(message, &reason).await {
                    self.announce_failed(&command, delivered).await;
                }
            }
            Err(error) if delivered >= self.max_deliver => {
                error!(%error, command_id = %command.id, delivered, "giving up on command");
                // Kept first, then answered: a FAILED outcome always has its dead letter.
                if self.dead_letter(message, &format!("failed {delivered} times, last: {error}")).await {
                    self.announce_failed(&command, delivered).await;
                }
            }
            Err(error) => {
                warn!(%error, command_id = %command.id, delivered, "command failed; redelivering");
                // A payment provider's failure is per request: try again soon.
                // A store failure may be an outage: back off, up to 6.4 s.
                let delay = match error {
                    HandleError::Unavailable(_) => Duration::from_millis(250),
                    _ => Duration::from_millis(100 * (1u64 << delivered.clamp(0, 6))),
                };
                settle(&message, AckKind::Nak(Some(delay))).await;
            }
        }
    }

    /// Makes the outcome visible, at once: on the subject (for the gateway
    /// waiting right now) and in the bucket (for late or repeated askers),
    /// whose acknowledgement the command's own ack then waits for.
    async fn announce(&self, outcome: &CommandOutcome) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let payload: Bytes = serde_json::to_vec(outcome)?.into();
        let (stored, published) = tokio::join!(
            self.outcomes.put(outcome.command_id.to_string(), payload.clone()),
            self.client.publish(self.ns.outcome_subject(&outcome.command_id), payload)
        );
        stored?;
        published?;
        Ok(())
    }

    /// Answers a command given up: FAILED with `COMMAND_FAILED`, to the
    /// caller waiting now and in the bucket `commandOutcome` reads. Not in
    /// SQL: nothing was decided, and a redrive that succeeds replaces it.
    ///
    /// A decision the store did record (a commit whose answer was lost,
    /// then an outage) is announced instead: FAILED never hides one.
    async fn announce_failed(&self, command: &CommandEnvelope, delivered: i64) {
        // Bounded: the store may be what is down.
        let stored = tokio::time::timeout(Duration::from_secs(2), self.handler.store().outcome(command.id)).await;
        let outcome = match stored {
            Ok(Ok(Some(decided))) => decided,
            _ => CommandOutcome::given_up(command, delivered.max(1) as u64),
        };
        if let Err(error) = self.announce(&outcome).await {
            warn!(%error, command_id = %command.id, "could not announce that the command failed");
        }
    }

    /// Moves the command into the dead-letter stream, then terminates it;
    /// if the stream did not take it, it is delivered again instead.
    /// Returns whether it was dead-lettered.
    async fn dead_letter(&self, message: jetstream::Message, reason: &str) -> bool {
        error!(reason, subject = %message.subject, "dead-lettering command");
        match schema::dead_letters::dead_letter(&self.js, &self.ns, "write-side", &message, reason).await {
            Ok(()) => {
                schema::metrics::metrics().dead_letter("write-side");
                true
            }
            Err(error) => {
                warn!(%error, "dead letter not kept; redelivering");
                settle(&message, AckKind::Nak(Some(Duration::from_secs(1)))).await;
                false
            }
        }
    }
}

async fn settle(message: &jetstream::Message, kind: AckKind) {
    if let Err(error) = message.ack_with(kind).await {
        // The message will be redelivered after ack_wait; the stored outcome
        // makes that harmless.
        warn!(%error, "could not settle command message");
    }
}
