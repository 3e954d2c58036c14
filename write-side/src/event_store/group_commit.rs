//! Group commit. Commands are queued to one of a few *lanes* by their
//! stream (so one stream's commands are always decided by one lane, in
//! arrival order); a lane takes everything queued (up to a cap), decides it
//! all against the aggregate states it keeps in memory, and writes the
//! events, outbox rows and outcomes of the whole batch in one transaction:
//! a handful of multi-row statements and one commit, however many commands.
//! Nobody is answered before that commit.
//!
//! A lane is an actor: it alone owns its states, so there is no lock, and a
//! full queue is back-pressure. Its fast path reads nothing: a cached state
//! is trusted, and a stream not in memory whose command normally starts it
//! (placing an order) is assumed empty. Both guesses are checked by the
//! database: another writer's events, or an outcome already stored, make
//! the insert fail on a unique key. Then the lane forgets the batch's
//! states and decides it again carefully — stored outcomes first, streams
//! read from the store — so optimistic concurrency and exactly-once hold
//! whatever the guess; commands queued meanwhile join that retry. A
//! serialization failure says nothing against the states, so the same
//! decisions are written again in a new transaction, and nothing is read
//! back: a hot stream stays O(1) however often SSI aborts its batch (if
//! another writer did get in, the unique keys catch it, as above).

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use schema::{CommandEnvelope, CommandOutcome, EventEnvelope};
use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};

use super::lane::Lane;
use super::publication::Publication;
use super::{Decision, StoreError};

/// An aggregate's state as a lane keeps it, with the stream version it is at.
pub(super) struct State {
    pub aggregate: Box<dyn Any + Send + Sync>,
    pub version: u64,
    /// The stamp (`occurred_at`, µs) of the stream's last event; the next
    /// event is stamped later, so a stream's events are in version order in
    /// the store's time order too, whatever the writers' clocks say.
    pub last_stamp: i64,
}

/// A queued command. Its aggregate type is erased so that one lane can
/// commit the commands of every aggregate together.
pub(super) trait Job: Send + Sync {
    fn command(&self) -> &CommandEnvelope;
    fn stream(&self) -> &str;
    /// Whether this command normally starts its stream.
    fn starts_stream(&self) -> bool;
    /// What its sender asked the commit hook to write with it.
    fn attachment(&self) -> Option<&Attachment>;
    /// The state after `history`, the whole stream.
    fn fold(&self, history: &[EventEnvelope]) -> Result<State, StoreError>;
    /// Decides against `state` and advances it by the new events.
    fn decide(&self, state: &mut State) -> Result<(CommandOutcome, Vec<EventEnvelope>), StoreError>;
    fn reply(self: Box<Self>, result: Result<Decision, StoreError>);
}

pub(super) type Reply = oneshot::Sender<Result<Decision, StoreError>>;

/// Work that must commit or fail with the events that cause it: the lane
/// runs it inside the batch's transaction, for the batch's new events, and
/// tells it once they are committed. The order saga starts (and hears of
/// cancellations and shipments) this way, so no order is ever without its
/// saga and no event feed has to be read for it.
///
/// A command may also carry an [`Attachment`]: the hook gets it with the
/// command's decision, in the same transaction, and its answer goes back
/// to the sender in [`Decision::attached`]. The saga's step commands carry
/// the saga's state, which is then saved in the step's own transaction.
#[async_trait::async_trait]
pub trait CommitHook: Send + Sync {
    /// Runs in the batch's transaction; returns one answer per attachment.
    async fn within(
        &self,
        conn: &mut sqlx::AnyConnection,
        events: &[EventEnvelope],
        attached: &[(&Attachment, &Decision)],
    ) -> Result<Vec<Option<Attached>>, sqlx::Error>;
    fn committed(&self, events: &[EventEnvelope]);
}

/// Opaque to the store: what a command's sender hands its commit hook.
pub type Attachment = Box<dyn Any + Send + Sync>;

/// The commit hook's answer to an [`Attachment`], for the command's sender.
pub struct Attached(pub Box<dyn Any + Send + Sync>);

impl std::fmt::Debug for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Attached(..)")
    }
}

/// The hook, set once a store's user (the saga) exists.
pub(super) type HookSlot = Arc<std::sync::OnceLock<Arc<dyn CommitHook>>>;

/// How lanes run.
#[derive(Debug, Clone)]
pub struct LaneSettings {
    /// Lanes, that is transactions in flight at once. One is right for
    /// SQLite (one writer); a few let PostgreSQL's group commit work.
    pub lanes: usize,
    /// Commands decided in one transaction, at most.
    pub max_batch: usize,
    /// Queued commands per lane before senders wait (back-pressure).
    pub queue: usize,
    /// Aggregate states kept per lane; the least recently used go first.
    pub cached_streams: usize,
    /// Longest a batch's transaction may run from stamping its events to
    /// sending COMMIT. Past it the transaction is rolled back and the same
    /// decisions are written again with new stamps, so an event is never
    /// committed long after the time it carries: what `StreamEvents`' settle
    /// window rests on (docs/grpc.md, "The guarantee").
    pub append_deadline: Duration,
}

/// [`LaneSettings::append_deadline`] unless configured.
pub const APPEND_DEADLINE: Duration = Duration::from_secs(5);

impl Default for LaneSettings {
    fn default() -> Self {
        Self { lanes: 4, max_batch: 256, queue: 4096, cached_streams: 20_000, append_deadline: APPEND_DEADLINE }
    }
}

/// Senders to the lanes, by stream hash.
#[derive(Clone)]
pub(super) struct Lanes {
    senders: Arc<Vec<mpsc::Sender<Box<dyn Job>>>>,
    /// Streams read back from the store to decide on (not in memory).
    streams_read: Arc<AtomicU64>,
}

impl Lanes {
    pub fn start(pool: AnyPool, settings: &LaneSettings, publication: Option<Publication>, hook: HookSlot) -> Self {
        let streams_read = Arc::new(AtomicU64::new(0));
        let senders = (0..settings.lanes.max(1))
            .map(|_| {
                let (sender, receiver) = mpsc::channel(settings.queue.max(1));
                let lane = Lane::new(
                    pool.clone(),
                    receiver,
                    settings.clone(),
                    publication.clone(),
                    hook.clone(),
                    streams_read.clone(),
                );
                tokio::spawn(lane.run());
                sender
            })
            .collect();
        Self { senders: Arc::new(senders), streams_read }
    }

    pub fn streams_read(&self) -> u64 {
        self.streams_read.load(Ordering::Relaxed)
    }

    pub async fn submit(&self, job: Box<dyn Job>) -> Result<(), StoreError> {
        let lane = lane_of(job.stream(), self.senders.len());
        self.senders[lane].send(job).await.map_err(|_| StoreError::Closed)
    }
}

/// FNV-1a: stable, cheap, and spreads stream ids that share long prefixes.
fn lane_of(stream: &str, lanes: usize) -> usize {
    let hash = stream
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3));
    (hash % lanes as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::lane_of;

    #[test]
    fn a_stream_always_goes_to_the_same_lane_and_streams_spread() {
        assert_eq!(lane_of("product-a", 4), lane_of("product-a", 4));
        let used: std::collections::HashSet<usize> =
            (0..64).map(|n| lane_of(&format!("order-0190a1b2-{n:04}"), 4)).collect();
        assert_eq!(used.len(), 4, "64 streams use every lane");
    }
}
