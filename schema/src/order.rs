//! The order aggregate's contract: commands, events, and the input rules that
//! the gateway checks up front and the write side checks again when deciding.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::codes;
use crate::envelope::{ContractError, EventEnvelope, Message};
use crate::outcome::Rejection;

/// The aggregate type name: subjects `cmd.order.*`, `evt.order.<id>`, streams `order-<id>`.
pub const AGGREGATE: &str = "order";

/// Limits from the order rules.
pub const MAX_LINES: usize = 100;
pub const MAX_QUANTITY: u32 = 1000;
pub const MAX_SKU_CHARS: usize = 64;
pub const MAX_REASON_CHARS: usize = 500;

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
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

/// Commands the order aggregate handles (imperative).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum OrderCommand {
    PlaceOrder(PlaceOrder),
    CancelOrder(CancelOrder),
}

impl Message for OrderCommand {
    const KIND: &'static str = "command";
    fn schema_version(type_name: &str) -> Option<u32> {
        match type_name {
            "PlaceOrder" | "CancelOrder" => Some(1),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub customer_id: String,
    pub items: Vec<OrderLine>,
    pub total_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub reason: String,
}

/// Facts about an order (past tense).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum OrderEvent {
    OrderPlaced(OrderPlaced),
    OrderCancelled(OrderCancelled),
}

impl Message for OrderEvent {
    const KIND: &'static str = "event";
    fn schema_version(type_name: &str) -> Option<u32> {
        match type_name {
            "OrderPlaced" => Some(2),
            "OrderCancelled" => Some(1),
            _ => None,
        }
    }
}

impl OrderEvent {
    /// Loads a stored or received event of any known schema version.
    pub fn decode(event: &EventEnvelope) -> Result<Self, ContractError> {
        let known =
            Self::schema_version(&event.type_name).ok_or_else(|| ContractError::UnknownType {
                kind: Self::KIND,
                type_name: event.type_name.clone(),
            })?;
        if event.schema_version > known {
            return Err(ContractError::UnknownVersion {
                type_name: event.type_name.clone(),
                version: event.schema_version,
                known,
            });
        }
        let payload = upcast(
            &event.type_name,
            event.schema_version,
            event.payload.clone(),
        );
        Self::from_parts(&event.type_name, payload)
    }
}

/// Brings an old payload up to the current schema version, one step at a time.
///
/// `OrderPlaced` v1 had no `total_cents`: it is derived from the lines, so an
/// order placed before the field existed still loads with its total.
fn upcast(type_name: &str, mut version: u32, mut payload: Value) -> Value {
    if type_name == "OrderPlaced" && version == 1 {
        let total: i64 = payload["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|line| {
                        line["quantity"].as_i64().unwrap_or(0)
                            * line["unit_price_cents"].as_i64().unwrap_or(0)
                    })
                    .sum()
            })
            .unwrap_or(0);
        if let Value::Object(map) = &mut payload {
            map.insert("total_cents".into(), total.into());
        }
        version = 2;
    }
    debug_assert!(version == OrderEvent::schema_version(type_name).unwrap_or(version));
    payload
}

impl PlaceOrder {
    /// The input rules of an order. Checked by the gateway (a GraphQL error,
    /// nothing sent) and again by the aggregate (a rejection, nothing appended).
    pub fn validate(&self) -> Result<(), Rejection> {
        if self.items.is_empty() || self.items.len() > MAX_LINES {
            return Err(Rejection::new(
                codes::INVALID_ITEM_COUNT,
                format!(
                    "an order needs 1 to {MAX_LINES} lines, got {}",
                    self.items.len()
                ),
            ));
        }
        if self.customer_id.trim().is_empty() || self.customer_id.chars().count() > MAX_SKU_CHARS {
            return Err(Rejection::new(
                codes::INVALID_ID,
                "customer id must be 1 to 64 characters",
            ));
        }
        for (index, line) in self.items.iter().enumerate() {
            if line.sku.trim().is_empty() || line.sku.chars().count() > MAX_SKU_CHARS {
                return Err(Rejection::new(
                    codes::INVALID_SKU,
                    format!(
                        "line {}: sku must be 1 to {MAX_SKU_CHARS} characters",
                        index + 1
                    ),
                ));
            }
            if line.quantity == 0 || line.quantity > MAX_QUANTITY {
                return Err(Rejection::new(
                    codes::INVALID_QUANTITY,
                    format!(
                        "line {}: quantity must be 1 to {MAX_QUANTITY}, got {}",
                        index + 1,
                        line.quantity
                    ),
                ));
            }
            if line.unit_price_cents < 0 {
                return Err(Rejection::new(
                    codes::INVALID_PRICE,
                    format!("line {}: unit price must not be negative", index + 1),
                ));
            }
        }
        Ok(())
    }

