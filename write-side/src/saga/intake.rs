//! Saga intake, inside the order's own transaction: `OrderPlaced` inserts
//! the saga (one multi-row statement for a batch of orders),
//! `OrderCancelled` and `OrderShipped` flag it and bump its version (so a
//! drive in flight notices on its next save). After the commit, the runner
//! is woken to drive them; if this process dies first, the sweeper finds
//! them once their lease is over.

use chrono::Utc;
use schema::EventEnvelope;
use schema::order::{self, OrderEvent, PlaceOrder};
use sqlx::{AnyConnection, AssertSqlSafe};
use tokio::sync::mpsc;

use std::collections::HashMap;
use std::sync::Mutex;

use super::ride;
use super::store::Stored;
use super::{Causes, Fulfillment, KIND, SagaSettings};
use crate::event_store::{Attached, Attachment, CommitHook, Decision};

pub(super) struct SagaIntake {
    settings: SagaSettings,
    wake: mpsc::UnboundedSender<Wake>,
    /// Sagas inserted by transactions not yet committed, by order id, so
    /// that the runner need not read back what it just wrote.
    started: Mutex<HashMap<String, Stored>>,
}

/// A saga to drive: a new one with its stored state, or one to read.
pub(super) struct Wake {
    pub order_id: String,
    pub fresh: Option<Stored>,
}

impl SagaIntake {
    pub fn new(settings: SagaSettings, wake: mpsc::UnboundedSender<Wake>) -> Self {
        Self { settings, wake, started: Mutex::default() }
    }
}

/// The signal column an order event sets, if any.
fn signal(event: &EventEnvelope) -> Option<&'static str> {
    match event.type_name.as_str() {
        "OrderCancelled" => Some("cancel_requested"),
        "OrderShipped" => Some("ship_requested"),
        _ => None,
    }
}

fn is_order(event: &EventEnvelope) -> bool {
    event.aggregate_type == order::AGGREGATE
}

#[async_trait::async_trait]
impl CommitHook for SagaIntake {
    async fn within(
        &self,
        conn: &mut AnyConnection,
        events: &[EventEnvelope],
        attached: &[(&Attachment, &Decision)],
    ) -> Result<Vec<Option<Attached>>, sqlx::Error> {
        let now = Utc::now().timestamp_micros();
        // The runner is woken right after the commit; the lease keeps
        // sweepers off meanwhile, and lets them take over after a crash.
        let lease_end = now + self.settings.lease().as_micros() as i64;
        let deadline = now + self.settings.saga_timeout.as_micros() as i64;
        let mut started = Vec::new();
        let mut signals = Vec::new();
        for event in events.iter().filter(|event| is_order(event)) {
            if let Some(column) = signal(event) {
                signals.push((event, column));
            } else if event.type_name == "OrderPlaced" {
                let Ok(OrderEvent::OrderPlaced(placed)) = OrderEvent::decode(event) else {
                    return Err(sqlx::Error::Protocol(format!("unreadable OrderPlaced event {}", event.id)));
                };
                let saga = Fulfillment::start(
                    event.aggregate_id.clone(),
                    placed.customer_id,
                    PlaceOrder::lines_by_sku(&placed.items),
                    deadline,
                );
                let state = serde_json::to_string(&saga).map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
                let stored = Stored {
                    saga,
                    causes: Causes {
                        correlation_id: event.metadata.correlation_id,
                        causation_id: event.id,
                        traceparent: event.metadata.traceparent.clone(),
                    },
                    version: 1,
                    active: true,
                    cancel_requested: false,
                    ship_requested: false,
                };
                self.started
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .insert(event.aggregate_id.clone(), stored);
                started.push((event, state));
            }
        }
        for chunk in
            schema::sql::chunks_by_size(&started, |(event, state)| state.len() + event.aggregate_id.len() + 120)
        {
            let rows: Vec<String> = (0..chunk.len())
                .map(|n| {
                    let p = n * 6;
                    format!("(${}, '{KIND}', ${}, ${}, ${}, 1, 1, ${}, ${})", p + 1, p + 2, p + 3, p + 4, p + 5, p + 6)
                })
                .collect();
            let sql = format!(
                "INSERT INTO sagas (saga_id, kind, state, correlation_id, causation_id, version, active, \
                 next_attempt_at, updated_at) VALUES {} ON CONFLICT (saga_id) DO NOTHING",
                rows.join(", ")
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for (event, state) in chunk {
                query = query
                    .bind(&event.aggregate_id)
                    .bind(state.as_str())
                    .bind(event.metadata.correlation_id.to_string())
                    .bind(event.id.to_string())
                    .bind(lease_end)
                    .bind(now);
            }
            query.execute(&mut *conn).await?;
        }
        // After the inserts: an order placed and cancelled in one batch.
        for (event, column) in signals {
            let sql = format!(
                "UPDATE sagas SET {column} = 1, version = version + 1, active = 1, next_attempt_at = $2, \
                 updated_at = $2 WHERE saga_id = $1"
            );
            sqlx::query(AssertSqlSafe(sql)).bind(&event.aggregate_id).bind(now).execute(&mut *conn).await?;
            // Its fresh state is stale now: the runner reads the row.
            self.started.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&event.aggregate_id);
        }
        // After the signals: a ride whose saga was cancelled meanwhile is stale.
        ride::save_rides(conn, &self.settings, attached, now).await
    }

    fn committed(&self, events: &[EventEnvelope]) {
        let mut started = self.started.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for event in events.iter().filter(|event| is_order(event)) {
            if event.type_name == "OrderPlaced" || signal(event).is_some() {
                let fresh = started.remove(&event.aggregate_id);
                // A runner that is gone leaves the saga to the sweepers.
                let _ = self.wake.send(Wake { order_id: event.aggregate_id.clone(), fresh });
            }
        }
        // What a failed transaction left (it will be tried again, and insert anew).
        if started.len() > 100_000 {
            started.clear();
        }
    }
}
