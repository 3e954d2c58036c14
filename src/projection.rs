//! `conveyor projection status`: each projection's position (streams and
//! events applied) against the event store, and how far behind it is (events
//! not yet applied, age of the oldest). Read-only; safe against a live
//! system. Server mode reads one database (events and views live together);
//! embedded mode reads the data directory's two SQLite files.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use sqlx::AnyPool;

use crate::config::{ProjectionArgs, ProjectionCommand, StatusArgs};
use crate::server::redact;

/// One projection's position and lag.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectionStatus {
    pub projection: &'static str,
    /// Streams with a checkpoint.
    pub streams: i64,
    /// Events applied (the checkpoints' versions added up).
    pub applied: i64,
    /// Events of the projection's aggregate types in the store.
    pub in_store: i64,
    /// Events in the store past the projection's checkpoints.
    pub lag_events: i64,
    /// Age of the oldest of those, in seconds (0 when none).
    pub lag_seconds: f64,
}

pub async fn run(args: &ProjectionArgs, data_dir: &Path) -> anyhow::Result<()> {
    match &args.command {
        ProjectionCommand::Status(status) => {
            let pool = open(status, data_dir).await?;
            let statuses = status_of(&pool).await.context("cannot read the projections' positions")?;
            pool.close().await;
            print!("{}", table(&statuses));
            Ok(())
        }
    }
}

/// The server's database, or the embedded data directory's views with its
/// event store attached (one connection, so the attachment holds).
async fn open(args: &StatusArgs, data_dir: &Path) -> anyhow::Result<AnyPool> {
    if let Some(url) = &args.database {
        return schema::sql::connect_reader(url, 1)
            .await
            .with_context(|| format!("cannot reach the database at {}", redact(url)));
    }
    let (views, events) = (data_dir.join("views.sqlite"), data_dir.join("events.sqlite"));
    anyhow::ensure!(
        views.exists() && events.exists(),
        "no --database given and no embedded data in {} (--data-dir)",
        data_dir.display()
    );
    let pool = schema::sql::connect(&format!("sqlite://{}?mode=ro", views.display()), 1)
        .await
        .with_context(|| format!("cannot open {}", views.display()))?;
    let attach = format!("ATTACH DATABASE '{}' AS store", events.display().to_string().replace('\'', "''"));
    sqlx::query(sqlx::AssertSqlSafe(attach))
        .execute(&pool)
        .await
        .with_context(|| format!("cannot open {}", events.display()))?;
    Ok(pool)
}

/// Every projection's status, read from the checkpoints and the events.
pub async fn status_of(pool: &AnyPool) -> Result<Vec<ProjectionStatus>, sqlx::Error> {
    let now = schema::sql::to_micros(chrono::Utc::now());
    let mut statuses = Vec::new();
    for projection in read_side::projections() {
        let name = projection.name();
        let types = projection.aggregate_types();
        let (streams, applied): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), CAST(COALESCE(SUM(version), 0) AS BIGINT) FROM projection_checkpoints \
             WHERE projection = $1",
        )
        .bind(name)
        .fetch_one(pool)
        .await?;
        let placeholders =
            |from: usize| (from..from + types.len()).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ");
        let in_store_sql = format!("SELECT COUNT(*) FROM events WHERE aggregate_type IN ({})", placeholders(1));
        let mut in_store = sqlx::query_scalar(sqlx::AssertSqlSafe(in_store_sql));
        for aggregate in types {
            in_store = in_store.bind(*aggregate);
        }
        let in_store: i64 = in_store.fetch_one(pool).await?;
        let behind_sql = format!(
            "SELECT COUNT(*), MIN(e.occurred_at) FROM events e \
             LEFT JOIN projection_checkpoints c ON c.projection = $1 AND c.stream_id = e.stream_id \
             WHERE e.aggregate_type IN ({}) AND e.version > COALESCE(c.version, 0)",
            placeholders(2)
        );
        let mut behind = sqlx::query_as(sqlx::AssertSqlSafe(behind_sql)).bind(name);
        for aggregate in types {
            behind = behind.bind(*aggregate);
        }
        let (lag_events, oldest): (i64, Option<i64>) = behind.fetch_one(pool).await?;
        let lag_seconds = oldest.map_or(0.0, |at| (now - at).max(0) as f64 / 1e6);
        statuses.push(ProjectionStatus { projection: name, streams, applied, in_store, lag_events, lag_seconds });
    }
    Ok(statuses)
}

/// A fixed-width table, one line per projection.
pub fn table(statuses: &[ProjectionStatus]) -> String {
    let mut text = format!(
        "{:<12} {:>10} {:>12} {:>12} {:>12} {:>12}\n",
        "projection", "streams", "applied", "in store", "lag events", "lag seconds"
    );
    for status in statuses {
        let _ = writeln!(
            text,
            "{:<12} {:>10} {:>12} {:>12} {:>12} {:>12.1}",
            status.projection, status.streams, status.applied, status.in_store, status.lag_events, status.lag_seconds
        );
    }
    text
}
