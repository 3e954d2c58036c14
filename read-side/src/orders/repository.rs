//! Queries on the `orders` view, for the gateway.

use chrono::{DateTime, Utc};
use schema::sql::from_micros;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::views::{Bind, ViewStore};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Rejected,
    Cancelled,
    Shipped,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Confirmed => "CONFIRMED",
            Self::Rejected => "REJECTED",
            Self::Cancelled => "CANCELLED",
            Self::Shipped => "SHIPPED",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "PENDING" => Some(Self::Pending),
            "CONFIRMED" => Some(Self::Confirmed),
            "REJECTED" => Some(Self::Rejected),
            "CANCELLED" => Some(Self::Cancelled),
            "SHIPPED" => Some(Self::Shipped),
            _ => None,
        }
    }

    /// Whether the order's transaction has ended (no more status changes but shipping).
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Pending)
    }
}

/// A line as the view shows it: the price appears once the stock is reserved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewLine {
    pub sku: String,
    pub quantity: u32,
    pub unit_price_cents: Option<i64>,
    /// RESERVED, RELEASED or COMMITTED once its product said so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stock: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderView {
    pub order_id: String,
    pub customer_id: String,
    pub status: OrderStatus,
    pub items: Vec<ViewLine>,
    pub total_cents: i64,
    pub cancel_reason: Option<String>,
    /// NONE, AUTHORIZED, DECLINED, CAPTURED, REFUNDED or VOIDED.
    pub payment_status: String,
    /// NONE, PARTIAL, RESERVED, RELEASED or COMMITTED.
    pub stock_status: String,
    pub rejection_code: Option<String>,
    pub rejection_reason: Option<String>,
    /// The order stream's version this row reflects.
    pub version: u64,
    pub placed_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One entry of an order's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEntry {
    pub order_id: String,
    pub event_id: String,
    pub at: DateTime<Utc>,
    pub event_type: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub causation_id: String,
    pub actor: String,
    pub summary: String,
}

/// A position in the newest-first order list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderCursor {
    pub placed_at_micros: i64,
    pub order_id: String,
}

/// Which orders a list holds, and in which order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct OrderFilter {
    /// Orders with any of these statuses; empty: every status.
    pub statuses: Vec<OrderStatus>,
    pub customer_id: Option<String>,
    /// Placed at or after this time (microseconds).
    pub placed_from_micros: Option<i64>,
    /// Placed before this time (microseconds).
    pub placed_before_micros: Option<i64>,
    /// Oldest first instead of newest first (cursors then move forward in time).
    pub oldest_first: bool,
}

impl OrderFilter {
    /// The WHERE clauses (joined by AND; empty: none) of the filter and an
    /// optional cursor, binding their values in order. Every fragment is a
    /// literal; only values are bound.
    fn clauses(&self, after: Option<&OrderCursor>, binds: &mut Vec<Bind>) -> Vec<String> {
        let mut bind = |value: Bind| {
            binds.push(value);
            format!("${}", binds.len())
        };
        let mut clauses = Vec::new();
        if !self.statuses.is_empty() {
            let list: Vec<String> =
                self.statuses.iter().map(|status| bind(Bind::Text(status.as_str().to_string()))).collect();
            clauses.push(format!("status IN ({})", list.join(", ")));
        }
        if let Some(customer_id) = &self.customer_id {
            clauses.push(format!("customer_id = {}", bind(Bind::Text(customer_id.clone()))));
        }
        if let Some(from) = self.placed_from_micros {
            clauses.push(format!("placed_at >= {}", bind(Bind::Int(from))));
        }
        if let Some(before) = self.placed_before_micros {
            clauses.push(format!("placed_at < {}", bind(Bind::Int(before))));
        }
        if let Some(cursor) = after {
            let (at, id) = (bind(Bind::Int(cursor.placed_at_micros)), bind(Bind::Text(cursor.order_id.clone())));
            let past = if self.oldest_first { ">" } else { "<" };
            clauses.push(format!("(placed_at, order_id) {past} ({at}, {id})"));
        }
        clauses
    }
}

fn where_clause(clauses: &[String]) -> String {
    if clauses.is_empty() { String::new() } else { format!(" WHERE {}", clauses.join(" AND ")) }
}

#[derive(Clone)]
pub struct OrderRepository {
    views: ViewStore,
}

