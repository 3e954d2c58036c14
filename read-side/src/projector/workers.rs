//! Running a projector on a feed: one dispatcher and K workers.
//!
//! The dispatcher reads the feed and routes each delivery to worker
//! `hash(stream id) % K` over a bounded channel, so a stream's events reach
//! one worker, in feed order, and a full queue slows the feed instead of
//! growing memory. Each worker takes what is queued (up to the batch cap,
//! without waiting for more), applies it in one transaction, then announces
//! the changes and acknowledges the deliveries. Streams of different
//! partitions are applied concurrently.
//!
//! Events of one stream can change rows that another stream's events
//! created (a stock reservation updates its order's row). Workers applying
//! them at once stay correct because every transaction is SERIALIZABLE
//! (SQLite: one writer) and retried on 40001, and because such updates do
//! not depend on the order in which different streams' events arrive (the
//! order's stock status follows from its lines): the views end up equal to
//! a replay. An event whose row is not there yet waits briefly for the
//! other worker's commit, then goes back to the feed.
//!
//! Nothing a worker applies comes from the bus: each delivered batch is
//! looked up in the event store by event id (one statement), and the
//! store's copies are applied. A delivery the store does not have (a forged
//! or corrupted message) is dead-lettered and changes nothing; so is one
//! that could not be applied in its last delivery (the catch-up applies the
//! store's event instead).
//!
//! The dispatcher also runs the catch-up from the event store: at start
//! when asked, after a feed error, and whenever a worker could not apply an
//! event (embedded deliveries cannot be redelivered; the store can).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use schema::EventEnvelope;
use schema::ports::{Acknowledge, EventDelivery, EventFeed};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use tracing::{Instrument as _, debug, info, warn};

use super::Projector;

/// A readable delivery, on its way to a worker: what the message claims,
/// until [`Projector::verify`] swaps it for the event store's copy.
pub(super) struct Ready {
    pub(super) event: EventEnvelope,
    pub(super) ack: Box<dyn Acknowledge>,
}

/// Asks the dispatcher for a catch-up from the event store.
#[derive(Default)]
struct Repair {
    needed: AtomicBool,
    wake: Notify,
}

impl Repair {
    fn request(&self) {
        self.needed.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    fn take(&self) -> bool {
        self.needed.swap(false, Ordering::SeqCst)
    }

    fn pending(&self) -> bool {
        self.needed.load(Ordering::SeqCst)
    }
}

/// The worker that applies the events of the aggregate `key`: partitioned
/// by aggregate id, so one stream's events keep their order, and an order's
/// payment events (whose stream shares the order's id) go to the order's
/// worker, in the order they came: an order is not shown confirmed before
/// its payment is shown authorized.
fn partition(key: &str, workers: usize) -> usize {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % workers.max(1) as u64) as usize
}

