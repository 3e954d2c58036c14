//! Conveyor's GraphQL gateway: queries read the read side's views,
//! mutations become commands on the command bus, subscriptions follow view
//! changes. It never imports the write side: commands and outcomes are all
//! it knows of it.

pub mod graphql;
mod http;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use schema::ports::Readiness;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

pub use graphql::{ConveyorSchema, Services};
pub use http::GRAPHQL_PATH;

/// A bound, not yet serving gateway.
pub struct Gateway {
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
}

/// How long shutdown waits for open requests and sockets before leaving.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

impl Gateway {
    /// Binds `listen` (port 0 picks a free port) and builds the routes.
    pub async fn build(
        listen: SocketAddr,
        services: Services,
        readiness: Vec<(&'static str, Arc<dyn Readiness>)>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let shutdown = services.shutdown.clone();
        let state = http::AppState {
            schema: graphql::build(services),
            readiness: Arc::new(readiness),
            shutdown: shutdown.clone(),
        };
        let router = http::router(state).layer(TraceLayer::new_for_http());
        Ok(Self { listener, router, shutdown })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the shutdown token is cancelled, then drains.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let shutdown = self.shutdown.clone();
        let serve = axum::serve(self.listener, self.router).with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let serve = tokio::spawn(async move { serve.await });
        shutdown.cancelled().await;
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
