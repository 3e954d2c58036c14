//! Followed orders, shared by their subscribers: however many `orderUpdated`
//! subscriptions follow one order, the gateway holds one watch of its change
//! notifications (one NATS subscription in server mode, one in-process
//! listener embedded) and reads its row once per change; every subscriber
//! gets that one reading and decides for itself what it may send.
//!
//! One task per followed order owns the watch and the reads; subscribers
//! hold a `watch::Receiver` of its latest reading and nothing else. The
//! task ends, and its watch with it, when its last subscriber is gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures::FutureExt;
use futures::stream::{BoxStream, StreamExt};
use read_side::orders::{self as view, OrderView};
use schema::ports::{Notifier, PortError, ViewChange};
use tokio::sync::watch;
use tracing::Instrument as _;

use super::cache::OrderCache;

/// A followed order's latest reading, as its subscribers see it.
#[derive(Clone, Debug)]
pub enum Reading {
    /// Not read yet: the first read is under way.
    Unread,
    /// The row as last read; `None` while it is not there (not projected
    /// yet, or no such order).
    Row(Option<Arc<OrderView>>),
    /// The last read failed (why); the next change reads again.
    Failed(Arc<str>),
}

/// Who follows: callers who may see every order (`None`), or one customer
/// (`Some`), whose watch hears the order's changes only as its own, so
/// another customer's order is never read again on its behalf.
type Follower = (String, Option<String>);

/// The followed orders of one gateway. Cloning shares them.
#[derive(Clone)]
pub struct LiveOrders {
    inner: Arc<Inner>,
}

struct Inner {
    notifier: Arc<dyn Notifier>,
    /// Reads through the cache: a change invalidates the cached row before
    /// its reading is pushed, so a query after a push sees the change.
    orders: OrderCache,
    /// One entry per followed order and follower kind, while it has subscribers.
    followed: Mutex<HashMap<Follower, watch::Sender<Reading>>>,
}

impl LiveOrders {
    pub fn new(notifier: Arc<dyn Notifier>, orders: OrderCache) -> Self {
        Self { inner: Arc::new(Inner { notifier, orders, followed: Mutex::new(HashMap::new()) }) }
    }

    /// The readings of order `id`: its latest at once (once read), then
    /// each one after a change. `scope` is the customer a customer caller
    /// is; `None` for callers who may see every order. Fails only when the
    /// change notifications cannot be watched.
    pub async fn follow(&self, id: &str, scope: Option<&str>) -> Result<watch::Receiver<Reading>, PortError> {
        let follower = (id.to_string(), scope.map(str::to_string));
        if let Some(readings) = self.join(&follower) {
            return Ok(readings);
        }
        // Watch before the first read, so no change falls between the two.
        let changes = match scope {
            Some(customer) => self.inner.notifier.watch_scope(view::VIEW, customer, Some(id)).await,
            None => self.inner.notifier.watch(view::VIEW, id).await,
        }?;
        let mut followed = self.lock();
        if let Some(sender) = followed.get(&follower) {
            // Another subscriber started it meanwhile: its watch serves both.
            return Ok(sender.subscribe());
        }
        let (sender, readings) = watch::channel(Reading::Unread);
        followed.insert(follower.clone(), sender.clone());
        drop(followed);
        tokio::spawn(self.clone().keep(follower, sender, changes.fuse().boxed()));
        Ok(readings)
    }

    /// How many orders (per follower kind) are followed now.
    pub fn followed(&self) -> usize {
        self.lock().len()
    }

