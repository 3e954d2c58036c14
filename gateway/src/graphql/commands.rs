//! What every mutation shares: the command id (from the idempotency key),
//! the dispatch with its wait bound (and its in-flight slot, see
//! `crate::admission`), and the outcome as GraphQL types.

use async_graphql::{Context, Enum, Error, SimpleObject};
use futures::StreamExt;
use schema::envelope::{Message, derived_id};
use schema::ports::Dispatched;
use schema::{CommandEnvelope, CommandOutcome, Metadata, OutcomeStatus, codes};
use tracing::Instrument as _;
use uuid::Uuid;

use super::Services;
use super::errors::{coded, overloaded, unavailable};
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
    /// Given up by the write side without a decision (`error.code`
    /// `COMMAND_FAILED`): nothing changed. The command is kept for an
    /// operator, whose redrive may still decide it.
    Failed,
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
        OutcomeStatus::Rejected => (CommandStatus::Rejected, error(outcome)),
        OutcomeStatus::Failed => (CommandStatus::Failed, error(outcome)),
    }
}

fn error(outcome: &CommandOutcome) -> Option<CommandError> {
    outcome
        .rejection
        .as_ref()
        .map(|rejection| CommandError { code: rejection.code.clone(), message: rejection.message.clone() })
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
    // Held while the dispatch waits for the outcome; none free is OVERLOADED
    // at once, before anything is sent. A cancelled request drops it too.
    let _permit = services.admission.try_command_permit().map_err(overloaded)?;
    let deadline = tokio::time::Instant::now() + services.mutation_wait;
    let mut envelope = CommandEnvelope::new(
        command_id,
        aggregate,
        aggregate_id,
        Metadata::origin(command_id, caller(ctx)?.actor()),
        command,
    );
    // Traced, the command carries its `send` span's context: the handler's
    // span is that one's child.
    let span = if schema::trace::enabled() {
        let span = schema::trace::send(&format!("cmd.{aggregate}.{}", envelope.type_name), &command_id.to_string());
        envelope.metadata.traceparent = span.in_scope(schema::trace::current);
        span
    } else {
        tracing::Span::none()
    };
    let dispatched =
        services.bus.dispatch(envelope.clone(), services.mutation_wait).instrument(span).await.map_err(unavailable)?;
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use async_trait::async_trait;
    use read_side::ViewStore;
    use read_side::embedded::BroadcastNotifier;
    use schema::ports::{CommandBus, Dispatched, PortError};
    use schema::{CommandEnvelope, CommandOutcome};
    use tokio::sync::{Semaphore, mpsc};
    use tokio_util::sync::CancellationToken;
    use uuid::Uuid;

    use crate::admission::{Admission, AdmissionSettings};
    use crate::auth::Caller;
    use crate::graphql::{Services, build};

    /// A bus whose dispatches wait until the test releases them.
    struct HeldBus {
        entered: mpsc::UnboundedSender<()>,
        release: Semaphore,
        dispatched: AtomicUsize,
    }

    #[async_trait]
    impl CommandBus for HeldBus {
        async fn dispatch(&self, _command: CommandEnvelope, _wait: Duration) -> Result<Dispatched, PortError> {
            self.dispatched.fetch_add(1, Ordering::SeqCst);
            let _ = self.entered.send(());
            let _released = self.release.acquire().await.map_err(PortError::backend)?;
            Ok(Dispatched::Pending)
        }

        async fn outcome(&self, _command_id: Uuid) -> Result<Option<CommandOutcome>, PortError> {
            Ok(None)
        }
    }

    fn register(n: u32) -> async_graphql::Request {
        async_graphql::Request::new(format!(
            "mutation {{ registerCustomer(input: {{ name: \"N\", email: \"n{n}@example.com\", creditLimitCents: 1 }}) \
             {{ status }} }}"
        ))
        .data(Caller::Open)
    }

    fn code(response: &async_graphql::Response) -> Option<String> {
        let extensions = response.errors.first()?.extensions.as_ref()?;
        match extensions.get("code") {
            Some(async_graphql::Value::String(code)) => Some(code.clone()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_dispatch_holds_its_in_flight_slot_until_its_outcome() {
        let (entered, mut entries) = mpsc::unbounded_channel();
        let bus = Arc::new(HeldBus { entered, release: Semaphore::new(0), dispatched: AtomicUsize::new(0) });
        let pool = schema::sql::connect("sqlite::memory:", 1).await.expect("in-memory SQLite");
        let shutdown = CancellationToken::new();
        let settings = AdmissionSettings { max_inflight_commands: 1, max_undecided_orders: 0 };
        let services = Services::new(
            bus.clone(),
            ViewStore::new(pool),
            Arc::new(BroadcastNotifier::new(4)),
            Duration::from_secs(5),
            shutdown.clone(),
        )
        .with_admission(Admission::start(settings, None, shutdown));
        let schema = build(services, false, crate::QueryLimits::default());

        let waiting = tokio::spawn({
            let schema = schema.clone();
            async move { schema.execute(register(1)).await }
        });
        entries.recv().await.expect("the first mutation reaches the bus");
        // The first one waits for its outcome, holding the only slot.
        let refused = schema.execute(register(2)).await;
        assert_eq!(code(&refused).as_deref(), Some(schema::codes::OVERLOADED), "{:?}", refused.errors);
        assert_eq!(bus.dispatched.load(Ordering::SeqCst), 1, "the refused mutation was not dispatched");

        bus.release.add_permits(1);
        let answered = waiting.await.expect("the first mutation completes");
        assert!(answered.errors.is_empty(), "{:?}", answered.errors);
        // Its outcome in, the slot is free again.
        bus.release.add_permits(1);
        let admitted = schema.execute(register(3)).await;
        assert!(admitted.errors.is_empty(), "{:?}", admitted.errors);
        assert_eq!(bus.dispatched.load(Ordering::SeqCst), 2);
    }
}
