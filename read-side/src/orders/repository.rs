//! Queries on the `orders` view, for the gateway.

use chrono::{DateTime, Utc};
use schema::order::OrderLine;
use schema::sql::from_micros;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, AssertSqlSafe, Row};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    Placed,
    Cancelled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Placed => "PLACED",
            Self::Cancelled => "CANCELLED",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "PLACED" => Some(Self::Placed),
            "CANCELLED" => Some(Self::Cancelled),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderView {
    pub order_id: String,
    pub customer_id: String,
    pub status: OrderStatus,
    pub items: Vec<OrderLine>,
    pub total_cents: i64,
    pub cancel_reason: Option<String>,
    /// The order stream's version this row reflects.
    pub version: u64,
    pub placed_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A position in the newest-first order list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderCursor {
    pub placed_at_micros: i64,
    pub order_id: String,
}

#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    pub status: Option<OrderStatus>,
    pub customer_id: Option<String>,
}

#[derive(Clone)]
pub struct OrderRepository {
    pool: AnyPool,
}

const COLUMNS: &str =
    "order_id, customer_id, status, items, total_cents, cancel_reason, version, placed_at, updated_at";

impl OrderRepository {
    pub fn new(pool: AnyPool) -> Self {
        Self { pool }
    }

    pub async fn get(&self, order_id: &str) -> Result<Option<OrderView>, sqlx::Error> {
        let row = sqlx::query(AssertSqlSafe(format!("SELECT {COLUMNS} FROM orders WHERE order_id = $1")))
            .bind(order_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(order_from_row).transpose()
    }

    /// Up to `limit` orders, newest first, strictly after `after`.
    pub async fn list(
        &self,
        filter: &OrderFilter,
        after: Option<&OrderCursor>,
        limit: u32,
    ) -> Result<Vec<OrderView>, sqlx::Error> {
        // Every fragment below is a literal; only values are bound, in this order.
        let mut clauses = Vec::new();
        let mut placeholder = 0;
        let mut next = || {
            placeholder += 1;
            placeholder
        };
        if filter.status.is_some() {
            clauses.push(format!("status = ${}", next()));
        }
        if filter.customer_id.is_some() {
            clauses.push(format!("customer_id = ${}", next()));
        }
        if after.is_some() {
            clauses.push(format!("(placed_at, order_id) < (${}, ${})", next(), next()));
        }
        let mut sql = format!("SELECT {COLUMNS} FROM orders");
        if !clauses.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&clauses.join(" AND "));
        }
        sql.push_str(&format!(" ORDER BY placed_at DESC, order_id DESC LIMIT ${}", next()));

        let mut query = sqlx::query(AssertSqlSafe(sql));
        if let Some(status) = filter.status {
            query = query.bind(status.as_str());
        }
        if let Some(customer_id) = &filter.customer_id {
            query = query.bind(customer_id.clone());
        }
        if let Some(cursor) = after {
            query = query.bind(cursor.placed_at_micros).bind(cursor.order_id.clone());
        }
        let rows = query.bind(i64::from(limit)).fetch_all(&self.pool).await?;
        rows.iter().map(order_from_row).collect()
    }

    /// Whether the view database answers: for `/readyz`.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ())
    }

    /// Every row, in id order: for comparing a live view with a rebuilt one.
    pub async fn all(&self) -> Result<Vec<OrderView>, sqlx::Error> {
        let rows = sqlx::query(AssertSqlSafe(format!("SELECT {COLUMNS} FROM orders ORDER BY order_id")))
            .fetch_all(&self.pool)
            .await?;
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
        version: row.try_get::<i64, _>("version")? as u64,
        placed_at: from_micros(row.try_get("placed_at")?),
        updated_at: from_micros(row.try_get("updated_at")?),
    })
}

#[async_trait::async_trait]
impl schema::ports::Readiness for OrderRepository {
    async fn check(&self) -> Result<(), schema::ports::PortError> {
        self.ping().await.map_err(|error| schema::ports::PortError::Unavailable(format!("database ({error})")))
    }
}
