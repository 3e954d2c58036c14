//! Traces of the real binary (`OTEL_EXPORTER_OTLP_ENDPOINT`): an in-process
//! OTLP/HTTP receiver takes the spans a `conveyor` process exports, and one
//! order must be one connected trace — the GraphQL mutation, the command
//! sent, its handler and its append to the event store, the saga's drive and
//! steps, the projector, and (server backend) the push to the order's
//! subscriber; and JSON log lines written inside the order's hops name its
//! trace.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;
use serde_json::json;

use crate::helpers::{Backend, Isolation, Subscription, WAIT, graphql_at, items};
use crate::processes::{Conveyor, seed_shop, server_env, wait_until_ready};

/// Every span exported to the receiver so far.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Span>>>);

impl Received {
    fn spans(&self) -> Vec<Span> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

/// An OTLP/HTTP (protobuf) trace receiver on a free port.
async fn receiver() -> (SocketAddr, Received) {
    let received = Received::default();
    let keep = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let keep = keep.clone();
            async move {
                let Ok(request) = ExportTraceServiceRequest::decode(body) else {
                    return (StatusCode::BAD_REQUEST, "not an ExportTraceServiceRequest").into_response();
                };
                let spans = request.resource_spans.into_iter().flat_map(|resource| resource.scope_spans);
                keep.0
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .extend(spans.flat_map(|scope| scope.spans));
                let answer = ExportTraceServiceResponse::default().encode_to_vec();
                ([(header::CONTENT_TYPE, "application/x-protobuf")], answer).into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the receiver");
    let address = listener.local_addr().expect("an address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, received)
}

fn attribute<'s>(span: &'s Span, key: &str) -> Option<&'s str> {
    span.attributes.iter().find(|attribute| attribute.key == key).and_then(|attribute| {
        match attribute.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(value) => Some(value.as_str()),
            _ => None,
        }
    })
}

/// The spans that must be in an order's trace, by name: every hop up to
/// the view, then the push.
const HOPS: &[&str] = &[
    "send cmd.order.PlaceOrder",
    "process cmd.order.PlaceOrder",
    "append events",
    "process evt.order",
    "process cmd.product.ReserveStock",
    "process cmd.payment.AuthorizePayment",
    "process cmd.order.ConfirmOrder",
];

/// The push to the order's subscriber. Required on the server backend; in
/// embedded mode it went missing from the trace in about one full-suite run
/// in three (crowded machine; cause not found yet, see docs/operations.md,
/// "Traces"), so there it is not required.
const PUSH: &str = "process changed.orders";

