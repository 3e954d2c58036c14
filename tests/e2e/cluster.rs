//! The server path on a 3-node NATS JetStream cluster (three local
//! nats-server processes routed together, configured from
//! `deploy/nats/cluster-node.conf`), with R3 streams: killing the node that
//! leads the commands stream in the middle of a run of orders loses none and
//! doubles none. And `deploy/compose.yaml` uses what is tested here: its NATS
//! nodes are that template rendered, its variables are ones Conveyor reads.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::helpers::{Backend, Isolation, WAIT, graphql_at, items};
use crate::processes::{Conveyor, seed_shop, server_env, wait_until_ready};

/// Orders placed, how many at once, and after how many decided answers the
/// leader is killed.
const ORDERS: usize = 30;
const CLIENTS: usize = 6;
const KILL_AFTER: usize = 10;
/// Failover (leader election, redelivery after the write side's ack wait)
/// takes seconds; each order gets this long to be decided and confirmed.
const ORDER_WAIT: Duration = Duration::from_secs(90);

struct Node {
    name: String,
    port: u16,
    child: Child,
    store: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("bound").port()
}

/// The pinned nats-server (scripts/nats-server installs it when missing).
fn nats_server() -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/nats-server");
    let output = Command::new(script).output().expect("scripts/nats-server runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("a path").trim().to_owned()
}

const TEMPLATE: &str = include_str!("../../deploy/nats/cluster-node.conf");

/// One node's configuration from the template.
fn render(name: &str, host: &str, port: u16, cluster_port: u16, store: &str, routes: &[String]) -> String {
    TEMPLATE
        .replace("{{NAME}}", name)
        .replace("{{HOST}}", host)
        .replace("{{PORT}}", &port.to_string())
        .replace("{{CLUSTER_PORT}}", &cluster_port.to_string())
        .replace("{{STORE}}", store)
        .replace("{{ROUTES}}", &routes.join("\n    "))
}

/// Three nodes on free ports, routed to each other.
fn start_cluster() -> Vec<Node> {
    let binary = nats_server();
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let routes: Vec<String> = ports.iter().map(|(_, cluster)| format!("nats-route://127.0.0.1:{cluster}")).collect();
    let run = uuid::Uuid::now_v7().simple().to_string();
    ports
        .iter()
        .enumerate()
        .map(|(index, (port, cluster_port))| {
            let name = format!("n{}", index + 1);
            let store = std::env::temp_dir().join(format!("conveyor-cluster-{run}-{name}"));
            std::fs::create_dir_all(&store).expect("store directory");
            let config = render(&name, "127.0.0.1", *port, *cluster_port, &store.display().to_string(), &routes);
            let path = store.join("node.conf");
            std::fs::write(&path, config).expect("node config");
            let log = std::fs::File::create(store.join("node.log")).expect("node log");
            let child = Command::new(&binary)
                .arg("-c")
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("nats-server starts");
            Node { name, port: *port, child, store }
        })
        .collect()
}

fn urls(nodes: &[Node]) -> String {
    nodes.iter().map(|node| format!("nats://127.0.0.1:{}", node.port)).collect::<Vec<_>>().join(",")
}

/// What the nodes logged, for a failure message.
fn logs(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|node| {
            let log = std::fs::read_to_string(node.store.join("node.log")).unwrap_or_default();
            format!("--- {} ---\n{log}", node.name)
        })
        .collect()
}

