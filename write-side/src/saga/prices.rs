//! The catalog prices this process's sagas have seen reserved, so the
//! customer check can tell what an order is worth before any of its stock
//! is held (credit before stock), without asking anyone: a product's price
//! is set when it is added and no command changes it, so a price seen in
//! one reservation holds for every later one. (A command that changes
//! prices would have to teach this cache too.) Lines whose price is not
//! known yet count at the price the client expects (an order expecting
//! another price than the catalog's is refused anyway), else nothing: the
//! estimate is never above what an order that can succeed will cost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use schema::order::{OrderLine, PricedLine};

/// Skus remembered at most; past it the cache starts over (forgetting
/// costs only an estimate that is lower for a while).
const REMEMBERED: usize = 100_000;

#[derive(Clone, Default)]
pub(super) struct CatalogPrices(Arc<Mutex<HashMap<String, i64>>>);

impl CatalogPrices {
    /// Remembers the prices of reserved lines.
    pub fn learn(&self, reserved: &[PricedLine]) {
        if reserved.is_empty() {
            return;
        }
        let mut prices = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for line in reserved {
            if prices.len() >= REMEMBERED && !prices.contains_key(&line.sku) {
                prices.clear();
            }
            prices.insert(line.sku.clone(), line.unit_price_cents);
        }
    }

    /// What `lines` are worth at least: known catalog prices, else the
    /// prices the client expects, else nothing. Saturating.
    pub fn least_value_cents(&self, lines: &[OrderLine]) -> i64 {
        let prices = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        lines.iter().fold(0i64, |sum, line| {
            let price = prices.get(&line.sku).copied().or(line.expected_unit_price_cents).unwrap_or(0).max(0);
            sum.saturating_add(price.saturating_mul(i64::from(line.quantity)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sku: &str, quantity: u32, expected: Option<i64>) -> OrderLine {
        OrderLine { sku: sku.into(), quantity, expected_unit_price_cents: expected }
    }

    #[test]
    fn known_prices_count_then_expected_ones_then_nothing() {
        let prices = CatalogPrices::default();
        let lines = [line("a", 2, None), line("b", 1, Some(300)), line("c", 5, None)];
        assert_eq!(prices.least_value_cents(&lines), 300);
        prices.learn(&[PricedLine { sku: "a".into(), quantity: 9, unit_price_cents: 1000 }]);
        assert_eq!(prices.least_value_cents(&lines), 2300);
        prices.learn(&[PricedLine { sku: "b".into(), quantity: 1, unit_price_cents: 250 }]);
        assert_eq!(prices.least_value_cents(&lines), 2250, "the catalog's price over the client's");
    }
}
