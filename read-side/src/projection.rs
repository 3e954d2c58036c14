//! What a projection is: a named view fed by some aggregate types' events.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use schema::EventEnvelope;
use schema::ports::ViewChange;
use schema::sql::{self, RetryableError};
use sqlx::AnyConnection;

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The event cannot be read by this build: it goes to the dead-letter subject.
    #[error("unreadable event: {0}")]
    Contract(String),
    /// The event is ahead of the projection: versions after `applied` come first.
    #[error("the projection has applied only up to version {applied} of this stream")]
    Behind { applied: u64 },
    /// Earlier events of the stream are missing and could not be fetched yet.
    #[error("stream {stream} has a gap before version {version}")]
    Gap { stream: String, version: u64 },
    /// The event refers to a row that another stream's events create, and
    /// they have not been projected yet: most likely they are in flight in
    /// another worker's transaction, so the projector waits briefly and
    /// tries again before it gives the event back to the feed.
    #[error("{needs} is not in the view yet (for {stream})")]
    NotYet { needs: String, stream: String },
    #[error("event log unavailable: {0}")]
    Log(#[from] schema::ports::PortError),
}

impl RetryableError for ProjectionError {
    fn is_retryable(&self) -> bool {
        match self {
            Self::Database(error) => sql::is_retryable(error),
            _ => false,
        }
    }
}

#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Names the checkpoint rows and the durable consumer.
    fn name(&self) -> &'static str;

    /// The aggregate types whose events this projection reads. The first
    /// owns the rows that events of the others refer to (orders, before the
    /// stock and payment steps taken for them): a catch-up applies its
    /// streams first.
    fn aggregate_types(&self) -> &'static [&'static str];

    /// Applies one event inside the projector's transaction. Returns the
    /// view row that changed, to announce after commit. The projector has
    /// checked the stream's checkpoint and advances it; the projection only
    /// writes its rows, with as few statements as it can (one where one
    /// will do: `UPDATE … RETURNING`, `INSERT … ON CONFLICT DO UPDATE`).
    async fn apply(&self, tx: &mut ViewTx<'_>, event: &EventEnvelope) -> Result<Option<ViewChange>, ProjectionError>;
}

/// The projector's transaction as a projection sees it. A projection
/// reaches the connection only through [`ViewTx::statement`], which counts
/// one statement per call, so tests can prove what an event costs.
pub struct ViewTx<'t> {
    conn: &'t mut AnyConnection,
    statements: &'t AtomicU64,
}

impl<'t> ViewTx<'t> {
    pub(crate) fn new(conn: &'t mut AnyConnection, statements: &'t AtomicU64) -> Self {
        Self { conn, statements }
    }

    /// The connection, to run one statement on.
    pub fn statement(&mut self) -> &mut AnyConnection {
        self.statements.fetch_add(1, Ordering::Relaxed);
        self.conn
    }
}
