//! The real binary as separate OS processes: the three sides apart, clean
//! shutdown on SIGTERM, fail-fast start-up errors, crash durability of the
//! embedded mode, and poison commands.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use schema::ports::EventLog;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::helpers::{
    Backend, Isolation, Subscription, TestApp, WAIT, customer, graphql_at, is_final, items, nats_url,
};

/// A `conveyor` process; killed if still running when dropped.
pub(crate) struct Conveyor {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Conveyor {
    pub(crate) fn start(args: &[&str], env: &[(&str, String)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_conveyor"));
        command.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        command.env("RUST_LOG", "info").env_remove("NATS_URL").env_remove("DATABASE_URL");
        // Processes run side by side: none may take the default gRPC port.
        command.env("CONVEYOR_GRPC_LISTEN", "127.0.0.1:0");
        for (key, value) in env {
            command.env(key, value);
        }
        // A side runs as its own NATS user (scripts/nats-server.conf) when
        // the suite's server has them (and the test did not aim it elsewhere).
        if let Some(side @ ("gateway" | "write-side" | "read-side")) = args.first().copied()
            && env.iter().any(|(key, url)| *key == "NATS_URL" && *url == nats_url())
        {
            command.env("NATS_URL", crate::helpers::side_nats_url(side));
        }
        let mut child = command.spawn().expect("conveyor starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let (sender, lines) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let keep = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                keep.lock().expect("log lock").push(line.clone());
                let _ = sender.send(line);
            }
        });
        Self { child, lines, log }
    }

