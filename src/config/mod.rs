//! Command-line and environment configuration. Every option has an
//! environment variable; embedded mode needs none of them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

mod nats;

use clap::builder::TypedValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};
pub use nats::{DlqArgs, DlqCommand, DlqServer, NatsAuthArgs};

mod edge;
pub use edge::EdgeLimits;

mod streams;
pub use streams::StreamEventsArgs;

#[derive(Debug, Parser)]
#[command(name = "conveyor", version, about = "GraphQL gateway over event-sourced CQRS")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Everything in one process on SQLite, no infrastructure (the default).
    Embedded,
    /// The GraphQL gateway (server mode).
    Gateway(Server),
    /// The command handlers and the outbox relay (server mode).
    WriteSide(WriteSideArgs),
    /// The projectors (server mode).
    ReadSide(Server),
    /// Gateway, write side and read side in one process on NATS + SQL.
    All(Server),
    /// Load generator: placeOrder mutations against a running gateway.
    Bench(crate::bench::BenchArgs),
    /// Prints the GraphQL schema (SDL).
    Schema,
    /// Prints a token signed with the configured --jwt-secret.
    Token(TokenArgs),
    /// Applies the write side's and the read side's migrations, then exits.
    Migrate(MigrateArgs),
    /// Projection operations: `status` (positions and lag), `rebuild` (blue-green).
    Projection(ProjectionArgs),
    /// The dead-letter stream: list, show, redrive or purge what it keeps.
    Dlq(DlqArgs),
}

#[derive(Debug, Args, Clone)]
pub struct ProjectionArgs {
    #[command(subcommand)]
    pub command: ProjectionCommand,
}

#[derive(Debug, Subcommand, Clone)]
pub enum ProjectionCommand {
    /// Prints each projection's position and lag behind the event store.
    Status(StatusArgs),
    /// Rebuilds one view from the event store beside the live one and
    /// switches it in, while the system runs (docs/operations.md).
    Rebuild(Box<RebuildArgs>),
}

#[derive(Debug, Args, Clone)]
pub struct RebuildArgs {
    /// The projection: orders, customers or products.
    pub name: String,
    /// PostgreSQL or CockroachDB URL; without it, the embedded --data-dir.
    #[arg(long = "database", env = "DATABASE_URL", hide_env_values = true)]
    pub database: Option<String>,
    /// NATS URL (server mode): the rows the switch changed are announced
    /// there, so gateways drop what they cached of them and subscriptions
    /// re-read them. Connect as a user that may publish `<ns>.changed.>`
    /// (the read side's).
    #[arg(long = "nats", env = "NATS_URL")]
    pub nats: Option<String>,
    #[command(flatten)]
    pub nats_auth: NatsAuthArgs,
}