    fn join(&self, follower: &Follower) -> Option<watch::Receiver<Reading>> {
        self.lock().get(follower).map(watch::Sender::subscribe)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Follower, watch::Sender<Reading>>> {
        self.inner.followed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The task of one followed order: reads the row, then again after each
    /// change (changes queued meanwhile are covered by one read), until no
    /// one follows it or its watch ends.
    async fn keep(
        self,
        follower: Follower,
        sender: watch::Sender<Reading>,
        mut changes: BoxStream<'static, ViewChange>,
    ) {
        let (mut read, mut changed) = (true, false);
        // The last change's trace context: traced, the read and the push to
        // every follower are the span `process changed.orders` in its trace.
        let mut traceparent: Option<String> = None;
        loop {
            if read {
                let span = match traceparent.take() {
                    Some(traceparent) => schema::trace::process("changed.orders", &follower.0, Some(&traceparent)),
                    None => tracing::Span::none(),
                };
                async {
                    let row = if changed {
                        self.inner.orders.reread(&follower.0).await
                    } else {
                        self.inner.orders.get(&follower.0).await
                    };
                    let reading = match row {
                        Ok(row) => {
                            if changed && let Some(order) = &row {
                                schema::metrics::metrics().change_age("read", change_age(order));
                            }
                            Reading::Row(row)
                        }
                        Err(error) => {
                            tracing::warn!(order = %follower.0, error = %error, "reading a followed order failed");
                            Reading::Failed(error.to_string().into())
                        }
                    };
                    sender.send_replace(reading);
                }
                .instrument(span)
                .await;
            }
            tokio::select! {
                change = changes.next() => {
                    let Some(change) = change else {
                        // The watch ended (the connection is gone): so do
                        // the subscriptions, as they did before they shared it.
                        self.forget(&follower, &sender, true);
                        return;
                    };
                    traceparent = change.traceparent;
                    // Every change queued so far is covered by the next read.
                    while let Some(Some(queued)) = changes.next().now_or_never() {
                        traceparent = queued.traceparent.or(traceparent);
                    }
                    (read, changed) = (true, true);
                }
                () = sender.closed() => {
                    if self.forget(&follower, &sender, false) {
                        return;
                    }
                    // Someone joined as the last one left: keep going.
                    read = false;
                }
            }
        }
    }

    /// Removes this task's entry if no one follows it any more (or
    /// `always`); whether it did.
    fn forget(&self, follower: &Follower, sender: &watch::Sender<Reading>, always: bool) -> bool {
        let mut followed = self.lock();
        if !always && sender.receiver_count() > 0 {
            return false;
        }
        if followed.get(follower).is_some_and(|entry| entry.same_channel(sender)) {
            followed.remove(follower);
        }
        true
    }
}

/// How long ago the change a row shows happened (its event's time).
pub(super) fn change_age(order: &OrderView) -> std::time::Duration {
    (chrono::Utc::now() - order.updated_at).to_std().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use read_side::ViewStore;
    use read_side::embedded::BroadcastNotifier;

    use super::*;

    const BOUND: Duration = Duration::from_secs(10);

    async fn live() -> (LiveOrders, ViewStore, Arc<BroadcastNotifier>) {
        let pool = schema::sql::connect("sqlite::memory:", 1).await.expect("in-memory SQLite");
        read_side::migrate(&pool).await.expect("views migrated");
        let views = ViewStore::new(pool);
        let notifier = Arc::new(BroadcastNotifier::new(16));
        let cache = OrderCache::new(read_side::orders::OrderRepository::new(views.clone()));
        (LiveOrders::new(notifier.clone(), cache), views, notifier)
    }

    /// Waits for a reading newer than the one last seen.
    async fn next(readings: &mut watch::Receiver<Reading>) -> Reading {
        tokio::time::timeout(BOUND, readings.changed()).await.expect("a reading within the bound").expect("open");
        readings.borrow_and_update().clone()
    }

    fn change(id: &str, scope: Option<&str>) -> ViewChange {
        ViewChange {
            view: view::VIEW.into(),
            id: id.into(),
            version: 1,
            scope: scope.map(str::to_string),
            traceparent: None,
        }
    }

    #[tokio::test]
    async fn twenty_followers_of_one_order_share_one_watch_and_one_read_per_change() {
        let (live, views, notifier) = live().await;
        let mut followers = Vec::new();
        for _ in 0..20 {
            followers.push(live.follow("o1", None).await.expect("followed"));
        }
        assert_eq!(live.followed(), 1, "one watch for all twenty");
        // The first reading reaches everyone (a missing row reads as None).
        for readings in &mut followers {
            if matches!(*readings.borrow_and_update(), Reading::Unread) {
                assert!(matches!(next(readings).await, Reading::Row(None)));
            }
        }
        assert_eq!(views.statements(), 1, "one read for twenty first readings");

        notifier.notify(&change("o1", Some("c1"))).await.expect("notified");
        for readings in &mut followers {
            assert!(matches!(next(readings).await, Reading::Row(None)));
        }
        assert_eq!(views.statements(), 2, "one read for the change, whoever follows");
        notifier.notify(&change("o2", Some("c1"))).await.expect("notified");

        // Once the last one is gone, so is the order's watch and task.
        drop(followers);
        let deadline = tokio::time::Instant::now() + BOUND;
        while live.followed() > 0 {
            assert!(tokio::time::Instant::now() < deadline, "the followed order was never let go");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(views.statements(), 2, "another order's change read nothing");
    }

    #[tokio::test]
    async fn a_customer_follows_apart_and_hears_only_its_own_changes() {
        let (live, views, notifier) = live().await;
        let mut staff = live.follow("o1", None).await.expect("followed");
        let mut customer = live.follow("o1", Some("c2")).await.expect("followed");
        assert_eq!(live.followed(), 2, "a customer's watch is its own");
        for readings in [&mut staff, &mut customer] {
            if matches!(*readings.borrow_and_update(), Reading::Unread) {
                next(readings).await;
            }
        }
        let reads = views.statements();
        // A change of o1 as c1's: staff reads it, c2's follower hears nothing.
        notifier.notify(&change("o1", Some("c1"))).await.expect("notified");
        next(&mut staff).await;
        assert_eq!(views.statements(), reads + 1);
        assert!(!customer.has_changed().expect("open"), "not c2's change");
    }
}
