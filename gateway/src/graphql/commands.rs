//! What every mutation shares: the command id (from the idempotency key),
//! the dispatch with its wait bound, and the outcome as GraphQL types.

use async_graphql::{Context, Enum, Error, SimpleObject};
use schema::envelope::{Message, derived_id};
use schema::ports::Dispatched;
use schema::{CommandEnvelope, CommandOutcome, Metadata, OutcomeStatus, codes};
use uuid::Uuid;

use super::Services;
use super::errors::{coded, unavailable};

const MAX_IDEMPOTENCY_KEY_CHARS: usize = 128;
/// Until authentication lands, every caller is the same actor.
pub const ANONYMOUS: &str = "anonymous";

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum CommandStatus {
    /// Decided and committed: its events are in the event store.
    Accepted,
    /// Decided and refused: see `error`; nothing changed.
    Rejected,
    /// Durably queued, not decided within the wait; ask `commandOutcome`.
    Pending,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct CommandError {
    pub code: String,
    pub message: String,
}

/// A command's outcome, looked up by id (after a PENDING answer).
#[derive(SimpleObject)]
pub struct CommandResult {
    pub command_id: async_graphql::ID,
    pub status: CommandStatus,
    pub error: Option<CommandError>,
}

/// A dispatched command's id, status and error, for the payloads.
pub struct Sent {
    pub command_id: Uuid,
    pub status: CommandStatus,
    pub error: Option<CommandError>,
}

pub fn outcome_parts(outcome: &CommandOutcome) -> (CommandStatus, Option<CommandError>) {
    match outcome.status {
        OutcomeStatus::Accepted => (CommandStatus::Accepted, None),
        OutcomeStatus::Rejected => (
            CommandStatus::Rejected,
            outcome
                .rejection
                .as_ref()
                .map(|rejection| CommandError { code: rejection.code.clone(), message: rejection.message.clone() }),
        ),
    }
}

/// The command id: derived from the idempotency key (scoped to the actor and
/// the mutation), or fresh.
pub fn command_id(mutation: &str, key: Option<&str>) -> Result<Uuid, Error> {
    match key {
        None => Ok(Uuid::now_v7()),
        Some(key) if key.is_empty() || key.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS => Err(coded(
            codes::INVALID_INPUT,
            format!("idempotencyKey must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters"),
        )),
        Some(key) => Ok(derived_id(mutation, &format!("{ANONYMOUS}:{key}"))),
    }
}

/// Sends a command for an aggregate and waits (bounded) for its outcome.
pub async fn send<C: Message>(
    ctx: &Context<'_>,
    command_id: Uuid,
    aggregate: &str,
    aggregate_id: &str,
    command: &C,
) -> Result<Sent, Error> {
    let services = ctx.data::<Services>()?;
    let envelope =
        CommandEnvelope::new(command_id, aggregate, aggregate_id, Metadata::origin(command_id, ANONYMOUS), command);
    let dispatched = services.bus.dispatch(envelope, services.mutation_wait).await.map_err(unavailable)?;
    Ok(match dispatched {
        Dispatched::Pending => Sent { command_id, status: CommandStatus::Pending, error: None },
        Dispatched::Decided(outcome) => {
            let (status, error) = outcome_parts(&outcome);
            Sent { command_id, status, error }
        }
    })
}
