//! End-to-end tests of the composed system on real infrastructure: each
//! test runs on the embedded backend (SQLite, in-process bus) and on the
//! server backend (NATS JetStream + PostgreSQL at SERIALIZABLE).
//! One binary, a module per feature.

mod helpers;

mod auth;
mod authorization;
mod bus;
mod customers;
mod edge;
mod feed;
mod fuzz;
mod grpc;
mod http;
mod limits;
mod orders;
mod overload;
mod processes;
mod projection;
mod rate_limits;
mod saga;
mod websocket;
mod websocket_limits;
