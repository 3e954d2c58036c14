//! The SQL rules every side follows, so that code written once runs on
//! CockroachDB, PostgreSQL and (embedded) SQLite:
//!
//! * one connection type, `sqlx::Any`, and SQL both dialects run: `$n`
//!   placeholders, TEXT ids, BIGINT microsecond timestamps, no sequences, no
//!   LISTEN/NOTIFY, no advisory locks;
//! * PostgreSQL sessions run SERIALIZABLE, as CockroachDB always does, so
//!   serialization failures (SQLSTATE 40001) happen in tests too;
//! * every transaction is retried on 40001 (and SQLite's BUSY) with
//!   jittered exponential backoff, a bounded number of times.

use std::future::Future;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};

/// Opens a pool. PostgreSQL sessions are set to SERIALIZABLE; SQLite runs in
/// WAL mode with full fsync, since an ACCEPTED command must survive a crash.
pub async fn connect(url: &str, max_connections: u32) -> Result<AnyPool, sqlx::Error> {
    open(url, max_connections, "serializable").await
}

/// Opens a pool for single-statement reads only (the gateway's view
/// queries and backlog count). Its PostgreSQL sessions run READ COMMITTED:
/// one statement sees one snapshot anyway, and outside serializable
/// isolation it takes no predicate locks, so a reader of a hot view cannot
/// make the projector (or the event store's lanes) that writes it fail with
/// 40001. CockroachDB runs it as READ COMMITTED where that is enabled and
/// as SERIALIZABLE where not; both are right for a lone read.
pub async fn connect_reader(url: &str, max_connections: u32) -> Result<AnyPool, sqlx::Error> {
    open(url, max_connections, "read committed").await
}

async fn open(url: &str, max_connections: u32, isolation: &'static str) -> Result<AnyPool, sqlx::Error> {
    install_default_drivers();
    AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        // No ping per acquire: a dead connection fails its statement, which
        // is retried like any other transient error (`is_retryable`).
        .test_before_acquire(false)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                match conn.backend_name() {
                    "PostgreSQL" => {
                        let set = format!("SET default_transaction_isolation = '{isolation}'");
                        conn.execute(sqlx::AssertSqlSafe(set)).await?;
                    }
                    "SQLite" => {
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = FULL").await?;
                        conn.execute("PRAGMA busy_timeout = 5000").await?;
                    }
                    _ => {}
                }
                Ok(())
            })
        })
        .connect(url)
        .await
}

/// Whether a failed transaction may succeed when run again from the start.
///
/// Besides conflicts this covers a lost connection and an ambiguous commit
/// (CockroachDB's 40003: the commit may or may not have happened). Running
/// such a transaction again is safe here because every write path checks
/// what a committed first attempt would have left: an append finds its
/// command's outcome or a taken stream version, a projector finds its
/// checkpoint, a saga its version.
pub fn is_retryable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db.code().as_deref().is_some_and(is_retryable_code),
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

/// SQLSTATEs (and SQLite result codes) worth a retry.
fn is_retryable_code(code: &str) -> bool {
    matches!(
        code,
        // PostgreSQL / CockroachDB: serialization failure, deadlock,
        // ambiguous commit (statement completion unknown).
        "40001" | "40P01" | "40003"
        // The server is shutting down, crashed or not yet accepting
        // connections (a node of a cluster restarting).
        | "57P01" | "57P02" | "57P03"
        // SQLite: BUSY, LOCKED, BUSY_SNAPSHOT.
        | "5" | "6" | "517"
    ) || code.starts_with("08") // connection exceptions
}

/// Attempts before a retryable error is given up on and returned.
pub const MAX_ATTEMPTS: u32 = 40;

