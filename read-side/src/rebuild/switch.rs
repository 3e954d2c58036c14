//! The switch: one transaction that brings the new copy to the store's
//! head and writes into the live tables the rows that differ (module doc
//! of [`super`]). Only portable SQL: `EXCEPT`, `NOT EXISTS`, and
//! `INSERT … SELECT … ON CONFLICT DO UPDATE` (SQLite needs the `WHERE true`
//! there to tell the upsert from a join).

use schema::ports::ViewChange;
use sqlx::{AnyConnection, AssertSqlSafe, Connection};

use super::{RebuildError, Shadow, quote};
use crate::projection::ViewTable;
use crate::{Projection, Projector};

/// What one switch did.
pub(super) struct Switched {
    pub replayed: u64,
    pub changed: u64,
    pub removed: u64,
    /// The rows to announce, changed or removed.
    pub changes: Vec<ViewChange>,
}

pub(super) async fn run(
    shadow: &Shadow,
    projector: &Projector,
    projection: &dyn Projection,
) -> Result<Switched, RebuildError> {
    let mut conn = shadow.pool.acquire().await?;
    if let Some(live) = shadow.attach() {
        // Left attached by an attempt that failed part-way, perhaps.
        let _ = sqlx::query("DETACH DATABASE live").execute(&mut *conn).await;
        let attach = format!("ATTACH DATABASE '{}' AS live", live.display().to_string().replace('\'', "''"));
        sqlx::query(AssertSqlSafe(attach)).execute(&mut *conn).await?;
    }
    let result = transaction(&mut conn, shadow, projector, projection).await;
    if shadow.attach().is_some() {
        let _ = sqlx::query("DETACH DATABASE live").execute(&mut *conn).await;
    }
    result
}

async fn transaction(
    conn: &mut AnyConnection,
    shadow: &Shadow,
    projector: &Projector,
    projection: &dyn Projection,
) -> Result<Switched, RebuildError> {
    // SQLite: the write lock on both files at once, so the live projector
    // waits for the switch instead of colliding with it.
    let mut tx =
        if shadow.attach().is_some() { conn.begin_with("BEGIN IMMEDIATE").await? } else { conn.begin().await? };
    let result = switch_in(&mut tx, shadow, projector, projection).await;
    match result {
        Ok(switched) => {
            tx.commit().await?;
            Ok(switched)
        }
        Err(error) => {
            let _ = tx.rollback().await;
            Err(error)
        }
    }
}

async fn switch_in(
    conn: &mut AnyConnection,
    shadow: &Shadow,
    projector: &Projector,
    projection: &dyn Projection,
) -> Result<Switched, RebuildError> {
    let (live, copy, name) = (&shadow.live, &shadow.copy, projection.name());
    if shadow.attach().is_none() {
        // PostgreSQL: each statement sees what is committed when it starts,
        // and a row a live projector holds is waited for, then written
        // over. At SERIALIZABLE, this transaction, which reads whole
        // tables, would be the one aborted by every projector commit that
        // overlaps it, and under load it would never get through. What
        // READ COMMITTED lets through is caught by the check at the end.
        // CockroachDB runs it SERIALIZABLE where READ COMMITTED is not
        // enabled (before 24.1, by default); then a collision is retried.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED").execute(&mut *conn).await?;
    }
    let replayed = projector.catch_up_in(conn).await?;
    let mut switched = Switched { replayed, changed: 0, removed: 0, changes: Vec::new() };
    for table in projection.tables() {
        let columns = columns(conn, shadow, table.name).await?;
        copy_table(conn, shadow, name, table, &columns, &mut switched).await?;
    }
    // The new copy's checkpoints become the live ones; one the live copy
    // has advanced further meanwhile is kept (and caught below).
    let checkpoint = "projection, stream_id, version";
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {live}projection_checkpoints ({checkpoint}) SELECT {checkpoint} FROM \
         (SELECT {checkpoint} FROM {copy}projection_checkpoints WHERE projection = $1 \
          EXCEPT SELECT {checkpoint} FROM {live}projection_checkpoints WHERE projection = $1) AS changed \
         WHERE true ON CONFLICT (projection, stream_id) DO UPDATE SET version = excluded.version \
         WHERE projection_checkpoints.version < excluded.version"
    )))
    .bind(name)
    .execute(&mut *conn)
    .await?;
    // Last, the check that makes the switch safe: the live copy has
    // applied nothing the new one has not. A live projector that committed
    // an event the new copy lacks (rows this transaction then wrote over
    // with older ones, or a row it deleted) shows here, and the switch is
    // rolled back and tried again. One that commits after this waits for
    // the rows and checkpoints written here and then runs again on them,
    // or touches none of them and stays as it is.
    let ahead: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM {live}projection_checkpoints l WHERE l.projection = $1 AND NOT EXISTS \
         (SELECT 1 FROM {copy}projection_checkpoints c WHERE c.projection = l.projection \
          AND c.stream_id = l.stream_id AND c.version >= l.version)"
    )))
    .bind(name)
    .fetch_one(&mut *conn)
    .await?;
    if ahead > 0 {
        return Err(RebuildError::LiveAhead(ahead));
    }
    if shadow.attach().is_some() {
        // Embedded: the running process announces them (its notifier is in-process).
        super::announcements::write(conn, &switched.changes).await?;
    }
    Ok(switched)
}

