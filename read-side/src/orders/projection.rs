//! Order events → `orders` rows.

use async_trait::async_trait;
use schema::EventEnvelope;
use schema::order::{self, OrderEvent};
use schema::ports::ViewChange;
use schema::sql::to_micros;
use sqlx::AnyConnection;

use super::{OrderStatus, VIEW};
use crate::projection::{Projection, ProjectionError};

pub struct OrdersProjection;

#[async_trait]
impl Projection for OrdersProjection {
    fn name(&self) -> &'static str {
        VIEW
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &[order::AGGREGATE]
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &EventEnvelope,
    ) -> Result<Option<ViewChange>, ProjectionError> {
        let decoded = OrderEvent::decode(event).map_err(|error| ProjectionError::Contract(error.to_string()))?;
        let at = to_micros(event.timestamp);
        let version = event.stream_version as i64;
        match decoded {
            OrderEvent::OrderPlaced(placed) => {
                let items = serde_json::to_string(&placed.items)
                    .map_err(|error| ProjectionError::Contract(error.to_string()))?;
                sqlx::query(
                    "INSERT INTO orders (order_id, customer_id, status, items, total_cents, version, placed_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
                )
                .bind(&event.aggregate_id)
                .bind(&placed.customer_id)
                .bind(OrderStatus::Placed.as_str())
                .bind(items)
                .bind(placed.total_cents)
                .bind(version)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
            OrderEvent::OrderCancelled(cancelled) => {
                sqlx::query(
                    "UPDATE orders SET status = $2, cancel_reason = $3, version = $4, updated_at = $5 WHERE order_id = $1",
                )
                .bind(&event.aggregate_id)
                .bind(OrderStatus::Cancelled.as_str())
                .bind(&cancelled.reason)
                .bind(version)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
        }
        Ok(Some(ViewChange { view: VIEW.into(), id: event.aggregate_id.clone(), version: event.stream_version }))
    }
}
