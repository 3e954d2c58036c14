//! The SQL event store: decides commands against their aggregates and
//! appends the events, the outbox rows and the commands' outcomes in one
//! SERIALIZABLE transaction per batch ([`group_commit`]).
//!
//! Exactly-once effect comes from the outcome row (keyed by command id) and
//! optimistic concurrency from the unique (stream_id, version) constraint:
//! whichever of two racing writers commits second fails, reloads, and
//! decides again on the new state; nothing is ever overwritten.

mod group_commit;
mod job;
mod lane;
mod publication;
#[cfg(test)]
mod retry_tests;
mod rows;
#[cfg(test)]
mod stamp_tests;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use schema::envelope::stream_id;
use schema::ports::{EventLog, EventPublisher, PortError, StreamHead, StreamPosition, TimeCursor};
use schema::sql::{self, RetryableError, to_micros};
use schema::{CommandEnvelope, CommandOutcome, EventEnvelope};
use sqlx::AnyPool;
use tokio::sync::oneshot;
use tracing::{Instrument as _, instrument};
use uuid::Uuid;

pub use group_commit::{APPEND_DEADLINE, Attached, Attachment, CommitHook, LaneSettings};

use crate::aggregate::Aggregate;
use group_commit::{HookSlot, Lanes};
use job::{Pending, fold};
use publication::Publication;
use rows::{event_columns, event_from_row, load_events, load_stream};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Another writer appended to the stream (or recorded the command) first.
    #[error("concurrent write: {0}")]
    Conflict(String),
    /// The message or a stored event cannot be read: retrying will not help.
    #[error("unreadable message: {0}")]
    Contract(String),
    /// The store is shutting down.
    #[error("the event store is shut down")]
    Closed,
    /// An append would have committed later than its deadline after its
    /// events were stamped ([`LaneSettings::append_deadline`]); it was
    /// rolled back, and is written again with new stamps.
    #[error("append not committed within {0:?} of stamping its events")]
    Late(std::time::Duration),
}

impl StoreError {
    /// A failed write: a unique violation means another writer won.
    fn from_write(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::Conflict(db.message().to_string()),
            _ => Self::Database(error),
        }
    }
}

impl RetryableError for StoreError {
    fn is_retryable(&self) -> bool {
        match self {
            Self::Database(error) => sql::is_retryable(error),
            Self::Conflict(_) | Self::Late(_) => true,
            Self::Contract(_) | Self::Closed => false,
        }
    }
}

/// A command's outcome, and the events it appended now (empty when the
/// outcome was already stored by an earlier delivery).
#[derive(Debug)]
pub struct Decision {
    pub outcome: CommandOutcome,
    pub new_events: Vec<EventEnvelope>,
    /// What the commit hook made of the command's [`Attachment`], if it
    /// had one and the hook wrote it in the command's transaction.
    pub attached: Option<Attached>,
}

impl Decision {
    /// An outcome decided before (by an earlier delivery).
    pub fn stored(outcome: CommandOutcome) -> Self {
        Self { outcome, new_events: Vec::new(), attached: None }
    }
}

#[derive(Clone)]
pub struct SqlEventStore {
    pool: AnyPool,
    lanes: Lanes,
    hook: HookSlot,
}

impl SqlEventStore {
    /// A store whose appends are published by the outbox relay only (for
    /// tools and tests that read, or a process without a transport).
    pub fn new(pool: AnyPool) -> Self {
        let settings = lane_settings_for(&pool);
        Self::with_lanes(pool, settings)
    }

    /// As [`Self::new`], with these lanes.
    pub fn with_lanes(pool: AnyPool, settings: LaneSettings) -> Self {
        let hook = HookSlot::default();
        Self { lanes: Lanes::start(pool.clone(), &settings, None, hook.clone()), pool, hook }
    }

