//! A saga's state saved in its step's own transaction. When a round has
//! one step and its handler runs in this process, the step's command
//! carries the saga as it stands ([`Ride`], an attachment for the event
//! store's commit hook). Inside the transaction that decides the command,
//! the hook reads the step's result off the decision, folds it into the
//! saga, and stores the saga with the usual version check — one multi-row
//! `UPDATE` for every saga riding in the batch. The step and the saga's
//! record of it then commit together: no separate save, no second commit.
//!
//! What the hook cannot tell from the decision alone (a reservation made
//! by an earlier delivery, whose price is in an older event) it leaves
//! alone, and the runner saves as before.

use sqlx::AnyConnection;

use super::steps::{events_at_hand, result_at_hand};
use super::store::Stored;
use super::writer::{Save, write_saves};
use super::{SagaSettings, Step};
use crate::event_store::{Attached, Attachment, Decision};

/// The saga, riding on its one step's command.
pub(super) struct Ride {
    pub stored: Stored,
    pub step: Step,
}

/// What became of a ride.
pub(super) enum Ridden {
    /// Stored with the step's result: the saga as it now is.
    Saved(Box<Stored>),
    /// Not stored: someone changed the saga meanwhile (a cancellation),
    /// so the runner reads it again. The step's decision stands.
    Stale,
}

/// Saves the riding sagas in the step's transaction; one answer per
/// attachment (`None`: not a ride, or its result needs a read).
pub(super) async fn save_rides(
    conn: &mut AnyConnection,
    settings: &SagaSettings,
    attached: &[(&Attachment, &Decision)],
    now: i64,
) -> Result<Vec<Option<Attached>>, sqlx::Error> {
    let mut answers: Vec<Option<Attached>> = attached.iter().map(|_| None).collect();
    let mut riding: Vec<(usize, Stored, Save)> = Vec::new();
    for (index, (attachment, decision)) in attached.iter().enumerate() {
        let Some(ride) = attachment.downcast_ref::<Ride>() else { continue };
        let Some(result) = result_at_hand(
            &ride.step,
            &ride.stored.saga.order_id,
            &decision.outcome,
            events_at_hand(&decision.outcome, &decision.new_events),
        ) else {
            continue;
        };
        let mut stored = ride.stored.clone();
        stored.saga.record(&ride.step, result, now);
        let state = serde_json::to_string(&stored.saga).map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
        let save = Save {
            saga_id: stored.saga.order_id.clone(),
            version: stored.version,
            state,
            active: stored.should_be_active(),
            // Still running: its lease from the intake stands (a row that
            // changes no indexed column conflicts less, and is updated in
            // place). At rest: `active` changes anyway.
            next_attempt_at: (!stored.should_be_active()).then_some(now + settings.lease().as_micros() as i64),
        };
        riding.push((index, stored, save));
    }
    if riding.is_empty() {
        return Ok(answers);
    }
    let saves: Vec<&Save> = riding.iter().map(|(_, _, save)| save).collect();
    let saved = write_saves(conn, &saves).await?;
    for (index, mut stored, save) in riding {
        let ridden = if saved.contains(&save.saga_id) {
            stored.version += 1;
            stored.active = save.active;
            Ridden::Saved(Box::new(stored))
        } else {
            Ridden::Stale
        };
        answers[index] = Some(Attached(Box::new(ridden)));
    }
    Ok(answers)
}

/// The runner's side: what the hook made of a ride, if anything.
pub(super) fn ridden(attached: Option<Attached>) -> Option<Ridden> {
    attached.and_then(|Attached(answer)| answer.downcast::<Ridden>().ok()).map(|ridden| *ridden)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use schema::customer::{CustomerCommand, RegisterCustomer};
    use schema::envelope::Message;
    use schema::order::{OrderCommand, OrderLine, PlaceOrder};
    use schema::product::{AddProduct, ProductCommand};
    use schema::{CommandEnvelope, Metadata, OutcomeStatus};
    use tokio_util::sync::CancellationToken;
    use uuid::Uuid;

    use crate::payment_provider::SimulatedProvider;
    use crate::saga::{Phase, SagaRunner, SagaSettings, StepRoute};
    use crate::{AGGREGATES, CommandHandler, SqlEventStore};

    async fn send<C: Message>(handler: &CommandHandler, aggregate: &str, id: &str, command: &C) {
        let command_id = Uuid::now_v7();
        let envelope = CommandEnvelope::new(command_id, aggregate, id, Metadata::origin(command_id, "test"), command);
        let outcome = handler.handle(&envelope).await.expect("handled");
        assert_eq!(outcome.status, OutcomeStatus::Accepted, "{outcome:?}");
    }

    /// The saga's phase once it is at rest, within a bounded wait.
    async fn settled_phase(runner_pool: &sqlx::AnyPool, order_id: &str) -> (Phase, i64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let row: Option<(String, i64, i64)> =
                sqlx::query_as("SELECT state, version, active FROM sagas WHERE saga_id = $1")
                    .bind(order_id)
                    .fetch_optional(runner_pool)
                    .await
                    .expect("read saga");
            if let Some((state, version, 0)) = row {
                let saga: crate::saga::Fulfillment = serde_json::from_str(&state).expect("saga state");
                return (saga.phase, version);
            }
            assert!(tokio::time::Instant::now() < deadline, "saga {order_id} not at rest within 20 s: {row:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_step_saves_the_saga_in_its_own_transaction() {
        let pool = schema::sql::connect("sqlite::memory:", 1).await.expect("sqlite");
        let store = SqlEventStore::new(pool.clone());
        store.migrate().await.expect("migrate");
        let handler = CommandHandler::new(store.clone(), Arc::new(SimulatedProvider::default()));
        let runner = SagaRunner::new(store, StepRoute::local(handler.clone(), AGGREGATES), SagaSettings::default())
            .expect("runner");
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(runner.clone().run(shutdown.clone()));

        let register = CustomerCommand::RegisterCustomer(RegisterCustomer {
            name: "Ada".into(),
            email: "ada@example.com".into(),
            credit_limit_cents: 1_000_000,
        });
        send(&handler, "customer", "ada", &register).await;
        for sku in ["lamp", "desk"] {
            let add =
                ProductCommand::AddProduct(AddProduct { name: sku.into(), price_cents: 1_000, initial_stock: 10 });
            send(&handler, "product", sku, &add).await;
        }
        let line = |sku: &str| OrderLine { sku: sku.into(), quantity: 1, expected_unit_price_cents: None };

        // One line: check the customer (a read), reserve, authorize,
        // confirm — every save rode on its step.
        let place = OrderCommand::PlaceOrder(PlaceOrder { customer_id: "ada".into(), items: vec![line("lamp")] });
        send(&handler, "order", "order-1", &place).await;
        let (phase, version) = settled_phase(&pool, "order-1").await;
        assert_eq!(phase, Phase::Confirmed);
        assert_eq!(runner.saves_apart(), 0, "no save apart from a step");
        assert_eq!(version, 4, "inserted, then saved with the reservation, the authorization and the confirmation");

        // Two lines: both reservations run at once, so that round's save
        // is one of its own; the rest still ride.
        let place =
            OrderCommand::PlaceOrder(PlaceOrder { customer_id: "ada".into(), items: vec![line("lamp"), line("desk")] });
        send(&handler, "order", "order-2", &place).await;
        let (phase, _) = settled_phase(&pool, "order-2").await;
        assert_eq!(phase, Phase::Confirmed);
        assert_eq!(runner.saves_apart(), 1, "only the concurrent round saved apart");

        shutdown.cancel();
        running.await.expect("runner stopped");
    }
}
