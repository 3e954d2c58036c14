//! The `conveyor` binary's library half: composes the gateway, write side
//! and read side into the two run modes, so that tests boot exactly what
//! `main` boots.
//!
//! * [`embedded`]: one process, SQLite, in-process bus and feed (the default).
//! * [`server`]: NATS JetStream + PostgreSQL/CockroachDB, one or all sides per process.

pub mod bench;
pub mod config;
pub mod dlq;
pub mod embedded;
pub mod server;
pub mod shutdown;
pub mod telemetry;
