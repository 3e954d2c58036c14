//! The `customers` view: who they are, how many orders, how much spent,
//! how many still open. Fed by customer and order events, in any order:
//! a row is upserted by whichever arrives first. Every event is one or two
//! writes and no read.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use schema::EventEnvelope;
use schema::customer::{self, CustomerEvent};
use schema::envelope::Message;
use schema::order::{self, OrderEvent};
use schema::ports::ViewChange;
use schema::sql::{from_micros, to_micros};
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use crate::projection::{Announce, Projection, ProjectionError, ViewTable, ViewTx};
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

    fn tables(&self) -> &'static [ViewTable] {
        &[
            ViewTable {
                name: "customers",
                key: &["customer_id"],
                announce: Some(Announce { id: "customer_id", version: "updated_at", scope: None }),
            },
            ViewTable { name: "customer_orders", key: &["order_id"], announce: None },
        ]
    }

    async fn apply(&self, tx: &mut ViewTx<'_>, event: &EventEnvelope) -> Result<Option<ViewChange>, ProjectionError> {
        let contract = |error: schema::ContractError| ProjectionError::Contract(error.to_string());
        let at = to_micros(event.timestamp);
        let customer_id = if event.aggregate_type == customer::AGGREGATE {
            let CustomerEvent::CustomerRegistered(registered) = CustomerEvent::decode(event).map_err(contract)?;
            sqlx::query(AssertSqlSafe(format!(
                "{INSERT_CUSTOMER} VALUES ($1, 1, $2, $3, $4, 0, 0, 0, $5, $5) ON CONFLICT (customer_id) DO UPDATE SET \
                 registered = 1, name = excluded.name, email = excluded.email, \
                 credit_limit_cents = excluded.credit_limit_cents, registered_at = excluded.registered_at, {LATEST}"
            )))
            .bind(&event.aggregate_id)
            .bind(&registered.name)
            .bind(&registered.email)
            .bind(registered.credit_limit_cents)
            .bind(at)
            .execute(tx.statement())
            .await?;
            event.aggregate_id.clone()
        } else {
            let order_id = &event.aggregate_id;
            match OrderEvent::decode(event).map_err(contract)? {
                OrderEvent::OrderPlaced(placed) => {
                    sqlx::query(AssertSqlSafe(format!(
                        "{INSERT_CUSTOMER} VALUES ($1, 0, '', '', 0, 1, 0, 1, $2, $2) ON CONFLICT (customer_id) \
                         DO UPDATE SET order_count = customers.order_count + 1, \
                         open_orders = customers.open_orders + 1, {LATEST}"
                    )))
                    .bind(&placed.customer_id)
                    .bind(at)
                    .execute(tx.statement())
                    .await?;
                    sqlx::query(
                        "INSERT INTO customer_orders (order_id, customer_id, open, spent_cents) VALUES ($1, $2, 1, 0)",
                    )
                    .bind(order_id)
                    .bind(&placed.customer_id)
                    .execute(tx.statement())
                    .await?;
                    placed.customer_id
                }
                OrderEvent::OrderConfirmed(confirmed) => {
                    sqlx::query("UPDATE customer_orders SET spent_cents = $2 WHERE order_id = $1")
                        .bind(order_id)
                        .bind(confirmed.total_cents)
                        .execute(tx.statement())
                        .await?;
                    // Saturating, in SQL that cannot overflow (PostgreSQL and
                    // CockroachDB fail `bigint + bigint` past the range, and
                    // the event would then be retried forever).
                    sqlx::query(
                        "UPDATE customers SET lifetime_spend_cents = CASE WHEN lifetime_spend_cents > $4 - $2 \
                         THEN $4 ELSE lifetime_spend_cents + $2 END, \
                         updated_at = CASE WHEN updated_at > $3 THEN updated_at ELSE $3 END WHERE customer_id = $1",
                    )
                    .bind(&confirmed.customer_id)
                    .bind(confirmed.total_cents.max(0))
                    .bind(at)
                    .bind(i64::MAX)
                    .execute(tx.statement())
                    .await?;
                    confirmed.customer_id
                }
                OrderEvent::OrderRejected(_) | OrderEvent::OrderShipped(_) => close(tx, order_id, false, at).await?,
                OrderEvent::OrderCancelled(_) => close(tx, order_id, true, at).await?,
            }
        };
        Ok(Some(ViewChange { view: VIEW.into(), id: customer_id, version: at as u64, scope: None, traceparent: None }))
    }
}

/// The start of an upsert of a customers row: a row appears with the
/// customer's registration or first order, whichever is projected first.
const INSERT_CUSTOMER: &str = "INSERT INTO customers (customer_id, registered, name, email, credit_limit_cents, \
     order_count, lifetime_spend_cents, open_orders, registered_at, updated_at)";

/// An upsert keeps the later of the row's and the event's times.
const LATEST: &str = "updated_at = CASE WHEN customers.updated_at > excluded.updated_at \
     THEN customers.updated_at ELSE excluded.updated_at END";

/// The order left the open ones; a cancellation also gives its spend back.
/// Two writes, no read: the customer's row takes what the order's
/// `customer_orders` row says (before the second statement closes it), and
/// returns whose it is. Returns that customer.
async fn close(tx: &mut ViewTx<'_>, order_id: &str, refund: bool, at: i64) -> Result<String, ProjectionError> {
    let customer: Option<String> = sqlx::query_scalar(
        "UPDATE customers SET \
         open_orders = open_orders - (SELECT open FROM customer_orders WHERE order_id = $1), \
         lifetime_spend_cents = lifetime_spend_cents - \
           (SELECT CASE WHEN $2 = 1 THEN spent_cents ELSE 0 END FROM customer_orders WHERE order_id = $1), \
         updated_at = CASE WHEN updated_at > $3 THEN updated_at ELSE $3 END \
         WHERE customer_id = (SELECT customer_id FROM customer_orders WHERE order_id = $1) RETURNING customer_id",
    )
    .bind(order_id)
    .bind(i64::from(refund))
    .bind(at)
    .fetch_optional(tx.statement())
    .await?;
    // No customer_orders row: the order's first event is not applied,
    // which its own stream's checkpoint rules out; never guess.
    let Some(customer) = customer else {
        return Err(ProjectionError::Gap { stream: format!("order-{order_id}"), version: 1 });
    };
    sqlx::query(
        "UPDATE customer_orders SET open = 0, spent_cents = CASE WHEN $2 = 1 THEN 0 ELSE spent_cents END \
         WHERE order_id = $1",
    )
    .bind(order_id)
    .bind(i64::from(refund))
    .execute(tx.statement())
    .await?;
    Ok(customer)
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
