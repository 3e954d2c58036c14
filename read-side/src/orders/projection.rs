//! Order, stock and payment events → the `orders` row and its timeline.
//!
//! Stock and payment events refer to an order projected from another
//! stream. They are published after the order's own first event (the saga
//! reacts to it), but several read-side processes may apply them in
//! parallel: one that finds no order row yet fails with a retryable gap, so
//! it is applied again once the order is there.

use async_trait::async_trait;
use schema::EventEnvelope;
use schema::envelope::Message;
use schema::order::{self, OrderEvent};
use schema::payment::{self, PaymentEvent};
use schema::ports::ViewChange;
use schema::product::{self, ProductEvent};
use schema::sql::to_micros;
use sqlx::AnyConnection;

use super::{OrderStatus, VIEW, ViewLine};
use crate::projection::{Projection, ProjectionError};

pub struct OrdersProjection;

fn contract(error: impl std::fmt::Display) -> ProjectionError {
    ProjectionError::Contract(error.to_string())
}

#[async_trait]
impl Projection for OrdersProjection {
    fn name(&self) -> &'static str {
        VIEW
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &[order::AGGREGATE, product::AGGREGATE, payment::AGGREGATE]
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &EventEnvelope,
    ) -> Result<Option<ViewChange>, ProjectionError> {
        let (order_id, summary) = match event.aggregate_type.as_str() {
            order::AGGREGATE => {
                let summary = apply_order_event(conn, event, OrderEvent::decode(event).map_err(contract)?).await?;
                (event.aggregate_id.clone(), summary)
            }
            product::AGGREGATE => match ProductEvent::decode(event).map_err(contract)? {
                ProductEvent::StockReserved(reserved) => {
                    let summary = format!(
                        "{} × {} reserved at {} cents",
                        reserved.quantity, event.aggregate_id, reserved.unit_price_cents
                    );
                    set_line(conn, event, &reserved.order_id, LineStock::Reserved(reserved.unit_price_cents)).await?;
                    (reserved.order_id, summary)
                }
                ProductEvent::StockReleased(released) => {
                    let summary = format!("{} × {} released", released.quantity, event.aggregate_id);
                    set_line(conn, event, &released.order_id, LineStock::Released).await?;
                    (released.order_id, summary)
                }
                ProductEvent::StockCommitted(committed) => {
                    let summary = format!("{} × {} left the shelf", committed.quantity, event.aggregate_id);
                    set_line(conn, event, &committed.order_id, LineStock::Committed).await?;
                    (committed.order_id, summary)
                }
                ProductEvent::ProductAdded(_) | ProductEvent::ProductRestocked(_) => return Ok(None),
            },
            payment::AGGREGATE => {
                let (status, summary) = match PaymentEvent::decode(event).map_err(contract)? {
                    PaymentEvent::PaymentAuthorized(e) => {
                        ("AUTHORIZED", format!("{} cents authorized", e.amount_cents))
                    }
                    PaymentEvent::PaymentDeclined(e) => {
                        ("DECLINED", format!("{} cents declined: {}", e.amount_cents, e.reason))
                    }
                    PaymentEvent::PaymentCaptured(e) => ("CAPTURED", format!("{} cents captured", e.amount_cents)),
                    PaymentEvent::PaymentRefunded(e) => ("REFUNDED", format!("{} cents refunded", e.amount_cents)),
                    PaymentEvent::PaymentVoided(_) => ("VOIDED", "payment voided".to_string()),
                };
                set_payment_status(conn, event, &event.aggregate_id, status).await?;
                (event.aggregate_id.clone(), summary)
            }
            _ => return Ok(None),
        };
        record_timeline(conn, &order_id, event, &summary).await?;
        let version = current_version(conn, &order_id).await?;
        Ok(Some(ViewChange { view: VIEW.into(), id: order_id, version }))
    }
}

async fn apply_order_event(
    conn: &mut AnyConnection,
    event: &EventEnvelope,
    decoded: OrderEvent,
) -> Result<String, ProjectionError> {
    let at = to_micros(event.timestamp);
    let version = event.stream_version as i64;
    let id = &event.aggregate_id;
    let update = |status: OrderStatus| {
        sqlx::query("UPDATE orders SET status = $2, version = $3, updated_at = CASE WHEN updated_at > $4 THEN updated_at ELSE $4 END WHERE order_id = $1")
            .bind(id.clone())
            .bind(status.as_str())
            .bind(version)
            .bind(at)
    };
    Ok(match decoded {
        OrderEvent::OrderPlaced(placed) => {
            let lines: Vec<ViewLine> = placed
                .items
                .iter()
                .map(|line| ViewLine {
                    sku: line.sku.clone(),
                    quantity: line.quantity,
                    unit_price_cents: None,
                    stock: None,
                })
                .collect();
            sqlx::query(
                "INSERT INTO orders (order_id, customer_id, status, items, total_cents, version, placed_at, updated_at) \
                 VALUES ($1, $2, $3, $4, 0, $5, $6, $6)",
            )
            .bind(id)
            .bind(&placed.customer_id)
            .bind(OrderStatus::Pending.as_str())
            .bind(serde_json::to_string(&lines).map_err(contract)?)
            .bind(version)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            format!("placed with {} line{}", placed.items.len(), if placed.items.len() == 1 { "" } else { "s" })
        }
        OrderEvent::OrderConfirmed(confirmed) => {
            // The lines' prices come with their reservations (another
            // stream); the confirmed total agrees with them.
            sqlx::query(
                "UPDATE orders SET status = $2, total_cents = $3, version = $4, \
                 updated_at = CASE WHEN updated_at > $5 THEN updated_at ELSE $5 END WHERE order_id = $1",
            )
            .bind(id)
            .bind(OrderStatus::Confirmed.as_str())
            .bind(confirmed.total_cents)
            .bind(version)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            format!("confirmed for {} cents", confirmed.total_cents)
        }
        OrderEvent::OrderRejected(rejected) => {
            sqlx::query(
                "UPDATE orders SET status = $2, rejection_code = $3, rejection_reason = $4, version = $5, \
                 updated_at = CASE WHEN updated_at > $6 THEN updated_at ELSE $6 END WHERE order_id = $1",
            )
            .bind(id)
            .bind(OrderStatus::Rejected.as_str())
            .bind(&rejected.code)
            .bind(&rejected.message)
            .bind(version)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            format!("rejected: {} ({})", rejected.message, rejected.code)
        }
        OrderEvent::OrderCancelled(cancelled) => {
            sqlx::query(
                "UPDATE orders SET status = $2, cancel_reason = $3, version = $4, \
                 updated_at = CASE WHEN updated_at > $5 THEN updated_at ELSE $5 END WHERE order_id = $1",
            )
            .bind(id)
            .bind(OrderStatus::Cancelled.as_str())
            .bind(&cancelled.reason)
            .bind(version)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            format!("cancelled: {}", cancelled.reason)
        }
        OrderEvent::OrderShipped(_) => {
            update(OrderStatus::Shipped).execute(&mut *conn).await?;
            "shipped".to_string()
        }
    })
}

