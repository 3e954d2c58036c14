//! `EventStore.StreamEvents`: every event of some aggregate types, in time
//! order, from the store's history into live events in one loop
//! (docs/grpc.md, "StreamEvents").
//!
//! The store has no global sequence (invariant 10), so a position is a time
//! cursor: an event's `(occurred_at, event id)`. A writer stamps its events
//! before it commits them, so an event can become visible after events
//! stamped later than it — but not long after: the write side's lanes roll
//! back an append that has not sent COMMIT within their append deadline of
//! stamping it, and write it again with new stamps. So this stream sends
//! only events stamped at or before the *frontier*, now minus the settle
//! window, which is longer than that deadline plus the COMMIT itself plus
//! the skew between the writers' clocks and the gateway's: by the time the
//! frontier passes a time, every event stamped at or before it is visible,
//! and reading in `(occurred_at, event id)` order after the last event sent
//! misses nothing and repeats nothing. The same loop reads the history and
//! then waits for what is new, so there is no switch from catch-up to live
//! to get wrong.
//!
//! Each call has one task that reads the store a page at a time, in the
//! order it sends, into a bounded queue, and holds one of the gateway's
//! stream permits while it runs. A reader that leaves the queue full for
//! longer than the send timeout is ended with `READER_TOO_SLOW`, whose
//! status carries the position of the last event handed to the transport:
//! its reader has every event up to it, and resumes after it.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use futures::Stream;
use schema::codes;
use schema::ports::{EventLog, TimeCursor};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use uuid::Uuid;

use super::events::to_proto;
use super::proto;
use super::status;

/// How `StreamEvents` runs (docs/grpc.md, "StreamEvents").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventStreamSettings {
    /// The settle window: only events stamped at least this long ago are
    /// sent. It must exceed the write side's append deadline plus the
    /// longest COMMIT plus the clock skew between writers and gateways.
    pub settle: Duration,
    /// How often a stream that has sent everything settled looks again.
    pub poll: Duration,
    /// Events queued per stream for its reader.
    pub buffer: usize,
    /// How long a stream's queue may stay full before its reader is ended
    /// as too slow (`READER_TOO_SLOW`).
    pub send_timeout: Duration,
    /// Streams one gateway runs at once; more are refused
    /// (`TOO_MANY_SUBSCRIPTIONS`).
    pub max_streams: usize,
}

impl EventStreamSettings {
    pub const DEFAULT: Self = Self {
        settle: Duration::from_secs(10),
        poll: Duration::from_millis(500),
        buffer: 256,
        send_timeout: Duration::from_secs(5),
        max_streams: 64,
    };
}

