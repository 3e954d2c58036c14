//! Dataloaders: nested fields of a list (each order's customer, each line's
//! product, each order's timeline) load in one statement per field, not one
//! per row.

use std::collections::HashMap;

use async_graphql::dataloader::Loader;
use read_side::customers::{CustomerRepository, CustomerView};
use read_side::orders::{OrderRepository, TimelineEntry};
use read_side::products::{ProductRepository, ProductView};

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
