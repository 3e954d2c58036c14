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
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use schema::sql::{self, RetryableError};
use schema::{CommandEnvelope, CommandOutcome, EventEnvelope};
use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};
use uuid::Uuid;

use super::publication::Publication;
use super::{Decision, StoreError, rows};

/// An aggregate's state as a lane keeps it, with the stream version it is at.
pub(super) struct State {
    pub aggregate: Box<dyn Any + Send + Sync>,
    pub version: u64,
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
}

impl Default for LaneSettings {
    fn default() -> Self {
        Self { lanes: 4, max_batch: 256, queue: 4096, cached_streams: 20_000 }
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
                let lane = Lane {
                    pool: pool.clone(),
                    receiver,
                    states: HashMap::new(),
                    tick: 0,
                    settings: settings.clone(),
                    publication: publication.clone(),
                    hook: hook.clone(),
                    streams_read: streams_read.clone(),
                };
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

struct Cached {
    state: State,
    /// The batch that last used it, for eviction.
    used: u64,
}

struct Lane {
    pool: AnyPool,
    receiver: mpsc::Receiver<Box<dyn Job>>,
    states: HashMap<String, Cached>,
    tick: u64,
    settings: LaneSettings,
    publication: Option<Publication>,
    hook: HookSlot,
    streams_read: Arc<AtomicU64>,
}

/// What a batch decided: each job's result, the states it reached, and
/// the rows to write.
struct Decided {
    results: Vec<Result<Decision, StoreError>>,
    states: HashMap<String, State>,
    new_events: Vec<EventEnvelope>,
    outcomes: Vec<CommandOutcome>,
}

/// A failed attempt, with its decisions when it got that far.
struct Failed {
    error: StoreError,
    decided: Option<Decided>,
}

impl Failed {
    /// Failed before (or while) deciding: nothing to write again.
    fn before(error: impl Into<StoreError>) -> Self {
        Self { error: error.into(), decided: None }
    }
}

impl Lane {
    async fn run(mut self) {
        while let Some(first) = self.receiver.recv().await {
            let mut jobs = vec![first];
            self.take_queued(&mut jobs);
            self.commit(jobs).await;
        }
    }

    fn take_queued(&mut self, jobs: &mut Vec<Box<dyn Job>>) {
        while jobs.len() < self.settings.max_batch {
            match self.receiver.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
    }

    /// Commits a batch. A serialization failure writes the same decisions
    /// again (nothing was wrong with them: the states in memory stand, so
    /// a hot stream is not read back); a conflict — another writer's
    /// events or outcome on a unique key — decides the batch again,
    /// carefully. A batch that fails otherwise is split so that one bad
    /// command cannot fail the others.
    async fn commit(&mut self, mut jobs: Vec<Box<dyn Job>>) {
        let mut careful = false;
        let mut attempt = 0;
        let mut decided: Option<Decided> = None;
        loop {
            let result = match decided.take() {
                Some(again) => self.rewrite(&jobs, again).await,
                None => self.attempt(&jobs, careful).await,
            };
            match result {
                Ok(Decided { results, states, .. }) => {
                    self.tick += 1;
                    for (stream, state) in states {
                        self.states.insert(stream, Cached { state, used: self.tick });
                    }
                    self.evict_stale();
                    let mut published = Vec::new();
                    for (job, result) in jobs.into_iter().zip(results) {
                        if let Ok(decision) = &result {
                            published.extend(decision.new_events.iter().cloned());
                        }
                        job.reply(result);
                    }
                    if let Some(hook) = self.hook.get()
                        && !published.is_empty()
                    {
                        hook.committed(&published);
                    }
                    if let Some(publication) = &self.publication
                        && !published.is_empty()
                    {
                        publication.send(published).await;
                    }
                    return;
                }
                Err(Failed { error, decided: kept }) if error.is_retryable() && attempt + 1 < sql::MAX_ATTEMPTS => {
                    attempt += 1;
                    debug!(%error, attempt, commands = jobs.len(), "group commit failed; trying the batch again");
                    tokio::time::sleep(sql::backoff(attempt)).await;
                    if let (Some(kept), false) = (kept, matches!(error, StoreError::Conflict(_))) {
                        decided = Some(kept);
                    } else {
                        // The batch's states may be wrong: read them.
                        careful = true;
                        self.take_queued(&mut jobs);
                    }
                }
                Err(Failed { error, .. }) if jobs.len() > 1 => {
                    warn!(%error, commands = jobs.len(), "group commit failed; committing its commands one by one");
                    for job in jobs {
                        Box::pin(self.commit(vec![job])).await;
                    }
                    return;
                }
                Err(Failed { error, .. }) => {
                    if let Some(job) = jobs.pop() {
                        job.reply(Err(error));
                    }
                    return;
                }
            }
        }
    }

    /// One transaction for the whole batch: decide, write, commit. The
    /// batch's states leave the cache for it; on a failure after the
    /// decisions, they come back with them (see [`Self::commit`]).
    async fn attempt(&mut self, jobs: &[Box<dyn Job>], careful: bool) -> Result<Decided, Failed> {
        let mut tx = self.pool.begin().await.map_err(Failed::before)?;
        let mut decided = self.decide(&mut tx, jobs, careful).await.map_err(Failed::before)?;
        match self.write(&mut tx, jobs, &mut decided).await {
            Ok(()) => match tx.commit().await {
                Ok(()) => Ok(decided),
                Err(error) => Err(Failed { error: StoreError::from_write(error), decided: Some(decided) }),
            },
            Err(error) => Err(Failed { error, decided: Some(decided) }),
        }
    }

    /// The same decisions written again in a new transaction: nothing is read.
    async fn rewrite(&mut self, jobs: &[Box<dyn Job>], mut decided: Decided) -> Result<Decided, Failed> {
        let mut tx = match self.pool.begin().await {
            Ok(tx) => tx,
            Err(error) => return Err(Failed { error: error.into(), decided: Some(decided) }),
        };
        match self.write(&mut tx, jobs, &mut decided).await {
            Ok(()) => match tx.commit().await {
                Ok(()) => Ok(decided),
                Err(error) => Err(Failed { error: StoreError::from_write(error), decided: Some(decided) }),
            },
            Err(error) => Err(Failed { error, decided: Some(decided) }),
        }
    }

    /// Decides every job against the states in memory — or, when
    /// `careful`, against stored outcomes and streams read in `tx`.
    async fn decide(
        &mut self,
        tx: &mut sqlx::AnyConnection,
        jobs: &[Box<dyn Job>],
        careful: bool,
    ) -> Result<Decided, StoreError> {
        let mut states: HashMap<String, State> = HashMap::new();
        for job in jobs {
            if let Some(cached) = self.states.remove(job.stream()) {
                states.insert(job.stream().to_string(), cached.state);
            }
        }
        let stored = if careful {
            rows::stored_outcomes(tx, &jobs.iter().map(|job| job.command().id).collect::<Vec<_>>()).await?
        } else {
            HashMap::new()
        };
        // Streams to read: not in memory, and not assumed new.
        let mut unread: Vec<&str> = jobs
            .iter()
            .filter(|job| !states.contains_key(job.stream()) && (careful || !job.starts_stream()))
            .filter(|job| !stored.contains_key(&job.command().id))
            .map(|job| job.stream())
            .collect();
        unread.sort_unstable();
        unread.dedup();
        self.streams_read.fetch_add(unread.len() as u64, Ordering::Relaxed);
        let mut histories = if unread.is_empty() { HashMap::new() } else { rows::load_streams(tx, &unread).await? };

        let mut results = Vec::with_capacity(jobs.len());
        let mut decided: HashMap<Uuid, CommandOutcome> = HashMap::new();
        let mut new_events = Vec::new();
        for job in jobs {
            let id = job.command().id;
            if let Some(outcome) = stored.get(&id).or_else(|| decided.get(&id)) {
                results.push(Ok(Decision::stored(outcome.clone())));
                continue;
            }
            let state = match states.entry(job.stream().to_string()) {
                std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::hash_map::Entry::Vacant(entry) => {
                    let history = histories.remove(job.stream()).unwrap_or_default();
                    match job.fold(&history) {
                        Ok(state) => entry.insert(state),
                        Err(error) => {
                            results.push(Err(error));
                            continue;
                        }
                    }
                }
            };
            match job.decide(state) {
                Ok((outcome, events)) => {
                    new_events.extend(events.iter().cloned());
                    decided.insert(id, outcome.clone());
                    results.push(Ok(Decision { outcome, new_events: events, attached: None }));
                }
                Err(error) => results.push(Err(error)),
            }
        }
        Ok(Decided { results, states, new_events, outcomes: decided.into_values().collect() })
    }

    /// Writes the decisions: events, the commit hook's work, outcomes.
    async fn write(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        jobs: &[Box<dyn Job>],
        decided: &mut Decided,
    ) -> Result<(), StoreError> {
        let Decided { results, new_events, outcomes, .. } = decided;
        if !new_events.is_empty() {
            rows::insert_events(tx, new_events).await.map_err(StoreError::from_write)?;
        }
        if let Some(hook) = self.hook.get() {
            // The decided commands that carry an attachment, by index.
            let carrying: Vec<usize> =
                (0..jobs.len()).filter(|&index| jobs[index].attachment().is_some() && results[index].is_ok()).collect();
            if !new_events.is_empty() || !carrying.is_empty() {
                let attached: Vec<(&Attachment, &Decision)> = carrying
                    .iter()
                    .filter_map(|&index| Some((jobs[index].attachment()?, results[index].as_ref().ok()?)))
                    .collect();
                let answers = hook.within(tx, new_events, &attached).await?;
                for (index, answer) in carrying.into_iter().zip(answers) {
                    if let Ok(decision) = &mut results[index] {
                        decision.attached = answer;
                    }
                }
            }
        }
        if !outcomes.is_empty() {
            let outcomes: Vec<&CommandOutcome> = outcomes.iter().collect();
            rows::insert_outcomes(tx, &outcomes).await.map_err(StoreError::from_write)?;
        }
        Ok(())
    }

    /// Keeps the cache within its bound by dropping the least recently
    /// used half when it overflows: amortized O(1) per batch.
    fn evict_stale(&mut self) {
        if self.states.len() <= self.settings.cached_streams {
            return;
        }
        let mut ages: Vec<u64> = self.states.values().map(|cached| cached.used).collect();
        let middle = ages.len() / 2;
        let (_, median, _) = ages.select_nth_unstable(middle);
        let median = *median;
        self.states.retain(|_, cached| cached.used > median);
    }
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
