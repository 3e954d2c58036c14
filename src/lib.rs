//! The `conveyor` binary's library half: composes the gateway, write side
//! and read side into the two run modes, so that tests boot exactly what
//! `main` boots.
//!
//! * [`embedded`]: one process, SQLite, in-process bus and feed (the default).
//! * [`metrics`]: `/metrics` on `--metrics-listen`, and what is read at scrape time.
//! * [`migrate`]: `conveyor migrate`, the schema on its own.
//! * [`projection`]: `conveyor projection status` and `rebuild`.
//! * [`server`]: NATS JetStream + PostgreSQL/CockroachDB, one or all sides per process.

pub mod bench;
pub mod config;
pub mod dlq;
pub mod embedded;
pub mod metrics;
pub mod migrate;
pub mod projection;
pub mod server;
pub mod shutdown;
pub mod telemetry;
