//! How a lane retries: a serialization failure writes the batch's
//! decisions again from memory; nothing is read back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use schema::ports::EventLog;
use schema::product::{AddProduct, ProductCommand, ReserveStock};
use schema::{CommandEnvelope, EventEnvelope, Metadata, OutcomeStatus};
use uuid::Uuid;

use super::{Attached, Attachment, CommitHook, Decision, SqlEventStore};
use crate::product::Product;

/// Fails the next transaction it runs in, as a serialization failure would.
#[derive(Default)]
struct FailNext(AtomicBool);

#[async_trait::async_trait]
impl CommitHook for FailNext {
    async fn within(
        &self,
        _conn: &mut sqlx::AnyConnection,
        _events: &[EventEnvelope],
        attached: &[(&Attachment, &Decision)],
    ) -> Result<Vec<Option<Attached>>, sqlx::Error> {
        if self.0.swap(false, Ordering::SeqCst) {
            return Err(sqlx::Error::Io(std::io::Error::other("injected: could not serialize access")));
        }
        Ok(attached.iter().map(|_| None).collect())
    }

    fn committed(&self, _events: &[EventEnvelope]) {}
}

async fn run(store: &SqlEventStore, command: ProductCommand) -> Uuid {
    let id = Uuid::now_v7();
    let envelope = CommandEnvelope::new(id, "product", "lamp", Metadata::origin(id, "test"), &command);
    let decision = store.execute::<Product>(&envelope, command).await.expect("decided");
    assert_eq!(decision.outcome.status, OutcomeStatus::Accepted, "{decision:?}");
    id
}

fn reserve(order_id: &str) -> ProductCommand {
    ProductCommand::ReserveStock(ReserveStock {
        order_id: order_id.into(),
        quantity: 1,
        expected_unit_price_cents: None,
        credit_limit_cents: None,
    })
}

#[tokio::test]
async fn a_serialization_failure_writes_the_same_decisions_again_without_reading_the_stream_back() {
    let pool = schema::sql::connect("sqlite::memory:", 1).await.expect("sqlite");
    let store = SqlEventStore::new(pool);
    store.migrate().await.expect("migrate");
    let hook = Arc::new(FailNext::default());
    store.set_commit_hook(hook.clone()).expect("hook");

    run(&store, ProductCommand::AddProduct(AddProduct { name: "Lamp".into(), price_cents: 100, initial_stock: 5 }))
        .await;
    run(&store, reserve("order-1")).await;
    assert_eq!(store.streams_read(), 0, "a new stream, then its state in memory");

    hook.0.store(true, Ordering::SeqCst);
    let id = run(&store, reserve("order-2")).await;
    assert!(!hook.0.load(Ordering::SeqCst), "the first transaction failed");
    assert_eq!(store.streams_read(), 0, "the retry decided nothing again: the hot stream was not read back");

    let events = store.read_stream("product", "lamp", 1, u64::MAX).await.expect("stream");
    let types: Vec<(&str, u64)> = events.iter().map(|event| (event.type_name.as_str(), event.stream_version)).collect();
    assert_eq!(types, [("ProductAdded", 1), ("StockReserved", 2), ("StockReserved", 3)], "written once, in order");
    let outcome = store.outcome(id).await.expect("outcome").expect("stored");
    assert_eq!(outcome.stream_version, 3);
}
