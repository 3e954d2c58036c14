//! What every mutation shares: the command id (from the idempotency key),
//! the dispatch with its wait bound, and the outcome as GraphQL types.

use async_graphql::{Context, Enum, Error, SimpleObject};
use futures::StreamExt;
use schema::envelope::{Message, derived_id};
use schema::ports::Dispatched;
use schema::{CommandEnvelope, CommandOutcome, Metadata, OutcomeStatus, codes};
use uuid::Uuid;

use super::Services;
use super::errors::{coded, unavailable};
use crate::auth::Caller;

const MAX_IDEMPOTENCY_KEY_CHARS: usize = 128;

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

/// How long a mutation waits before it answers.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug, Default)]
pub enum Consistency {
    /// Answer once the command is decided (its events committed).
    #[default]
    Accepted,
    /// Also wait, within the mutation's bound, until the views have applied
    /// the command's events, so the payload's view shows them.
    AwaitView,
}

/// A dispatched command's id, status and error, for the payloads.
pub struct Sent {
    pub command_id: Uuid,
    pub status: CommandStatus,
    pub error: Option<CommandError>,
    /// The decided outcome (read-your-writes needs its stream version).
    pub outcome: Option<CommandOutcome>,
    /// When the mutation's wait bound runs out.
    pub deadline: tokio::time::Instant,
}

impl Sent {
    /// The stream version a view must reach to show this command, when it
    /// was accepted and the caller asked to wait for the view.
    pub fn awaited_version(&self, consistency: Option<Consistency>) -> Option<u64> {
        let outcome = self.outcome.as_ref().filter(|outcome| outcome.status == OutcomeStatus::Accepted)?;
        (consistency.unwrap_or_default() == Consistency::AwaitView).then_some(outcome.stream_version)
    }
}

/// Waits until `caught_up` reads true, re-reading on each change of the
/// view row, or until `deadline`. Watching starts before the first read, so
/// no change is missed; a view still behind at the deadline is returned as
/// it is.
pub async fn await_view<F, Fut>(
    ctx: &Context<'_>,
    view: &str,
    id: &str,
    deadline: tokio::time::Instant,
    mut caught_up: F,
) -> Result<(), Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, Error>>,
{
    let services = ctx.data::<Services>()?;
    let mut changes = services.notifier.watch(view, id).await.map_err(unavailable)?;
    while !caught_up().await? {
        match tokio::time::timeout_at(deadline, changes.next()).await {
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => break,
        }
    }
    Ok(())
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

/// The caller of this request or connection.
pub fn caller<'a>(ctx: &Context<'a>) -> Result<&'a Caller, Error> {
    ctx.data::<Caller>()
}

/// The command id: derived from the idempotency key (scoped to the caller
/// and the mutation), or fresh.
pub fn command_id(ctx: &Context<'_>, mutation: &str, key: Option<&str>) -> Result<Uuid, Error> {
    let actor = caller(ctx)?.actor();
    match key {
        None => Ok(Uuid::now_v7()),
        Some(key) if key.is_empty() || key.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS => Err(coded(
            codes::INVALID_INPUT,
            format!("idempotencyKey must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters"),
        )),
        Some(key) => Ok(derived_id(mutation, &format!("{actor}:{key}"))),
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
    let deadline = tokio::time::Instant::now() + services.mutation_wait;
    let envelope = CommandEnvelope::new(
        command_id,
        aggregate,
        aggregate_id,
        Metadata::origin(command_id, caller(ctx)?.actor()),
        command,
    );
    let dispatched = services.bus.dispatch(envelope.clone(), services.mutation_wait).await.map_err(unavailable)?;
    Ok(match dispatched {
        Dispatched::Pending => {
            Sent { command_id, status: CommandStatus::Pending, error: None, outcome: None, deadline }
        }
        // The key's first request was decided, and this one asks something else.
        Dispatched::Decided(outcome) if !outcome.answers(&envelope) => {
            return Err(coded(
                codes::IDEMPOTENCY_KEY_REUSED,
                "idempotencyKey was already used for a different request, which stands; use a new key",
            ));
        }
        Dispatched::Decided(outcome) => {
            let (status, error) = outcome_parts(&outcome);
            Sent { command_id, status, error, outcome: Some(outcome), deadline }
        }
    })
}
