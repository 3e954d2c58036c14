//! `conveyor migrate`: applies every side's migrations to a database and
//! exits, for deploy pipelines that migrate before they roll processes out.
//! Processes still migrate at start; the lease row (see
//! [`schema::migration`]) lets this command, and any number of processes,
//! start together.

use anyhow::Context;

use crate::config::MigrateArgs;
use crate::server::redact;

/// Migrates the write side's tables, then the read side's.
pub async fn run(args: &MigrateArgs) -> anyhow::Result<()> {
    let pool = schema::sql::connect(&args.database, 2)
        .await
        .with_context(|| format!("cannot reach the database at {}", redact(&args.database)))?;
    write_side::migrate(&pool).await.context("event store migration failed")?;
    read_side::migrate(&pool).await.context("view migration failed")?;
    pool.close().await;
    println!("migrated {}", redact(&args.database));
    Ok(())
}
