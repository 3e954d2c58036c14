//! The read side's guarantees: gap repair from the event store, the outbox
//! relay, and a rebuild that gives the same rows.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use read_side::Projector;
use read_side::embedded::{BroadcastNotifier, InProcessEventHub};
use read_side::orders::{OrderRepository, OrdersProjection};
use schema::order::{CancelOrder, OrderCommand, OrderLine, PlaceOrder};
use schema::ports::{EventLog, EventPublisher, PortError};
use schema::{CommandEnvelope, EventEnvelope, Metadata};
use serde_json::json;
use uuid::Uuid;
use write_side::{CommandHandler, OutboxRelay, RelaySettings};

use crate::helpers::{Backend, Isolation, TestApp, customer, items};

crate::on_both_backends!(
    a_projector_repairs_a_gap_from_the_event_store,
    the_outbox_relay_publishes_what_the_handler_could_not,
    rebuilding_the_view_from_the_event_store_gives_the_same_rows,
    a_restarted_system_keeps_its_orders_and_resumes_projecting,
);

async fn a_restarted_system_keeps_its_orders_and_resumes_projecting(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let before = app.place_order(&customer(), items(), None).await;
    let before_id = before["orderId"].as_str().expect("an order id").to_string();
    app.wait_for_order(&before_id, "projected", |order| !order.is_null()).await;

    let app = TestApp::spawn_in(app.stop().await).await;
    assert_eq!(app.order(&before_id).await["status"], "PLACED");
    let cancelled = app.cancel_order(&before_id, "after restart", None).await;
    assert_eq!(cancelled["status"], "ACCEPTED", "{cancelled}");
    let after = app.place_order(&customer(), items(), None).await;
    let after_id = after["orderId"].as_str().expect("an order id");
    app.wait_for_order(&before_id, "cancelled", |order| order["status"] == "CANCELLED").await;
    app.wait_for_order(after_id, "projected", |order| !order.is_null()).await;
    assert_eq!(app.store.count_all_events().await.expect("count"), 3);
}

/// A transport that is down until switched on; remembers what it carried.
struct FlakyPublisher {
    up: AtomicBool,
    carried: std::sync::Mutex<Vec<EventEnvelope>>,
}

#[async_trait]
impl EventPublisher for FlakyPublisher {
    async fn publish(&self, events: &[EventEnvelope]) -> Result<(), PortError> {
        if !self.up.load(Ordering::SeqCst) {
            return Err(PortError::Unavailable("test transport".into()));
        }
        self.carried.lock().expect("lock").extend_from_slice(events);
        Ok(())
    }
}

/// A store (migrated) and views (migrated) in a fresh isolation.
async fn stores(isolation: &Isolation) -> (write_side::SqlEventStore, OrderRepository, sqlx::AnyPool) {
    let (store, orders) = isolation.stores().await;
    store.migrate().await.expect("event store migrates");
    let views = views_pool(isolation).await;
    read_side::migrate(&views).await.expect("views migrate");
    (store, orders, views)
}

async fn views_pool(isolation: &Isolation) -> sqlx::AnyPool {
    match isolation.backend {
        Backend::Server => schema::sql::connect(&isolation.server().database, 2).await.expect("views"),
        Backend::Embedded => {
            let dir = isolation.data_dir.as_ref().expect("data dir");
            std::fs::create_dir_all(dir).expect("data dir");
            let url = format!("sqlite://{}?mode=rwc", dir.join("views.sqlite").display());
            schema::sql::connect(&url, 1).await.expect("views")
        }
    }
}

fn command(order_id: Uuid, command: OrderCommand) -> CommandEnvelope {
    let id = Uuid::now_v7();
    CommandEnvelope::new(id, "order", order_id.to_string(), Metadata::origin(id, "test"), &command)
}

fn place() -> OrderCommand {
    OrderCommand::PlaceOrder(PlaceOrder {
        customer_id: customer(),
        items: vec![OrderLine { sku: "a".into(), quantity: 1, unit_price_cents: 100 }],
    })
}

