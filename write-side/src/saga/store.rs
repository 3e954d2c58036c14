//! Where sagas live: one row each in `sagas`, changed only if nobody changed
//! it since it was read (a version check), every statement retried on
//! serialization failures. The intake (in the order's transactions) inserts
//! rows and raises their cancel / ship flags.

use chrono::Utc;
use schema::sql;
use sqlx::Row;
use tracing::warn;
use uuid::Uuid;

use super::writer::Save;
use super::{Causes, Fulfillment, Phase, SagaError, SagaRunner};

/// A saga as stored.
#[derive(Clone)]
pub(super) struct Stored {
    pub saga: Fulfillment,
    pub causes: Causes,
    pub version: i64,
    /// Whether the row is marked as having work to do.
    pub active: bool,
    pub cancel_requested: bool,
    pub ship_requested: bool,
}

impl Stored {
    /// Whether the saga has work left (steps, or a cancellation or shipment to hear).
    pub fn should_be_active(&self) -> bool {
        matches!(self.saga.phase, Phase::Running | Phase::Unwinding)
    }
}

impl SagaRunner {
    /// Lets the sweeper take a saga again after the retry delay, instead of
    /// after its lease.
    pub(super) async fn retry_soon(&self, order_id: &str) {
        let at = Utc::now().timestamp_micros() + self.settings.retry_delay.as_micros() as i64;
        let result = sql::retry("reschedule saga", || async {
            sqlx::query("UPDATE sagas SET next_attempt_at = $2 WHERE saga_id = $1 AND active = 1")
                .bind(order_id)
                .bind(at)
                .execute(self.store.pool())
                .await
        })
        .await;
        if let Err(error) = result {
            warn!(%error, order_id, "could not reschedule saga; its lease will expire");
        }
    }

    /// Resumes due sagas that this process is not driving already: steps
    /// that got no answer, and sagas whose driver died.
    pub(super) async fn sweep(&self) -> Result<(), SagaError> {
        let due: Vec<String> = sql::retry("sweep sagas", || async {
            sqlx::query_scalar(
                "SELECT saga_id FROM sagas WHERE active = 1 AND next_attempt_at <= $1 \
                 ORDER BY next_attempt_at LIMIT 200",
            )
            .bind(Utc::now().timestamp_micros())
            .fetch_all(self.store.pool())
            .await
        })
        .await?;
        for order_id in due {
            if !self.is_driving(&order_id) {
                self.spawn_drive(order_id, None);
            }
        }
        Ok(())
    }

    /// Takes up every open saga at once, whatever its lease: for a process
    /// that starts, since a lease held by a process that died (as this
    /// one's predecessor) is as good as expired, and a live holder's steps
    /// are idempotent. Pages through them by id.
    pub(super) async fn resume_all(&self) -> Result<usize, SagaError> {
        let mut after = String::new();
        let mut resumed = 0;
        loop {
            let page: Vec<String> = sql::retry("list open sagas", || async {
                sqlx::query_scalar(
                    "SELECT saga_id FROM sagas WHERE active = 1 AND saga_id > $1 ORDER BY saga_id LIMIT 1000",
                )
                .bind(after.as_str())
                .fetch_all(self.store.pool())
                .await
            })
            .await?;
            let Some(last) = page.last().cloned() else { return Ok(resumed) };
            for order_id in page {
                if !self.is_driving(&order_id) {
                    self.spawn_drive(order_id, None);
                    resumed += 1;
                }
            }
            after = last;
        }
    }

    pub(super) async fn load(&self, order_id: &str) -> Result<Option<Stored>, SagaError> {
        sql::retry("load saga", || self.load_once(order_id)).await
    }

    /// Reads the saga and takes its lease (a sweeper elsewhere leaves it
    /// alone meanwhile: the steps' own saves keep the lease they find).
    async fn load_once(&self, order_id: &str) -> Result<Option<Stored>, SagaError> {
        let lease_end = Utc::now().timestamp_micros() + self.settings.lease().as_micros() as i64;
        let row = sqlx::query(
            "UPDATE sagas SET next_attempt_at = $2 WHERE saga_id = $1 \
             RETURNING state, correlation_id, causation_id, version, active, cancel_requested, ship_requested",
        )
        .bind(order_id)
        .bind(lease_end)
        .fetch_optional(self.store.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let state: String = row.try_get("state")?;
        let saga = serde_json::from_str(&state).map_err(|error| SagaError::Contract(error.to_string()))?;
        let id = |column: &str| -> Result<Uuid, SagaError> {
            let text: String = row.try_get(column)?;
            Uuid::parse_str(&text).map_err(|error| SagaError::Contract(error.to_string()))
        };
        Ok(Some(Stored {
            saga,
            causes: Causes {
                correlation_id: id("correlation_id")?,
                causation_id: id("causation_id")?,
                traceparent: None,
            },
            version: row.try_get("version")?,
            active: row.try_get::<i64, _>("active")? != 0,
            cancel_requested: row.try_get::<i64, _>("cancel_requested")? != 0,
            ship_requested: row.try_get::<i64, _>("ship_requested")? != 0,
        }))
    }

    /// Stores the saga if nobody changed it since `version`; false if
    /// someone did. Saves from many sagas share a commit ([`super::writer`]).
    pub(super) async fn save(&self, stored: &Stored, next_attempt_at: i64) -> Result<bool, SagaError> {
        let state = serde_json::to_string(&stored.saga).map_err(|error| SagaError::Contract(error.to_string()))?;
        self.saves_apart.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.writer
            .save(Save {
                saga_id: stored.saga.order_id.clone(),
                version: stored.version,
                state,
                active: stored.should_be_active(),
                next_attempt_at: Some(next_attempt_at),
            })
            .await
    }
}
