//! Fuzzing the edge (issue 11, point 10): random and mutated GraphQL
//! documents and variables over HTTP (POST and GET), and random frames over
//! WebSocket, against a running gateway on each backend. Whatever arrives,
//! the gateway answers in bounded time, with JSON whose every error carries
//! a known `extensions.code`, closes sockets only with the protocol's codes,
//! and is still serving afterwards. A few hundred cases per backend.

use std::net::SocketAddr;

use futures::{SinkExt, StreamExt};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{Backend, TestApp, WAIT};
use crate::websocket_limits::{Socket, init};

crate::on_both_backends!(random_documents_variables_and_frames_get_coded_answers);

/// Valid documents to mutate: every area of the schema, with variables and fragments.
const SEEDS: &[&str] = &[
    "{ products(first: 3) { edges { cursor node { sku name priceCents available } } pageInfo { hasNextPage } } }",
    "query($id: ID!) { order(id: $id) { id status items { sku quantity product { name } } timeline { type } } }",
    "query Q($first: Int) { orders(first: $first) { edges { node { ...O } } } } fragment O on Order { id customer { name } }",
    "mutation($input: AddProductInput!) { addProduct(input: $input) { status error { code } } }",
    "mutation { placeOrder(input: { customerId: \"x\", items: [{ sku: \"a\", quantity: 1, unitPriceCents: 1 }] }) { status } }",
    "subscription { ordersUpdated { id status } }",
    "{ __schema { types { name fields { name } } } __type(name: \"Order\") { name } }",
    "{ customer(id: \"0193a7d0-0000-7000-8000-000000000001\") { name orders(first: 2) { edges { node { id } } } } }",
];

/// Pieces a mutation inserts: GraphQL punctuation, keywords, names and literals.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    ":",
    "$",
    "!",
    "...",
    "@skip(if: true)",
    "@include(if: $x)",
    "query",
    "mutation",
    "subscription",
    "fragment F on Query",
    "on",
    "__typename",
    "__schema",
    "a: ",
    "orders",
    "edges",
    "node",
    "first: 1000",
    "first: -1",
    "\"\\u0000\"",
    "\"",
    "1e309",
    "-0",
    "null",
    "true",
    "#",
    "\n",
    ",",
    "=",
    "ÿ",
    "🦀",
];

#[derive(Debug, Clone)]
enum Document {
    Mutated { seed: usize, edits: Vec<(usize, Edit)> },
    Random(String),
}

#[derive(Debug, Clone)]
enum Edit {
    Insert(usize),
    Delete(usize),
    Duplicate(usize),
}

impl Document {
    fn text(&self) -> String {
        match self {
            Self::Random(text) => text.clone(),
            Self::Mutated { seed, edits } => {
                let mut text: Vec<char> = SEEDS[seed % SEEDS.len()].chars().collect();
                for (at, edit) in edits {
                    let at = at % (text.len() + 1);
                    match edit {
                        Edit::Insert(token) => {
                            let token = TOKENS[token % TOKENS.len()];
                            text.splice(at..at, token.chars());
                        }
                        Edit::Delete(len) => {
                            let end = (at + len).min(text.len());
                            text.drain(at..end);
                        }
                        Edit::Duplicate(len) => {
                            let end = (at + len).min(text.len());
                            let copy: Vec<char> = text[at..end].to_vec();
                            text.splice(at..at, copy);
                        }
                    }
                }
                text.into_iter().collect()
            }
        }
    }
}

fn documents() -> impl Strategy<Value = Document> {
    let edit = prop_oneof![
        any::<usize>().prop_map(Edit::Insert),
        (1usize..20).prop_map(Edit::Delete),
        (1usize..40).prop_map(Edit::Duplicate),
    ];
    prop_oneof![
        3 => (any::<usize>(), prop::collection::vec((any::<usize>(), edit), 0..6))
            .prop_map(|(seed, edits)| Document::Mutated { seed, edits }),
        1 => "[{}()a-z_:$!@.,\"\\[\\] 0-9#\n]{0,120}".prop_map(Document::Random),
    ]
}

