//! The GraphQL schema, one module per area; each owns its types and resolvers.

mod commands;
mod customers;
pub mod errors;
mod loaders;
mod orders;
mod pagination;
mod products;

use std::sync::Arc;
use std::time::Duration;

use async_graphql::dataloader::DataLoader;
use async_graphql::extensions::apollo_persisted_queries::{ApolloPersistedQueries, LruCacheStorage};
use async_graphql::{MergedObject, MergedSubscription, Schema, SchemaBuilder};
use read_side::ViewStore;
use read_side::customers::CustomerRepository;
use read_side::orders::OrderRepository;
use read_side::products::ProductRepository;
use schema::ports::{CommandBus, EventLog, Notifier};
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::limits::{EdgeLimits, QueryLimits};

use customers::{CustomerMutation, CustomerQuery};
use loaders::{CustomerLoader, ProductLoader, TimelineLoader};
pub use orders::{AnswerKey, OrderCache, ReadLog};
use orders::{LiveLists, LiveOrders, OrderMutation, OrderQuery, OrderSubscription};
use products::{ProductMutation, ProductQuery};

#[derive(MergedObject, Default)]
pub struct Query(OrderQuery, CustomerQuery, ProductQuery);

#[derive(MergedObject, Default)]
pub struct Mutation(OrderMutation, CustomerMutation, ProductMutation);

#[derive(MergedSubscription, Default)]
pub struct Subscription(OrderSubscription);

pub type ConveyorSchema = Schema<Query, Mutation, Subscription>;

/// What resolvers reach through the context.
#[derive(Clone)]
pub struct Services {
    pub bus: Arc<dyn CommandBus>,
    pub orders: OrderRepository,
    pub customers: CustomerRepository,
    pub products: ProductRepository,
    pub notifier: Arc<dyn Notifier>,
    /// The rows and pages `order` and `orders` answered, until they change.
    pub order_cache: OrderCache,
    /// The orders `orderUpdated` follows, each watched and read once for
    /// all of its subscribers.
    pub live_orders: LiveOrders,
    /// The live order lists `ordersUpdated` follows, each scope (every
    /// order, one customer's) watched and read once for all of its subscribers.
    pub live_lists: LiveLists,
    /// How long a mutation waits for the write side's decision before PENDING.
    pub mutation_wait: Duration,
    /// Ends subscriptions when the server shuts down.
    pub shutdown: CancellationToken,
    /// Whether a mutation may be dispatched now (invariant 9).
    pub admission: Admission,
    /// The event store, read-only, for the gRPC `EventStore` service;
    /// `None`: that service answers UNIMPLEMENTED.
    pub events: Option<Arc<dyn EventLog>>,
}

impl Services {
    /// The repositories over one view store, with the other dependencies.
    pub fn new(
        bus: Arc<dyn CommandBus>,
        views: ViewStore,
        notifier: Arc<dyn Notifier>,
        mutation_wait: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        let orders = OrderRepository::new(views.clone());
        let order_cache = OrderCache::new(orders.clone());
        // Without a runtime (never in a server) the cache keeps nothing.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(order_cache.clone().listen(notifier.clone(), shutdown.clone()));
        }
        Self {
            bus,
            live_orders: LiveOrders::new(notifier.clone(), order_cache.clone()),
            live_lists: LiveLists::new(notifier.clone(), order_cache.clone()),
            order_cache,
            orders,
            customers: CustomerRepository::new(views.clone()),
            products: ProductRepository::new(views),
            notifier,
            mutation_wait,
            shutdown,
            admission: Admission::unlimited(),
            events: None,
        }
    }

    /// The same, reading the event store through `events`.
    pub fn with_event_log(self, events: Arc<dyn EventLog>) -> Self {
        Self { events: Some(events), ..self }
    }

    /// The same, with the edge's limits.
    pub fn with_admission(self, admission: Admission) -> Self {
        Self { admission, ..self }
    }
}

/// Queries kept by their hash for automatic persisted queries.
const PERSISTED_QUERIES: usize = 1024;

/// Directives allowed on one field (each is evaluated).
const MAX_DIRECTIVES: usize = 8;

/// The schema, with one set of limits for every operation, introspection
/// included (see [`crate::limits`]).
fn builder(limits: QueryLimits) -> SchemaBuilder<Query, Mutation, Subscription> {
    Schema::build(Query::default(), Mutation::default(), Subscription::default())
        .limit_depth(limits.max_depth)
        .limit_complexity(limits.max_complexity)
        .limit_directives(MAX_DIRECTIVES)
        // Outermost: it sees every answer, refusals by the limits included.
        .extension(crate::metrics::GraphqlMetrics)
        .extension(ApolloPersistedQueries::new(LruCacheStorage::new(PERSISTED_QUERIES)))
        .extension(EdgeLimits(limits))
        .extension(orders::KeptFields)
}

pub fn build(services: Services, introspection: bool, limits: QueryLimits) -> ConveyorSchema {
    let spawner = |future| {
        tokio::spawn(future);
    };
    let builder = builder(limits)
        .data(DataLoader::new(CustomerLoader(services.customers.clone()), spawner))
        .data(DataLoader::new(ProductLoader(services.products.clone()), spawner))
        .data(DataLoader::new(TimelineLoader(services.orders.clone()), spawner))
        .data(services);
    if introspection { builder.finish() } else { builder.disable_introspection().finish() }
}

/// The schema in SDL, as exported to `schema/graphql/conveyor.graphql`.
pub fn sdl() -> String {
    builder(QueryLimits::default()).finish().sdl()
}

#[cfg(test)]
mod tests {
    /// Fails when the code's schema and the exported file differ;
    /// `scripts/export-schema` rewrites the file.
    #[test]
    fn the_exported_schema_is_the_codes_schema() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../schema/graphql/conveyor.graphql");
        let exported = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            exported == super::sdl(),
            "schema/graphql/conveyor.graphql is out of date: run scripts/export-schema and commit it"
        );
    }
}
