//! What a projection is: a named view fed by some aggregate types' events.

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
    /// view row that changed, to announce after commit.
    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &EventEnvelope,
    ) -> Result<Option<ViewChange>, ProjectionError>;
}
