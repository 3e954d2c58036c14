//! Where a saga step's command goes: to the handler in this process when
//! its aggregate's group runs here (no JetStream round trip, no timeout: a
//! busy queue is waited out, not failed), over the command bus when it runs
//! elsewhere (`write-side --only …` deployments).

use std::sync::Arc;
use std::time::Duration;

use schema::ports::{CommandBus, Dispatched};
use schema::{CommandEnvelope, CommandOutcome, EventEnvelope, OutcomeStatus, Rejection, codes};
use tracing::warn;

use crate::event_store::{Attached, Attachment};
use crate::handler::{CommandHandler, HandleError};

#[derive(Clone)]
pub struct StepRoute {
    local: Option<(CommandHandler, Vec<&'static str>)>,
    remote: Option<Arc<dyn CommandBus>>,
}

/// What became of a step's command.
pub(super) enum Answer {
    /// Decided; with the events it appended now, when they are at hand,
    /// and the commit hook's answer to the command's attachment.
    Decided(CommandOutcome, Option<Vec<EventEnvelope>>, Option<Attached>),
    /// Refused before the aggregate saw it (a command that can never be handled).
    Refused(Rejection),
    /// No answer yet: try again later.
    Missing,
}

impl StepRoute {
    /// Every step runs in this process (embedded mode, `conveyor all`).
    pub fn local(handler: CommandHandler, aggregates: &[&'static str]) -> Self {
        Self { local: Some((handler, aggregates.to_vec())), remote: None }
    }

    /// Steps for `aggregates` run here, the rest go over `bus`.
    pub fn split(handler: CommandHandler, aggregates: &[&'static str], bus: Arc<dyn CommandBus>) -> Self {
        Self { local: Some((handler, aggregates.to_vec())), remote: Some(bus) }
    }

    /// The handler of this process's groups.
    pub(super) fn handler(&self) -> Option<&CommandHandler> {
        self.local.as_ref().map(|(handler, _)| handler)
    }

    /// Sends a step's command. `attachment` rides along when the step runs
    /// here (see [`super::ride`]); over the bus it is dropped.
    pub(super) async fn send(
        &self,
        command: CommandEnvelope,
        remote_wait: Duration,
        attachment: Option<Attachment>,
    ) -> Answer {
        if let Some((handler, aggregates)) = &self.local
            && aggregates.contains(&command.aggregate_type.as_str())
        {
            return match handler.decide_attached(&command, attachment).await {
                Ok(decision) => Answer::Decided(decision.outcome, Some(decision.new_events), decision.attached),
                Err(HandleError::Poison(reason)) => {
                    warn!(reason, command_id = %command.id, "a saga step's command cannot be handled");
                    Answer::Refused(Rejection::new(codes::INTERNAL, reason))
                }
                Err(error) => {
                    warn!(%error, command_id = %command.id, "saga step got no answer; will retry");
                    Answer::Missing
                }
            };
        }
        let Some(bus) = &self.remote else {
            warn!(aggregate = %command.aggregate_type, "no handler and no command bus for a saga step");
            return Answer::Missing;
        };
        match bus.dispatch(command, remote_wait).await {
            // Given up by the write side (kept in its dead-letter stream):
            // no decision, so the step is tried again, like a missing answer.
            Ok(Dispatched::Decided(outcome)) if outcome.status == OutcomeStatus::Failed => Answer::Missing,
            Ok(Dispatched::Decided(outcome)) => match self.stored(&outcome).await {
                Some(stored) => Answer::Decided(stored, None, None),
                None => Answer::Missing,
            },
            Ok(Dispatched::Pending) => Answer::Missing,
            Err(error) => {
                warn!(%error, "saga step not delivered; will retry");
                Answer::Missing
            }
        }
    }

    /// The store's copy of an outcome that came over the bus: the bus is
    /// not the truth (a forged REJECTED would make the saga compensate). One
    /// read per remote step; in-process steps need none. `None` while the
    /// store has no decision (the outcome is then treated as missing).
    async fn stored(&self, announced: &CommandOutcome) -> Option<CommandOutcome> {
        let Some((handler, _)) = &self.local else { return Some(announced.clone()) };
        match handler.store().outcome(announced.command_id).await {
            Ok(Some(stored)) => Some(stored),
            Ok(None) => {
                warn!(command_id = %announced.command_id, "an outcome on the bus that the store does not have; ignored");
                None
            }
            Err(error) => {
                warn!(%error, command_id = %announced.command_id, "cannot read a step's outcome from the store; will retry");
                None
            }
        }
    }
}
