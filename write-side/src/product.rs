//! The product aggregate: a catalog entry and its stock. Reservations are
//! per order, so reserving or releasing twice for one order changes nothing.

use std::collections::{HashMap, HashSet};

use schema::Rejection;
use schema::codes;
use schema::product::{
    self, ProductAdded, ProductCommand, ProductEvent, ProductRestocked, StockCommitted, StockReleased, StockReserved,
};

use crate::aggregate::Aggregate;

#[derive(Debug, Default)]
pub struct Product {
    exists: bool,
    price_cents: i64,
    on_hand: i64,
    /// Units held per order id.
    reservations: HashMap<String, u32>,
    /// The sum of `reservations`, kept as they change: deciding a
    /// reservation is O(1) however many are open.
    reserved: i64,
    /// Orders whose reservation was released (or committed): a reservation
    /// that arrives late for one of them, after a timed-out step was
    /// compensated, must not hold stock again.
    closed: HashSet<String>,
}

impl Product {
    /// Units that can still be reserved; never below zero.
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }
}

impl Aggregate for Product {
    const TYPE: &'static str = product::AGGREGATE;
    type Command = ProductCommand;
    type Event = ProductEvent;

    fn starts_stream(command: &Self::Command) -> bool {
        matches!(command, ProductCommand::AddProduct(_))
    }

    fn apply(&mut self, event: &ProductEvent) {
        match event {
            ProductEvent::ProductAdded(added) => {
                self.exists = true;
                self.price_cents = added.price_cents;
                self.on_hand = added.initial_stock;
            }
            ProductEvent::ProductRestocked(restocked) => self.on_hand = self.on_hand.saturating_add(restocked.quantity),
            ProductEvent::StockReserved(reserved) => {
                let previous = self.reservations.insert(reserved.order_id.clone(), reserved.quantity);
                self.reserved += i64::from(reserved.quantity) - i64::from(previous.unwrap_or(0));
            }
            ProductEvent::StockReleased(released) => {
                self.reserved -= i64::from(self.reservations.remove(&released.order_id).unwrap_or(0));
                self.closed.insert(released.order_id.clone());
            }
            ProductEvent::StockCommitted(committed) => {
                self.reserved -= i64::from(self.reservations.remove(&committed.order_id).unwrap_or(0));
                self.closed.insert(committed.order_id.clone());
                self.on_hand -= i64::from(committed.quantity);
            }
        }
    }