async fn a_projector_repairs_a_gap_from_the_event_store(backend: Backend) {
    let isolation = Isolation::new(backend).await;
    if let Some(dir) = &isolation.data_dir {
        std::fs::create_dir_all(dir).expect("data dir");
    }
    let (store, orders, views) = stores(&isolation).await;
    let transport = Arc::new(FlakyPublisher { up: AtomicBool::new(true), carried: Default::default() });
    let handler = CommandHandler::new(store.clone(), transport.clone());
    let order_id = Uuid::now_v7();
    handler.handle(&command(order_id, place())).await.expect("placed");
    handler
        .handle(&command(order_id, OrderCommand::CancelOrder(CancelOrder { reason: "gap".into() })))
        .await
        .expect("cancelled");
    let carried = transport.carried.lock().expect("lock").clone();
    assert_eq!(carried.len(), 2);

    // Deliver only version 2: the projector must fetch version 1 itself.
    let log: Arc<dyn EventLog> = Arc::new(store.clone());
    let projector = Projector::new(views, Arc::new(OrdersProjection), log, Arc::new(BroadcastNotifier::new(16)));
    projector.handle(&carried[1]).await.expect("projected");
    let view = orders.get(&order_id.to_string()).await.expect("query").expect("the order is in the view");
    assert_eq!(view.version, 2);
    assert_eq!(view.status, read_side::orders::OrderStatus::Cancelled);

    // The late version 1, and a repeat of version 2, change nothing.
    projector.handle(&carried[0]).await.expect("skipped");
    projector.handle(&carried[1]).await.expect("skipped");
    assert_eq!(orders.get(&order_id.to_string()).await.expect("query"), Some(view));
}

async fn the_outbox_relay_publishes_what_the_handler_could_not(backend: Backend) {
    let isolation = Isolation::new(backend).await;
    if let Some(dir) = &isolation.data_dir {
        std::fs::create_dir_all(dir).expect("data dir");
    }
    let (store, _orders, _views) = stores(&isolation).await;
    let transport = Arc::new(FlakyPublisher { up: AtomicBool::new(false), carried: Default::default() });
    let handler = CommandHandler::new(store.clone(), transport.clone());
    let order_id = Uuid::now_v7();
    let outcome = handler.handle(&command(order_id, place())).await.expect("decided despite the transport");
    assert_eq!(outcome.status, schema::OutcomeStatus::Accepted);
    handler
        .handle(&command(order_id, OrderCommand::CancelOrder(CancelOrder { reason: "x".into() })))
        .await
        .expect("decided");
    assert!(transport.carried.lock().expect("lock").is_empty());

    transport.up.store(true, Ordering::SeqCst);
    let relay = OutboxRelay::new(store.clone(), transport.clone(), RelaySettings::default());
    assert_eq!(relay.publish_stranded(std::time::Duration::ZERO).await.expect("relayed"), 2);
    let carried = transport.carried.lock().expect("lock").clone();
    let versions: Vec<u64> = carried.iter().map(|event| event.stream_version).collect();
    assert_eq!(versions, vec![1, 2], "in stream order");
    assert_eq!(relay.publish_stranded(std::time::Duration::ZERO).await.expect("relayed"), 0, "nothing twice");
}

async fn rebuilding_the_view_from_the_event_store_gives_the_same_rows(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut ids = Vec::new();
    for n in 0..6 {
        let placed = app.place_order(&customer(), items(), None).await;
        let id = placed["orderId"].as_str().expect("an order id").to_string();
        if n % 3 == 0 {
            assert_eq!(app.cancel_order(&id, "rebuild", None).await["status"], "ACCEPTED");
        }
        ids.push((id, n % 3 == 0));
    }
    for (id, cancelled) in &ids {
        let version = if *cancelled { 2 } else { 1 };
        app.wait_for_order(id, "fully projected", |order| order["version"] == json!(version)).await;
    }
    let live = app.orders.all().await.expect("live rows");

    // A fresh view database, fed only from the event store.
    let fresh = Isolation::new(Backend::Embedded).await;
    let dir = fresh.data_dir.as_ref().expect("data dir");
    std::fs::create_dir_all(dir).expect("data dir");
    let views = views_pool(&fresh).await;
    read_side::migrate(&views).await.expect("views migrate");
    let log: Arc<dyn EventLog> = Arc::new(app.store.clone());
    let projector =
        Projector::new(views.clone(), Arc::new(OrdersProjection), log, Arc::new(BroadcastNotifier::new(16)));
    assert_eq!(projector.catch_up().await.expect("rebuilt"), 8, "6 placed + 2 cancelled");
    let rebuilt = OrderRepository::new(views).all().await.expect("rebuilt rows");
    assert_eq!(rebuilt, live);
    let _ = InProcessEventHub::new(1);
}