/// Runs `transaction` until it succeeds, fails with a non-retryable error, or
/// has been tried [`MAX_ATTEMPTS`] times. The closure must start its own
/// transaction, so each attempt sees fresh data.
pub async fn retry<T, E, F, Fut>(what: &'static str, transaction: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    T: 'static,
    Fut: Future<Output = Result<T, E>>,
    E: RetryableError + std::fmt::Display + 'static,
{
    tryhard::retry_fn(transaction)
        .retries(MAX_ATTEMPTS - 1)
        .custom_backoff(|attempt: u32, error: &E| {
            if error.is_retryable() {
                tracing::debug!(what, attempt, %error, "retrying transaction");
                tryhard::RetryPolicy::Delay(backoff(attempt))
            } else {
                tryhard::RetryPolicy::Break
            }
        })
        .await
}

/// Errors that can tell whether a retry may help.
pub trait RetryableError {
    fn is_retryable(&self) -> bool;
}

impl RetryableError for sqlx::Error {
    fn is_retryable(&self) -> bool {
        is_retryable(self)
    }
}

/// 1 ms doubling to 256 ms, each with up to 100% jitter so that colliding
/// transactions spread out instead of colliding again.
pub fn backoff(attempt: u32) -> Duration {
    let base = 1u64 << attempt.min(8);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or(0);
    Duration::from_micros(base * 1000 + u64::from(nanos) % (base * 1000))
}

/// Bytes of values per multi-row INSERT, at most (a single row may exceed
/// it). Two reasons to stay small: a PostgreSQL message over 16 KiB goes out
/// as two TLS records in two writes, and without `TCP_NODELAY` (sqlx sets
/// none) the reply then waits for a delayed ACK, ~40 ms, measured in
/// docs/benchmarks.md; and SQLite binds parameters by name, in time that
/// grows with their number squared. Several small statements in one
/// transaction cost one commit all the same.
pub const BYTES_PER_STATEMENT: usize = 12 * 1024;

/// Splits `items` into runs whose estimated size stays within
/// [`BYTES_PER_STATEMENT`].
pub fn chunks_by_size<T>(items: &[T], size: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (index, item) in items.iter().enumerate() {
        let item_bytes = size(item);
        if index > start && bytes + item_bytes > BYTES_PER_STATEMENT {
            chunks.push(&items[start..index]);
            (start, bytes) = (index, 0);
        }
        bytes += item_bytes;
    }
    if start < items.len() {
        chunks.push(&items[start..]);
    }
    chunks
}

/// Microseconds since the Unix epoch: timestamps are stored as BIGINT so the
/// same SQL sorts and compares them on every backend.
pub fn to_micros(at: chrono::DateTime<chrono::Utc>) -> i64 {
    at.timestamp_micros()
}

pub fn from_micros(micros: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_stay_within_their_size_and_keep_every_row_in_order() {
        let sizes = [5_000, 5_000, 5_000, 20_000, 100, 100];
        let chunks = chunks_by_size(&sizes, |size| *size);
        assert_eq!(chunks, vec![&sizes[0..2], &sizes[2..3], &sizes[3..4], &sizes[4..6]]);
        assert!(chunks_by_size(&[] as &[usize], |size| *size).is_empty());
    }

    #[test]
    fn conflicts_ambiguous_commits_and_lost_connections_are_retried_and_mistakes_are_not() {
        for code in ["40001", "40P01", "40003", "57P01", "57P02", "57P03", "08006", "08003", "08000", "5", "517"] {
            assert!(is_retryable_code(code), "{code} is retried");
        }
        for code in ["23505", "42P01", "42701", "22P02", "57014"] {
            assert!(!is_retryable_code(code), "{code} is not retried");
        }
        assert!(is_retryable(&sqlx::Error::PoolTimedOut));
        assert!(!is_retryable(&sqlx::Error::RowNotFound));
    }
}

#[cfg(test)]
mod isolation_tests {
    use super::*;

    fn database_url() -> String {
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
    }

    async fn isolation(pool: &AnyPool) -> String {
        sqlx::query_scalar("SELECT current_setting('transaction_isolation')").fetch_one(pool).await.expect("show")
    }

    #[tokio::test]
    async fn writers_run_serializable_and_readers_read_committed() {
        let writer = connect(&database_url(), 1).await.expect("PostgreSQL is reachable at DATABASE_URL");
        let reader = connect_reader(&database_url(), 1).await.expect("PostgreSQL is reachable at DATABASE_URL");
        assert_eq!(isolation(&writer).await, "serializable");
        assert_eq!(isolation(&reader).await, "read committed");
        writer.close().await;
        reader.close().await;
    }

    #[tokio::test]
    async fn a_session_the_server_terminates_is_retried() {
        let pool = connect(&database_url(), 1).await.expect("PostgreSQL is reachable at DATABASE_URL");
        let error = sqlx::query("SELECT pg_terminate_backend(pg_backend_pid())")
            .execute(&pool)
            .await
            .expect_err("the server ends its own session");
        assert!(is_retryable(&error), "57P01 (admin shutdown) or a lost connection is retried: {error:?}");
        pool.close().await;
    }
}
