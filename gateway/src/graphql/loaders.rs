//! Dataloaders: nested fields of a list (each order's customer, each line's
//! product, each order's timeline) load in one statement per field, not one
//! per row.
//!
//! A loader batches the keys requested within a short delay, which depends
//! on timing; so a list resolver also asks its loaders for the whole page up
//! front ([`Prefetched`]), for exactly the nested fields the query selects.
//! The nested resolvers then read from that, and fall back to the loaders
//! (for a single `order`, or a subscription's update).

use std::collections::HashMap;

use async_graphql::dataloader::{DataLoader, Loader};
use async_graphql::{Context, Error};
use read_side::customers::{CustomerRepository, CustomerView};
use read_side::orders::OrderView;
use read_side::orders::{OrderRepository, TimelineEntry};
use read_side::products::{ProductRepository, ProductView};

use crate::graphql::errors::internal;

pub struct CustomerLoader(pub CustomerRepository);

impl Loader<String> for CustomerLoader {
    type Value = CustomerView;
    type Error = String;

    async fn load(&self, ids: &[String]) -> Result<HashMap<String, CustomerView>, Self::Error> {
        let customers = self.0.get_many(ids).await.map_err(|error| error.to_string())?;
        Ok(customers.into_iter().map(|customer| (customer.customer_id.clone(), customer)).collect())
    }
}

pub struct ProductLoader(pub ProductRepository);

impl Loader<String> for ProductLoader {
    type Value = ProductView;
    type Error = String;

    async fn load(&self, skus: &[String]) -> Result<HashMap<String, ProductView>, Self::Error> {
        let products = self.0.get_many(skus).await.map_err(|error| error.to_string())?;
        Ok(products.into_iter().map(|product| (product.sku.clone(), product)).collect())
    }
}

pub struct TimelineLoader(pub OrderRepository);

impl Loader<String> for TimelineLoader {
    type Value = Vec<TimelineEntry>;
    type Error = String;

    async fn load(&self, order_ids: &[String]) -> Result<HashMap<String, Vec<TimelineEntry>>, Self::Error> {
        let mut timelines: HashMap<String, Vec<TimelineEntry>> = HashMap::new();
        for entry in self.0.timelines(order_ids).await.map_err(|error| error.to_string())? {
            timelines.entry(entry.order_id.clone()).or_default().push(entry);
        }
        Ok(timelines)
    }
}

/// Nested data loaded for a whole page of orders; `None` where the query
/// did not select the field.
#[derive(Default)]
pub struct Prefetched {
    pub customers: Option<HashMap<String, CustomerView>>,
    pub products: Option<HashMap<String, ProductView>>,
    pub timelines: Option<HashMap<String, Vec<TimelineEntry>>>,
}

impl Prefetched {
    /// One batch per selected nested field of `edges { node { … } }`.
    pub async fn for_orders(ctx: &Context<'_>, orders: &[OrderView]) -> Result<Self, Error> {
        let node = ctx.look_ahead().field("edges").field("node");
        let mut prefetched = Self::default();
        // Personal data: not fetched for a caller who may not see it (the field refuses it).
        let personal = ctx.data::<crate::auth::Caller>().is_ok_and(crate::auth::Caller::may_read_personal_data);
        if personal && node.field("customer").exists() {
            let ids = unique(orders.iter().map(|order| order.customer_id.clone()));
            let loader = ctx.data::<DataLoader<CustomerLoader>>()?;
            prefetched.customers = Some(loader.load_many(ids).await.map_err(internal)?);
        }
        if node.field("items").field("product").exists() {
            let skus = unique(orders.iter().flat_map(|order| order.items.iter().map(|line| line.sku.clone())));
            let loader = ctx.data::<DataLoader<ProductLoader>>()?;
            prefetched.products = Some(loader.load_many(skus).await.map_err(internal)?);
        }
        if node.field("timeline").exists() {
            let ids = unique(orders.iter().map(|order| order.order_id.clone()));
            let loader = ctx.data::<DataLoader<TimelineLoader>>()?;
            prefetched.timelines = Some(loader.load_many(ids).await.map_err(internal)?);
        }
        Ok(prefetched)
    }
}

fn unique(keys: impl Iterator<Item = String>) -> Vec<String> {
    let mut keys: Vec<String> = keys.collect();
    keys.sort();
    keys.dedup();
    keys
}