    /// A store that publishes what it commits, right after each commit and
    /// off the callers' path (the relay covers a crash in between).
    pub fn publishing(pool: AnyPool, publisher: Arc<dyn EventPublisher>, settings: LaneSettings) -> Self {
        let hook = HookSlot::default();
        let publication = Publication::start(pool.clone(), publisher);
        Self { lanes: Lanes::start(pool.clone(), &settings, Some(publication), hook.clone()), pool, hook }
    }

    /// Runs `hook` in every batch transaction that appends events. Set
    /// once, before commands arrive; a second hook is refused.
    pub fn set_commit_hook(&self, hook: Arc<dyn CommitHook>) -> Result<(), StoreError> {
        self.hook.set(hook).map_err(|_| StoreError::Contract("the event store already has a commit hook".into()))
    }

    /// How many streams the lanes read back from the store to decide on
    /// (streams not in memory): after warm-up, a hot stream costs none.
    pub fn streams_read(&self) -> u64 {
        self.lanes.streams_read()
    }

    /// The pool, for the saga's own table.
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Creates the tables if needed (see [`schema::migration`]).
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        crate::migrate(&self.pool).await
    }

    /// Decides a command against the current state of its aggregate, with
    /// whatever else is queued for the same lane; returns once the outcome
    /// is committed. Conflicts and serialization failures are retried.
    #[instrument(skip_all, fields(command_id = %command.id, aggregate = %command.aggregate_id))]
    pub async fn execute<A: Aggregate>(
        &self,
        command: &CommandEnvelope,
        typed: A::Command,
    ) -> Result<Decision, StoreError> {
        self.execute_attached::<A>(command, typed, None).await
    }

    /// As [`Self::execute`], handing `attachment` to the commit hook inside
    /// the command's transaction (the saga saves its state this way, with
    /// the step that changed it); the hook's answer is in
    /// [`Decision::attached`].
    pub async fn execute_attached<A: Aggregate>(
        &self,
        command: &CommandEnvelope,
        typed: A::Command,
        attachment: Option<Attachment>,
    ) -> Result<Decision, StoreError> {
        let (reply, answer) = oneshot::channel();
        let stream = stream_id(A::TYPE, &command.aggregate_id);
        let mut command = command.clone();
        // Traced: the events it causes hang under the span deciding it (see
        // schema::trace), and the wait for the lane's group commit is the
        // store's span (OpenTelemetry's database conventions).
        let span = if schema::trace::enabled() {
            command.metadata.traceparent = schema::trace::current();
            self.append_span()
        } else {
            tracing::Span::none()
        };
        async move {
            self.lanes.submit(Box::new(Pending::<A>::new(command, typed, stream, attachment, reply))).await?;
            answer.await.map_err(|_| StoreError::Closed)?
        }
        .instrument(span)
        .await
    }

    /// `append events`: a client span on the store's database.
    fn append_span(&self) -> tracing::Span {
        let system = if is_sqlite(&self.pool) { "sqlite" } else { "postgresql" };
        tracing::info_span!(
            target: "conveyor::trace",
            "append",
            otel.name = "append events",
            otel.kind = "client",
            db.system.name = system,
            db.operation.name = "append",
            db.collection.name = "events",
        )
    }

    /// The current state and version of an aggregate, read from the store.
    pub async fn load<A: Aggregate>(&self, aggregate_id: &str) -> Result<(A, u64), StoreError> {
        let mut conn = self.pool.acquire().await?;
        let history = load_stream(&mut conn, &stream_id(A::TYPE, aggregate_id), 1, i64::MAX).await?;
        fold::<A>(&history)
    }

    /// The stored outcome of a command, if it was decided.
    pub async fn outcome(&self, command_id: Uuid) -> Result<Option<CommandOutcome>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Ok(rows::stored_outcomes(&mut conn, &[command_id]).await?.remove(&command_id))
    }

    /// Committed events whose publication is unconfirmed and older than
    /// `grace` (younger ones are still being published by their lane),
    /// in stream order.
    pub async fn unpublished(&self, grace: std::time::Duration, limit: u32) -> Result<Vec<EventEnvelope>, StoreError> {
        let cutoff = to_micros(Utc::now()) - grace.as_micros() as i64;
        let query = concat!(
            "SELECT ",
            event_columns!("e."),
            " FROM events e JOIN outbox o ON o.event_id = e.event_id \
             WHERE o.created_at <= $1 ORDER BY e.stream_id, e.version LIMIT $2"
        );
        let rows = sqlx::query(query).bind(cutoff).bind(i64::from(limit)).fetch_all(&self.pool).await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Forgets outbox rows once their events are confirmed published.
    pub async fn mark_published(&self, event_ids: &[Uuid]) -> Result<(), StoreError> {
        sql::retry("mark published", || async {
            let mut conn = self.pool.acquire().await?;
            rows::delete_outbox(&mut conn, event_ids).await?;
            Ok::<_, StoreError>(())
        })
        .await
    }

    /// Counts all events in the store: for tests and operators.
    pub async fn count_all_events(&self) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events").fetch_one(&self.pool).await?;
        Ok(count as u64)
    }
}

