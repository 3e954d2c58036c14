//! `conveyor.v1.EventStore.StreamEvents` (docs/grpc.md, "StreamEvents")
//! driven by the tonic client on both backends: every stored event of the
//! chosen types once and in the store's time order, across the switch from
//! the history to live events while orders are placed; resumed from a
//! position; from now; a reader that stops reading ended with a position
//! it resumes from without a loss; and the statuses of a bad call.

use std::time::Duration;

use conveyor::config::Common;
use futures::future::join_all;
use gateway::grpc::POSITION_METADATA;
use gateway::grpc::proto::event_store_client::EventStoreClient;
use gateway::grpc::proto::orders_client::OrdersClient;
use gateway::grpc::proto::stream_events_request::Start;
use gateway::grpc::proto::{Event, OrderStatus, StreamEventsRequest};
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, Streaming};
use tonic_types::StatusExt;

use crate::grpc::{channel, conveyor_code, place, wait_for};
use crate::helpers::{Backend, Isolation, TestApp, WAIT};

crate::on_both_backends!(
    stream_events_sends_every_event_once_in_order_from_the_store_into_live_ones,
    stream_events_from_now_sends_only_what_happens_after_the_call,
    a_stream_reader_that_stops_reading_is_ended_with_a_position_and_resumes_without_a_loss,
);

/// The settle window the tests run with: longer than their append deadline
/// with room for a COMMIT on a busy test machine.
const SETTLE: Duration = Duration::from_secs(2);

fn streaming(common: &mut Common) {
    common.stream_events.settle = SETTLE;
    common.stream_events.append_deadline = Duration::from_millis(500);
    common.stream_events.poll = Duration::from_millis(100);
}

fn request(types: &[&str], start: Option<Start>) -> StreamEventsRequest {
    StreamEventsRequest { aggregate_types: types.iter().map(|name| name.to_string()).collect(), start }
}

/// The ids of every stored event of `types` (all, when empty), in
/// `(occurred_at, event_id)` order, read with SQL of the test's own.
async fn stored(app: &TestApp, types: &[&str]) -> Vec<String> {
    let (events, _) = app.isolation.pools().await;
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT event_id, aggregate_type FROM events ORDER BY occurred_at, event_id")
            .fetch_all(&events)
            .await
            .expect("the events");
    events.close().await;
    rows.into_iter().filter(|(_, kind)| types.is_empty() || types.contains(&kind.as_str())).map(|(id, _)| id).collect()
}

/// [`stored`], once nothing has been appended for half a second.
async fn quiet(app: &TestApp, types: &[&str]) -> Vec<String> {
    let mut last = stored(app, types).await;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = stored(app, types).await;
        if now == last {
            return now;
        }
        last = now;
    }
}

/// Places `count` orders (eight at a time) and waits until each is decided.
async fn place_decided(orders: &OrdersClient<Channel>, customer: &str, count: usize) -> Vec<String> {
    let mut placed = Vec::new();
    for chunk in (0..count).collect::<Vec<_>>().chunks(8) {
        let calls = chunk.iter().map(|_| {
            let mut orders = orders.clone();
            async move {
                let placed = orders.place_order(place(customer, "")).await.expect("placed").into_inner();
                wait_for(&mut orders, &placed.order_id, "decided", |order| order.status() != OrderStatus::Pending)
                    .await;
                placed.order_id
            }
        });
        placed.extend(join_all(calls).await);
    }
    placed
}

/// Reads a stream in a task of its own, handing each event (or the status
/// that ends it) on, so a test can place orders meanwhile.
fn follow(mut stream: Streaming<Event>) -> mpsc::UnboundedReceiver<Result<Event, Status>> {
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            // A test that drops the receiver ends the call.
            let next = tokio::select! {
                () = sender.closed() => break,
                next = stream.message() => next,
            };
            let next = match next {
                Ok(Some(event)) => Ok(event),
                Ok(None) => break,
                Err(status) => Err(status),
            };
            let ended = next.is_err();
            if sender.send(next).is_err() || ended {
                break;
            }
        }
    });
    receiver
}

