//! Blue-green rebuilds of one projection's view, while the system runs.
//!
//! 1. **Beside the live copy**, a new copy of the projection's tables and
//!    checkpoints is made by the read side's own migrations: a schema of
//!    its own on PostgreSQL and CockroachDB (`conveyor_rebuild_<view>`,
//!    reached through `search_path`), a file of its own beside
//!    `views.sqlite` in embedded mode. The projection's unchanged code
//!    replays the event store into it, as often as it takes to come close
//!    to the store's head.
//! 2. **The switch** is one transaction: it applies what the store gained
//!    since, writes into the live tables only the rows that differ (and
//!    deletes the rows the new copy lacks), takes over the new copy's
//!    checkpoints, and checks last that the live copy has applied nothing
//!    the new one has not (so no row steps back); if it has, the switch is
//!    rolled back and tried again after a further catch-up. No DDL touches
//!    the live tables: readers keep reading (PostgreSQL's MVCC shows them
//!    the old rows until the commit, then the new ones; SQLite's WAL
//!    likewise), and it is an ordinary transaction, which CockroachDB makes
//!    atomic too. On PostgreSQL it runs READ COMMITTED (see
//!    [`switch`]): it waits for a row a live projector holds instead of
//!    being aborted by every projector commit it overlaps; the projector,
//!    SERIALIZABLE, finds the switch's rows and checkpoints changed under
//!    it and runs again on them. Embedded, it holds SQLite's write lock.
//! 3. **Afterwards** the rows the switch changed or removed are announced
//!    as view changes (when a notifier is given): gateways drop what they
//!    cached of them, and subscriptions re-read them. Embedded, the switch
//!    leaves them in the live file for the running process to announce
//!    ([`announcements`]). The new copy is dropped.

pub mod announcements;
mod switch;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use schema::ports::{EventLog, Notifier, ViewChange};
use schema::sql;
use sqlx::{AnyPool, AssertSqlSafe};
use tracing::{debug, info, warn};

use crate::embedded::BroadcastNotifier;
use crate::{Projection, ProjectionError, Projector};

/// Where the live view is.
#[derive(Debug, Clone)]
pub enum Target {
    /// PostgreSQL or CockroachDB: the tables in the URL's current schema.
    Server { database: String },
    /// Embedded mode: the data directory's `views.sqlite`.
    Embedded { views: PathBuf },
}

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot create the new copy's tables: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    /// The live copy has applied an event the new one has not: a live
    /// projector committed between the store read and the switch.
    #[error("the live view is ahead of the new copy on {0} streams")]
    LiveAhead(i64),
    #[error("{0}")]
    Layout(String),
    #[error("the switch failed {attempts} times, the last: {last}")]
    Switch { attempts: u32, last: Box<RebuildError> },
}

impl RebuildError {
    /// Whether the switch may succeed when tried again (after a catch-up).
    fn worth_retrying(&self) -> bool {
        match self {
            Self::Database(error) => sql::is_retryable(error),
            Self::Projection(error) => {
                sql::RetryableError::is_retryable(error)
                    || matches!(
                        error,
                        ProjectionError::Behind { .. }
                            | ProjectionError::NotYet { .. }
                            | ProjectionError::Gap { .. }
                            | ProjectionError::Log(_)
                    )
            }
            Self::LiveAhead(_) => true,
            _ => false,
        }
    }
}

/// What a rebuild did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Events replayed into the new copy (the switch's own included).
    pub replayed: u64,
    /// Live rows the switch wrote (new or different) and removed.
    pub changed: u64,
    pub removed: u64,
    /// Switch transactions tried (1 unless a live projector collided with it).
    pub attempts: u32,
    /// View changes announced afterwards.
    pub announced: usize,
}

/// Catch-up rounds before the switch at most, while each still finds more
/// than [`CLOSE_ENOUGH`] events: the switch applies the rest itself.
const CATCH_UP_ROUNDS: usize = 10;
const CLOSE_ENOUGH: u64 = 256;
/// Switch transactions tried before the rebuild gives up.
const SWITCH_ATTEMPTS: u32 = 20;

/// Rebuilds `projection`'s view at `target` from `log` and switches it in;
/// announces the changed rows through `notifier` when given.
pub async fn rebuild(
    target: &Target,
    projection: Arc<dyn Projection>,
    log: Arc<dyn EventLog>,
    notifier: Option<Arc<dyn Notifier>>,
) -> Result<Report, RebuildError> {
    let name = projection.name();
    let shadow = Shadow::create(target, name).await?;
    let result = build_and_switch(&shadow, projection, log).await;
    shadow.drop_copy().await;
    let (mut report, changes) = result?;
    if let Some(notifier) = notifier {
        for change in &changes {
            match notifier.notify(change).await {
                Ok(()) => report.announced += 1,
                Err(error) => warn!(%error, view = %change.view, id = %change.id, "change notification failed"),
            }
        }
    }
    info!(view = name, ?report, "rebuilt");
    Ok(report)
}

