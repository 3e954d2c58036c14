//! The JetStream resources every side agrees on. Each process calls the
//! `ensure_*` function for what it touches, so start order does not matter
//! and a restart re-creates nothing.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};

use crate::Namespace;
use crate::dead_letters::DeadLetterLimits;
pub use crate::nats_connect::{NatsAuth, NatsConnectError, connect};

/// How long JetStream remembers a `Nats-Msg-Id` to drop a duplicate publish.
/// Beyond it, the stored command outcome still makes retries exactly-once.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Tunables of the streams, for clusters (replicas) and disk budgets.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// 1 for a single server, 3 for a production cluster.
    pub replicas: usize,
    /// How long published events stay in the events stream. The SQL event
    /// store is the truth; the stream is transport and may be trimmed.
    pub event_retention: Duration,
    /// What the dead-letter stream keeps.
    pub dead_letters: DeadLetterLimits,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            replicas: 1,
            event_retention: Duration::from_secs(7 * 24 * 3600),
            dead_letters: DeadLetterLimits::default(),
        }
    }
}

/// `<ns>_COMMANDS`: a work queue; each command is removed once a handler acks it.
pub async fn ensure_commands_stream(
    js: &jetstream::Context,
    ns: &Namespace,
    settings: &StreamSettings,
) -> Result<stream::Stream, jetstream::context::CreateStreamError> {
    js.get_or_create_stream(stream::Config {
        name: ns.resource("COMMANDS"),
        subjects: vec![ns.all_commands()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: settings.replicas,
        ..Default::default()
    })
    .await
}

/// `<ns>_EVENTS`: every published event, subject `<ns>.evt.<aggregate>.<id>`.
pub async fn ensure_events_stream(
    js: &jetstream::Context,
    ns: &Namespace,
    settings: &StreamSettings,
) -> Result<stream::Stream, jetstream::context::CreateStreamError> {
    js.get_or_create_stream(stream::Config {
        name: ns.resource("EVENTS"),
        subjects: vec![ns.all_events()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        max_age: settings.event_retention,
        num_replicas: settings.replicas,
        ..Default::default()
    })
    .await
}

/// `<ns>_outcomes`: the latest outcome per command id, so a gateway that
/// retries a deduplicated command (which no handler will see again) still
/// gets its answer. A cache of the SQL outcome table, which stays the truth.
pub async fn ensure_outcomes_bucket(
    js: &jetstream::Context,
    ns: &Namespace,
    settings: &StreamSettings,
) -> Result<kv::Store, jetstream::context::CreateKeyValueError> {
    let bucket = ns.resource("outcomes");
    if let Ok(store) = js.get_key_value(&bucket).await {
        return Ok(store);
    }
    let created = js
        .create_key_value(kv::Config {
            bucket: bucket.clone(),
            history: 1,
            max_age: Duration::from_secs(24 * 3600),
            storage: stream::StorageType::File,
            num_replicas: settings.replicas,
            ..Default::default()
        })
        .await;
    match created {
        Ok(store) => Ok(store),
        // Another process created it between our get and create.
        Err(error) => js.get_key_value(&bucket).await.map_err(|_| error),
    }
}