    /// Waits for a log line containing `marker`; returns it.
    pub(crate) fn wait_for_line(&self, marker: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(marker) => return line,
                Ok(_) => continue,
                Err(_) => panic!("no log line with `{marker}` in time; log so far:\n{}", self.log_text()),
            }
        }
    }

    /// The address from the line announcing where GraphQL is served.
    pub(crate) fn graphql_address(&self) -> SocketAddr {
        let line = self.wait_for_line("http://");
        let start = line.find("http://").expect("a URL in the line") + "http://".len();
        let rest = &line[start..];
        let end = rest.find('/').expect("a path after the address");
        rest[..end].parse().expect("a socket address")
    }

    pub(crate) fn log_text(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }

    pub(crate) fn signal(&self, name: &str) {
        let status = Command::new("kill").arg(format!("-{name}")).arg(self.child.id().to_string()).status();
        assert!(status.is_ok_and(|status| status.success()), "kill -{name} works");
    }

    /// Waits (bounded) for the process to exit.
    pub(crate) fn wait_exit(&mut self) -> ExitStatus {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait on child") {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "process did not exit in time; log:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Conveyor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn wait_until_ready(address: SocketAddr) {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ready = http.get(format!("http://{address}/readyz")).send().await;
        if ready.is_ok_and(|response| response.status().is_success()) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{address} never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn server_env(isolation: &Isolation) -> Vec<(&'static str, String)> {
    vec![
        ("NATS_URL", nats_url()),
        ("DATABASE_URL", isolation.server().database),
        ("CONVEYOR_NAMESPACE", isolation.namespace.clone()),
        ("CONVEYOR_LISTEN", "127.0.0.1:0".into()),
    ]
}

#[tokio::test]
async fn the_three_sides_run_as_separate_processes_and_stop_cleanly_on_sigterm() {
    let isolation = Isolation::new(Backend::Server).await;
    let env = server_env(&isolation);
    let mut write_side = Conveyor::start(&["write-side"], &env);
    let mut read_side = Conveyor::start(&["read-side"], &env);
    let mut gateway = Conveyor::start(&["gateway"], &env);
    write_side.wait_for_line("write side consuming commands");
    read_side.wait_for_line("projector running");
    let address = gateway.graphql_address();
    wait_until_ready(address).await;
    assert!(gateway.log_text().contains("AUTHENTICATION IS OFF"), "open mode is announced loudly");

    let http = reqwest::Client::new();
    let customer = seed_shop(&http, address).await;
    let place = "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { status orderId } }";
    let placed =
        graphql_at(&http, address, place, json!({ "input": { "customerId": customer, "items": items() } })).await;
    assert_eq!(placed["data"]["placeOrder"]["status"], "ACCEPTED", "{placed}");
    let order_id = placed["data"]["placeOrder"]["orderId"].as_str().expect("order id").to_string();

    let mut subscription = Subscription::start(
        address,
        "subscription($id: ID!) { orderUpdated(id: $id) { status version } }",
        json!({ "id": order_id }),
    )
    .await;
    subscription.next_data_until("CONFIRMED", |data| data["orderUpdated"]["status"] == "CONFIRMED").await;
    let query = graphql_at(
        &http,
        address,
        "query($id: ID!) { order(id: $id) { status totalCents } }",
        json!({ "id": order_id }),
    )
    .await;
    assert_eq!(query["data"]["order"], json!({ "status": "CONFIRMED", "totalCents": 2800 }));

    let cancel = "mutation($id: ID!) { cancelOrder(input: { orderId: $id, reason: \"processes\" }) { status } }";
    let cancelled = graphql_at(&http, address, cancel, json!({ "id": order_id })).await;
    assert_eq!(cancelled["data"]["cancelOrder"]["status"], "ACCEPTED", "{cancelled}");
    let update = subscription.next_data_until("CANCELLED", |data| data["orderUpdated"]["status"] == "CANCELLED").await;
    assert_eq!(update["orderUpdated"]["version"], 3);

    for process in [&mut gateway, &mut read_side, &mut write_side] {
        process.signal("TERM");
        let status = process.wait_exit();
        assert!(status.success(), "clean exit on SIGTERM, got {status}; log:\n{}", process.log_text());
    }
}

#[tokio::test]
async fn unreachable_infrastructure_fails_fast_with_one_clear_line() {
    let isolation = Isolation::new(Backend::Server).await;
    let mut env = server_env(&isolation);
    env[0].1 = "nats://127.0.0.1:1".into();
    let mut no_nats = Conveyor::start(&["gateway"], &env);
    assert!(!no_nats.wait_exit().success());
    let log = no_nats.log_text();
    assert!(log.lines().any(|line| line.starts_with("conveyor: cannot reach NATS at nats://127.0.0.1:1")), "{log}");

    let mut env = server_env(&isolation);
    env[1].1 = "postgres://postgres:hunter2@127.0.0.1:1/nothing".into();
    let mut no_database = Conveyor::start(&["write-side"], &env);
    assert!(!no_database.wait_exit().success());
    let log = no_database.log_text();
    assert!(log.lines().any(|line| line.starts_with("conveyor: cannot reach the database at")), "{log}");
    assert!(!log.contains("hunter2"), "the password is never printed: {log}");
}

#[tokio::test]
async fn embedded_mode_refuses_a_taken_port_and_an_unusable_data_dir() {
    let dir = std::env::temp_dir().join(format!("conveyor-test-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("address").to_string();
    let data_dir = dir.join("data").display().to_string();
    let mut busy = Conveyor::start(&["--listen", &port, "--data-dir", &data_dir], &[]);
    assert!(!busy.wait_exit().success());
    assert!(
        busy.log_text().lines().any(|line| line.starts_with(&format!("conveyor: cannot listen on {port}"))),
        "{}",
        busy.log_text()
    );

    let file = dir.join("a-file");
    std::fs::write(&file, b"not a directory").expect("write file");
    let under_file = file.join("data").display().to_string();
    let mut unusable = Conveyor::start(&["--listen", "127.0.0.1:0", "--data-dir", &under_file], &[]);
    assert!(!unusable.wait_exit().success());
    assert!(
        unusable.log_text().lines().any(|line| line.starts_with("conveyor: cannot create the data directory")),
        "{}",
        unusable.log_text()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Places orders from several clients until stopped; returns the ids whose
/// mutation answered ACCEPTED.
/// Places orders from several clients until stopped or the server goes;
/// records the ids whose mutation answered ACCEPTED in `accepted`.
async fn place_until_stopped(address: SocketAddr, stop: CancellationToken, accepted: Arc<Mutex<Vec<String>>>) {
    let clients = (0..4).map(|_| {
        let (accepted, stop) = (accepted.clone(), stop.clone());
        async move {
            let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
            let place = "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { status orderId } }";
            while !stop.is_cancelled() {
                let body =
                    json!({ "query": place, "variables": { "input": { "customerId": customer(), "items": items() } } });
                let Ok(response) = http.post(format!("http://{address}/graphql")).json(&body).send().await else {
                    break;
                };
                let Ok(answer) = response.json::<Value>().await else { break };
                if answer["data"]["placeOrder"]["status"] == "ACCEPTED" {
                    let id = answer["data"]["placeOrder"]["orderId"].as_str().expect("order id").to_string();
                    accepted.lock().expect("lock").push(id);
                }
            }
        }
    });
    futures::future::join_all(clients).await;
}

async fn every_accepted_order_survives_a_kill(signal: &str) {
    let isolation = Isolation::new(Backend::Embedded).await;
    let data_dir = isolation.data_dir.clone().expect("data dir").display().to_string();
    let args = ["--listen", "127.0.0.1:0", "--data-dir", data_dir.as_str()];
    let mut first = Conveyor::start(&args, &[]);
    let address = first.graphql_address();
    wait_until_ready(address).await;

    let stop = CancellationToken::new();
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let load = tokio::spawn(place_until_stopped(address, stop.clone(), accepted.clone()));
    // Kill mid-load, once a good number of orders were accepted.
    let deadline = tokio::time::Instant::now() + WAIT;
    while accepted.lock().expect("lock").len() < 100 {
        assert!(tokio::time::Instant::now() < deadline, "load never reached 100 accepted orders");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.signal(signal);
    load.await.expect("load task");
    stop.cancel();
    first.wait_exit();
    let accepted = accepted.lock().expect("lock").clone();

    let second = Conveyor::start(&args, &[]);
    let address = second.graphql_address();
    wait_until_ready(address).await;
    let http = reqwest::Client::new();
    for id in &accepted {
        // Every accepted order is there and its saga finishes (resumed after the kill).
        let order = wait_final(&http, address, id).await;
        assert_eq!(order["rejectionCode"], "CUSTOMER_NOT_FOUND", "order {id} after {signal}: {order}");
    }
    // The restarted process keeps serving, and its views match a replay of the store.
    let placed = graphql_at(
        &http,
        address,
        "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { status orderId } }",
        json!({ "input": { "customerId": customer(), "items": items() } }),
    )
    .await;
    assert_eq!(placed["data"]["placeOrder"]["status"], "ACCEPTED");
    let id = placed["data"]["placeOrder"]["orderId"].as_str().expect("order id").to_string();
    wait_final(&http, address, &id).await;
    drop(second);
    assert_views_match_a_replay(Path::new(&data_dir)).await;
}

/// Polls an order until its transaction has ended; returns it.
pub(crate) async fn wait_final(http: &reqwest::Client, address: SocketAddr, id: &str) -> Value {
    let query = "query($id: ID!) { order(id: $id) { id status rejectionCode paymentStatus stockStatus } }";
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let answer = graphql_at(http, address, query, json!({ "id": id })).await;
        let order = &answer["data"]["order"];
        if is_final(order) {
            return order.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "order {id} never reached a final state: {answer}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Adds the catalog [`items`] orders from and a customer with a generous limit.
pub(crate) async fn seed_shop(http: &reqwest::Client, address: SocketAddr) -> String {
    for (sku, price) in [("book-1", 1250), ("pen-9", 300)] {
        let add = "mutation($sku: String!, $price: Int!) { addProduct(input: { sku: $sku, name: $sku, priceCents: $price, initialStock: 100000 }) { status } }";
        let answer = graphql_at(http, address, add, json!({ "sku": sku, "price": price })).await;
        assert_eq!(answer["data"]["addProduct"]["status"], "ACCEPTED", "{answer}");
    }
    let register = "mutation($email: String!) { registerCustomer(input: { name: \"Ada\", email: $email, creditLimitCents: 100000000 }) { status customerId } }";
    let email = format!("ada-{}@example.com", uuid::Uuid::now_v7());
    let answer = graphql_at(http, address, register, json!({ "email": email })).await;
    assert_eq!(answer["data"]["registerCustomer"]["status"], "ACCEPTED", "{answer}");
    answer["data"]["registerCustomer"]["customerId"].as_str().expect("customer id").to_string()
}

async fn assert_views_match_a_replay(data_dir: &Path) {
    let isolation = Isolation {
        backend: Backend::Embedded,
        namespace: String::new(),
        database: None,
        data_dir: Some(data_dir.to_path_buf()),
    };
    let (events, views) = isolation.pools().await;
    let store = write_side::SqlEventStore::new(events);
    crate::helpers::assert_views_match_a_replay(&store, &read_side::ViewStore::new(views)).await;
    // The isolation only borrowed the directory; its owner removes it.
    std::mem::forget(isolation);
}

#[tokio::test]
async fn every_accepted_order_survives_sigkill_of_the_embedded_process() {
    every_accepted_order_survives_a_kill("KILL").await;
}

#[tokio::test]
async fn every_accepted_order_survives_sigint_of_the_embedded_process() {
    every_accepted_order_survives_a_kill("INT").await;
}

#[tokio::test]
async fn a_poison_command_is_dead_lettered_with_its_reason_and_the_system_goes_on() {
    let app = TestApp::spawn(Backend::Server).await;
    let namespace = app.isolation.namespace.clone();
    let client = crate::helpers::nats_client().await;
    let mut dead_letters = client.subscribe(format!("{namespace}.dlq.write-side")).await.expect("subscribe");
    let js = async_nats::jetstream::new(client.clone());
    js.publish(format!("{namespace}.cmd.order.PlaceOrder"), "{not json".into())
        .await
        .expect("publish")
        .await
        .expect("stored");

    let dead =
        tokio::time::timeout(WAIT, dead_letters.next()).await.expect("a dead letter in time").expect("a message");
    assert_eq!(dead.payload.as_ref(), b"{not json");
    let reason = dead
        .headers
        .as_ref()
        .and_then(|headers| headers.get("Conveyor-Dead-Letter-Reason"))
        .map(|value| value.to_string());
    assert!(reason.as_deref().is_some_and(|reason| reason.contains("not a command envelope")), "{reason:?}");

    let placed = app.place_order(&customer(), items(), None).await;
    assert_eq!(placed["status"], "ACCEPTED", "the write side is still serving: {placed}");
    let order_id = placed["orderId"].as_str().expect("order id");
    assert_eq!(app.count_events("order", order_id, "OrderPlaced").await, 1);
}

#[tokio::test]
async fn sagas_finish_exactly_once_after_the_write_side_is_killed_mid_flight() {
    let isolation = Isolation::new(Backend::Server).await;
    let mut env = server_env(&isolation);
    // Slow payments keep sagas in flight; a short ack wait brings the
    // commands the dead process held back quickly.
    env.push(("CONVEYOR_PAYMENT_LATENCY", "150ms".into()));
    env.push(("CONVEYOR_COMMAND_ACK_WAIT", "2s".into()));
    env.push(("CONVEYOR_SAGA_STEP_TIMEOUT", "1s".into()));
    let read_side = Conveyor::start(&["read-side"], &env);
    let gateway = Conveyor::start(&["gateway"], &env);
    let mut write_side = Conveyor::start(&["write-side"], &env);
    write_side.wait_for_line("order saga running");
    read_side.wait_for_line("projector running");
    let address = gateway.graphql_address();
    wait_until_ready(address).await;
    let http = reqwest::Client::new();
    let customer = seed_shop(&http, address).await;

    let place = "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { status orderId } }";
    let placed = futures::future::join_all((0..30).map(|_| {
        let (http, customer) = (&http, &customer);
        async move {
            let input = json!({ "customerId": customer, "items": [{ "sku": "book-1", "quantity": 1 }, { "sku": "pen-9", "quantity": 2 }] });
            graphql_at(http, address, place, json!({ "input": input })).await
        }
    }))
    .await;
    let ids: Vec<String> = placed
        .iter()
        .map(|answer| {
            assert_eq!(answer["data"]["placeOrder"]["status"], "ACCEPTED", "{answer}");
            answer["data"]["placeOrder"]["orderId"].as_str().expect("order id").to_string()
        })
        .collect();
    // Kill it while sagas are mid-flight (payments take 150 ms each).
    write_side.signal("KILL");
    write_side.wait_exit();
    let pending = count_pending(&http, address, &ids).await;
    let restarted = Conveyor::start(&["write-side"], &env);
    restarted.wait_for_line("order saga running");

    for id in &ids {
        let order = wait_final(&http, address, id).await;
        assert_eq!(order["status"], "CONFIRMED", "{order}");
    }
    let (store, _) = isolation.stores().await;
    for id in &ids {
        let payments = EventLog::read_stream(&store, "payment", id, 1, u64::MAX).await.expect("payments");
        let authorized = payments.iter().filter(|event| event.type_name == "PaymentAuthorized").count();
        assert_eq!(authorized, 1, "order {id} authorized {authorized} times");
    }
    for sku in ["book-1", "pen-9"] {
        let events = EventLog::read_stream(&store, "product", sku, 1, u64::MAX).await.expect("product events");
        let mut reservations = std::collections::HashMap::new();
        for event in events.iter().filter(|event| event.type_name == "StockReserved") {
            *reservations.entry(event.payload["order_id"].to_string()).or_insert(0) += 1;
        }
        assert_eq!(reservations.len(), ids.len(), "{sku}: one reservation per order");
        assert!(reservations.values().all(|count| *count == 1), "{sku}: no unit reserved twice");
    }
    eprintln!("{pending} of {} orders were still pending when the write side was killed", ids.len());
}

async fn count_pending(http: &reqwest::Client, address: SocketAddr, ids: &[String]) -> usize {
    let mut pending = 0;
    for id in ids {
        let answer =
            graphql_at(http, address, "query($id: ID!) { order(id: $id) { status } }", json!({ "id": id })).await;
        if answer["data"]["order"]["status"] != "CONFIRMED" {
            pending += 1;
        }
    }
    pending
}

#[test]
fn conveyor_token_signs_what_the_gateway_verifies() {
    let secret = "a-test-secret-of-32-bytes-length";
    let output = Command::new(env!("CARGO_BIN_EXE_conveyor"))
        .args(["token", "--role", "customer", "--sub", "c-42", "--jwt-secret", secret])
        .output()
        .expect("conveyor token runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8(output.stdout).expect("utf-8");
    let auth = gateway::Authenticator::hs256(secret.as_bytes()).expect("key");
    let caller = auth.caller(Some(&format!("Bearer {}", token.trim()))).expect("verifies");
    assert_eq!(caller, gateway::Caller::Authenticated { role: gateway::Role::Customer, subject: "c-42".into() });

    // With an issuer and an audience configured, the token carries both.
    let output = Command::new(env!("CARGO_BIN_EXE_conveyor"))
        .args(["token", "--role", "admin", "--jwt-secret", secret])
        .args(["--jwt-issuer", "https://id.example.com", "--jwt-audience", "conveyor"])
        .output()
        .expect("conveyor token runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let claims =
        gateway::auth::TokenClaims { issuer: Some("https://id.example.com".into()), audience: Some("conveyor".into()) };
    let strict = gateway::Authenticator::hs256(secret.as_bytes()).expect("key").with_claims(&claims);
    let token = String::from_utf8(output.stdout).expect("utf-8");
    assert!(strict.caller(Some(&format!("Bearer {}", token.trim()))).is_ok(), "carries iss and aud");

    let short = Command::new(env!("CARGO_BIN_EXE_conveyor"))
        .args(["token", "--role", "admin", "--jwt-secret", "sixteen-byte-key"])
        .output()
        .expect("conveyor token runs");
    assert!(!short.status.success(), "a 16-byte secret signs nothing");
    assert!(String::from_utf8_lossy(&short.stderr).contains("32 bytes"), "a clear line about the length");

    let no_sub = Command::new(env!("CARGO_BIN_EXE_conveyor"))
        .args(["token", "--role", "customer", "--jwt-secret", secret])
        .output()
        .expect("conveyor token runs");
    assert!(!no_sub.status.success());
    assert!(String::from_utf8_lossy(&no_sub.stderr).contains("--sub"), "a clear line about --sub");
    let no_secret = Command::new(env!("CARGO_BIN_EXE_conveyor"))
        .args(["token", "--role", "admin"])
        .env_remove("CONVEYOR_JWT_SECRET")
        .output()
        .expect("conveyor token runs");
    assert!(!no_secret.status.success());
}

#[tokio::test]
async fn a_request_past_the_timeout_is_answered_408() {
    // A gateway alone: the command it publishes has no write side to decide
    // it, so the mutation would wait its full 10 s bound; the request timeout
    // (300 ms) answers first.
    let isolation = Isolation::new(Backend::Server).await;
    let mut env = server_env(&isolation);
    env.push(("CONVEYOR_REQUEST_TIMEOUT", "300ms".into()));
    env.push(("CONVEYOR_MUTATION_WAIT", "10s".into()));
    let gateway = Conveyor::start(&["gateway"], &env);
    let address = gateway.graphql_address();
    wait_until_ready(address).await;
    let http = reqwest::Client::new();
    let place = json!({
        "query": "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { status } }",
        "variables": { "input": { "customerId": customer(), "items": items() } },
    });
    let response = http.post(format!("http://{address}/graphql")).json(&place).send().await.expect("answers");
    assert_eq!(response.status().as_u16(), 408);
}