/// What a product event did to one line of an order.
enum LineStock {
    Reserved(i64),
    Released,
    Committed,
}

/// Updates the line of the event's sku; the order's stock status and total
/// follow from its lines, so the result does not depend on the order in
/// which different products' events are applied (a rebuild gives the same row).
async fn set_line(
    conn: &mut AnyConnection,
    event: &EventEnvelope,
    order_id: &str,
    change: LineStock,
) -> Result<(), ProjectionError> {
    let items: Option<String> = sqlx::query_scalar("SELECT items FROM orders WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(items) = items else { return Err(not_yet(order_id, event)) };
    let mut lines: Vec<ViewLine> = serde_json::from_str(&items).map_err(contract)?;
    for line in lines.iter_mut().filter(|line| line.sku == event.aggregate_id) {
        match change {
            LineStock::Reserved(price) => {
                line.unit_price_cents = Some(price);
                line.stock = Some("RESERVED".into());
            }
            LineStock::Released => line.stock = Some("RELEASED".into()),
            LineStock::Committed => line.stock = Some("COMMITTED".into()),
        }
    }
    let total: i64 = lines.iter().map(|line| line.unit_price_cents.unwrap_or(0) * i64::from(line.quantity)).sum();
    sqlx::query(
        "UPDATE orders SET items = $2, total_cents = $3, stock_status = $4, \
         updated_at = CASE WHEN updated_at > $5 THEN updated_at ELSE $5 END WHERE order_id = $1",
    )
    .bind(order_id)
    .bind(serde_json::to_string(&lines).map_err(contract)?)
    .bind(total)
    .bind(stock_status(&lines))
    .bind(to_micros(event.timestamp))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The order's stock status from its lines' states.
fn stock_status(lines: &[ViewLine]) -> &'static str {
    let all = |state: &str| lines.iter().all(|line| line.stock.as_deref() == Some(state));
    if all("COMMITTED") {
        "COMMITTED"
    } else if all("RESERVED") {
        "RESERVED"
    } else if lines.iter().any(|line| line.stock.as_deref() == Some("RESERVED")) {
        "PARTIAL"
    } else if lines.iter().any(|line| line.stock.is_some()) {
        "RELEASED"
    } else {
        "NONE"
    }
}

/// Sets the order's payment status.
async fn set_payment_status(
    conn: &mut AnyConnection,
    event: &EventEnvelope,
    order_id: &str,
    status: &str,
) -> Result<(), ProjectionError> {
    let updated = sqlx::query(
        "UPDATE orders SET payment_status = $2, \
         updated_at = CASE WHEN updated_at > $3 THEN updated_at ELSE $3 END WHERE order_id = $1",
    )
    .bind(order_id)
    .bind(status)
    .bind(to_micros(event.timestamp))
    .execute(&mut *conn)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(not_yet(order_id, event));
    }
    Ok(())
}

fn not_yet(order_id: &str, event: &EventEnvelope) -> ProjectionError {
    ProjectionError::Gap { stream: format!("order-{order_id} (for {})", event.stream_id()), version: 1 }
}

async fn record_timeline(
    conn: &mut AnyConnection,
    order_id: &str,
    event: &EventEnvelope,
    summary: &str,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "INSERT INTO order_timeline (order_id, event_id, occurred_at, event_type, aggregate_type, aggregate_id, \
         causation_id, actor, summary) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (order_id, event_id) DO NOTHING",
    )
    .bind(order_id)
    .bind(event.id.to_string())
    .bind(to_micros(event.timestamp))
    .bind(&event.type_name)
    .bind(&event.aggregate_type)
    .bind(&event.aggregate_id)
    .bind(event.metadata.causation_id.to_string())
    .bind(&event.metadata.actor)
    .bind(summary)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The row's version for notifications: the order stream's version, which
/// subscribers compare; steps of other streams bump `updated_at` only, so
/// the notification carries the time instead.
async fn current_version(conn: &mut AnyConnection, order_id: &str) -> Result<u64, ProjectionError> {
    let updated: Option<i64> = sqlx::query_scalar("SELECT updated_at FROM orders WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(updated.unwrap_or(0) as u64)
}
