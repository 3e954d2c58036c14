//! Prometheus metrics: one set per process, which every side adds to where
//! the work happens (a command decided, a saga step taken, an event
//! projected, a GraphQL request answered), and which the process serves on
//! `--metrics-listen` in the Prometheus text format (OpenMetrics).
//!
//! Values the code does not see happen (a pool's idle connections, a
//! consumer's pending messages, open sagas) are read when scraped, by the
//! [`Sampler`]s the serving process registers.
//!
//! The set is a process-wide static: metrics are about the process, and a
//! handle threaded through every constructor would buy nothing (a test that
//! runs several systems in one process shares them, so tests that read
//! values run the real binary).

use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use futures::future::BoxFuture;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels: fixed names, values from a small set (command and step types,
/// projection names, outcomes) — never ids.
pub type Labels<const N: usize> = [(&'static str, String); N];

type Histograms<const N: usize> = Family<Labels<N>, Histogram, fn() -> Histogram>;

/// Every metric Conveyor exports.
pub struct Metrics {
    /// Commands decided, by type and outcome (`accepted`, `rejected`, `error`).
    pub commands: Family<Labels<2>, Counter>,
    /// Time to decide and commit a command, by type.
    pub command_duration: Histograms<1>,
    /// Saga steps taken, by step and result (`done`, `refused`, `no_answer`, `error`).
    pub saga_steps: Family<Labels<2>, Counter>,
    /// Sagas still driving their orders (sampled).
    pub sagas_active: Gauge,
    /// Events delivered to a projection and not yet applied (sampled).
    pub projection_lag_events: Family<Labels<1>, Gauge>,
    /// Age of the last event a projection applied, when it applied it.
    pub projection_lag_seconds: Family<Labels<1>, Gauge<f64, AtomicU64>>,
    /// How old a change is (from its event's timestamp) when it reaches a
    /// stage on its way to a live subscriber: `notified` (its view row
    /// committed, the notification about to be published), `read` (the gateway re-read the row after the
    /// notification), `sent` (one subscriber's message handed to its
    /// socket). The hops of the push latency, each seen where it happens.
    pub change_age_seconds: Histograms<1>,
    /// Events a projection applied.
    pub projected_events: Family<Labels<1>, Counter>,
    /// Messages moved to a dead-letter subject, by source.
    pub dead_letters: Family<Labels<1>, Counter>,
    /// GraphQL queries and mutations answered, by operation type and result (`ok`, `error`).
    pub graphql_requests: Family<Labels<2>, Counter>,
    /// Time to answer a GraphQL query or mutation.
    pub graphql_duration: Histograms<1>,
    /// GraphQL subscriptions open.
    pub subscriptions_active: Gauge,
    /// WebSocket connections open.
    pub websocket_connections: Gauge,
    /// SQL pool connections, by pool and state (`idle`, `in_use`) (sampled).
    pub db_pool_connections: Family<Labels<2>, Gauge>,
    /// Messages a JetStream consumer has not yet had acknowledged, by consumer (sampled).
    pub nats_pending: Family<Labels<1>, Gauge>,
    /// A projector's transactions, by result (`committed`, `rolled_back`) (sampled).
    pub projector_transactions: Family<Labels<2>, Counter>,
    /// A projector's statements, by kind (`checkpoint`, `view`) (sampled).
    pub projector_statements: Family<Labels<2>, Counter>,
    /// Streams the event store read back to decide on (not in memory) (sampled).
    pub streams_read: Counter,
    /// Saga saves written in a transaction of their own, not their step's (sampled).
    pub saga_saves_apart: Counter,
    /// Commands and orders the gateway refused for load, by reason (`inflight`, `backlog`).
    pub admission_refusals: Family<Labels<1>, Counter>,
    registry: Registry,
}

fn latency_buckets() -> Histogram {
    // 1 ms to ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let metrics = Self {
            commands: Family::default(),
            command_duration: Family::new_with_constructor(latency_buckets),
            saga_steps: Family::default(),
            sagas_active: Gauge::default(),
            projection_lag_events: Family::default(),
            projection_lag_seconds: Family::default(),
            change_age_seconds: Family::new_with_constructor(latency_buckets),
            projected_events: Family::default(),
            dead_letters: Family::default(),
            graphql_requests: Family::default(),
            graphql_duration: Family::new_with_constructor(latency_buckets),
            subscriptions_active: Gauge::default(),
            websocket_connections: Gauge::default(),
            db_pool_connections: Family::default(),
            nats_pending: Family::default(),
            projector_transactions: Family::default(),
            projector_statements: Family::default(),
            streams_read: Counter::default(),
            saga_saves_apart: Counter::default(),
            admission_refusals: Family::default(),
            registry: Registry::default(),
        };
        // Counters get their `_total` suffix from the encoder.
        registry.register("conveyor_commands", "Commands decided, by type and outcome", metrics.commands.clone());
        registry.register(
            "conveyor_command_duration_seconds",
            "Time to decide and commit a command, by type",
            metrics.command_duration.clone(),
        );
        registry.register("conveyor_saga_steps", "Saga steps taken, by step and result", metrics.saga_steps.clone());
        registry.register("conveyor_sagas_active", "Sagas still driving their orders", metrics.sagas_active.clone());
        registry.register(
            "conveyor_projection_lag_events",
            "Events delivered to a projection and not yet applied",
            metrics.projection_lag_events.clone(),
        );
        registry.register(
            "conveyor_projection_lag_seconds",
            "Age of the last event a projection applied, when it applied it",
            metrics.projection_lag_seconds.clone(),
        );
        registry.register(
            "conveyor_change_age_seconds",
            "Age of a change (since its event) when it reaches a stage on its way to a live subscriber",
            metrics.change_age_seconds.clone(),
        );
        registry.register("conveyor_projected_events", "Events a projection applied", metrics.projected_events.clone());
        registry.register(
            "conveyor_dead_letters",
            "Messages moved to a dead-letter subject, by source",
            metrics.dead_letters.clone(),
        );
        registry.register(
            "conveyor_graphql_requests",
            "GraphQL queries and mutations answered, by operation type and result",
            metrics.graphql_requests.clone(),
        );
        registry.register(
            "conveyor_graphql_request_duration_seconds",
            "Time to answer a GraphQL query or mutation",
            metrics.graphql_duration.clone(),
        );
        registry.register(
            "conveyor_subscriptions_active",
            "GraphQL subscriptions open",
            metrics.subscriptions_active.clone(),
        );
        registry.register(
            "conveyor_websocket_connections",
            "WebSocket connections open",
            metrics.websocket_connections.clone(),
        );
        registry.register(
            "conveyor_db_pool_connections",
            "SQL pool connections, by pool and state",
            metrics.db_pool_connections.clone(),
        );
        registry.register(
            "conveyor_nats_pending",
            "Messages a JetStream consumer has not had acknowledged yet, by consumer",
            metrics.nats_pending.clone(),
        );
        registry.register(
            "conveyor_projector_transactions",
            "A projector's transactions, by result",
            metrics.projector_transactions.clone(),
        );
        registry.register(
            "conveyor_projector_statements",
            "A projector's SQL statements, by kind",
            metrics.projector_statements.clone(),
        );
        registry.register(
            "conveyor_event_store_streams_read",
            "Streams the event store read back to decide on (not in memory)",
            metrics.streams_read.clone(),
        );
        registry.register(
            "conveyor_saga_saves_apart",
            "Saga saves written in a transaction of their own rather than their step's",
            metrics.saga_saves_apart.clone(),
        );
        registry.register(
            "conveyor_admission_refusals",
            "Commands and orders the gateway refused for load, by reason",
            metrics.admission_refusals.clone(),
        );
        Self { registry, ..metrics }
    }

    /// Counts a decided command and the time it took.
    pub fn command(&self, type_name: &str, outcome: &str, took: Duration) {
        self.commands.get_or_create(&[("type", type_name.to_owned()), ("outcome", outcome.to_owned())]).inc();
        self.command_duration.get_or_create(&[("type", type_name.to_owned())]).observe(took.as_secs_f64());
    }

    /// Counts a saga step taken.
    pub fn saga_step(&self, step: &str, result: &str) {
        self.saga_steps.get_or_create(&[("step", step.to_owned()), ("result", result.to_owned())]).inc();
    }

    /// Counts a message moved to `dlq.<source>`.
    pub fn dead_letter(&self, source: &str) {
        self.dead_letters.get_or_create(&[("source", source.to_owned())]).inc();
    }

    /// Records events a projection applied; `age` is the oldest one's age.
    pub fn projected(&self, projection: &str, events: u64, age: Duration) {
        let labels = [("projection", projection.to_owned())];
        self.projected_events.get_or_create(&labels).inc_by(events);
        self.projection_lag_seconds.get_or_create(&labels).set(age.as_secs_f64());
    }

    /// Records how old a change was (`age`) when it reached `stage`.
    pub fn change_age(&self, stage: &'static str, age: Duration) {
        self.change_age_seconds.get_or_create(&[("stage", stage.to_owned())]).observe(age.as_secs_f64());
    }

    /// Counts a GraphQL request answered.
    pub fn graphql_request(&self, operation_type: &str, result: &str, took: Duration) {
        self.graphql_requests
            .get_or_create(&[("operation_type", operation_type.to_owned()), ("result", result.to_owned())])
            .inc();
        self.graphql_duration
            .get_or_create(&[("operation_type", operation_type.to_owned())])
            .observe(took.as_secs_f64());
    }

    /// Sets a pool's connection counts.
    pub fn pool(&self, pool: &str, size: u32, idle: usize) {
        let idle = i64::try_from(idle).unwrap_or(i64::MAX);
        self.db_pool_connections.get_or_create(&[("pool", pool.to_owned()), ("state", "idle".into())]).set(idle);
        self.db_pool_connections
            .get_or_create(&[("pool", pool.to_owned()), ("state", "in_use".into())])
            .set(i64::from(size).saturating_sub(idle).max(0));
    }

    /// Brings a counter up to a total the code keeps itself (a sampler's
    /// reading); never down.
    pub fn catch_up(&self, counter: &Counter, total: u64) {
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        counter.inc_by(total.saturating_sub(counter.get()));
    }

    /// The Prometheus text (OpenMetrics) of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// This process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// Reads values at scrape time (a pool's size, a consumer's pending
/// count) and sets their gauges.
pub type Sampler = std::sync::Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// Holds a gauge one higher while it lives (an open connection, a live
/// subscription).
pub struct GaugeGuard(&'static Gauge);

impl GaugeGuard {
    pub fn new(gauge: &'static Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A set with a sample in every family (a family with none is not
    /// written at all).
    fn sampled() -> Metrics {
        let metrics = Metrics::new();
        metrics.command("PlaceOrder", "accepted", Duration::from_millis(3));
        metrics.saga_step("reserve", "done");
        metrics.dead_letter("write-side");
        metrics.projected("orders", 2, Duration::from_millis(40));
        metrics.graphql_request("mutation", "ok", Duration::from_millis(5));
        metrics.pool("write", 4, 3);
        metrics.nats_pending.get_or_create(&[("consumer", "c".into())]).set(7);
        metrics.projection_lag_events.get_or_create(&[("projection", "orders".into())]).set(1);
        metrics.catch_up(&metrics.streams_read, 5);
        metrics.catch_up(&metrics.streams_read, 3);
        let transactions = [("projection", "orders".into()), ("result", "rolled_back".into())];
        metrics.projector_transactions.get_or_create(&transactions).inc();
        metrics.projector_statements.get_or_create(&[("projection", "orders".into()), ("kind", "view".into())]).inc();
        metrics.admission_refusals.get_or_create(&[("reason", "backlog".into())]).inc();
        metrics
    }

    #[test]
    fn the_text_carries_every_name_the_dashboard_uses() {
        let metrics = sampled();
        let text = metrics.encode();
        for line in [
            r#"conveyor_commands_total{type="PlaceOrder",outcome="accepted"} 1"#,
            r#"conveyor_command_duration_seconds_count{type="PlaceOrder"} 1"#,
            r#"conveyor_saga_steps_total{step="reserve",result="done"} 1"#,
            "conveyor_sagas_active 0",
            r#"conveyor_projection_lag_events{projection="orders"} 1"#,
            r#"conveyor_projection_lag_seconds{projection="orders"} 0.04"#,
            r#"conveyor_projected_events_total{projection="orders"} 2"#,
            r#"conveyor_dead_letters_total{source="write-side"} 1"#,
            r#"conveyor_graphql_requests_total{operation_type="mutation",result="ok"} 1"#,
            r#"conveyor_graphql_request_duration_seconds_count{operation_type="mutation"} 1"#,
            "conveyor_subscriptions_active 0",
            "conveyor_websocket_connections 0",
            r#"conveyor_db_pool_connections{pool="write",state="idle"} 3"#,
            r#"conveyor_db_pool_connections{pool="write",state="in_use"} 1"#,
            r#"conveyor_nats_pending{consumer="c"} 7"#,
            "conveyor_event_store_streams_read_total 5",
        ] {
            assert!(text.lines().any(|got| got == line), "missing `{line}` in:\n{text}");
        }
    }

    #[test]
    fn the_dashboard_uses_only_metrics_that_exist() {
        let dashboard = include_str!("../../deploy/grafana-dashboard.json");
        let text = sampled().encode();
        // Every family's `# TYPE` line names it; samples add _total, _bucket, …
        let families: Vec<&str> =
            text.lines().filter_map(|line| line.strip_prefix("# TYPE ")?.split(' ').next()).collect();
        let mut used = 0;
        for (at, _) in dashboard.match_indices("conveyor_") {
            let name: String = dashboard[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if name == "conveyor_overview" {
                continue;
            }
            let known = families.iter().any(|family| {
                name == *family
                    || ["_total", "_bucket", "_sum", "_count"].iter().any(|tail| name == format!("{family}{tail}"))
            });
            assert!(known, "the dashboard uses `{name}`, which is not exported: {families:?}");
            used += 1;
        }
        assert!(used >= 14, "the dashboard queries the metrics");
    }
}
