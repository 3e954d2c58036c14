//! The bus is not the truth (invariant 8), on the server backend: whoever
//! can publish on NATS — here the test, with the server's full rights — can
//! forge neither a fact nor a saga step. Forged events, events ahead of the
//! store, junk bytes, the saga's commands from outside, commands on the
//! wrong subject: each changes nothing and is kept in the `<ns>_DLQ`
//! stream with its reason. A command the write side gives up on answers
//! FAILED, and what was kept is redriven once its cause is fixed. Every
//! view equals a replay of the event store afterwards.
//!
//! * [`auth`]: NATS authentication by nkey, user and password, token.
//! * [`creds`]: a `.creds` file against a nats-server in operator (JWT) mode.
//! * [`events`]: forged, junk, ahead of the store; one a projector cannot apply.
//! * [`commands`]: the saga's commands from outside, wrong subjects, a command given up.
//! * [`permissions`]: each side's NATS user (scripts/nats-server.conf).
//! * [`tls`]: NATS over mutual TLS.
//! * [`split`]: the saga's steps over NATS to another process.

mod auth;
mod commands;
mod creds;
mod events;
mod permissions;
mod split;
mod tls;

use std::time::Duration;

use async_nats::jetstream;
use conveyor::dlq::{self, DeadLetter};
use schema::ports::EventLog;
use schema::{CommandEnvelope, EventEnvelope, Metadata, Namespace};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, WAIT, is_final, items};

/// The test's own NATS connection: an outsider with every right.
pub async fn outsider() -> jetstream::Context {
    jetstream::new(crate::helpers::nats_client().await)
}

pub fn namespace(app: &TestApp) -> Namespace {
    Namespace::new(&app.isolation.namespace).expect("valid namespace")
}

/// Publishes `payload` to `subject` on JetStream, waiting until it is stored.
pub async fn publish(js: &jetstream::Context, subject: String, payload: Vec<u8>) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", Uuid::now_v7().to_string().as_str());
    js.publish_with_headers(subject, headers, payload.into()).await.expect("publish").await.expect("stored");
}

/// Polls the dead-letter stream until one from `source` satisfies `found`.
pub async fn wait_for_dead_letter(
    js: &jetstream::Context,
    ns: &Namespace,
    source: &str,
    what: &str,
    found: impl Fn(&DeadLetter) -> bool,
) -> DeadLetter {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let letters = dlq::list(js, ns, 1000).await.unwrap_or_default();
        if let Some(letter) = letters.iter().find(|letter| letter.source == source && found(letter)) {
            return letter.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no dead letter from {source} {what}; kept: {letters:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A confirmed order of the shop's customer; returns its id.
pub async fn confirmed_order(app: &TestApp, customer: &str) -> String {
    let placed = app.place_order(customer, items(), None).await;
    assert_eq!(placed["status"], "ACCEPTED", "{placed}");
    let id = placed["orderId"].as_str().expect("order id").to_string();
    let order = app.wait_for_order(&id, "decided", is_final).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    id
}

/// The last event of a stream, from the store.
pub async fn last_event(app: &TestApp, aggregate: &str, id: &str) -> EventEnvelope {
    let events = EventLog::read_stream(&app.store, aggregate, id, 1, u64::MAX).await.expect("read stream");
    events.last().expect("the stream has events").clone()
}

/// An `OrderCancelled` no one decided, `ahead` versions past the stream's head.
pub fn forged_cancellation(last: &EventEnvelope, ahead: u64) -> EventEnvelope {
    let mut forged = last.clone();
    forged.id = Uuid::now_v7();
    forged.type_name = "OrderCancelled".into();
    forged.schema_version = 2;
    forged.stream_version = last.stream_version + ahead;
    forged.metadata.actor = "customer:mallory".into();
    forged.payload = json!({ "reason": "forged", "customer_id": last.payload["customer_id"], "was_confirmed": true });
    forged
}

/// A command envelope as a client of the bus would write it.
pub fn command(aggregate: &str, id: &str, type_name: &str, actor: &str, payload: Value) -> CommandEnvelope {
    let command_id = Uuid::now_v7();
    CommandEnvelope {
        id: command_id,
        type_name: type_name.into(),
        schema_version: 1,
        aggregate_type: aggregate.into(),
        aggregate_id: id.into(),
        metadata: Metadata::origin(command_id, actor),
        timestamp: chrono::Utc::now(),
        payload,
    }
}

/// A nats-server of the test's own (for settings the suite's server does
/// not have), on a free port; killed on drop.
pub struct OwnServer {
    child: std::process::Child,
    pub port: u16,
    /// What the server printed (removed on drop).
    log: std::path::PathBuf,
}

impl OwnServer {
    pub async fn start(args: &[String]) -> Self {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let binary =
            std::process::Command::new(root.join("scripts/nats-server")).output().expect("scripts/nats-server runs");
        let binary = String::from_utf8_lossy(&binary.stdout).trim().to_string();
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port();
        let log = std::env::temp_dir().join(format!("conveyor-nats-{}.log", Uuid::now_v7().simple()));
        let child = std::process::Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("the server's log file"))
            .spawn()
            .expect("nats-server starts");
        let server = Self { child, port, log };
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the nats-server never listened on {port}:\n{}",
                std::fs::read_to_string(&server.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Held by each test here for its whole run: they boot systems, processes
/// and servers of their own, and together they would crowd the machine's
/// two cores enough to make the suite's timing-sensitive tests (a token
/// expiring under a flood) fail. One at a time, they still run beside the
/// other modules' tests.
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}
