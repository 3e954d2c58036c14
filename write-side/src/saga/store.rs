//! Where sagas live: one row each in `sagas`, changed only if nobody changed
//! it since it was read (a version check), every statement retried on
//! serialization failures.

use chrono::Utc;
use schema::EventEnvelope;
use schema::order::{self, PlaceOrder};
use schema::sql::{self, to_micros};
use sqlx::Row;
use tracing::warn;
use uuid::Uuid;

use super::{Causes, Fulfillment, KIND, Phase, SagaError, SagaRunner};

impl SagaRunner {
    pub(super) async fn start(&self, event: &EventEnvelope, placed: order::OrderPlaced) -> Result<(), SagaError> {
        sql::retry("start saga", || self.start_once(event, placed.clone())).await
    }

    async fn start_once(&self, event: &EventEnvelope, placed: order::OrderPlaced) -> Result<(), SagaError> {
        let now = Utc::now();
        let deadline = now + chrono::Duration::from_std(self.settings.saga_timeout).unwrap_or_default();
        let saga = Fulfillment::start(
            event.aggregate_id.clone(),
            placed.customer_id,
            PlaceOrder::lines_by_sku(&placed.items),
            to_micros(deadline),
        );
        sqlx::query(
            "INSERT INTO sagas (saga_id, kind, state, correlation_id, causation_id, version, active, next_attempt_at, \
             updated_at) VALUES ($1, $2, $3, $4, $5, 1, 1, $6, $6) ON CONFLICT (saga_id) DO NOTHING",
        )
        .bind(&event.aggregate_id)
        .bind(KIND)
        .bind(encode(&saga)?)
        .bind(event.metadata.correlation_id.to_string())
        .bind(event.id.to_string())
        .bind(to_micros(now))
        .execute(self.store.pool())
        .await?;
        Ok(())
    }

    /// Lets the sweeper take a saga again after the retry delay, instead of
    /// after its step's lease.
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

    /// Resumes due sagas: steps that got no answer, and sagas a crash left.
    pub(super) async fn sweep(&self) -> Result<(), SagaError> {
        sql::retry("sweep sagas", || self.sweep_once()).await
    }

    async fn sweep_once(&self) -> Result<(), SagaError> {
        let due: Vec<String> = sqlx::query_scalar(
            "SELECT saga_id FROM sagas WHERE active = 1 AND next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT 200",
        )
        .bind(Utc::now().timestamp_micros())
        .fetch_all(self.store.pool())
        .await?;
        for order_id in due {
            self.spawn_drive(order_id);
        }
        Ok(())
    }

    pub(super) async fn load(&self, order_id: &str) -> Result<Option<(Fulfillment, Causes, i64)>, SagaError> {
        sql::retry("load saga", || self.load_once(order_id)).await
    }

    async fn load_once(&self, order_id: &str) -> Result<Option<(Fulfillment, Causes, i64)>, SagaError> {
        let row = sqlx::query("SELECT state, correlation_id, causation_id, version FROM sagas WHERE saga_id = $1")
            .bind(order_id)
            .fetch_optional(self.store.pool())
            .await?;
        let Some(row) = row else { return Ok(None) };
        let state: String = row.try_get("state")?;
        let saga = serde_json::from_str(&state).map_err(|error| SagaError::Contract(error.to_string()))?;
        let id = |column: &str| -> Result<Uuid, SagaError> {
            let text: String = row.try_get(column)?;
            Uuid::parse_str(&text).map_err(|error| SagaError::Contract(error.to_string()))
        };
        Ok(Some((
            saga,
            Causes { correlation_id: id("correlation_id")?, causation_id: id("causation_id")? },
            row.try_get("version")?,
        )))
    }

    /// Stores the saga if nobody changed it since `version`; false if someone did.
    pub(super) async fn save(
        &self,
        order_id: &str,
        saga: &Fulfillment,
        version: i64,
        cause: Option<&Causes>,
        next_attempt_at: i64,
    ) -> Result<bool, SagaError> {
        sql::retry("save saga", || self.save_once(order_id, saga, version, cause, next_attempt_at)).await
    }

    async fn save_once(
        &self,
        order_id: &str,
        saga: &Fulfillment,
        version: i64,
        cause: Option<&Causes>,
        next_attempt_at: i64,
    ) -> Result<bool, SagaError> {
        let active = i64::from(matches!(saga.phase, Phase::Running | Phase::Unwinding));
        let updated = sqlx::query(
            "UPDATE sagas SET state = $3, version = $2 + 1, active = $4, next_attempt_at = $5, updated_at = $6, \
             causation_id = COALESCE($7, causation_id) WHERE saga_id = $1 AND version = $2",
        )
        .bind(order_id)
        .bind(version)
        .bind(encode(saga)?)
        .bind(active)
        .bind(next_attempt_at)
        .bind(Utc::now().timestamp_micros())
        .bind(cause.map(|cause| cause.causation_id.to_string()))
        .execute(self.store.pool())
        .await?;
        Ok(updated.rows_affected() == 1)
    }
}

fn encode(saga: &Fulfillment) -> Result<String, SagaError> {
    serde_json::to_string(saga).map_err(|error| SagaError::Contract(error.to_string()))
}