/// Writes into the live `table` the new copy's rows that differ and
/// deletes the ones it does not have; notes what to announce.
async fn copy_table(
    conn: &mut AnyConnection,
    shadow: &Shadow,
    view: &str,
    table: &ViewTable,
    columns: &[String],
    switched: &mut Switched,
) -> Result<(), RebuildError> {
    let (live, copy, name) = (&shadow.live, &shadow.copy, table.name);
    let list = columns.iter().map(|column| quote(column)).collect::<Vec<_>>().join(", ");
    let same_key =
        table.key.iter().map(|key| format!("c.{k} = l.{k}", k = quote(key))).collect::<Vec<_>>().join(" AND ");
    let missing = format!("NOT EXISTS (SELECT 1 FROM {copy}{name} c WHERE {same_key})");
    let differing = format!("(SELECT {list} FROM {copy}{name} EXCEPT SELECT {list} FROM {live}{name}) AS changed");
    if let Some(announce) = &table.announce {
        let scope = announce.scope.map_or_else(|| "CAST(NULL AS TEXT)".to_string(), quote);
        let removed: Vec<(String, Option<String>)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {id}, {scope} FROM {live}{name} AS l WHERE {missing}",
            id = quote(announce.id),
            scope = announce.scope.map_or_else(|| "CAST(NULL AS TEXT)".to_string(), |s| format!("l.{}", quote(s)))
        )))
        .fetch_all(&mut *conn)
        .await?;
        let changed: Vec<(String, i64, Option<String>)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {id}, {version}, {scope} FROM {differing}",
            id = quote(announce.id),
            version = quote(announce.version),
        )))
        .fetch_all(&mut *conn)
        .await?;
        let change = |id, version, scope| ViewChange { view: view.to_string(), id, version, scope, traceparent: None };
        switched.changes.extend(removed.into_iter().map(|(id, scope)| change(id, 0, scope)));
        switched
            .changes
            .extend(changed.into_iter().map(|(id, version, scope)| change(id, version.max(0) as u64, scope)));
    }
    let removed = sqlx::query(AssertSqlSafe(format!("DELETE FROM {live}{name} AS l WHERE {missing}")))
        .execute(&mut *conn)
        .await?
        .rows_affected();
    let updates: Vec<String> = columns
        .iter()
        .filter(|column| !table.key.contains(&column.as_str()))
        .map(|column| format!("{c} = excluded.{c}", c = quote(column)))
        .collect();
    let on_conflict =
        if updates.is_empty() { "DO NOTHING".to_string() } else { format!("DO UPDATE SET {}", updates.join(", ")) };
    let keys = table.key.iter().map(|key| quote(key)).collect::<Vec<_>>().join(", ");
    let changed = sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {live}{name} ({list}) SELECT {list} FROM {differing} WHERE true ON CONFLICT ({keys}) {on_conflict}"
    )))
    .execute(&mut *conn)
    .await?
    .rows_affected();
    switched.removed += removed;
    switched.changed += changed;
    Ok(())
}

/// The new copy's columns of `table`, checked against the live one's: the
/// live tables must be migrated by this build (`conveyor migrate`).
async fn columns(conn: &mut AnyConnection, shadow: &Shadow, table: &str) -> Result<Vec<String>, RebuildError> {
    let (live, copy) = match shadow.schemas() {
        Some((live, copy)) => {
            let sql = "SELECT CAST(column_name AS TEXT) FROM information_schema.columns \
                       WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position";
            let of = async |schema: &str, conn: &mut AnyConnection| {
                sqlx::query_scalar::<_, String>(sql).bind(schema.to_string()).bind(table).fetch_all(conn).await
            };
            (of(live, conn).await?, of(copy, conn).await?)
        }
        None => {
            let sql = "SELECT name FROM pragma_table_info($1, $2) ORDER BY cid";
            let of = async |schema: &str, conn: &mut AnyConnection| {
                sqlx::query_scalar::<_, String>(sql).bind(table).bind(schema.to_string()).fetch_all(conn).await
            };
            (of("live", conn).await?, of("main", conn).await?)
        }
    };
    let (mut sorted_live, mut sorted_copy) = (live.clone(), copy.clone());
    sorted_live.sort();
    sorted_copy.sort();
    if copy.is_empty() || sorted_live != sorted_copy {
        return Err(RebuildError::Layout(format!(
            "the live table {table} has columns {live:?}, this build's migrations make {copy:?}: \
             run `conveyor migrate` with this build first"
        )));
    }
    Ok(copy)
}
