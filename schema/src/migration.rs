//! Schema migrations that are safe on CockroachDB, PostgreSQL and SQLite,
//! with any number of processes starting at once.
//!
//! * **Per-backend files.** Each side keeps `migrations/postgres` (also
//!   CockroachDB's) and `migrations/sqlite`. The PostgreSQL files hold one
//!   statement each, DDL run outside a transaction (`-- no-transaction`) and
//!   idempotent (`IF NOT EXISTS`), because CockroachDB does not make a
//!   transaction that mixes DDL with DML (sqlx's bookkeeping row) atomic: a
//!   failure part-way must leave something that simply runs again. SQLite's
//!   DDL is transactional, and it lacks `ADD COLUMN IF NOT EXISTS`, so its
//!   files keep one transaction per file.
//! * **A lease row, not an advisory lock** (CockroachDB's are no-ops): one
//!   process at a time migrates a side; the others wait for the lease and
//!   then find nothing left to do. A lease that its holder stopped renewing
//!   (the process died) expires and is taken over.
//! * **Upgrades.** Databases made before the PostgreSQL files were split
//!   carry the versions of the old combined files in their history; those
//!   are ignored (`ignore_missing`), and the split files, being idempotent,
//!   run over the existing tables and change nothing they already have.

use std::time::{Duration, Instant};

use sqlx::AnyPool;
use sqlx::migrate::{MigrateError, Migrator};

use crate::sql::backoff;

/// The table of leases, one row per migrations table being migrated.
const LEASE_TABLE: &str = "_conveyor_migration_lease";

/// How long a lease lasts unless its holder renews it.
const LEASE_TTL: Duration = Duration::from_secs(30);

/// How often the holder renews its lease while it migrates.
const LEASE_RENEWAL: Duration = Duration::from_secs(10);

/// How long a process waits for another's migration before it gives up.
pub const LEASE_WAIT: Duration = Duration::from_secs(600);

/// A side's migrations: one set per SQL dialect.
pub struct Migrations {
    /// PostgreSQL and CockroachDB: one idempotent statement per file.
    pub postgres: Migrator,
    /// SQLite (embedded mode): one transaction per file.
    pub sqlite: Migrator,
    /// The side's history table, e.g. `_write_side_migrations`.
    pub table: &'static str,
}

/// Applies a side's migrations under its lease. Returns once the schema is
/// current, whether this process or another applied it.
pub async fn migrate(pool: &AnyPool, migrations: Migrations) -> Result<(), MigrateError> {
    let backend = pool.acquire().await?.backend_name().to_owned();
    let Migrations { postgres, sqlite, table } = migrations;
    let mut migrator = if backend == "SQLite" { sqlite } else { postgres };
    migrator.set_locking(false);
    migrator.set_ignore_missing(true);
    migrator.dangerous_set_table_name(table);

    let lease = Lease::acquire(pool, table).await?;
    let renewal = tokio::spawn(renew(pool.clone(), table, lease.holder.clone()));
    let result = run_retrying(&migrator, pool, table).await;
    renewal.abort();
    lease.release(pool).await;
    result
}

