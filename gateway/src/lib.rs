//! Conveyor's GraphQL gateway: queries read the read side's views,
//! mutations become commands on the command bus, subscriptions follow view
//! changes. It never imports the write side: commands and outcomes are all
//! it knows of it.

pub mod admission;
pub mod auth;
pub mod graphql;
pub mod grpc;
mod http;
pub mod limits;
mod metrics;
mod over_http;
pub mod rate_limit;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use schema::ports::Readiness;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub use admission::{Admission, AdmissionSettings};
pub use auth::{Authenticator, Caller, Role};
/// For [`HttpSettings::client_ip_header`].
pub use axum::http::HeaderName;
pub use graphql::{ConveyorSchema, Services, sdl};
pub use http::GRAPHQL_PATH;
pub use limits::QueryLimits;
pub use rate_limit::RateLimitSettings;
pub use ws::WsSettings;

/// The HTTP surface's settings.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Origins browsers may call from (CORS); empty: same origin only; `*`: any.
    pub cors_origins: Vec<String>,
    /// Largest request body accepted (413 above).
    pub max_body_bytes: usize,
    /// Longest a request may take (408 after).
    pub request_timeout: Duration,
    /// Whether `__schema` / `__type` queries are answered and `/graphiql`
    /// is served (GraphiQL needs them).
    pub introspection: bool,
    /// The limits every operation is held to, introspection included.
    pub limits: QueryLimits,
    /// Operations per caller (token subject, else IP address).
    pub rate_limit: RateLimitSettings,
    /// Where a trusted proxy in front puts the client's address (its last
    /// entry is taken, e.g. `x-forwarded-for`); `None`: the peer's address.
    /// Only for a gateway every request reaches through that proxy: anyone
    /// else could name any address.
    pub client_ip_header: Option<axum::http::HeaderName>,
    /// Verifies tokens; open (no key) lets everyone do everything.
    pub auth: Authenticator,
    pub websocket: WsSettings,
    /// Where the gRPC API listens (docs/grpc.md); `None`: no gRPC server.
    pub grpc_listen: Option<SocketAddr>,
    /// How the gRPC `EventStore.StreamEvents` runs.
    pub event_streams: grpc::EventStreamSettings,
}

impl HttpSettings {
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            cors_origins: Vec::new(),
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            introspection: true,
            limits: QueryLimits::default(),
            rate_limit: RateLimitSettings::default(),
            client_ip_header: None,
            auth: Authenticator::open(),
            websocket: WsSettings::default(),
            grpc_listen: None,
            event_streams: grpc::EventStreamSettings::DEFAULT,
        }
    }
}

/// A bound, not yet serving gateway.
pub struct Gateway {
    listener: TcpListener,
    router: Router,
    grpc: Option<grpc::GrpcServer>,
    shutdown: CancellationToken,
}

/// How long shutdown waits for open requests and sockets before leaving.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

impl Gateway {
    /// Binds the listener (and the gRPC one, when `grpc_listen` is set) and
    /// builds the routes; an invalid CORS origin is an `InvalidInput` error.
    pub async fn build(
        settings: &HttpSettings,
        services: Services,
        readiness: Vec<(&'static str, Arc<dyn Readiness>)>,
    ) -> std::io::Result<Self> {
        let cors = http::cors(&settings.cors_origins).map_err(|origin| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("bad CORS origin `{origin}`"))
        })?;
        let listener = TcpListener::bind(settings.listen).await?;
        let shutdown = services.shutdown.clone();
        let events = services.events.clone();
        let answers = services.order_cache.clone();
        let schema = graphql::build(services, settings.introspection, settings.limits);
        let readiness = Arc::new(readiness);
        // One budget per caller, whichever API it calls.
        let limiter = rate_limit::RateLimiter::start(settings.rate_limit, shutdown.clone());
        let grpc = match settings.grpc_listen {
            Some(listen) => Some(
                grpc::GrpcServer::bind(
                    listen,
                    grpc::GrpcParts {
                        schema: schema.clone(),
                        auth: settings.auth.clone(),
                        limiter: limiter.clone(),
                        readiness: readiness.clone(),
                        events,
                        event_streams: settings.event_streams,
                        max_message_bytes: settings.max_body_bytes,
                        max_watches_per_connection: settings.websocket.max_subscriptions,
                        request_timeout: settings.request_timeout,
                        shutdown: shutdown.clone(),
                    },
                )
                .await?,
            ),
            None => None,
        };
        let state = http::AppState {
            schema,
            answers,
            readiness,
            shutdown: shutdown.clone(),
            auth: settings.auth.clone(),
            websocket: settings.websocket,
            graphiql: settings.introspection,
            limiter,
            connections: ws::ConnectionCounts::default(),
            subscriptions: ws::SharedSubscriptions::default(),
            client_ip_header: settings.client_ip_header.clone(),
        };
        if settings.auth.is_open() {
            tracing::warn!(
                "AUTHENTICATION IS OFF: no --jwt-secret or --jwt-public-key is set, so anyone who can reach {} \
                 may read and change everything",
                settings.listen
            );
        }
        let router = http::router(state)
            .layer(RequestBodyLimitLayer::new(settings.max_body_bytes))
            .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, settings.request_timeout))
            .layer(cors)
            .layer(TraceLayer::new_for_http());
        Ok(Self { listener, router, grpc, shutdown })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The gRPC server's bound address, when it has one.
    pub fn grpc_addr(&self) -> std::io::Result<Option<SocketAddr>> {
        self.grpc.as_ref().map(grpc::GrpcServer::local_addr).transpose()
    }

    /// Serves GraphQL (and gRPC) until the shutdown token is cancelled, then drains.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let shutdown = self.shutdown.clone();
        // With each connection's peer address: rate limits and connection caps key on it.
        let service = self.router.into_make_service_with_connect_info::<SocketAddr>();
        let serve = axum::serve(self.listener, service).with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let serve = tokio::spawn(async move { serve.await });
        let grpc = self.grpc.map(|grpc| tokio::spawn(grpc.run_until_stopped()));
        shutdown.cancelled().await;
        if let Some(grpc) = grpc {
            match tokio::time::timeout(DRAIN_TIMEOUT, grpc).await {
                Ok(Ok(Err(error))) => tracing::warn!(%error, "gRPC server failed"),
                Ok(Err(join_error)) => tracing::warn!(%join_error, "gRPC server failed"),
                Ok(Ok(Ok(()))) => {}
                Err(_) => tracing::warn!("gRPC calls still open after {DRAIN_TIMEOUT:?}; closing them"),
            }
        }
        match tokio::time::timeout(DRAIN_TIMEOUT, serve).await {
            Ok(Ok(result)) => result,
            Ok(Err(join_error)) => Err(std::io::Error::other(join_error)),
            Err(_) => {
                tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing them");
                Ok(())
            }
        }
    }
}
