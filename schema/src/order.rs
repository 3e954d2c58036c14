//! The order aggregate's contract: commands, events, and the input rules that
//! the gateway checks up front and the write side checks again when deciding.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::codes;
use crate::envelope::{ContractError, EventEnvelope, Message};
use crate::outcome::Rejection;
use crate::product::MAX_PRICE_CENTS;

/// The aggregate type name: subjects `cmd.order.*`, `evt.order.<id>`, streams `order-<id>`.
pub const AGGREGATE: &str = "order";

/// Limits from the order rules. Lines and quantities hold after lines of
/// one sku are merged too (one reservation per product), so with prices at
/// most [`crate::product::MAX_PRICE_CENTS`] no order total can overflow.
pub const MAX_LINES: usize = 100;
/// Units of one sku in one order, whether in one line or several.
pub const MAX_QUANTITY: u32 = 1000;
/// The most one order may be worth at the prices the client expects.
pub const MAX_ORDER_CENTS: i64 = 10_000_000_000;
pub const MAX_SKU_CHARS: usize = 64;
pub const MAX_REASON_CHARS: usize = 500;

/// One line of an order: what the customer wants. The price comes from the
/// catalog when the stock is reserved; a price the client sends is only an
/// expectation, checked against the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: String,
    pub quantity: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_unit_price_cents: Option<i64>,
}

/// A line with the catalog price it was reserved at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricedLine {
    pub sku: String,
    pub quantity: u32,
    pub unit_price_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceOrder {
    pub customer_id: String,
    pub items: Vec<OrderLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelOrder {
    pub reason: String,
}

/// Sent by the order saga once stock is reserved and payment authorized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmOrder {
    pub lines: Vec<PricedLine>,
    pub total_cents: i64,
}

/// Sent by the order saga when a step failed and was compensated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectOrder {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipOrder {}

/// Commands the order aggregate handles (imperative).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum OrderCommand {
    PlaceOrder(PlaceOrder),
    CancelOrder(CancelOrder),
    ConfirmOrder(ConfirmOrder),
    RejectOrder(RejectOrder),
    ShipOrder(ShipOrder),
}

