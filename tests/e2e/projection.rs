//! The read side's guarantees: gap repair from the event store, the outbox
//! relay, a rebuild that gives the same rows, and resuming after a restart;
//! and what keeps projectors up with the write side: batches that cost two
//! checkpoint statements however many events they hold, and workers that
//! apply streams in parallel, each in its order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use futures::stream::{self, BoxStream, StreamExt};
use read_side::customers::CustomersProjection;
use read_side::embedded::BroadcastNotifier;
use read_side::orders::{OrderRepository, OrderStatus, OrdersProjection};
use read_side::projector::BATCH;
use read_side::{Projection, Projector, ProjectorCounts, ViewStore};
use schema::order::{CancelOrder, OrderCommand, OrderLine, PlaceOrder};
use schema::ports::{
    Acknowledge, EventDelivery, EventFeed, EventLog, EventPublisher, PortError, StreamHead, StreamPosition, TimeCursor,
};
use schema::{CommandEnvelope, EventEnvelope, Metadata};
use uuid::Uuid;
use write_side::{CommandHandler, OutboxRelay, RelaySettings, SimulatedProvider};

use crate::helpers::{
    Backend, Isolation, TestApp, ViewSnapshot, assert_views_match_a_replay, customer, is_final, items, snapshot,
};

crate::on_both_backends!(
    a_projector_repairs_a_gap_from_the_event_store,
    a_batch_of_ready_events_with_a_gap_and_a_repeat_converges,
    the_outbox_relay_publishes_what_a_crash_left_unpublished,
    rebuilding_the_views_from_the_event_store_gives_the_same_rows,
    a_restarted_system_keeps_its_orders_and_resumes_projecting,
    a_batch_costs_two_checkpoint_statements_however_many_events_it_holds,
    workers_apply_many_streams_at_once_each_in_stream_order,
    a_burst_projected_by_four_workers_per_view_equals_a_replay,
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

/// A feed that has a fixed list of events ready at once, then ends; counts acks.
struct ReadyFeed {
    events: std::sync::Mutex<Vec<EventEnvelope>>,
    acked: Arc<AtomicUsize>,
}

struct CountingAck(Arc<AtomicUsize>);

#[async_trait]
impl Acknowledge for CountingAck {
    async fn ack(self: Box<Self>) -> Result<(), PortError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn retry(self: Box<Self>, _delay: Duration) -> Result<(), PortError> {
        Ok(())
    }
    async fn dead_letter(self: Box<Self>, _source: &str, reason: &str) -> Result<(), PortError> {
        panic!("nothing here is forged or unreadable, yet dead-lettered: {reason}");
    }
    fn delivered(&self) -> u64 {
        1
    }
    fn is_last_delivery(&self) -> bool {
        false
    }
}

#[async_trait]
impl EventFeed for ReadyFeed {
    async fn subscribe(
        &self,
        _consumer: &str,
        _aggregate_types: &[&str],
    ) -> Result<BoxStream<'static, Result<EventDelivery, PortError>>, PortError> {
        let events = std::mem::take(&mut *self.events.lock().expect("lock"));
        let acked = self.acked.clone();
        Ok(stream::iter(
            events
                .into_iter()
                .map(move |event| Ok(EventDelivery { event: Ok(event), ack: Box::new(CountingAck(acked.clone())) })),
        )
        .boxed())
    }
}

/// The event store and the views of an isolation, migrated, with no system
/// running; the store publishes what it commits through `transport`, or
/// nothing (as after a crash) without one.
async fn stores(
    isolation: &Isolation,
    transport: Option<Arc<FlakyPublisher>>,
) -> (write_side::SqlEventStore, sqlx::AnyPool) {
    let (store_pool, views_pool) = isolation.pools().await;
    let store = match transport {
        Some(transport) => {
            let lanes = write_side::lane_settings_for(&store_pool);
            write_side::SqlEventStore::publishing(store_pool, transport, lanes)
        }
        None => write_side::SqlEventStore::new(store_pool),
    };
    store.migrate().await.expect("event store migrates");
    read_side::migrate(&views_pool).await.expect("views migrate");
    (store, views_pool)
}

