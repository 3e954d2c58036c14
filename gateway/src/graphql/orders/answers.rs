//! Whole answers to queries over the orders view, kept serialized: a
//! repeated request from the same caller is answered with the bytes of the
//! last answer, with no parsing, validation, execution or serialization,
//! until a change notification says a row it read changed.
//!
//! What may be kept is decided by what ran, not by guessing from the
//! request: every field the execution resolves must be one of
//! [`ORDER_FIELDS`] (read from the orders view's rows alone and the same
//! for every caller once the root field has applied the caller's scope),
//! and the root fields record what they read in the request's [`ReadLog`]:
//! `order(id)` its row, `orders` and `totalCount` "pages" (any change may
//! move a page). Anything else — another view, a command's outcome, personal
//! data, introspection, an error — and the answer is not kept.
//!
//! The answers live in [`super::OrderCache`]'s state, under its lock and
//! generation, so they are dropped at the very moment its rows are: never
//! older than a change notification already delivered.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextResolve, ResolveInfo};
use async_graphql::{ServerResult, Value};
use axum::body::Bytes;

use crate::auth::Caller;

/// Answers kept at most; when full, the store starts over.
const MAX_ANSWERS: usize = 10_000;
/// Bytes of answers and requests kept at most, likewise.
const MAX_BYTES: usize = 64 << 20;

/// `(type, field)`s whose values come from the orders view's rows alone.
/// `Query.order` and `Query.orders` apply the caller's scope; below them
/// nothing depends on who asks. Not here: `Order.customer` (another view,
/// personal data), `Order.timeline` (another view; `actor` per caller),
/// `OrderLine.product` (the catalog).
const ORDER_FIELDS: &[(&str, &[&str])] = &[
    ("Query", &["order", "orders"]),
    ("OrderConnection", &["edges", "nodes", "pageInfo", "totalCount"]),
    ("OrderEdge", &["node", "cursor"]),
    ("PageInfo", &["hasNextPage", "hasPreviousPage", "startCursor", "endCursor"]),
    (
        "Order",
        &[
            "id",
            "customerId",
            "status",
            "paymentStatus",
            "stockStatus",
            "rejectionReason",
            "rejectionCode",
            "items",
            "totalCents",
            "cancelReason",
            "version",
            "placedAt",
            "updatedAt",
        ],
    ),
    ("OrderLine", &["sku", "quantity", "unitPriceCents"]),
];

/// One request as it arrived, and who sent it: the same bytes from the same
/// caller get the same answer while the rows it read stay unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AnswerKey {
    /// GET (the URL's query string) or POST (the body).
    pub get: bool,
    pub request: Bytes,
    pub caller: Caller,
}

/// What one execution read, recorded by the resolvers; put in the
/// request's data by whoever may keep the answer.
#[derive(Clone, Default)]
pub struct ReadLog(Arc<Mutex<Reads>>);

/// The reads of one execution.
#[derive(Default)]
pub struct Reads {
    /// The orders read one by one.
    rows: Vec<String>,
    /// Whether a page or count was read: any change drops the answer.
    pages: bool,
    /// Whether anything else ran: the answer is not kept.
    other: bool,
}

impl ReadLog {
    /// `order(id)` read order `id` (or found none).
    pub fn row(&self, id: &str) {
        self.with(|reads| reads.rows.push(id.to_string()));
    }

    /// A page of orders, or a count, was read.
    pub fn pages(&self) {
        self.with(|reads| reads.pages = true);
    }

    /// What was read, unless something that is not kept ran.
    pub fn finish(&self) -> Option<Reads> {
        let reads = std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner));
        (!reads.other).then_some(reads)
    }

    fn with(&self, record: impl FnOnce(&mut Reads)) {
        record(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

/// Marks a request's [`ReadLog`] when a field outside [`ORDER_FIELDS`] is
/// resolved. Requests without a log (WebSocket, gRPC) are left alone.
pub struct KeptFields;

impl ExtensionFactory for KeptFields {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(KeptFields)
    }
}

#[async_trait::async_trait]
impl Extension for KeptFields {
    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        // A list's items come through here too, named by their list's type;
        // the list's own field was checked.
        let item = info.parent_type.starts_with('[');
        if !item && let Some(log) = ctx.data_opt::<ReadLog>() {
            let kept =
                ORDER_FIELDS.iter().any(|(parent, fields)| *parent == info.parent_type && fields.contains(&info.name));
            if !kept || info.is_for_introspection {
                log.with(|reads| reads.other = true);
            }
        }
        next.run(ctx, info).await
    }
}

