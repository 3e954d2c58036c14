//! A saga step on the wire: the command it sends (its id derived from the
//! order and the step), and what the answer means.

use chrono::Utc;
use schema::envelope::{Message, derived_id};
use schema::order::{self, ConfirmOrder, OrderCommand, RejectOrder};
use schema::payment::{self, AuthorizePayment, CapturePayment, PaymentCommand, PaymentEvent, RefundPayment};
use schema::ports::{Dispatched, EventLog};
use schema::product::{self, CommitStock, ProductCommand, ProductEvent, ReleaseStock, ReserveStock};
use schema::{CommandEnvelope, CommandOutcome, Metadata, OutcomeStatus, codes};
use tracing::warn;

use super::{ACTOR, Causes, Fulfillment, SagaError, SagaRunner, Step, StepResult};
use crate::customer::Customer;

impl SagaRunner {
    pub(super) async fn execute(
        &self,
        saga: &Fulfillment,
        causes: &Causes,
        step: &Step,
    ) -> Result<StepResult, SagaError> {
        let order_id = saga.order_id.clone();
        let (aggregate, aggregate_id, command): (&str, String, Result<(String, serde_json::Value), SagaError>) =
            match step {
                Step::CheckCustomer => {
                    let (customer, _) = self.store.load::<Customer>(&saga.customer_id).await?;
                    return Ok(match customer.credit_limit_cents {
                        Some(_) => StepResult::Done { unit_price_cents: None, approved: None },
                        None => StepResult::Refused {
                            code: codes::CUSTOMER_NOT_FOUND.into(),
                            message: format!("no customer {}", saga.customer_id),
                        },
                    });
                }
                Step::Reserve { sku, quantity, expected_unit_price_cents } => (
                    product::AGGREGATE,
                    sku.clone(),
                    parts(&ProductCommand::ReserveStock(ReserveStock {
                        order_id: order_id.clone(),
                        quantity: *quantity,
                        expected_unit_price_cents: *expected_unit_price_cents,
                    })),
                ),
                Step::Release { sku } => (
                    product::AGGREGATE,
                    sku.clone(),
                    parts(&ProductCommand::ReleaseStock(ReleaseStock { order_id: order_id.clone() })),
                ),
                Step::Commit { sku } => (
                    product::AGGREGATE,
                    sku.clone(),
                    parts(&ProductCommand::CommitStock(CommitStock { order_id: order_id.clone() })),
                ),
                Step::Authorize { amount_cents } => (
                    payment::AGGREGATE,
                    order_id.clone(),
                    parts(&PaymentCommand::AuthorizePayment(AuthorizePayment {
                        order_id: order_id.clone(),
                        customer_id: saga.customer_id.clone(),
                        amount_cents: *amount_cents,
                    })),
                ),
                Step::Refund => (
                    payment::AGGREGATE,
                    order_id.clone(),
                    parts(&PaymentCommand::RefundPayment(RefundPayment { order_id: order_id.clone() })),
                ),
                Step::Capture => {
                    (payment::AGGREGATE, order_id.clone(), parts(&PaymentCommand::CapturePayment(CapturePayment {})))
                }
                Step::Confirm { lines, total_cents } => (
                    order::AGGREGATE,
                    order_id.clone(),
                    parts(&OrderCommand::ConfirmOrder(ConfirmOrder {
                        lines: lines.clone(),
                        total_cents: *total_cents,
                    })),
                ),
                Step::Reject { code, message } => (
                    order::AGGREGATE,
                    order_id.clone(),
                    parts(&OrderCommand::RejectOrder(RejectOrder { code: code.clone(), message: message.clone() })),
                ),
            };
        let (type_name, payload) = command?;
        let id = derived_id("saga", &format!("{order_id}:{}", step.key()));
        let envelope = CommandEnvelope {
            id,
            schema_version: 1,
            type_name,
            aggregate_type: aggregate.into(),
            aggregate_id,
            metadata: Metadata {
                correlation_id: causes.correlation_id,
                causation_id: causes.causation_id,
                actor: ACTOR.into(),
            },
            timestamp: Utc::now(),
            payload,
        };
        let outcome = match self.bus.dispatch(envelope, self.settings.step_timeout).await {
            Ok(Dispatched::Decided(outcome)) => outcome,
            Ok(Dispatched::Pending) => return Ok(StepResult::NoAnswer),
            Err(error) => {
                warn!(%error, order_id, step = %step.key(), "saga step not delivered; will retry");
                return Ok(StepResult::NoAnswer);
            }
        };
        if outcome.status == OutcomeStatus::Rejected {
            let rejection = outcome.rejection.unwrap_or_else(|| schema::Rejection::new(codes::INTERNAL, "rejected"));
            return Ok(StepResult::Refused { code: rejection.code, message: rejection.message });
        }
        Ok(match step {
            Step::Reserve { sku, .. } => StepResult::Done {
                unit_price_cents: Some(self.reserved_price(sku, &order_id, &outcome).await?),
                approved: None,
            },
            Step::Authorize { .. } => {
                StepResult::Done { unit_price_cents: None, approved: Some(self.payment_approved(&order_id).await?) }
            }
            _ => StepResult::Done { unit_price_cents: None, approved: None },
        })
    }

    /// The catalog price the order's stock was reserved at.
    async fn reserved_price(&self, sku: &str, order_id: &str, outcome: &CommandOutcome) -> Result<i64, SagaError> {
        let events = self
            .store
            .read_stream(product::AGGREGATE, sku, 1, outcome.stream_version)
            .await
            .map_err(|error| SagaError::Contract(error.to_string()))?;
        events
            .iter()
            .rev()
            .find_map(|event| match ProductEvent::decode(event) {
                Ok(ProductEvent::StockReserved(reserved)) if reserved.order_id == order_id => {
                    Some(reserved.unit_price_cents)
                }
                _ => None,
            })
            .ok_or_else(|| SagaError::Contract(format!("no reservation of {sku} for order {order_id}")))
    }

    /// Whether the payment was authorized (rather than declined).
    async fn payment_approved(&self, order_id: &str) -> Result<bool, SagaError> {
        let events = self
            .store
            .read_stream(payment::AGGREGATE, order_id, 1, u64::MAX)
            .await
            .map_err(|error| SagaError::Contract(error.to_string()))?;
        Ok(events.iter().any(|event| matches!(PaymentEvent::decode(event), Ok(PaymentEvent::PaymentAuthorized(_)))))
    }
}

fn parts<C: Message>(command: &C) -> Result<(String, serde_json::Value), SagaError> {
    Ok(command.to_parts())
}
