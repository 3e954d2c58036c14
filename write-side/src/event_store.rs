//! The SQL event store: loads an aggregate, decides, and appends its events,
//! the outbox rows and the command's outcome in one SERIALIZABLE transaction.
//!
//! Exactly-once effect comes from the outcome row (keyed by command id) and
//! optimistic concurrency from the unique (stream_id, version) constraint:
//! whichever of two racing writers commits second fails, reloads, and
//! decides again on the new state; nothing is ever overwritten.

use async_trait::async_trait;
use chrono::Utc;
use schema::envelope::{Message, stream_id};
use schema::ports::{EventLog, PortError, StreamHead, StreamPosition};
use schema::sql::{self, RetryableError, from_micros, to_micros};
use schema::{CommandEnvelope, CommandOutcome, EventEnvelope, Metadata, OutcomeStatus};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Row};
use tracing::instrument;
use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::stream_locks::StreamLocks;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Another writer appended to the stream (or recorded the command) first.
    #[error("concurrent write to stream {0}")]
    Conflict(String),
    /// The message or a stored event cannot be read: retrying will not help.
    #[error("unreadable message: {0}")]
    Contract(String),
}

impl RetryableError for StoreError {
    fn is_retryable(&self) -> bool {
        match self {
            Self::Database(error) => sql::is_retryable(error),
            Self::Conflict(_) => true,
            Self::Contract(_) => false,
        }
    }
}

/// A command's outcome, and the events it appended now (empty when the
/// outcome was already stored by an earlier delivery).
#[derive(Debug)]
pub struct Decision {
    pub outcome: CommandOutcome,
    pub new_events: Vec<EventEnvelope>,
}

#[derive(Clone)]
pub struct SqlEventStore {
    pool: AnyPool,
    locks: StreamLocks,
}

/// The columns an [`EventEnvelope`] is read from, as a literal so queries stay static SQL.
macro_rules! event_columns {
    ($p:literal) => {
        concat!(
            $p,
            "event_id, ",
            $p,
            "aggregate_type, ",
            $p,
            "aggregate_id, ",
            $p,
            "version, ",
            $p,
            "type_name, ",
            $p,
            "schema_version, ",
            $p,
            "payload, ",
            $p,
            "correlation_id, ",
            $p,
            "causation_id, ",
            $p,
            "actor, ",
            $p,
            "occurred_at"
        )
    };
}

impl SqlEventStore {
    pub fn new(pool: AnyPool) -> Self {
        Self { pool, locks: StreamLocks::default() }
    }

    /// The pool, for the saga's own table.
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Creates the tables if needed (see [`sql::migrate`]).
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        sql::migrate(&self.pool, sqlx::migrate!("./migrations"), "_write_side_migrations").await
    }

    /// Decides a command against the current state of its aggregate, retrying
    /// on conflicts and serialization failures.
    #[instrument(skip_all, fields(command_id = %command.id, aggregate = %command.aggregate_id))]
    pub async fn execute<A: Aggregate>(
        &self,
        command: &CommandEnvelope,
        typed: &A::Command,
    ) -> Result<Decision, StoreError> {
        let _turn = self.locks.lock(stream_id(A::TYPE, &command.aggregate_id)).await;
        sql::retry("execute command", || self.execute_once::<A>(command, typed)).await
    }

    /// The current state and version of an aggregate.
    pub async fn load<A: Aggregate>(&self, aggregate_id: &str) -> Result<(A, u64), StoreError> {
        let mut conn = self.pool.acquire().await?;
        let history = load_stream(&mut conn, &stream_id(A::TYPE, aggregate_id), 1, i64::MAX).await?;
        fold::<A>(&history)
    }

    async fn execute_once<A: Aggregate>(
        &self,
        command: &CommandEnvelope,
        typed: &A::Command,
    ) -> Result<Decision, StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some(outcome) = stored_outcome(&mut tx, command.id).await? {
            tx.commit().await?;
            return Ok(Decision { outcome, new_events: Vec::new() });
        }
        let stream = stream_id(A::TYPE, &command.aggregate_id);
        let history = load_stream(&mut tx, &stream, 1, i64::MAX).await?;
        let (state, current_version) = fold::<A>(&history)?;
        let now = Utc::now();
        let (outcome, new_events) = match state.decide(typed) {
            Ok(events) => {
                let envelopes = envelopes::<A>(command, current_version, &events);
                for envelope in &envelopes {
                    insert_event(&mut tx, &stream, envelope).await?;
                }
                let outcome = CommandOutcome {
                    command_id: command.id,
                    aggregate_type: A::TYPE.into(),
                    aggregate_id: command.aggregate_id.clone(),
                    status: OutcomeStatus::Accepted,
                    rejection: None,
                    stream_version: current_version + envelopes.len() as u64,
                    event_ids: envelopes.iter().map(|event| event.id).collect(),
                    decided_at: now,
                    fingerprint: Some(command.fingerprint()),
                };
                (outcome, envelopes)
            }
            Err(rejection) => {
                let outcome = CommandOutcome {
                    command_id: command.id,
                    aggregate_type: A::TYPE.into(),
                    aggregate_id: command.aggregate_id.clone(),
                    status: OutcomeStatus::Rejected,
                    rejection: Some(rejection),
                    stream_version: current_version,
                    event_ids: Vec::new(),
                    decided_at: now,
                    fingerprint: Some(command.fingerprint()),
                };
                (outcome, Vec::new())
            }
        };
        insert_outcome(&mut tx, &outcome).await.map_err(|error| conflict_or(error, &stream))?;
        tx.commit().await.map_err(|error| conflict_or(error, &stream))?;
        Ok(Decision { outcome, new_events })
    }

    /// The stored outcome of a command, if it was decided.
    pub async fn outcome(&self, command_id: Uuid) -> Result<Option<CommandOutcome>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        stored_outcome(&mut conn, command_id).await
    }

    /// Committed events whose publication is unconfirmed and older than
    /// `grace` (younger ones are still being published by their handler),
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
            let mut tx = self.pool.begin().await?;
            for id in event_ids {
                sqlx::query("DELETE FROM outbox WHERE event_id = $1").bind(id.to_string()).execute(&mut *tx).await?;
            }
            tx.commit().await?;
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

