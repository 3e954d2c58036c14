//! The order aggregate.

use schema::Rejection;
use schema::codes;
use schema::order::{
    self, OrderCancelled, OrderCommand, OrderConfirmed, OrderEvent, OrderPlaced, OrderRejected, OrderShipped,
};

use crate::aggregate::Aggregate;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pending,
    Confirmed,
    Rejected,
    Cancelled,
    Shipped,
}

/// What an order's rules need to know: its status and its customer.
#[derive(Debug, Default)]
pub struct Order {
    status: Option<Status>,
    customer_id: String,
}

impl Aggregate for Order {
    const TYPE: &'static str = order::AGGREGATE;
    type Command = OrderCommand;
    type Event = OrderEvent;

    fn starts_stream(command: &Self::Command) -> bool {
        matches!(command, OrderCommand::PlaceOrder(_))
    }

    fn apply(&mut self, event: &OrderEvent) {
        self.status = Some(match event {
            OrderEvent::OrderPlaced(placed) => {
                self.customer_id = placed.customer_id.clone();
                Status::Pending
            }
            OrderEvent::OrderConfirmed(_) => Status::Confirmed,
            OrderEvent::OrderRejected(_) => Status::Rejected,
            OrderEvent::OrderCancelled(_) => Status::Cancelled,
            OrderEvent::OrderShipped(_) => Status::Shipped,
        });
    }

    fn decide(&self, command: &OrderCommand) -> Result<Vec<OrderEvent>, Rejection> {
        let customer_id = self.customer_id.clone();
        match command {
            OrderCommand::PlaceOrder(place) => {
                if self.status.is_some() {
                    return Err(Rejection::new(codes::ORDER_ALREADY_EXISTS, "an order with this id already exists"));
                }
                place.validate()?;
                Ok(vec![OrderEvent::OrderPlaced(OrderPlaced {
                    customer_id: place.customer_id.clone(),
                    items: place.items.clone(),
                })])
            }
            OrderCommand::CancelOrder(cancel) => {
                cancel.validate()?;
                let was_confirmed = match self.status()? {
                    Status::Pending => false,
                    Status::Confirmed => true,
                    Status::Cancelled => {
                        return Err(Rejection::new(codes::ORDER_ALREADY_CANCELLED, "the order is already cancelled"));
                    }
                    Status::Shipped => {
                        return Err(Rejection::new(
                            codes::ORDER_ALREADY_SHIPPED,
                            "a shipped order cannot be cancelled",
                        ));
                    }
                    Status::Rejected => {
                        return Err(Rejection::new(codes::ORDER_ALREADY_REJECTED, "the order was rejected"));
                    }
                };
                Ok(vec![OrderEvent::OrderCancelled(OrderCancelled {
                    reason: cancel.reason.clone(),
                    customer_id,
                    was_confirmed,
                })])
            }
            OrderCommand::ConfirmOrder(confirm) => match self.status()? {
                Status::Pending => Ok(vec![OrderEvent::OrderConfirmed(OrderConfirmed {
                    customer_id,
                    lines: confirm.lines.clone(),
                    total_cents: confirm.total_cents,
                })]),
                Status::Cancelled => Err(Rejection::new(codes::ORDER_ALREADY_CANCELLED, "the order was cancelled")),
                _ => Err(Rejection::new(codes::ORDER_NOT_PENDING, "only a pending order can be confirmed")),
            },
            OrderCommand::RejectOrder(reject) => match self.status()? {
                Status::Pending => Ok(vec![OrderEvent::OrderRejected(OrderRejected {
                    customer_id,
                    code: reject.code.clone(),
                    message: reject.message.clone(),
                })]),
                _ => Err(Rejection::new(codes::ORDER_NOT_PENDING, "only a pending order can be rejected")),
            },
            OrderCommand::ShipOrder(_) => match self.status()? {
                Status::Confirmed => Ok(vec![OrderEvent::OrderShipped(OrderShipped { customer_id })]),
                Status::Shipped => Err(Rejection::new(codes::ORDER_ALREADY_SHIPPED, "the order already shipped")),
                _ => Err(Rejection::new(codes::ORDER_NOT_CONFIRMED, "only a confirmed order can ship")),
            },
        }
    }
}

