//! One lane: the actor that takes a batch of queued commands, decides them
//! against the aggregate states it keeps, writes them in one transaction
//! and answers (see [`super::group_commit`] for the whole design).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use schema::sql::{self, RetryableError, to_micros};
use schema::{CommandOutcome, EventEnvelope};
use sqlx::AnyPool;
use tokio::sync::mpsc;
use tracing::{debug, warn};
use uuid::Uuid;

use super::group_commit::{Attachment, HookSlot, Job, LaneSettings, State};
use super::publication::Publication;
use super::{Decision, StoreError, rows};

struct Cached {
    state: State,
    /// The batch that last used it, for eviction.
    used: u64,
}

pub(super) struct Lane {
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
    /// When deciding began, so no later than the new events' stamps: how
    /// old they are is measured from here ([`LaneSettings::append_deadline`]).
    stamped: Instant,
}

impl Decided {
    /// Stamps the new events again, as much later as time has passed since
    /// they were stamped: a batch written again carries the time of that
    /// attempt, not of the first. Everything moves by the same amount, so
    /// each stream's events stay in order and after the stream's earlier ones.
    fn restamp(&mut self) {
        let elapsed = self.stamped.elapsed();
        self.stamped = Instant::now();
        let Ok(shift) = chrono::Duration::from_std(elapsed) else { return };
        let shift = chrono::Duration::microseconds(shift.num_microseconds().unwrap_or(i64::MAX).max(1));
        for event in &mut self.new_events {
            event.timestamp += shift;
            if let Some(state) = self.states.get_mut(&event.stream_id()) {
                state.last_stamp = state.last_stamp.max(to_micros(event.timestamp));
            }
        }
        for decision in self.results.iter_mut().flatten() {
            for event in &mut decision.new_events {
                event.timestamp += shift;
            }
        }
    }
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
    pub(super) fn new(
        pool: AnyPool,
        receiver: mpsc::Receiver<Box<dyn Job>>,
        settings: LaneSettings,
        publication: Option<Publication>,
        hook: HookSlot,
        streams_read: Arc<AtomicU64>,
    ) -> Self {
        Self { pool, receiver, states: HashMap::new(), tick: 0, settings, publication, hook, streams_read }
    }

    pub(super) async fn run(mut self) {
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
        let written = self.write(&mut tx, jobs, &mut decided).await;
        self.finish(tx, written, decided).await
    }

    /// The same decisions written again in a new transaction, stamped anew:
    /// nothing is read.
    async fn rewrite(&mut self, jobs: &[Box<dyn Job>], mut decided: Decided) -> Result<Decided, Failed> {
        decided.restamp();
        let mut tx = match self.pool.begin().await {
            Ok(tx) => tx,
            Err(error) => return Err(Failed { error: error.into(), decided: Some(decided) }),
        };
        let written = self.write(&mut tx, jobs, &mut decided).await;
        self.finish(tx, written, decided).await
    }

    /// Commits what was written — unless the events were stamped longer
    /// than the append deadline ago: then the transaction is rolled back
    /// and the batch is written again with new stamps, so no event becomes
    /// visible long after the time it carries (`StreamEvents` relies on it).
    async fn finish(
        &self,
        tx: sqlx::Transaction<'static, sqlx::Any>,
        written: Result<(), StoreError>,
        decided: Decided,
    ) -> Result<Decided, Failed> {
        if let Err(error) = written {
            return Err(Failed { error, decided: Some(decided) });
        }
        let age = decided.stamped.elapsed();
        if age > self.settings.append_deadline {
            warn!(?age, deadline = ?self.settings.append_deadline, "append past its deadline; writing it again with new stamps");
            // Dropping it would roll back too, later; say so at once.
            let _ = tx.rollback().await;
            return Err(Failed { error: StoreError::Late(age), decided: Some(decided) });
        }
        match tx.commit().await {
            Ok(()) => Ok(decided),
            Err(error) => Err(Failed { error: StoreError::from_write(error), decided: Some(decided) }),
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
        let stamped = Instant::now();
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
        Ok(Decided { results, states, new_events, outcomes: decided.into_values().collect(), stamped })
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
