//! The event store's SQL: row codecs, and the statements a batch writes,
//! each a single multi-row statement whatever the batch's size, so a
//! group commit costs the same round trips for one command as for a hundred.

use std::collections::HashMap;

use chrono::Utc;
use schema::ports::TimeCursor;
use schema::sql::{self, from_micros, to_micros};
use schema::{CommandOutcome, EventEnvelope, Metadata};
use sqlx::any::AnyRow;
// Dynamic SQL here is only placeholder lists: every value is bound.
use sqlx::{AnyConnection, AssertSqlSafe, Row};
use uuid::Uuid;

use super::StoreError;

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
            "occurred_at, ",
            $p,
            "traceparent"
        )
    };
}
pub(super) use event_columns;

/// Ids per `IN (…)` list.
const ROWS_PER_STATEMENT: usize = 256;

/// About what one event row sends: its serialized payload, ids, names and numbers.
fn event_bytes((event, payload): &(&EventEnvelope, String)) -> usize {
    payload.len() + event.aggregate_id.len() * 2 + event.type_name.len() + event.metadata.actor.len() + 6 * 40
}

/// `($1, $2, …), ($n+1, …)`: placeholders for `rows` rows of `columns` values.
fn placeholders(rows: usize, columns: usize) -> String {
    let mut sql = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&(row * columns + column + 1).to_string());
        }
        sql.push(')');
    }
    sql
}

/// `$1, $2, …, $n`, for an `IN (…)` list.
fn list(count: usize) -> String {
    (1..=count).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ")
}

/// The stored outcomes of those commands that were decided, by command id.
pub(super) async fn stored_outcomes(
    conn: &mut AnyConnection,
    command_ids: &[Uuid],
) -> Result<HashMap<Uuid, CommandOutcome>, StoreError> {
    let mut found = HashMap::new();
    for chunk in command_ids.chunks(ROWS_PER_STATEMENT) {
        let sql = format!("SELECT outcome FROM command_outcomes WHERE command_id IN ({})", list(chunk.len()));
        let mut query = sqlx::query_scalar::<_, String>(AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(id.to_string());
        }
        for json in query.fetch_all(&mut *conn).await? {
            let outcome: CommandOutcome =
                serde_json::from_str(&json).map_err(|error| StoreError::Contract(error.to_string()))?;
            found.insert(outcome.command_id, outcome);
        }
    }
    Ok(found)
}

/// The events with these ids (primary-key lookups, one statement per
/// [`ROWS_PER_STATEMENT`] ids); missing ids are left out.
pub(super) async fn load_events(conn: &mut AnyConnection, ids: &[Uuid]) -> Result<Vec<EventEnvelope>, StoreError> {
    let mut found = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let sql =
            format!(concat!("SELECT ", event_columns!(""), " FROM events WHERE event_id IN ({})"), list(chunk.len()));
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(id.to_string());
        }
        for row in query.fetch_all(&mut *conn).await? {
            found.push(event_from_row(&row)?);
        }
    }
    Ok(found)
}

/// Whole streams, by stream id, each in version order.
pub(super) async fn load_streams(
    conn: &mut AnyConnection,
    streams: &[&str],
) -> Result<HashMap<String, Vec<EventEnvelope>>, StoreError> {
    let mut loaded: HashMap<String, Vec<EventEnvelope>> = HashMap::new();
    for chunk in streams.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            concat!(
                "SELECT stream_id, ",
                event_columns!(""),
                " FROM events WHERE stream_id IN ({}) ORDER BY stream_id, version"
            ),
            list(chunk.len())
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for stream in chunk {
            query = query.bind(*stream);
        }
        for row in query.fetch_all(&mut *conn).await? {
            let stream: String = row.try_get("stream_id")?;
            loaded.entry(stream).or_default().push(event_from_row(&row)?);
        }
    }
    Ok(loaded)
}

