//! Order, stock and payment events → the `orders` row and its timeline.
//!
//! Stock and payment events refer to an order projected from another
//! stream. They are published after the order's own first event (the saga
//! reacts to it), but workers and read-side processes apply streams in
//! parallel: one that finds no order row yet fails with
//! [`ProjectionError::NotYet`], so it is applied again once the order is
//! there. Their effect on the row does not depend on the order in which
//! different streams' events are applied, so the row equals a replay's.
//!
//! Each event costs one statement (its row, returning what the change
//! notification carries — the row's `updated_at` and its customer, the
//! notification's scope) and a share of one (its timeline entry, written
//! with the batch's others in multi-row statements); a stock event costs a
//! second, to read the order's lines, which live in one JSON column that no
//! portable single statement can edit.

use async_trait::async_trait;
use schema::EventEnvelope;
use schema::envelope::Message;
use schema::order::{self, OrderEvent};
use schema::payment::{self, PaymentEvent};
use schema::ports::ViewChange;
use schema::product::{self, ProductEvent};
use schema::sql::to_micros;

use super::{OrderStatus, VIEW, ViewLine};
use crate::projection::{Announce, Insert, Projection, ProjectionError, Value, ViewTable, ViewTx};

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

    fn tables(&self) -> &'static [ViewTable] {
        &[
            ViewTable {
                name: "orders",
                key: &["order_id"],
                announce: Some(Announce { id: "order_id", version: "updated_at", scope: Some("customer_id") }),
            },
            ViewTable { name: "order_timeline", key: &["order_id", "event_id"], announce: None },
        ]
    }

    async fn apply(&self, tx: &mut ViewTx<'_>, event: &EventEnvelope) -> Result<Option<ViewChange>, ProjectionError> {
        let (order_id, summary, row) = match event.aggregate_type.as_str() {
            order::AGGREGATE => {
                let (summary, row) = apply_order_event(tx, event, OrderEvent::decode(event).map_err(contract)?).await?;
                (event.aggregate_id.clone(), summary, row)
            }
            product::AGGREGATE => match ProductEvent::decode(event).map_err(contract)? {
                ProductEvent::StockReserved(reserved) => {
                    let summary = format!(
                        "{} × {} reserved at {} cents",
                        reserved.quantity, event.aggregate_id, reserved.unit_price_cents
                    );
                    let change = LineStock::Reserved(reserved.unit_price_cents);
                    let row = set_line(tx, event, &reserved.order_id, change).await?;
                    (reserved.order_id, summary, row)
                }
                ProductEvent::StockReleased(released) => {
                    let summary = format!("{} × {} released", released.quantity, event.aggregate_id);
                    let row = set_line(tx, event, &released.order_id, LineStock::Released).await?;
                    (released.order_id, summary, row)
                }
                ProductEvent::StockCommitted(committed) => {
                    let summary = format!("{} × {} left the shelf", committed.quantity, event.aggregate_id);
                    let row = set_line(tx, event, &committed.order_id, LineStock::Committed).await?;
                    (committed.order_id, summary, row)
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
                let row = set_payment_status(tx, event, &event.aggregate_id, status).await?;
                (event.aggregate_id.clone(), summary, Some(row))
            }
            _ => return Ok(None),
        };
        record_timeline(tx, &order_id, event, summary);
        // The row's version for notifications is its `updated_at`: the
        // order stream's version alone would not move on the other
        // streams' steps, and subscribers only compare versions. Its scope
        // is the order's customer, so that customer's watchers get it and
        // nobody else's (`Notifier::watch_scope`).
        let (updated_at, customer_id) = row.map_or((0, None), |row| (row.updated_at, Some(row.customer_id)));
        Ok(Some(ViewChange {
            view: VIEW.into(),
            id: order_id,
            version: updated_at as u64,
            scope: customer_id,
            traceparent: None,
        }))
    }
}

/// What a statement on an order row returns for its change notification.
#[derive(sqlx::FromRow)]
struct ChangedRow {
    updated_at: i64,
    customer_id: String,
}

