//! The command handler: routes a command to its aggregate and decides it in
//! the event store, which commits it with whatever else is queued and
//! publishes the new events after the commit, off this path (the outbox
//! relay covers a crash in between).

use std::sync::Arc;
use std::time::Duration;

use schema::customer::{ClaimEmail, CustomerCommand, EmailCommand, email_claim_id};
use schema::envelope::{Message, derived_id};
use schema::payment::PaymentCommand;
use schema::{CommandEnvelope, CommandOutcome, OutcomeStatus};
use tracing::{Instrument as _, instrument};

use crate::aggregate::Aggregate;
use crate::customer::{CreditLimits, Customer, CustomerEmail, CustomerInput};
use crate::event_store::{Attachment, Decision, SqlEventStore, StoreError};
use crate::order::Order;
use crate::payment::{Payment, PaymentInput, ProviderAnswer};
use crate::payment_provider::PaymentProvider;
use crate::product::Product;

/// The aggregate types this build handles, for `--only` and consumer filters.
pub const AGGREGATES: &[&str] = &[Order::TYPE, Customer::TYPE, Product::TYPE, Payment::TYPE];

#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The message can never be handled: dead-letter it.
    #[error("poison command: {0}")]
    Poison(String),
    /// The store failed; a later delivery may succeed.
    #[error(transparent)]
    Store(StoreError),
    /// A dependency (the payment provider) failed; a later delivery may succeed.
    #[error("{0}")]
    Unavailable(String),
}

impl From<StoreError> for HandleError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Contract(reason) => Self::Poison(reason),
            other => Self::Store(other),
        }
    }
}

#[derive(Clone)]
pub struct CommandHandler {
    store: SqlEventStore,
    credit_limits: CreditLimits,
    provider: Arc<dyn PaymentProvider>,
    /// How long the payment provider may take before the attempt counts as
    /// unanswered: a timeout is about a dependency, never about a queue.
    provider_timeout: Duration,
}

fn decode<C: Message>(command: &CommandEnvelope) -> Result<C, HandleError> {
    command.decode().map_err(|error| HandleError::Poison(error.to_string()))
}

impl CommandHandler {
    pub fn new(store: SqlEventStore, provider: Arc<dyn PaymentProvider>) -> Self {
        Self {
            credit_limits: CreditLimits::new(store.clone()),
            store,
            provider,
            provider_timeout: Duration::from_secs(5),
        }
    }

    /// Bounds each call to the payment provider.
    pub fn with_provider_timeout(mut self, timeout: Duration) -> Self {
        self.provider_timeout = timeout;
        self
    }

    pub fn store(&self) -> &SqlEventStore {
        &self.store
    }

    /// The customers' credit limits this handler has read, to share with
    /// the saga of the same process (one read per customer, not two).
    pub fn credit_limits(&self) -> &CreditLimits {
        &self.credit_limits
    }

    /// Decides the command (or returns its stored outcome) and publishes the
    /// events it appended. Once this returns `Ok`, the outcome is committed.
    #[instrument(skip_all, fields(command_id = %command.id, command = %command.type_name))]
    pub async fn handle(&self, command: &CommandEnvelope) -> Result<CommandOutcome, HandleError> {
        Ok(self.decide(command).await?.outcome)
    }

    /// As [`Self::handle`], with the events the command appended now: for
    /// a saga step run in this process, which reads its result from them.
    pub async fn decide(&self, command: &CommandEnvelope) -> Result<Decision, HandleError> {
        self.decide_attached(command, None).await
    }

