//! The view database as the repositories see it. Every statement they run
//! goes through [`ViewStore::counted`], so tests can prove that nested
//! GraphQL fields are batched (a constant number of statements per query).

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

    /// The pool, counting one statement.
    pub(crate) fn counted(&self) -> &AnyPool {
        self.statements.fetch_add(1, Ordering::Relaxed);
        &self.pool
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
        let mut query = sqlx::query(AssertSqlSafe(select.replace("{keys}", &placeholders)));
        for key in keys {
            query = query.bind(key.clone());
        }
        query.fetch_all(self.counted()).await
    }
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
