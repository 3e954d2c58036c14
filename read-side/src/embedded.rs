//! Embedded-mode adapters: events and view changes travel in process.
//!
//! The event hub gives each subscriber (each projector) a bounded queue of
//! its own, and `publish` returns only once every subscriber has
//! acknowledged every event: applied it, or skipped it as already applied.
//! The write side forgets an event's outbox row only after that, so after a
//! crash the outbox holds exactly the events some view may lack, and
//! publishing them again at start is the whole recovery: no start-up reads
//! the event log (only a view that was never built is rebuilt from it). A
//! full queue makes the publisher wait (back-pressure, never a lost event);
//! an event not acknowledged in time (a projector that asked for a retry,
//! or stopped) fails the publish, which the publisher repeats.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use schema::EventEnvelope;
use schema::ports::{Acknowledge, EventDelivery, EventFeed, EventPublisher, Notifier, PortError, ViewChange};
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio_stream::wrappers::{BroadcastStream, ReceiverStream};
use tracing::error;

/// How long `publish` waits for every subscriber to acknowledge.
const ACK_WAIT: Duration = Duration::from_secs(5);

type Delivery = (EventEnvelope, Arc<Semaphore>);

struct Subscriber {
    consumer: String,
    types: Vec<String>,
    sender: mpsc::Sender<Delivery>,
}

/// The in-process event transport: the write side publishes, projectors subscribe.
#[derive(Clone)]
pub struct InProcessEventHub {
    subscribers: Arc<Mutex<Vec<Subscriber>>>,
    capacity: usize,
}

impl InProcessEventHub {
    pub fn new(capacity: usize) -> Self {
        Self { subscribers: Arc::default(), capacity: capacity.max(1) }
    }

