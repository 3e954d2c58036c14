//! Server-mode adapters: a durable JetStream consumer per projector, and
//! view-change notifications on core NATS subjects.

use std::time::Duration;

use async_nats::HeaderMap;
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
}

impl JetStreamEventFeed {
    pub fn new(client: async_nats::Client, ns: Namespace) -> Self {
        Self { client, ns, ack_wait: Duration::from_secs(10) }
    }

    pub fn with_ack_wait(self, ack_wait: Duration) -> Self {
        Self { ack_wait, ..self }
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
        let consumer = stream
            .get_or_create_consumer(
                &name,
                pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subjects: aggregate_types.iter().map(|kind| self.ns.event_filter(kind)).collect(),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: self.ack_wait,
                    max_ack_pending: 1000,
                    ..Default::default()
                },
            )
            .await
            .map_err(PortError::backend)?;
        let messages = consumer.messages().await.map_err(PortError::backend)?;
        Ok(messages
            .map(|message| {
                let message = message.map_err(PortError::backend)?;
                let event = serde_json::from_slice::<EventEnvelope>(&message.payload)
                    .map_err(|error| format!("not an event envelope: {error}"));
                Ok(EventDelivery { event, raw: message.payload.to_vec(), ack: Box::new(JetStreamAck(message)) })
            })
            .boxed())
    }

    async fn dead_letter(&self, source: &str, raw: &[u8], reason: &str) -> Result<(), PortError> {
        let mut headers = HeaderMap::new();
        headers.insert("Conveyor-Dead-Letter-Reason", reason.replace(['\r', '\n'], " ").as_str());
        self.client
            .publish_with_headers(self.ns.dead_letter_subject(source), headers, raw.to_vec().into())
            .await
            .map_err(PortError::backend)
    }
}

struct JetStreamAck(jetstream::Message);

#[async_trait]
impl Acknowledge for JetStreamAck {
    async fn ack(self: Box<Self>) -> Result<(), PortError> {
        self.0.ack().await.map_err(|error| PortError::Unavailable(format!("ack: {error}")))
    }
    async fn retry(self: Box<Self>, delay: Duration) -> Result<(), PortError> {
        self.0
            .ack_with(AckKind::Nak(Some(delay)))
            .await
            .map_err(|error| PortError::Unavailable(format!("nak: {error}")))
    }
    async fn reject(self: Box<Self>) -> Result<(), PortError> {
        self.0.ack_with(AckKind::Term).await.map_err(|error| PortError::Unavailable(format!("term: {error}")))
    }
    fn delivered(&self) -> u64 {
        self.0.info().map(|info| info.delivered.max(1) as u64).unwrap_or(1)
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
        self.client
            .publish(self.ns.changed_subject(&change.view, &change.id, change.scope.as_deref()), payload.into())
            .await
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
