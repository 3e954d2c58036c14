//! Conveyor's write side: aggregates decide, the SQL event store appends
//! (optimistic concurrency, exactly-once outcomes), the outbox relay
//! guarantees publication.
//!
//! The domain code ([`order`], [`handler`]) is the same in both run modes;
//! [`nats`] and [`embedded`] are the transport adapters.

pub mod aggregate;
pub mod backlog;
pub mod customer;
pub mod embedded;
pub mod event_store;
pub mod handler;
pub mod nats;
pub mod order;
pub mod origin;
pub mod outbox;
pub mod payment;
pub mod payment_provider;
pub mod product;
pub mod saga;
mod stream_locks;

pub use backlog::SqlBacklog;
pub use embedded::InProcessCommandBus;
pub use event_store::{
    APPEND_DEADLINE, Attached, Attachment, CommitHook, LaneSettings, SqlEventStore, StoreError, lane_settings_for,
};
pub use handler::{AGGREGATES, CommandHandler};
pub use outbox::{OutboxRelay, RelaySettings};
pub use payment_provider::{PaymentProvider, SimulatedProvider};
pub use saga::{SagaRunner, SagaSettings, StepRoute};

/// Creates the write side's tables (events, outcomes, outbox, sagas) if
/// needed, under the side's migration lease (see [`schema::migration`]);
/// `migrations/postgres` serves PostgreSQL and CockroachDB,
/// `migrations/sqlite` the embedded mode.
pub async fn migrate(pool: &sqlx::AnyPool) -> Result<(), sqlx::migrate::MigrateError> {
    schema::migration::migrate(
        pool,
        schema::migration::Migrations {
            postgres: sqlx::migrate!("./migrations/postgres"),
            sqlite: sqlx::migrate!("./migrations/sqlite"),
            table: "_write_side_migrations",
        },
    )
    .await
}