impl Order {
    fn status(&self) -> Result<Status, Rejection> {
        self.status.ok_or_else(|| Rejection::new(codes::ORDER_NOT_FOUND, "no order with this id"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::order::{CancelOrder, ConfirmOrder, OrderLine, PlaceOrder, PricedLine, RejectOrder, ShipOrder};

    fn given(events: &[OrderEvent]) -> Order {
        let mut order = Order::default();
        events.iter().for_each(|event| order.apply(event));
        order
    }

    fn place(items: Vec<OrderLine>) -> OrderCommand {
        OrderCommand::PlaceOrder(PlaceOrder { customer_id: "c-1".into(), items })
    }

    fn cancel() -> OrderCommand {
        OrderCommand::CancelOrder(CancelOrder { reason: "no longer needed".into() })
    }

    fn line(sku: &str, quantity: u32, expected: Option<i64>) -> OrderLine {
        OrderLine { sku: sku.into(), quantity, expected_unit_price_cents: expected }
    }

    fn placed() -> OrderEvent {
        OrderEvent::OrderPlaced(OrderPlaced { customer_id: "c-1".into(), items: vec![line("a", 1, None)] })
    }

    fn confirmed() -> OrderEvent {
        OrderEvent::OrderConfirmed(OrderConfirmed { customer_id: "c-1".into(), lines: vec![], total_cents: 100 })
    }

    fn cancelled() -> OrderEvent {
        OrderEvent::OrderCancelled(OrderCancelled {
            reason: "r".into(),
            customer_id: "c-1".into(),
            was_confirmed: false,
        })
    }

    fn rejected() -> OrderEvent {
        OrderEvent::OrderRejected(OrderRejected { customer_id: "c-1".into(), code: "X".into(), message: "x".into() })
    }

    fn shipped() -> OrderEvent {
        OrderEvent::OrderShipped(OrderShipped { customer_id: "c-1".into() })
    }

    fn confirm() -> OrderCommand {
        let lines = vec![PricedLine { sku: "a".into(), quantity: 1, unit_price_cents: 100 }];
        OrderCommand::ConfirmOrder(ConfirmOrder { lines, total_cents: 100 })
    }

    fn rejected_with(result: Result<Vec<OrderEvent>, Rejection>) -> String {
        match result {
            Err(rejection) => rejection.code,
            Ok(events) => panic!("expected a rejection, got {events:?}"),
        }
    }

    #[test]
    fn placing_a_new_order_records_its_lines_pending_prices() {
        let events = given(&[]).decide(&place(vec![line("a", 2, Some(250)), line("b", 1, None)])).expect("accepted");
        let OrderEvent::OrderPlaced(placed) = &events[0] else { panic!("expected OrderPlaced, got {events:?}") };
        assert_eq!(events.len(), 1);
        assert_eq!(placed.items.len(), 2);
        assert_eq!(placed.items[0].expected_unit_price_cents, Some(250));
    }

    #[test]
    fn placing_an_existing_order_again_is_rejected() {
        assert_eq!(
            rejected_with(given(&[placed()]).decide(&place(vec![line("a", 1, None)]))),
            codes::ORDER_ALREADY_EXISTS
        );
    }

    #[test]
    fn placing_invalid_input_is_rejected_with_the_rule_that_failed() {
        let order = given(&[]);
        assert_eq!(rejected_with(order.decide(&place(vec![]))), codes::INVALID_ITEM_COUNT);
        assert_eq!(rejected_with(order.decide(&place(vec![line("a", 0, None)]))), codes::INVALID_QUANTITY);
        assert_eq!(rejected_with(order.decide(&place(vec![line("a", 1001, None)]))), codes::INVALID_QUANTITY);
        assert_eq!(rejected_with(order.decide(&place(vec![line("a", 1, Some(-5))]))), codes::INVALID_PRICE);
        assert_eq!(rejected_with(order.decide(&place(vec![line(&"x".repeat(65), 1, None)]))), codes::INVALID_SKU);
        assert_eq!(rejected_with(order.decide(&place(vec![line("", 1, None)]))), codes::INVALID_SKU);
        assert_eq!(rejected_with(order.decide(&place(vec![line("a", 1, None); 101]))), codes::INVALID_ITEM_COUNT);
    }

    #[test]
    fn cancelling_a_pending_order_records_the_reason_and_its_customer() {
        let events = given(&[placed()]).decide(&cancel()).expect("accepted");
        let expected =
            OrderCancelled { reason: "no longer needed".into(), customer_id: "c-1".into(), was_confirmed: false };
        assert_eq!(events, vec![OrderEvent::OrderCancelled(expected)]);
    }

    #[test]
    fn cancelling_a_confirmed_order_says_so_for_the_refund() {
        let events = given(&[placed(), confirmed()]).decide(&cancel()).expect("accepted");
        assert!(matches!(&events[0], OrderEvent::OrderCancelled(c) if c.was_confirmed));
    }

    #[test]
    fn cancelling_is_rejected_once_cancelled_rejected_or_shipped() {
        assert_eq!(rejected_with(given(&[placed(), cancelled()]).decide(&cancel())), codes::ORDER_ALREADY_CANCELLED);
        assert_eq!(rejected_with(given(&[placed(), rejected()]).decide(&cancel())), codes::ORDER_ALREADY_REJECTED);
        assert_eq!(
            rejected_with(given(&[placed(), confirmed(), shipped()]).decide(&cancel())),
            codes::ORDER_ALREADY_SHIPPED
        );
    }

    #[test]
    fn commands_for_an_unknown_order_are_rejected() {
        assert_eq!(rejected_with(given(&[]).decide(&cancel())), codes::ORDER_NOT_FOUND);
        assert_eq!(rejected_with(given(&[]).decide(&confirm())), codes::ORDER_NOT_FOUND);
        assert_eq!(rejected_with(given(&[]).decide(&OrderCommand::ShipOrder(ShipOrder {}))), codes::ORDER_NOT_FOUND);
    }

    #[test]
    fn only_a_pending_order_is_confirmed_or_rejected() {
        assert!(given(&[placed()]).decide(&confirm()).is_ok());
        let reject = OrderCommand::RejectOrder(RejectOrder { code: "OUT_OF_STOCK".into(), message: "m".into() });
        assert!(given(&[placed()]).decide(&reject).is_ok());
        assert_eq!(rejected_with(given(&[placed(), confirmed()]).decide(&confirm())), codes::ORDER_NOT_PENDING);
        assert_eq!(rejected_with(given(&[placed(), cancelled()]).decide(&confirm())), codes::ORDER_ALREADY_CANCELLED);
        assert_eq!(rejected_with(given(&[placed(), cancelled()]).decide(&reject)), codes::ORDER_NOT_PENDING);
    }

    #[test]
    fn only_a_confirmed_order_ships_and_only_once() {
        let ship = OrderCommand::ShipOrder(ShipOrder {});
        assert_eq!(rejected_with(given(&[placed()]).decide(&ship)), codes::ORDER_NOT_CONFIRMED);
        assert!(given(&[placed(), confirmed()]).decide(&ship).is_ok());
        assert_eq!(
            rejected_with(given(&[placed(), confirmed(), shipped()]).decide(&ship)),
            codes::ORDER_ALREADY_SHIPPED
        );
    }
}
