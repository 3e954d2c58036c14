//! The gRPC API (docs/grpc.md) driven by tonic clients generated from the
//! same protos, on both backends: every `conveyor.v1.Orders` method, the
//! event store's `GetEvents`, tokens and roles, health and reflection.

use std::time::Duration;

use futures::StreamExt;
use gateway::Role;
use gateway::auth::issue;
use gateway::grpc::proto::event_store_client::EventStoreClient;
use gateway::grpc::proto::orders_client::OrdersClient;
use gateway::grpc::proto::{
    CancelOrderRequest, CommandStatus, Consistency, GetEventsRequest, GetOrderRequest, ListOrdersRequest, Order,
    OrderLine, OrderStatus, PlaceOrderRequest, ShipOrderRequest, StreamEventsRequest,
};
use gateway::grpc::{ERROR_CODE_METADATA, ERROR_DOMAIN};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::helpers::{Backend, Isolation, TestApp, WAIT};

crate::on_both_backends!(
    orders_are_placed_read_listed_shipped_and_cancelled_over_grpc,
    grpc_callers_need_a_token_and_keep_to_their_roles,
    watch_order_sends_the_current_view_then_each_change,
    health_follows_readiness_and_reflection_lists_the_services,
    a_grpc_caller_past_its_rate_is_told_when_to_retry,
    a_connection_runs_as_many_watches_as_a_websocket_runs_subscriptions,
);

pub(crate) const SECRET: &str = "a-test-secret-of-32-bytes-length";
const UNKNOWN: &str = "0193a7d0-0000-7000-8000-00000000c0de";

pub(crate) fn token(role: Role, subject: &str) -> String {
    issue(SECRET.as_bytes(), role, subject, Duration::from_secs(600)).expect("signs")
}

pub(crate) async fn channel(app: &TestApp) -> Channel {
    Channel::from_shared(format!("http://{}", app.grpc)).expect("a valid URI").connect().await.expect("gRPC connects")
}

/// A request carrying `authorization: Bearer <token>`, when given one.
pub(crate) fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().expect("an ASCII header");
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// The Conveyor error code a status carries, checked in both places it travels.
pub(crate) fn conveyor_code(status: &Status) -> String {
    let info = status.get_error_details().error_info().cloned().unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.domain, ERROR_DOMAIN);
    let trailer = status.metadata().get(ERROR_CODE_METADATA).and_then(|value| value.to_str().ok());
    assert_eq!(trailer, Some(info.reason.as_str()), "the trailer repeats the code");
    info.reason
}

pub(crate) fn place(customer_id: &str, key: &str) -> PlaceOrderRequest {
    PlaceOrderRequest {
        customer_id: customer_id.into(),
        items: vec![
            OrderLine { sku: "book-1".into(), quantity: 2, expected_unit_price_cents: Some(1250) },
            OrderLine { sku: "pen-9".into(), quantity: 1, expected_unit_price_cents: None },
        ],
        idempotency_key: key.into(),
        consistency: Consistency::AwaitView.into(),
    }
}

/// Reads the order over gRPC until `done` holds, failing after [`WAIT`].
pub(crate) async fn wait_for(
    orders: &mut OrdersClient<Channel>,
    id: &str,
    what: &str,
    done: impl Fn(&Order) -> bool,
) -> Order {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut interval = tokio::time::interval(Duration::from_millis(25));
    loop {
        interval.tick().await;
        let order = orders.get_order(GetOrderRequest { order_id: id.into() }).await;
        if let Ok(order) = &order
            && done(order.get_ref())
        {
            return order.get_ref().clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "order {id} never became {what}; last: {order:?}");
    }
}

