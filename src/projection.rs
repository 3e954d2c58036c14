//! `conveyor projection status`: each projection's position (streams and
//! events applied) against the event store, and how far behind it is (events
//! not yet applied, age of the oldest). Read-only; safe against a live
//! system. Server mode reads one database (events and views live together);
//! embedded mode reads the data directory's two SQLite files.
//!
//! `conveyor projection rebuild NAME`: [`read_side::rebuild`] on the same
//! database or data directory, with the event store read from there too.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use sqlx::AnyPool;

use crate::config::{Common, ProjectionArgs, ProjectionCommand, RebuildArgs, StatusArgs};
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

pub async fn run(args: &ProjectionArgs, common: &Common) -> anyhow::Result<()> {
    match &args.command {
        ProjectionCommand::Status(status) => {
            let pool = open(status, &common.data_dir).await?;
            let statuses = status_of(&pool).await.context("cannot read the projections' positions")?;
            pool.close().await;
            print!("{}", table(&statuses));
            Ok(())
        }
        ProjectionCommand::Rebuild(rebuild) => {
            let report = rebuild_view(rebuild, common).await?;
            println!(
                "rebuilt {}: {} events replayed; the switch wrote {} rows and removed {} ({} attempt{}); \
                 {} changes announced",
                rebuild.name,
                report.replayed,
                report.changed,
                report.removed,
                report.attempts,
                if report.attempts == 1 { "" } else { "s" },
                report.announced
            );
            Ok(())
        }
    }
}

/// Rebuilds `args.name`'s view, reading the event store beside it.
async fn rebuild_view(args: &RebuildArgs, common: &Common) -> anyhow::Result<read_side::rebuild::Report> {
    let Some(projection) = read_side::projections().into_iter().find(|projection| projection.name() == args.name)
    else {
        let names: Vec<&str> = read_side::projections().iter().map(|projection| projection.name()).collect();
        anyhow::bail!("no projection named `{}` (there are {})", args.name, names.join(", "));
    };
    let (target, store_url) = match &args.database {
        Some(url) => (read_side::rebuild::Target::Server { database: url.clone() }, url.clone()),
        None => {
            let (views, events) = (common.data_dir.join("views.sqlite"), common.data_dir.join("events.sqlite"));
            anyhow::ensure!(
                views.exists() && events.exists(),
                "no --database given and no embedded data in {} (--data-dir)",
                common.data_dir.display()
            );
            (read_side::rebuild::Target::Embedded { views }, format!("sqlite://{}?mode=ro", events.display()))
        }
    };
    // Single-statement reads of an append-only table: no predicate locks
    // that could make the write side's appends fail while the store is read.
    let store = schema::sql::connect_reader(&store_url, 2)
        .await
        .with_context(|| format!("cannot reach the event store at {}", redact(&store_url)))?;
    let log: std::sync::Arc<dyn schema::ports::EventLog> =
        std::sync::Arc::new(write_side::SqlEventStore::new(store.clone()));
    let client = match &args.nats {
        Some(url) => Some(
            schema::nats::connect(url, "conveyor-rebuild", &args.nats_auth.auth()?)
                .await
                .with_context(|| format!("cannot reach NATS at {}", redact(url)))?,
        ),
        None => None,
    };
    let ns = schema::Namespace::new(&common.namespace)?;
    let notifier = client.clone().map(|client| {
        std::sync::Arc::new(read_side::nats::NatsNotifier::new(client, ns))
            as std::sync::Arc<dyn schema::ports::Notifier>
    });
    let report = read_side::rebuild::rebuild(&target, projection, log, notifier)
        .await
        .with_context(|| format!("cannot rebuild {}", args.name))?;
    store.close().await;
    if let Some(client) = client {
        // Published is not yet sent: the announcements leave before the process does.
        client.flush().await.context("cannot send the change announcements")?;
    }
    Ok(report)
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