impl Default for EventStreamSettings {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Events read per statement.
const PAGE: u32 = 256;

/// Reads that may fail in a row (a poll apart) before the stream ends UNAVAILABLE.
const READ_ATTEMPTS: u32 = 5;

/// The first byte of a position token: its format.
const TOKEN_FORMAT: u8 = 1;

/// `ErrorInfo.metadata` key of the position an ending status carries.
pub const POSITION_METADATA: &str = "position";

/// A cursor as the opaque token clients see: format byte, `occurred_at`
/// (µs, big-endian) and event id, in URL-safe base64.
pub fn position(cursor: &TimeCursor) -> String {
    let mut bytes = [0u8; 25];
    bytes[0] = TOKEN_FORMAT;
    bytes[1..9].copy_from_slice(&cursor.occurred_at.to_be_bytes());
    bytes[9..].copy_from_slice(cursor.event_id.as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The cursor a token names; `None` for anything [`position`] did not make.
pub fn parse_position(token: &str) -> Option<TimeCursor> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    let bytes: [u8; 25] = bytes.try_into().ok()?;
    if bytes[0] != TOKEN_FORMAT {
        return None;
    }
    let occurred_at = i64::from_be_bytes(bytes[1..9].try_into().ok()?);
    let event_id = Uuid::from_slice(&bytes[9..]).ok()?;
    Some(TimeCursor { occurred_at, event_id })
}

/// Why a stream ends, from its reading task to the call's stream.
#[derive(Debug)]
struct Ending {
    code: &'static str,
    message: String,
}

impl Ending {
    fn shutting_down() -> Self {
        Self { code: codes::UNAVAILABLE, message: "the gateway is shutting down".into() }
    }

    /// The call's status, carrying `last`: the position its reader has everything up to.
    fn status(&self, last: &str) -> Status {
        let metadata = HashMap::from([(POSITION_METADATA.to_string(), last.to_string())]);
        let message = format!("{}; resume with after_position {last}", self.message);
        status::with_metadata(self.code, message, None, metadata)
    }
}

/// One call's reading task, before it starts.
pub struct Feed {
    pub log: Arc<dyn EventLog>,
    pub aggregate_types: Vec<&'static str>,
    /// Where it starts: it sends what comes after.
    pub cursor: TimeCursor,
    pub settings: EventStreamSettings,
    pub shutdown: CancellationToken,
    /// One of the gateway's stream permits, held while the task runs.
    pub permit: OwnedSemaphorePermit,
}

impl Feed {
    /// Starts the reading task; returns the call's stream.
    pub fn start(self) -> Outgoing {
        let (events, receiver) = mpsc::channel(self.settings.buffer.max(1));
        let (end, ending) = oneshot::channel();
        let start = position(&self.cursor);
        tokio::spawn(async move {
            if let Some(ending) = self.send_all(&events).await {
                // Before `events` drops: the stream looks here once the queue closes.
                let _ = end.send(ending);
            }
            drop(self.permit);
        });
        Outgoing { events: receiver, ending: Some(ending), last: start, done: false }
    }

    /// Reads and queues events until the reader goes (`None`) or the stream must end.
    async fn send_all(&self, events: &mpsc::Sender<proto::Event>) -> Option<Ending> {
        let settle = i64::try_from(self.settings.settle.as_micros()).unwrap_or(i64::MAX);
        let mut cursor = self.cursor;
        let mut failures = 0;
        loop {
            if self.shutdown.is_cancelled() {
                return Some(Ending::shutting_down());
            }
            // Taken before the read: what it finds at or before the
            // frontier is complete once the frontier is settled.
            let frontier = Utc::now().timestamp_micros().saturating_sub(settle);
            let mut more = false;
            if frontier >= cursor.occurred_at {
                match self.log.read_by_time(&self.aggregate_types, &cursor, frontier, PAGE).await {
                    Ok(page) => {
                        failures = 0;
                        more = page.len() == PAGE as usize;
                        for event in page {
                            let next = TimeCursor::of(&event);
                            let message = match to_proto(event) {
                                Ok(message) => message,
                                Err(error) => {
                                    // Skipping it would be a gap: the stream ends here.
                                    tracing::error!(%error, "StreamEvents cannot read a stored event");
                                    return Some(Ending {
                                        code: codes::INTERNAL,
                                        message: "an event could not be read".into(),
                                    });
                                }
                            };
                            match self.send(events, message).await {
                                Sent::Queued => cursor = next,
                                Sent::ReaderGone => return None,
                                Sent::Ended(ending) => return Some(ending),
                            }
                        }
                    }
                    Err(error) => {
                        failures += 1;
                        tracing::warn!(%error, failures, "StreamEvents cannot read the event store");
                        if failures >= READ_ATTEMPTS {
                            return Some(Ending {
                                code: codes::UNAVAILABLE,
                                message: "the event store is unavailable".into(),
                            });
                        }
                    }
                }
            }
            if more {
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(self.settings.poll) => {}
                () = events.closed() => return None,
                () = self.shutdown.cancelled() => return Some(Ending::shutting_down()),
            }
        }
    }

    /// Queues one event, waiting at most the send timeout for room.
    async fn send(&self, events: &mpsc::Sender<proto::Event>, message: proto::Event) -> Sent {
        let message = match events.try_send(message) {
            Ok(()) => return Sent::Queued,
            Err(TrySendError::Closed(_)) => return Sent::ReaderGone,
            Err(TrySendError::Full(message)) => message,
        };
        let timeout = self.settings.send_timeout;
        tokio::select! {
            sent = tokio::time::timeout(timeout, events.send(message)) => match sent {
                Ok(Ok(())) => Sent::Queued,
                Ok(Err(_)) => Sent::ReaderGone,
                Err(_) => Sent::Ended(Ending {
                    code: codes::READER_TOO_SLOW,
                    message: format!("the reader left {} events untaken for {timeout:?}", self.settings.buffer),
                }),
            },
            () = self.shutdown.cancelled() => Sent::Ended(Ending::shutting_down()),
        }
    }
}

enum Sent {
    Queued,
    ReaderGone,
    Ended(Ending),
}

/// The call's stream: the queued events, until the reading task says the
/// stream ends; then that status at once — what is still queued is
/// dropped, and the status names the last event handed on, so the reader
/// resumes exactly after what it got.
pub struct Outgoing {
    events: mpsc::Receiver<proto::Event>,
    ending: Option<oneshot::Receiver<Ending>>,
    /// The position of the last event handed on (before any: the start).
    last: String,
    done: bool,
}

impl Outgoing {
    fn end(&mut self, ending: &Ending) -> Poll<Option<Result<proto::Event, Status>>> {
        self.done = true;
        self.events.close();
        Poll::Ready(Some(Err(ending.status(&self.last))))
    }
}

impl Stream for Outgoing {
    type Item = Result<proto::Event, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(ending) = this.ending.as_mut() {
            match Pin::new(ending).poll(cx) {
                Poll::Ready(Ok(ending)) => return this.end(&ending),
                // The task ended without a reason: it failed.
                Poll::Ready(Err(_)) => {
                    let failed = Ending { code: codes::INTERNAL, message: "the event stream failed".into() };
                    return this.end(&failed);
                }
                Poll::Pending => {}
            }
        }
        match this.events.poll_recv(cx) {
            Poll::Ready(Some(event)) => {
                this.last.clone_from(&event.position);
                Poll::Ready(Some(Ok(event)))
            }
            Poll::Ready(None) => {
                // The task told why before it closed the queue.
                let ending = this
                    .ending
                    .as_mut()
                    .and_then(|ending| ending.try_recv().ok())
                    .unwrap_or(Ending { code: codes::INTERNAL, message: "the event stream failed".into() });
                this.end(&ending)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use futures::StreamExt;
    use schema::EventEnvelope;
    use schema::ports::{PortError, StreamHead, StreamPosition};
    use tokio::sync::Semaphore;
    use tonic_types::StatusExt;

    use super::*;

    #[test]
    fn positions_round_trip_and_nothing_else_parses() {
        let cursor = TimeCursor { occurred_at: 1_764_000_000_123_456, event_id: Uuid::now_v7() };
        assert_eq!(parse_position(&position(&cursor)), Some(cursor));
        for cursor in [TimeCursor::START, TimeCursor::after_time(0)] {
            assert_eq!(parse_position(&position(&cursor)), Some(cursor));
        }
        let token = position(&cursor);
        for bad in
            ["", "not a token", &token[..token.len() - 1], &format!("{token}AA"), "AgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]
        {
            assert_eq!(parse_position(bad), None, "{bad}");
        }
    }

    /// The store, in memory: events with their stamps.
    #[derive(Default)]
    struct Log(Mutex<Vec<EventEnvelope>>);

    impl Log {
        fn append(&self, micros_ago: i64) {
            let mut event = EventEnvelope {
                id: Uuid::now_v7(),
                type_name: "OrderCancelled".into(),
                schema_version: 1,
                aggregate_type: schema::order::AGGREGATE.into(),
                aggregate_id: Uuid::now_v7().to_string(),
                stream_version: 1,
                metadata: schema::Metadata::origin(Uuid::now_v7(), "test"),
                timestamp: Utc::now(),
                payload: serde_json::json!({ "reason": "test" }),
            };
            event.timestamp -= chrono::Duration::microseconds(micros_ago);
            self.0.lock().expect("lock").push(event);
        }
    }

    #[async_trait]
    impl EventLog for Log {
        async fn read_stream(&self, _: &str, _: &str, _: u64, _: u64) -> Result<Vec<EventEnvelope>, PortError> {
            Ok(Vec::new())
        }
        async fn read_all(&self, _: Option<&StreamPosition>, _: u32) -> Result<Vec<EventEnvelope>, PortError> {
            Ok(Vec::new())
        }
        async fn read_events(&self, _: &[Uuid]) -> Result<Vec<EventEnvelope>, PortError> {
            Ok(Vec::new())
        }
        async fn stream_heads(&self) -> Result<Vec<StreamHead>, PortError> {
            Ok(Vec::new())
        }
        async fn read_by_time(
            &self,
            types: &[&str],
            after: &TimeCursor,
            until: i64,
            limit: u32,
        ) -> Result<Vec<EventEnvelope>, PortError> {
            let mut found: Vec<EventEnvelope> = self
                .0
                .lock()
                .expect("lock")
                .iter()
                .filter(|event| types.contains(&event.aggregate_type.as_str()))
                .filter(|event| TimeCursor::of(event) > *after && event.timestamp.timestamp_micros() <= until)
                .cloned()
                .collect();
            found.sort_by_key(TimeCursor::of);
            found.truncate(limit as usize);
            Ok(found)
        }
    }

    fn feed(log: Arc<Log>, cursor: TimeCursor, settings: EventStreamSettings) -> Outgoing {
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().expect("a permit");
        let types = vec![schema::order::AGGREGATE];
        Feed { log, aggregate_types: types, cursor, settings, shutdown: CancellationToken::new(), permit }.start()
    }

    const SETTINGS: EventStreamSettings = EventStreamSettings {
        settle: Duration::from_millis(200),
        poll: Duration::from_millis(20),
        buffer: 4,
        send_timeout: Duration::from_millis(100),
        max_streams: 1,
    };

    async fn next(stream: &mut Outgoing) -> Result<proto::Event, Status> {
        tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("in time").expect("not ended")
    }

    #[tokio::test]
    async fn history_then_what_settles_later_each_once_in_order() {
        let log = Arc::new(Log::default());
        // More than a page of history, a second old.
        for n in 0..600 {
            log.append(1_000_000 - n);
        }
        let mut stream = feed(log.clone(), TimeCursor::START, SETTINGS);
        let mut seen = Vec::new();
        for _ in 0..600 {
            seen.push(next(&mut stream).await.expect("an event").id);
        }
        // New events arrive once settled, after the history.
        log.append(0);
        log.append(0);
        for _ in 0..2 {
            seen.push(next(&mut stream).await.expect("an event").id);
        }
        let mut stored = log.0.lock().expect("lock").clone();
        stored.sort_by_key(TimeCursor::of);
        assert_eq!(seen, stored.iter().map(|event| event.id.to_string()).collect::<Vec<_>>());
        let quiet = tokio::time::timeout(SETTINGS.settle * 2, stream.next()).await;
        assert!(quiet.is_err(), "nothing more, nothing twice: {quiet:?}");
    }

    #[tokio::test]
    async fn a_reader_that_stops_taking_is_ended_with_the_position_of_what_it_got() {
        let log = Arc::new(Log::default());
        for n in 0..20 {
            log.append(1_000_000 - n);
        }
        let mut stream = feed(log.clone(), TimeCursor::START, SETTINGS);
        let first = next(&mut stream).await.expect("an event");
        // The queue fills and stays full past the send timeout.
        tokio::time::sleep(SETTINGS.send_timeout * 5).await;
        let ended = next(&mut stream).await.expect_err("too slow");
        assert_eq!(ended.code(), tonic::Code::ResourceExhausted);
        let info = ended.get_error_details().error_info().cloned().expect("ErrorInfo");
        assert_eq!(info.reason, codes::READER_TOO_SLOW);
        assert_eq!(info.metadata.get(POSITION_METADATA), Some(&first.position), "queued events were dropped");
        assert!(stream.next().await.is_none(), "nothing after the status");

        let mut resumed = feed(log, parse_position(&first.position).expect("a position"), SETTINGS);
        let second = next(&mut resumed).await.expect("an event");
        assert!(parse_position(&second.position) > parse_position(&first.position));
    }
}