    /// Waits (up to `bound`) until `count` subscribers are listening: a
    /// publish before then would not wait for the ones still starting.
    pub async fn wait_for_subscribers(&self, count: usize, bound: Duration) -> Result<(), PortError> {
        tokio::time::timeout(bound, async {
            while self.listening() < count {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .map_err(|_| PortError::Unavailable(format!("in-process event hub: fewer than {count} subscribers")))
    }

    fn listening(&self) -> usize {
        let subscribers = self.subscribers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        subscribers.iter().filter(|subscriber| !subscriber.sender.is_closed()).count()
    }

    /// Per consumer, the events sent to it and not yet taken (for metrics).
    pub fn queued(&self) -> Vec<(String, usize)> {
        let subscribers = self.subscribers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        subscribers
            .iter()
            .map(|subscriber| {
                let sender = &subscriber.sender;
                (subscriber.consumer.clone(), sender.max_capacity().saturating_sub(sender.capacity()))
            })
            .collect()
    }

    /// Every subscriber, gone or not: one that is gone (a projector that
    /// stopped) has not applied what it is sent, so a publish for it fails.
    fn subscribers(&self) -> Vec<(String, Vec<String>, mpsc::Sender<Delivery>)> {
        let subscribers = self.subscribers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        subscribers
            .iter()
            .map(|subscriber| (subscriber.consumer.clone(), subscriber.types.clone(), subscriber.sender.clone()))
            .collect()
    }
}

#[async_trait]
impl EventPublisher for InProcessEventHub {
    async fn publish(&self, events: &[EventEnvelope]) -> Result<(), PortError> {
        let receipts = Arc::new(Semaphore::new(0));
        let mut expected: u32 = 0;
        let subscribers = self.subscribers();
        for event in events {
            for (consumer, types, sender) in &subscribers {
                if !types.contains(&event.aggregate_type) {
                    continue;
                }
                if sender.send((event.clone(), receipts.clone())).await.is_err() {
                    return Err(PortError::Unavailable(format!("in-process event hub: {consumer} is not listening")));
                }
                expected += 1;
            }
        }
        if expected == 0 {
            return Ok(());
        }
        match tokio::time::timeout(ACK_WAIT, receipts.acquire_many(expected)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(PortError::Unavailable("in-process event hub: not every event was acknowledged".into())),
        }
    }
}

#[async_trait]
impl EventFeed for InProcessEventHub {
    async fn subscribe(
        &self,
        consumer: &str,
        aggregate_types: &[&str],
    ) -> Result<BoxStream<'static, Result<EventDelivery, PortError>>, PortError> {
        let (sender, receiver) = mpsc::channel(self.capacity);
        let types = aggregate_types.iter().map(|name| name.to_string()).collect();
        let mut subscribers = self.subscribers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // A consumer that subscribes again replaces its earlier subscription.
        subscribers.retain(|subscriber| subscriber.consumer != consumer);
        subscribers.push(Subscriber { consumer: consumer.to_string(), types, sender });
        drop(subscribers);
        let stream = ReceiverStream::new(receiver)
            .map(|(event, receipts)| Ok(EventDelivery { event: Ok(event), ack: Box::new(InProcessAck(receipts)) }));
        Ok(stream.boxed())
    }

    fn delivers_store_copies(&self) -> bool {
        true
    }
}

/// Settles one delivery: done (applied, or skipped for good) counts toward
/// its publish; a retry does not, so the publish fails and is repeated.
struct InProcessAck(Arc<Semaphore>);

#[async_trait]
impl Acknowledge for InProcessAck {
    async fn ack(self: Box<Self>) -> Result<(), PortError> {
        self.0.add_permits(1);
        Ok(())
    }
    async fn retry(self: Box<Self>, _delay: Duration) -> Result<(), PortError> {
        Ok(())
    }
    async fn dead_letter(self: Box<Self>, source: &str, reason: &str) -> Result<(), PortError> {
        // No dead-letter stream in one process: the log is where operators
        // look. The hub delivers the event store's own events only.
        error!(source, reason, "dead letter");
        self.0.add_permits(1);
        Ok(())
    }
    fn delivered(&self) -> u64 {
        1
    }
    fn is_last_delivery(&self) -> bool {
        // A retry here is a failed publish that the outbox repeats: never last.
        false
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
                Err(_) => {
                    Some(ViewChange { view: view.clone(), id: id.clone(), version: 0, scope: None, traceparent: None })
                }
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
                Err(_) => Some(ViewChange {
                    view: view.clone(),
                    id: String::new(),
                    version: 0,
                    scope: None,
                    traceparent: None,
                }),
            })
        });
        Ok(stream.boxed())
    }

    async fn watch_scope(
        &self,
        view: &str,
        scope: &str,
        id: Option<&str>,
    ) -> Result<BoxStream<'static, ViewChange>, PortError> {
        let (view, scope, id) = (view.to_string(), scope.to_string(), id.map(str::to_string));
        let stream = BroadcastStream::new(self.sender.subscribe()).filter_map(move |item| {
            futures::future::ready(match item {
                Ok(change)
                    if change.view == view
                        && change.scope.as_deref() == Some(scope.as_str())
                        && id.as_ref().is_none_or(|id| *id == change.id) =>
                {
                    Some(change)
                }
                Ok(_) => None,
                // Lagged: re-read (an empty id: some of the scope's rows).
                Err(_) => Some(ViewChange {
                    view: view.clone(),
                    id: id.clone().unwrap_or_default(),
                    version: 0,
                    scope: Some(scope.clone()),
                    traceparent: None,
                }),
            })
        });
        Ok(stream.boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::Metadata;
    use uuid::Uuid;

    fn event(aggregate_type: &str) -> EventEnvelope {
        let id = Uuid::now_v7();
        EventEnvelope {
            id,
            type_name: "Something".into(),
            schema_version: 1,
            aggregate_type: aggregate_type.into(),
            aggregate_id: "a".into(),
            stream_version: 1,
            metadata: Metadata::origin(id, "test"),
            timestamp: chrono::Utc::now(),
            payload: serde_json::json!({}),
        }
    }

    async fn next(feed: &mut BoxStream<'static, Result<EventDelivery, PortError>>) -> EventDelivery {
        match feed.next().await {
            Some(Ok(delivery)) => delivery,
            _ => panic!("the feed ended or failed"),
        }
    }

    #[tokio::test]
    async fn a_publish_returns_once_every_subscriber_that_wants_the_event_acknowledged_it() {
        let hub = InProcessEventHub::new(16);
        let mut orders = hub.subscribe("orders", &["order"]).await.expect("subscribed");
        let mut customers = hub.subscribe("customers", &["order", "customer"]).await.expect("subscribed");
        let mut products = hub.subscribe("products", &["product"]).await.expect("subscribed");
        let publish = tokio::spawn({
            let hub = hub.clone();
            async move { hub.publish(&[event("order")]).await }
        });
        let first = next(&mut orders).await;
        let second = next(&mut customers).await;
        first.ack.ack().await.expect("acked");
        // One of the two acknowledgements is still missing: the publish waits.
        assert!(!publish.is_finished());
        second.ack.ack().await.expect("acked");
        publish.await.expect("joined").expect("published once both acknowledged");
        assert!(futures::FutureExt::now_or_never(products.next()).is_none(), "products got nothing");
    }

    #[tokio::test]
    async fn a_scoped_watch_gets_only_its_scopes_changes() {
        let notifier = BroadcastNotifier::new(16);
        let change = |id: &str, scope: Option<&str>| ViewChange {
            view: "orders".into(),
            id: id.into(),
            version: 1,
            scope: scope.map(str::to_string),
            traceparent: None,
        };
        let mut mine = notifier.watch_scope("orders", "c1", None).await.expect("watch");
        let mut one = notifier.watch_scope("orders", "c1", Some("o2")).await.expect("watch");
        for sent in [change("o1", Some("c2")), change("o2", None), change("o2", Some("c1")), change("o3", Some("c1"))] {
            notifier.notify(&sent).await.expect("notify");
        }
        assert_eq!(mine.next().await.map(|change| change.id), Some("o2".into()));
        assert_eq!(mine.next().await.map(|change| change.id), Some("o3".into()));
        assert_eq!(one.next().await.map(|change| change.id), Some("o2".into()));
        assert!(futures::FutureExt::now_or_never(one.next()).is_none(), "o3 is another row");
    }

    #[tokio::test]
    async fn a_subscriber_that_is_gone_fails_the_publish_so_the_event_stays_in_the_outbox() {
        let hub = InProcessEventHub::new(16);
        let feed = hub.subscribe("orders", &["order"]).await.expect("subscribed");
        drop(feed);
        assert!(hub.publish(&[event("order")]).await.is_err());
        // Subscribing again under the same name replaces the one that is gone.
        let mut feed = hub.subscribe("orders", &["order"]).await.expect("subscribed");
        let publish = tokio::spawn({
            let hub = hub.clone();
            async move { hub.publish(&[event("order")]).await }
        });
        next(&mut feed).await.ack.ack().await.expect("acked");
        publish.await.expect("joined").expect("published");
        assert!(hub.publish(&[event("customer")]).await.is_ok(), "an event nobody wants needs no acknowledgement");
    }
}