const COLUMNS: &str = "order_id, customer_id, status, items, total_cents, cancel_reason, payment_status, stock_status, \
     rejection_code, rejection_reason, version, placed_at, updated_at";

impl OrderRepository {
    pub fn new(views: ViewStore) -> Self {
        Self { views }
    }

    pub async fn get(&self, order_id: &str) -> Result<Option<OrderView>, sqlx::Error> {
        let sql = format!("SELECT {COLUMNS} FROM orders WHERE order_id = $1");
        let row = self.views.fetch_optional(sql, vec![Bind::Text(order_id.to_string())]).await?;
        row.as_ref().map(order_from_row).transpose()
    }

    /// Up to `limit` orders of `filter`, in its order, strictly after `after`.
    pub async fn list(
        &self,
        filter: &OrderFilter,
        after: Option<&OrderCursor>,
        limit: u32,
    ) -> Result<Vec<OrderView>, sqlx::Error> {
        let mut binds = Vec::new();
        let clauses = filter.clauses(after, &mut binds);
        let direction = if filter.oldest_first { "ASC" } else { "DESC" };
        binds.push(Bind::Int(i64::from(limit)));
        let sql = format!(
            "SELECT {COLUMNS} FROM orders{} ORDER BY placed_at {direction}, order_id {direction} LIMIT ${}",
            where_clause(&clauses),
            binds.len()
        );
        let rows = self.views.fetch_all(sql, binds).await?;
        rows.iter().map(order_from_row).collect()
    }

    /// How many orders `filter` holds (its order aside): one statement.
    pub async fn count(&self, filter: &OrderFilter) -> Result<i64, sqlx::Error> {
        let mut binds = Vec::new();
        let clauses = filter.clauses(None, &mut binds);
        let sql = format!("SELECT count(*) AS total FROM orders{}", where_clause(&clauses));
        let row = self.views.fetch_optional(sql, binds).await?;
        row.map_or(Ok(0), |row| row.try_get::<i64, _>("total"))
    }

    /// The timelines of several orders, oldest entry first, in one statement.
    pub async fn timelines(&self, order_ids: &[String]) -> Result<Vec<TimelineEntry>, sqlx::Error> {
        let select = "SELECT order_id, event_id, occurred_at, event_type, aggregate_type, aggregate_id, causation_id, \
             actor, summary FROM order_timeline WHERE order_id IN ({keys}) ORDER BY order_id, occurred_at, event_id";
        let rows = self.views.fetch_in(select, order_ids).await?;
        rows.iter()
            .map(|row| {
                Ok(TimelineEntry {
                    order_id: row.try_get("order_id")?,
                    event_id: row.try_get("event_id")?,
                    at: from_micros(row.try_get("occurred_at")?),
                    event_type: row.try_get("event_type")?,
                    aggregate_type: row.try_get("aggregate_type")?,
                    aggregate_id: row.try_get("aggregate_id")?,
                    causation_id: row.try_get("causation_id")?,
                    actor: row.try_get("actor")?,
                    summary: row.try_get("summary")?,
                })
            })
            .collect()
    }

    /// Every row, in id order: for comparing a live view with a rebuilt one.
    pub async fn all(&self) -> Result<Vec<OrderView>, sqlx::Error> {
        let rows = self.views.fetch_all(format!("SELECT {COLUMNS} FROM orders ORDER BY order_id"), Vec::new()).await?;
        rows.iter().map(order_from_row).collect()
    }
}

fn order_from_row(row: &AnyRow) -> Result<OrderView, sqlx::Error> {
    let status: String = row.try_get("status")?;
    let items: String = row.try_get("items")?;
    Ok(OrderView {
        order_id: row.try_get("order_id")?,
        customer_id: row.try_get("customer_id")?,
        status: OrderStatus::parse(&status)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown order status `{status}`").into()))?,
        items: serde_json::from_str(&items).map_err(|error| sqlx::Error::Decode(Box::new(error)))?,
        total_cents: row.try_get("total_cents")?,
        cancel_reason: row.try_get("cancel_reason")?,
        payment_status: row.try_get("payment_status")?,
        stock_status: row.try_get("stock_status")?,
        rejection_code: row.try_get("rejection_code")?,
        rejection_reason: row.try_get("rejection_reason")?,
        version: row.try_get::<i64, _>("version")? as u64,
        placed_at: from_micros(row.try_get("placed_at")?),
        updated_at: from_micros(row.try_get("updated_at")?),
    })
}
