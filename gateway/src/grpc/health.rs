//! `grpc.health.v1.Health` follows `/readyz`: every service is SERVING
//! while every readiness check passes, NOT_SERVING while one fails, and
//! NOT_SERVING once shutdown begins.

use std::sync::Arc;
use std::time::Duration;

use schema::ports::Readiness;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// How often the checks run (`Watch` callers hear a change within this).
const INTERVAL: Duration = Duration::from_secs(1);

/// The services the health service answers for; "" is the whole server.
const SERVICES: &[&str] = &["", "conveyor.v1.Orders", "conveyor.v1.EventStore"];

pub async fn follow_readiness(
    reporter: HealthReporter,
    readiness: Arc<Vec<(&'static str, Arc<dyn Readiness>)>>,
    shutdown: CancellationToken,
) {
    let mut last = None;
    loop {
        let mut status = ServingStatus::Serving;
        for (name, check) in readiness.iter() {
            if let Err(error) = check.check().await {
                tracing::warn!(dependency = name, %error, "not ready (gRPC health)");
                status = ServingStatus::NotServing;
            }
        }
        if last != Some(status) {
            for service in SERVICES {
                reporter.set_service_status(*service, status).await;
            }
            last = Some(status);
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(INTERVAL) => {}
        }
    }
    for service in SERVICES {
        reporter.set_service_status(*service, ServingStatus::NotServing).await;
    }
}