/// Runs the migrator, retrying what a lost lease (another migrator at work
/// at once) or a dropped connection can make fail: every file runs again
/// safely.
async fn run_retrying(migrator: &Migrator, pool: &AnyPool, table: &str) -> Result<(), MigrateError> {
    let mut attempt = 0;
    loop {
        match migrator.run(pool).await {
            Ok(()) => return Ok(()),
            Err(error) if attempt < 8 && is_transient(&error) => {
                attempt += 1;
                tracing::warn!(%error, attempt, table, "migration failed; retrying");
                tokio::time::sleep(backoff(attempt + 3)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Errors a rerun may fix: the database's, not the files' (a changed
/// checksum or a dirty version stays an error).
fn is_transient(error: &MigrateError) -> bool {
    matches!(error, MigrateError::Execute(_) | MigrateError::ExecuteMigration(..))
}

/// This process's hold on a side's migrations.
struct Lease {
    name: &'static str,
    holder: String,
}

impl Lease {
    /// Waits until this process holds the lease named `name`, for at most
    /// [`LEASE_WAIT`].
    async fn acquire(pool: &AnyPool, name: &'static str) -> Result<Self, MigrateError> {
        create_lease_table(pool).await?;
        let holder = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4());
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            match try_take(pool, name, &holder).await {
                Ok(true) => {
                    tracing::debug!(name, holder, "migration lease taken");
                    return Ok(Self { name, holder });
                }
                Ok(false) => tracing::debug!(name, "another process is migrating; waiting for its lease"),
                // Two takers at once: one of them fails to serialize.
                Err(error) if crate::sql::is_retryable(&error) => {
                    tracing::debug!(%error, name, "migration lease contended")
                }
                Err(error) => return Err(error.into()),
            }
            if started.elapsed() > LEASE_WAIT {
                return Err(MigrateError::Execute(sqlx::Error::Protocol(format!(
                    "waited {LEASE_WAIT:?} for the migration lease {name:?}; another process holds it"
                ))));
            }
            attempt = (attempt + 1).min(10);
            // 1 ms doubling to ~1 s, jittered: most waits end within a
            // migration's time.
            tokio::time::sleep(backoff(attempt).min(Duration::from_secs(1))).await;
        }
    }

    /// Gives the lease up, so the next process need not wait for it to expire.
    async fn release(self, pool: &AnyPool) {
        let sql = format!("DELETE FROM {LEASE_TABLE} WHERE name = $1 AND holder = $2");
        let released = crate::sql::retry("release migration lease", || {
            sqlx::query(sqlx::AssertSqlSafe(sql.clone())).bind(self.name).bind(self.holder.clone()).execute(pool)
        })
        .await;
        if let Err(error) = released {
            tracing::warn!(%error, name = self.name, "could not release the migration lease; it expires by itself");
        }
    }
}

/// Creates the lease table. Several processes creating it at once can
/// collide in PostgreSQL's catalog (23505 on `pg_type`, 42P07, or 42710
/// "type … already exists": `IF NOT EXISTS` checks before it inserts) or
/// fail to serialize on CockroachDB; the statement is idempotent, so it is
/// simply run again.
async fn create_lease_table(pool: &AnyPool) -> Result<(), MigrateError> {
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS {LEASE_TABLE} (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at BIGINT NOT NULL)"
    );
    let mut attempt = 0;
    loop {
        match sqlx::query(sqlx::AssertSqlSafe(sql.clone())).execute(pool).await {
            Ok(_) => return Ok(()),
            Err(error) if attempt < 20 && (crate::sql::is_retryable(&error) || is_catalog_collision(&error)) => {
                attempt += 1;
                tokio::time::sleep(backoff(attempt.min(8))).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

fn is_catalog_collision(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("23505") | Some("42P07") | Some("42710")))
}

/// Takes the lease if nobody holds it, its holder let it expire, or this
/// holder has it already. One statement, so two takers cannot both win.
async fn try_take(pool: &AnyPool, name: &str, holder: &str) -> Result<bool, sqlx::Error> {
    let now = now_micros();
    let sql = format!(
        "INSERT INTO {LEASE_TABLE} (name, holder, expires_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
         WHERE {LEASE_TABLE}.expires_at < $4 OR {LEASE_TABLE}.holder = excluded.holder"
    );
    let taken = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(name.to_owned())
        .bind(holder.to_owned())
        .bind(now + micros(LEASE_TTL))
        .bind(now)
        .execute(pool)
        .await?;
    Ok(taken.rows_affected() == 1)
}

/// Extends the lease every [`LEASE_RENEWAL`] until aborted.
async fn renew(pool: AnyPool, name: &'static str, holder: String) {
    let sql = format!("UPDATE {LEASE_TABLE} SET expires_at = $1 WHERE name = $2 AND holder = $3");
    loop {
        tokio::time::sleep(LEASE_RENEWAL).await;
        let renewed = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(now_micros() + micros(LEASE_TTL))
            .bind(name)
            .bind(holder.clone())
            .execute(&pool)
            .await;
        match renewed {
            Ok(done) if done.rows_affected() == 1 => {}
            // Migrating goes on: every file is idempotent, so another
            // process migrating at the same time costs retries, not data.
            Ok(_) => tracing::warn!(name, "the migration lease was taken over while migrating"),
            Err(error) => tracing::warn!(%error, name, "could not renew the migration lease"),
        }
    }
}

fn now_micros() -> i64 {
    crate::sql::to_micros(chrono::Utc::now())
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}
