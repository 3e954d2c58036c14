//! What a projector has cost the database so far, counted where the
//! statements are issued: tests prove the statements per event stay flat,
//! and the projector logs the totals when it stops.

use std::sync::atomic::{AtomicU64, Ordering};

/// A projector's totals since it was built (shared by its workers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProjectorCounts {
    /// Transactions begun, including attempts rolled back and run again.
    pub attempts: u64,
    /// Transactions committed.
    pub commits: u64,
    /// Events applied (their checkpoint advanced), unreadable ones included.
    pub events: u64,
    /// Checkpoint reads and writes: at most two per transaction.
    pub checkpoint_statements: u64,
    /// Statements the projection ran to write its rows.
    pub view_statements: u64,
    /// Lookups of delivered events in the event store: one per delivered
    /// batch (events read from the store need none).
    pub verify_statements: u64,
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub attempts: AtomicU64,
    pub commits: AtomicU64,
    pub events: AtomicU64,
    pub checkpoint_statements: AtomicU64,
    pub view_statements: AtomicU64,
    pub verify_statements: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> ProjectorCounts {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ProjectorCounts {
            attempts: load(&self.attempts),
            commits: load(&self.commits),
            events: load(&self.events),
            checkpoint_statements: load(&self.checkpoint_statements),
            view_statements: load(&self.view_statements),
            verify_statements: load(&self.verify_statements),
        }
    }
}
