//! What the write side decided about a command. Stored with the events in one
//! transaction, keyed by command id, so a redelivered or retried command gets
//! the same answer and appends nothing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutcomeStatus {
    Accepted,
    Rejected,
}

/// A domain rejection: a stable code and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub code: String,
    pub message: String,
}

impl Rejection {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code: code.into(), message: message.into() }
    }

    /// The code as one of the [`crate::codes`] constants, for matching in tests.
    pub fn code_static(&self) -> &'static str {
        crate::codes::ALL.iter().copied().find(|code| *code == self.code).unwrap_or(crate::codes::INTERNAL)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandOutcome {
    pub command_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub status: OutcomeStatus,
    /// Set when `status` is `Rejected`.
    pub rejection: Option<Rejection>,
    /// The aggregate's stream version after this command (for read-your-writes).
    pub stream_version: u64,
    /// Ids of the events the command appended, in stream order.
    pub event_ids: Vec<Uuid>,
    pub decided_at: DateTime<Utc>,
}
