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
    /// Given up without a decision (the write side could not handle it in
    /// its deliveries): final for this delivery, but not a domain answer.
    /// The command is kept in the dead-letter stream; a redrive that
    /// succeeds replaces this outcome with the decided one.
    Failed,
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
    /// Set when `status` is `Rejected` or `Failed`.
    pub rejection: Option<Rejection>,
    /// The aggregate's stream version after this command (for read-your-writes).
    pub stream_version: u64,
    /// Ids of the events the command appended, in stream order.
    pub event_ids: Vec<Uuid>,
    pub decided_at: DateTime<Utc>,
    /// [`crate::CommandEnvelope::fingerprint`] of the command decided: a
    /// retry under the same id asking something else is told so, not given
    /// this answer. Absent in outcomes stored before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Uuid>,
    /// Who sent the command (its envelope's actor): only that caller (and
    /// admin) may read this outcome. Absent in outcomes stored before it
    /// existed, which only admin may read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
}

impl CommandOutcome {
    /// The answer to a command the write side gave up on after `delivered`
    /// deliveries: `Failed` with [`crate::codes::COMMAND_FAILED`]. The cause
    /// stays in the logs and the dead letter; the client sees only the code.
    pub fn given_up(command: &crate::CommandEnvelope, delivered: u64) -> Self {
        Self {
            command_id: command.id,
            aggregate_type: command.aggregate_type.clone(),
            aggregate_id: command.aggregate_id.clone(),
            status: OutcomeStatus::Failed,
            rejection: Some(Rejection::new(
                crate::codes::COMMAND_FAILED,
                format!(
                    "the write side could not handle this command in {delivered} attempts; nothing was decided, \
                     and it is kept for an operator to retry"
                ),
            )),
            stream_version: 0,
            event_ids: Vec::new(),
            decided_at: Utc::now(),
            fingerprint: Some(command.fingerprint()),
            sender: Some(command.metadata.actor.clone()),
        }
    }

    /// Whether this outcome answers `command`: same id, and (when known) the same request.
    pub fn answers(&self, command: &crate::CommandEnvelope) -> bool {
        self.command_id == command.id && self.fingerprint.is_none_or(|known| known == command.fingerprint())
    }
}
