//! Server-mode adapters: a durable JetStream consumer per projector (what
//! it cannot take is kept in the `<ns>_DLQ` stream, see
//! [`schema::dead_letters`]), and view-change notifications on core NATS
//! subjects.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use schema::ports::{Acknowledge, EventDelivery, EventFeed, Notifier, PortError, ViewChange};
use schema::{EventEnvelope, Namespace};

pub struct JetStreamEventFeed {
    client: async_nats::Client,
    ns: Namespace,
    /// How long before an unacknowledged event goes to another consumer:
    /// the time a crashed process's events wait.
    ack_wait: Duration,
    /// Deliveries of one message before the projector dead-letters it
    /// (what it could not apply, the catch-up from the store applies).
    max_deliver: i64,
}

/// Deliveries of an event message before it is dead-lettered, by default.
pub const MAX_DELIVER: i64 = 20;

impl JetStreamEventFeed {
    pub fn new(client: async_nats::Client, ns: Namespace) -> Self {
        Self { client, ns, ack_wait: Duration::from_secs(10), max_deliver: MAX_DELIVER }
    }

    pub fn with_ack_wait(self, ack_wait: Duration) -> Self {
        Self { ack_wait, ..self }
    }

    /// At least 1.
    pub fn with_max_deliver(self, max_deliver: i64) -> Self {
        Self { max_deliver: max_deliver.max(1), ..self }
    }
}

#[async_trait]
impl EventFeed for JetStreamEventFeed {
    async fn subscribe(
        &self,
        consumer: &str,
        aggregate_types: &[&str],
    ) -> Result<BoxStream<'static, Result<EventDelivery, PortError>>, PortError> {
        let js = jetstream::new(self.client.clone());
        let stream = js.get_stream(self.ns.resource("EVENTS")).await.map_err(PortError::backend)?;
        let name = self.ns.resource(consumer);
        // Create or update, so an existing consumer takes these settings.
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(name.clone()),
                filter_subjects: aggregate_types.iter().map(|kind| self.ns.event_filter(kind)).collect(),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: self.ack_wait,
                // No limit here: JetStream's own would drop a message
                // silently. The projector dead-letters at `max_deliver`
                // (`is_last_delivery`) and retries until the dead-letter
                // stream has taken it.
                max_deliver: -1,
                max_ack_pending: 1000,
                ..Default::default()
            })
            .await
            .map_err(PortError::backend)?;
        let messages = consumer.messages().await.map_err(PortError::backend)?;
        let (ns, max_deliver) = (self.ns.clone(), self.max_deliver);
        Ok(messages
            .map(move |message| {
                let message = message.map_err(PortError::backend)?;
                let event = serde_json::from_slice::<EventEnvelope>(&message.payload)
                    .map_err(|error| format!("not an event envelope: {error}"));
                let ack = JetStreamAck { js: js.clone(), ns: ns.clone(), message, max_deliver };
                Ok(EventDelivery { event, ack: Box::new(ack) })
            })
            .boxed())
    }
}

struct JetStreamAck {
    js: jetstream::Context,
    ns: Namespace,
    message: jetstream::Message,
    max_deliver: i64,
}

#[async_trait]
impl Acknowledge for JetStreamAck {
    async fn ack(self: Box<Self>) -> Result<(), PortError> {
        self.message.ack().await.map_err(|error| PortError::Unavailable(format!("ack: {error}")))
    }
    async fn retry(self: Box<Self>, delay: Duration) -> Result<(), PortError> {
        self.message
            .ack_with(AckKind::Nak(Some(delay)))
            .await
            .map_err(|error| PortError::Unavailable(format!("nak: {error}")))
    }
    async fn dead_letter(self: Box<Self>, source: &str, reason: &str) -> Result<(), PortError> {
        match schema::dead_letters::dead_letter(&self.js, &self.ns, source, &self.message, reason).await {
            Ok(()) => Ok(()),
            Err(error) => {
                // Not terminated: it comes back, and is dead-lettered then.
                let _ = self.message.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
                Err(error)
            }
        }
    }
    fn delivered(&self) -> u64 {
        self.message.info().map(|info| info.delivered.max(1) as u64).unwrap_or(1)
    }
    fn is_last_delivery(&self) -> bool {
        self.delivered() >= self.max_deliver as u64
    }
}

/// Publishes `<ns>.changed.<view>.<id>.<scope>`; watchers subscribe to one
/// row (`<id>.*`), one customer's rows (`*.<scope>`), or the whole view.
pub struct NatsNotifier {
    client: async_nats::Client,
    ns: Namespace,
}

impl NatsNotifier {
    pub fn new(client: async_nats::Client, ns: Namespace) -> Self {
        Self { client, ns }
    }
}

#[async_trait]
impl Notifier for NatsNotifier {
    async fn notify(&self, change: &ViewChange) -> Result<(), PortError> {
        let payload = serde_json::to_vec(change).map_err(PortError::backend)?;
        let subject = self.ns.changed_subject(&change.view, &change.id, change.scope.as_deref());
        match &change.traceparent {
            Some(traceparent) => {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(schema::trace::TRACEPARENT, traceparent.as_str());
                self.client.publish_with_headers(subject, headers, payload.into()).await
            }
            None => self.client.publish(subject, payload.into()).await,
        }
        .map_err(PortError::backend)
    }

    async fn watch(&self, view: &str, id: &str) -> Result<BoxStream<'static, ViewChange>, PortError> {
        self.changes(self.ns.changed_row_filter(view, id)).await
    }

    async fn watch_view(&self, view: &str) -> Result<BoxStream<'static, ViewChange>, PortError> {
        self.changes(self.ns.changed_view_filter(view)).await
    }

    async fn watch_scope(
        &self,
        view: &str,
        scope: &str,
        id: Option<&str>,
    ) -> Result<BoxStream<'static, ViewChange>, PortError> {
        self.changes(self.ns.changed_scope_filter(view, scope, id)).await
    }
}

impl NatsNotifier {
    async fn changes(&self, subject: String) -> Result<BoxStream<'static, ViewChange>, PortError> {
        let subscriber = self.client.subscribe(subject).await.map_err(PortError::backend)?;
        // One round trip: the server has the subscription before anything is
        // read, so "from now on" holds (a cache trusts it).
        self.client.flush().await.map_err(PortError::backend)?;
        Ok(subscriber
            .filter_map(|message| futures::future::ready(serde_json::from_slice(&message.payload).ok()))
            .boxed())
    }
}
