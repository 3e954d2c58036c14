//! A saga step as a command (its id derived from the order and the step),
//! and what its answer means. A reservation's price and an authorization's
//! verdict are read from the events the command appended: at hand when the
//! step ran here, else read by their versions — never the whole stream.

use chrono::Utc;
use schema::envelope::{Message, derived_id};
use schema::order::{self, ConfirmOrder, OrderCommand, RejectOrder};
use schema::payment::{self, AuthorizePayment, CapturePayment, PaymentCommand, PaymentEvent, RefundPayment};
use schema::ports::EventLog;
use schema::product::{self, CommitStock, ProductCommand, ProductEvent, ReleaseStock, ReserveStock};
use schema::{CommandEnvelope, CommandOutcome, EventEnvelope, Metadata, OutcomeStatus, codes};

use super::ride::{self, Ridden, Ride};
use super::route::Answer;
use super::{ACTOR, Causes, Fulfillment, SagaError, SagaRunner, Step, StepResult};
use crate::event_store::Attachment;

impl SagaRunner {
    /// Takes a step; with `ride`, the saga's state goes along to be saved
    /// in the step's transaction, and what became of it comes back.
    pub(super) async fn execute(
        &self,
        saga: &Fulfillment,
        causes: &Causes,
        step: &Step,
        ride: Option<Ride>,
    ) -> Result<(StepResult, Option<Ridden>), SagaError> {
        let taken = self.take_step(saga, causes, step, ride).await;
        let result = match &taken {
            Ok((StepResult::Refused { .. }, _)) => "refused",
            Ok((StepResult::NoAnswer, _)) => "no_answer",
            Ok(_) => "done",
            Err(_) => "error",
        };
        schema::metrics::metrics().saga_step(step.name(), result);
        taken
    }

    async fn take_step(
        &self,
        saga: &Fulfillment,
        causes: &Causes,
        step: &Step,
        ride: Option<Ride>,
    ) -> Result<(StepResult, Option<Ridden>), SagaError> {
        let order_id = saga.order_id.clone();
        let (aggregate, aggregate_id, (type_name, payload)) = match step {
            Step::CheckCustomer => {
                let result = match self.credit_limits.get(&saga.customer_id).await? {
                    Some(credit_limit_cents) => StepResult::CustomerChecked {
                        credit_limit_cents,
                        least_value_cents: self.prices.least_value_cents(&saga.lines),
                    },
                    None => StepResult::Refused {
                        code: codes::CUSTOMER_NOT_FOUND.into(),
                        message: format!("no customer {}", saga.customer_id),
                    },
                };
                return Ok((result, None));
            }
            Step::Reserve { sku, quantity, expected_unit_price_cents } => (
                product::AGGREGATE,
                sku.clone(),
                ProductCommand::ReserveStock(ReserveStock {
                    order_id: order_id.clone(),
                    quantity: *quantity,
                    expected_unit_price_cents: *expected_unit_price_cents,
                    credit_limit_cents: saga.credit_limit_cents,
                })
                .to_parts(),
            ),
            Step::Release { sku } => (
                product::AGGREGATE,
                sku.clone(),
                ProductCommand::ReleaseStock(ReleaseStock { order_id: order_id.clone() }).to_parts(),
            ),
            Step::Commit { sku } => (
                product::AGGREGATE,
                sku.clone(),
                ProductCommand::CommitStock(CommitStock { order_id: order_id.clone() }).to_parts(),
            ),
            Step::Authorize { amount_cents } => (
                payment::AGGREGATE,
                order_id.clone(),
                PaymentCommand::AuthorizePayment(AuthorizePayment {
                    order_id: order_id.clone(),
                    customer_id: saga.customer_id.clone(),
                    amount_cents: *amount_cents,
                })
                .to_parts(),
            ),
            Step::Refund => (
                payment::AGGREGATE,
                order_id.clone(),
                PaymentCommand::RefundPayment(RefundPayment { order_id: order_id.clone() }).to_parts(),
            ),
            Step::Capture => {
                (payment::AGGREGATE, order_id.clone(), PaymentCommand::CapturePayment(CapturePayment {}).to_parts())
            }
            Step::Confirm { lines, total_cents } => (
                order::AGGREGATE,
                order_id.clone(),
                OrderCommand::ConfirmOrder(ConfirmOrder { lines: lines.clone(), total_cents: *total_cents }).to_parts(),
            ),
            Step::Reject { code, message } => (
                order::AGGREGATE,
                order_id.clone(),
                OrderCommand::RejectOrder(RejectOrder { code: code.clone(), message: message.clone() }).to_parts(),
            ),
        };
        let envelope = CommandEnvelope {
            id: derived_id("saga", &format!("{order_id}:{}", step.key())),
            schema_version: 1,
            type_name,
            aggregate_type: aggregate.into(),
            aggregate_id,
            metadata: Metadata {
                correlation_id: causes.correlation_id,
                causation_id: causes.causation_id,
                actor: ACTOR.into(),
                traceparent: schema::trace::current_or(causes.traceparent.as_deref()),
            },
            timestamp: Utc::now(),
            payload,
        };
        let attachment = ride.map(|ride| Box::new(ride) as Attachment);
        let (outcome, events, ridden) = match self.route.send(envelope, self.settings.step_timeout, attachment).await {
            Answer::Decided(outcome, events, attached) => (outcome, events, ride::ridden(attached)),
            Answer::Refused(rejection) => {
                let result = StepResult::Refused { code: rejection.code, message: rejection.message };
                return Ok((result, None));
            }
            Answer::Missing => return Ok((StepResult::NoAnswer, None)),
        };
        let at_hand = events.as_deref().map(|events| events_at_hand(&outcome, events)).unwrap_or_default();
        if let Some(result) = result_at_hand(step, &order_id, &outcome, at_hand) {
            return Ok((result, ridden));
        }
        // Only a reservation or an authorization decided by an earlier
        // delivery (or elsewhere) gets here: its events are read.
        let events = self.decided_events(&outcome, events).await?;
        let result = match step {
            Step::Reserve { sku, .. } => StepResult::Done {
                unit_price_cents: Some(self.reserved_price(sku, &order_id, &events).await?),
                approved: None,
            },
            _ => StepResult::Done {
                unit_price_cents: None,
                approved: Some(self.payment_approved(&order_id, &events).await?),
            },
        };
        Ok((result, ridden))
    }

