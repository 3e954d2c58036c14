//! Ports: the small traits the sides talk through. Each has an embedded
//! (in-process, SQLite) and a server (NATS, PostgreSQL/CockroachDB) adapter;
//! domain code only ever holds an `Arc<dyn Port>`.

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{CommandEnvelope, CommandOutcome, EventEnvelope};

/// Failure of an adapter: the transport or store is unreachable or failed.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("{0} is unavailable")]
    Unavailable(String),
    #[error(transparent)]
    Backend(#[from] Box<dyn std::error::Error + Send + Sync>),
}

impl PortError {
    pub fn backend(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend(Box::new(error))
    }
}

/// What became of a dispatched command within the wait bound.
#[derive(Debug, Clone, PartialEq)]
pub enum Dispatched {
    /// The write side decided (and, if accepted, committed the events).
    Decided(CommandOutcome),
    /// Durably handed over, not decided yet; ask again with the command id.
    Pending,
}

/// Gateway → write side.
#[async_trait]
pub trait CommandBus: Send + Sync {
    /// Hands the command over (durably in server mode, deduplicated by its id)
    /// and waits up to `wait` for the outcome.
    async fn dispatch(&self, command: CommandEnvelope, wait: Duration) -> Result<Dispatched, PortError>;

    /// The stored outcome of a command, if it has been decided.
    async fn outcome(&self, command_id: Uuid) -> Result<Option<CommandOutcome>, PortError>;
}

/// Reads the event store: the truth that projectors repair gaps and rebuild from.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Events of one stream with `from <= version <= to`, in order.
    async fn read_stream(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<EventEnvelope>, PortError>;

    /// A page of all events ordered by (stream id, version), after a position.
    async fn read_all(&self, after: Option<&StreamPosition>, limit: u32) -> Result<Vec<EventEnvelope>, PortError>;

    /// The stored copies of the events with these ids, in no particular
    /// order; ids the store does not have are left out. One round trip per
    /// few hundred ids: what a projector checks each delivered batch against
    /// (the bus is not the truth).
    async fn read_events(&self, ids: &[Uuid]) -> Result<Vec<EventEnvelope>, PortError>;

    /// Every stream with its last version: one pass over the (stream id,
    /// version) index and no payloads, so a catch-up reads only the streams
    /// that moved past its checkpoints.
    async fn stream_heads(&self) -> Result<Vec<StreamHead>, PortError>;

    /// A page of the events of `aggregate_types` in time order — by
    /// (occurred_at, event id) — after `after`, stamped at `until` (µs) or
    /// earlier: what `EventStore.StreamEvents` sends (docs/grpc.md). The
    /// store has no global sequence (invariant 10), so this order is only
    /// complete up to a time no append still in flight can be stamped
    /// before; the caller chooses `until` that far back.
    async fn read_by_time(
        &self,
        aggregate_types: &[&str],
        after: &TimeCursor,
        until: i64,
        limit: u32,
    ) -> Result<Vec<EventEnvelope>, PortError>;
}

/// A place in the event store's time order: an event's `occurred_at` (µs,
/// stamped by its writer) and id (a UUIDv7, which breaks ties).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeCursor {
    pub occurred_at: i64,
    pub event_id: Uuid,
}

impl TimeCursor {
    /// Before every event.
    pub const START: Self = Self { occurred_at: i64::MIN, event_id: Uuid::nil() };

    /// The place of `event`: a read after it starts with the next one.
    pub fn of(event: &EventEnvelope) -> Self {
        Self { occurred_at: event.timestamp.timestamp_micros(), event_id: event.id }
    }

    /// After every event stamped at `micros` or earlier.
    pub fn after_time(micros: i64) -> Self {
        Self { occurred_at: micros, event_id: Uuid::max() }
    }
}

/// A stream and its last version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHead {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub version: u64,
}

/// A place in the event log, for paging through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPosition {
    pub stream_id: String,
    pub version: u64,
}

/// Write side → event transport (JetStream, or the in-process feed).
#[async_trait]
pub trait EventPublisher: Send + Sync {
    /// Publishes events in the given order; returns once the transport holds them.
    async fn publish(&self, events: &[EventEnvelope]) -> Result<(), PortError>;
}

