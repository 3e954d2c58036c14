//! How a lane stamps events: never committed long after their stamps
//! (what `StreamEvents`' settle window rests on), and each stream's stamps
//! rising with its versions whatever the clocks do.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use schema::ports::EventLog;
use schema::product::{AddProduct, ProductCommand, ReserveStock};
use schema::sql::to_micros;
use schema::{CommandEnvelope, EventEnvelope, Metadata, OutcomeStatus};
use uuid::Uuid;

use super::{Attached, Attachment, CommitHook, Decision, LaneSettings, SqlEventStore};
use crate::product::Product;

/// Makes the next transaction it runs in slow, and fail as a serialization
/// failure would when `fail` is set.
struct SlowNext {
    slow: AtomicBool,
    pause: Duration,
    fail: bool,
}

#[async_trait::async_trait]
impl CommitHook for SlowNext {
    async fn within(
        &self,
        _conn: &mut sqlx::AnyConnection,
        _events: &[EventEnvelope],
        attached: &[(&Attachment, &Decision)],
    ) -> Result<Vec<Option<Attached>>, sqlx::Error> {
        if self.slow.swap(false, Ordering::SeqCst) {
            tokio::time::sleep(self.pause).await;
            if self.fail {
                return Err(sqlx::Error::Io(std::io::Error::other("injected: could not serialize access")));
            }
        }
        Ok(attached.iter().map(|_| None).collect())
    }

    fn committed(&self, _events: &[EventEnvelope]) {}
}

async fn store(deadline: Duration) -> SqlEventStore {
    let pool = schema::sql::connect("sqlite::memory:", 1).await.expect("sqlite");
    let settings = LaneSettings { lanes: 1, append_deadline: deadline, ..LaneSettings::default() };
    let store = SqlEventStore::with_lanes(pool, settings);
    store.migrate().await.expect("migrate");
    store
}

async fn run(store: &SqlEventStore, command: ProductCommand) -> Decision {
    let id = Uuid::now_v7();
    let envelope = CommandEnvelope::new(id, "product", "lamp", Metadata::origin(id, "test"), &command);
    let decision = store.execute::<Product>(&envelope, command).await.expect("decided");
    assert_eq!(decision.outcome.status, OutcomeStatus::Accepted, "{decision:?}");
    decision
}

fn add() -> ProductCommand {
    ProductCommand::AddProduct(AddProduct { name: "Lamp".into(), price_cents: 100, initial_stock: 5 })
}

fn reserve(order_id: &str) -> ProductCommand {
    ProductCommand::ReserveStock(ReserveStock {
        order_id: order_id.into(),
        quantity: 1,
        expected_unit_price_cents: None,
        credit_limit_cents: None,
    })
}

async fn stored(store: &SqlEventStore) -> Vec<EventEnvelope> {
    store.read_stream("product", "lamp", 1, u64::MAX).await.expect("stream")
}

/// Checks that `decision`'s events are the stored ones, stamped no earlier than `after` (µs).
async fn stamped_after(store: &SqlEventStore, decision: &Decision, after: i64) {
    let events = stored(store).await;
    let last = events.last().expect("an event");
    assert_eq!(decision.new_events.len(), 1);
    assert_eq!(decision.new_events[0].id, last.id, "written once");
    assert_eq!(decision.new_events[0].timestamp, last.timestamp, "the caller hears the stored stamp");
    assert!(to_micros(last.timestamp) >= after, "stamped by the attempt that committed");
}

#[tokio::test]
async fn a_batch_written_again_after_a_serialization_failure_carries_the_time_of_that_attempt() {
    let store = store(Duration::from_secs(10)).await;
    let hook = Arc::new(SlowNext { slow: AtomicBool::new(false), pause: Duration::from_millis(300), fail: true });
    store.set_commit_hook(hook.clone()).expect("hook");
    run(&store, add()).await;

    hook.slow.store(true, Ordering::SeqCst);
    let failed_by = to_micros(Utc::now()) + 300_000;
    let decision = run(&store, reserve("order-1")).await;
    assert!(!hook.slow.load(Ordering::SeqCst), "the first transaction failed");
    stamped_after(&store, &decision, failed_by).await;
}

#[tokio::test]
async fn an_append_past_its_deadline_is_rolled_back_and_written_again_with_new_stamps() {
    let store = store(Duration::from_millis(100)).await;
    let hook = Arc::new(SlowNext { slow: AtomicBool::new(false), pause: Duration::from_millis(300), fail: false });
    store.set_commit_hook(hook.clone()).expect("hook");
    run(&store, add()).await;

    hook.slow.store(true, Ordering::SeqCst);
    let late_by = to_micros(Utc::now()) + 300_000;
    let decision = run(&store, reserve("order-1")).await;
    assert!(!hook.slow.load(Ordering::SeqCst), "the slow transaction ran");
    stamped_after(&store, &decision, late_by).await;
    assert_eq!(stored(&store).await.len(), 2, "the late attempt left nothing");
}

#[tokio::test]
async fn a_streams_stamps_rise_with_its_versions_even_after_a_clock_ahead() {
    let store = store(Duration::from_secs(10)).await;
    run(&store, add()).await;
    // Another writer's clock ran an hour ahead.
    let ahead = to_micros(Utc::now()) + 3_600_000_000;
    sqlx::query("UPDATE events SET occurred_at = $1").bind(ahead).execute(store.pool()).await.expect("update");
    // A fresh process reads the stream back; two commands in quick succession.
    let fresh = SqlEventStore::with_lanes(store.pool().clone(), LaneSettings { lanes: 1, ..LaneSettings::default() });
    let first = run(&fresh, reserve("order-1")).await;
    let second = run(&fresh, reserve("order-2")).await;
    let stamps: Vec<i64> = stored(&fresh).await.iter().map(|event| to_micros(event.timestamp)).collect();
    assert_eq!(stamps, [ahead, ahead + 1, ahead + 2], "each a microsecond after the one before");
    assert_eq!(to_micros(first.new_events[0].timestamp), ahead + 1);
    assert_eq!(to_micros(second.new_events[0].timestamp), ahead + 2);
}
