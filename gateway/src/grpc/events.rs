//! `conveyor.v1.EventStore`: reads the event store through the `EventLog`
//! port (the binary wires it to the store, read-only; the gateway never
//! imports the write side). Admin and service callers only: events hold
//! every customer's data. `StreamEvents` runs in `event_stream.rs`.

use std::sync::Arc;
use std::time::Duration;

use schema::envelope::Message;
use schema::ports::{EventLog, TimeCursor};
use schema::{ContractError, EventEnvelope, codes};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::edge::Edge;
use super::event_stream::{self, EventStreamSettings, Feed, Outgoing};
use super::orders::timestamp;
use super::proto::stream_events_request::Start;
use super::proto::{self, event_store_server::EventStore};
use super::status;

/// Events per `GetEvents` answer.
const MAX_EVENTS: u64 = 1000;

pub struct EventStoreApi {
    pub edge: Edge,
    pub events: Option<Arc<dyn EventLog>>,
    pub settings: EventStreamSettings,
    /// One permit per `StreamEvents` call running.
    pub streams: Arc<Semaphore>,
    pub shutdown: CancellationToken,
}

impl EventStoreApi {
    pub fn new(
        edge: Edge,
        events: Option<Arc<dyn EventLog>>,
        settings: EventStreamSettings,
        shutdown: CancellationToken,
    ) -> Self {
        let streams = Arc::new(Semaphore::new(settings.max_streams));
        Self { edge, events, settings, streams, shutdown }
    }

    /// The store, for a caller who may read it.
    fn log<T>(&self, request: &Request<T>) -> Result<Arc<dyn EventLog>, Status> {
        let caller = self.edge.caller(request)?;
        caller.require_staff("read the event store").map_err(|error| status::from_error(&error))?;
        self.events.clone().ok_or_else(|| Status::unimplemented("this gateway has no event store configured"))
    }
}

#[tonic::async_trait]
impl EventStore for EventStoreApi {
    async fn get_events(
        &self,
        request: Request<proto::GetEventsRequest>,
    ) -> Result<Response<proto::GetEventsResponse>, Status> {
        let log = self.log(&request)?;
        let message = request.into_inner();
        let (aggregate_type, aggregate_id) = (message.aggregate_type.trim(), message.aggregate_id.trim());
        if upcaster(aggregate_type).is_none() {
            return Err(status::coded(
                codes::INVALID_INPUT,
                format!("aggregate_type must be one of {}", AGGREGATES.join(", ")),
                None,
            ));
        }
        if aggregate_id.is_empty() || aggregate_id.len() > 128 {
            return Err(status::coded(codes::INVALID_ID, "aggregate_id must be 1 to 128 characters", None));
        }
        let from = message.from_version.max(1);
        let to = from.saturating_add(MAX_EVENTS - 1);
        let stored = log
            .read_stream(aggregate_type, aggregate_id, from, to)
            .await
            .map_err(|error| status::coded(codes::UNAVAILABLE, unavailable(error), None))?;
        let events = stored.into_iter().map(to_proto).collect::<Result<_, _>>().map_err(status::internal)?;
        Ok(Response::new(proto::GetEventsResponse { events }))
    }

    type StreamEventsStream = Outgoing;

    /// Every event of the chosen aggregate types, in time order, from a
    /// position on (`event_stream.rs`).
    async fn stream_events(
        &self,
        request: Request<proto::StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let log = self.log(&request)?;
        let message = request.into_inner();
        let aggregate_types = chosen(&message.aggregate_types)?;
        let cursor = match message.start {
            None | Some(Start::FromNow(false)) => TimeCursor::START,
            Some(Start::FromNow(true)) => TimeCursor::after_time(chrono::Utc::now().timestamp_micros()),
            Some(Start::AfterPosition(token)) => event_stream::parse_position(token.trim()).ok_or_else(|| {
                status::coded(codes::INVALID_POSITION, "after_position is not a position StreamEvents sent", None)
            })?,
        };
        let permit = self.streams.clone().try_acquire_owned().map_err(|_| {
            let message = format!("this gateway already runs {} event streams", self.settings.max_streams);
            status::coded(codes::TOO_MANY_SUBSCRIPTIONS, message, Some(Duration::from_secs(1)))
        })?;
        let feed =
            Feed { log, aggregate_types, cursor, settings: self.settings, shutdown: self.shutdown.clone(), permit };
        Ok(Response::new(feed.start()))
    }
}

/// The aggregate types a stream asks for, each once; none: all of them.
fn chosen(asked: &[String]) -> Result<Vec<&'static str>, Status> {
    if asked.is_empty() {
        return Ok(AGGREGATES.to_vec());
    }
    let mut chosen = Vec::new();
    for name in asked {
        let Some(known) = AGGREGATES.iter().find(|known| **known == name.trim()) else {
            let message = format!("aggregate_types: `{name}` is not one of {}", AGGREGATES.join(", "));
            return Err(status::coded(codes::INVALID_INPUT, message, None));
        };
        if !chosen.contains(known) {
            chosen.push(*known);
        }
    }
    Ok(chosen)
}

fn unavailable(error: impl std::fmt::Display) -> String {
    let correlation_id = uuid::Uuid::now_v7();
    tracing::warn!(%correlation_id, %error, "event store unavailable (gRPC)");
    format!("service temporarily unavailable (correlation id {correlation_id})")
}

/// The aggregate types whose streams may be read.
const AGGREGATES: &[&str] = &[
    schema::order::AGGREGATE,
    schema::product::AGGREGATE,
    schema::payment::AGGREGATE,
    schema::customer::AGGREGATE,
    schema::customer::EMAIL_AGGREGATE,
];

type Upcast = fn(&EventEnvelope) -> Result<(String, u32, serde_json::Value), ContractError>;

/// Brings an event of `M` to its type's current schema version.
fn current<M: Message>(event: &EventEnvelope) -> Result<(String, u32, serde_json::Value), ContractError> {
    let (type_name, payload) = M::decode(event)?.to_parts();
    let version = M::schema_version(&type_name).unwrap_or(event.schema_version);
    Ok((type_name, version, payload))
}

fn upcaster(aggregate_type: &str) -> Option<Upcast> {
    Some(match aggregate_type {
        schema::order::AGGREGATE => current::<schema::order::OrderEvent>,
        schema::product::AGGREGATE => current::<schema::product::ProductEvent>,
        schema::payment::AGGREGATE => current::<schema::payment::PaymentEvent>,
        schema::customer::AGGREGATE => current::<schema::customer::CustomerEvent>,
        schema::customer::EMAIL_AGGREGATE => current::<schema::customer::EmailEvent>,
        _ => return None,
    })
}

/// An event as the proto shows it, upcast.
pub fn to_proto(event: EventEnvelope) -> Result<proto::Event, ContractError> {
    let position = event_stream::position(&TimeCursor::of(&event));
    let (type_name, schema_version, payload) = match upcaster(&event.aggregate_type) {
        Some(upcast) => upcast(&event)?,
        None => (event.type_name.clone(), event.schema_version, event.payload.clone()),
    };
    Ok(proto::Event {
        id: event.id.to_string(),
        r#type: type_name,
        schema_version,
        aggregate_type: event.aggregate_type,
        aggregate_id: event.aggregate_id,
        stream_version: event.stream_version,
        payload_json: payload.to_string(),
        correlation_id: event.metadata.correlation_id.to_string(),
        causation_id: event.metadata.causation_id.to_string(),
        actor: event.metadata.actor,
        timestamp: Some(timestamp(event.timestamp)),
        position,
    })
}