/// Waits until the order's trace (the one its `send` span is in) has every
/// hop, then checks that it is one tree under the GraphQL mutation; returns
/// its trace id in hex.
async fn assert_one_connected_trace(
    received: &Received,
    messaging_system: &str,
    command_id: &str,
    hops: &[&str],
) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    let trace = loop {
        let spans = received.spans();
        let sent = spans.iter().find(|span| {
            span.name == "send cmd.order.PlaceOrder" && attribute(span, "messaging.message.id") == Some(command_id)
        });
        let trace: Vec<Span> = match sent {
            Some(sent) => spans.iter().filter(|span| span.trace_id == sent.trace_id).cloned().collect(),
            None => Vec::new(),
        };
        let names: HashSet<&str> = trace.iter().map(|span| span.name.as_str()).collect();
        // A span is exported when it ends: a parent (the saga's drive) may
        // come after its children.
        let ids: HashSet<&[u8]> = trace.iter().map(|span| span.span_id.as_slice()).collect();
        let orphans: Vec<&str> = trace
            .iter()
            .filter(|span| !span.parent_span_id.is_empty() && !ids.contains(span.parent_span_id.as_slice()))
            .map(|span| span.name.as_str())
            .collect();
        if hops.iter().all(|hop| names.contains(hop)) && orphans.is_empty() {
            break trace;
        }
        let all: Vec<&str> = spans.iter().map(|span| span.name.as_str()).collect();
        assert!(
            tokio::time::Instant::now() < deadline,
            "the order's trace never had every hop {hops:?} with every parent; it has {names:?}, \
             spans whose parent never came: {orphans:?}; all spans received: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let roots: Vec<&Span> = trace.iter().filter(|span| span.parent_span_id.is_empty()).collect();
    let names: Vec<&str> = roots.iter().map(|span| span.name.as_str()).collect();
    assert_eq!(roots.len(), 1, "one root in the order's trace: {names:?}");
    let root = roots[0];
    assert!(root.name.starts_with("mutation"), "the root is the GraphQL mutation: {}", root.name);
    assert_eq!(root.kind, SpanKind::Server as i32, "the GraphQL span is the server's");
    assert_eq!(attribute(root, "graphql.operation.type"), Some("mutation"));
    assert!(attribute(root, "graphql.document").is_some_and(|document| document.contains("placeOrder")));
    let handler = trace.iter().find(|span| span.name == "process cmd.order.PlaceOrder").expect("the handler's span");
    assert_eq!(handler.kind, SpanKind::Consumer as i32);
    assert_eq!(attribute(handler, "messaging.system"), Some(messaging_system));
    assert_eq!(attribute(handler, "messaging.operation.type"), Some("process"));
    assert_eq!(attribute(handler, "messaging.destination.name"), Some("cmd.order.PlaceOrder"));
    let sent = trace.iter().find(|span| span.name == "send cmd.order.PlaceOrder").expect("the send span");
    assert_eq!(sent.kind, SpanKind::Producer as i32);
    assert_eq!(handler.parent_span_id, sent.span_id, "the handler follows the command it was sent");
    let appended = trace
        .iter()
        .find(|span| span.name == "append events" && span.parent_span_id == handler.span_id)
        .expect("the handler's append to the event store");
    assert_eq!(appended.kind, SpanKind::Client as i32);
    assert_eq!(attribute(appended, "db.collection.name"), Some("events"));
    root.trace_id.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Places an order whose payment takes a while and follows it from PENDING
/// to CONFIRMED, so that its confirmation reaches the subscriber as a pushed
/// change (an order already confirmed when the subscription starts would
/// arrive as the first read: on a crowded machine, another order is
/// placed). Returns the placing command's id.
async fn confirmed_order_followed(gateway: SocketAddr) -> String {
    let http = reqwest::Client::new();
    let customer = seed_shop(&http, gateway).await;
    let place = "mutation Place($input: PlaceOrderInput!) { placeOrder(input: $input) { status orderId commandId } }";
    for _ in 0..5 {
        let placed =
            graphql_at(&http, gateway, place, json!({ "input": { "customerId": customer, "items": items() } })).await;
        assert_eq!(placed["data"]["placeOrder"]["status"], "ACCEPTED", "{placed}");
        let order_id = placed["data"]["placeOrder"]["orderId"].as_str().expect("order id").to_string();
        let command_id = placed["data"]["placeOrder"]["commandId"].as_str().expect("command id").to_string();
        let mut subscription = Subscription::start(
            gateway,
            "subscription($id: ID!) { orderUpdated(id: $id) { status } }",
            json!({ "id": order_id }),
        )
        .await;
        let first = subscription.next_data().await;
        if first["orderUpdated"]["status"] == "CONFIRMED" {
            continue;
        }
        subscription.next_data_until("CONFIRMED", |data| data["orderUpdated"]["status"] == "CONFIRMED").await;
        return command_id;
    }
    panic!("five orders were confirmed before their subscriptions started");
}

fn tracing_env(receiver: SocketAddr) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{receiver}")),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        // The order is confirmed after its subscriber has subscribed.
        ("CONVEYOR_PAYMENT_LATENCY", "1s".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_embedded_order_is_one_connected_trace_from_the_mutation_to_the_view() {
    let (address, received) = receiver().await;
    let isolation = Isolation::new(Backend::Embedded).await;
    let data_dir = isolation.data_dir.clone().expect("a data directory").display().to_string();
    // JSON logs, with the statements (debug) the hops run.
    let mut env = tracing_env(address);
    env.push(("RUST_LOG", "info,sqlx::query=debug".into()));
    let args = ["--listen", "127.0.0.1:0", "--data-dir", data_dir.as_str(), "--log-format", "json"];
    let embedded = Conveyor::start(&args, &env);
    let gateway = embedded.graphql_address();
    wait_until_ready(gateway).await;
    let command_id = confirmed_order_followed(gateway).await;
    let trace_id = assert_one_connected_trace(&received, "conveyor", &command_id, HOPS).await;
    let marker = format!("\"trace_id\":\"{trace_id}\"");
    let logs = embedded.log_text();
    assert!(logs.lines().any(|line| line.contains(&marker)), "no JSON log line names the order's trace {trace_id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_order_is_one_connected_trace_across_nats() {
    let (address, received) = receiver().await;
    let isolation = Isolation::new(Backend::Server).await;
    let mut env = server_env(&isolation);
    env.extend(tracing_env(address));
    let all = Conveyor::start(&["all"], &env);
    let gateway = all.graphql_address();
    wait_until_ready(gateway).await;
    let command_id = confirmed_order_followed(gateway).await;
    let _ = assert_one_connected_trace(&received, "nats", &command_id, &[HOPS, &[PUSH]].concat()).await;
}
