//! One aggregate's command as a lane sees it: how to fold its stream, how to
//! decide it, and whom to answer.

use chrono::Utc;
use schema::envelope::Message;
use schema::sql::{from_micros, to_micros};
use schema::{CommandEnvelope, CommandOutcome, EventEnvelope, Metadata, OutcomeStatus};
use uuid::Uuid;

use super::group_commit::{Attachment, Job, Reply, State};
use super::{Decision, StoreError};
use crate::aggregate::Aggregate;

pub(super) struct Pending<A: Aggregate> {
    command: CommandEnvelope,
    typed: A::Command,
    stream: String,
    attachment: Option<Attachment>,
    reply: Reply,
}

impl<A: Aggregate> Pending<A> {
    pub fn new(
        command: CommandEnvelope,
        typed: A::Command,
        stream: String,
        attachment: Option<Attachment>,
        reply: Reply,
    ) -> Self {
        Self { command, typed, stream, attachment, reply }
    }
}

impl<A: Aggregate> Job for Pending<A> {
    fn command(&self) -> &CommandEnvelope {
        &self.command
    }

    fn stream(&self) -> &str {
        &self.stream
    }

    fn starts_stream(&self) -> bool {
        A::starts_stream(&self.typed)
    }

    fn attachment(&self) -> Option<&Attachment> {
        self.attachment.as_ref()
    }

    fn fold(&self, history: &[EventEnvelope]) -> Result<State, StoreError> {
        let (aggregate, version) = fold::<A>(history)?;
        let last_stamp = history.last().map_or(i64::MIN, |event| to_micros(event.timestamp));
        Ok(State { aggregate: Box::new(aggregate), version, last_stamp })
    }

    fn decide(&self, state: &mut State) -> Result<(CommandOutcome, Vec<EventEnvelope>), StoreError> {
        let (version, last_stamp) = (state.version, state.last_stamp);
        let aggregate = state
            .aggregate
            .downcast_mut::<A>()
            .ok_or_else(|| StoreError::Contract(format!("stream {} holds another aggregate type", self.stream)))?;
        let mut outcome = CommandOutcome {
            command_id: self.command.id,
            aggregate_type: A::TYPE.into(),
            aggregate_id: self.command.aggregate_id.clone(),
            status: OutcomeStatus::Accepted,
            rejection: None,
            stream_version: version,
            event_ids: Vec::new(),
            decided_at: Utc::now(),
            fingerprint: Some(self.command.fingerprint()),
            sender: Some(self.command.metadata.actor.clone()),
        };
        match aggregate.decide(&self.typed) {
            Ok(events) => {
                for event in &events {
                    aggregate.apply(event);
                }
                let envelopes = envelopes::<A>(&self.command, version, last_stamp, &events);
                state.version += envelopes.len() as u64;
                if let Some(last) = envelopes.last() {
                    state.last_stamp = to_micros(last.timestamp);
                }
                outcome.stream_version = state.version;
                outcome.event_ids = envelopes.iter().map(|event| event.id).collect();
                Ok((outcome, envelopes))
            }
            Err(rejection) => {
                outcome.status = OutcomeStatus::Rejected;
                outcome.rejection = Some(rejection);
                Ok((outcome, Vec::new()))
            }
        }
    }

    fn reply(self: Box<Self>, result: Result<Decision, StoreError>) {
        // The caller may have given up waiting; the decision stands.
        let _ = self.reply.send(result);
    }
}

/// The state after `history` and its version (the number of events).
pub(super) fn fold<A: Aggregate>(history: &[EventEnvelope]) -> Result<(A, u64), StoreError> {
    let mut state = A::default();
    for stored in history {
        let event = A::Event::decode(stored).map_err(|error| StoreError::Contract(error.to_string()))?;
        state.apply(&event);
    }
    Ok((state, history.len() as u64))
}

/// The new events as stored: each stamped now, to the microsecond (what
/// the store keeps), and a microsecond after the one before it in the
/// stream, even when a clock stepped back or another writer's ran ahead.
fn envelopes<A: Aggregate>(
    command: &CommandEnvelope,
    after_version: u64,
    last_stamp: i64,
    events: &[A::Event],
) -> Vec<EventEnvelope> {
    let metadata: Metadata = command.caused_metadata();
    let first = to_micros(Utc::now()).max(last_stamp.saturating_add(1));
    events
        .iter()
        .enumerate()
        .map(|(index, event)| {
            let (type_name, payload) = event.to_parts();
            let timestamp = from_micros(first + index as i64);
            EventEnvelope {
                id: Uuid::now_v7(),
                schema_version: A::Event::schema_version(&type_name).unwrap_or(1),
                type_name,
                aggregate_type: A::TYPE.into(),
                aggregate_id: command.aggregate_id.clone(),
                stream_version: after_version + index as u64 + 1,
                metadata: metadata.clone(),
                timestamp,
                payload,
            }
        })
        .collect()
}
