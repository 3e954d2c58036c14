//! Dead letters that are kept: the `<ns>_DLQ` JetStream stream (subjects
//! `<ns>.dlq.<source>`) holds every message a consumer gave up on, with why.
//!
//! A consumer moves a message aside with [`dead_letter`], which publishes it
//! to the stream, waits for the stream's acknowledgement, and only then
//! terminates the original: a dead letter the stream did not take is
//! redelivered, never dropped. Each dead letter is the original body with
//! the original headers and these:
//!
//! | header | value |
//! |---|---|
//! | `Conveyor-Dead-Letter-Source` | the consumer: `write-side`, `projector_orders`, … |
//! | `Conveyor-Dead-Letter-Reason` | why, in one line |
//! | `Conveyor-Original-Subject` | where it was published (a redrive publishes there again) |
//! | `Conveyor-Original-Stream`, `Conveyor-Original-Sequence` | where JetStream kept it |
//! | `Conveyor-Delivered` | deliveries before it was given up |
//! | `Conveyor-Original-Msg-Id` | its `Nats-Msg-Id`, if it had one |
//!
//! The dead letter's own `Nats-Msg-Id` is `<source>:<stream>:<sequence>`
//! of the original, so one consumer dead-lettering one message twice (a lost
//! terminate, then a redelivery) keeps it once, and each consumer of an
//! event (every projector reading it) keeps its own.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, stream};
use async_nats::{HeaderMap, header::NATS_MESSAGE_ID};

use crate::Namespace;
use crate::ports::PortError;

pub const SOURCE: &str = "Conveyor-Dead-Letter-Source";
pub const REASON: &str = "Conveyor-Dead-Letter-Reason";
pub const ORIGINAL_SUBJECT: &str = "Conveyor-Original-Subject";
pub const ORIGINAL_STREAM: &str = "Conveyor-Original-Stream";
pub const ORIGINAL_SEQUENCE: &str = "Conveyor-Original-Sequence";
pub const ORIGINAL_MSG_ID: &str = "Conveyor-Original-Msg-Id";
pub const DELIVERED: &str = "Conveyor-Delivered";

/// The headers a dead letter adds; a redrive removes them again.
pub const ADDED_HEADERS: &[&str] =
    &[SOURCE, REASON, ORIGINAL_SUBJECT, ORIGINAL_STREAM, ORIGINAL_SEQUENCE, ORIGINAL_MSG_ID, DELIVERED];

/// Limits of the dead-letter stream: it keeps what operators have not
/// looked at yet, within a disk budget (the oldest go first when it is full).
#[derive(Debug, Clone)]
pub struct DeadLetterLimits {
    pub max_age: Duration,
    /// Bytes kept at most; -1: no limit but age.
    pub max_bytes: i64,
    /// Messages kept at most; -1: no limit but age.
    pub max_messages: i64,
}

impl Default for DeadLetterLimits {
    fn default() -> Self {
        Self { max_age: Duration::from_secs(30 * 24 * 3600), max_bytes: 1024 * 1024 * 1024, max_messages: -1 }
    }
}

/// `<ns>_DLQ`: limits retention, `<ns>.dlq.>`.
pub async fn ensure_dead_letter_stream(
    js: &jetstream::Context,
    ns: &Namespace,
    limits: &DeadLetterLimits,
    replicas: usize,
) -> Result<stream::Stream, jetstream::context::CreateStreamError> {
    js.get_or_create_stream(stream::Config {
        name: ns.resource("DLQ"),
        subjects: vec![ns.all_dead_letters()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_age: limits.max_age,
        max_bytes: limits.max_bytes,
        max_messages: limits.max_messages,
        discard: stream::DiscardPolicy::Old,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
}

/// One line, safe as a header value.
fn header_value(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

/// Moves `message` into the dead-letter stream under `source` with
/// `reason`, waits for the stream to acknowledge it, then terminates the
/// original. On error nothing was terminated: the caller lets the message
/// be delivered again.
pub async fn dead_letter(
    js: &jetstream::Context,
    ns: &Namespace,
    source: &str,
    message: &jetstream::Message,
    reason: &str,
) -> Result<(), PortError> {
    let mut headers = HeaderMap::new();
    if let Some(original) = &message.headers {
        for (name, values) in original.iter() {
            let name: &str = name.as_ref();
            for value in values {
                if name.eq_ignore_ascii_case(NATS_MESSAGE_ID.as_ref()) {
                    headers.insert(ORIGINAL_MSG_ID, value.as_str());
                } else if !ADDED_HEADERS.iter().any(|added| added.eq_ignore_ascii_case(name)) {
                    headers.append(name, value.as_str());
                }
            }
        }
    }
    headers.insert(SOURCE, header_value(source).as_str());
    headers.insert(REASON, header_value(reason).as_str());
    headers.insert(ORIGINAL_SUBJECT, message.subject.as_str());
    if let Ok(info) = message.info() {
        headers.insert(ORIGINAL_STREAM, info.stream);
        headers.insert(ORIGINAL_SEQUENCE, info.stream_sequence.to_string().as_str());
        headers.insert(DELIVERED, info.delivered.to_string().as_str());
        headers.insert(NATS_MESSAGE_ID, format!("{source}:{}:{}", info.stream, info.stream_sequence).as_str());
    }
    js.publish_with_headers(ns.dead_letter_subject(source), headers, message.payload.clone())
        .await
        .map_err(PortError::backend)?
        .await
        .map_err(PortError::backend)?;
    message.ack_with(AckKind::Term).await.map_err(|error| PortError::Unavailable(format!("terminate: {error}")))
}
