//! The live order list (`ordersUpdated`), shared by its subscribers:
//! however many follow one scope — every order, or one customer's — the
//! gateway holds one watch of its change notifications (one NATS
//! subscription in server mode) and reads each changed row once; every
//! subscriber gets that one reading and decides for itself what it may
//! send.
//!
//! One task per followed scope owns the watch and the reads, and drops what
//! it already sent (a repeated notification, a late older read), so a
//! subscriber holds a broadcast receiver and nothing else. The task ends,
//! and its watch with it, when its last subscriber is gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures::FutureExt;
use futures::stream::{BoxStream, StreamExt};
use read_side::orders::{self as view, OrderFilter, OrderView};
use schema::ports::{Notifier, PortError, ViewChange};
use tokio::sync::broadcast;

use super::cache::OrderCache;

/// How many of the newest orders are read again after missed changes.
pub const LAG_REREAD: u32 = 50;
/// Updates a scope's subscribers may fall behind before they miss some (and
/// read the newest orders again); each is a few pointers.
const BACKLOG: usize = 1_024;
/// How many orders' last-sent views a scope remembers to drop repeats.
const REMEMBERED: usize = 1_000;

/// What a scope's subscribers are told.
#[derive(Clone, Debug)]
pub enum ListUpdate {
    /// Rows read after a change (one), or the newest ones after missed
    /// changes; each newer than what was sent of it before.
    Rows(Arc<[Arc<OrderView>]>),
    /// Reading failed (why); the next change reads again.
    Failed(Arc<str>),
}

/// Whose orders a live list follows: every customer's (`None`) or one's.
type Scope = Option<String>;

/// The followed lists of one gateway. Cloning shares them.
#[derive(Clone)]
pub struct LiveLists {
    inner: Arc<Inner>,
}

struct Inner {
    notifier: Arc<dyn Notifier>,
    /// Re-reads through the cache, as the followed orders do (`live.rs`).
    orders: OrderCache,
    /// One entry per followed scope, while it has subscribers.
    followed: Mutex<HashMap<Scope, broadcast::Sender<ListUpdate>>>,
}

impl LiveLists {
    pub fn new(notifier: Arc<dyn Notifier>, orders: OrderCache) -> Self {
        Self { inner: Arc::new(Inner { notifier, orders, followed: Mutex::new(HashMap::new()) }) }
    }

    /// The updates of the orders of `customer` (`None`: every order) from
    /// now on. Fails only when the change notifications cannot be watched.
    pub async fn follow(&self, customer: Option<&str>) -> Result<broadcast::Receiver<ListUpdate>, PortError> {
        let scope: Scope = customer.map(str::to_string);
        if let Some(updates) = self.join(&scope) {
            return Ok(updates);
        }
        let changes = match customer {
            Some(customer) => self.inner.notifier.watch_scope(view::VIEW, customer, None).await,
            None => self.inner.notifier.watch_view(view::VIEW).await,
        }?;
        let mut followed = self.lock();
        if let Some(sender) = followed.get(&scope) {
            // Another subscriber started it meanwhile: its watch serves both.
            return Ok(sender.subscribe());
        }
        let (sender, updates) = broadcast::channel(BACKLOG);
        followed.insert(scope.clone(), sender.clone());
        drop(followed);
        tokio::spawn(self.clone().keep(scope, sender, changes.fuse().boxed()));
        Ok(updates)
    }

    /// The newest orders of `customer`, for a subscriber that fell behind.
    pub async fn newest(&self, customer: Option<&str>) -> Result<Arc<Vec<OrderView>>, read_side::ReadError> {
        let filter = OrderFilter { customer_id: customer.map(str::to_string), ..OrderFilter::default() };
        self.inner.orders.list(&filter, None, LAG_REREAD).await
    }

    /// How many scopes are followed now.
    pub fn followed(&self) -> usize {
        self.lock().len()
    }

