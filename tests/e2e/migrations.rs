//! Migrations: many copies starting together on one fresh database all come
//! up (the lease row serializes them), `conveyor migrate` applies everything
//! and exits, and a database made by an earlier release upgrades with its
//! data.

use std::time::Duration;

use sqlx::AnyPool;
use sqlx::migrate::Migrator;
use tokio::process::Command;

use crate::helpers::TestDatabase;

/// Migrating a fresh database takes PostgreSQL a second or two; several
/// copies queue behind each other's lease.
const MIGRATION_WAIT: Duration = Duration::from_secs(120);

/// The versions of the PostgreSQL / CockroachDB files each side has today.
fn current_versions(side: &str) -> Vec<i64> {
    let migrator = match side {
        "write" => sqlx::migrate!("write-side/migrations/postgres"),
        _ => sqlx::migrate!("read-side/migrations/postgres"),
    };
    migrator.iter().map(|migration| migration.version).collect()
}

/// Runs `conveyor migrate` against `url`; returns its stderr.
async fn conveyor_migrate(url: &str) -> String {
    let run = Command::new(env!("CARGO_BIN_EXE_conveyor"))
        .args(["migrate", "--database", url])
        .env("RUST_LOG", "info")
        .env_remove("DATABASE_URL")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(MIGRATION_WAIT, run)
        .await
        .unwrap_or_else(|_| panic!("`conveyor migrate` did not finish within {MIGRATION_WAIT:?}"))
        .expect("conveyor migrate runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "`conveyor migrate` failed: {stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("migrated "), "it says what it did");
    stderr
}

/// The successful versions in a side's history table.
async fn applied(pool: &AnyPool, table: &str) -> Vec<i64> {
    let sql = format!("SELECT version FROM {table} WHERE success ORDER BY version");
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await.expect("history table")
}

async fn count(pool: &AnyPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(pool).await.expect(sql)
}

#[tokio::test]
async fn copies_starting_together_on_a_fresh_database_all_migrate_one_at_a_time() {
    let database = TestDatabase::create().await;
    // Four `conveyor migrate` processes and twelve pools of this process, at once.
    let processes: Vec<_> = (0..4).map(|_| conveyor_migrate(&database.url)).collect();
    let pools = (0..12).map(|_| async {
        let pool = schema::sql::connect(&database.url, 2).await.expect("test database");
        let both = async {
            write_side::migrate(&pool).await?;
            read_side::migrate(&pool).await
        };
        tokio::time::timeout(MIGRATION_WAIT, both).await.expect("in-process migration finishes").expect("migrates");
        pool.close().await;
    });
    let (logs, _) = tokio::join!(futures::future::join_all(processes), futures::future::join_all(pools));

    // Nobody collided with anybody: the lease let one migrate at a time.
    for stderr in logs {
        assert!(!stderr.contains("retrying"), "a migration collided with another: {stderr}");
    }
    let pool = schema::sql::connect(&database.url, 1).await.expect("test database");
    assert_eq!(applied(&pool, "_write_side_migrations").await, current_versions("write"), "each file once");
    assert_eq!(applied(&pool, "_read_side_migrations").await, current_versions("read"), "each file once");
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM _conveyor_migration_lease").await, 0, "every lease released");
    for table in ["events", "command_outcomes", "outbox", "sagas", "orders", "order_timeline", "products"] {
        assert_eq!(count(&pool, &format!("SELECT COUNT(*) FROM {table}")).await, 0, "{table} exists");
    }
    pool.close().await;
}

#[tokio::test]
async fn a_lease_left_by_a_dead_process_is_taken_over() {
    let database = TestDatabase::create().await;
    let pool = schema::sql::connect(&database.url, 1).await.expect("test database");
    sqlx::query(
        "CREATE TABLE _conveyor_migration_lease (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at BIGINT NOT NULL)",
    )
    .execute(&pool)
    .await
    .expect("lease table");
    // A process took both leases an hour ago and died while migrating.
    let expired = schema::sql::to_micros(chrono::Utc::now()) - 3_600_000_000;
    for name in ["_write_side_migrations", "_read_side_migrations"] {
        sqlx::query("INSERT INTO _conveyor_migration_lease (name, holder, expires_at) VALUES ($1, 'dead', $2)")
            .bind(name)
            .bind(expired)
            .execute(&pool)
            .await
            .expect("stale lease");
    }
    conveyor_migrate(&database.url).await;
    assert_eq!(applied(&pool, "_write_side_migrations").await, current_versions("write"));
    assert_eq!(applied(&pool, "_read_side_migrations").await, current_versions("read"));
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM _conveyor_migration_lease").await, 0, "released");
    pool.close().await;
}

/// The migrations an earlier release applied: the combined files, now
/// SQLite's (unchanged, so SQLite databases keep their checksums), which
/// were PostgreSQL's too.
fn earlier_release(path_migrator: Migrator, files: usize) -> Migrator {
    let mut migrator = Migrator::with_migrations(path_migrator.migrations[..files].to_vec());
    migrator.set_locking(false);
    migrator
}

/// Upgrades a PostgreSQL database that an earlier release migrated up to
/// `write_files` / `read_files` of its combined files, with data in it.
async fn upgrade_from(write_files: usize, read_files: usize) {
    let database = TestDatabase::create().await;
    let pool = schema::sql::connect(&database.url, 1).await.expect("test database");
    let mut write = earlier_release(sqlx::migrate!("write-side/migrations/sqlite"), write_files);
    write.dangerous_set_table_name("_write_side_migrations");
    write.run(&pool).await.expect("the earlier release's write-side files");
    let mut read = earlier_release(sqlx::migrate!("read-side/migrations/sqlite"), read_files);
    read.dangerous_set_table_name("_read_side_migrations");
    read.run(&pool).await.expect("the earlier release's read-side files");

    // Data of that release: an event, its outbox row, a placed order.
    sqlx::query(
        "INSERT INTO events (event_id, stream_id, aggregate_type, aggregate_id, version, type_name, schema_version, \
         payload, correlation_id, causation_id, actor, occurred_at) \
         VALUES ('e-1', 'order-o-1', 'order', 'o-1', 1, 'OrderPlaced', 1, '{}', 'c-1', 'c-1', 'test', 1)",
    )
    .execute(&pool)
    .await
    .expect("an event");
    sqlx::query("INSERT INTO outbox (event_id, stream_id, version, created_at) VALUES ('e-1', 'order-o-1', 1, 1)")
        .execute(&pool)
        .await
        .expect("its outbox row");
    let status = if read_files == 1 { "PLACED" } else { "PENDING" };
    sqlx::query(
        "INSERT INTO orders (order_id, customer_id, status, items, total_cents, version, placed_at, updated_at) \
         VALUES ('o-1', 'c-1', $1, '[]', 500, 1, 1, 1)",
    )
    .bind(status)
    .execute(&pool)
    .await
    .expect("an order");

    conveyor_migrate(&database.url).await;
    // Twice: a rerun (another process, the next deploy) changes nothing.
    conveyor_migrate(&database.url).await;

    assert_eq!(count(&pool, "SELECT COUNT(*) FROM events WHERE event_id = 'e-1'").await, 1, "the event is kept");
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM outbox").await, 1, "the outbox row is kept");
    let (status, payment, stock, total): (String, String, String, i64) =
        sqlx::query_as("SELECT status, payment_status, stock_status, total_cents FROM orders WHERE order_id = 'o-1'")
            .fetch_one(&pool)
            .await
            .expect("the order is kept, with the columns added since");
    assert_eq!((status.as_str(), payment.as_str(), stock.as_str(), total), ("PENDING", "NONE", "NONE", 500));
    sqlx::query(
        "INSERT INTO sagas (saga_id, kind, state, correlation_id, causation_id, version, active, next_attempt_at, \
         updated_at, cancel_requested, ship_requested) VALUES ('s-1', 'order', '{}', 'c-1', 'c-1', 1, 1, 0, 0, 1, 0)",
    )
    .execute(&pool)
    .await
    .expect("sagas has the columns added since");
    for table in ["order_timeline", "customers", "customer_orders", "products", "projection_checkpoints"] {
        assert_eq!(count(&pool, &format!("SELECT COUNT(*) FROM {table}")).await, 0, "{table} exists");
    }
    // The earlier release's history stays; every current file is recorded once.
    let write_history = applied(&pool, "_write_side_migrations").await;
    assert_eq!(write_history.len(), write_files + current_versions("write").len());
    assert!(current_versions("write").iter().all(|version| write_history.contains(version)));
    let read_history = applied(&pool, "_read_side_migrations").await;
    assert_eq!(read_history.len(), read_files + current_versions("read").len());
    pool.close().await;
}

#[tokio::test]
async fn a_database_from_the_first_migration_upgrades_with_its_data() {
    upgrade_from(1, 1).await;
}

#[tokio::test]
async fn a_database_the_previous_release_migrated_upgrades_with_its_data() {
    upgrade_from(4, 2).await;
}

/// The failure the combined file caused on CockroachDB (which does not make
/// its DDL and the bookkeeping row atomic): some columns added, no record
/// of the file, and every rerun failing with 42701. The split files finish
/// the job.
#[tokio::test]
async fn a_database_left_half_migrated_by_the_combined_file_recovers() {
    let database = TestDatabase::create().await;
    let pool = schema::sql::connect(&database.url, 1).await.expect("test database");
    let mut read = earlier_release(sqlx::migrate!("read-side/migrations/sqlite"), 1);
    read.dangerous_set_table_name("_read_side_migrations");
    read.run(&pool).await.expect("the first read-side file");
    for half in [
        "ALTER TABLE orders ADD COLUMN payment_status TEXT NOT NULL DEFAULT 'NONE'",
        "ALTER TABLE orders ADD COLUMN stock_status TEXT NOT NULL DEFAULT 'NONE'",
    ] {
        sqlx::query(half).execute(&pool).await.expect("half of the combined file");
    }
    // The earlier release's files again: the first is applied, the combined second runs.
    let mut combined = earlier_release(sqlx::migrate!("read-side/migrations/sqlite"), 2);
    combined.dangerous_set_table_name("_read_side_migrations");
    let rerun = combined.run(&pool).await.expect_err("the combined file cannot run again");
    assert!(format!("{rerun:?}").contains("42701"), "duplicate column: {rerun:?}");

    conveyor_migrate(&database.url).await;
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM orders WHERE rejection_code IS NULL").await, 0, "the rest is added");
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM products").await, 0, "products exists");
    let history = applied(&pool, "_read_side_migrations").await;
    assert!(current_versions("read").iter().all(|version| history.contains(version)), "{history:?}");
    pool.close().await;
}