/// How a consumer settles a delivery.
#[async_trait]
pub trait Acknowledge: Send {
    /// Done: never deliver again.
    async fn ack(self: Box<Self>) -> Result<(), PortError>;
    /// Not now: deliver again after `delay`.
    async fn retry(self: Box<Self>, delay: Duration) -> Result<(), PortError>;
    /// Moves the message aside, kept with `reason` under `source` (server
    /// mode: the `<ns>_DLQ` stream), and never delivers it again. On error
    /// nothing was settled: it will be delivered again.
    async fn dead_letter(self: Box<Self>, source: &str, reason: &str) -> Result<(), PortError>;
    /// How many times this message was delivered, 1 on the first.
    fn delivered(&self) -> u64;
    /// Whether this is the last delivery the transport makes: a consumer
    /// that cannot handle it now dead-letters it instead of retrying.
    fn is_last_delivery(&self) -> bool;
}

/// One delivered event: the decoded envelope, or why it could not be
/// decoded. A decoded envelope is only a claim: what a projector applies is
/// the event store's copy of it.
pub struct EventDelivery {
    pub event: Result<EventEnvelope, String>,
    pub ack: Box<dyn Acknowledge>,
}

/// Read side ← event transport.
#[async_trait]
pub trait EventFeed: Send + Sync {
    /// A durable subscription named `consumer` to the events of `aggregate_types`.
    async fn subscribe(
        &self,
        consumer: &str,
        aggregate_types: &[&str],
    ) -> Result<BoxStream<'static, Result<EventDelivery, PortError>>, PortError>;

    /// Whether what this feed delivers are the event store's own copies,
    /// which no one else can publish (the in-process hub, fed from the
    /// outbox): then a projector skips looking each batch up in the store.
    /// A network transport must answer false.
    fn delivers_store_copies(&self) -> bool {
        false
    }
}

/// A view row changed: published after the projector committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewChange {
    pub view: String,
    pub id: String,
    pub version: u64,
    /// Whom the row belongs to (an order's customer), for watchers that
    /// may see only one customer's rows; `None` for rows of no one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The trace context of the projector's span that made the change (see
    /// [`crate::trace`]): the push to subscribers continues its trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// Read side → gateway change notifications (NATS core, or a broadcast channel).
#[async_trait]
pub trait Notifier: Send + Sync {
    async fn notify(&self, change: &ViewChange) -> Result<(), PortError>;
    /// Changes of one view row from now on. Best effort: subscribers re-read
    /// the view, so a missed notification delays an update, never corrupts it.
    async fn watch(&self, view: &str, id: &str) -> Result<BoxStream<'static, ViewChange>, PortError>;
    /// Changes of every row of one view from now on, equally best effort. A
    /// change with an empty `id` means some were missed (the watcher lagged):
    /// re-read what matters instead of trusting the stream to be complete.
    async fn watch_view(&self, view: &str) -> Result<BoxStream<'static, ViewChange>, PortError>;
    /// Changes of the rows of one view that belong to `scope` (with `id`:
    /// of that row, only while it belongs to `scope`), from now on; equally
    /// best effort, with the same empty-`id` signal after missed changes.
    /// Others' rows never reach the watcher, so it reads only rows it may
    /// send (server mode: the NATS server filters by subject).
    async fn watch_scope(
        &self,
        view: &str,
        scope: &str,
        id: Option<&str>,
    ) -> Result<BoxStream<'static, ViewChange>, PortError>;
}

/// Gateway ← write side: how much accepted work is still unfinished, so the
/// edge can refuse new orders before it takes more than it can finish
/// (invariant 9). Read by one background task per gateway, never per request.
#[async_trait]
pub trait Backlog: Send + Sync {
    /// Orders accepted whose business transaction has not reached a final
    /// status yet (their sagas are still running).
    async fn undecided_orders(&self) -> Result<u64, PortError>;
}

/// A dependency that `/readyz` checks.
#[async_trait]
pub trait Readiness: Send + Sync {
    /// `Ok` when reachable; the error names what is not.
    async fn check(&self) -> Result<(), PortError>;
}
