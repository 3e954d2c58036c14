//! The `projection_checkpoints` rows: the last version of each stream a
//! projection applied. A batch reads the checkpoints of all its streams in
//! one statement and writes back the ones it advanced in one multi-row
//! upsert, so its cost in checkpoint statements is two, however many events
//! it holds. `INSERT … ON CONFLICT … DO UPDATE SET version = excluded.version`
//! runs on CockroachDB, PostgreSQL and SQLite (3.24 and later).

use std::collections::{BTreeMap, HashMap};

use sqlx::{AnyConnection, AnyPool, AssertSqlSafe};

/// The checkpoints of `streams` (absent: nothing applied yet), in one statement.
pub(super) async fn read(
    conn: &mut AnyConnection,
    projection: &str,
    streams: &[String],
) -> Result<HashMap<String, u64>, sqlx::Error> {
    if streams.is_empty() {
        return Ok(HashMap::new());
    }
    // Only placeholders are spliced in; the stream ids are bound.
    let placeholders = (2..streams.len() + 2).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ");
    let sql = format!(
        "SELECT stream_id, version FROM projection_checkpoints WHERE projection = $1 AND stream_id IN ({placeholders})"
    );
    let mut query = sqlx::query_as::<_, (String, i64)>(AssertSqlSafe(sql)).bind(projection.to_string());
    for stream in streams {
        query = query.bind(stream.clone());
    }
    let rows = query.fetch_all(&mut *conn).await?;
    Ok(rows.into_iter().map(|(stream, version)| (stream, version as u64)).collect())
}

/// Writes the advanced checkpoints in one statement. Sorted by stream, so
/// two transactions that touch some of the same rows lock them in one order.
pub(super) async fn write(
    conn: &mut AnyConnection,
    projection: &str,
    advanced: &BTreeMap<String, u64>,
) -> Result<(), sqlx::Error> {
    if advanced.is_empty() {
        return Ok(());
    }
    let rows = (0..advanced.len()).map(|row| format!("($1, ${}, ${})", 2 * row + 2, 2 * row + 3)).collect::<Vec<_>>();
    let sql = format!(
        "INSERT INTO projection_checkpoints (projection, stream_id, version) VALUES {} \
         ON CONFLICT (projection, stream_id) DO UPDATE SET version = excluded.version",
        rows.join(", ")
    );
    let mut query = sqlx::query(AssertSqlSafe(sql)).bind(projection.to_string());
    for (stream, version) in advanced {
        query = query.bind(stream.clone()).bind(*version as i64);
    }
    query.execute(&mut *conn).await?;
    Ok(())
}

/// Every checkpoint of `projection`: what a catch-up compares the event store with.
pub(super) async fn all(conn: &mut AnyConnection, projection: &str) -> Result<HashMap<String, u64>, sqlx::Error> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT stream_id, version FROM projection_checkpoints WHERE projection = $1")
            .bind(projection)
            .fetch_all(conn)
            .await?;
    Ok(rows.into_iter().map(|(stream, version)| (stream, version as u64)).collect())
}

/// The stream id of the row that marks a projection as built: no real
/// stream is named so (real ones are `<type>-<id>`).
const BUILT: &str = "";

/// Whether `projection` was ever caught up with the whole event store.
pub(super) async fn is_built(pool: &AnyPool, projection: &str) -> Result<bool, sqlx::Error> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT version FROM projection_checkpoints WHERE projection = $1 AND stream_id = $2")
            .bind(projection)
            .bind(BUILT)
            .fetch_optional(pool)
            .await?;
    Ok(found.is_some())
}

/// Records that `projection` has caught up with the whole event store once.
pub(super) async fn mark_built(pool: &AnyPool, projection: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO projection_checkpoints (projection, stream_id, version) VALUES ($1, $2, 0) \
         ON CONFLICT (projection, stream_id) DO NOTHING",
    )
    .bind(projection)
    .bind(BUILT)
    .execute(pool)
    .await?;
    Ok(())
}
