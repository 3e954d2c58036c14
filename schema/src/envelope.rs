//! Envelopes: the metadata every command and event carries, around a payload
//! whose type is named and versioned so that old events still load after
//! their type grows (see [`crate::order::OrderEvent::decode`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;
use uuid::Uuid;

/// Why a message could not be turned into a typed command or event.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("unknown {kind} type `{type_name}`")]
    UnknownType { kind: &'static str, type_name: String },
    #[error("{type_name} schema version {version} is newer than this build understands ({known})")]
    UnknownVersion { type_name: String, version: u32, known: u32 },
    #[error("malformed {type_name} payload: {source}")]
    Malformed {
        type_name: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Who asked, and why: shared by commands and the events they cause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Ties every message of one business transaction together (the first command's id).
    pub correlation_id: Uuid,
    /// The id of the message that directly caused this one.
    pub causation_id: Uuid,
    /// Who asked: a user id, `anonymous`, or a service name.
    pub actor: String,
    /// The W3C trace context of the span that sent this message (see
    /// [`crate::trace`]); tracing data only, never part of a decision (the
    /// event store keeps it with each event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl Metadata {
    /// Metadata for a command that starts a new business transaction, in
    /// the trace of the current span.
    pub fn origin(command_id: Uuid, actor: impl Into<String>) -> Self {
        Self {
            correlation_id: command_id,
            causation_id: command_id,
            actor: actor.into(),
            traceparent: crate::trace::current(),
        }
    }
}

/// A command on its way to the write side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandEnvelope {
    /// Command id (UUIDv7, or derived from an idempotency key): the dedupe key
    /// for JetStream (`Nats-Msg-Id`) and for the stored outcome.
    pub id: Uuid,
    #[serde(rename = "type")]
    pub type_name: String,
    pub schema_version: u32,
    /// Aggregate type, e.g. `order`: selects the handler and the subject.
    pub aggregate_type: String,
    pub aggregate_id: String,
    #[serde(flatten)]
    pub metadata: Metadata,
    pub timestamp: DateTime<Utc>,
    pub payload: Value,
}

/// An event as stored and as published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// Event id (UUIDv7); `Nats-Msg-Id` when published.
    pub id: Uuid,
    #[serde(rename = "type")]
    pub type_name: String,
    pub schema_version: u32,
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// Position in the aggregate's stream, from 1, without gaps.
    pub stream_version: u64,
    #[serde(flatten)]
    pub metadata: Metadata,
    pub timestamp: DateTime<Utc>,
    pub payload: Value,
}

impl EventEnvelope {
    /// The stream this event belongs to, `<aggregate_type>-<aggregate_id>`.
    pub fn stream_id(&self) -> String {
        stream_id(&self.aggregate_type, &self.aggregate_id)
    }
}

/// The event stream of one aggregate instance.
pub fn stream_id(aggregate_type: &str, aggregate_id: &str) -> String {
    format!("{aggregate_type}-{aggregate_id}")
}

/// A payload type that travels under a name and a schema version.
///
/// Implemented by the command and event enums; the enum is serialized
/// adjacently tagged (`{"type": .., "payload": ..}`), which this trait splits
/// into the envelope's `type` and `payload` fields and joins back.
pub trait Message: Serialize + DeserializeOwned {
    /// `command` or `event`, for error messages.
    const KIND: &'static str;
    /// The current schema version of a payload type.
    fn schema_version(type_name: &str) -> Option<u32>;

    /// Splits into (type name, payload).
    fn to_parts(&self) -> (String, Value) {
        match serde_json::to_value(self) {
            Ok(Value::Object(mut map)) => {
                let type_name = match map.remove("type") {
                    Some(Value::String(name)) => name,
                    _ => String::new(),
                };
                (type_name, map.remove("payload").unwrap_or(Value::Null))
            }
            // Adjacently tagged enums always serialize to an object.
            _ => (String::new(), Value::Null),
        }
    }

    /// Joins a type name and a payload already upcast to the current version.
    fn from_parts(type_name: &str, payload: Value) -> Result<Self, ContractError> {
        if Self::schema_version(type_name).is_none() {
            return Err(ContractError::UnknownType { kind: Self::KIND, type_name: type_name.into() });
        }
        let tagged = serde_json::json!({ "type": type_name, "payload": payload });
        serde_json::from_value(tagged)
            .map_err(|source| ContractError::Malformed { type_name: type_name.into(), source })
    }

    /// Brings a payload stored at an older schema version up to the current
    /// one. Types that never changed keep the default, which changes nothing.
    fn upcast(_type_name: &str, _version: u32, payload: Value) -> Value {
        payload
    }

    /// Loads a stored or received message of any known schema version.
    fn decode_versioned(type_name: &str, version: u32, payload: &Value) -> Result<Self, ContractError> {
        let known = Self::schema_version(type_name)
            .ok_or_else(|| ContractError::UnknownType { kind: Self::KIND, type_name: type_name.into() })?;
        if version > known {
            return Err(ContractError::UnknownVersion { type_name: type_name.into(), version, known });
        }
        Self::from_parts(type_name, Self::upcast(type_name, version, payload.clone()))
    }

