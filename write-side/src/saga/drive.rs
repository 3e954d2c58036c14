//! Driving one saga: take the steps it is ready for (several reservations
//! at once), record their answers, store the state once per round — in the
//! step's own transaction when the round is one step run here
//! ([`super::ride`]) — and go on until it waits for an answer, for the
//! customer, or is done.

use chrono::Utc;
use futures::future::join_all;
use tracing::Instrument as _;

use super::ride::{Ridden, Ride};
use super::store::Stored;
use super::{SagaError, SagaRunner, Step, StepResult};

impl SagaRunner {
    /// Drives a saga from `fresh` (a state just stored, when at hand) or
    /// from what is stored. Traced, the drive is the span `process evt.order`
    /// in the trace of the order's event that started it (a saga loaded from
    /// the store starts a trace of its own), and the steps are its children.
    pub(super) async fn drive_from(&self, order_id: &str, fresh: Option<Stored>) -> Result<(), SagaError> {
        let span = if schema::trace::enabled() {
            let traceparent = fresh.as_ref().and_then(|stored| stored.causes.traceparent.clone());
            schema::trace::process("evt.order", order_id, traceparent.as_deref())
        } else {
            tracing::info_span!("drive_from", order_id)
        };
        self.drive(order_id, fresh).instrument(span).await
    }

    async fn drive(&self, order_id: &str, fresh: Option<Stored>) -> Result<(), SagaError> {
        let _turn = self.locks.lock(order_id.to_string()).await;
        let loaded = match fresh {
            Some(stored) => Some(stored),
            None => self.load(order_id).await?,
        };
        let Some(mut stored) = loaded else { return Ok(()) };
        loop {
            self.prices.learn(&stored.saga.reserved);
            let signalled = stored.saga.take_signals(stored.cancel_requested, stored.ship_requested);
            let steps = stored.saga.next_steps();
            if steps.is_empty() {
                // Nothing to do: store what the signals changed, and stop
                // the sweepers from coming back for it.
                if (signalled || stored.active != stored.should_be_active())
                    && !self.save(&stored, Utc::now().timestamp_micros()).await?
                {
                    stored = self.load(order_id).await?.ok_or_else(gone)?;
                    continue;
                }
                return Ok(());
            }
            // A lone step carries the saga, to be saved in its transaction.
            let results = match steps.as_slice() {
                [step] if *step != Step::CheckCustomer => {
                    let ride = Ride { stored: stored.clone(), step: step.clone() };
                    match self.execute(&stored.saga, &stored.causes, step, Some(ride)).await? {
                        (_, Some(Ridden::Saved(next))) => {
                            stored = *next;
                            continue;
                        }
                        (_, Some(Ridden::Stale)) => {
                            stored = self.load(order_id).await?.ok_or_else(gone)?;
                            continue;
                        }
                        (result, None) => vec![result],
                    }
                }
                _ => join_all(steps.iter().map(|step| self.execute(&stored.saga, &stored.causes, step, None)))
                    .await
                    .into_iter()
                    .map(|result| result.map(|(result, _)| result))
                    .collect::<Result<Vec<_>, _>>()?,
            };
            let mut answered: Vec<(&Step, StepResult)> = steps.iter().zip(results).collect();
            // Successes first: a reservation made beside a refused one is
            // then known, and released by the compensation.
            answered.sort_by_key(|(_, result)| match result {
                StepResult::Done { .. } | StepResult::CustomerChecked { .. } => 0,
                StepResult::NoAnswer => 1,
                StepResult::Refused { .. } => 2,
            });
            let now = Utc::now().timestamp_micros();
            let waiting = answered.iter().any(|(_, result)| *result == StepResult::NoAnswer);
            let only_reads = answered.iter().all(|(step, _)| **step == Step::CheckCustomer);
            for (step, result) in answered {
                stored.saga.record(step, result, now);
            }
            if only_reads && !waiting && !signalled {
                continue;
            }
            let next_attempt = if waiting {
                now + self.settings.retry_after(stored.saga.attempts).as_micros() as i64
            } else {
                now + self.settings.lease().as_micros() as i64
            };
            if !self.save(&stored, next_attempt).await? {
                // Changed meanwhile (a cancellation, another process):
                // start over from what is stored. The steps taken are
                // idempotent, so taking them again costs nothing.
                stored = self.load(order_id).await?.ok_or_else(gone)?;
                continue;
            }
            stored.version += 1;
            stored.active = stored.should_be_active();
            if waiting {
                return Ok(());
            }
        }
    }
}

fn gone() -> SagaError {
    SagaError::Contract("a saga disappeared while it was driven".into())
}