fn handler(store: &write_side::SqlEventStore) -> CommandHandler {
    CommandHandler::new(store.clone(), Arc::new(SimulatedProvider::default()))
}

/// What the transport carried once it carried `count` events (publication
/// follows the commit, off the caller's path).
async fn carried(transport: &FlakyPublisher, count: usize) -> Vec<EventEnvelope> {
    tokio::time::timeout(crate::helpers::WAIT, async {
        loop {
            let carried = transport.carried.lock().expect("lock").clone();
            if carried.len() >= count {
                return carried;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the transport did not carry {count} events in time"))
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
    let transport = Arc::new(FlakyPublisher { up: AtomicBool::new(true), carried: Default::default() });
    let (store, views) = stores(&isolation, Some(transport.clone())).await;
    let handler = handler(&store);
    let order_id = Uuid::now_v7();
    handler.handle(&command(order_id, place())).await.expect("placed");
    handler.handle(&command(order_id, cancel("gap"))).await.expect("cancelled");
    let carried = carried(&transport, 2).await;
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

async fn a_batch_of_ready_events_with_a_gap_and_a_repeat_converges(backend: Backend) {
    let isolation = Isolation::new(backend).await;
    let transport = Arc::new(FlakyPublisher { up: AtomicBool::new(true), carried: Default::default() });
    let (store, views) = stores(&isolation, Some(transport.clone())).await;
    let handler = handler(&store);
    let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    for order in [a, b, c] {
        handler.handle(&command(order, place())).await.expect("placed");
        handler.handle(&command(order, cancel("batch"))).await.expect("cancelled");
    }
    let carried = carried(&transport, 6).await;
    let (a2, b1, b2, c1, c2) = (&carried[1], &carried[2], &carried[3], &carried[4], &carried[5]);
    let log: Arc<dyn EventLog> = Arc::new(store.clone());
    let orders = OrderRepository::new(ViewStore::new(views.clone()));
    let acked = Arc::new(AtomicUsize::new(0));
    // All ready at once, so each run applies them as one batch; `run` ends with its feed.
    let run = |ready: Vec<&EventEnvelope>| {
        let feed = Arc::new(ReadyFeed {
            events: std::sync::Mutex::new(ready.into_iter().cloned().collect()),
            acked: acked.clone(),
        });
        let projector = Projector::new(
            views.clone(),
            Arc::new(OrdersProjection),
            log.clone(),
            Arc::new(BroadcastNotifier::new(64)),
        );
        projector.run(feed, false, tokio_util::sync::CancellationToken::new())
    };
    let state = |order: Uuid| {
        let orders = orders.clone();
        async move {
            let view = orders.get(&order.to_string()).await.expect("query").expect("in the view");
            (view.version, view.status)
        }
    };

    // A clean batch: c's whole stream, b's first event, and a repeat.
    run(vec![c1, c2, b1, c1]).await;
    assert_eq!(acked.load(Ordering::SeqCst), 4, "every delivery is acknowledged");
    assert_eq!(state(c).await, (2, OrderStatus::Cancelled));
    assert_eq!(state(b).await, (1, OrderStatus::Pending));
    // A batch with a gap (a's second event without its first): it is rolled
    // back and applied one by one, the gap repaired from the event store.
    run(vec![a2, b2, b1]).await;
    assert_eq!(acked.load(Ordering::SeqCst), 7, "every delivery is acknowledged");
    for order in [a, b, c] {
        assert_eq!(state(order).await, (2, OrderStatus::Cancelled), "order {order}");
    }
}

async fn the_outbox_relay_publishes_what_a_crash_left_unpublished(backend: Backend) {
    let isolation = Isolation::new(backend).await;
    // No publication after the commits: as if the process died right after them.
    let (store, _views) = stores(&isolation, None).await;
    let transport = Arc::new(FlakyPublisher { up: AtomicBool::new(false), carried: Default::default() });
    let handler = handler(&store);
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
    assert_eq!(rejected["rejectionCode"], "CREDIT_LIMIT_EXCEEDED", "{rejected}");
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

/// Every projection replayed from `log` into fresh views of `backend`'s
/// kind, `batch` events per transaction: what each cost, and the rows.
async fn replay(
    backend: Backend,
    log: Arc<dyn EventLog>,
    batch: usize,
) -> (Vec<(String, ProjectorCounts)>, ViewSnapshot) {
    let isolation = Isolation::new(backend).await;
    let (_, views) = isolation.pools().await;
    read_side::migrate(&views).await.expect("views migrate");
    let mut counts = Vec::new();
    for projection in read_side::projections() {
        let name = projection.name().to_string();
        let projector = Projector::new(views.clone(), projection, log.clone(), Arc::new(BroadcastNotifier::new(16)))
            .with_batch(batch);
        projector.catch_up().await.expect("replayed");
        counts.push((name, projector.counts()));
    }
    let rows = snapshot(&ViewStore::new(views.clone())).await;
    views.close().await;
    (counts, rows)
}

async fn a_batch_costs_two_checkpoint_statements_however_many_events_it_holds(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let customer = app.shop().await;
    let placed = join_all((0..12).map(|_| app.place_order(&customer, items(), None))).await;
    let ids: Vec<String> = placed.iter().map(|order| order["orderId"].as_str().expect("an order id").into()).collect();
    for id in &ids {
        app.wait_for_order(id, "confirmed", |order| order["status"] == "CONFIRMED").await;
    }
    // Cancellations add refunds and releases: every kind of step event.
    for id in &ids[..3] {
        assert_eq!(app.cancel_order(id, "costs", None).await["status"], "ACCEPTED");
        app.wait_for_order(id, "refunded and released", |order| {
            order["paymentStatus"] == "REFUNDED" && order["stockStatus"] == "RELEASED"
        })
        .await;
    }

    // The same events, applied one per transaction and then BATCH at a time.
    let log: Arc<dyn EventLog> = Arc::new(app.store.clone());
    let (one_by_one, alone) = replay(backend, log.clone(), 1).await;
    let (batched, together) = replay(backend, log, BATCH).await;
    assert_eq!(alone, together, "batching changes no row");
    for ((name, one), (_, many)) in one_by_one.iter().zip(&batched) {
        assert!(one.events > 0 && one.events == many.events, "{name}: {one:?} / {many:?}");
        // Nothing else writes these views: every attempt commits.
        assert_eq!((one.attempts, many.attempts), (one.commits, many.commits), "{name}");
        assert_eq!(one.commits, one.events, "{name}: one event per transaction");
        assert_eq!(many.commits, one.events.div_ceil(BATCH as u64), "{name}: {BATCH} events per transaction");
        assert_eq!(one.checkpoint_statements, 2 * one.commits, "{name}: {one:?}");
        assert_eq!(many.checkpoint_statements, 2 * many.commits, "{name}: one read, one write per batch: {many:?}");
        if name == "orders" {
            // An event's row (and, for a stock step, the order's lines read
            // first, one JSON column); its timeline entry is gathered with
            // the batch's others into a few multi-row statements.
            assert!(many.view_statements < one.view_statements, "{name}: timelines gathered: {one:?} / {many:?}");
            assert!(many.view_statements <= 2 * many.events + 2 * many.commits, "{name}: {many:?}");
        } else {
            assert_eq!(
                one.view_statements, many.view_statements,
                "{name}: an event's writes do not depend on its batch"
            );
            // No read before a write (the customers view: a customer's
            // row and the order's).
            let most = if name == "customers" { 2 } else { 1 };
            assert!(many.view_statements <= most * many.events, "{name}: {many:?}");
        }
    }
}

/// The event store, counting the reads of a stream (gap repairs).
struct CountingLog {
    store: write_side::SqlEventStore,
    reads: AtomicUsize,
}

#[async_trait]
impl EventLog for CountingLog {
    async fn read_stream(&self, kind: &str, id: &str, from: u64, to: u64) -> Result<Vec<EventEnvelope>, PortError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.store.read_stream(kind, id, from, to).await
    }
    async fn read_all(&self, after: Option<&StreamPosition>, limit: u32) -> Result<Vec<EventEnvelope>, PortError> {
        self.store.read_all(after, limit).await
    }
    async fn read_events(&self, ids: &[Uuid]) -> Result<Vec<EventEnvelope>, PortError> {
        self.store.read_events(ids).await
    }
    async fn stream_heads(&self) -> Result<Vec<StreamHead>, PortError> {
        self.store.stream_heads().await
    }
    async fn read_by_time(
        &self,
        types: &[&str],
        after: &TimeCursor,
        until: i64,
        limit: u32,
    ) -> Result<Vec<EventEnvelope>, PortError> {
        self.store.read_by_time(types, after, until, limit).await
    }
}

async fn workers_apply_many_streams_at_once_each_in_stream_order(backend: Backend) {
    let isolation = Isolation::new(backend).await;
    let transport = Arc::new(FlakyPublisher { up: AtomicBool::new(true), carried: Default::default() });
    let (store, views) = stores(&isolation, Some(transport.clone())).await;
    let handler = handler(&store);
    let orders: Vec<Uuid> = (0..40).map(|_| Uuid::now_v7()).collect();
    for order in &orders {
        handler.handle(&command(*order, place())).await.expect("placed");
    }
    for order in &orders {
        handler.handle(&command(*order, cancel("workers"))).await.expect("cancelled");
    }
    // Every stream's first event, then every second one, all ready at once.
    let carried = carried(&transport, 80).await;
    assert_eq!(carried.len(), 80);
    let log = Arc::new(CountingLog { store: store.clone(), reads: AtomicUsize::new(0) });
    let acked = Arc::new(AtomicUsize::new(0));
    let projectors: Vec<Projector> = [Arc::new(OrdersProjection) as Arc<dyn Projection>, Arc::new(CustomersProjection)]
        .into_iter()
        .map(|projection| {
            Projector::new(views.clone(), projection, log.clone(), Arc::new(BroadcastNotifier::new(256)))
                .with_batch(8)
                .with_workers(4)
        })
        .collect();
    join_all(projectors.iter().map(|projector| {
        let feed = Arc::new(ReadyFeed { events: std::sync::Mutex::new(carried.clone()), acked: acked.clone() });
        projector.clone().run(feed, false, tokio_util::sync::CancellationToken::new())
    }))
    .await;

    assert_eq!(acked.load(Ordering::SeqCst), 160, "every delivery is acknowledged");
    assert_eq!(
        log.reads.load(Ordering::SeqCst),
        0,
        "no event reached its worker before its stream's previous one, so nothing needed repair"
    );
    for projector in &projectors {
        assert_eq!(projector.counts().events, 80, "each event applied once: {:?}", projector.counts());
    }
    let repository = OrderRepository::new(ViewStore::new(views.clone()));
    for order in &orders {
        let view = repository.get(&order.to_string()).await.expect("query").expect("in the view");
        assert_eq!((view.version, view.status), (2, OrderStatus::Cancelled), "order {order}");
    }
    assert_views_match_a_replay(&store, &ViewStore::new(views)).await;
}

async fn a_burst_projected_by_four_workers_per_view_equals_a_replay(backend: Backend) {
    let isolation = Isolation::new(backend).await;
    let app = TestApp::spawn_configured(isolation, |common| common.projector_workers = 4).await;
    let customer = app.shop().await;
    let other = app.register_customer(10_000_000).await;
    // Each order's own stream, its two products' and its payment's: four
    // streams that change one order row, applied by different workers.
    let placed =
        join_all((0..40).map(|n| app.place_order(if n % 2 == 0 { &customer } else { &other }, items(), None))).await;
    let ids: Vec<String> = placed.iter().map(|order| order["orderId"].as_str().expect("an order id").into()).collect();
    for id in &ids {
        app.wait_for_order(id, "decided", is_final).await;
    }
    let cancelled = join_all(ids.iter().step_by(5).map(|id| app.cancel_order(id, "burst", None))).await;
    assert!(cancelled.iter().all(|answer| answer["status"] == "ACCEPTED"), "{cancelled:?}");
    for id in ids.iter().step_by(5) {
        app.wait_for_order(id, "refunded and released", |order| {
            order["paymentStatus"] == "REFUNDED" && order["stockStatus"] == "RELEASED"
        })
        .await;
    }
    assert_views_match_a_replay(&app.store, &app.gateway_views).await;
}
