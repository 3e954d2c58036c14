//! The gRPC API (docs/grpc.md): `conveyor.v1.Orders`, `conveyor.v1.EventStore`,
//! `grpc.health.v1.Health` and server reflection (v1 and v1alpha) on a
//! listener of their own. The contract is `schema/proto/conveyor/v1/`.
//!
//! The order methods run the GraphQL schema's own operations (a fixed
//! document per method, the caller attached as for HTTP), so both APIs
//! share one code path: the same resolvers, role rules, idempotency keys,
//! admission, query limits and error codes. A gRPC call also spends the
//! caller's rate budget, the same one its GraphQL requests spend.

mod edge;
mod event_stream;
mod events;
mod health;
mod orders;
mod status;

use std::net::SocketAddr;
use std::sync::Arc;

use schema::ports::{EventLog, Readiness};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::graphql::ConveyorSchema;
use crate::rate_limit::RateLimiter;

pub use event_stream::{EventStreamSettings, POSITION_METADATA};
pub use status::{ERROR_CODE_METADATA, ERROR_DOMAIN};

/// The messages and the client and server stubs generated from the protos.
pub mod proto {
    tonic::include_proto!("conveyor.v1");

    /// The compiled protos, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/conveyor_descriptor.bin"));
}

/// What the gRPC server shares with the HTTP one.
pub(crate) struct GrpcParts {
    pub schema: ConveyorSchema,
    pub auth: Authenticator,
    pub limiter: RateLimiter,
    pub readiness: Arc<Vec<(&'static str, Arc<dyn Readiness>)>>,
    /// The event store, read-only; `None`: `EventStore` answers UNIMPLEMENTED.
    pub events: Option<Arc<dyn EventLog>>,
    /// How `StreamEvents` runs.
    pub event_streams: EventStreamSettings,
    /// Largest request message accepted (RESOURCE_EXHAUSTED above): GraphQL's body limit.
    pub max_message_bytes: usize,
    /// Live `WatchOrder` streams per connection: a WebSocket's subscription limit.
    pub max_watches_per_connection: usize,
    /// Longest a call may take to answer (DEADLINE_EXCEEDED after): HTTP's request timeout.
    pub request_timeout: std::time::Duration,
    pub shutdown: CancellationToken,
}

/// A bound, not yet serving gRPC server.
pub(crate) struct GrpcServer {
    listener: TcpListener,
    parts: GrpcParts,
}

impl GrpcServer {
    pub async fn bind(listen: SocketAddr, parts: GrpcParts) -> std::io::Result<Self> {
        Ok(Self { listener: TcpListener::bind(listen).await?, parts })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until shutdown; streams end then (their `take_until`).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let GrpcParts {
            schema,
            auth,
            limiter,
            readiness,
            events,
            event_streams,
            max_message_bytes,
            max_watches_per_connection,
            request_timeout,
            shutdown,
        } = self.parts;
        let edge = edge::Edge { schema, auth, limiter };
        let (reporter, health_service) = tonic_health::server::health_reporter();
        tokio::spawn(health::follow_readiness(reporter, readiness, shutdown.clone()));
        let reflection = |builder: tonic_reflection::server::Builder<'static>| {
            builder
                .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 =
            reflection(tonic_reflection::server::Builder::configure()).build_v1().map_err(std::io::Error::other)?;
        let reflection_v1alpha = reflection(tonic_reflection::server::Builder::configure())
            .build_v1alpha()
            .map_err(std::io::Error::other)?;
        let orders = proto::orders_server::OrdersServer::new(orders::OrdersApi::new(
            edge.clone(),
            max_watches_per_connection,
            shutdown.clone(),
        ))
        .max_decoding_message_size(max_message_bytes);
        let event_store = events::EventStoreApi::new(edge, events, event_streams, shutdown.clone());
        let event_store =
            proto::event_store_server::EventStoreServer::new(event_store).max_decoding_message_size(max_message_bytes);
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(self.listener);
        tonic::transport::Server::builder()
            // As `--request-timeout` bounds an HTTP request (a stream's
            // answer starts within it; its messages are not bounded).
            .timeout(request_timeout)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(orders)
            .add_service(event_store)
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
            .await
            .map_err(std::io::Error::other)
    }
}
