//! The product aggregate's contract: the catalog entry and its stock. The
//! aggregate id is the sku.

use serde::{Deserialize, Serialize};

use crate::codes;
use crate::envelope::Message;
use crate::order::MAX_SKU_CHARS;
use crate::outcome::Rejection;

pub const AGGREGATE: &str = "product";
/// Units on one product's shelf, and in one restock.
pub const MAX_STOCK: i64 = 1_000_000_000;
/// The highest price of one unit (ten million in currency units): with the
/// order rules, no total, spend or view sum can overflow an i64.
pub const MAX_PRICE_CENTS: i64 = 1_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddProduct {
    pub name: String,
    pub price_cents: i64,
    pub initial_stock: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestockProduct {
    pub quantity: i64,
}

/// Holds stock for an order (sent by the order saga).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveStock {
    pub order_id: String,
    pub quantity: u32,
    /// The price the customer saw, if any: a different catalog price rejects.
    #[serde(default)]
    pub expected_unit_price_cents: Option<i64>,
    /// The customer's credit limit: a line worth more at the catalog price
    /// cannot be paid, so it is refused (CREDIT_LIMIT_EXCEEDED) before any
    /// stock is held. Absent in commands sent before the rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit_limit_cents: Option<i64>,
}

/// Gives an order's reservation back (compensation, or cancellation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseStock {
    pub order_id: String,
}

/// The order shipped: its reserved units leave the shelf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitStock {
    pub order_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum ProductCommand {
    AddProduct(AddProduct),
    RestockProduct(RestockProduct),
    ReserveStock(ReserveStock),
    ReleaseStock(ReleaseStock),
    CommitStock(CommitStock),
}

impl Message for ProductCommand {
    const KIND: &'static str = "command";
    fn schema_version(type_name: &str) -> Option<u32> {
        matches!(type_name, "AddProduct" | "RestockProduct" | "ReserveStock" | "ReleaseStock" | "CommitStock")
            .then_some(1)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductAdded {
    pub name: String,
    pub price_cents: i64,
    pub initial_stock: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductRestocked {
    pub quantity: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReserved {
    pub order_id: String,
    pub quantity: u32,
    /// The catalog price at reservation: what the order is charged.
    pub unit_price_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReleased {
    pub order_id: String,
    pub quantity: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockCommitted {
    pub order_id: String,
    pub quantity: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum ProductEvent {
    ProductAdded(ProductAdded),
    ProductRestocked(ProductRestocked),
    StockReserved(StockReserved),
    StockReleased(StockReleased),
    StockCommitted(StockCommitted),
}

impl Message for ProductEvent {
    const KIND: &'static str = "event";
    fn schema_version(type_name: &str) -> Option<u32> {
        matches!(type_name, "ProductAdded" | "ProductRestocked" | "StockReserved" | "StockReleased" | "StockCommitted")
            .then_some(1)
    }
}

impl ProductEvent {
    /// The order an event is about, for the order's timeline.
    pub fn order_id(&self) -> Option<&str> {
        match self {
            Self::StockReserved(e) => Some(&e.order_id),
            Self::StockReleased(e) => Some(&e.order_id),
            Self::StockCommitted(e) => Some(&e.order_id),
            Self::ProductAdded(_) | Self::ProductRestocked(_) => None,
        }
    }
}

/// A sku: 1 to 64 of `[A-Za-z0-9._-]`, so it is also a safe subject token and URL part.
pub fn validate_sku(sku: &str) -> Result<(), Rejection> {
    let valid = !sku.is_empty()
        && sku.len() <= MAX_SKU_CHARS
        && sku.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(Rejection::new(codes::INVALID_SKU, format!("sku `{sku}` must be 1 to 64 of A-Z a-z 0-9 . _ -")))
    }
}

impl AddProduct {
    pub fn validate(&self) -> Result<(), Rejection> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(Rejection::new(codes::INVALID_NAME, "product name must be 1 to 200 characters"));
        }
        if !(0..=MAX_PRICE_CENTS).contains(&self.price_cents) {
            return Err(Rejection::new(codes::INVALID_PRICE, format!("price must be 0 to {MAX_PRICE_CENTS} cents")));
        }
        if !(0..=MAX_STOCK).contains(&self.initial_stock) {
            return Err(Rejection::new(codes::INVALID_QUANTITY, format!("initial stock must be 0 to {MAX_STOCK}")));
        }
        Ok(())
    }
}

impl RestockProduct {
    pub fn validate(&self) -> Result<(), Rejection> {
        if !(1..=MAX_STOCK).contains(&self.quantity) {
            return Err(Rejection::new(codes::INVALID_QUANTITY, format!("restock quantity must be 1 to {MAX_STOCK}")));
        }
        Ok(())
    }
}
