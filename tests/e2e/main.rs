//! End-to-end tests of the composed system on real infrastructure: each
//! test runs on the embedded backend (SQLite, in-process bus) and on the
//! server backend (NATS JetStream + PostgreSQL at SERIALIZABLE).
//! One binary, a module per feature.

mod helpers;

mod auth;
mod authorization;
mod bus;
mod cluster;
mod customers;
mod edge;
mod feed;
mod fuzz;
mod grpc;
mod grpc_streams;
mod http;
mod limits;
mod migrations;
mod observability;
mod order_lists;
mod orders;
mod overload;
mod processes;
mod projection;
mod projection_rebuild;
mod projection_status;
mod rate_limits;
mod read_cache;
mod saga;
mod shared_subscriptions;
mod traces;
mod websocket;
mod websocket_limits;