/// Names the schema's arguments and inputs use, so random objects often fit them.
const NAMES: &[&str] = &[
    "id",
    "first",
    "input",
    "sku",
    "name",
    "priceCents",
    "initialStock",
    "customerId",
    "items",
    "quantity",
    "unitPriceCents",
    "email",
    "creditLimitCents",
    "orderId",
    "reason",
    "idempotencyKey",
    "consistency",
];

fn names() -> impl Strategy<Value = String> {
    prop_oneof![3 => prop::sample::select(NAMES).prop_map(String::from), 1 => "[a-zA-Z]{1,10}"]
}

/// Variables: mostly an object (as the protocol wants), sometimes anything.
fn variables() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::collection::btree_map(names(), json_values(), 0..4)
            .prop_map(|map| Value::Object(map.into_iter().collect())),
        1 => json_values(),
    ]
}

fn json_values() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[a-zA-Z0-9 \\-]{0,24}".prop_map(Value::from),
        Just(Value::from("0193a7d0-0000-7000-8000-000000000001")),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(names(), inner, 0..5).prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
enum Transport {
    Post,
    Get,
}

#[derive(Debug, Clone)]
enum Frame {
    /// A protocol-shaped message with a random type, id and payload.
    Message {
        kind: usize,
        id: String,
        document: Document,
        variables: Value,
    },
    Text(String),
    Binary(Vec<u8>),
}

/// Message types, `subscribe` the most often (so operations run), and some the protocol forbids.
const KINDS: &[&str] = &[
    "subscribe",
    "subscribe",
    "subscribe",
    "subscribe",
    "complete",
    "ping",
    "pong",
    "connection_init",
    "next",
    "unknown",
];

fn frames() -> impl Strategy<Value = Frame> {
    prop_oneof![
        8 => (any::<usize>(), "[a-z0-9]{0,4}", documents(), variables())
            .prop_map(|(kind, id, document, variables)| Frame::Message { kind, id, document, variables }),
        1 => "\\PC{0,80}".prop_map(Frame::Text),
        1 => prop::collection::vec(any::<u8>(), 0..80).prop_map(Frame::Binary),
    ]
}

fn known_codes() -> Vec<&'static str> {
    let mut known = schema::codes::ALL.to_vec();
    known.extend([gateway::auth::UNAUTHENTICATED, gateway::auth::FORBIDDEN]);
    known
}

/// Every error in `errors` (an array, or absent) has a known code.
fn coded(errors: &Value, known: &[&str]) -> Result<(), TestCaseError> {
    for error in errors.as_array().map(Vec::as_slice).unwrap_or_default() {
        let code = error["extensions"]["code"].as_str().unwrap_or("(none)");
        prop_assert!(known.contains(&code), "an error without a known code: {error}");
    }
    Ok(())
}

async fn over_http(
    address: SocketAddr,
    transport: &Transport,
    document: &str,
    variables: &Value,
) -> Result<String, TestCaseError> {
    let http = reqwest::Client::new();
    let endpoint = format!("http://{address}/graphql");
    let request = match transport {
        Transport::Post => http.post(&endpoint).json(&json!({ "query": document, "variables": variables })),
        Transport::Get => http.get(&endpoint).query(&[("query", document), ("variables", &variables.to_string())]),
    };
    let response = tokio::time::timeout(WAIT, request.send())
        .await
        .map_err(|_| TestCaseError::fail("no answer in time"))?
        .map_err(|error| TestCaseError::fail(format!("the request failed: {error}")))?;
    let status = response.status().as_u16();
    prop_assert!([200, 400, 405, 413].contains(&status), "status {status}");
    let body = response.text().await.map_err(|error| TestCaseError::fail(error.to_string()))?;
    let json: Value = serde_json::from_str(&body).map_err(|_| TestCaseError::fail(format!("not JSON: {body}")))?;
    coded(&json["errors"], &known_codes())?;
    let ran = if json["data"].is_null() { "refused" } else { "ran" };
    Ok(format!("HTTP {status} {ran}"))
}

