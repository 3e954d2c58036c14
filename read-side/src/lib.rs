//! Conveyor's read side: projectors turn events into SQL views, exactly
//! once and in stream order; repositories answer the gateway's queries.
//!
//! Projections ([`orders`], [`customers`], [`products`]) and the [`projector`] are shared by both run
//! modes; [`nats`] and [`embedded`] are the transport adapters; [`rebuild`]
//! rebuilds one view beside the live one and switches it in.

pub mod customers;
pub mod embedded;
pub mod nats;
pub mod orders;
pub mod products;
pub mod projection;
pub mod projector;
pub mod rebuild;
pub mod views;

use std::sync::Arc;

use sqlx::AnyPool;

pub use projection::{Projection, ProjectionError, ViewTx};
pub use projector::{Projector, ProjectorCounts};
pub use views::ViewStore;

/// What a failed view read returns (the gateway names it without depending on sqlx).
pub type ReadError = sqlx::Error;

/// Creates the view tables if needed, under the side's migration lease (see
/// [`schema::migration`]); `migrations/postgres` serves PostgreSQL and
/// CockroachDB, `migrations/sqlite` the embedded mode.
pub async fn migrate(pool: &AnyPool) -> Result<(), sqlx::migrate::MigrateError> {
    schema::migration::migrate(
        pool,
        schema::migration::Migrations {
            postgres: sqlx::migrate!("./migrations/postgres"),
            sqlite: sqlx::migrate!("./migrations/sqlite"),
            table: "_read_side_migrations",
        },
    )
    .await
}

/// Every projection this build maintains.
pub fn projections() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(orders::OrdersProjection),
        Arc::new(customers::CustomersProjection),
        Arc::new(products::ProductsProjection),
    ]
}
