//! Embedded-mode adapters: events and view changes travel over in-process
//! broadcast channels. Nothing here is durable, and nothing needs to be: the
//! projector catches up from the event store at start and whenever the
//! channel lagged, so a lost message costs latency, never data.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use schema::EventEnvelope;
use schema::ports::{Acknowledge, EventDelivery, EventFeed, EventPublisher, Notifier, PortError, ViewChange};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tracing::error;

/// The in-process event transport: the write side publishes, projectors subscribe.
#[derive(Clone)]
pub struct InProcessEventHub {
    sender: broadcast::Sender<EventEnvelope>,
}

impl InProcessEventHub {
    pub fn new(capacity: usize) -> Self {
        Self { sender: broadcast::channel(capacity).0 }
    }
}

#[async_trait]
impl EventPublisher for InProcessEventHub {
    async fn publish(&self, events: &[EventEnvelope]) -> Result<(), PortError> {
        for event in events {
            // No subscriber yet is fine: projectors catch up from the store.
            let _ = self.sender.send(event.clone());
        }
        Ok(())
    }
}

#[async_trait]
impl EventFeed for InProcessEventHub {
    async fn subscribe(
        &self,
        _consumer: &str,
        aggregate_types: &[&str],
    ) -> Result<BoxStream<'static, Result<EventDelivery, PortError>>, PortError> {
        let types: Vec<String> = aggregate_types.iter().map(|name| name.to_string()).collect();
        let stream = BroadcastStream::new(self.sender.subscribe()).filter_map(move |item| {
            let item = match item {
                Ok(event) if types.contains(&event.aggregate_type) => {
                    Some(Ok(EventDelivery { event: Ok(event), raw: Vec::new(), ack: Box::new(InProcessAck) }))
                }
                Ok(_) => None,
                // Lagged: the projector repairs from the event store.
                Err(lagged) => Some(Err(PortError::Unavailable(format!("in-process event feed: {lagged}")))),
            };
            futures::future::ready(item)
        });
        Ok(stream.boxed())
    }

    async fn dead_letter(&self, source: &str, _raw: &[u8], reason: &str) -> Result<(), PortError> {
        // No dead-letter subject in one process: the log is where operators look.
        error!(source, reason, "dead letter");
        Ok(())
    }
}

/// In-process deliveries cannot be redelivered; a failed event is recovered
/// by the projector's catch-up from the event store instead.
struct InProcessAck;

#[async_trait]
impl Acknowledge for InProcessAck {
    async fn ack(self: Box<Self>) -> Result<(), PortError> {
        Ok(())
    }
    async fn retry(self: Box<Self>, _delay: Duration) -> Result<(), PortError> {
        Ok(())
    }
    async fn reject(self: Box<Self>) -> Result<(), PortError> {
        Ok(())
    }
    fn delivered(&self) -> u64 {
        1
    }
}

/// View-change notifications within one process.
#[derive(Clone)]
pub struct BroadcastNotifier {
    sender: broadcast::Sender<ViewChange>,
}

impl BroadcastNotifier {
    pub fn new(capacity: usize) -> Self {
        Self { sender: broadcast::channel(capacity).0 }
    }
}

#[async_trait]
impl Notifier for BroadcastNotifier {
    async fn notify(&self, change: &ViewChange) -> Result<(), PortError> {
        let _ = self.sender.send(change.clone());
        Ok(())
    }

    async fn watch(&self, view: &str, id: &str) -> Result<BoxStream<'static, ViewChange>, PortError> {
        let (view, id) = (view.to_string(), id.to_string());
        let stream = BroadcastStream::new(self.sender.subscribe()).filter_map(move |item| {
            futures::future::ready(match item {
                Ok(change) if change.view == view && change.id == id => Some(change),
                Ok(_) => None,
                // Lagged: tell the watcher to re-read; the version is a hint only.
                Err(_) => Some(ViewChange { view: view.clone(), id: id.clone(), version: 0 }),
            })
        });
        Ok(stream.boxed())
    }

    async fn watch_view(&self, view: &str) -> Result<BoxStream<'static, ViewChange>, PortError> {
        let view = view.to_string();
        let stream = BroadcastStream::new(self.sender.subscribe()).filter_map(move |item| {
            futures::future::ready(match item {
                Ok(change) if change.view == view => Some(change),
                Ok(_) => None,
                // Lagged: an empty id tells the watcher it missed some.
                Err(_) => Some(ViewChange { view: view.clone(), id: String::new(), version: 0 }),
            })
        });
        Ok(stream.boxed())
    }
}
