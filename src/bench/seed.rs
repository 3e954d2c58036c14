//! The catalog and customer a bench run orders from: fresh names per run,
//! so the bench can run again on the same deployment, and so much stock and
//! credit that no order is refused for lack of either.

use anyhow::Context as _;
use serde_json::{Value, json};

use super::client::{Gateway, expect_accepted};

/// Units of each product: more than any run can order.
const STOCK: i64 = 1_000_000_000;
/// The customer's credit limit in cents: more than any run can spend.
const CREDIT_CENTS: i64 = 1_000_000_000;
const PRICE_CENTS: i64 = 990;

/// The catalog and customer this run orders from.
#[derive(Clone, Debug)]
pub(crate) struct Seed {
    pub customer_id: String,
    pub skus: Vec<String>,
}

impl Seed {
    /// Adds `skus` products and registers one customer.
    pub async fn create(gateway: &Gateway, skus: usize) -> anyhow::Result<Self> {
        let run = uuid::Uuid::now_v7().simple().to_string();
        let add = "mutation($input: AddProductInput!) { addProduct(input: $input) { status } }";
        let mut names = Vec::with_capacity(skus);
        for n in 0..skus {
            let sku = format!("bench-{}-{n}", &run[20..]);
            let input = json!({ "sku": sku, "name": sku, "priceCents": PRICE_CENTS, "initialStock": STOCK });
            expect_accepted(gateway.post(add, json!({ "input": input })).await?, "addProduct")?;
            names.push(sku);
        }
        let register =
            "mutation($input: RegisterCustomerInput!) { registerCustomer(input: $input) { status customerId } }";
        // Emails are unique per customer: a fresh one per run.
        let email = format!("bench-{run}@example.com");
        let input = json!({ "name": "Bench", "email": email, "creditLimitCents": CREDIT_CENTS });
        let answer = gateway.post(register, json!({ "input": input })).await?;
        let customer_id = expect_accepted(answer, "registerCustomer")?["customerId"]
            .as_str()
            .context("registerCustomer returned no id")?
            .to_string();
        Ok(Self { customer_id, skus: names })
    }

    /// The lines of order `n`: `lines` different products, taking turns
    /// through the catalog so every product gets the same share.
    pub fn items(&self, n: usize, lines: usize, quantity: u32) -> Value {
        let first = n.wrapping_mul(lines);
        let items: Vec<Value> = (0..lines)
            .map(|line| json!({ "sku": self.skus[(first + line) % self.skus.len()], "quantity": quantity }))
            .collect();
        Value::Array(items)
    }

    /// `placeOrder`'s input for order `n`.
    pub fn order(&self, n: usize, lines: usize, quantity: u32, idempotency_key: Option<String>) -> Value {
        let mut input = json!({ "customerId": self.customer_id, "items": self.items(n, lines, quantity) });
        if let Some(key) = idempotency_key {
            input["idempotencyKey"] = Value::String(key);
        }
        input
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    fn seed(skus: usize) -> Seed {
        Seed { customer_id: "c".into(), skus: (0..skus).map(|n| format!("s{n}")).collect() }
    }

    fn skus_of(items: &Value) -> Vec<String> {
        items.as_array().unwrap().iter().map(|line| line["sku"].as_str().unwrap().to_string()).collect()
    }

    #[test]
    fn every_line_of_an_order_is_a_different_product_and_products_share_the_load() {
        let seed = seed(5);
        let mut counts = BTreeMap::<String, usize>::new();
        for n in 0..50 {
            let skus = skus_of(&seed.items(n, 2, 1));
            assert_eq!(skus.iter().collect::<BTreeSet<_>>().len(), 2, "order {n}: {skus:?}");
            for sku in skus {
                *counts.entry(sku).or_default() += 1;
            }
        }
        assert_eq!(counts.values().copied().collect::<BTreeSet<_>>(), BTreeSet::from([20]), "{counts:?}");
    }

    #[test]
    fn a_flash_sale_orders_one_product_and_keys_go_into_the_input() {
        let seed = seed(1);
        assert_eq!(skus_of(&seed.items(7, 1, 1)), ["s0"]);
        let input = seed.order(3, 1, 2, Some("key".into()));
        assert_eq!(input["idempotencyKey"], "key");
        assert_eq!(input["items"][0]["quantity"], 2);
        assert!(seed.order(3, 1, 1, None).get("idempotencyKey").is_none());
    }
}
