//! The view database as the repositories see it. Every read they run goes
//! through [`ViewStore::fetch_all`], which counts it, so tests can prove that
//! nested GraphQL fields are batched (a constant number of statements per
//! query), and retries it when the database asks: at SERIALIZABLE, PostgreSQL
//! and CockroachDB may cancel even a read-only SELECT with a serialization
//! failure (40001) while projectors write.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use schema::ports::{PortError, Readiness};
use sqlx::any::AnyRow;
use sqlx::{AnyPool, AssertSqlSafe};

#[derive(Clone)]
pub struct ViewStore {
    pool: AnyPool,
    statements: Arc<AtomicU64>,
}

impl ViewStore {
    pub fn new(pool: AnyPool) -> Self {
        Self { pool, statements: Arc::default() }
    }

    /// Runs one SELECT with `binds` bound in order: one statement, run again
    /// (after a short backoff) while it fails with a retryable error.
    pub(crate) async fn fetch_all(&self, sql: String, binds: Vec<Bind>) -> Result<Vec<AnyRow>, sqlx::Error> {
        self.statements.fetch_add(1, Ordering::Relaxed);
        schema::sql::retry("read a view", || {
            let mut query = sqlx::query(AssertSqlSafe(sql.clone()));
            for bind in &binds {
                query = match bind {
                    Bind::Text(text) => query.bind(text.clone()),
                    Bind::Int(number) => query.bind(*number),
                };
            }
            let pool = self.pool.clone();
            async move { query.fetch_all(&pool).await }
        })
        .await
    }

    /// [`Self::fetch_all`] for at most one row.
    pub(crate) async fn fetch_optional(&self, sql: String, binds: Vec<Bind>) -> Result<Option<AnyRow>, sqlx::Error> {
        Ok(self.fetch_all(sql, binds).await?.into_iter().next())
    }

    /// Statements run through this store (and its clones) so far.
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// Runs `select`, whose `{keys}` becomes one placeholder per key (for
    /// `IN ({keys})`), with the keys bound: one statement for a whole batch.
    pub(crate) async fn fetch_in(&self, select: &str, keys: &[String]) -> Result<Vec<AnyRow>, sqlx::Error> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders = (1..=keys.len()).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ");
        // Only placeholders are spliced in; the keys are bound.
        let binds = keys.iter().cloned().map(Bind::Text).collect();
        self.fetch_all(select.replace("{keys}", &placeholders), binds).await
    }
}

/// A value bound to a view query's placeholder.
#[derive(Debug, Clone)]
pub(crate) enum Bind {
    Text(String),
    Int(i64),
}

#[async_trait]
impl Readiness for ViewStore {
    async fn check(&self) -> Result<(), PortError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|error| PortError::Unavailable(format!("database ({error})")))
    }
}
