//! The order-fulfillment saga's runner: starts a saga on `OrderPlaced`,
//! feeds it the order's later events, sends its steps as commands over the
//! command bus (ids derived from the order and the step, so nothing is done
//! twice), and keeps its state in SQL so that it survives a crash. A sweeper
//! resumes sagas whose step got no answer, or whose process died.

mod fulfillment;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use schema::envelope::{Message, derived_id};
use schema::order::{self, ConfirmOrder, OrderCommand, OrderEvent, PlaceOrder, RejectOrder};
use schema::payment::{self, AuthorizePayment, CapturePayment, PaymentCommand, PaymentEvent, RefundPayment};
use schema::ports::{CommandBus, Dispatched, EventFeed, EventLog};
use schema::product::{self, CommitStock, ProductCommand, ProductEvent, ReleaseStock, ReserveStock};
use schema::sql::{self, RetryableError, to_micros};
use schema::{CommandEnvelope, CommandOutcome, EventEnvelope, Metadata, OutcomeStatus, codes};
use sqlx::Row;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, instrument, warn};
use uuid::Uuid;

pub use fulfillment::{Fulfillment, Phase, Step, StepResult};

use crate::customer::Customer;
use crate::event_store::{SqlEventStore, StoreError};
use crate::stream_locks::StreamLocks;

const KIND: &str = "order-fulfillment";
const ACTOR: &str = "saga:order-fulfillment";

#[derive(Debug, Clone)]
pub struct SagaSettings {
    /// How long one step's command may go unanswered before it is retried.
    pub step_timeout: Duration,
    /// How long a saga may take to confirm before a step without an answer
    /// is compensated instead of retried.
    pub saga_timeout: Duration,
    /// Pause before retrying a step that got no answer.
    pub retry_delay: Duration,
    /// How often to look for sagas to resume.
    pub sweep_interval: Duration,
}

impl Default for SagaSettings {
    fn default() -> Self {
        Self {
            step_timeout: Duration::from_secs(5),
            saga_timeout: Duration::from_secs(30),
            retry_delay: Duration::from_secs(1),
            sweep_interval: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SagaError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("unreadable saga or event: {0}")]
    Contract(String),
}

impl RetryableError for SagaError {
    fn is_retryable(&self) -> bool {
        match self {
            Self::Store(error) => error.is_retryable(),
            Self::Database(error) => sql::is_retryable(error),
            Self::Contract(_) => false,
        }
    }
}

/// The ids every command of one saga carries.
#[derive(Debug, Clone)]
struct Causes {
    correlation_id: Uuid,
    causation_id: Uuid,
}

#[derive(Clone)]
pub struct SagaRunner {
    store: SqlEventStore,
    bus: Arc<dyn CommandBus>,
    settings: SagaSettings,
    locks: StreamLocks,
    tasks: TaskTracker,
}

impl SagaRunner {
    pub fn new(store: SqlEventStore, bus: Arc<dyn CommandBus>, settings: SagaSettings) -> Self {
        Self { store, bus, settings, locks: StreamLocks::default(), tasks: TaskTracker::new() }
    }