    /// The events a command appended: those at hand, or its outcome's versions from the store.
    async fn decided_events(
        &self,
        outcome: &CommandOutcome,
        at_hand: Option<Vec<EventEnvelope>>,
    ) -> Result<Vec<EventEnvelope>, SagaError> {
        if let Some(events) = at_hand.filter(|events| events.len() == outcome.event_ids.len()) {
            return Ok(events);
        }
        if outcome.event_ids.is_empty() {
            return Ok(Vec::new());
        }
        let first = outcome.stream_version + 1 - outcome.event_ids.len() as u64;
        self.store
            .read_stream(&outcome.aggregate_type, &outcome.aggregate_id, first, outcome.stream_version)
            .await
            .map_err(|error| SagaError::Contract(error.to_string()))
    }

    /// The catalog price the order's stock was reserved at: in the
    /// reservation's event, or (when the order held its reservation
    /// already) found in the product's history, the rare slow way.
    async fn reserved_price(&self, sku: &str, order_id: &str, events: &[EventEnvelope]) -> Result<i64, SagaError> {
        let price = |events: &[EventEnvelope]| reserved_price_in(events, order_id);
        if let Some(cents) = price(events) {
            return Ok(cents);
        }
        let history = self
            .store
            .read_stream(product::AGGREGATE, sku, 1, u64::MAX)
            .await
            .map_err(|error| SagaError::Contract(error.to_string()))?;
        price(&history).ok_or_else(|| SagaError::Contract(format!("no reservation of {sku} for order {order_id}")))
    }

    /// Whether the payment was authorized (rather than declined): from the
    /// authorization's events, or the payment's (short) stream.
    async fn payment_approved(&self, order_id: &str, events: &[EventEnvelope]) -> Result<bool, SagaError> {
        if !events.is_empty() {
            return Ok(authorized(events));
        }
        let history = self
            .store
            .read_stream(payment::AGGREGATE, order_id, 1, u64::MAX)
            .await
            .map_err(|error| SagaError::Contract(error.to_string()))?;
        Ok(authorized(&history))
    }
}

/// What a decided step means, from the decision and the events it appended
/// now; `None` when that takes a read (a reservation or an authorization
/// decided by an earlier delivery, whose events are older).
pub(super) fn result_at_hand(
    step: &Step,
    order_id: &str,
    outcome: &CommandOutcome,
    events: &[EventEnvelope],
) -> Option<StepResult> {
    if outcome.status == OutcomeStatus::Rejected {
        let rejection =
            outcome.rejection.clone().unwrap_or_else(|| schema::Rejection::new(codes::INTERNAL, "rejected"));
        return Some(StepResult::Refused { code: rejection.code, message: rejection.message });
    }
    match step {
        Step::Reserve { .. } => reserved_price_in(events, order_id)
            .map(|cents| StepResult::Done { unit_price_cents: Some(cents), approved: None }),
        Step::Authorize { .. } => (!events.is_empty())
            .then(|| StepResult::Done { unit_price_cents: None, approved: Some(authorized(events)) }),
        _ => Some(StepResult::Done { unit_price_cents: None, approved: None }),
    }
}

/// A decision's events when they are all at hand (it appended them now),
/// else none.
pub(super) fn events_at_hand<'e>(outcome: &CommandOutcome, events: &'e [EventEnvelope]) -> &'e [EventEnvelope] {
    if events.len() == outcome.event_ids.len() { events } else { &[] }
}

/// The price of `order_id`'s reservation among `events`, if there.
fn reserved_price_in(events: &[EventEnvelope], order_id: &str) -> Option<i64> {
    events.iter().rev().find_map(|event| match ProductEvent::decode(event) {
        Ok(ProductEvent::StockReserved(reserved)) if reserved.order_id == order_id => Some(reserved.unit_price_cents),
        _ => None,
    })
}

/// Whether `events` hold the payment's authorization (not a decline).
fn authorized(events: &[EventEnvelope]) -> bool {
    events.iter().any(|event| matches!(PaymentEvent::decode(event), Ok(PaymentEvent::PaymentAuthorized(_))))
}
