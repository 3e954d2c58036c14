//! Embedded mode's way to hear of a rebuild: its change notifications are
//! in-process, and the rebuild runs in another process. The switch writes
//! the rows it changed into `view_announcements` (in its own transaction,
//! so they exist exactly when the rows do); the running process polls that
//! table, deletes what it read and announces it, so its gateway drops what
//! it cached and its subscriptions re-read. Nobody else writes the table:
//! an empty poll is one cheap read a second.

use std::sync::Arc;
use std::time::Duration;

use schema::ports::{Notifier, ViewChange};
use sqlx::{AnyConnection, AnyPool};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::projection::{Insert, Inserts, Value};

/// How often the running process looks for announcements.
pub const POLL: Duration = Duration::from_secs(1);

/// The switch's rows, into the live file attached as `live`.
const ANNOUNCEMENT: Insert = Insert {
    table: "live.view_announcements",
    columns: &["view", "id", "version", "scope"],
    then: "ON CONFLICT (view, id) DO UPDATE SET version = excluded.version, scope = excluded.scope",
};

/// Writes `changes` for the running process to announce, in the caller's transaction.
pub(super) async fn write(conn: &mut AnyConnection, changes: &[ViewChange]) -> Result<(), sqlx::Error> {
    let mut inserts = Inserts::default();
    for change in changes {
        inserts.push(
            &ANNOUNCEMENT,
            vec![
                Value::Text(change.view.clone()),
                Value::Text(change.id.clone()),
                Value::Int(change.version as i64),
                Value::Text(change.scope.clone().unwrap_or_default()),
            ],
        );
    }
    inserts.write(conn).await?;
    Ok(())
}

/// Announces what a rebuild left in `views`, every [`POLL`], until `shutdown`.
pub async fn relay(views: AnyPool, notifier: Arc<dyn Notifier>, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(POLL);
    while !shutdown.is_cancelled() {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutdown.cancelled() => return,
        }
        match take(&views).await {
            Ok(changes) => {
                for change in changes {
                    if let Err(error) = notifier.notify(&change).await {
                        warn!(%error, view = %change.view, id = %change.id, "change notification failed");
                    }
                }
            }
            Err(error) => warn!(%error, "cannot read the view announcements"),
        }
    }
}

/// Reads and deletes every announcement, in one transaction when there are any.
async fn take(views: &AnyPool) -> Result<Vec<ViewChange>, sqlx::Error> {
    const SELECT: &str = "SELECT view, id, version, scope FROM view_announcements";
    let any: Option<String> =
        sqlx::query_scalar("SELECT id FROM view_announcements LIMIT 1").fetch_optional(views).await?;
    if any.is_none() {
        return Ok(Vec::new());
    }
    let mut tx = views.begin_with("BEGIN IMMEDIATE").await?;
    let rows: Vec<(String, String, i64, String)> = sqlx::query_as(SELECT).fetch_all(&mut *tx).await?;
    sqlx::query("DELETE FROM view_announcements").execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(rows
        .into_iter()
        .map(|(view, id, version, scope)| ViewChange {
            view,
            id,
            version: version.max(0) as u64,
            scope: (!scope.is_empty()).then_some(scope),
            traceparent: None,
        })
        .collect())
}