    fn join(&self, scope: &Scope) -> Option<broadcast::Receiver<ListUpdate>> {
        self.lock().get(scope).map(broadcast::Sender::subscribe)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Scope, broadcast::Sender<ListUpdate>>> {
        self.inner.followed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The task of one followed scope: after each change (changes queued
    /// meanwhile together, each row once) reads the rows and tells the
    /// subscribers what is new, until no one follows or its watch ends.
    async fn keep(
        self,
        scope: Scope,
        sender: broadcast::Sender<ListUpdate>,
        mut changes: BoxStream<'static, ViewChange>,
    ) {
        let mut sent = LastSent::default();
        loop {
            let first = tokio::select! {
                change = changes.next() => change,
                () = sender.closed() => {
                    if self.forget(&scope, &sender, false) {
                        return;
                    }
                    // Someone joined as the last one left: keep going.
                    continue;
                }
            };
            let Some(first) = first else {
                // The watch ended (the connection is gone): so do the subscriptions.
                self.forget(&scope, &sender, true);
                return;
            };
            // Every change queued so far, each row once, in the order heard.
            let mut ids = vec![first.id];
            while let Some(Some(change)) = changes.next().now_or_never() {
                if !ids.contains(&change.id) {
                    ids.push(change.id);
                }
            }
            let update = match self.read(&scope, &ids).await {
                Ok(rows) => {
                    let new: Vec<_> = rows.into_iter().filter(|row| sent.is_new(row)).collect();
                    if new.is_empty() {
                        continue;
                    }
                    ListUpdate::Rows(new.into())
                }
                Err(error) => {
                    tracing::warn!(error = %error, "reading a live list's changed orders failed");
                    ListUpdate::Failed(error.to_string().into())
                }
            };
            // No receiver left: the next turn hears it from `closed`.
            let _ = sender.send(update);
        }
    }

    /// The rows of the changed orders `ids`; an empty id (missed changes)
    /// reads the scope's newest orders instead.
    async fn read(&self, scope: &Scope, ids: &[String]) -> Result<Vec<Arc<OrderView>>, read_side::ReadError> {
        if ids.iter().any(String::is_empty) {
            let newest = self.newest(scope.as_deref()).await?;
            return Ok(newest.iter().cloned().map(Arc::new).collect());
        }
        let mut rows = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(row) = self.inner.orders.reread(id).await? {
                // A row that moved to another customer is not this scope's.
                if scope.as_ref().is_none_or(|customer| *customer == row.customer_id) {
                    rows.push(row);
                }
            }
        }
        Ok(rows)
    }

    /// Removes this task's entry if no one follows it any more (or
    /// `always`); whether it did.
    fn forget(&self, scope: &Scope, sender: &broadcast::Sender<ListUpdate>, always: bool) -> bool {
        let mut followed = self.lock();
        if !always && sender.receiver_count() > 0 {
            return false;
        }
        if followed.get(scope).is_some_and(|entry| entry.same_channel(sender)) {
            followed.remove(scope);
        }
        true
    }
}

/// The views a scope last sent, so repeated or late notifications send
/// nothing. Bounded: forgetting only costs a repeated (identical) item.
#[derive(Default)]
struct LastSent(HashMap<String, Arc<OrderView>>);

impl LastSent {
    fn is_new(&mut self, order: &Arc<OrderView>) -> bool {
        let last = self.0.get(&order.order_id);
        if last.is_some_and(|last| **last == **order) || !is_newer(last.map(|last| &**last), order) {
            return false;
        }
        if self.0.len() >= REMEMBERED && last.is_none() {
            self.0.clear();
        }
        self.0.insert(order.order_id.clone(), order.clone());
        true
    }
}

/// A row read later is never older: same or higher order version.
pub(super) fn is_newer(last: Option<&OrderView>, order: &OrderView) -> bool {
    last.is_none_or(|last| order.version >= last.version)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::Utc;
    use read_side::ViewStore;
    use read_side::embedded::BroadcastNotifier;
    use read_side::orders::OrderStatus;

    use super::*;

    const BOUND: Duration = Duration::from_secs(10);

    fn order(id: &str, version: u64, payment: &str) -> Arc<OrderView> {
        Arc::new(OrderView {
            order_id: id.into(),
            customer_id: "c".into(),
            status: OrderStatus::Pending,
            items: Vec::new(),
            total_cents: 0,
            cancel_reason: None,
            payment_status: payment.into(),
            stock_status: "NONE".into(),
            rejection_code: None,
            rejection_reason: None,
            version,
            placed_at: Utc::now(),
            updated_at: Utc::now(),
        })
    }

    #[test]
    fn the_feed_sends_each_view_once_and_never_an_older_one() {
        let mut sent = LastSent::default();
        let first = order("a", 1, "NONE");
        assert!(sent.is_new(&first), "first sighting");
        assert!(!sent.is_new(&first), "a repeated notification");
        let authorized = order("a", 1, "AUTHORIZED");
        assert!(sent.is_new(&authorized), "same version, changed view");
        assert!(sent.is_new(&order("a", 2, "AUTHORIZED")), "newer version");
        assert!(!sent.is_new(&authorized), "an older read arriving late");
        assert!(sent.is_new(&order("b", 1, "NONE")), "another order");
    }

    #[test]
    fn the_memory_is_bounded_and_forgetting_only_repeats() {
        let mut sent = LastSent::default();
        for n in 0..REMEMBERED {
            assert!(sent.is_new(&order(&n.to_string(), 1, "NONE")));
        }
        assert_eq!(sent.0.len(), REMEMBERED);
        assert!(sent.is_new(&order("one more", 1, "NONE")));
        assert_eq!(sent.0.len(), 1, "full: forgot the rest");
        assert!(sent.is_new(&order("0", 1, "NONE")), "a forgotten order is sent again, unchanged");
    }

    async fn lists() -> (LiveLists, ViewStore, Arc<BroadcastNotifier>) {
        let pool = schema::sql::connect("sqlite::memory:", 1).await.expect("in-memory SQLite");
        read_side::migrate(&pool).await.expect("views migrated");
        let views = ViewStore::new(pool);
        let notifier = Arc::new(BroadcastNotifier::new(16));
        let cache = OrderCache::new(read_side::orders::OrderRepository::new(views.clone()));
        (LiveLists::new(notifier.clone(), cache), views, notifier)
    }

    fn change(id: &str, scope: &str) -> ViewChange {
        ViewChange { view: view::VIEW.into(), id: id.into(), version: 1, scope: Some(scope.into()), traceparent: None }
    }

    #[tokio::test]
    async fn twenty_followers_of_one_scope_share_one_watch_and_one_read_per_change() {
        let (lists, views, notifier) = lists().await;
        let mut everyone = Vec::new();
        for _ in 0..20 {
            everyone.push(lists.follow(None).await.expect("followed"));
        }
        let mut customer = lists.follow(Some("c1")).await.expect("followed");
        assert_eq!(lists.followed(), 2, "one watch for all twenty, one for the customer");
        let before = views.statements();
        // A missing row reads as nothing: no one is told, yet it was read once per scope.
        notifier.notify(&change("o1", "c2")).await.expect("notified");
        notifier.notify(&change("o2", "c1")).await.expect("notified");
        let deadline = tokio::time::Instant::now() + BOUND;
        while views.statements() < before + 3 {
            assert!(tokio::time::Instant::now() < deadline, "the changes were never read");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Give a wrong extra read the chance to happen before counting.
        notifier.notify(&change("o3", "c1")).await.expect("notified");
        while views.statements() < before + 5 {
            assert!(tokio::time::Instant::now() < deadline, "the last change was never read");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(views.statements(), before + 5, "each change read once per scope, whoever follows");
        for updates in &mut everyone {
            assert!(updates.try_recv().is_err(), "no rows, nothing sent");
        }
        assert!(customer.try_recv().is_err());

        drop(everyone);
        drop(customer);
        while lists.followed() > 0 {
            assert!(tokio::time::Instant::now() < deadline, "the followed scopes were never let go");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