    /// Sum of quantity × unit price; saturates rather than wrapping on absurd input.
    pub fn total_cents(&self) -> i64 {
        self.items.iter().fold(0i64, |sum, line| {
            sum.saturating_add(
                line.unit_price_cents
                    .saturating_mul(i64::from(line.quantity)),
            )
        })
    }
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
        OrderLine {
            sku: sku.into(),
            quantity,
            unit_price_cents,
        }
    }

    fn code(order: PlaceOrder) -> Option<&'static str> {
        order
            .validate()
            .err()
            .map(|rejection| rejection.code_static())
    }

    fn place(items: Vec<OrderLine>) -> PlaceOrder {
        PlaceOrder {
            customer_id: "c-1".into(),
            items,
        }
    }

    #[test]
    fn an_order_needs_one_to_a_hundred_lines() {
        assert_eq!(code(place(vec![])), Some(codes::INVALID_ITEM_COUNT));
        assert_eq!(code(place(vec![line("a", 1, 1); 100])), None);
        assert_eq!(
            code(place(vec![line("a", 1, 1); 101])),
            Some(codes::INVALID_ITEM_COUNT)
        );
    }

    #[test]
    fn quantity_is_one_to_a_thousand() {
        assert_eq!(
            code(place(vec![line("a", 0, 1)])),
            Some(codes::INVALID_QUANTITY)
        );
        assert_eq!(code(place(vec![line("a", 1, 1)])), None);
        assert_eq!(code(place(vec![line("a", 1000, 1)])), None);
        assert_eq!(
            code(place(vec![line("a", 1001, 1)])),
            Some(codes::INVALID_QUANTITY)
        );
    }

    #[test]
    fn price_is_not_negative() {
        assert_eq!(code(place(vec![line("a", 1, 0)])), None);
        assert_eq!(
            code(place(vec![line("a", 1, -1)])),
            Some(codes::INVALID_PRICE)
        );
    }

    #[test]
    fn sku_is_non_empty_and_at_most_64_characters() {
        assert_eq!(code(place(vec![line("", 1, 1)])), Some(codes::INVALID_SKU));
        assert_eq!(
            code(place(vec![line("  ", 1, 1)])),
            Some(codes::INVALID_SKU)
        );
        assert_eq!(code(place(vec![line(&"é".repeat(64), 1, 1)])), None);
        assert_eq!(
            code(place(vec![line(&"x".repeat(65), 1, 1)])),
            Some(codes::INVALID_SKU)
        );
    }

    #[test]
    fn a_cancel_reason_has_a_length_limit() {
        assert!(
            CancelOrder {
                reason: "x".repeat(500)
            }
            .validate()
            .is_ok()
        );
        assert!(
            CancelOrder {
                reason: "x".repeat(501)
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn a_version_1_order_placed_event_loads_with_its_total() {
        let id = Uuid::now_v7();
        let v1 = EventEnvelope {
            id,
            type_name: "OrderPlaced".into(),
            schema_version: 1,
            aggregate_type: AGGREGATE.into(),
            aggregate_id: "o-1".into(),
            stream_version: 1,
            metadata: Metadata::origin(id, "t"),
            timestamp: Utc::now(),
            payload: serde_json::json!({
                "customer_id": "c-1",
                "items": [{"sku": "a", "quantity": 3, "unit_price_cents": 250}],
            }),
        };
        let OrderEvent::OrderPlaced(placed) = OrderEvent::decode(&v1).expect("v1 loads") else {
            panic!("decoded into the wrong event type");
        };
        assert_eq!(placed.total_cents, 750);
    }
}
