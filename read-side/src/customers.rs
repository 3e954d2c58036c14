//! The `customers` view: who they are, how many orders, how much spent,
//! how many still open. Fed by customer and order events, in any order:
//! a row is upserted by whichever arrives first.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use schema::EventEnvelope;
use schema::customer::{self, CustomerEvent};
use schema::envelope::Message;
use schema::order::{self, OrderEvent};
use schema::ports::ViewChange;
use schema::sql::{from_micros, to_micros};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::projection::{Projection, ProjectionError};
use crate::views::{Bind, ViewStore};

pub const VIEW: &str = "customers";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerView {
    pub customer_id: String,
    pub name: String,
    pub email: String,
    pub credit_limit_cents: i64,
    pub order_count: i64,
    pub lifetime_spend_cents: i64,
    pub open_orders: i64,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub struct CustomersProjection;

#[async_trait]
impl Projection for CustomersProjection {
    fn name(&self) -> &'static str {
        VIEW
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &[customer::AGGREGATE, order::AGGREGATE]
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &EventEnvelope,
    ) -> Result<Option<ViewChange>, ProjectionError> {
        let contract = |error: schema::ContractError| ProjectionError::Contract(error.to_string());
        let at = to_micros(event.timestamp);
        let customer_id = if event.aggregate_type == customer::AGGREGATE {
            let CustomerEvent::CustomerRegistered(registered) = CustomerEvent::decode(event).map_err(contract)?;
            ensure_row(conn, &event.aggregate_id, at).await?;
            sqlx::query(
                "UPDATE customers SET registered = 1, name = $2, email = $3, credit_limit_cents = $4, \
                 registered_at = $5, \
                 updated_at = CASE WHEN updated_at > $5 THEN updated_at ELSE $5 END WHERE customer_id = $1",
            )
            .bind(&event.aggregate_id)
            .bind(&registered.name)
            .bind(&registered.email)
            .bind(registered.credit_limit_cents)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            event.aggregate_id.clone()
        } else {
            let order_id = &event.aggregate_id;
            match OrderEvent::decode(event).map_err(contract)? {
                OrderEvent::OrderPlaced(placed) => {
                    ensure_row(conn, &placed.customer_id, at).await?;
                    sqlx::query(
                        "INSERT INTO customer_orders (order_id, customer_id, open, spent_cents) VALUES ($1, $2, 1, 0)",
                    )
                    .bind(order_id)
                    .bind(&placed.customer_id)
                    .execute(&mut *conn)
                    .await?;
                    bump(conn, &placed.customer_id, 1, 1, 0, at).await?;
                    placed.customer_id
                }
                OrderEvent::OrderConfirmed(confirmed) => {
                    set_order(conn, order_id, None, Some(confirmed.total_cents)).await?;
                    bump(conn, &confirmed.customer_id, 0, 0, confirmed.total_cents, at).await?;
                    confirmed.customer_id
                }
                OrderEvent::OrderRejected(rejected) => {
                    close(conn, order_id, &rejected.customer_id, false, at).await?;
                    rejected.customer_id
                }
                OrderEvent::OrderCancelled(_) => {
                    let customer_id = customer_of(conn, order_id).await?;
                    close(conn, order_id, &customer_id, true, at).await?;
                    customer_id
                }
                OrderEvent::OrderShipped(shipped) => {
                    close(conn, order_id, &shipped.customer_id, false, at).await?;
                    shipped.customer_id
                }
            }
        };
        Ok(Some(ViewChange { view: VIEW.into(), id: customer_id, version: at as u64 }))
    }
}