/// Applies an order event to its row; returns the timeline summary and the
/// row's `updated_at` and customer afterwards (none if the row is missing).
async fn apply_order_event(
    tx: &mut ViewTx<'_>,
    event: &EventEnvelope,
    decoded: OrderEvent,
) -> Result<(String, Option<ChangedRow>), ProjectionError> {
    let at = to_micros(event.timestamp);
    let version = event.stream_version as i64;
    let id = &event.aggregate_id;
    // Every UPDATE keeps the later of the row's and the event's times.
    const LATEST: &str = "updated_at = CASE WHEN updated_at > $4 THEN updated_at ELSE $4 END";
    // $1 to $4 here; `set` names more columns from $5 on.
    let update = |status: OrderStatus, set: &str| {
        sqlx::query_as::<_, ChangedRow>(sqlx::AssertSqlSafe(format!(
            "UPDATE orders SET status = $2, version = $3, {LATEST}{set} WHERE order_id = $1 \
             RETURNING updated_at, customer_id"
        )))
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
            .execute(tx.statement())
            .await?;
            let summary =
                format!("placed with {} line{}", placed.items.len(), if placed.items.len() == 1 { "" } else { "s" });
            (summary, Some(ChangedRow { updated_at: at, customer_id: placed.customer_id }))
        }
        OrderEvent::OrderConfirmed(confirmed) => {
            // The lines' prices come with their reservations (another
            // stream); the confirmed total agrees with them.
            let row = update(OrderStatus::Confirmed, ", total_cents = $5")
                .bind(confirmed.total_cents)
                .fetch_optional(tx.statement())
                .await?;
            (format!("confirmed for {} cents", confirmed.total_cents), row)
        }
        OrderEvent::OrderRejected(rejected) => {
            let row = update(OrderStatus::Rejected, ", rejection_code = $5, rejection_reason = $6")
                .bind(&rejected.code)
                .bind(&rejected.message)
                .fetch_optional(tx.statement())
                .await?;
            (format!("rejected: {} ({})", rejected.message, rejected.code), row)
        }
        OrderEvent::OrderCancelled(cancelled) => {
            let row = update(OrderStatus::Cancelled, ", cancel_reason = $5")
                .bind(&cancelled.reason)
                .fetch_optional(tx.statement())
                .await?;
            (format!("cancelled: {}", cancelled.reason), row)
        }
        OrderEvent::OrderShipped(_) => {
            let row = update(OrderStatus::Shipped, "").fetch_optional(tx.statement()).await?;
            ("shipped".to_string(), row)
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
/// which different products' events are applied (a rebuild gives the same
/// row). Returns the row's `updated_at` and customer afterwards.
async fn set_line(
    tx: &mut ViewTx<'_>,
    event: &EventEnvelope,
    order_id: &str,
    change: LineStock,
) -> Result<Option<ChangedRow>, ProjectionError> {
    let row: Option<(String, String)> = sqlx::query_as("SELECT items, customer_id FROM orders WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(tx.statement())
        .await?;
    let Some((items, customer_id)) = row else { return Err(not_yet(order_id, event)) };
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
    // Prices and quantities are bounded by the contracts; saturating anyway,
    // so no event can make this projection fail and be retried forever.
    let total = lines.iter().fold(0i64, |sum, line| {
        sum.saturating_add(line.unit_price_cents.unwrap_or(0).saturating_mul(i64::from(line.quantity)))
    });
    let updated_at: Option<i64> = sqlx::query_scalar(
        "UPDATE orders SET items = $2, total_cents = $3, stock_status = $4, \
         updated_at = CASE WHEN updated_at > $5 THEN updated_at ELSE $5 END WHERE order_id = $1 RETURNING updated_at",
    )
    .bind(order_id)
    .bind(serde_json::to_string(&lines).map_err(contract)?)
    .bind(total)
    .bind(stock_status(&lines))
    .bind(to_micros(event.timestamp))
    .fetch_optional(tx.statement())
    .await?;
    Ok(updated_at.map(|updated_at| ChangedRow { updated_at, customer_id }))
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

/// Sets the order's payment status; returns the row's `updated_at` and customer afterwards.
async fn set_payment_status(
    tx: &mut ViewTx<'_>,
    event: &EventEnvelope,
    order_id: &str,
    status: &str,
) -> Result<ChangedRow, ProjectionError> {
    let row: Option<ChangedRow> = sqlx::query_as(
        "UPDATE orders SET payment_status = $2, \
         updated_at = CASE WHEN updated_at > $3 THEN updated_at ELSE $3 END WHERE order_id = $1 \
         RETURNING updated_at, customer_id",
    )
    .bind(order_id)
    .bind(status)
    .bind(to_micros(event.timestamp))
    .fetch_optional(tx.statement())
    .await?;
    row.ok_or_else(|| not_yet(order_id, event))
}

fn not_yet(order_id: &str, event: &EventEnvelope) -> ProjectionError {
    ProjectionError::NotYet { needs: format!("order {order_id}"), stream: event.stream_id() }
}

/// The order's timeline: one row per event, written with the batch's others.
const TIMELINE: Insert = Insert {
    table: "order_timeline",
    columns: &[
        "order_id",
        "event_id",
        "occurred_at",
        "event_type",
        "aggregate_type",
        "aggregate_id",
        "causation_id",
        "actor",
        "summary",
    ],
    then: "ON CONFLICT (order_id, event_id) DO NOTHING",
};

fn record_timeline(tx: &mut ViewTx<'_>, order_id: &str, event: &EventEnvelope, summary: String) {
    tx.insert_later(
        &TIMELINE,
        vec![
            Value::Text(order_id.to_string()),
            Value::Text(event.id.to_string()),
            Value::Int(to_micros(event.timestamp)),
            Value::Text(event.type_name.clone()),
            Value::Text(event.aggregate_type.clone()),
            Value::Text(event.aggregate_id.clone()),
            Value::Text(event.metadata.causation_id.to_string()),
            Value::Text(event.metadata.actor.clone()),
            Value::Text(summary),
        ],
    );
}
