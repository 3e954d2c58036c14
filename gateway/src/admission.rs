//! Admission at the edge (DESIGN.md invariant 9: the edge says "busy" before
//! it accepts work it cannot finish). Two limits, both checked before a
//! command is dispatched, so a refused request has changed nothing:
//!
//! * **Commands in flight in this gateway process.** Every mutation holds a
//!   permit while its dispatch waits for the write side's outcome (up to
//!   `--mutation-wait`). Permits are taken with `try_acquire`, never queued
//!   for: a queue at the edge is exactly the unbounded waiting this refuses.
//! * **Undecided orders** (the saga backlog, the [`Backlog`] port): while as
//!   many orders as the limit are accepted but not yet confirmed or rejected,
//!   `placeOrder` is refused. Only new orders are: cancelling, shipping and
//!   the catalog's commands finish or shrink work already taken. The count
//!   is read by one background task every [`BACKLOG_REFRESH`], so a request
//!   only looks at the last reading; the limit is therefore soft by what the
//!   gateways accept in one refresh period.
//!
//! A refusal becomes `OVERLOADED` with `retryAfterSeconds` (see
//! `graphql::errors::overloaded`), and HTTP 503 with `Retry-After` when it
//! is all a response says (`over_http`).

use std::sync::Arc;
use std::time::Duration;

use schema::ports::Backlog;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// How often the backlog is read: often enough that the limit overshoots by
/// a quarter second of orders at most, rarely enough to cost nothing (one
/// index-only count per gateway process, four times a second).
pub const BACKLOG_REFRESH: Duration = Duration::from_millis(250);

/// A backlog that cannot be read for this long counts as unknown, and
/// unknown admits: a broken gauge must not turn into refusing every order
/// (if the database is really down, the command fails on its own).
const BACKLOG_STALE_AFTER: Duration = Duration::from_secs(5);

/// The retry hint sent with a refusal. Commands in flight finish within
/// milliseconds to `--mutation-wait`, and the backlog is re-read four times
/// in this span, so a second is long enough to see a change and short
/// enough not to idle a recovered system. Clients should add jitter.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The two limits; 0 turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionSettings {
    /// Commands this gateway process waits on at once.
    pub max_inflight_commands: usize,
    /// Undecided orders at which `placeOrder` is refused.
    pub max_undecided_orders: u64,
}

impl Default for AdmissionSettings {
    fn default() -> Self {
        Self { max_inflight_commands: 1024, max_undecided_orders: 20_000 }
    }
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This gateway already waits on `--max-inflight-commands` commands.
    InflightCommands,
    /// `--max-undecided-orders` orders are accepted and not yet decided.
    UndecidedOrders,
}

impl Refusal {
    /// What the client is told (no figures: they are the operator's business).
    pub fn message(self) -> &'static str {
        match self {
            Self::InflightCommands => {
                "Conveyor is busy: this gateway is waiting on as many commands as it takes; nothing was done, retry later"
            }
            Self::UndecidedOrders => {
                "Conveyor is busy finishing the orders it has accepted; this order was not placed, retry later"
            }
        }
    }

    /// How long the client should wait before retrying.
    pub fn retry_after(self) -> Duration {
        RETRY_AFTER
    }
}

/// Holds one in-flight slot until dropped (a no-op when the limit is off).
#[must_use = "the slot is released when the permit drops"]
pub struct CommandPermit {
    _slot: Option<OwnedSemaphorePermit>,
}

/// The gateway's admission state, shared by every request; cheap to clone.
#[derive(Clone)]
pub struct Admission {
    /// `None`: no in-flight limit.
    inflight: Option<Arc<Semaphore>>,
    /// 0: no backlog limit.
    max_undecided_orders: u64,
    /// The last backlog reading; `None` while unknown (not read yet, or
    /// unreadable for [`BACKLOG_STALE_AFTER`]), which admits.
    undecided_orders: watch::Receiver<Option<u64>>,
}

impl Admission {
    /// No limits at all.
    pub fn unlimited() -> Self {
        Self::start(
            AdmissionSettings { max_inflight_commands: 0, max_undecided_orders: 0 },
            None,
            CancellationToken::new(),
        )
    }

    /// The limits of `settings`. With a backlog limit and a `backlog` port,
    /// spawns the one task that reads it every [`BACKLOG_REFRESH`] until
    /// `shutdown` (or until every handle is gone); without a port the
    /// backlog limit cannot be known and is off.
    pub fn start(settings: AdmissionSettings, backlog: Option<Arc<dyn Backlog>>, shutdown: CancellationToken) -> Self {
        let (readings, undecided_orders) = watch::channel(None);
        let max_undecided_orders = match backlog {
            Some(port) if settings.max_undecided_orders > 0 => {
                let watcher = BacklogWatcher { port, limit: settings.max_undecided_orders, readings };
                tokio::spawn(watcher.run(shutdown));
                settings.max_undecided_orders
            }
            _ => 0,
        };
        let inflight = (settings.max_inflight_commands > 0)
            .then(|| Arc::new(Semaphore::new(settings.max_inflight_commands.min(Semaphore::MAX_PERMITS))));
        Self { inflight, max_undecided_orders, undecided_orders }
    }

