//! The order as GraphQL shows it: status, lines, timeline.

use std::sync::Arc;

use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, Enum, Error, ID, Object};
use chrono::{DateTime, Utc};
use read_side::orders::{self as view, OrderView, TimelineEntry, ViewLine};

use crate::graphql::commands::caller;
use crate::graphql::customers::Customer;
use crate::graphql::errors::internal;
use crate::graphql::loaders::{CustomerLoader, Prefetched, ProductLoader, TimelineLoader};
use crate::graphql::products::Product;

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum OrderStatus {
    /// Placed; stock and payment are being arranged.
    Pending,
    Confirmed,
    Rejected,
    Cancelled,
    Shipped,
}

impl From<view::OrderStatus> for OrderStatus {
    fn from(status: view::OrderStatus) -> Self {
        match status {
            view::OrderStatus::Pending => Self::Pending,
            view::OrderStatus::Confirmed => Self::Confirmed,
            view::OrderStatus::Rejected => Self::Rejected,
            view::OrderStatus::Cancelled => Self::Cancelled,
            view::OrderStatus::Shipped => Self::Shipped,
        }
    }
}

impl From<OrderStatus> for view::OrderStatus {
    fn from(status: OrderStatus) -> Self {
        match status {
            OrderStatus::Pending => Self::Pending,
            OrderStatus::Confirmed => Self::Confirmed,
            OrderStatus::Rejected => Self::Rejected,
            OrderStatus::Cancelled => Self::Cancelled,
            OrderStatus::Shipped => Self::Shipped,
        }
    }
}

/// An order as the read side last projected it, with its page's
/// prefetched nested data when it came in a list.
pub struct Order(pub OrderView, pub Option<Arc<Prefetched>>);

impl Order {
    pub fn single(view: OrderView) -> Self {
        Self(view, None)
    }
}

#[Object]
impl Order {
    async fn id(&self) -> ID {
        ID(self.0.order_id.clone())
    }
    async fn customer_id(&self) -> ID {
        ID(self.0.customer_id.clone())
    }
    /// The customer, if registered: personal data, for the customer itself
    /// and admin only (FORBIDDEN for `service`).
    async fn customer(&self, ctx: &Context<'_>) -> Result<Option<Customer>, Error> {
        caller(ctx)?.require_personal_data(&self.0.customer_id, "read customers' personal data")?;
        if let Some(customers) = self.1.as_ref().and_then(|prefetched| prefetched.customers.as_ref()) {
            return Ok(customers.get(&self.0.customer_id).cloned().map(Customer));
        }
        let loader = ctx.data::<DataLoader<CustomerLoader>>()?;
        Ok(loader.load_one(self.0.customer_id.clone()).await.map_err(internal)?.map(Customer))
    }
    async fn status(&self) -> OrderStatus {
        self.0.status.into()
    }
    /// NONE, AUTHORIZED, DECLINED, CAPTURED, REFUNDED or VOIDED.
    async fn payment_status(&self) -> &str {
        &self.0.payment_status
    }
    /// NONE, PARTIAL, RESERVED, RELEASED or COMMITTED.
    async fn stock_status(&self) -> &str {
        &self.0.stock_status
    }
    /// Why the order was rejected, once it is.
    async fn rejection_reason(&self) -> Option<&str> {
        self.0.rejection_reason.as_deref()
    }
    /// The code of the rejection (`OUT_OF_STOCK`, `PAYMENT_DECLINED`, …).
    async fn rejection_code(&self) -> Option<&str> {
        self.0.rejection_code.as_deref()
    }
    async fn items(&self) -> Vec<OrderLine> {
        self.0.items.iter().cloned().map(|line| OrderLine(line, self.1.clone())).collect()
    }
    /// The catalog total, once the catalog has priced every line (null
    /// until then: a PENDING order's total is not known yet, not zero).
    /// Final once CONFIRMED.
    async fn total_cents(&self) -> Option<i64> {
        self.0.items.iter().all(|line| line.unit_price_cents.is_some()).then_some(self.0.total_cents)
    }
    /// Why the order was cancelled, once it is.
    async fn cancel_reason(&self) -> Option<&str> {
        self.0.cancel_reason.as_deref()
    }
    /// The order stream's version this view reflects; grows with every order event.
    async fn version(&self) -> i64 {
        self.0.version as i64
    }
    async fn placed_at(&self) -> DateTime<Utc> {
        self.0.placed_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// Every event of the order and of the steps taken for it, oldest first.
    async fn timeline(&self, ctx: &Context<'_>) -> Result<Vec<TimelineItem>, Error> {
        if let Some(timelines) = self.1.as_ref().and_then(|prefetched| prefetched.timelines.as_ref()) {
            let entries = timelines.get(&self.0.order_id).cloned().unwrap_or_default();
            return Ok(entries.into_iter().map(TimelineItem).collect());
        }
        let loader = ctx.data::<DataLoader<TimelineLoader>>()?;
        let entries = loader.load_one(self.0.order_id.clone()).await.map_err(internal)?.unwrap_or_default();
        Ok(entries.into_iter().map(TimelineItem).collect())
    }
}

pub struct OrderLine(ViewLine, Option<Arc<Prefetched>>);

#[Object]
impl OrderLine {
    async fn sku(&self) -> &str {
        &self.0.sku
    }
    async fn quantity(&self) -> i32 {
        self.0.quantity as i32
    }
    /// The catalog price it was reserved at; null until then.
    async fn unit_price_cents(&self) -> Option<i64> {
        self.0.unit_price_cents
    }
    async fn product(&self, ctx: &Context<'_>) -> Result<Option<Product>, Error> {
        if let Some(products) = self.1.as_ref().and_then(|prefetched| prefetched.products.as_ref()) {
            return Ok(products.get(&self.0.sku).cloned().map(Product));
        }
        let loader = ctx.data::<DataLoader<ProductLoader>>()?;
        Ok(loader.load_one(self.0.sku.clone()).await.map_err(internal)?.map(Product))
    }
}

pub struct TimelineItem(TimelineEntry);

#[Object]
impl TimelineItem {
    async fn at(&self) -> DateTime<Utc> {
        self.0.at
    }
    /// The event's type, e.g. `StockReserved`.
    #[graphql(name = "type")]
    async fn event_type(&self) -> &str {
        &self.0.event_type
    }
    /// The aggregate that recorded it: order, product or payment.
    async fn aggregate_type(&self) -> &str {
        &self.0.aggregate_type
    }
    async fn aggregate_id(&self) -> &str {
        &self.0.aggregate_id
    }
    /// The message that caused it (a command id).
    async fn causation_id(&self) -> &str {
        &self.0.causation_id
    }
    /// Who caused it: a caller (`customer:<id>`, `admin:<id>`,
    /// `service:<id>`) or the saga. Customers see staff as `staff`.
    async fn actor(&self, ctx: &Context<'_>) -> Result<&str, Error> {
        Ok(caller(ctx)?.shown_actor(&self.0.actor))
    }
    async fn summary(&self) -> &str {
        &self.0.summary
    }
}
