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
            // A unique violation too: at SERIALIZABLE, PostgreSQL reports
            // an insert that meets a row a concurrent transaction inserted
            // (another projector process given the same event, a rebuild's
            // switch) as 23505 rather than 40001 when the loser never read
            // the key. Run again, the transaction reads the checkpoint the
            // winner advanced and skips the event.
            Self::Database(error) => sql::is_retryable(error) || is_unique_violation(error),
            _ => false,
        }
    }
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    // PostgreSQL and CockroachDB: 23505; SQLite: SQLITE_CONSTRAINT_PRIMARYKEY
    // and _UNIQUE (one writer at a time: never a race there, so not retried).
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}

/// A table a projection writes, as a rebuild copies it (`read_side::rebuild`).
#[derive(Debug)]
pub struct ViewTable {
    pub name: &'static str,
    /// The primary key's columns.
    pub key: &'static [&'static str],
    /// How a row that a rebuild changed is announced; none: it is not (its
    /// owner row's announcement covers it, or nobody watches it).
    pub announce: Option<Announce>,
}

/// The columns of a changed row that make its [`ViewChange`].
#[derive(Debug)]
pub struct Announce {
    pub id: &'static str,
    /// A BIGINT column, the version the projector announces for the row.
    pub version: &'static str,
    pub scope: Option<&'static str>,
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

    /// Every table the projection writes (and only it): what a rebuild
    /// builds beside the live ones and switches in.
    fn tables(&self) -> &'static [ViewTable];

    /// Applies one event inside the projector's transaction. Returns the
    /// view row that changed, to announce after commit. The projector has
    /// checked the stream's checkpoint and advances it; the projection only
    /// writes its rows, with as few statements as it can (one where one
    /// will do: `UPDATE … RETURNING`, `INSERT … ON CONFLICT DO UPDATE`).
    async fn apply(&self, tx: &mut ViewTx<'_>, event: &EventEnvelope) -> Result<Option<ViewChange>, ProjectionError>;
}

/// The projector's transaction as a projection sees it. A projection
/// reaches the connection only through [`ViewTx::statement`], which counts
/// one statement per call, so tests can prove what an event costs; rows
/// that nothing in the batch reads back (a timeline entry) go through
/// [`ViewTx::insert_later`] and cost one statement per batch.
pub struct ViewTx<'t> {
    conn: &'t mut AnyConnection,
    statements: &'t AtomicU64,
    later: &'t mut Inserts,
}

impl<'t> ViewTx<'t> {
    pub(crate) fn new(conn: &'t mut AnyConnection, statements: &'t AtomicU64, later: &'t mut Inserts) -> Self {
        Self { conn, statements, later }
    }

    /// The connection, to run one statement on.
    pub fn statement(&mut self) -> &mut AnyConnection {
        self.statements.fetch_add(1, Ordering::Relaxed);
        self.conn
    }

    /// Queues a row for `insert`: the projector writes every queued row of
    /// the batch in multi-row statements before its checkpoints, in the
    /// same transaction. Only for rows the batch's later events do not
    /// read or change.
    pub fn insert_later(&mut self, insert: &'static Insert, values: Vec<Value>) {
        debug_assert_eq!(values.len(), insert.columns.len(), "one value per column of {}", insert.table);
        self.later.push(insert, values);
    }
}

/// An `INSERT` whose rows can be gathered: the table, its columns, and what
/// follows the `VALUES` (an `ON CONFLICT` clause, or nothing).
#[derive(Debug, PartialEq, Eq)]
pub struct Insert {
    pub table: &'static str,
    pub columns: &'static [&'static str],
    pub then: &'static str,
}

/// A value in a gathered row.
#[derive(Debug, Clone)]
pub enum Value {
    Text(String),
    Int(i64),
}

impl Value {
    fn size(&self) -> usize {
        match self {
            Self::Text(text) => text.len() + 8,
            Self::Int(_) => 12,
        }
    }
}

/// The rows queued by one batch, in the order they were queued.
#[derive(Default)]
pub(crate) struct Inserts {
    rows: Vec<(&'static Insert, Vec<Value>)>,
}

impl Inserts {
    /// Queues a row for `insert`.
    pub(crate) fn push(&mut self, insert: &'static Insert, values: Vec<Value>) {
        self.rows.push((insert, values));
    }

    /// Writes the queued rows: one statement per insert kind and size
    /// chunk ([`sql::chunks_by_size`]); returns the statements run.
    pub(crate) async fn write(self, conn: &mut AnyConnection) -> Result<u64, sqlx::Error> {
        let mut kinds: Vec<&'static Insert> = Vec::new();
        for (insert, _) in &self.rows {
            if !kinds.contains(insert) {
                kinds.push(insert);
            }
        }
        let mut statements = 0;
        for kind in kinds {
            let rows: Vec<&Vec<Value>> =
                self.rows.iter().filter(|(insert, _)| *insert == kind).map(|(_, values)| values).collect();
            for chunk in sql::chunks_by_size(&rows, |values| values.iter().map(Value::size).sum::<usize>() + 8) {
                let width = kind.columns.len();
                let tuples: Vec<String> = (0..chunk.len())
                    .map(|row| {
                        let marks: Vec<String> =
                            (1..=width).map(|column| format!("${}", row * width + column)).collect();
                        format!("({})", marks.join(", "))
                    })
                    .collect();
                let statement = format!(
                    "INSERT INTO {} ({}) VALUES {} {}",
                    kind.table,
                    kind.columns.join(", "),
                    tuples.join(", "),
                    kind.then
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(statement));
                for value in chunk.iter().flat_map(|values| values.iter()) {
                    query = match value {
                        Value::Text(text) => query.bind(text.clone()),
                        Value::Int(int) => query.bind(*int),
                    };
                }
                query.execute(&mut *conn).await?;
                statements += 1;
            }
        }
        Ok(statements)
    }
}
