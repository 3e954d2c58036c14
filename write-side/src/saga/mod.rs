//! The order-fulfillment saga's runner. A saga starts in the transaction
//! that places its order ([`intake`]: a commit hook on the event store), so
//! no order is ever without one and no event feed is read for it; an
//! order's cancellation and shipment reach it the same way. The runner then
//! drives it ([`drive`]): each step is a command, run in this process when
//! its handler group is here and over the command bus otherwise
//! ([`route`]), with an id derived from the order and the step so that
//! nothing is done twice. Its state lives in SQL, so a crash loses
//! nothing: a sweeper resumes sagas whose lease ran out or whose step got no
//! answer, backing off as the misses add up.

mod drive;
mod fulfillment;
mod intake;
mod prices;
mod ride;
mod route;
mod steps;
mod store;
mod writer;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use schema::sql::{self, RetryableError};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use uuid::Uuid;

pub use fulfillment::{Fulfillment, Phase, Step, StepResult};
pub use route::StepRoute;

use crate::customer::CreditLimits;
use crate::event_store::{SqlEventStore, StoreError};
use crate::stream_locks::StreamLocks;

const KIND: &str = "order-fulfillment";
/// Starts with [`schema::subjects::SAGA_ACTOR_PREFIX`]: the command handler
/// takes the saga's commands only in its name.
const ACTOR: &str = "saga:order-fulfillment";

#[derive(Debug, Clone)]
pub struct SagaSettings {
    /// How long a step sent over the command bus, or the payment provider,
    /// may go unanswered before the attempt counts as missing. Steps run in
    /// this process are not timed: a queue is not a failure.
    pub step_timeout: Duration,
    /// How long a saga may take to confirm before a step that keeps getting
    /// no answer is compensated instead of retried.
    pub saga_timeout: Duration,
    /// Sets the pause before retrying a step that got no answer (see
    /// `retry_after`: it grows with the misses in a row).
    pub retry_delay: Duration,
    /// How often to look for sagas to resume.
    pub sweep_interval: Duration,
    /// Sagas driven at once by this process; the rest wait their turn.
    pub concurrency: usize,
}

/// The longest pause between retries of a step that gets no answer.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

impl Default for SagaSettings {
    fn default() -> Self {
        Self {
            step_timeout: Duration::from_secs(5),
            saga_timeout: Duration::from_secs(30),
            retry_delay: Duration::from_secs(1),
            sweep_interval: Duration::from_millis(500),
            concurrency: 512,
        }
    }
}

impl SagaSettings {
    /// How long a driving process owns a saga before a sweeper may take it over.
    fn lease(&self) -> Duration {
        self.step_timeout * 2
    }

    /// The pause before the next try after `misses` attempts without an
    /// answer: a quarter of `retry_delay` for the first three (a flaky
    /// dependency usually answers the next time), then doubling up to
    /// [`MAX_RETRY_DELAY`] (one that keeps failing is not hammered).
    fn retry_after(&self, misses: u32) -> Duration {
        let doublings = misses.saturating_sub(3).min(10);
        (self.retry_delay / 4).saturating_mul(1 << doublings).min(MAX_RETRY_DELAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_start_quick_then_back_off_to_a_cap() {
        let settings = SagaSettings::default();
        let delays: Vec<u64> = (1..=12).map(|misses| settings.retry_after(misses).as_millis() as u64).collect();
        assert_eq!(&delays[..6], [250, 250, 250, 500, 1000, 2000]);
        assert_eq!(delays[11], 30_000, "capped");
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

/// The ids every command of one saga carries, and the trace context its
/// steps continue (in memory only: a saga loaded from the store starts a
/// trace of its own).
#[derive(Debug, Clone)]
struct Causes {
    correlation_id: Uuid,
    causation_id: Uuid,
    traceparent: Option<String>,
}

#[derive(Clone)]
pub struct SagaRunner {
    store: SqlEventStore,
    credit_limits: CreditLimits,
    route: StepRoute,
    settings: SagaSettings,
    locks: StreamLocks,
    tasks: TaskTracker,
    permits: Arc<Semaphore>,
    writer: writer::SagaWriter,
    /// Sagas queued or being driven here: the sweeper leaves them alone.
    driving: Arc<Mutex<HashSet<String>>>,
    /// Catalog prices seen reserved: the customer check's estimate.
    prices: prices::CatalogPrices,
    /// Sagas the intake started or changed, to drive at once.
    wakes: Arc<Mutex<Option<mpsc::UnboundedReceiver<intake::Wake>>>>,
    /// Saves written in a transaction of their own (not with a step).
    saves_apart: Arc<AtomicU64>,
}

impl SagaRunner {
    /// A runner whose sagas start in `store`'s transactions: it installs
    /// its intake as the store's commit hook.
    pub fn new(store: SqlEventStore, route: StepRoute, settings: SagaSettings) -> Result<Self, SagaError> {
        let (wake, wakes) = mpsc::unbounded_channel();
        store.set_commit_hook(Arc::new(intake::SagaIntake::new(settings.clone(), wake)))?;
        let store_pool = store.pool().clone();
        Ok(Self {
            credit_limits: route
                .handler()
                .map_or_else(|| CreditLimits::new(store.clone()), |handler| handler.credit_limits().clone()),
            store,
            route,
            permits: Arc::new(Semaphore::new(settings.concurrency.max(1))),
            writer: writer::SagaWriter::start(store_pool),
            settings,
            locks: StreamLocks::default(),
            tasks: TaskTracker::new(),
            driving: Arc::default(),
            prices: prices::CatalogPrices::default(),
            wakes: Arc::new(Mutex::new(Some(wakes))),
            saves_apart: Arc::default(),
        })
    }

    /// How many saga saves this runner wrote in a transaction of their own
    /// rather than in their step's (rounds of several steps, steps run
    /// elsewhere, signals): what [`ride`] does not cover.
    pub fn saves_apart(&self) -> u64 {
        self.saves_apart.load(Ordering::Relaxed)
    }

    /// Drives the sagas the intake wakes, and sweeps for due ones, until
    /// `shutdown`; then lets the steps in flight finish.
    pub async fn run(self, shutdown: CancellationToken) {
        let Some(mut wakes) = self.wakes.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take() else {
            warn!("the order saga runner was started twice; the second one does nothing");
            return;
        };
        let mut sweep = tokio::time::interval(self.settings.sweep_interval);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        match self.resume_all().await {
            Ok(0) => {}
            Ok(resumed) => info!(resumed, "resumed the open order sagas"),
            Err(error) => warn!(%error, "could not list the open sagas; the sweeper will find them"),
        }
        info!("order saga running");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                woken = wakes.recv() => match woken {
                    Some(wake) => self.spawn_drive(wake.order_id, wake.fresh),
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

    /// Drives one saga in the background, at most `concurrency` at once.
    fn spawn_drive(&self, order_id: String, fresh: Option<store::Stored>) {
        self.driving.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(order_id.clone());
        let runner = self.clone();
        self.tasks.spawn(async move {
            let permit = runner.permits.clone().acquire_owned().await;
            if permit.is_ok()
                && let Err(error) = runner.drive_from(&order_id, fresh).await
            {
                warn!(%error, order_id, "saga step failed; retrying shortly");
                runner.retry_soon(&order_id).await;
            }
            runner.driving.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&order_id);
        });
    }

    fn is_driving(&self, order_id: &str) -> bool {
        self.driving.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).contains(order_id)
    }
}