    fn decide(&self, command: &ProductCommand) -> Result<Vec<ProductEvent>, Rejection> {
        if let ProductCommand::AddProduct(add) = command {
            if self.exists {
                return Err(Rejection::new(codes::PRODUCT_ALREADY_EXISTS, "a product with this sku exists"));
            }
            add.validate()?;
            return Ok(vec![ProductEvent::ProductAdded(ProductAdded {
                name: add.name.trim().to_string(),
                price_cents: add.price_cents,
                initial_stock: add.initial_stock,
            })]);
        }
        if !self.exists {
            return Err(Rejection::new(codes::UNKNOWN_SKU, "no product with this sku"));
        }
        match command {
            ProductCommand::AddProduct(_) => Ok(Vec::new()),
            ProductCommand::RestockProduct(restock) => {
                restock.validate()?;
                if self.on_hand.saturating_add(restock.quantity) > product::MAX_STOCK {
                    return Err(Rejection::new(
                        codes::INVALID_QUANTITY,
                        format!("{} on hand: at most {} units fit on the shelf", self.on_hand, product::MAX_STOCK),
                    ));
                }
                Ok(vec![ProductEvent::ProductRestocked(ProductRestocked { quantity: restock.quantity })])
            }
            ProductCommand::ReserveStock(reserve) => {
                if self.reservations.contains_key(&reserve.order_id) {
                    return Ok(Vec::new());
                }
                if self.closed.contains(&reserve.order_id) {
                    return Err(Rejection::new(
                        codes::ORDER_CANCELLED,
                        "this order's reservation was already released",
                    ));
                }
                if let Some(expected) = reserve.expected_unit_price_cents
                    && expected != self.price_cents
                {
                    return Err(Rejection::new(
                        codes::PRICE_MISMATCH,
                        format!("expected {expected} cents, the catalog says {}", self.price_cents),
                    ));
                }
                let value = self.price_cents.saturating_mul(i64::from(reserve.quantity));
                if let Some(limit) = reserve.credit_limit_cents
                    && value > limit
                {
                    return Err(Rejection::new(
                        codes::CREDIT_LIMIT_EXCEEDED,
                        format!(
                            "{} units at {} cents exceed the credit limit of {limit} cents",
                            reserve.quantity, self.price_cents
                        ),
                    ));
                }
                if i64::from(reserve.quantity) > self.available() {
                    return Err(Rejection::new(
                        codes::OUT_OF_STOCK,
                        format!("{} requested, {} available", reserve.quantity, self.available()),
                    ));
                }
                Ok(vec![ProductEvent::StockReserved(StockReserved {
                    order_id: reserve.order_id.clone(),
                    quantity: reserve.quantity,
                    unit_price_cents: self.price_cents,
                })])
            }
            // Recorded even when nothing is held (quantity 0), to close the order.
            ProductCommand::ReleaseStock(release) if self.closed.contains(&release.order_id) => Ok(Vec::new()),
            ProductCommand::ReleaseStock(release) => Ok(vec![ProductEvent::StockReleased(StockReleased {
                order_id: release.order_id.clone(),
                quantity: self.reservations.get(&release.order_id).copied().unwrap_or(0),
            })]),
            ProductCommand::CommitStock(commit) => Ok(self
                .reservations
                .get(&commit.order_id)
                .map(|quantity| {
                    ProductEvent::StockCommitted(StockCommitted {
                        order_id: commit.order_id.clone(),
                        quantity: *quantity,
                    })
                })
                .into_iter()
                .collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::product::{AddProduct, CommitStock, ReleaseStock, ReserveStock, RestockProduct};

    fn given(events: &[ProductEvent]) -> Product {
        let mut product = Product::default();
        events.iter().for_each(|event| product.apply(event));
        product
    }

    fn added(stock: i64) -> ProductEvent {
        ProductEvent::ProductAdded(ProductAdded { name: "Book".into(), price_cents: 1250, initial_stock: stock })
    }

    fn reserve(order: &str, quantity: u32) -> ProductCommand {
        ProductCommand::ReserveStock(ReserveStock {
            order_id: order.into(),
            quantity,
            expected_unit_price_cents: None,
            credit_limit_cents: None,
        })
    }

    fn reserved(order: &str, quantity: u32) -> ProductEvent {
        ProductEvent::StockReserved(StockReserved { order_id: order.into(), quantity, unit_price_cents: 1250 })
    }

    fn code(result: Result<Vec<ProductEvent>, Rejection>) -> String {
        result.err().map(|rejection| rejection.code).unwrap_or_default()
    }

    #[test]
    fn a_reservation_takes_the_catalog_price() {
        assert_eq!(given(&[added(5)]).decide(&reserve("o1", 2)), Ok(vec![reserved("o1", 2)]));
    }

    #[test]
    fn a_reservation_beyond_availability_is_out_of_stock() {
        let product = given(&[added(5), reserved("o1", 4)]);
        assert_eq!(product.available(), 1);
        assert_eq!(code(product.decide(&reserve("o2", 2))), codes::OUT_OF_STOCK);
        assert!(product.decide(&reserve("o2", 1)).is_ok());
    }

    #[test]
    fn reserving_twice_for_one_order_changes_nothing() {
        assert_eq!(given(&[added(5), reserved("o1", 2)]).decide(&reserve("o1", 2)), Ok(vec![]));
    }

    #[test]
    fn a_different_expected_price_is_rejected() {
        let command = ProductCommand::ReserveStock(ReserveStock {
            order_id: "o1".into(),
            quantity: 1,
            expected_unit_price_cents: Some(999),
            credit_limit_cents: None,
        });
        assert_eq!(code(given(&[added(5)]).decide(&command)), codes::PRICE_MISMATCH);
    }

    #[test]
    fn an_unknown_product_rejects_everything_but_adding_it() {
        assert_eq!(code(given(&[]).decide(&reserve("o1", 1))), codes::UNKNOWN_SKU);
        let add = ProductCommand::AddProduct(AddProduct { name: "Pen".into(), price_cents: 100, initial_stock: 0 });
        assert!(given(&[]).decide(&add).is_ok());
        assert_eq!(code(given(&[added(1)]).decide(&add)), codes::PRODUCT_ALREADY_EXISTS);
    }

    #[test]
    fn release_and_commit_apply_once_per_order() {
        let product = given(&[added(5), reserved("o1", 2)]);
        let release = ProductCommand::ReleaseStock(ReleaseStock { order_id: "o1".into() });
        let events = product.decide(&release).expect("released");
        assert_eq!(events, vec![ProductEvent::StockReleased(StockReleased { order_id: "o1".into(), quantity: 2 })]);
        let after = given(&[added(5), reserved("o1", 2), events[0].clone()]);
        assert_eq!(after.available(), 5);
        assert_eq!(after.decide(&release), Ok(vec![]));
        assert_eq!(code(after.decide(&reserve("o1", 1))), codes::ORDER_CANCELLED, "a late reservation stays closed");

        let commit = ProductCommand::CommitStock(CommitStock { order_id: "o1".into() });
        let committed = product.decide(&commit).expect("committed");
        let shipped = given(&[added(5), reserved("o1", 2), committed[0].clone()]);
        assert_eq!((shipped.on_hand, shipped.available()), (3, 3));
    }

    #[test]
    fn releasing_what_was_never_reserved_closes_the_order() {
        let release = ProductCommand::ReleaseStock(ReleaseStock { order_id: "o9".into() });
        let events = given(&[added(5)]).decide(&release).expect("recorded");
        assert_eq!(events, vec![ProductEvent::StockReleased(StockReleased { order_id: "o9".into(), quantity: 0 })]);
        assert_eq!(code(given(&[added(5), events[0].clone()]).decide(&reserve("o9", 1))), codes::ORDER_CANCELLED);
    }

    #[test]
    fn a_line_worth_more_than_the_credit_limit_holds_nothing() {
        let reserve = |limit: i64| {
            ProductCommand::ReserveStock(ReserveStock {
                order_id: "o1".into(),
                quantity: 2,
                expected_unit_price_cents: None,
                credit_limit_cents: Some(limit),
            })
        };
        assert_eq!(code(given(&[added(5)]).decide(&reserve(2499))), codes::CREDIT_LIMIT_EXCEEDED);
        assert_eq!(given(&[added(5)]).decide(&reserve(2500)), Ok(vec![reserved("o1", 2)]));
    }

    #[test]
    fn the_shelf_holds_at_most_the_stock_cap() {
        let restock = |quantity| ProductCommand::RestockProduct(RestockProduct { quantity });
        let full = given(&[added(product::MAX_STOCK - 1)]);
        assert!(full.decide(&restock(1)).is_ok());
        assert_eq!(code(full.decide(&restock(2))), codes::INVALID_QUANTITY);
    }

    #[test]
    fn restocking_adds_to_the_shelf() {
        let restock = ProductCommand::RestockProduct(RestockProduct { quantity: 3 });
        let events = given(&[added(1)]).decide(&restock).expect("restocked");
        assert_eq!(given(&[added(1), events[0].clone()]).available(), 4);
        let zero = ProductCommand::RestockProduct(RestockProduct { quantity: 0 });
        assert_eq!(code(given(&[added(1)]).decide(&zero)), codes::INVALID_QUANTITY);
    }
}