fn fold<A: Aggregate>(history: &[EventEnvelope]) -> Result<(A, u64), StoreError> {
    let mut state = A::default();
    for stored in history {
        let event = A::Event::decode(stored).map_err(|error| StoreError::Contract(error.to_string()))?;
        state.apply(&event);
    }
    Ok((state, history.len() as u64))
}

/// A unique violation on commit or on the outcome row means another writer won.
fn conflict_or(error: sqlx::Error, stream: &str) -> StoreError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(stream.into()),
        _ => StoreError::Database(error),
    }
}

fn envelopes<A: Aggregate>(command: &CommandEnvelope, after_version: u64, events: &[A::Event]) -> Vec<EventEnvelope> {
    let metadata: Metadata = command.caused_metadata();
    let timestamp = Utc::now();
    events
        .iter()
        .enumerate()
        .map(|(index, event)| {
            let (type_name, payload) = event.to_parts();
            EventEnvelope {
                id: Uuid::now_v7(),
                schema_version: A::Event::schema_version(&type_name).unwrap_or(1),
                type_name,
                aggregate_type: A::TYPE.into(),
                aggregate_id: command.aggregate_id.clone(),
                stream_version: after_version + index as u64 + 1,
                metadata: metadata.clone(),
                timestamp,
                payload,
            }
        })
        .collect()
}

async fn stored_outcome(conn: &mut AnyConnection, command_id: Uuid) -> Result<Option<CommandOutcome>, StoreError> {
    let stored: Option<String> = sqlx::query_scalar("SELECT outcome FROM command_outcomes WHERE command_id = $1")
        .bind(command_id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    stored.map(|json| serde_json::from_str(&json).map_err(|error| StoreError::Contract(error.to_string()))).transpose()
}

async fn load_stream(
    conn: &mut AnyConnection,
    stream: &str,
    from: i64,
    to: i64,
) -> Result<Vec<EventEnvelope>, StoreError> {
    let query = concat!(
        "SELECT ",
        event_columns!(""),
        " FROM events WHERE stream_id = $1 AND version >= $2 AND version <= $3 ORDER BY version"
    );
    let rows = sqlx::query(query).bind(stream).bind(from).bind(to).fetch_all(&mut *conn).await?;
    rows.iter().map(event_from_row).collect()
}

async fn insert_event(conn: &mut AnyConnection, stream: &str, event: &EventEnvelope) -> Result<(), StoreError> {
    let inserted = sqlx::query(concat!(
        "INSERT INTO events (stream_id, ",
        event_columns!(""),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
    ))
    .bind(stream)
    .bind(event.id.to_string())
    .bind(&event.aggregate_type)
    .bind(&event.aggregate_id)
    .bind(event.stream_version as i64)
    .bind(&event.type_name)
    .bind(i64::from(event.schema_version))
    .bind(event.payload.to_string())
    .bind(event.metadata.correlation_id.to_string())
    .bind(event.metadata.causation_id.to_string())
    .bind(&event.metadata.actor)
    .bind(to_micros(event.timestamp))
    .execute(&mut *conn)
    .await;
    inserted.map_err(|error| conflict_or(error, stream))?;
    sqlx::query("INSERT INTO outbox (event_id, stream_id, version, created_at) VALUES ($1, $2, $3, $4)")
        .bind(event.id.to_string())
        .bind(stream)
        .bind(event.stream_version as i64)
        .bind(to_micros(Utc::now()))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn insert_outcome(conn: &mut AnyConnection, outcome: &CommandOutcome) -> Result<(), sqlx::Error> {
    let json = serde_json::to_string(outcome).map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
    sqlx::query("INSERT INTO command_outcomes (command_id, outcome, decided_at) VALUES ($1, $2, $3)")
        .bind(outcome.command_id.to_string())
        .bind(json)
        .bind(to_micros(outcome.decided_at))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

fn event_from_row(row: &AnyRow) -> Result<EventEnvelope, StoreError> {
    let uuid = |column: &str| -> Result<Uuid, StoreError> {
        let text: String = row.try_get(column)?;
        Uuid::parse_str(&text).map_err(|error| StoreError::Contract(format!("{column}: {error}")))
    };
    let payload: String = row.try_get("payload")?;
    Ok(EventEnvelope {
        id: uuid("event_id")?,
        type_name: row.try_get("type_name")?,
        schema_version: row.try_get::<i64, _>("schema_version")? as u32,
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        stream_version: row.try_get::<i64, _>("version")? as u64,
        metadata: Metadata {
            correlation_id: uuid("correlation_id")?,
            causation_id: uuid("causation_id")?,
            actor: row.try_get("actor")?,
        },
        timestamp: from_micros(row.try_get("occurred_at")?),
        payload: serde_json::from_str(&payload).map_err(|error| StoreError::Contract(error.to_string()))?,
    })
}