/// The answers kept; part of the order cache's state.
#[derive(Default)]
pub(super) struct Answers {
    /// Answers that read a page or a count: any change drops them.
    paged: HashMap<Arc<AnswerKey>, Bytes>,
    /// Answers that read rows only.
    rowed: HashMap<Arc<AnswerKey>, Bytes>,
    /// The answers in `rowed` that read each order (some may be gone: an
    /// answer that read two orders is dropped with the first's change).
    by_row: HashMap<String, HashSet<Arc<AnswerKey>>>,
    /// Bytes of the requests and answers kept, as counted against [`MAX_BYTES`].
    bytes: usize,
}

impl Answers {
    pub(super) fn get(&self, key: &AnswerKey) -> Option<Bytes> {
        self.rowed.get(key).or_else(|| self.paged.get(key)).cloned()
    }

    pub(super) fn keep(&mut self, key: AnswerKey, reads: Reads, answer: Bytes) {
        let size = key.request.len() + answer.len();
        if self.paged.len() + self.rowed.len() >= MAX_ANSWERS || self.bytes + size > MAX_BYTES {
            self.clear();
        }
        // One entry per key, whichever map it was in.
        self.forget(&key);
        self.bytes += size;
        let key = Arc::new(key);
        if reads.pages {
            self.paged.insert(key, answer);
        } else {
            for row in reads.rows {
                self.by_row.entry(row).or_default().insert(key.clone());
            }
            self.rowed.insert(key, answer);
        }
    }

    /// Drops what order `id`'s change may have changed.
    pub(super) fn invalidate(&mut self, id: &str) {
        for (key, answer) in self.paged.drain() {
            self.bytes = self.bytes.saturating_sub(key.request.len() + answer.len());
        }
        for key in self.by_row.remove(id).unwrap_or_default() {
            if let Some(answer) = self.rowed.remove(&key) {
                self.bytes = self.bytes.saturating_sub(key.request.len() + answer.len());
            }
        }
    }

    pub(super) fn clear(&mut self) {
        *self = Self::default();
    }

    fn forget(&mut self, key: &AnswerKey) {
        let answer = self.paged.remove(key).or_else(|| self.rowed.remove(key));
        if let Some(answer) = answer {
            self.bytes = self.bytes.saturating_sub(key.request.len() + answer.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(body: &str) -> AnswerKey {
        AnswerKey { get: false, request: Bytes::from(body.to_string()), caller: Caller::Open }
    }

    fn reads(rows: &[&str], pages: bool) -> Reads {
        Reads { rows: rows.iter().map(ToString::to_string).collect(), pages, other: false }
    }

    #[test]
    fn a_change_drops_the_answers_that_read_its_row_and_every_page() {
        let mut answers = Answers::default();
        answers.keep(key("a"), reads(&["1"], false), Bytes::from_static(b"A"));
        answers.keep(key("b"), reads(&["2"], false), Bytes::from_static(b"B"));
        answers.keep(key("page"), reads(&[], true), Bytes::from_static(b"P"));
        answers.invalidate("1");
        assert_eq!(answers.get(&key("a")), None);
        assert_eq!(answers.get(&key("page")), None);
        assert_eq!(answers.get(&key("b")), Some(Bytes::from_static(b"B")), "another order's answer stays");
    }

    #[test]
    fn an_answer_kept_again_is_one_entry() {
        let mut answers = Answers::default();
        for _ in 0..3 {
            answers.keep(key("ab"), reads(&["1", "2"], false), Bytes::from_static(b"AB"));
        }
        answers.keep(key("ab"), reads(&[], true), Bytes::from_static(b"P"));
        assert_eq!(answers.get(&key("ab")), Some(Bytes::from_static(b"P")));
        assert_eq!((answers.rowed.len(), answers.paged.len()), (0, 1));
        assert_eq!(answers.by_row["1"].len(), 1, "the row's dependents are a set");
        assert_eq!(answers.bytes, 3, "counted once");
    }

    #[test]
    fn the_same_request_from_another_caller_is_another_answer() {
        let mut answers = Answers::default();
        answers.keep(key("a"), reads(&["1"], false), Bytes::from_static(b"A"));
        let other = AnswerKey { caller: Caller::Anonymous, ..key("a") };
        assert_eq!(answers.get(&other), None);
    }

    #[test]
    fn a_log_that_saw_another_field_keeps_nothing() {
        let log = ReadLog::default();
        log.row("1");
        assert!(log.finish().is_some());
        log.with(|reads| reads.other = true);
        assert!(log.finish().is_none());
    }
}
