//! Conveyor's contracts: what the gateway, the write side and the read side
//! agree on without importing each other.
//!
//! * [`envelope`]: the command and event envelopes every message travels in.
//! * [`order`], [`customer`], [`product`], [`payment`]: each aggregate's
//!   commands, events and input rules.
//! * [`outcome`]: what the write side decided about a command.
//! * [`codes`]: machine-readable error codes shared by rejections and GraphQL errors.
//! * [`subjects`]: the namespaced NATS subject, stream and consumer names.
//! * [`ports`]: the small traits behind which embedded and server adapters sit.
//! * [`dead_letters`] (feature `nats`): the kept dead letters (`<ns>_DLQ`).
//! * [`nats`] / [`sql`] (features): stream definitions and the SQL transaction
//!   rules (SERIALIZABLE, retry on 40001) that every side follows, and
//!   [`migration`]s under a lease row; [`metrics`] (feature): the process's
//!   Prometheus metrics.
//! * [`trace`]: the W3C trace context every command and event carries.

pub mod codes;
pub mod customer;
#[cfg(feature = "nats")]
pub mod dead_letters;
pub mod envelope;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "sql")]
pub mod migration;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "nats")]
pub mod nats_bus;
#[cfg(feature = "nats")]
mod nats_connect;
pub mod order;
pub mod outcome;
pub mod payment;
pub mod ports;
pub mod product;
#[cfg(feature = "sql")]
pub mod sql;
pub mod subjects;
pub mod trace;

pub use envelope::{CommandEnvelope, ContractError, EventEnvelope, Metadata};
pub use outcome::{CommandOutcome, OutcomeStatus, Rejection};
pub use subjects::Namespace;
