//! Command-line and environment configuration. Every option has an
//! environment variable; embedded mode needs none of them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
}

#[derive(Debug, Args, Clone)]
pub struct Common {
    /// Address the GraphQL server listens on.
    #[arg(long, env = "CONVEYOR_LISTEN", default_value = "127.0.0.1:8080", global = true)]
    pub listen: SocketAddr,
    /// Prefix of every NATS stream, consumer and subject: deployments (and
    /// test runs) sharing one NATS server stay apart.
    #[arg(long, env = "CONVEYOR_NAMESPACE", default_value = "conveyor", global = true)]
    pub namespace: String,
    /// How long a mutation waits for the write side's decision before it answers PENDING.
    #[arg(long, env = "CONVEYOR_MUTATION_WAIT", default_value = "5s", value_parser = parse_duration, global = true)]
    pub mutation_wait: Duration,
    /// Embedded mode: where the SQLite event store and views live.
    #[arg(long, env = "CONVEYOR_DATA_DIR", default_value = "./conveyor-data", global = true)]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args, Clone)]
pub struct Server {
    /// NATS server URL, e.g. nats://127.0.0.1:4222.
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
}

#[derive(Debug, Args, Clone)]
pub struct WriteSideArgs {
    #[command(flatten)]
    pub server: Server,
    /// Handle only these aggregates' commands (default: all), so each group
    /// can run, scale and fail as its own process.
    #[arg(long, env = "CONVEYOR_ONLY", value_delimiter = ',')]
    pub only: Vec<Aggregate>,
    /// Commands decided concurrently by this process.
    #[arg(long, env = "CONVEYOR_COMMAND_CONCURRENCY", default_value_t = 32)]
    pub concurrency: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Aggregate {
    Order,
}

impl Aggregate {
    pub fn name(self) -> &'static str {
        match self {
            Self::Order => schema::order::AGGREGATE,
        }
    }
}

/// `250ms`, `5s`, `2m`, or plain milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let value: u64 = number.parse().map_err(|_| format!("`{text}` is not a duration like 250ms, 5s or 2m"))?;
    match unit {
        "" | "ms" => Ok(Duration::from_millis(value)),
        "s" => Ok(Duration::from_secs(value)),
        "m" => Ok(Duration::from_secs(value * 60)),
        _ => Err(format!("`{text}` has an unknown unit; use ms, s or m")),
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
        assert_eq!(parse_duration("40"), Ok(Duration::from_millis(40)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }
}
