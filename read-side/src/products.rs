//! The `products` view: the catalog with `onHand`, `reserved` and
//! `available` stock. The table's CHECK constraint holds the stock
//! invariant for every projected version.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use schema::EventEnvelope;
use schema::envelope::Message;
use schema::ports::ViewChange;
use schema::product::{self, ProductEvent};
use schema::sql::{from_micros, to_micros};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::projection::{Announce, Projection, ProjectionError, ViewTable, ViewTx};
use crate::views::{Bind, ViewStore};

pub const VIEW: &str = "products";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductView {
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    pub on_hand: i64,
    pub reserved: i64,
    pub version: u64,
    pub added_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ProductView {
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }
}

pub struct ProductsProjection;

#[async_trait]
impl Projection for ProductsProjection {
    fn name(&self) -> &'static str {
        VIEW
    }

    fn aggregate_types(&self) -> &'static [&'static str] {
        &[product::AGGREGATE]
    }

    fn tables(&self) -> &'static [ViewTable] {
        &[ViewTable {
            name: "products",
            key: &["sku"],
            announce: Some(Announce { id: "sku", version: "version", scope: None }),
        }]
    }

    async fn apply(&self, tx: &mut ViewTx<'_>, event: &EventEnvelope) -> Result<Option<ViewChange>, ProjectionError> {
        let decoded = ProductEvent::decode(event).map_err(|error| ProjectionError::Contract(error.to_string()))?;
        let (sku, at, version) = (&event.aggregate_id, to_micros(event.timestamp), event.stream_version as i64);
        if let ProductEvent::ProductAdded(added) = &decoded {
            sqlx::query(
                "INSERT INTO products (sku, name, price_cents, on_hand, reserved, version, added_at, updated_at) \
                 VALUES ($1, $2, $3, $4, 0, $5, $6, $6)",
            )
            .bind(sku)
            .bind(&added.name)
            .bind(added.price_cents)
            .bind(added.initial_stock)
            .bind(version)
            .bind(at)
            .execute(tx.statement())
            .await?;
        } else {
            let (on_hand, reserved) = match &decoded {
                ProductEvent::ProductRestocked(restocked) => (restocked.quantity, 0),
                ProductEvent::StockReserved(reserved) => (0, i64::from(reserved.quantity)),
                ProductEvent::StockReleased(released) => (0, -i64::from(released.quantity)),
                ProductEvent::StockCommitted(committed) => {
                    (-i64::from(committed.quantity), -i64::from(committed.quantity))
                }
                ProductEvent::ProductAdded(_) => (0, 0),
            };
            sqlx::query(
                "UPDATE products SET on_hand = on_hand + $2, reserved = reserved + $3, version = $4, updated_at = $5 \
                 WHERE sku = $1",
            )
            .bind(sku)
            .bind(on_hand)
            .bind(reserved)
            .bind(version)
            .bind(at)
            .execute(tx.statement())
            .await?;
        }
        Ok(Some(ViewChange {
            view: VIEW.into(),
            id: sku.clone(),
            version: event.stream_version,
            scope: None,
            traceparent: None,
        }))
    }
}

const COLUMNS: &str = "sku, name, price_cents, on_hand, reserved, version, added_at, updated_at";

#[derive(Clone)]
pub struct ProductRepository {
    views: ViewStore,
}

impl ProductRepository {
    pub fn new(views: ViewStore) -> Self {
        Self { views }
    }

    /// The products among `skus`, in one statement.
    pub async fn get_many(&self, skus: &[String]) -> Result<Vec<ProductView>, sqlx::Error> {
        let select = format!("SELECT {COLUMNS} FROM products WHERE sku IN ({{keys}})");
        self.views.fetch_in(&select, skus).await?.iter().map(product_from_row).collect()
    }

    pub async fn get(&self, sku: &str) -> Result<Option<ProductView>, sqlx::Error> {
        Ok(self.get_many(&[sku.to_string()]).await?.into_iter().next())
    }

    /// Up to `limit` products in sku order, after `after`.
    pub async fn list(&self, after: Option<&str>, limit: u32) -> Result<Vec<ProductView>, sqlx::Error> {
        let (sql, binds) = match after {
            Some(after) => (
                format!("SELECT {COLUMNS} FROM products WHERE sku > $1 ORDER BY sku LIMIT $2"),
                vec![Bind::Text(after.to_string()), Bind::Int(i64::from(limit))],
            ),
            None => {
                (format!("SELECT {COLUMNS} FROM products ORDER BY sku LIMIT $1"), vec![Bind::Int(i64::from(limit))])
            }
        };
        let rows = self.views.fetch_all(sql, binds).await?;
        rows.iter().map(product_from_row).collect()
    }
}

fn product_from_row(row: &AnyRow) -> Result<ProductView, sqlx::Error> {
    Ok(ProductView {
        sku: row.try_get("sku")?,
        name: row.try_get("name")?,
        price_cents: row.try_get("price_cents")?,
        on_hand: row.try_get("on_hand")?,
        reserved: row.try_get("reserved")?,
        version: row.try_get::<i64, _>("version")? as u64,
        added_at: from_micros(row.try_get("added_at")?),
        updated_at: from_micros(row.try_get("updated_at")?),
    })
}