/// Sends the frames on an acknowledged connection, then reads what comes
/// back until the server has nothing more to say for a moment (or closes).
async fn over_websocket(socket: &mut Socket, frames: &[Frame]) -> Result<String, TestCaseError> {
    let known = known_codes();
    for frame in frames {
        let message = match frame {
            Frame::Message { kind, id, document, variables } => {
                let payload = json!({ "query": document.text(), "variables": variables });
                Message::text(json!({ "type": KINDS[kind % KINDS.len()], "id": id, "payload": payload }).to_string())
            }
            Frame::Text(text) => Message::text(text.clone()),
            Frame::Binary(bytes) => Message::binary(bytes.clone()),
        };
        if socket.send(message).await.is_err() {
            break;
        }
    }
    let quiet = std::time::Duration::from_millis(150);
    loop {
        let Ok(frame) = tokio::time::timeout(quiet, socket.next()).await else { return Ok("WebSocket open".into()) };
        match frame {
            Some(Ok(Message::Text(text))) => {
                let message: Value =
                    serde_json::from_str(&text).map_err(|_| TestCaseError::fail(format!("not JSON: {text}")))?;
                match message["type"].as_str() {
                    Some("error") => coded(&message["payload"], &known)?,
                    Some("next") => coded(&message["payload"]["errors"], &known)?,
                    Some("complete" | "ping" | "pong") => {}
                    other => prop_assert!(false, "an unexpected message {other:?}: {message}"),
                }
            }
            Some(Ok(Message::Close(frame))) => {
                let code = frame.map_or(1005, |frame| u16::from(frame.code));
                prop_assert!([4400, 4401, 4409, 4429, 1009, 1002].contains(&code), "closed with {code}");
                return Ok(format!("WebSocket closed {code}"));
            }
            Some(Ok(_)) => {}
            None | Some(Err(_)) => return Ok("WebSocket dropped".into()),
        }
    }
}

async fn random_documents_variables_and_frames_get_coded_answers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let address = app.address;
    let runtime = tokio::runtime::Handle::current();
    // What the cases came to, printed at the end (`--nocapture`) to see what the fuzz reaches.
    let outcomes = std::sync::Mutex::new(std::collections::BTreeMap::<String, usize>::new());
    let count = |outcome: String| {
        if let Ok(mut outcomes) = outcomes.lock() {
            *outcomes.entry(outcome).or_default() += 1;
        }
    };
    let config = Config { cases: 200, failure_persistence: None, ..Config::default() };

    let requests = (documents(), variables(), prop_oneof![Just(Transport::Post), Just(Transport::Get)]);
    TestRunner::new(config.clone())
        .run(&requests, |(document, variables, transport)| {
            tokio::task::block_in_place(|| {
                runtime.block_on(over_http(address, &transport, &document.text(), &variables)).map(count)
            })
        })
        .unwrap_or_else(|failure| panic!("HTTP: {failure}"));

    let connections = prop::collection::vec(frames(), 1..6);
    TestRunner::new(Config { cases: 80, ..config })
        .run(&connections, |frames| {
            tokio::task::block_in_place(|| {
                runtime.block_on(async {
                    let mut socket =
                        init(address, None).await.map_err(|code| TestCaseError::fail(format!("init: {code}")))?;
                    over_websocket(&mut socket, &frames).await.map(count)
                })
            })
        })
        .unwrap_or_else(|failure| panic!("WebSocket: {failure}"));

    eprintln!(
        "fuzz outcomes ({backend:?}): {:?}",
        outcomes.lock().map(|outcomes| outcomes.clone()).unwrap_or_default()
    );
    // Still serving.
    let answer = app.graphql("{ products(first: 1) { edges { cursor } } }", json!({})).await;
    assert!(answer["errors"].is_null(), "{answer}");
}