async fn orders_are_placed_read_listed_shipped_and_cancelled_over_grpc(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let customer = app.shop().await;
    let mut orders = OrdersClient::new(channel(&app).await);

    let placed = orders.place_order(place(&customer, "grpc-1")).await.expect("placed").into_inner();
    assert_eq!(placed.status(), CommandStatus::Accepted, "{placed:?}");
    // The same key is the same command, answered the same.
    let again = orders.place_order(place(&customer, "grpc-1")).await.expect("retried").into_inner();
    assert_eq!(
        (again.command_id.as_str(), again.order_id.as_str()),
        (placed.command_id.as_str(), placed.order_id.as_str())
    );
    // And the same key with another request is refused.
    let mut other = place(&customer, "grpc-1");
    other.items.truncate(1);
    let reused = orders.place_order(other).await.expect_err("a reused key");
    assert_eq!((reused.code(), conveyor_code(&reused).as_str()), (Code::AlreadyExists, "IDEMPOTENCY_KEY_REUSED"));

    let order =
        orders.get_order(GetOrderRequest { order_id: placed.order_id.clone() }).await.expect("read").into_inner();
    assert_eq!((order.order_id.as_str(), order.customer_id.as_str()), (placed.order_id.as_str(), customer.as_str()));
    assert_eq!(order.items.len(), 2);
    assert!(order.placed_at.is_some() && order.version >= 1, "{order:?}");
    let confirmed =
        wait_for(&mut orders, &placed.order_id, "CONFIRMED", |order| order.status() == OrderStatus::Confirmed).await;
    assert_eq!(confirmed.total_cents, Some(2 * 1250 + 300));
    assert_eq!(confirmed.payment_status, "AUTHORIZED");

    // A second order, then the list a page at a time, newest first.
    let second = orders.place_order(place(&customer, "grpc-2")).await.expect("placed").into_inner();
    let list =
        |page_token: String| ListOrdersRequest { page_size: 1, page_token, status: 0, customer_id: customer.clone() };
    let first_page = orders.list_orders(list(String::new())).await.expect("listed").into_inner();
    assert_eq!(first_page.orders.iter().map(|o| o.order_id.as_str()).collect::<Vec<_>>(), [second.order_id.as_str()]);
    assert!(!first_page.next_page_token.is_empty(), "there is a second page");
    let second_page = orders.list_orders(list(first_page.next_page_token)).await.expect("listed").into_inner();
    assert_eq!(second_page.orders.iter().map(|o| o.order_id.as_str()).collect::<Vec<_>>(), [placed.order_id.as_str()]);
    assert!(second_page.next_page_token.is_empty(), "the last page says so");
    let confirmed_only =
        ListOrdersRequest { page_size: 10, status: OrderStatus::Confirmed.into(), ..list(String::new()) };
    let listed = orders.list_orders(confirmed_only).await.expect("listed").into_inner();
    assert!(listed.orders.iter().all(|order| order.status() == OrderStatus::Confirmed), "{listed:?}");

    let shipped = orders
        .ship_order(ShipOrderRequest {
            order_id: placed.order_id.clone(),
            idempotency_key: String::new(),
            consistency: Consistency::AwaitView.into(),
        })
        .await
        .expect("shipped")
        .into_inner();
    assert_eq!(shipped.status(), CommandStatus::Accepted, "{shipped:?}");
    let cancel = CancelOrderRequest {
        order_id: placed.order_id.clone(),
        reason: "too late".into(),
        idempotency_key: String::new(),
        consistency: 0,
    };
    let refused = orders.cancel_order(cancel).await.expect("answered").into_inner();
    assert_eq!(refused.status(), CommandStatus::Rejected, "a shipped order cannot be cancelled: {refused:?}");
    assert!(refused.error.is_some_and(|error| !error.code.is_empty()));

    let missing = orders.get_order(GetOrderRequest { order_id: UNKNOWN.into() }).await.expect_err("unknown");
    assert_eq!((missing.code(), conveyor_code(&missing).as_str()), (Code::NotFound, "ORDER_NOT_FOUND"));
    let invalid = orders.get_order(GetOrderRequest { order_id: "not-an-id".into() }).await.expect_err("invalid");
    assert_eq!((invalid.code(), conveyor_code(&invalid).as_str()), (Code::InvalidArgument, "INVALID_ID"));
    let huge = PlaceOrderRequest { idempotency_key: "k".repeat(2 * 1024 * 1024), ..place(&customer, "") };
    let huge = orders.place_order(huge).await.expect_err("larger than a GraphQL body may be");
    assert_eq!(huge.code(), Code::OutOfRange, "{huge:?}");
    let empty = PlaceOrderRequest { items: Vec::new(), ..place(&customer, "") };
    let empty = orders.place_order(empty).await.expect_err("no lines");
    assert_eq!((empty.code(), conveyor_code(&empty).as_str()), (Code::InvalidArgument, "INVALID_ITEM_COUNT"));

    // The order's stream from the store, upcast, in order; then from a version on.
    let mut events = EventStoreClient::new(channel(&app).await);
    let read = |from_version| GetEventsRequest {
        aggregate_type: "order".into(),
        aggregate_id: placed.order_id.clone(),
        from_version,
    };
    let stream = events.get_events(read(0)).await.expect("read").into_inner().events;
    assert_eq!(stream.first().map(|event| (event.r#type.as_str(), event.schema_version)), Some(("OrderPlaced", 3)));
    assert_eq!(
        stream.iter().map(|event| event.stream_version).collect::<Vec<_>>(),
        (1..=stream.len() as u64).collect::<Vec<_>>()
    );
    assert!(stream.iter().any(|event| event.r#type == "OrderShipped"), "{stream:?}");
    let placed_event: serde_json::Value = serde_json::from_str(&stream[0].payload_json).expect("JSON payload");
    assert_eq!(placed_event["customer_id"], customer.as_str());
    let tail = events.get_events(read(2)).await.expect("read").into_inner().events;
    assert_eq!(tail.first().map(|event| event.stream_version), Some(2));
    assert_eq!(tail.len(), stream.len() - 1);
    let bad = GetEventsRequest { aggregate_type: "nope".into(), ..read(0) };
    let bad = events.get_events(bad).await.expect_err("unknown aggregate type");
    assert_eq!(bad.code(), Code::InvalidArgument);
}

async fn grpc_callers_need_a_token_and_keep_to_their_roles(backend: Backend) {
    let app = TestApp::spawn_configured(Isolation::new(backend).await, |common| {
        common.jwt_secret = Some(SECRET.into());
        common.mutation_wait = Duration::from_secs(3);
    })
    .await;
    let admin = token(Role::Admin, "ops");
    let (_, added) = app
        .graphql_as(
            Some(&admin),
            "mutation { addProduct(input: { sku: \"book-1\", name: \"Book\", priceCents: 1250, initialStock: 50, consistency: AWAIT_VIEW }) { status } }",
            serde_json::json!({}),
        )
        .await;
    assert_eq!(added["data"]["addProduct"]["status"], "ACCEPTED", "{added}");
    let (alice, bob) = (uuid::Uuid::now_v7().to_string(), uuid::Uuid::now_v7().to_string());
    let alice_token = token(Role::Customer, &alice);
    let mut orders = OrdersClient::new(channel(&app).await);

    let anonymous = orders.place_order(with_token(place(&alice, ""), None)).await.expect_err("no token");
    assert_eq!((anonymous.code(), conveyor_code(&anonymous).as_str()), (Code::Unauthenticated, "UNAUTHENTICATED"));
    let forged = orders.place_order(with_token(place(&alice, ""), Some("not.a.token"))).await.expect_err("bad token");
    assert_eq!((forged.code(), conveyor_code(&forged).as_str()), (Code::Unauthenticated, "UNAUTHENTICATED"));
    let read_anonymously = orders.get_order(with_token(GetOrderRequest { order_id: UNKNOWN.into() }, None)).await;
    assert_eq!(read_anonymously.expect_err("no token").code(), Code::Unauthenticated);

    let for_bob = orders.place_order(with_token(place(&bob, ""), Some(&alice_token))).await.expect_err("not hers");
    assert_eq!((for_bob.code(), conveyor_code(&for_bob).as_str()), (Code::PermissionDenied, "FORBIDDEN"));
    let mut own = place(&alice, "");
    own.items.truncate(1);
    own.consistency = Consistency::AwaitView.into();
    let placed = orders.place_order(with_token(own, Some(&alice_token))).await.expect("her own").into_inner();
    assert_ne!(placed.status(), CommandStatus::Unspecified, "{placed:?}");
    let get = |id: &str, token: &str| with_token(GetOrderRequest { order_id: id.into() }, Some(token));
    let hers = orders.get_order(get(&placed.order_id, &alice_token)).await.expect("hers").into_inner();
    assert_eq!(hers.customer_id, alice);
    // Another customer's order is a missing one.
    let bob_token = token(Role::Customer, &bob);
    let not_his = orders.get_order(get(&placed.order_id, &bob_token)).await.expect_err("not his");
    assert_eq!((not_his.code(), conveyor_code(&not_his).as_str()), (Code::NotFound, "ORDER_NOT_FOUND"));
    let ship = ShipOrderRequest { order_id: placed.order_id.clone(), idempotency_key: String::new(), consistency: 0 };
    let shipped_by_her = orders.ship_order(with_token(ship, Some(&alice_token))).await.expect_err("staff only");
    assert_eq!(shipped_by_her.code(), Code::PermissionDenied);
    let listing = ListOrdersRequest { page_size: 10, page_token: String::new(), status: 0, customer_id: bob.clone() };
    let bobs = orders.list_orders(with_token(listing, Some(&alice_token))).await.expect_err("only her own");
    assert_eq!(bobs.code(), Code::PermissionDenied);

    let mut events = EventStoreClient::new(channel(&app).await);
    let read =
        || GetEventsRequest { aggregate_type: "order".into(), aggregate_id: placed.order_id.clone(), from_version: 1 };
    let by_customer = events.get_events(with_token(read(), Some(&alice_token))).await.expect_err("staff only");
    assert_eq!((by_customer.code(), conveyor_code(&by_customer).as_str()), (Code::PermissionDenied, "FORBIDDEN"));
    let by_service = events.get_events(with_token(read(), Some(&token(Role::Service, "billing")))).await;
    let by_service = by_service.expect("service reads events").into_inner().events;
    assert_eq!(by_service.first().map(|event| event.actor.as_str()), Some(format!("customer:{alice}").as_str()));

    // StreamEvents: the same rule.
    let stream = || StreamEventsRequest { aggregate_types: vec!["order".into()], start: None };
    let anonymous = events.stream_events(with_token(stream(), None)).await.expect_err("no token");
    assert_eq!((anonymous.code(), conveyor_code(&anonymous).as_str()), (Code::Unauthenticated, "UNAUTHENTICATED"));
    let by_customer = events.stream_events(with_token(stream(), Some(&alice_token))).await.expect_err("staff only");
    assert_eq!((by_customer.code(), conveyor_code(&by_customer).as_str()), (Code::PermissionDenied, "FORBIDDEN"));
    let service = token(Role::Service, "billing");
    events.stream_events(with_token(stream(), Some(&service))).await.expect("a service streams events");
}

async fn watch_order_sends_the_current_view_then_each_change(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let customer = app.shop().await;
    let mut orders = OrdersClient::new(channel(&app).await);
    let placed = orders.place_order(place(&customer, "")).await.expect("placed").into_inner();
    let final_ =
        wait_for(&mut orders, &placed.order_id, "CONFIRMED", |order| order.status() != OrderStatus::Pending).await;
    assert_eq!(final_.status(), OrderStatus::Confirmed);

    let mut updates =
        orders.watch_order(GetOrderRequest { order_id: placed.order_id.clone() }).await.expect("watching").into_inner();
    let current = next(&mut updates).await;
    assert_eq!((current.status(), current.version), (OrderStatus::Confirmed, final_.version));
    let cancel = CancelOrderRequest {
        order_id: placed.order_id.clone(),
        reason: "changed my mind".into(),
        idempotency_key: String::new(),
        consistency: 0,
    };
    let cancelled = orders.cancel_order(cancel).await.expect("cancelled").into_inner();
    assert_eq!(cancelled.status(), CommandStatus::Accepted, "{cancelled:?}");
    let mut last = current;
    while last.status() != OrderStatus::Cancelled {
        let update = next(&mut updates).await;
        assert!(update.version > last.version, "only newer views: {update:?} after {last:?}");
        last = update;
    }

    // Watching an invalid id ends the stream with the error's status.
    let mut invalid =
        orders.watch_order(GetOrderRequest { order_id: "nope".into() }).await.expect("a stream").into_inner();
    let error = tokio::time::timeout(WAIT, invalid.message()).await.expect("within the bound").expect_err("invalid id");
    assert_eq!((error.code(), conveyor_code(&error).as_str()), (Code::InvalidArgument, "INVALID_ID"));
}

/// The stream's next order, within [`WAIT`].
async fn next(updates: &mut tonic::Streaming<Order>) -> Order {
    tokio::time::timeout(WAIT, updates.message())
        .await
        .expect("an update within the bound")
        .expect("no error")
        .expect("the stream goes on")
}

async fn health_follows_readiness_and_reflection_lists_the_services(backend: Backend) {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::{v1, v1alpha};

    let app = TestApp::spawn(backend).await;
    let mut health = HealthClient::new(channel(&app).await);
    let deadline = tokio::time::Instant::now() + WAIT;
    for service in ["", "conveyor.v1.Orders", "conveyor.v1.EventStore"] {
        loop {
            let check = health.check(HealthCheckRequest { service: service.into() }).await;
            if check.as_ref().is_ok_and(|answer| answer.get_ref().status() == ServingStatus::Serving) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "`{service}` never SERVING: {check:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    let unknown = health.check(HealthCheckRequest { service: "no.such.Service".into() }).await;
    assert_eq!(unknown.expect_err("unknown service").code(), Code::NotFound);

    let mut v1 = v1::server_reflection_client::ServerReflectionClient::new(channel(&app).await);
    let ask = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut answers = v1.server_reflection_info(futures::stream::iter([ask])).await.expect("reflection").into_inner();
    let answer = tokio::time::timeout(WAIT, answers.next()).await.expect("within the bound").expect("an answer");
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answer.expect("no error").message_response
    else {
        panic!("not a service list");
    };
    let names: Vec<_> = list.service.into_iter().map(|service| service.name).collect();
    let expected = [
        "conveyor.v1.Orders",
        "conveyor.v1.EventStore",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ];
    for expected in expected {
        assert!(names.iter().any(|name| name == expected), "{expected} missing from {names:?}");
    }

    let mut v1alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(channel(&app).await);
    let ask = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
            "conveyor.v1.Orders".into(),
        )),
    };
    let mut answers =
        v1alpha.server_reflection_info(futures::stream::iter([ask])).await.expect("reflection").into_inner();
    let answer = tokio::time::timeout(WAIT, answers.next()).await.expect("within the bound").expect("an answer");
    let found = matches!(
        answer.expect("no error").message_response,
        Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(files))
            if !files.file_descriptor_proto.is_empty()
    );
    assert!(found, "v1alpha finds the file that defines conveyor.v1.Orders");
}

async fn a_grpc_caller_past_its_rate_is_told_when_to_retry(backend: Backend) {
    let app = TestApp::spawn_configured(Isolation::new(backend).await, |common| {
        common.edge.rate_limit = 1;
        common.edge.rate_limit_burst = 2;
    })
    .await;
    let mut orders = OrdersClient::new(channel(&app).await);
    let get = || GetOrderRequest { order_id: UNKNOWN.into() };
    // The burst: two calls run (and find nothing).
    for _ in 0..2 {
        let answer = orders.get_order(get()).await.expect_err("no such order");
        assert_eq!(answer.code(), Code::NotFound);
    }
    let limited = orders.get_order(get()).await.expect_err("past the rate");
    assert_eq!((limited.code(), conveyor_code(&limited).as_str()), (Code::ResourceExhausted, "RATE_LIMITED"));
    let retry = limited.get_error_details().retry_info().and_then(|retry| retry.retry_delay);
    assert!(retry.is_some_and(|delay| delay >= Duration::from_secs(1)), "{limited:?}");
}

async fn a_connection_runs_as_many_watches_as_a_websocket_runs_subscriptions(backend: Backend) {
    let app = TestApp::spawn_configured(Isolation::new(backend).await, |common| {
        common.edge.ws_max_subscriptions = 2;
    })
    .await;
    let customer = app.shop().await;
    let mut orders = OrdersClient::new(channel(&app).await);
    let placed = orders.place_order(place(&customer, "")).await.expect("placed").into_inner();
    let watch = || GetOrderRequest { order_id: placed.order_id.clone() };
    let mut first = orders.watch_order(watch()).await.expect("a first watch").into_inner();
    let mut second = orders.watch_order(watch()).await.expect("a second watch").into_inner();
    next(&mut first).await;
    next(&mut second).await;
    let refused = orders.watch_order(watch()).await.expect_err("a third on the same connection");
    assert_eq!(
        (refused.code(), conveyor_code(&refused).as_str()),
        (Code::ResourceExhausted, "TOO_MANY_SUBSCRIPTIONS"),
        "{refused:?}"
    );
    // Another connection has places of its own.
    let mut other = OrdersClient::new(channel(&app).await);
    let mut elsewhere = other.watch_order(watch()).await.expect("another connection's watch").into_inner();
    next(&mut elsewhere).await;
    // A watch ended gives its place back (once the server sees the stream reset).
    drop(first);
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut again = loop {
        match orders.watch_order(watch()).await {
            Ok(stream) => break stream.into_inner(),
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(tokio::time::Instant::now() < deadline, "the ended watch's place never came back");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    next(&mut again).await;
    drop(second);
}