#[derive(Debug, Args, Clone)]
pub struct StatusArgs {
    /// PostgreSQL or CockroachDB URL; without it, the embedded --data-dir.
    #[arg(long = "database", env = "DATABASE_URL", hide_env_values = true)]
    pub database: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct MigrateArgs {
    /// PostgreSQL or CockroachDB URL (or sqlite://path for an embedded store).
    #[arg(long = "database", env = "DATABASE_URL", hide_env_values = true)]
    pub database: String,
}

#[derive(Debug, Args, Clone)]
pub struct Common {
    /// Address the GraphQL server listens on.
    #[arg(long, env = "CONVEYOR_LISTEN", default_value = "127.0.0.1:8080", global = true)]
    pub listen: SocketAddr,
    /// Address the gRPC API listens on (gateway, all, embedded; docs/grpc.md).
    #[arg(long, env = "CONVEYOR_GRPC_LISTEN", default_value = "127.0.0.1:50051", global = true)]
    pub grpc_listen: SocketAddr,
    /// Prefix of every NATS stream, consumer and subject: deployments (and
    /// test runs) sharing one NATS server stay apart.
    #[arg(long, env = "CONVEYOR_NAMESPACE", default_value = "conveyor", global = true)]
    pub namespace: String,
    /// How long a mutation waits for the write side's decision before it answers PENDING.
    #[arg(long, env = "CONVEYOR_MUTATION_WAIT", default_value = "5s", value_parser = parse_duration, global = true)]
    pub mutation_wait: Duration,
    /// The most events a projector applies in one transaction when several
    /// are ready at once (1: one transaction per event).
    #[arg(long, env = "CONVEYOR_PROJECTOR_BATCH", default_value_t = read_side::projector::BATCH,
          value_parser = TypedValueParser::map(clap::value_parser!(u16).range(1..=1000), usize::from), global = true)]
    pub projector_batch: usize,
    /// Workers per projection, each applying the streams of its hash partition.
    #[arg(long, env = "CONVEYOR_PROJECTOR_WORKERS", default_value_t = read_side::projector::WORKERS,
          value_parser = TypedValueParser::map(clap::value_parser!(u16).range(1..=64), usize::from), global = true)]
    pub projector_workers: usize,
    /// Serves Prometheus metrics at `GET /metrics` on this address (e.g.
    /// 0.0.0.0:9090); off unless set.
    #[arg(long, env = "CONVEYOR_METRICS_LISTEN", global = true)]
    pub metrics_listen: Option<SocketAddr>,
    /// Log lines as text or as JSON objects (one per line).
    #[arg(long, env = "CONVEYOR_LOG_FORMAT", value_enum, default_value_t = crate::telemetry::LogFormat::Text, global = true)]
    pub log_format: crate::telemetry::LogFormat,
    /// Embedded mode: where the SQLite event store and views live.
    #[arg(long, env = "CONVEYOR_DATA_DIR", default_value = "./conveyor-data", global = true)]
    pub data_dir: PathBuf,
    /// Origins browsers may call GraphQL from (CORS), comma-separated; `*`
    /// for any. Default: none (same origin only).
    #[arg(long = "cors-origin", env = "CONVEYOR_CORS_ORIGINS", value_delimiter = ',', global = true)]
    pub cors_origins: Vec<String>,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "CONVEYOR_MAX_BODY_BYTES", default_value_t = 1024 * 1024, global = true)]
    pub max_body_bytes: usize,
    /// Longest a request may take.
    #[arg(long, env = "CONVEYOR_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration, global = true)]
    pub request_timeout: Duration,
    /// Refuse introspection queries (GraphiQL then cannot show the schema).
    #[arg(long, env = "CONVEYOR_DISABLE_INTROSPECTION", global = true)]
    pub disable_introspection: bool,
    /// HS256 secret that signs and verifies tokens. Without it (or a public
    /// key) Conveyor runs open, and says so at start.
    #[arg(long, env = "CONVEYOR_JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<String>,
    /// PEM file with the RS256 public key that verifies tokens (instead of a secret).
    #[arg(long, env = "CONVEYOR_JWT_PUBLIC_KEY", global = true)]
    pub jwt_public_key: Option<PathBuf>,
    /// Tokens must carry this `iss` (checked when set; `conveyor token` issues it).
    #[arg(long, env = "CONVEYOR_JWT_ISSUER", global = true)]
    pub jwt_issuer: Option<String>,
    /// Tokens must name this audience in `aud` (checked when set; `conveyor token` issues it).
    #[arg(long, env = "CONVEYOR_JWT_AUDIENCE", global = true)]
    pub jwt_audience: Option<String>,
    /// WebSocket: how long a client may take to send connection_init (then 4408).
    #[arg(long, env = "CONVEYOR_WS_INIT_TIMEOUT", default_value = "10s", value_parser = parse_duration, global = true)]
    pub ws_init_timeout: Duration,
    /// WebSocket: how often the server pings an idle connection.
    #[arg(long, env = "CONVEYOR_WS_PING_INTERVAL", default_value = "15s", value_parser = parse_duration, global = true)]
    pub ws_ping_interval: Duration,
    /// Commands one gateway process waits on at once; beyond it a mutation
    /// answers OVERLOADED (HTTP 503, Retry-After) at once. 0: no limit.
    #[arg(long, env = "CONVEYOR_MAX_INFLIGHT_COMMANDS", default_value_t = 1024, global = true)]
    pub max_inflight_commands: usize,
    /// Orders accepted but not yet confirmed or rejected at which placeOrder
    /// answers OVERLOADED (HTTP 503, Retry-After). 0: no limit.
    #[arg(long, env = "CONVEYOR_MAX_UNDECIDED_ORDERS", default_value_t = 20_000, global = true)]
    pub max_undecided_orders: u64,
    #[command(flatten)]
    pub domain: Domain,
    #[command(flatten)]
    pub edge: EdgeLimits,
    #[command(flatten)]
    pub stream_events: StreamEventsArgs,
}