    /// A slot for one command's dispatch, or [`Refusal::InflightCommands`]
    /// at once when every slot is taken.
    pub fn try_command_permit(&self) -> Result<CommandPermit, Refusal> {
        match &self.inflight {
            None => Ok(CommandPermit { _slot: None }),
            Some(slots) => {
                slots.clone().try_acquire_owned().map(|permit| CommandPermit { _slot: Some(permit) }).map_err(|_| {
                    tracing::debug!("command refused: every in-flight slot is taken");
                    schema::metrics::metrics().admission_refusals.get_or_create(&[("reason", "inflight".into())]).inc();
                    Refusal::InflightCommands
                })
            }
        }
    }

    /// Whether a new order must be refused: the last backlog reading is at
    /// or above the limit.
    pub fn new_order_refusal(&self) -> Option<Refusal> {
        let undecided = (*self.undecided_orders.borrow())?;
        (self.max_undecided_orders > 0 && undecided >= self.max_undecided_orders).then(|| {
            tracing::debug!(undecided, limit = self.max_undecided_orders, "order refused: backlog at its limit");
            schema::metrics::metrics().admission_refusals.get_or_create(&[("reason", "backlog".into())]).inc();
            Refusal::UndecidedOrders
        })
    }

    /// The backlog readings as they come (for tests and diagnostics).
    pub fn undecided_orders(&self) -> watch::Receiver<Option<u64>> {
        self.undecided_orders.clone()
    }
}

/// The one task that reads the backlog and publishes each reading.
struct BacklogWatcher {
    port: Arc<dyn Backlog>,
    limit: u64,
    readings: watch::Sender<Option<u64>>,
}

impl BacklogWatcher {
    async fn run(self, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(BACKLOG_REFRESH);
        // A slow count delays the next one instead of queueing a burst.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut failing_since: Option<Instant> = None;
        let mut at_limit = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.readings.closed() => return,
                _ = ticks.tick() => {}
            }
            let reading = tokio::time::timeout(BACKLOG_STALE_AFTER, self.port.undecided_orders()).await;
            match reading {
                Ok(Ok(undecided)) => {
                    if failing_since.take().is_some() {
                        tracing::info!(undecided, "the order backlog is readable again");
                    }
                    let over = undecided >= self.limit;
                    if over != at_limit {
                        at_limit = over;
                        if over {
                            tracing::warn!(
                                undecided,
                                limit = self.limit,
                                "undecided orders reached --max-undecided-orders: placeOrder answers OVERLOADED"
                            );
                        } else {
                            tracing::info!(undecided, limit = self.limit, "undecided orders below the limit again");
                        }
                    }
                    self.readings.send_replace(Some(undecided));
                }
                failed => {
                    let since = *failing_since.get_or_insert_with(|| {
                        match &failed {
                            Ok(Err(error)) => tracing::warn!(%error, "cannot read the order backlog"),
                            _ => tracing::warn!("reading the order backlog timed out"),
                        }
                        Instant::now()
                    });
                    if since.elapsed() >= BACKLOG_STALE_AFTER {
                        // Unknown admits (see BACKLOG_STALE_AFTER).
                        self.readings.send_replace(None);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use async_trait::async_trait;
    use schema::ports::PortError;

    use super::*;

    #[test]
    fn in_flight_slots_are_refused_at_once_and_come_back_when_dropped() {
        let admission = Admission::start(
            AdmissionSettings { max_inflight_commands: 2, max_undecided_orders: 0 },
            None,
            CancellationToken::new(),
        );
        let first = admission.try_command_permit().expect("a free slot");
        let _second = admission.try_command_permit().expect("a free slot");
        assert_eq!(admission.try_command_permit().err(), Some(Refusal::InflightCommands));
        drop(first);
        assert!(admission.try_command_permit().is_ok(), "a dropped permit frees its slot");
    }

    #[test]
    fn zero_turns_both_limits_off() {
        let admission = Admission::unlimited();
        let permits: Vec<_> = (0..10_000).map(|_| admission.try_command_permit()).collect();
        assert!(permits.iter().all(Result::is_ok));
        assert_eq!(admission.new_order_refusal(), None);
    }

    struct Gauge(AtomicU64);

    #[async_trait]
    impl Backlog for Gauge {
        async fn undecided_orders(&self) -> Result<u64, PortError> {
            Ok(self.0.load(Ordering::SeqCst))
        }
    }

    #[tokio::test]
    async fn new_orders_are_refused_from_the_limit_on_and_admitted_below_it() {
        let gauge = Arc::new(Gauge(AtomicU64::new(2)));
        let shutdown = CancellationToken::new();
        let settings = AdmissionSettings { max_inflight_commands: 0, max_undecided_orders: 2 };
        let admission = Admission::start(settings, Some(gauge.clone()), shutdown.clone());
        let mut readings = admission.undecided_orders();
        let wait = Duration::from_secs(10);
        tokio::time::timeout(wait, readings.wait_for(|reading| *reading == Some(2)))
            .await
            .expect("a reading within the bound")
            .expect("the watcher runs");
        assert_eq!(admission.new_order_refusal(), Some(Refusal::UndecidedOrders), "at the limit");
        gauge.0.store(1, Ordering::SeqCst);
        tokio::time::timeout(wait, readings.wait_for(|reading| *reading == Some(1)))
            .await
            .expect("a reading within the bound")
            .expect("the watcher runs");
        assert_eq!(admission.new_order_refusal(), None, "below the limit");
        shutdown.cancel();
    }
}
