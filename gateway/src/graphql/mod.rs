//! The GraphQL schema, one module per area; each owns its types and resolvers.

pub mod errors;
mod orders;

use std::sync::Arc;
use std::time::Duration;

use async_graphql::{MergedObject, MergedSubscription, Schema};
use read_side::orders::OrderRepository;
use schema::ports::{CommandBus, Notifier};
use tokio_util::sync::CancellationToken;

pub use orders::{OrderMutation, OrderQuery, OrderSubscription};

#[derive(MergedObject, Default)]
pub struct Query(OrderQuery);

#[derive(MergedObject, Default)]
pub struct Mutation(OrderMutation);

#[derive(MergedSubscription, Default)]
pub struct Subscription(OrderSubscription);

pub type ConveyorSchema = Schema<Query, Mutation, Subscription>;

/// What resolvers reach through the context.
#[derive(Clone)]
pub struct Services {
    pub bus: Arc<dyn CommandBus>,
    pub orders: OrderRepository,
    pub notifier: Arc<dyn Notifier>,
    /// How long a mutation waits for the write side's decision before PENDING.
    pub mutation_wait: Duration,
    /// Ends subscriptions when the server shuts down.
    pub shutdown: CancellationToken,
}

/// Nesting deeper than this is refused before execution.
pub const MAX_DEPTH: usize = 12;
/// Sum of field costs (connections cost their page size) allowed per request.
pub const MAX_COMPLEXITY: usize = 2_000;

pub fn build(services: Services) -> ConveyorSchema {
    Schema::build(Query::default(), Mutation::default(), Subscription::default())
        .data(services)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .finish()
}