impl Common {
    pub fn http(&self) -> anyhow::Result<gateway::HttpSettings> {
        Ok(gateway::HttpSettings {
            listen: self.listen,
            cors_origins: self.cors_origins.clone(),
            max_body_bytes: self.max_body_bytes,
            request_timeout: self.request_timeout,
            introspection: !self.disable_introspection,
            limits: self.edge.query_limits(),
            rate_limit: gateway::RateLimitSettings {
                per_second: self.edge.rate_limit,
                burst: self.edge.rate_limit_burst,
            },
            client_ip_header: self.edge.client_ip_header.clone(),
            auth: self.authenticator()?,
            websocket: self.edge.websocket(self.ws_init_timeout, self.ws_ping_interval),
            grpc_listen: Some(self.grpc_listen),
            event_streams: self.stream_events.settings()?,
        })
    }

    /// The gateway's admission limits (invariant 9).
    pub fn admission(&self) -> gateway::AdmissionSettings {
        gateway::AdmissionSettings {
            max_inflight_commands: self.max_inflight_commands,
            max_undecided_orders: self.max_undecided_orders,
        }
    }

    /// The `iss` and `aud` tokens must carry, where configured.
    pub fn token_claims(&self) -> gateway::auth::TokenClaims {
        gateway::auth::TokenClaims { issuer: self.jwt_issuer.clone(), audience: self.jwt_audience.clone() }
    }

    fn authenticator(&self) -> anyhow::Result<gateway::Authenticator> {
        use anyhow::Context as _;
        let authenticator = match (&self.jwt_secret, &self.jwt_public_key) {
            (Some(_), Some(_)) => anyhow::bail!("give --jwt-secret or --jwt-public-key, not both"),
            (Some(secret), None) => gateway::Authenticator::hs256(secret.as_bytes()).context("--jwt-secret")?,
            (None, Some(path)) => {
                let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
                gateway::Authenticator::rs256(&pem)
                    .with_context(|| format!("{} is not an RSA public key", path.display()))?
            }
            (None, None) if self.jwt_issuer.is_some() || self.jwt_audience.is_some() => {
                anyhow::bail!("--jwt-issuer and --jwt-audience need --jwt-secret or --jwt-public-key")
            }
            (None, None) => return Ok(gateway::Authenticator::open()),
        };
        Ok(authenticator.with_claims(&self.token_claims()))
    }
}

#[derive(Debug, Args, Clone)]
pub struct TokenArgs {
    #[arg(long, value_enum)]
    pub role: TokenRole,
    /// The subject: a customer's id for `customer` (required), a name otherwise.
    #[arg(long)]
    pub sub: Option<String>,
    /// How long the token is valid.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenRole {
    Customer,
    Admin,
    Service,
}

#[derive(Debug, Args, Clone)]
pub struct Server {
    /// NATS server URL, e.g. nats://127.0.0.1:4222; a cluster's as a
    /// comma-separated list (nats://a:4222,nats://b:4222,nats://c:4222).
    #[arg(long = "nats", env = "NATS_URL")]
    pub nats: String,
    /// PostgreSQL or CockroachDB URL, e.g. postgres://user@host:26257/conveyor.
    #[arg(long = "database", env = "DATABASE_URL", hide_env_values = true)]
    pub database: String,
    /// JetStream replicas for the streams this process creates (3 on a cluster).
    #[arg(long, env = "CONVEYOR_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,
    /// Connections in this process's SQL pool.
    #[arg(long, env = "CONVEYOR_DB_CONNECTIONS", default_value_t = 16)]
    pub db_connections: u32,
    /// Deliveries of one command or event message before its consumer gives
    /// up on it and moves it to the dead-letter stream (a command then
    /// answers FAILED with COMMAND_FAILED).
    #[arg(long, env = "CONVEYOR_MAX_DELIVER", default_value_t = 20,
          value_parser = clap::value_parser!(i64).range(1..=10_000))]
    pub max_deliver: i64,
    /// How long the dead-letter stream `<ns>_DLQ` keeps a dead letter.
    #[arg(long, env = "CONVEYOR_DLQ_MAX_AGE", default_value = "720h", value_parser = parse_duration)]
    pub dlq_max_age: Duration,
    /// The dead-letter stream's disk budget in bytes (the oldest go first); -1: none.
    #[arg(long, env = "CONVEYOR_DLQ_MAX_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub dlq_max_bytes: i64,
    #[command(flatten)]
    pub nats_auth: NatsAuthArgs,
}

impl Server {
    /// The stream settings for the streams this process creates.
    pub fn streams(&self) -> schema::nats::StreamSettings {
        schema::nats::StreamSettings {
            replicas: self.stream_replicas,
            dead_letters: schema::dead_letters::DeadLetterLimits {
                max_age: self.dlq_max_age,
                max_bytes: self.dlq_max_bytes,
                ..Default::default()
            },
            ..Default::default()
        }
    }
}