async fn build_and_switch(
    shadow: &Shadow,
    projection: Arc<dyn Projection>,
    log: Arc<dyn EventLog>,
) -> Result<(Report, Vec<ViewChange>), RebuildError> {
    // Nobody watches the new copy: its changes go nowhere.
    let projector = Projector::new(shadow.pool.clone(), projection.clone(), log, Arc::new(BroadcastNotifier::new(1)));
    let mut report = Report { replayed: projector.catch_up().await?, ..Report::default() };
    for _ in 0..CATCH_UP_ROUNDS {
        let more = projector.catch_up().await?;
        report.replayed += more;
        if more <= CLOSE_ENOUGH {
            break;
        }
    }
    loop {
        report.attempts += 1;
        match switch::run(shadow, &projector, projection.as_ref()).await {
            Ok(switched) => {
                report.replayed += switched.replayed;
                report.changed = switched.changed;
                report.removed = switched.removed;
                return Ok((report, switched.changes));
            }
            Err(error) if error.worth_retrying() && report.attempts < SWITCH_ATTEMPTS => {
                debug!(%error, attempt = report.attempts, "the switch collided; catching up and trying again");
                tokio::time::sleep(sql::backoff(report.attempts)).await;
                report.replayed += projector.catch_up().await?;
            }
            Err(error) => return Err(RebuildError::Switch { attempts: report.attempts, last: Box::new(error) }),
        }
    }
}

/// The new copy: its pool (where the projection's unqualified table names
/// reach the copy's tables) and how the switch names both copies.
pub(crate) struct Shadow {
    pool: AnyPool,
    /// Prefixes for the live and the new copy's table names in the switch.
    live: String,
    copy: String,
    /// Server: the schema's name. Embedded: the live file, attached as
    /// `live` for the switch.
    place: Place,
}

enum Place {
    Schema { live_pool: AnyPool, live_schema: String, copy_schema: String },
    File { live: PathBuf, copy: PathBuf },
}

impl Shadow {
    async fn create(target: &Target, name: &str) -> Result<Self, RebuildError> {
        match target {
            Target::Server { database } => {
                let live_pool = sql::connect(database, 2).await?;
                let live_schema: String =
                    sqlx::query_scalar("SELECT CAST(current_schema() AS TEXT)").fetch_one(&live_pool).await?;
                let copy_schema = format!("conveyor_rebuild_{name}");
                // A copy left by a rebuild that stopped part-way goes first.
                for statement in
                    [format!("DROP SCHEMA IF EXISTS {copy_schema} CASCADE"), format!("CREATE SCHEMA {copy_schema}")]
                {
                    sqlx::query(AssertSqlSafe(statement)).execute(&live_pool).await?;
                }
                let separator = if database.contains('?') { '&' } else { '?' };
                let url = format!("{database}{separator}options=-c%20search_path%3D{copy_schema}");
                let pool = sql::connect(&url, 2).await?;
                crate::migrate(&pool).await?;
                Ok(Self {
                    pool,
                    live: format!("{}.", quote(&live_schema)),
                    copy: format!("{copy_schema}."),
                    place: Place::Schema { live_pool, live_schema, copy_schema },
                })
            }
            Target::Embedded { views } => {
                if !views.exists() {
                    return Err(RebuildError::Layout(format!("no views at {}", views.display())));
                }
                let copy = views.with_file_name(format!("views.rebuild-{name}.sqlite"));
                remove_sqlite(&copy);
                let pool = sql::connect(&format!("sqlite://{}?mode=rwc", copy.display()), 1).await?;
                crate::migrate(&pool).await?;
                Ok(Self {
                    pool,
                    live: "live.".into(),
                    copy: "main.".into(),
                    place: Place::File { live: views.clone(), copy },
                })
            }
        }
    }

    /// The file to attach as `live` on the switch's connection (embedded).
    fn attach(&self) -> Option<&Path> {
        match &self.place {
            Place::File { live, .. } => Some(live),
            Place::Schema { .. } => None,
        }
    }

    /// The schemas the two copies' columns are read from (server).
    fn schemas(&self) -> Option<(&str, &str)> {
        match &self.place {
            Place::Schema { live_schema, copy_schema, .. } => Some((live_schema, copy_schema)),
            Place::File { .. } => None,
        }
    }

    async fn drop_copy(&self) {
        self.pool.close().await;
        match &self.place {
            Place::Schema { live_pool, copy_schema, .. } => {
                let drop = format!("DROP SCHEMA IF EXISTS {copy_schema} CASCADE");
                if let Err(error) = sqlx::query(AssertSqlSafe(drop)).execute(live_pool).await {
                    warn!(%error, copy_schema, "cannot drop the new copy's schema; the next rebuild drops it");
                }
                live_pool.close().await;
            }
            Place::File { copy, .. } => remove_sqlite(copy),
        }
    }
}

/// A double-quoted identifier.
fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// Removes a SQLite database file and its WAL files, if there.
fn remove_sqlite(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
}