/// Waits until every node listens and the cluster has a JetStream meta
/// leader: an R3 stream can be created and removed.
async fn wait_for_jetstream(nodes: &[Node]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let client = loop {
        let mut connected = Vec::new();
        for node in nodes {
            match async_nats::connect(format!("nats://127.0.0.1:{}", node.port)).await {
                Ok(client) => connected.push(client),
                Err(_) => break,
            }
        }
        if connected.len() == nodes.len() {
            break connected.swap_remove(0);
        }
        assert!(tokio::time::Instant::now() < deadline, "the nodes never listened:\n{}", logs(nodes));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let js = async_nats::jetstream::new(client);
    let name = format!("probe_{}", uuid::Uuid::now_v7().simple());
    loop {
        let config = async_nats::jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![format!("{name}.>")],
            num_replicas: 3,
            ..Default::default()
        };
        if js.create_stream(config).await.is_ok() {
            let _ = js.delete_stream(&name).await;
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "no JetStream leader was elected:\n{}", logs(nodes));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The node leading `stream` now.
async fn leader_of(urls: &str, stream: &str) -> String {
    let auth = schema::nats::NatsAuth::default();
    let client = schema::nats::connect(urls, "cluster-test", &auth).await.expect("the cluster answers");
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(stream).await.expect("the stream exists");
    let info = stream.info().await.expect("stream info");
    info.cluster.as_ref().and_then(|cluster| cluster.leader.clone()).expect("an R3 stream has a leader")
}

/// Places one order under `key` until it gets a decided answer (ACCEPTED or
/// REJECTED), retrying errors and PENDING with the same key, as a client
/// should. Returns the order id.
async fn place_until_decided(
    http: &reqwest::Client,
    gateway: std::net::SocketAddr,
    customer: &str,
    key: &str,
) -> String {
    let place = "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { status orderId } }";
    let input = json!({ "input": { "customerId": customer, "items": items(), "idempotencyKey": key } });
    let deadline = tokio::time::Instant::now() + ORDER_WAIT;
    loop {
        // A connection lost mid-request (the machine is crowded while a
        // node fails over) is retried with the same key, as a client would.
        let sent = http.post(format!("http://{gateway}/graphql")).json(&json!({ "query": place, "variables": input }));
        let answer: Value = match sent.send().await {
            Ok(response) => response.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        let placed = &answer["data"]["placeOrder"];
        match placed["status"].as_str() {
            Some("ACCEPTED") => return placed["orderId"].as_str().expect("an order id").to_owned(),
            Some("REJECTED") => panic!("order {key} rejected: {answer}"),
            _ => {}
        }
        assert!(tokio::time::Instant::now() < deadline, "order {key} never decided; last answer {answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_for_final(http: &reqwest::Client, gateway: std::net::SocketAddr, order_id: &str) -> Value {
    let query = "query($id: ID!) { order(id: $id) { status } }";
    let deadline = tokio::time::Instant::now() + ORDER_WAIT;
    loop {
        let answer = graphql_at(http, gateway, query, json!({ "id": order_id })).await;
        let status = &answer["data"]["order"]["status"];
        if status.is_string() && status != "PENDING" {
            return status.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "order {order_id} never finished; last answer {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_commands_leader_of_a_three_node_cluster_loses_no_order_and_doubles_none() {
    let mut nodes = start_cluster();
    let urls = urls(&nodes);
    wait_for_jetstream(&nodes).await;

    let isolation = Isolation::new(Backend::Server).await;
    let mut env: Vec<(&str, String)> =
        server_env(&isolation).into_iter().filter(|(key, _)| *key != "NATS_URL").collect();
    env.push(("NATS_URL", urls.clone()));
    env.push(("CONVEYOR_STREAM_REPLICAS", "3".into()));
    let conveyor = Conveyor::start(&["all"], &env);
    let gateway = conveyor.graphql_address();
    wait_until_ready(gateway).await;
    let http = reqwest::Client::new();
    let customer = seed_shop(&http, gateway).await;

    // Orders from several clients at once; the leader dies part-way.
    let decided = Arc::new(AtomicUsize::new(0));
    let run = uuid::Uuid::now_v7().simple().to_string();
    let load = {
        let (http, customer, decided) = (http.clone(), customer.clone(), decided.clone());
        tokio::spawn(async move {
            futures::stream::iter(0..ORDERS)
                .map(|n| {
                    let (http, customer, decided, key) =
                        (http.clone(), customer.clone(), decided.clone(), format!("cluster-{run}-{n}"));
                    async move {
                        let id = place_until_decided(&http, gateway, &customer, &key).await;
                        decided.fetch_add(1, Ordering::SeqCst);
                        (key, id)
                    }
                })
                .buffer_unordered(CLIENTS)
                .collect::<Vec<_>>()
                .await
        })
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while decided.load(Ordering::SeqCst) < KILL_AFTER {
        assert!(tokio::time::Instant::now() < deadline, "orders were not being decided before the kill");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let commands = format!("{}_COMMANDS", isolation.namespace);
    let leader = leader_of(&urls, &commands).await;
    let victim = nodes.iter().position(|node| node.name == leader).expect("the leader is one of the nodes");
    drop(nodes.remove(victim));
    let at_kill = decided.load(Ordering::SeqCst);
    assert!(at_kill < ORDERS, "the leader died while orders were still being placed ({at_kill} decided)");

    let placed = load.await.expect("the load completes");
    let ids: HashMap<String, String> = placed.into_iter().collect();
    assert_eq!(ids.len(), ORDERS, "every key got an order");
    let distinct: std::collections::HashSet<&String> = ids.values().collect();
    assert_eq!(distinct.len(), ORDERS, "one order per key");
    for id in ids.values() {
        assert_eq!(wait_for_final(&http, gateway, id).await, "CONFIRMED", "order {id}");
    }

    // Nothing doubled: one OrderPlaced per key, and no order beside them.
    let (store, _) = isolation.pools().await;
    let counts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT aggregate_id, COUNT(*) FROM events WHERE type_name = 'OrderPlaced' GROUP BY aggregate_id",
    )
    .fetch_all(&store)
    .await
    .expect("events");
    assert_eq!(counts.len(), ORDERS, "as many orders in the store as keys: {counts:?}");
    assert!(counts.iter().all(|(_, count)| *count == 1), "each placed once: {counts:?}");
}

#[test]
fn the_compose_files_nats_nodes_are_the_tested_template_rendered() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let routes: Vec<String> = (1..=3).map(|n| format!("nats-route://n{n}:6222")).collect();
    for n in 1..=3 {
        let path = root.join(format!("deploy/nats/n{n}.conf"));
        let file = std::fs::read_to_string(&path).expect("deploy/nats/nN.conf");
        let rendered = render(&format!("n{n}"), "0.0.0.0", 4222, 6222, "/data", &routes);
        assert!(
            file.ends_with(&rendered),
            "{} must be deploy/nats/cluster-node.conf rendered for n{n}",
            path.display()
        );
        let compose = std::fs::read_to_string(root.join("deploy/compose.yaml")).expect("deploy/compose.yaml");
        assert!(compose.contains(&format!("./nats/n{n}.conf:/etc/nats/node.conf")), "compose.yaml mounts n{n}.conf");
    }
}

#[test]
fn every_variable_the_compose_file_sets_is_one_conveyor_reads() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let compose = std::fs::read_to_string(root.join("deploy/compose.yaml")).expect("deploy/compose.yaml");
    let help: String = ["gateway", "write-side", "read-side", "migrate"]
        .iter()
        .map(|command| {
            let output = Command::new(env!("CARGO_BIN_EXE_conveyor")).args([command, "--help"]).output().expect("help");
            assert!(output.status.success(), "conveyor {command} --help");
            String::from_utf8_lossy(&output.stdout).into_owned()
        })
        .collect();
    let variables: Vec<&str> = compose
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| line.trim_start().split_once(':').map(|(key, _)| key))
        .filter(|key| ["CONVEYOR_", "NATS_", "DATABASE_"].iter().any(|prefix| key.starts_with(prefix)))
        .collect();
    assert!(variables.len() >= 8, "the compose file's variables were found: {variables:?}");
    for variable in variables {
        assert!(help.contains(&format!("[env: {variable}")), "conveyor reads no {variable} (deploy/compose.yaml)");
    }
}
