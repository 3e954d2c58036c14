//! The order-fulfillment saga's runner: starts a saga on `OrderPlaced`,
//! feeds it the order's later events, sends its steps as commands over the
//! command bus (ids derived from the order and the step, so nothing is done
//! twice), and keeps its state in SQL so that it survives a crash. A sweeper
//! resumes sagas whose step got no answer, or whose process died.

mod fulfillment;
mod steps;
mod store;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use schema::EventEnvelope;
use schema::order::{self, OrderEvent};
use schema::ports::{CommandBus, EventFeed, EventLog};
use schema::sql::{self, RetryableError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, instrument, warn};
use uuid::Uuid;

pub use fulfillment::{Fulfillment, Phase, Step, StepResult};

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
}
