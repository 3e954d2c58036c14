//! `conveyor bench`: a load generator for a running gateway. It seeds its
//! own catalog (`--skus` products with a billion units each) and a customer
//! with a billion cents of credit, then runs one of two loads:
//!
//! * **closed loop** (the default, [`closed_loop`]): C clients each place an
//!   order, follow it to its final status, then place the next, for N
//!   orders. Measures the business transaction's latency at a given
//!   concurrency.
//! * **open loop** (`--duration` or `--open-loop`, [`open_loop`]): C
//!   connections fire `placeOrder` for D seconds, as fast as they can or at
//!   `--rate`, without waiting for decisions; one `ordersUpdated`
//!   subscription ([`feed`]) watches the decisions. Measures how much work
//!   Conveyor takes in and whether it finishes it.
//!
//! Both print stable, grep-able lines ([`report`]) that `scripts/bench` parses.

mod answer;
mod api_compare;
mod check;
mod client;
mod closed_loop;
mod cpu;
mod feed;
mod open_loop;
mod report;
mod seed;

use std::time::Duration;

use anyhow::bail;

use crate::config::parse_duration;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The gateway's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Closed loop: orders to place.
    #[arg(long, default_value_t = 2000)]
    pub orders: usize,
    /// Concurrent clients (HTTP connections in the open loop).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// A token for a gateway that requires one: an admin token, since the
    /// bench adds its own products and customer (`conveyor token --role admin`).
    #[arg(long, env = "CONVEYOR_BENCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Open loop: fire placeOrder for `--duration` (15s unless given)
    /// without waiting for decisions, then wait for them.
    #[arg(long)]
    pub open_loop: bool,
    /// Open loop for this long (implies --open-loop), e.g. 15s.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Open loop: placeOrder requests per second over all connections
    /// (default: as fast as the connections go).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Open loop: how long to wait after the load for every accepted order
    /// to reach a final status.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Products to spread orders over (1: a flash sale, every order for one product).
    #[arg(long, default_value_t = 50)]
    pub skus: usize,
    /// Lines per order, each a different product (at most --skus).
    #[arg(long, default_value_t = 1)]
    pub lines: usize,
    /// Instead of a load: place and read back --orders orders over GraphQL,
    /// then over the gRPC API at this address, and print each API's latencies.
    #[arg(long)]
    pub compare_grpc: Option<std::net::SocketAddr>,
}

/// How long the open loop runs when only `--open-loop` is given.
const DEFAULT_DURATION: Duration = Duration::from_secs(15);
/// The most lines an order may have (the domain's own limit).
const MAX_LINES: usize = 100;

/// The load `BenchArgs` asks for, validated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Load {
    Closed { orders: usize },
    Open { duration: Duration, rate: Option<f64>, drain_timeout: Duration },
}

/// The order shape and the client count every load shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    pub concurrency: usize,
    pub skus: usize,
    pub lines: usize,
}

impl BenchArgs {
    /// Checks the arguments together and says which load they select.
    pub(crate) fn validate(&self) -> anyhow::Result<(Load, Shape)> {
        if self.concurrency == 0 {
            bail!("--concurrency must be at least 1");
        }
        if self.skus == 0 {
            bail!("--skus must be at least 1");
        }
        if self.lines == 0 || self.lines > MAX_LINES {
            bail!("--lines must be 1 to {MAX_LINES}");
        }
        if self.lines > self.skus {
            bail!("--lines {} needs at least as many --skus (each line is a different product)", self.lines);
        }
        let shape = Shape { concurrency: self.concurrency, skus: self.skus, lines: self.lines };
        if !self.open_loop && self.duration.is_none() {
            if self.rate.is_some() {
                bail!("--rate is for the open loop: add --duration");
            }
            if self.orders == 0 {
                bail!("--orders must be at least 1");
            }
            return Ok((Load::Closed { orders: self.orders }, shape));
        }
        let duration = self.duration.unwrap_or(DEFAULT_DURATION);
        if duration.is_zero() {
            bail!("--duration must be longer than zero");
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            bail!("--rate must be a positive number of requests per second");
        }
        Ok((Load::Open { duration, rate: self.rate, drain_timeout: self.drain_timeout }, shape))
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let (load, shape) = args.validate()?;
    let gateway = client::Gateway::new(&args.url, args.token.clone(), shape.concurrency)?;
    let seed = seed::Seed::create(&gateway, shape.skus).await?;
    if let Some(grpc) = args.compare_grpc {
        let Load::Closed { orders } = load else { bail!("--compare-grpc takes --orders, not an open loop") };
        return api_compare::run(&gateway, &seed, shape, orders, grpc, args.token.as_deref()).await;
    }
    match load {
        Load::Closed { orders } => closed_loop::run(&gateway, &seed, shape, orders).await,
        Load::Open { duration, rate, drain_timeout } => {
            let plan = open_loop::Plan { shape, duration, rate, drain_timeout };
            open_loop::run(&gateway, &seed, plan).await
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> anyhow::Result<(Load, Shape)> {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))?;
        cli.bench.validate()
    }

    #[test]
    fn without_a_duration_the_bench_is_the_closed_loop_it_always_was() {
        let (load, shape) = parse(&[]).unwrap();
        assert_eq!(load, Load::Closed { orders: 2000 });
        assert_eq!(shape, Shape { concurrency: 16, skus: 50, lines: 1 });
        let (_, shape) = parse(&["--skus", "5", "--lines", "2"]).unwrap();
        assert_eq!(shape, Shape { concurrency: 16, skus: 5, lines: 2 });
    }

    #[test]
    fn a_duration_or_the_flag_selects_the_open_loop() {
        let (load, _) = parse(&["--duration", "15s", "--skus", "1"]).unwrap();
        assert_eq!(
            load,
            Load::Open { duration: Duration::from_secs(15), rate: None, drain_timeout: Duration::from_secs(30) }
        );
        let (load, _) = parse(&["--open-loop", "--rate", "500", "--drain-timeout", "5s"]).unwrap();
        assert_eq!(
            load,
            Load::Open { duration: DEFAULT_DURATION, rate: Some(500.0), drain_timeout: Duration::from_secs(5) }
        );
    }

    #[test]
    fn arguments_that_cannot_make_a_load_are_refused_with_the_reason() {
        for (args, says) in [
            (&["--concurrency", "0"][..], "--concurrency"),
            (&["--skus", "0"], "--skus"),
            (&["--lines", "0"], "--lines"),
            (&["--lines", "2", "--skus", "1"], "at least as many --skus"),
            (&["--lines", "101", "--skus", "200"], "--lines must be"),
            (&["--orders", "0"], "--orders"),
            (&["--rate", "10"], "open loop"),
            (&["--duration", "0s"], "--duration"),
            (&["--open-loop", "--rate", "0"], "--rate"),
            (&["--open-loop", "--rate", "NaN"], "--rate"),
        ] {
            let error = parse(args).expect_err(&format!("{args:?} should be refused")).to_string();
            assert!(error.contains(says), "{args:?}: {error}");
        }
    }
}