impl Message for OrderCommand {
    const KIND: &'static str = "command";
    fn schema_version(type_name: &str) -> Option<u32> {
        match type_name {
            "PlaceOrder" | "CancelOrder" | "ConfirmOrder" | "RejectOrder" | "ShipOrder" => Some(1),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub customer_id: String,
    pub items: Vec<OrderLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderConfirmed {
    pub customer_id: String,
    pub lines: Vec<PricedLine>,
    pub total_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRejected {
    pub customer_id: String,
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub reason: String,
    /// Added in v2; empty when loaded from a v1 event.
    #[serde(default)]
    pub customer_id: String,
    /// Whether it was CONFIRMED (so its payment is refunded). Added in v2.
    #[serde(default)]
    pub was_confirmed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderShipped {
    pub customer_id: String,
}

/// Facts about an order (past tense).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum OrderEvent {
    OrderPlaced(OrderPlaced),
    OrderConfirmed(OrderConfirmed),
    OrderRejected(OrderRejected),
    OrderCancelled(OrderCancelled),
    OrderShipped(OrderShipped),
}

impl Message for OrderEvent {
    const KIND: &'static str = "event";
    fn schema_version(type_name: &str) -> Option<u32> {
        match type_name {
            "OrderPlaced" => Some(3),
            "OrderCancelled" => Some(2),
            "OrderConfirmed" | "OrderRejected" | "OrderShipped" => Some(1),
            _ => None,
        }
    }

    /// * `OrderPlaced` v1 → v2 added `total_cents` (derived from the lines);
    ///   v2 → v3 dropped it, and each line's `unit_price_cents` became
    ///   `expected_unit_price_cents`, since prices now come from the catalog.
    /// * `OrderCancelled` v1 → v2 added `customer_id` and `was_confirmed`
    ///   (serde defaults: unknown customer, not confirmed).
    fn upcast(type_name: &str, version: u32, mut payload: Value) -> Value {
        if type_name == "OrderPlaced" && version < 3 {
            if let Some(items) = payload.get_mut("items").and_then(Value::as_array_mut) {
                for line in items {
                    if let Some(line) = line.as_object_mut()
                        && let Some(price) = line.remove("unit_price_cents")
                    {
                        line.insert("expected_unit_price_cents".into(), price);
                    }
                }
            }
            if let Some(map) = payload.as_object_mut() {
                map.remove("total_cents");
            }
        }
        payload
    }
}

impl OrderEvent {
    /// Loads a stored or received event of any known schema version.
    pub fn decode(event: &EventEnvelope) -> Result<Self, ContractError> {
        <Self as Message>::decode(event)
    }
}

impl PlaceOrder {
    /// The input rules of an order. Checked by the gateway (a GraphQL error,
    /// nothing sent) and again by the aggregate (a rejection, nothing appended).
    pub fn validate(&self) -> Result<(), Rejection> {
        if self.items.is_empty() || self.items.len() > MAX_LINES {
            return Err(Rejection::new(
                codes::INVALID_ITEM_COUNT,
                format!("an order needs 1 to {MAX_LINES} lines, got {}", self.items.len()),
            ));
        }
        if self.customer_id.trim().is_empty() || self.customer_id.chars().count() > MAX_SKU_CHARS {
            return Err(Rejection::new(codes::INVALID_ID, "customer id must be 1 to 64 characters"));
        }
        for (index, line) in self.items.iter().enumerate() {
            if line.sku.trim().is_empty() || line.sku.chars().count() > MAX_SKU_CHARS {
                return Err(Rejection::new(
                    codes::INVALID_SKU,
                    format!("line {}: sku must be 1 to {MAX_SKU_CHARS} characters", index + 1),
                ));
            }
            if line.quantity == 0 || line.quantity > MAX_QUANTITY {
                return Err(Rejection::new(
                    codes::INVALID_QUANTITY,
                    format!("line {}: quantity must be 1 to {MAX_QUANTITY}, got {}", index + 1, line.quantity),
                ));
            }
            if line.expected_unit_price_cents.is_some_and(|price| !(0..=MAX_PRICE_CENTS).contains(&price)) {
                return Err(Rejection::new(
                    codes::INVALID_PRICE,
                    format!("line {}: unit price must be 0 to {MAX_PRICE_CENTS} cents", index + 1),
                ));
            }
        }
        // The rules again after merging: one sku's units in all its lines.
        for line in Self::lines_by_sku(&self.items) {
            if line.quantity > MAX_QUANTITY {
                return Err(Rejection::new(
                    codes::INVALID_QUANTITY,
                    format!("sku {}: {} units in all, at most {MAX_QUANTITY} per order", line.sku, line.quantity),
                ));
            }
        }
        let expected = expected_value_cents(&self.items);
        if expected > MAX_ORDER_CENTS {
            return Err(Rejection::new(
                codes::ORDER_TOO_LARGE,
                format!("the order is worth at least {expected} cents, at most {MAX_ORDER_CENTS} are allowed"),
            ));
        }
        Ok(())
    }

    /// The lines merged by sku, in first-seen order: one reservation per product.
    pub fn lines_by_sku(items: &[OrderLine]) -> Vec<OrderLine> {
        let mut merged: Vec<OrderLine> = Vec::new();
        for line in items {
            match merged.iter_mut().find(|existing| existing.sku == line.sku) {
                Some(existing) => existing.quantity = existing.quantity.saturating_add(line.quantity),
                None => merged.push(line.clone()),
            }
        }
        merged
    }
}

/// What the lines are worth at least, at the prices the client expects
/// (lines without one count nothing); saturating, never wrapping.
pub fn expected_value_cents(lines: &[OrderLine]) -> i64 {
    lines.iter().fold(0i64, |sum, line| {
        let price = line.expected_unit_price_cents.unwrap_or(0).max(0);
        sum.saturating_add(price.saturating_mul(i64::from(line.quantity)))
    })
}

/// Sum of quantity × unit price; saturates rather than wrapping on absurd input.
pub fn total_cents(lines: &[PricedLine]) -> i64 {
    lines
        .iter()
        .fold(0i64, |sum, line| sum.saturating_add(line.unit_price_cents.saturating_mul(i64::from(line.quantity))))
}

impl CancelOrder {
    pub fn validate(&self) -> Result<(), Rejection> {
        if self.reason.chars().count() > MAX_REASON_CHARS {
            return Err(Rejection::new(
                codes::INVALID_INPUT,
                format!("reason must be at most {MAX_REASON_CHARS} characters"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Metadata;
    use chrono::Utc;
    use uuid::Uuid;

    fn line(sku: &str, quantity: u32, unit_price_cents: i64) -> OrderLine {
        OrderLine { sku: sku.into(), quantity, expected_unit_price_cents: Some(unit_price_cents) }
    }

    fn code(order: PlaceOrder) -> Option<&'static str> {
        order.validate().err().map(|rejection| rejection.code_static())
    }

    fn place(items: Vec<OrderLine>) -> PlaceOrder {
        PlaceOrder { customer_id: "c-1".into(), items }
    }

    #[test]
    fn an_order_needs_one_to_a_hundred_lines() {
        assert_eq!(code(place(vec![])), Some(codes::INVALID_ITEM_COUNT));
        assert_eq!(code(place(vec![line("a", 1, 1); 100])), None);
        assert_eq!(code(place(vec![line("a", 1, 1); 101])), Some(codes::INVALID_ITEM_COUNT));
    }

    #[test]
    fn quantity_is_one_to_a_thousand() {
        assert_eq!(code(place(vec![line("a", 0, 1)])), Some(codes::INVALID_QUANTITY));
        assert_eq!(code(place(vec![line("a", 1, 1)])), None);
        assert_eq!(code(place(vec![line("a", 1000, 1)])), None);
        assert_eq!(code(place(vec![line("a", 1001, 1)])), Some(codes::INVALID_QUANTITY));
    }

    #[test]
    fn price_is_not_negative_nor_above_the_cap() {
        assert_eq!(code(place(vec![line("a", 1, 0)])), None);
        assert_eq!(code(place(vec![line("a", 1, -1)])), Some(codes::INVALID_PRICE));
        assert_eq!(code(place(vec![line("a", 1, MAX_PRICE_CENTS)])), None);
        assert_eq!(code(place(vec![line("a", 1, MAX_PRICE_CENTS + 1)])), Some(codes::INVALID_PRICE));
        assert_eq!(code(place(vec![line("a", 1, i64::MAX)])), Some(codes::INVALID_PRICE));
    }

    #[test]
    fn the_rules_hold_after_lines_of_one_sku_are_merged() {
        assert_eq!(code(place(vec![line("a", 600, 1), line("b", 600, 1)])), None);
        assert_eq!(code(place(vec![line("a", 600, 1), line("a", 401, 1)])), Some(codes::INVALID_QUANTITY));
        assert_eq!(code(place(vec![line("a", 1000, 1); 100])), Some(codes::INVALID_QUANTITY), "100 × 1000 of one sku");
        assert_eq!(code(place(vec![line("a", 10, 1); 100])), None, "1000 units of one sku in 100 lines");
    }

    #[test]
    fn an_order_is_worth_at_most_the_cap_at_the_prices_it_expects() {
        let per_unit = MAX_ORDER_CENTS / 1000;
        assert_eq!(code(place(vec![line("a", 1000, per_unit)])), None);
        assert_eq!(code(place(vec![line("a", 1000, per_unit), line("b", 1, 1)])), Some(codes::ORDER_TOO_LARGE));
        let most: Vec<OrderLine> = (0..100).map(|n| line(&format!("s{n}"), 1000, MAX_PRICE_CENTS)).collect();
        assert_eq!(code(place(most.clone())), Some(codes::ORDER_TOO_LARGE));
        assert!(expected_value_cents(&most) > 0, "no overflow at the largest order the other rules allow");
    }

    #[test]
    fn sku_is_non_empty_and_at_most_64_characters() {
        assert_eq!(code(place(vec![line("", 1, 1)])), Some(codes::INVALID_SKU));
        assert_eq!(code(place(vec![line("  ", 1, 1)])), Some(codes::INVALID_SKU));
        assert_eq!(code(place(vec![line(&"é".repeat(64), 1, 1)])), None);
        assert_eq!(code(place(vec![line(&"x".repeat(65), 1, 1)])), Some(codes::INVALID_SKU));
    }

    #[test]
    fn a_cancel_reason_has_a_length_limit() {
        assert!(CancelOrder { reason: "x".repeat(500) }.validate().is_ok());
        assert!(CancelOrder { reason: "x".repeat(501) }.validate().is_err());
    }

    fn stored(type_name: &str, schema_version: u32, payload: serde_json::Value) -> EventEnvelope {
        let id = Uuid::now_v7();
        EventEnvelope {
            id,
            type_name: type_name.into(),
            schema_version,
            aggregate_type: AGGREGATE.into(),
            aggregate_id: "o-1".into(),
            stream_version: 1,
            metadata: Metadata::origin(id, "t"),
            timestamp: Utc::now(),
            payload,
        }
    }

    #[test]
    fn old_order_placed_events_load_with_their_prices_as_expectations() {
        let v1 = stored(
            "OrderPlaced",
            1,
            serde_json::json!({ "customer_id": "c-1", "items": [{"sku": "a", "quantity": 3, "unit_price_cents": 250}] }),
        );
        let v2 = stored(
            "OrderPlaced",
            2,
            serde_json::json!({ "customer_id": "c-1", "total_cents": 750,
                "items": [{"sku": "a", "quantity": 3, "unit_price_cents": 250}] }),
        );
        let expected = OrderEvent::OrderPlaced(OrderPlaced {
            customer_id: "c-1".into(),
            items: vec![OrderLine { sku: "a".into(), quantity: 3, expected_unit_price_cents: Some(250) }],
        });
        assert_eq!(OrderEvent::decode(&v1).expect("v1 loads"), expected);
        assert_eq!(OrderEvent::decode(&v2).expect("v2 loads"), expected);
    }

    #[test]
    fn a_version_1_cancellation_loads_with_defaults() {
        let v1 = stored("OrderCancelled", 1, serde_json::json!({ "reason": "r" }));
        let OrderEvent::OrderCancelled(cancelled) = OrderEvent::decode(&v1).expect("v1 loads") else {
            panic!("decoded into the wrong event type");
        };
        assert_eq!((cancelled.reason.as_str(), cancelled.was_confirmed), ("r", false));
    }

    #[test]
    fn a_newer_version_than_this_build_knows_is_refused() {
        let v9 = stored("OrderCancelled", 9, serde_json::json!({ "reason": "r" }));
        assert!(matches!(OrderEvent::decode(&v9), Err(ContractError::UnknownVersion { .. })));
    }

    #[test]
    fn lines_merge_by_sku_and_totals_add_up() {
        let merged = PlaceOrder::lines_by_sku(&[line("a", 1, 5), line("b", 2, 5), line("a", 3, 5)]);
        assert_eq!(merged.iter().map(|l| (l.sku.as_str(), l.quantity)).collect::<Vec<_>>(), vec![("a", 4), ("b", 2)]);
        let priced = [
            PricedLine { sku: "a".into(), quantity: 4, unit_price_cents: 250 },
            PricedLine { sku: "b".into(), quantity: 2, unit_price_cents: 100 },
        ];
        assert_eq!(total_cents(&priced), 1200);
    }
}