/// The lanes right for this pool's database, with the default batch and
/// cache sizes: one on SQLite (one writer), the default on a server
/// database, which commits several transactions at once and groups their fsyncs.
pub fn lane_settings_for(pool: &AnyPool) -> LaneSettings {
    LaneSettings { lanes: if is_sqlite(pool) { 1 } else { LaneSettings::default().lanes }, ..LaneSettings::default() }
}

fn is_sqlite(pool: &AnyPool) -> bool {
    pool.connect_options().database_url.scheme().starts_with("sqlite")
}

#[async_trait]
impl EventLog for SqlEventStore {
    async fn read_stream(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<EventEnvelope>, PortError> {
        let mut conn = self.pool.acquire().await.map_err(PortError::backend)?;
        let to = i64::try_from(to).unwrap_or(i64::MAX);
        load_stream(&mut conn, &stream_id(aggregate_type, aggregate_id), from as i64, to)
            .await
            .map_err(PortError::backend)
    }

    async fn read_all(&self, after: Option<&StreamPosition>, limit: u32) -> Result<Vec<EventEnvelope>, PortError> {
        let (stream, version) = after.map(|p| (p.stream_id.clone(), p.version as i64)).unwrap_or_default();
        let query = concat!(
            "SELECT ",
            event_columns!(""),
            " FROM events WHERE (stream_id, version) > ($1, $2) ORDER BY stream_id, version LIMIT $3"
        );
        let rows = sqlx::query(query)
            .bind(stream)
            .bind(version)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(PortError::backend)?;
        rows.iter().map(event_from_row).collect::<Result<_, _>>().map_err(PortError::backend)
    }

    async fn read_events(&self, ids: &[Uuid]) -> Result<Vec<EventEnvelope>, PortError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.pool.acquire().await.map_err(PortError::backend)?;
        load_events(&mut conn, ids).await.map_err(PortError::backend)
    }

    async fn read_by_time(
        &self,
        aggregate_types: &[&str],
        after: &TimeCursor,
        until: i64,
        limit: u32,
    ) -> Result<Vec<EventEnvelope>, PortError> {
        let mut conn = self.pool.acquire().await.map_err(PortError::backend)?;
        rows::load_by_time(&mut conn, aggregate_types, after, until, limit).await.map_err(PortError::backend)
    }

    async fn stream_heads(&self) -> Result<Vec<StreamHead>, PortError> {
        // The type and id are the same on every row of a stream; MIN picks it.
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT MIN(aggregate_type) AS aggregate_type, MIN(aggregate_id) AS aggregate_id, MAX(version) AS version \
             FROM events GROUP BY stream_id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(PortError::backend)?;
        Ok(rows
            .into_iter()
            .map(|(aggregate_type, aggregate_id, version)| StreamHead {
                aggregate_type,
                aggregate_id,
                version: version as u64,
            })
            .collect())
    }
}