    /// As [`Self::decide`], with an attachment for the store's commit hook
    /// (see [`crate::CommitHook`]): the saga's state, saved with its step.
    pub async fn decide_attached(
        &self,
        command: &CommandEnvelope,
        attachment: Option<Attachment>,
    ) -> Result<Decision, HandleError> {
        let started = std::time::Instant::now();
        let decided = if schema::trace::enabled() {
            let destination = format!("cmd.{}.{}", command.aggregate_type, command.type_name);
            let span =
                schema::trace::process(&destination, &command.id.to_string(), command.metadata.traceparent.as_deref());
            self.decide_unmeasured(command, attachment).instrument(span).await
        } else {
            self.decide_unmeasured(command, attachment).await
        };
        let (outcome, type_name) = match &decided {
            Ok(decision) if decision.outcome.status == OutcomeStatus::Accepted => {
                ("accepted", command.type_name.as_str())
            }
            Ok(_) => ("rejected", command.type_name.as_str()),
            // A poison message's type, chosen by whoever sent it, is not a
            // label: one made-up name after another would each be a series.
            Err(HandleError::Poison(_)) => ("poison", "unknown"),
            Err(_) => ("error", command.type_name.as_str()),
        };
        schema::metrics::metrics().command(type_name, outcome, started.elapsed());
        decided
    }

    async fn decide_unmeasured(
        &self,
        command: &CommandEnvelope,
        attachment: Option<Attachment>,
    ) -> Result<Decision, HandleError> {
        let store = &self.store;
        let decision = match command.aggregate_type.as_str() {
            Order::TYPE => store.execute_attached::<Order>(command, decode(command)?, attachment).await?,
            Customer::TYPE => self.handle_customer(command).await?,
            Product::TYPE => store.execute_attached::<Product>(command, decode(command)?, attachment).await?,
            Payment::TYPE => self.handle_payment(command, attachment).await?,
            other => return Err(HandleError::Poison(format!("no handler for aggregate type `{other}`"))),
        };
        Ok(decision)
    }

    /// A registration claims its email first (its own stream, so racing
    /// registrations serialize there), then is decided knowing whether the
    /// email was free. The claim has its own command id, derived from the
    /// registration's: a redelivered registration finds it already made.
    async fn handle_customer(&self, command: &CommandEnvelope) -> Result<Decision, HandleError> {
        let typed: CustomerCommand = decode(command)?;
        if let Some(outcome) = self.store.outcome(command.id).await? {
            return Ok(Decision::stored(outcome));
        }
        let CustomerCommand::RegisterCustomer(register) = &typed;
        let mut email_taken = false;
        // Invalid input is rejected by the aggregate without claiming anything.
        if register.validate().is_ok() {
            let claim = CommandEnvelope::new(
                derived_id("claim-email", &command.id.to_string()),
                CustomerEmail::TYPE,
                email_claim_id(&register.email),
                command.caused_metadata(),
                &EmailCommand::ClaimEmail(ClaimEmail { customer_id: command.aggregate_id.clone() }),
            );
            let claimed = self.store.execute::<CustomerEmail>(&claim, decode(&claim)?).await?;
            email_taken = claimed.outcome.status == OutcomeStatus::Rejected;
        }
        Ok(self.store.execute::<Customer>(command, CustomerInput { command: typed, email_taken }).await?)
    }

    /// Payments ask the provider first (once per payment), then decide.
    async fn handle_payment(
        &self,
        command: &CommandEnvelope,
        attachment: Option<Attachment>,
    ) -> Result<Decision, HandleError> {
        let typed: PaymentCommand = decode(command)?;
        let mut provider = None;
        if let PaymentCommand::AuthorizePayment(authorize) = &typed {
            if let Some(outcome) = self.store.outcome(command.id).await? {
                return Ok(Decision::stored(outcome));
            }
            let (payment, _) = self.store.load::<Payment>(&command.aggregate_id).await?;
            if payment.needs_provider() {
                provider = Some(match self.credit_limits.get(&authorize.customer_id).await? {
                    None => ProviderAnswer::Declined("unknown customer".into()),
                    Some(limit) => {
                        let answer = self.provider.authorize(command.id, authorize.amount_cents, limit);
                        tokio::time::timeout(self.provider_timeout, answer)
                            .await
                            .map_err(|_| {
                                HandleError::Unavailable("the payment provider did not answer in time".into())
                            })?
                            .map_err(|error| HandleError::Unavailable(error.to_string()))?
                    }
                });
            }
        }
        let input = PaymentInput { command: typed, provider };
        Ok(self.store.execute_attached::<Payment>(command, input, attachment).await?)
    }
}
