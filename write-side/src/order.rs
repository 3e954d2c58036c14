//! The order aggregate.

use schema::codes;
use schema::envelope::ContractError;
use schema::order::{self, OrderCancelled, OrderCommand, OrderEvent, OrderPlaced};
use schema::{EventEnvelope, Rejection};

use crate::aggregate::Aggregate;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Placed,
    Cancelled,
}

/// What an order's rules need to know: whether it exists and its status.
#[derive(Debug, Default)]
pub struct Order {
    status: Option<Status>,
}

impl Aggregate for Order {
    const TYPE: &'static str = order::AGGREGATE;
    type Command = OrderCommand;
    type Event = OrderEvent;

    fn decode_event(event: &EventEnvelope) -> Result<OrderEvent, ContractError> {
        OrderEvent::decode(event)
    }

    fn apply(&mut self, event: &OrderEvent) {
        self.status = Some(match event {
            OrderEvent::OrderPlaced(_) => Status::Placed,
            OrderEvent::OrderCancelled(_) => Status::Cancelled,
        });
    }

    fn decide(&self, command: &OrderCommand) -> Result<Vec<OrderEvent>, Rejection> {
        match command {
            OrderCommand::PlaceOrder(place) => {
                if self.status.is_some() {
                    return Err(Rejection::new(
                        codes::ORDER_ALREADY_EXISTS,
                        "an order with this id already exists",
                    ));
                }
                place.validate()?;
                Ok(vec![OrderEvent::OrderPlaced(OrderPlaced {
                    customer_id: place.customer_id.clone(),
                    items: place.items.clone(),
                    total_cents: place.total_cents(),
                })])
            }
            OrderCommand::CancelOrder(cancel) => {
                cancel.validate()?;
                match self.status {
                    None => Err(Rejection::new(
                        codes::ORDER_NOT_FOUND,
                        "no order with this id",
                    )),
                    Some(Status::Cancelled) => Err(Rejection::new(
                        codes::ORDER_ALREADY_CANCELLED,
                        "the order is already cancelled",
                    )),
                    Some(Status::Placed) => Ok(vec![OrderEvent::OrderCancelled(OrderCancelled {
                        reason: cancel.reason.clone(),
                    })]),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::order::{CancelOrder, OrderLine, PlaceOrder};

    fn given(events: &[OrderEvent]) -> Order {
        let mut order = Order::default();
        events.iter().for_each(|event| order.apply(event));
        order
    }

    fn place(items: Vec<OrderLine>) -> OrderCommand {
        OrderCommand::PlaceOrder(PlaceOrder {
            customer_id: "c-1".into(),
            items,
        })
    }

    fn cancel() -> OrderCommand {
        OrderCommand::CancelOrder(CancelOrder {
            reason: "no longer needed".into(),
        })
    }

    fn line(quantity: u32, unit_price_cents: i64) -> OrderLine {
        OrderLine {
            sku: "sku-1".into(),
            quantity,
            unit_price_cents,
        }
    }

    fn placed() -> OrderEvent {
        OrderEvent::OrderPlaced(OrderPlaced {
            customer_id: "c-1".into(),
            items: vec![line(1, 100)],
            total_cents: 100,
        })
    }

    fn rejected_with(result: Result<Vec<OrderEvent>, Rejection>) -> String {
        match result {
            Err(rejection) => rejection.code,
            Ok(events) => panic!("expected a rejection, got {events:?}"),
        }
    }

    #[test]
    fn placing_a_new_order_records_its_lines_and_total() {
        let events = given(&[])
            .decide(&place(vec![line(2, 250), line(1, 100)]))
            .expect("accepted");
        let OrderEvent::OrderPlaced(placed) = &events[0] else {
            panic!("expected OrderPlaced, got {events:?}")
        };
        assert_eq!(events.len(), 1);
        assert_eq!(placed.total_cents, 600);
        assert_eq!(placed.items.len(), 2);
    }

    #[test]
    fn placing_an_existing_order_again_is_rejected() {
        assert_eq!(
            rejected_with(given(&[placed()]).decide(&place(vec![line(1, 1)]))),
            codes::ORDER_ALREADY_EXISTS
        );
    }

    #[test]
    fn placing_invalid_input_is_rejected_with_the_rule_that_failed() {
        let order = given(&[]);
        assert_eq!(
            rejected_with(order.decide(&place(vec![]))),
            codes::INVALID_ITEM_COUNT
        );
        assert_eq!(
            rejected_with(order.decide(&place(vec![line(0, 1)]))),
            codes::INVALID_QUANTITY
        );
        assert_eq!(
            rejected_with(order.decide(&place(vec![line(1001, 1)]))),
            codes::INVALID_QUANTITY
        );
        assert_eq!(
            rejected_with(order.decide(&place(vec![line(1, -5)]))),
            codes::INVALID_PRICE
        );
        let long_sku = OrderLine {
            sku: "x".repeat(65),
            quantity: 1,
            unit_price_cents: 1,
        };
        assert_eq!(
            rejected_with(order.decide(&place(vec![long_sku]))),
            codes::INVALID_SKU
        );
        let empty_sku = OrderLine {
            sku: String::new(),
            quantity: 1,
            unit_price_cents: 1,
        };
        assert_eq!(
            rejected_with(order.decide(&place(vec![empty_sku]))),
            codes::INVALID_SKU
        );
        assert_eq!(
            rejected_with(order.decide(&place(vec![line(1, 1); 101]))),
            codes::INVALID_ITEM_COUNT
        );
    }

    #[test]
    fn cancelling_a_placed_order_records_the_reason() {
        let events = given(&[placed()]).decide(&cancel()).expect("accepted");
        assert_eq!(
            events,
            vec![OrderEvent::OrderCancelled(OrderCancelled {
                reason: "no longer needed".into()
            })]
        );
    }

    #[test]
    fn cancelling_a_cancelled_order_is_rejected() {
        let cancelled = OrderEvent::OrderCancelled(OrderCancelled {
            reason: "first".into(),
        });
        assert_eq!(
            rejected_with(given(&[placed(), cancelled]).decide(&cancel())),
            codes::ORDER_ALREADY_CANCELLED
        );
    }

    #[test]
    fn cancelling_an_unknown_order_is_rejected() {
        assert_eq!(
            rejected_with(given(&[]).decide(&cancel())),
            codes::ORDER_NOT_FOUND
        );
    }
}