/// The next `count` events, within [`WAIT`] each.
async fn take(events: &mut mpsc::UnboundedReceiver<Result<Event, Status>>, count: usize) -> Vec<Event> {
    let mut taken = Vec::with_capacity(count);
    while taken.len() < count {
        let next = tokio::time::timeout(WAIT, events.recv()).await;
        let next = next.unwrap_or_else(|_| panic!("only {} of {count} events within the bound", taken.len()));
        taken.push(next.expect("the stream goes on").expect("no error"));
    }
    taken
}

/// Nothing more arrives while anything still unsent would have settled.
async fn nothing_more(events: &mut mpsc::UnboundedReceiver<Result<Event, Status>>) {
    let extra = tokio::time::timeout(SETTLE + Duration::from_secs(1), events.recv()).await;
    assert!(extra.is_err(), "no event twice, none unknown to the store: {extra:?}");
}

fn ids(events: &[Event]) -> Vec<String> {
    events.iter().map(|event| event.id.clone()).collect()
}

async fn stream_events_sends_every_event_once_in_order_from_the_store_into_live_ones(backend: Backend) {
    let app = TestApp::spawn_configured(Isolation::new(backend).await, |common| {
        streaming(common);
        common.stream_events.max_streams = 2;
    })
    .await;
    let types = ["order", "product"];
    let customer = app.shop().await;
    let orders = OrdersClient::new(channel(&app).await);
    place_decided(&orders, &customer, 4).await;

    let mut client = EventStoreClient::new(channel(&app).await);
    let stream = client.stream_events(request(&types, None)).await.expect("streaming").into_inner();
    let mut events = follow(stream);
    // Orders placed one after another while the stream runs, until one of
    // them has come back over it; then one more.
    let mut received = Vec::new();
    let mut live = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !received.iter().any(|event: &Event| live.contains(&event.aggregate_id)) {
        assert!(tokio::time::Instant::now() < deadline, "no order placed meanwhile came back over the stream");
        live.extend(place_decided(&orders, &customer, 1).await);
        while let Ok(next) = events.try_recv() {
            received.push(next.expect("no error"));
        }
    }
    place_decided(&orders, &customer, 1).await;

    let expected = quiet(&app, &types).await;
    received.extend(take(&mut events, expected.len().saturating_sub(received.len())).await);
    assert_eq!(ids(&received), expected, "every stored order and product event, once, in time order");
    nothing_more(&mut events).await;
    assert!(received.iter().all(|event| types.contains(&event.aggregate_type.as_str())));
    for pair in received.windows(2) {
        let (earlier, later) = (&pair[0], &pair[1]);
        if (&earlier.aggregate_type, &earlier.aggregate_id) == (&later.aggregate_type, &later.aggregate_id) {
            assert!(earlier.stream_version < later.stream_version, "a stream's events in version order");
        }
    }

    // From a position in the middle: exactly the rest.
    let middle = received.len() / 2;
    let after = Start::AfterPosition(received[middle].position.clone());
    let resumed = client.stream_events(request(&types, Some(after))).await.expect("streaming").into_inner();
    let mut resumed = follow(resumed);
    let rest = take(&mut resumed, expected.len() - middle - 1).await;
    assert_eq!(ids(&rest), expected[middle + 1..], "the rest, nothing twice");

    // Two streams run: a third is refused until one ends.
    let third = client.stream_events(request(&types, None)).await.expect_err("past the cap");
    assert_eq!((third.code(), conveyor_code(&third).as_str()), (Code::ResourceExhausted, "TOO_MANY_SUBSCRIPTIONS"));
    nothing_more(&mut resumed).await;
    drop(resumed);
    let deadline = tokio::time::Instant::now() + WAIT;
    while let Err(refused) = client.stream_events(request(&types, None)).await {
        assert!(tokio::time::Instant::now() < deadline, "the ended stream's slot never came back: {refused:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let bad = client.stream_events(request(&types, Some(Start::AfterPosition("not-a-position".into())))).await;
    let bad = bad.expect_err("a malformed position");
    assert_eq!((bad.code(), conveyor_code(&bad).as_str()), (Code::InvalidArgument, "INVALID_POSITION"));
    let unknown = client.stream_events(request(&["order", "nope"], None)).await.expect_err("an unknown type");
    assert_eq!((unknown.code(), conveyor_code(&unknown).as_str()), (Code::InvalidArgument, "INVALID_INPUT"));
}

async fn stream_events_from_now_sends_only_what_happens_after_the_call(backend: Backend) {
    let app = TestApp::spawn_configured(Isolation::new(backend).await, streaming).await;
    let customer = app.shop().await;
    let orders = OrdersClient::new(channel(&app).await);
    place_decided(&orders, &customer, 3).await;
    let before = quiet(&app, &[]).await;

    let mut client = EventStoreClient::new(channel(&app).await);
    let stream = client.stream_events(request(&[], Some(Start::FromNow(true)))).await.expect("streaming");
    let mut events = follow(stream.into_inner());
    let placed = place_decided(&orders, &customer, 2).await;
    let expected: Vec<String> = quiet(&app, &[]).await.into_iter().filter(|id| !before.contains(id)).collect();
    let received = take(&mut events, expected.len()).await;
    assert_eq!(ids(&received), expected, "every event of every type since the call, none before");
    nothing_more(&mut events).await;
    for order in placed {
        assert!(received.iter().any(|event| event.aggregate_id == order && event.r#type == "OrderPlaced"));
    }
}

async fn a_stream_reader_that_stops_reading_is_ended_with_a_position_and_resumes_without_a_loss(backend: Backend) {
    let app = TestApp::spawn_configured(Isolation::new(backend).await, |common| {
        streaming(common);
        common.stream_events.buffer = 2;
        common.stream_events.send_timeout = Duration::from_millis(300);
    })
    .await;
    let customer = app.shop().await;
    let orders = OrdersClient::new(channel(&app).await);
    // More events than the transport holds for a reader that does not read.
    place_decided(&orders, &customer, 15).await;
    let expected = quiet(&app, &[]).await;
    tokio::time::sleep(SETTLE).await;

    // A connection whose client takes 1 KiB at a time off the wire until read.
    let slow = Endpoint::from_shared(format!("http://{}", app.grpc))
        .expect("a valid URI")
        .initial_stream_window_size(Some(1024))
        .connect()
        .await
        .expect("gRPC connects");
    let mut stream =
        EventStoreClient::new(slow).stream_events(request(&[], None)).await.expect("streaming").into_inner();
    let first = tokio::time::timeout(WAIT, stream.message()).await.expect("in time").expect("no error");
    let mut received = vec![first.expect("an event")];
    // The reader stops; its queue stays full past the send timeout.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ended = loop {
        match tokio::time::timeout(WAIT, stream.message()).await.expect("in time") {
            Ok(Some(event)) => received.push(event),
            Ok(None) => panic!("the stream ended without a status after {} events", received.len()),
            Err(status) => break status,
        }
    };
    assert!(received.len() < expected.len(), "ended before it sent everything");
    assert_eq!((ended.code(), conveyor_code(&ended).as_str()), (Code::ResourceExhausted, "READER_TOO_SLOW"));
    let info = ended.get_error_details().error_info().cloned().expect("ErrorInfo");
    let position = info.metadata.get(POSITION_METADATA).cloned().expect("a position");
    let last = received.last().expect("an event");
    assert_eq!(position, last.position, "the position of the last event it got");

    let mut client = EventStoreClient::new(channel(&app).await);
    let resumed = client.stream_events(request(&[], Some(Start::AfterPosition(position)))).await.expect("streaming");
    let mut resumed = follow(resumed.into_inner());
    received.extend(take(&mut resumed, expected.len().saturating_sub(received.len())).await);
    assert_eq!(ids(&received), expected, "nothing lost, nothing twice");
    nothing_more(&mut resumed).await;
}