/// One stream's events with `from <= version <= to`.
pub(super) async fn load_stream(
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

/// A page of the events of `aggregate_types` after `after` in time order,
/// stamped at `until` or earlier (the `(occurred_at, event_id)` index).
pub(super) async fn load_by_time(
    conn: &mut AnyConnection,
    aggregate_types: &[&str],
    after: &TimeCursor,
    until: i64,
    limit: u32,
) -> Result<Vec<EventEnvelope>, StoreError> {
    if aggregate_types.is_empty() {
        return Ok(Vec::new());
    }
    let types = (4..4 + aggregate_types.len()).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ");
    let sql = format!(
        concat!(
            "SELECT ",
            event_columns!(""),
            " FROM events WHERE (occurred_at, event_id) > ($1, $2) AND occurred_at <= $3 \
             AND aggregate_type IN ({}) ORDER BY occurred_at, event_id LIMIT ${}"
        ),
        types,
        4 + aggregate_types.len()
    );
    let mut query =
        sqlx::query(AssertSqlSafe(sql)).bind(after.occurred_at).bind(after.event_id.to_string()).bind(until);
    for aggregate_type in aggregate_types {
        query = query.bind(*aggregate_type);
    }
    let rows = query.bind(i64::from(limit)).fetch_all(&mut *conn).await?;
    rows.iter().map(event_from_row).collect()
}

/// Appends events and their outbox rows: two statements per
/// [`ROWS_PER_STATEMENT`] events. A taken (stream, version) fails the
/// statement with a unique violation: another writer got there first.
pub(super) async fn insert_events(conn: &mut AnyConnection, events: &[EventEnvelope]) -> Result<(), sqlx::Error> {
    let created_at = to_micros(Utc::now());
    // Each payload serialized once: to size the statements, then to bind it.
    let rows: Vec<(&EventEnvelope, String)> = events.iter().map(|event| (event, event.payload.to_string())).collect();
    for chunk in sql::chunks_by_size(&rows, event_bytes) {
        let sql = format!(
            concat!("INSERT INTO events (stream_id, ", event_columns!(""), ") VALUES {}"),
            placeholders(chunk.len(), 13)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for (event, payload) in chunk {
            query = query
                .bind(event.stream_id())
                .bind(event.id.to_string())
                .bind(event.aggregate_type.clone())
                .bind(event.aggregate_id.clone())
                .bind(event.stream_version as i64)
                .bind(event.type_name.clone())
                .bind(i64::from(event.schema_version))
                .bind(payload.as_str())
                .bind(event.metadata.correlation_id.to_string())
                .bind(event.metadata.causation_id.to_string())
                .bind(event.metadata.actor.clone())
                .bind(to_micros(event.timestamp))
                .bind(event.metadata.traceparent.clone());
        }
        query.execute(&mut *conn).await?;
        let sql = format!(
            "INSERT INTO outbox (event_id, stream_id, version, created_at) VALUES {}",
            placeholders(chunk.len(), 4)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for (event, _) in chunk {
            query = query
                .bind(event.id.to_string())
                .bind(event.stream_id())
                .bind(event.stream_version as i64)
                .bind(created_at);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Records outcomes; a command id already recorded fails the statement
/// with a unique violation.
pub(super) async fn insert_outcomes(conn: &mut AnyConnection, outcomes: &[&CommandOutcome]) -> Result<(), sqlx::Error> {
    let rows = outcomes
        .iter()
        .map(|outcome| {
            let json = serde_json::to_string(outcome).map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
            Ok((outcome.command_id.to_string(), json, to_micros(outcome.decided_at)))
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    for chunk in sql::chunks_by_size(&rows, |(_, json, _)| json.len() + 60) {
        let sql = format!(
            "INSERT INTO command_outcomes (command_id, outcome, decided_at) VALUES {}",
            placeholders(chunk.len(), 3)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for (id, json, decided_at) in chunk {
            query = query.bind(id.as_str()).bind(json.as_str()).bind(*decided_at);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Forgets the outbox rows of published events, in one statement per chunk.
pub(super) async fn delete_outbox(conn: &mut AnyConnection, event_ids: &[Uuid]) -> Result<(), sqlx::Error> {
    for chunk in event_ids.chunks(ROWS_PER_STATEMENT) {
        let sql = format!("DELETE FROM outbox WHERE event_id IN ({})", list(chunk.len()));
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(id.to_string());
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

pub(super) fn event_from_row(row: &AnyRow) -> Result<EventEnvelope, StoreError> {
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
            traceparent: row.try_get("traceparent")?,
        },
        timestamp: from_micros(row.try_get("occurred_at")?),
        payload: serde_json::from_str(&payload).map_err(|error| StoreError::Contract(error.to_string()))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_rows_then_columns() {
        assert_eq!(placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(list(3), "$1, $2, $3");
    }
}
