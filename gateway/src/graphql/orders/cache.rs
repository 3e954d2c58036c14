//! The rows, pages and counts of the orders view that `order(id)` and
//! `orders` answered, kept until a change notification says they changed:
//! CQRS tells the gateway when a row changes, so nothing is guessed with a
//! time to live.
//!
//! Freshness: a change invalidates before anyone is told of it. One watch of
//! the whole view per gateway invalidates every change it hears, and the
//! followed orders (`live.rs`) invalidate the row they re-read before they
//! push it, so a client that was pushed a change and then asks for the
//! order reads the change. A read that began before a change never fills
//! the cache (a generation counter), and while the watch is down (before it
//! is up, after the connection dropped) nothing is cached at all.
//!
//! Whole serialized answers ([`super::answers`]) are kept here too, under
//! the same lock and generation, so a change drops them with the rows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use futures::StreamExt;
use read_side::ReadError;
use read_side::orders::{self as view, OrderCursor, OrderFilter, OrderRepository, OrderView};
use schema::ports::Notifier;
use tokio_util::sync::CancellationToken;

use super::answers::{AnswerKey, Answers, Reads};

/// Rows kept at most; when full, the cache starts over (a miss costs one read).
const MAX_ROWS: usize = 50_000;
/// Pages kept at most, likewise.
const MAX_PAGES: usize = 256;
/// How long a failed watch waits before it is tried again.
const REWATCH: Duration = Duration::from_secs(1);

/// A page of `orders`: its filter, cursor and size.
type PageKey = (OrderFilter, Option<(i64, String)>, u32);

/// The cache of one gateway. Cloning shares it.
#[derive(Clone)]
pub struct OrderCache {
    inner: Arc<Inner>,
}

struct Inner {
    orders: OrderRepository,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Whether the view's changes are being heard; if not, nothing is kept.
    listening: bool,
    /// Bumped by every change heard: a read that began under an older
    /// generation does not fill the cache.
    generation: u64,
    rows: HashMap<String, Arc<OrderView>>,
    pages: HashMap<PageKey, Arc<Vec<OrderView>>>,
    /// `totalCount`s, per filter; dropped with the pages.
    counts: HashMap<OrderFilter, i64>,
    /// Whole answers, with what they read.
    answers: Answers,
}

impl OrderCache {
    /// A cache that keeps nothing until [`OrderCache::listen`] hears the view.
    pub fn new(orders: OrderRepository) -> Self {
        Self { inner: Arc::new(Inner { orders, state: Mutex::new(State::default()) }) }
    }

    /// Watches the orders view's changes until `shutdown`, invalidating what
    /// each one touches; watches again after a failure.
    pub async fn listen(self, notifier: Arc<dyn Notifier>, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            match notifier.watch_view(view::VIEW).await {
                Ok(mut changes) => {
                    self.set_listening(true);
                    loop {
                        tokio::select! {
                            change = changes.next() => match change {
                                // An empty id: changes were missed.
                                Some(change) if change.id.is_empty() => self.clear(),
                                Some(change) => self.invalidate(&change.id),
                                None => break,
                            },
                            () = shutdown.cancelled() => break,
                        }
                    }
                    self.set_listening(false);
                }
                Err(error) => tracing::warn!(error = %error, "cannot watch the orders view: answers are not cached"),
            }
            tokio::select! {
                () = tokio::time::sleep(REWATCH) => {}
                () = shutdown.cancelled() => {}
            }
        }
    }

    /// One order, from the cache or else read (and kept).
    pub async fn get(&self, id: &str) -> Result<Option<Arc<OrderView>>, ReadError> {
        let generation = {
            let state = self.lock();
            if let Some(row) = state.rows.get(id) {
                return Ok(Some(row.clone()));
            }
            state.generation
        };
        let row = self.inner.orders.get(id).await?.map(Arc::new);
        if let Some(row) = &row {
            let mut state = self.lock();
            if state.listening && state.generation == generation {
                if state.rows.len() >= MAX_ROWS {
                    state.rows.clear();
                }
                state.rows.insert(id.to_string(), row.clone());
            }
        }
        Ok(row)
    }

    /// A page of orders, newest first, from the cache or else read (and kept).
    pub async fn list(
        &self,
        filter: &OrderFilter,
        after: Option<&OrderCursor>,
        limit: u32,
    ) -> Result<Arc<Vec<OrderView>>, ReadError> {
        let key = (filter.clone(), after.map(|cursor| (cursor.placed_at_micros, cursor.order_id.clone())), limit);
        let generation = {
            let state = self.lock();
            if let Some(page) = state.pages.get(&key) {
                return Ok(page.clone());
            }
            state.generation
        };
        let page = Arc::new(self.inner.orders.list(filter, after, limit).await?);
        let mut state = self.lock();
        if state.listening && state.generation == generation {
            if state.pages.len() >= MAX_PAGES {
                state.pages.clear();
            }
            state.pages.insert(key, page.clone());
        }
        Ok(page)
    }

    /// How many orders `filter` holds, from the cache or else counted (and kept).
    pub async fn count(&self, filter: &OrderFilter) -> Result<i64, ReadError> {
        let generation = {
            let state = self.lock();
            if let Some(count) = state.counts.get(filter) {
                return Ok(*count);
            }
            state.generation
        };
        let count = self.inner.orders.count(filter).await?;
        let mut state = self.lock();
        if state.listening && state.generation == generation {
            if state.counts.len() >= MAX_PAGES {
                state.counts.clear();
            }
            state.counts.insert(filter.clone(), count);
        }
        Ok(count)
    }

    /// The answer kept for `key`, if no change has dropped it.
    pub fn answer(&self, key: &AnswerKey) -> Option<Bytes> {
        self.lock().answers.get(key)
    }

    /// The generation to give [`OrderCache::keep_answer`]: taken before
    /// the execution that makes the answer.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Keeps an answer made from `reads`, unless a change came since
    /// `generation` was taken (or the view's changes are not heard).
    pub fn keep_answer(&self, key: AnswerKey, generation: u64, reads: Reads, answer: Bytes) {
        let mut state = self.lock();
        if state.listening && state.generation == generation {
            state.answers.keep(key, reads, answer);
        }
    }

    /// Forgets order `id`, every page (any change may move a page), and the
    /// answers that read either.
    pub fn invalidate(&self, id: &str) {
        let mut state = self.lock();
        state.generation += 1;
        state.rows.remove(id);
        state.pages.clear();
        state.counts.clear();
        state.answers.invalidate(id);
    }

    /// Reads order `id` afresh after a change, keeping the row read.
    pub async fn reread(&self, id: &str) -> Result<Option<Arc<OrderView>>, ReadError> {
        self.invalidate(id);
        self.get(id).await
    }

    fn clear(&self) {
        let mut state = self.lock();
        state.generation += 1;
        state.rows.clear();
        state.pages.clear();
        state.counts.clear();
        state.answers.clear();
    }

    fn set_listening(&self, listening: bool) {
        self.clear();
        self.lock().listening = listening;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