    /// Loads an event of this type from its envelope.
    fn decode(event: &EventEnvelope) -> Result<Self, ContractError> {
        Self::decode_versioned(&event.type_name, event.schema_version, &event.payload)
    }
}

impl CommandEnvelope {
    /// Wraps a command for an aggregate.
    pub fn new<C: Message>(
        id: Uuid,
        aggregate_type: &str,
        aggregate_id: impl Into<String>,
        metadata: Metadata,
        command: &C,
    ) -> Self {
        let (type_name, payload) = command.to_parts();
        Self {
            id,
            schema_version: C::schema_version(&type_name).unwrap_or(1),
            type_name,
            aggregate_type: aggregate_type.into(),
            aggregate_id: aggregate_id.into(),
            metadata,
            timestamp: Utc::now(),
            payload,
        }
    }

    /// What the command asks, apart from its id, time and metadata: two
    /// commands with one idempotency key and different requests differ here.
    pub fn fingerprint(&self) -> Uuid {
        derived_id(
            "fingerprint",
            &format!(
                "{}:{}:{}:{}:{}",
                self.aggregate_type, self.aggregate_id, self.type_name, self.schema_version, self.payload
            ),
        )
    }

    /// The typed command inside.
    pub fn decode<C: Message>(&self) -> Result<C, ContractError> {
        C::decode_versioned(&self.type_name, self.schema_version, &self.payload)
    }

    /// Metadata for the events (or follow-up commands) this command causes.
    pub fn caused_metadata(&self) -> Metadata {
        Metadata {
            correlation_id: self.metadata.correlation_id,
            causation_id: self.id,
            actor: self.metadata.actor.clone(),
            traceparent: self.metadata.traceparent.clone(),
        }
    }
}

/// Derives a stable id from a name (UUIDv5): for command ids derived from
/// idempotency keys, and ids derived from them, so a retry maps to the same ids.
pub fn derived_id(scope: &str, name: &str) -> Uuid {
    // A fixed namespace for all of Conveyor's derived ids.
    const CONVEYOR: Uuid = Uuid::from_u128(0x6a3f_5d1e_2b7c_4e0a_9f81_c0ff_ee00_0001);
    Uuid::new_v5(&CONVEYOR, format!("{scope}:{name}").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::{CancelOrder, OrderCommand};

    #[test]
    fn a_command_round_trips_through_its_envelope() {
        let id = Uuid::now_v7();
        let command = OrderCommand::CancelOrder(CancelOrder { reason: "changed my mind".into() });
        let envelope = CommandEnvelope::new(id, "order", "o-1", Metadata::origin(id, "tester"), &command);
        assert_eq!(envelope.type_name, "CancelOrder");
        let wire = serde_json::to_vec(&envelope).expect("serializes");
        let back: CommandEnvelope = serde_json::from_slice(&wire).expect("deserializes");
        assert_eq!(back.decode::<OrderCommand>().expect("decodes"), command);
    }

    #[test]
    fn an_unknown_type_or_newer_version_is_a_clear_error() {
        let id = Uuid::now_v7();
        let command = OrderCommand::CancelOrder(CancelOrder { reason: "x".into() });
        let mut envelope = CommandEnvelope::new(id, "order", "o-1", Metadata::origin(id, "t"), &command);
        envelope.schema_version = 99;
        assert!(matches!(envelope.decode::<OrderCommand>(), Err(ContractError::UnknownVersion { .. })));
        envelope.type_name = "DropTables".into();
        assert!(matches!(envelope.decode::<OrderCommand>(), Err(ContractError::UnknownType { .. })));
    }

    #[test]
    fn a_fingerprint_is_what_is_asked_not_when_or_by_whom() {
        let cancel = |reason: &str| OrderCommand::CancelOrder(CancelOrder { reason: reason.into() });
        let (one, two) = (Uuid::now_v7(), Uuid::now_v7());
        let first = CommandEnvelope::new(one, "order", "o-1", Metadata::origin(one, "a"), &cancel("x"));
        let retry = CommandEnvelope::new(two, "order", "o-1", Metadata::origin(two, "b"), &cancel("x"));
        assert_eq!(first.fingerprint(), retry.fingerprint());
        let other = CommandEnvelope::new(one, "order", "o-1", Metadata::origin(one, "a"), &cancel("y"));
        assert_ne!(first.fingerprint(), other.fingerprint());
        let elsewhere = CommandEnvelope::new(one, "order", "o-2", Metadata::origin(one, "a"), &cancel("x"));
        assert_ne!(first.fingerprint(), elsewhere.fingerprint());
    }

    #[test]
    fn derived_ids_are_stable_and_scoped() {
        assert_eq!(derived_id("a", "k"), derived_id("a", "k"));
        assert_ne!(derived_id("a", "k"), derived_id("b", "k"));
    }
}