impl Projector {
    /// Consumes the feed until `shutdown`; the workers finish what is
    /// queued for them before this returns.
    pub async fn run(mut self, feed: Arc<dyn EventFeed>, catch_up_first: bool, shutdown: CancellationToken) {
        self.verify_deliveries = !feed.delivers_store_copies();
        let name = self.projection.name();
        let consumer = format!("projector_{name}");
        let subscription = loop {
            match feed.subscribe(&consumer, self.projection.aggregate_types()).await {
                Ok(stream) => break stream,
                Err(error) => {
                    warn!(%error, projection = name, "cannot subscribe to events; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        // Subscribed first, so nothing published during the catch-up is missed.
        let repair = Arc::new(Repair::default());
        if catch_up_first {
            repair.request();
        }
        let mut workers = JoinSet::new();
        let queues: Vec<mpsc::Sender<Ready>> = (0..self.workers)
            .map(|_| {
                let (queue, deliveries) = mpsc::channel(self.batch);
                workers.spawn(self.clone().work(deliveries, repair.clone()));
                queue
            })
            .collect();
        let mut deliveries = Box::pin(subscription.take_until(shutdown.clone().cancelled_owned()));
        let mut retry = tokio::time::interval(Duration::from_secs(5));
        info!(projection = name, workers = self.workers, "projector running");
        loop {
            if repair.take() {
                match self.catch_up().await {
                    Ok(count) if count > 0 => info!(projection = name, count, "caught up from the event store"),
                    Ok(_) => {}
                    Err(error) => {
                        warn!(%error, projection = name, "catch-up failed; will retry");
                        repair.needed.store(true, Ordering::SeqCst);
                    }
                }
            }
            tokio::select! {
                delivery = deliveries.next() => match delivery {
                    Some(Ok(delivery)) => self.route(delivery, &queues).await,
                    Some(Err(error)) => {
                        warn!(%error, projection = name, "event feed error; catching up from the store");
                        repair.request();
                    }
                    None => break,
                },
                () = repair.wake.notified() => {}
                _ = retry.tick(), if repair.pending() => {}
            }
        }
        drop(queues);
        while let Some(joined) = workers.join_next().await {
            if let Err(error) = joined {
                warn!(%error, projection = name, "a projector worker failed");
            }
        }
        let counts = self.counts();
        info!(
            projection = name,
            events = counts.events,
            commits = counts.commits,
            attempts = counts.attempts,
            checkpoint_statements = counts.checkpoint_statements,
            view_statements = counts.view_statements,
            verify_statements = counts.verify_statements,
            "projector stopped"
        );
    }

    /// Hands a delivery to its stream's worker; dead-letters an unreadable one.
    async fn route(&self, delivery: EventDelivery, queues: &[mpsc::Sender<Ready>]) {
        let event = match delivery.event {
            Ok(event) => event,
            Err(reason) => return self.dead_letter(delivery.ack, &reason).await,
        };
        let ready = Ready { event, ack: delivery.ack };
        let queue = &queues[partition(&ready.event.aggregate_id, queues.len())];
        if let Err(mpsc::error::SendError(ready)) = queue.send(ready).await {
            // Its worker is gone (it cannot be, short of a panic): apply it here.
            warn!(projection = self.projection.name(), "a projector worker is gone; applying its event in place");
            self.process_batch(vec![ready]).await;
        }
    }

    /// A worker: batches what is queued, applies, settles; until the
    /// dispatcher drops the queue. Asks for a catch-up when it could not
    /// apply an event now.
    async fn work(self, mut deliveries: mpsc::Receiver<Ready>, repair: Arc<Repair>) {
        while let Some(first) = deliveries.recv().await {
            // Whatever else is queued joins it, without waiting.
            let mut batch = vec![first];
            while batch.len() < self.batch {
                match deliveries.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            if !self.process_batch(batch).await {
                repair.request();
            }
        }
    }

    /// Verifies a batch against the store, then applies the store's copies
    /// in one transaction (see the module doc of [`super`]); returns false
    /// when some event could not be applied now.
    async fn process_batch(&self, batch: Vec<Ready>) -> bool {
        let Some(batch) = self.verify(batch).await else { return false };
        if batch.len() <= 1 {
            return match batch.into_iter().next() {
                Some(ready) => self.process(ready).await,
                None => true,
            };
        }
        let events: Vec<&EventEnvelope> = batch.iter().map(|ready| &ready.event).collect();
        // Traced, each event's span covers the batch's transaction and its
        // change notification.
        let spans: Vec<tracing::Span> = events.iter().map(|event| super::span(event)).collect();
        match self.apply_batch(&events).await {
            Ok(results) => {
                for ((ready, applied), span) in batch.into_iter().zip(results).zip(spans) {
                    let mut skipped = Vec::new();
                    self.record(&ready.event, applied, &mut skipped).instrument(span).await;
                    self.settle(ready.ack, skipped).await;
                }
                true
            }
            // A gap or a failure: one by one, with gap repair and retries.
            Err(error) => {
                debug!(%error, projection = self.projection.name(), "a batch failed; applying its events one by one");
                let mut all_applied = true;
                for ready in batch {
                    all_applied &= self.process(ready).await;
                }
                all_applied
            }
        }
    }

    /// One verified event, with gap repair. Returns false when it could not
    /// be applied now; in its last delivery it is then dead-lettered (the
    /// catch-up the caller asks for applies the store's event).
    async fn process(&self, ready: Ready) -> bool {
        match self.handle(&ready.event).instrument(super::span(&ready.event)).await {
            Ok(skipped) => {
                self.settle(ready.ack, skipped).await;
                true
            }
            Err(error) if ready.ack.is_last_delivery() => {
                let delivered = ready.ack.delivered();
                warn!(%error, event = %ready.event.id, delivered, "projection failed in the last delivery; dead-lettering it");
                let reason = format!("not applied in {delivered} deliveries, last: {error}");
                self.dead_letter(ready.ack, &reason).await;
                false
            }
            Err(error) => {
                warn!(%error, event = %ready.event.id, "projection failed; retrying later");
                let delay = Duration::from_millis(200 * ready.ack.delivered().clamp(1, 25));
                let _ = ready.ack.retry(delay).await;
                false
            }
        }
    }

    /// After the commit: acks, or dead-letters what the projection had to
    /// skip as unreadable (its checkpoint moved past it: it is the store's
    /// event, kept aside for operators).
    async fn settle(&self, ack: Box<dyn Acknowledge>, skipped: Vec<String>) {
        if skipped.is_empty() {
            if let Err(error) = ack.ack().await {
                warn!(%error, "ack failed; the event will be redelivered and skipped");
            }
            return;
        }
        let reason = skipped.join("; ");
        warn!(%reason, "skipped an unreadable event");
        self.dead_letter(ack, &reason).await;
    }

    /// Moves a delivery aside with its reason; it is never applied.
    pub(super) async fn dead_letter(&self, ack: Box<dyn Acknowledge>, reason: &str) {
        let source = format!("projector_{}", self.projection.name());
        warn!(projection = self.projection.name(), reason, "dead-lettering an event delivery");
        match ack.dead_letter(&source, reason).await {
            Ok(()) => schema::metrics::metrics().dead_letter(&source),
            Err(error) => warn!(%error, "dead-letter failed; the delivery comes back"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::partition;

    #[test]
    fn a_stream_always_goes_to_the_same_worker_and_streams_spread() {
        let streams: Vec<String> = (0..400).map(|n| format!("order-{n}")).collect();
        let mut per_worker = [0; 4];
        for stream in &streams {
            let worker = partition(stream, 4);
            assert_eq!(worker, partition(stream, 4));
            per_worker[worker] += 1;
        }
        assert!(per_worker.iter().all(|&count| count > 50), "{per_worker:?}");
        assert!(streams.iter().all(|stream| partition(stream, 1) == 0));
    }
}