async fn ensure_row(conn: &mut AnyConnection, customer_id: &str, at: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO customers (customer_id, registered, name, email, credit_limit_cents, order_count, \
         lifetime_spend_cents, open_orders, registered_at, updated_at) VALUES ($1, 0, '', '', 0, 0, 0, 0, $2, $2) \
         ON CONFLICT (customer_id) DO NOTHING",
    )
    .bind(customer_id)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn bump(
    conn: &mut AnyConnection,
    customer_id: &str,
    orders: i64,
    open: i64,
    spent: i64,
    at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE customers SET order_count = order_count + $2, open_orders = open_orders + $3, \
         lifetime_spend_cents = lifetime_spend_cents + $4, \
         updated_at = CASE WHEN updated_at > $5 THEN updated_at ELSE $5 END WHERE customer_id = $1",
    )
    .bind(customer_id)
    .bind(orders)
    .bind(open)
    .bind(spent)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn customer_of(conn: &mut AnyConnection, order_id: &str) -> Result<String, ProjectionError> {
    let customer: Option<String> = sqlx::query_scalar("SELECT customer_id FROM customer_orders WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(&mut *conn)
        .await?;
    customer.ok_or_else(|| ProjectionError::Gap { stream: format!("order-{order_id}"), version: 1 })
}

async fn set_order(
    conn: &mut AnyConnection,
    order_id: &str,
    open: Option<bool>,
    spent: Option<i64>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE customer_orders SET open = COALESCE($2, open), spent_cents = COALESCE($3, spent_cents) \
         WHERE order_id = $1",
    )
    .bind(order_id)
    .bind(open.map(i64::from))
    .bind(spent)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The order left the open ones; a cancellation also gives its spend back.
async fn close(
    conn: &mut AnyConnection,
    order_id: &str,
    customer_id: &str,
    refund: bool,
    at: i64,
) -> Result<(), ProjectionError> {
    let state: Option<(i64, i64)> = sqlx::query_as("SELECT open, spent_cents FROM customer_orders WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some((open, spent)) = state else {
        return Err(ProjectionError::Gap { stream: format!("order-{order_id}"), version: 1 });
    };
    let refunded = if refund { spent } else { 0 };
    set_order(conn, order_id, Some(false), Some(spent - refunded)).await?;
    bump(conn, customer_id, 0, -open, -refunded, at).await?;
    Ok(())
}

const COLUMNS: &str = "customer_id, name, email, credit_limit_cents, order_count, lifetime_spend_cents, open_orders, \
     registered_at, updated_at";

#[derive(Clone)]
pub struct CustomerRepository {
    views: ViewStore,
}

impl CustomerRepository {
    pub fn new(views: ViewStore) -> Self {
        Self { views }
    }

    /// Registered customers among `ids`, in one statement.
    pub async fn get_many(&self, ids: &[String]) -> Result<Vec<CustomerView>, sqlx::Error> {
        let select = format!("SELECT {COLUMNS} FROM customers WHERE registered = 1 AND customer_id IN ({{keys}})");
        self.views.fetch_in(&select, ids).await?.iter().map(customer_from_row).collect()
    }

    /// Every registered customer, in id order: for comparing a live view with a rebuilt one.
    pub async fn all(&self) -> Result<Vec<CustomerView>, sqlx::Error> {
        let sql = format!("SELECT {COLUMNS} FROM customers WHERE registered = 1 ORDER BY customer_id");
        self.views.fetch_all(sql, Vec::new()).await?.iter().map(customer_from_row).collect()
    }

    /// Up to `limit` registered customers, newest first, strictly after
    /// `after` (registered_at micros, customer id); `only` narrows to one.
    pub async fn list(
        &self,
        only: Option<&str>,
        after: Option<(i64, &str)>,
        limit: u32,
    ) -> Result<Vec<CustomerView>, sqlx::Error> {
        // Every fragment is a literal; only values are bound, in this order.
        let mut sql = format!("SELECT {COLUMNS} FROM customers WHERE registered = 1");
        let mut placeholder = 0;
        let mut next = || {
            placeholder += 1;
            placeholder
        };
        if only.is_some() {
            sql.push_str(&format!(" AND customer_id = ${}", next()));
        }
        if after.is_some() {
            sql.push_str(&format!(" AND (registered_at, customer_id) < (${}, ${})", next(), next()));
        }
        sql.push_str(&format!(" ORDER BY registered_at DESC, customer_id DESC LIMIT ${}", next()));
        let mut binds = Vec::new();
        if let Some(id) = only {
            binds.push(Bind::Text(id.to_string()));
        }
        if let Some((micros, id)) = after {
            binds.push(Bind::Int(micros));
            binds.push(Bind::Text(id.to_string()));
        }
        binds.push(Bind::Int(i64::from(limit)));
        let rows = self.views.fetch_all(sql, binds).await?;
        rows.iter().map(customer_from_row).collect()
    }

    pub async fn get(&self, id: &str) -> Result<Option<CustomerView>, sqlx::Error> {
        Ok(self.get_many(&[id.to_string()]).await?.into_iter().next())
    }
}

fn customer_from_row(row: &AnyRow) -> Result<CustomerView, sqlx::Error> {
    Ok(CustomerView {
        customer_id: row.try_get("customer_id")?,
        name: row.try_get("name")?,
        email: row.try_get("email")?,
        credit_limit_cents: row.try_get("credit_limit_cents")?,
        order_count: row.try_get("order_count")?,
        lifetime_spend_cents: row.try_get("lifetime_spend_cents")?,
        open_orders: row.try_get("open_orders")?,
        registered_at: from_micros(row.try_get("registered_at")?),
        updated_at: from_micros(row.try_get("updated_at")?),
    })
}
