//! The [`Backlog`] port over the saga table: how many orders are accepted
//! but not yet decided, for the gateway's admission (invariant 9: the edge
//! says "busy" before it accepts work it cannot finish).
//!
//! Every order saga keeps a row in `sagas` with `active = 1` from the moment
//! it sees `OrderPlaced` until the order is confirmed or rejected (the only
//! saga kind is the order's). The count uses `sagas_due (active,
//! next_attempt_at)`, an index-only range on SQLite and PostgreSQL, and runs
//! in the same database as the write side in both modes. The gateway reads it
//! from one background task a few times a second, never per request: a
//! failed or lost read is simply the next tick's to redo, so it needs no
//! retry loop of its own (invariant 7's 40001 retry is the next tick).

use async_trait::async_trait;
use schema::ports::{Backlog, PortError};
use sqlx::AnyPool;

/// Counts the active sagas in the write side's database.
#[derive(Clone)]
pub struct SqlBacklog {
    pool: AnyPool,
}

impl SqlBacklog {
    /// Reads through `pool`, which must reach the event store's database
    /// (where `sagas` lives); it may be a pool of its own, so the count never
    /// queues behind the writers.
    pub fn new(pool: AnyPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl Backlog for SqlBacklog {
    async fn undecided_orders(&self) -> Result<u64, PortError> {
        // A read can be cancelled with 40001 too (SERIALIZABLE): retried.
        let count: i64 = schema::sql::retry("count undecided orders", || {
            sqlx::query_scalar("SELECT COUNT(*) FROM sagas WHERE active = 1").fetch_one(&self.pool)
        })
        .await
        .map_err(PortError::backend)?;
        Ok(u64::try_from(count).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_active_sagas_count_as_undecided_orders() {
        let pool = schema::sql::connect("sqlite::memory:", 1).await.expect("in-memory SQLite");
        crate::migrate(&pool).await.expect("migrations");
        let backlog = SqlBacklog::new(pool.clone());
        assert_eq!(backlog.undecided_orders().await.expect("count"), 0);
        for (id, active) in [("a", 1), ("b", 1), ("c", 0)] {
            sqlx::query(
                "INSERT INTO sagas (saga_id, kind, state, correlation_id, causation_id, version, active, \
                 next_attempt_at, updated_at) VALUES ($1, 'order-fulfillment', '{}', 'x', 'x', 1, $2, 0, 0)",
            )
            .bind(id)
            .bind(active)
            .execute(&pool)
            .await
            .expect("insert saga");
        }
        assert_eq!(backlog.undecided_orders().await.expect("count"), 2, "the finished saga is not counted");
    }
}