    /// Consumes order events and sweeps for due sagas until `shutdown`,
    /// then lets the steps in flight finish.
    pub async fn run(self, feed: Arc<dyn EventFeed>, shutdown: CancellationToken) {
        let subscription = loop {
            match feed.subscribe("saga_order_fulfillment", &[order::AGGREGATE]).await {
                Ok(subscription) => break subscription,
                Err(error) => {
                    warn!(%error, "saga cannot subscribe to order events; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        let mut deliveries = Box::pin(subscription.take_until(shutdown.clone().cancelled_owned()));
        let mut sweep = tokio::time::interval(self.settings.sweep_interval);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        info!("order saga running");
        loop {
            tokio::select! {
                delivery = deliveries.next() => match delivery {
                    Some(Ok(delivery)) => {
                        let result = match &delivery.event {
                            Ok(event) => self.on_event(event).await,
                            Err(reason) => Err(SagaError::Contract(reason.clone())),
                        };
                        let settled = match result {
                            Ok(()) => delivery.ack.ack().await,
                            Err(SagaError::Contract(reason)) => {
                                let _ = feed.dead_letter("saga_order_fulfillment", &delivery.raw, &reason).await;
                                delivery.ack.reject().await
                            }
                            Err(error) => {
                                warn!(%error, "saga could not take an event; redelivering");
                                delivery.ack.retry(self.settings.retry_delay).await
                            }
                        };
                        if let Err(error) = settled {
                            warn!(%error, "could not settle a saga event");
                        }
                    }
                    Some(Err(error)) => warn!(%error, "saga event feed error"),
                    None => break,
                },
                _ = sweep.tick() => {
                    if let Err(error) = self.sweep().await {
                        warn!(%error, "saga sweep failed");
                    }
                }
            }
        }
        self.tasks.close();
        if tokio::time::timeout(self.settings.step_timeout * 2, self.tasks.wait()).await.is_err() {
            warn!("saga steps still running at shutdown; the sweeper will resume them");
        }
        info!("order saga stopped");
    }

    /// Starts, or moves on, the saga an order event belongs to.
    pub async fn on_event(&self, event: &EventEnvelope) -> Result<(), SagaError> {
        if self.take(event).await? {
            self.spawn_drive(event.aggregate_id.clone());
        }
        Ok(())
    }

    /// Records what an order event means for its saga; true if it has steps to take.
    async fn take(&self, event: &EventEnvelope) -> Result<bool, SagaError> {
        let order_id = event.aggregate_id.clone();
        match OrderEvent::decode(event).map_err(|error| SagaError::Contract(error.to_string()))? {
            OrderEvent::OrderPlaced(placed) => self.start(event, placed).await?,
            OrderEvent::OrderCancelled(_) => self.update(&order_id, event.id, Fulfillment::order_cancelled).await?,
            OrderEvent::OrderShipped(_) => self.update(&order_id, event.id, Fulfillment::order_shipped).await?,
            OrderEvent::OrderConfirmed(_) | OrderEvent::OrderRejected(_) => return Ok(false),
        }
        Ok(true)
    }

    /// Takes every order event in the event store (idempotently): for a
    /// transport that keeps nothing (embedded mode), so an order a crash left
    /// without its saga still gets one. The sweeper then drives what is due.
    pub async fn catch_up(&self, log: &dyn EventLog) -> Result<u64, SagaError> {
        let mut after: Option<schema::ports::StreamPosition> = None;
        let mut taken = 0;
        let started: std::collections::HashSet<String> =
            sql::retry("list sagas", || sqlx::query_scalar("SELECT saga_id FROM sagas").fetch_all(self.store.pool()))
                .await?
                .into_iter()
                .collect();
        loop {
            let page =
                log.read_all(after.as_ref(), 1000).await.map_err(|error| SagaError::Contract(error.to_string()))?;
            let Some(last) = page.last() else { return Ok(taken) };
            after = Some(schema::ports::StreamPosition { stream_id: last.stream_id(), version: last.stream_version });
            for event in page.iter().filter(|event| event.aggregate_type == order::AGGREGATE) {
                // Only what may be missing: a start without its saga, or a later event.
                if event.type_name == "OrderPlaced" && started.contains(&event.aggregate_id) {
                    continue;
                }
                if event.type_name != "OrderPlaced"
                    && event.type_name != "OrderCancelled"
                    && event.type_name != "OrderShipped"
                {
                    continue;
                }
                if self.take(event).await? {
                    taken += 1;
                }
            }
        }
    }

    async fn start(&self, event: &EventEnvelope, placed: order::OrderPlaced) -> Result<(), SagaError> {
        sql::retry("start saga", || self.start_once(event, placed.clone())).await
    }

    async fn start_once(&self, event: &EventEnvelope, placed: order::OrderPlaced) -> Result<(), SagaError> {
        let now = Utc::now();
        let deadline = now + chrono::Duration::from_std(self.settings.saga_timeout).unwrap_or_default();
        let saga = Fulfillment::start(
            event.aggregate_id.clone(),
            placed.customer_id,
            PlaceOrder::lines_by_sku(&placed.items),
            to_micros(deadline),
        );
        sqlx::query(
            "INSERT INTO sagas (saga_id, kind, state, correlation_id, causation_id, version, active, next_attempt_at, \
             updated_at) VALUES ($1, $2, $3, $4, $5, 1, 1, $6, $6) ON CONFLICT (saga_id) DO NOTHING",
        )
        .bind(&event.aggregate_id)
        .bind(KIND)
        .bind(encode(&saga)?)
        .bind(event.metadata.correlation_id.to_string())
        .bind(event.id.to_string())
        .bind(to_micros(now))
        .execute(self.store.pool())
        .await?;
        Ok(())
    }

    /// Applies an order event to a stored saga (optimistically, retried).
    async fn update(&self, order_id: &str, cause: Uuid, change: fn(&mut Fulfillment)) -> Result<(), SagaError> {
        let _turn = self.locks.lock(order_id.to_string()).await;
        for _ in 0..20 {
            let Some((mut saga, _, version)) = self.load(order_id).await? else { return Ok(()) };
            let before = saga.clone();
            change(&mut saga);
            if saga == before {
                return Ok(());
            }
            let causes = Causes { correlation_id: Uuid::nil(), causation_id: cause };
            if self.save(order_id, &saga, version, Some(&causes), Utc::now().timestamp_micros()).await? {
                return Ok(());
            }
        }
        Err(SagaError::Contract(format!("saga {order_id} kept changing under an update")))
    }

    fn spawn_drive(&self, order_id: String) {
        let runner = self.clone();
        self.tasks.spawn(async move {
            if let Err(error) = runner.drive(&order_id).await {
                warn!(%error, order_id, "saga step failed; retrying shortly");
                runner.retry_soon(&order_id).await;
            }
        });
    }

    /// Lets the sweeper take a saga again after the retry delay, instead of
    /// after its step's lease.
    async fn retry_soon(&self, order_id: &str) {
        let at = Utc::now().timestamp_micros() + self.settings.retry_delay.as_micros() as i64;
        let result = sql::retry("reschedule saga", || async {
            sqlx::query("UPDATE sagas SET next_attempt_at = $2 WHERE saga_id = $1 AND active = 1")
                .bind(order_id)
                .bind(at)
                .execute(self.store.pool())
                .await
        })
        .await;
        if let Err(error) = result {
            warn!(%error, order_id, "could not reschedule saga; its lease will expire");
        }
    }

    /// Resumes due sagas: steps that got no answer, and sagas a crash left.
    async fn sweep(&self) -> Result<(), SagaError> {
        sql::retry("sweep sagas", || self.sweep_once()).await
    }

    async fn sweep_once(&self) -> Result<(), SagaError> {
        let due: Vec<String> = sqlx::query_scalar(
            "SELECT saga_id FROM sagas WHERE active = 1 AND next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT 200",
        )
        .bind(Utc::now().timestamp_micros())
        .fetch_all(self.store.pool())
        .await?;
        for order_id in due {
            self.spawn_drive(order_id);
        }
        Ok(())
    }

    /// Takes steps until the saga waits for an event, waits for an answer, or ends.
    #[instrument(skip(self))]
    pub async fn drive(&self, order_id: &str) -> Result<(), SagaError> {
        let _turn = self.locks.lock(order_id.to_string()).await;
        loop {
            let Some((mut saga, causes, version)) = self.load(order_id).await? else { return Ok(()) };
            let Some(step) = saga.next_step() else { return Ok(()) };
            // Lease the saga for this step, so sweepers leave it alone meanwhile.
            let lease = Utc::now().timestamp_micros() + (self.settings.step_timeout * 2).as_micros() as i64;
            if !self.save(order_id, &saga, version, None, lease).await? {
                continue;
            }
            let result = self.execute(&saga, &causes, &step).await?;
            let waiting = result == StepResult::NoAnswer;
            let now = Utc::now().timestamp_micros();
            saga.record(&step, result, now);
            let next_attempt = now + self.settings.retry_delay.as_micros() as i64;
            if !self.save(order_id, &saga, version + 1, None, next_attempt).await? {
                continue;
            }
            // Still waiting for the same answer: the sweeper retries after the delay.
            if waiting && saga.next_step().as_ref() == Some(&step) {
                return Ok(());
            }
        }
    }

    async fn execute(&self, saga: &Fulfillment, causes: &Causes, step: &Step) -> Result<StepResult, SagaError> {
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

    async fn load(&self, order_id: &str) -> Result<Option<(Fulfillment, Causes, i64)>, SagaError> {
        sql::retry("load saga", || self.load_once(order_id)).await
    }

    async fn load_once(&self, order_id: &str) -> Result<Option<(Fulfillment, Causes, i64)>, SagaError> {
        let row = sqlx::query("SELECT state, correlation_id, causation_id, version FROM sagas WHERE saga_id = $1")
            .bind(order_id)
            .fetch_optional(self.store.pool())
            .await?;
        let Some(row) = row else { return Ok(None) };
        let state: String = row.try_get("state")?;
        let saga = serde_json::from_str(&state).map_err(|error| SagaError::Contract(error.to_string()))?;
        let id = |column: &str| -> Result<Uuid, SagaError> {
            let text: String = row.try_get(column)?;
            Uuid::parse_str(&text).map_err(|error| SagaError::Contract(error.to_string()))
        };
        Ok(Some((
            saga,
            Causes { correlation_id: id("correlation_id")?, causation_id: id("causation_id")? },
            row.try_get("version")?,
        )))
    }

    /// Stores the saga if nobody changed it since `version`; false if someone did.
    async fn save(
        &self,
        order_id: &str,
        saga: &Fulfillment,
        version: i64,
        cause: Option<&Causes>,
        next_attempt_at: i64,
    ) -> Result<bool, SagaError> {
        sql::retry("save saga", || self.save_once(order_id, saga, version, cause, next_attempt_at)).await
    }

    async fn save_once(
        &self,
        order_id: &str,
        saga: &Fulfillment,
        version: i64,
        cause: Option<&Causes>,
        next_attempt_at: i64,
    ) -> Result<bool, SagaError> {
        let active = i64::from(matches!(saga.phase, Phase::Running | Phase::Unwinding));
        let updated = sqlx::query(
            "UPDATE sagas SET state = $3, version = $2 + 1, active = $4, next_attempt_at = $5, updated_at = $6, \
             causation_id = COALESCE($7, causation_id) WHERE saga_id = $1 AND version = $2",
        )
        .bind(order_id)
        .bind(version)
        .bind(encode(saga)?)
        .bind(active)
        .bind(next_attempt_at)
        .bind(Utc::now().timestamp_micros())
        .bind(cause.map(|cause| cause.causation_id.to_string()))
        .execute(self.store.pool())
        .await?;
        Ok(updated.rows_affected() == 1)
    }
}

fn encode(saga: &Fulfillment) -> Result<String, SagaError> {
    serde_json::to_string(saga).map_err(|error| SagaError::Contract(error.to_string()))
}

fn parts<C: Message>(command: &C) -> Result<(String, serde_json::Value), SagaError> {
    Ok(command.to_parts())
}
