//! The read side's guarantees: gap repair from the event store, the outbox
//! relay, a rebuild that gives the same rows, and resuming after a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use read_side::embedded::BroadcastNotifier;
use read_side::orders::{OrderRepository, OrderStatus, OrdersProjection};
use read_side::{Projector, ViewStore};
use schema::order::{CancelOrder, OrderCommand, OrderLine, PlaceOrder};
use schema::ports::{EventLog, EventPublisher, PortError};
use schema::{CommandEnvelope, EventEnvelope, Metadata};
use uuid::Uuid;
use write_side::{CommandHandler, OutboxRelay, RelaySettings, SimulatedProvider};

use crate::helpers::{Backend, Isolation, TestApp, assert_views_match_a_replay, customer, items};

crate::on_both_backends!(
    a_projector_repairs_a_gap_from_the_event_store,
    the_outbox_relay_publishes_what_the_handler_could_not,
    rebuilding_the_views_from_the_event_store_gives_the_same_rows,
    a_restarted_system_keeps_its_orders_and_resumes_projecting,
);

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

/// The event store and the views of an isolation, migrated, with no system running.
async fn stores(isolation: &Isolation) -> (write_side::SqlEventStore, sqlx::AnyPool) {
    let (store_pool, views_pool) = isolation.pools().await;
    let store = write_side::SqlEventStore::new(store_pool);
    store.migrate().await.expect("event store migrates");
    read_side::migrate(&views_pool).await.expect("views migrate");
    (store, views_pool)
}

fn handler(store: &write_side::SqlEventStore, transport: Arc<FlakyPublisher>) -> CommandHandler {
    CommandHandler::new(store.clone(), transport, Arc::new(SimulatedProvider::default()))
}

fn command(order_id: Uuid, command: OrderCommand) -> CommandEnvelope {
    let id = Uuid::now_v7();
    CommandEnvelope::new(id, "order", order_id.to_string(), Metadata::origin(id, "test"), &command)
}

fn place() -> OrderCommand {
    OrderCommand::PlaceOrder(PlaceOrder {
        customer_id: customer(),
        items: vec![OrderLine { sku: "a".into(), quantity: 1, expected_unit_price_cents: None }],
    })
}

fn cancel(reason: &str) -> OrderCommand {
    OrderCommand::CancelOrder(CancelOrder { reason: reason.into() })
}

async fn a_projector_repairs_a_gap_from_the_event_store(backend: Backend) {
    let isolation = Isolation::new(backend).await;
    let (store, views) = stores(&isolation).await;
    let transport = Arc::new(FlakyPublisher { up: AtomicBool::new(true), carried: Default::default() });
    let handler = handler(&store, transport.clone());
    let order_id = Uuid::now_v7();
    handler.handle(&command(order_id, place())).await.expect("placed");
    handler.handle(&command(order_id, cancel("gap"))).await.expect("cancelled");
    let carried = transport.carried.lock().expect("lock").clone();
    assert_eq!(carried.len(), 2);

    // Deliver only version 2: the projector must fetch version 1 itself.
    let log: Arc<dyn EventLog> = Arc::new(store.clone());
    let projector =
        Projector::new(views.clone(), Arc::new(OrdersProjection), log, Arc::new(BroadcastNotifier::new(16)));
    projector.handle(&carried[1]).await.expect("projected");
    let orders = OrderRepository::new(ViewStore::new(views));
    let view = orders.get(&order_id.to_string()).await.expect("query").expect("the order is in the view");
    assert_eq!(view.version, 2);
    assert_eq!(view.status, OrderStatus::Cancelled);

    // The late version 1, and a repeat of version 2, change nothing.
    projector.handle(&carried[0]).await.expect("skipped");
    projector.handle(&carried[1]).await.expect("skipped");
    assert_eq!(orders.get(&order_id.to_string()).await.expect("query"), Some(view));
}

async fn the_outbox_relay_publishes_what_the_handler_could_not(backend: Backend) {
    let isolation = Isolation::new(backend).await;
    let (store, _views) = stores(&isolation).await;
    let transport = Arc::new(FlakyPublisher { up: AtomicBool::new(false), carried: Default::default() });
    let handler = handler(&store, transport.clone());
    let order_id = Uuid::now_v7();
    let outcome = handler.handle(&command(order_id, place())).await.expect("decided despite the transport");
    assert_eq!(outcome.status, schema::OutcomeStatus::Accepted);
    handler.handle(&command(order_id, cancel("x"))).await.expect("decided");
    assert!(transport.carried.lock().expect("lock").is_empty());

    transport.up.store(true, Ordering::SeqCst);
    let relay = OutboxRelay::new(store.clone(), transport.clone(), RelaySettings::default());
    assert_eq!(relay.publish_stranded(std::time::Duration::ZERO).await.expect("relayed"), 2);
    let carried = transport.carried.lock().expect("lock").clone();
    let versions: Vec<u64> = carried.iter().map(|event| event.stream_version).collect();
    assert_eq!(versions, vec![1, 2], "in stream order");
    assert_eq!(relay.publish_stranded(std::time::Duration::ZERO).await.expect("relayed"), 0, "nothing twice");
}

async fn rebuilding_the_views_from_the_event_store_gives_the_same_rows(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let customer = app.shop().await;
    let poor = app.register_customer(100).await;
    let mut orders = Vec::new();
    for n in 0..6 {
        let who = if n == 5 { &poor } else { &customer };
        let placed = app.place_order(who, items(), None).await;
        let id = placed["orderId"].as_str().expect("an order id").to_string();
        app.wait_for_order(&id, "final", |order| !order.is_null() && order["status"] != "PENDING").await;
        if n % 3 == 0 {
            assert_eq!(app.cancel_order(&id, "rebuild", None).await["status"], "ACCEPTED");
        }
        orders.push((id, n % 3 == 0));
    }
    // Wait until every saga is done: cancelled orders refunded and released.
    for (id, cancelled) in &orders {
        if *cancelled {
            app.wait_for_order(id, "refunded and released", |order| {
                order["paymentStatus"] == "REFUNDED" && order["stockStatus"] == "RELEASED"
            })
            .await;
        }
    }
    let rejected = app.order(&orders[5].0).await;
    assert_eq!(rejected["rejectionCode"], "PAYMENT_DECLINED", "{rejected}");
    app.wait_for_order(&orders[5].0, "released", |order| order["stockStatus"] == "RELEASED").await;
    assert_views_match_a_replay(&app.store, &app.gateway_views).await;
}

async fn a_restarted_system_keeps_its_orders_and_resumes_projecting(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let customer = app.shop().await;
    let before = app.place_order(&customer, items(), None).await;
    let before_id = before["orderId"].as_str().expect("an order id").to_string();
    app.wait_for_order(&before_id, "confirmed", |order| order["status"] == "CONFIRMED").await;

    let app = TestApp::spawn_in(app.stop().await).await;
    assert_eq!(app.order(&before_id).await["status"], "CONFIRMED");
    let cancelled = app.cancel_order(&before_id, "after restart", None).await;
    assert_eq!(cancelled["status"], "ACCEPTED", "{cancelled}");
    let after = app.place_order(&customer, items(), None).await;
    let after_id = after["orderId"].as_str().expect("an order id");
    app.wait_for_order(&before_id, "refunded", |order| order["paymentStatus"] == "REFUNDED").await;
    app.wait_for_order(after_id, "confirmed", |order| order["status"] == "CONFIRMED").await;
}