#[derive(Debug, Args, Clone)]
pub struct WriteSideArgs {
    #[command(flatten)]
    pub server: Server,
    /// Handle only these aggregates' commands (default: all), so each group
    /// can run, scale and fail as its own process.
    #[arg(long, env = "CONVEYOR_ONLY", value_delimiter = ',')]
    pub only: Vec<Aggregate>,
    /// Commands taken at once by each of this process's consumers: they
    /// wait together and are committed in groups, so this bounds memory and
    /// redelivery work, not database load.
    #[arg(long, env = "CONVEYOR_COMMAND_CONCURRENCY", default_value_t = 256)]
    pub concurrency: usize,
    /// How long JetStream waits for a command's ack before delivering it again
    /// (to another copy, when this one died).
    #[arg(long, env = "CONVEYOR_COMMAND_ACK_WAIT", default_value = "10s", value_parser = parse_duration)]
    pub ack_wait: Duration,
}

/// The business transaction's settings, in every mode that runs the write side.
#[derive(Debug, Args, Clone)]
pub struct Domain {
    /// Simulated payment provider: share of authorizations that fail outright (0 to 1).
    #[arg(long, env = "CONVEYOR_PAYMENT_FAILURE_RATE", default_value_t = 0.0, global = true)]
    pub payment_failure_rate: f64,
    /// Simulated payment provider: time each authorization takes.
    #[arg(long, env = "CONVEYOR_PAYMENT_LATENCY", default_value = "0ms", value_parser = parse_duration, global = true)]
    pub payment_latency: Duration,
    /// How long one saga step may go unanswered before it is retried.
    #[arg(long, env = "CONVEYOR_SAGA_STEP_TIMEOUT", default_value = "5s", value_parser = parse_duration, global = true)]
    pub saga_step_timeout: Duration,
    /// How long an order may take to confirm; a step still unanswered after
    /// that is compensated (stock released, payment voided, order rejected).
    #[arg(long, env = "CONVEYOR_SAGA_TIMEOUT", default_value = "30s", value_parser = parse_duration, global = true)]
    pub saga_timeout: Duration,
    /// Pause before retrying a step that got no answer: a quarter of it for
    /// the first three misses, then doubling up to 30 s.
    #[arg(long, env = "CONVEYOR_SAGA_RETRY_DELAY", default_value = "1s", value_parser = parse_duration, global = true)]
    pub saga_retry_delay: Duration,
}

impl Domain {
    pub fn provider(&self) -> write_side::SimulatedProvider {
        write_side::SimulatedProvider {
            latency: self.payment_latency,
            failure_rate: self.payment_failure_rate.clamp(0.0, 1.0),
        }
    }

    pub fn saga(&self) -> write_side::SagaSettings {
        write_side::SagaSettings {
            step_timeout: self.saga_step_timeout,
            saga_timeout: self.saga_timeout,
            retry_delay: self.saga_retry_delay,
            ..Default::default()
        }
    }
}

impl Default for Domain {
    fn default() -> Self {
        Self {
            payment_failure_rate: 0.0,
            payment_latency: Duration::ZERO,
            saga_step_timeout: Duration::from_secs(5),
            saga_timeout: Duration::from_secs(30),
            saga_retry_delay: Duration::from_secs(1),
        }
    }
}

/// Handler groups for `write-side --only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Aggregate {
    /// Orders, and the order saga that drives them.
    Order,
    /// The catalog and its stock (the product aggregate).
    Stock,
    Payment,
    Customer,
}

impl Aggregate {
    pub fn name(self) -> &'static str {
        match self {
            Self::Order => schema::order::AGGREGATE,
            Self::Stock => schema::product::AGGREGATE,
            Self::Payment => schema::payment::AGGREGATE,
            Self::Customer => schema::customer::AGGREGATE,
        }
    }
}

/// `250ms`, `5s`, `2m`, `1h`, or plain milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let value: u64 = number.parse().map_err(|_| format!("`{text}` is not a duration like 250ms, 5s or 2m"))?;
    match unit {
        "" | "ms" => Ok(Duration::from_millis(value)),
        "s" => Ok(Duration::from_secs(value)),
        "m" => Ok(Duration::from_secs(value * 60)),
        "h" => Ok(Duration::from_secs(value * 3600)),
        _ => Err(format!("`{text}` has an unknown unit; use ms, s, m or h")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("40"), Ok(Duration::from_millis(40)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }
}
