//! Orders: the `order`/`orders` queries (here), the `placeOrder`/
//! `cancelOrder`/`shipOrder` mutations, the `orderUpdated` and
//! `ordersUpdated` subscriptions (shared per order and per list scope),
//! and the types they share.

mod answers;
mod cache;
mod live;
mod live_list;
mod mutations;
mod subscription;
mod types;

use std::sync::Arc;

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{Context, Enum, Error, ID, Object};
use chrono::{DateTime, Utc};
use read_side::orders::{self as view, OrderCursor, OrderFilter, OrderView};

use crate::graphql::Services;
use crate::graphql::commands::{CommandResult, caller, outcome_parts};
use crate::graphql::errors::{coded, internal, parse_id, unavailable};
use crate::graphql::loaders::Prefetched;
use crate::graphql::pagination::{connection_complexity, decode_time_cursor, encode_time_cursor, page_size};

pub use answers::{AnswerKey, KeptFields, ReadLog};
pub use cache::OrderCache;
pub use live::LiveOrders;
pub use live_list::LiveLists;
pub use mutations::OrderMutation;
pub use subscription::OrderSubscription;
pub use types::{Order, OrderStatus};

/// A page of orders, with the filter's `totalCount`.
pub type OrderConnection = Connection<String, Order, OrderListFields, EmptyFields>;

/// What an orders connection answers beyond its page.
pub struct OrderListFields {
    filter: OrderFilter,
}

#[Object]
impl OrderListFields {
    /// How many orders the filter holds in all pages (one count, cached
    /// like the pages until an order changes).
    async fn total_count(&self, ctx: &Context<'_>) -> Result<i64, Error> {
        let services = ctx.data::<Services>()?;
        if let Some(log) = ctx.data_opt::<ReadLog>() {
            log.pages();
        }
        services.order_cache.count(&self.filter).await.map_err(internal)
    }
}

/// A connection over the `orders` view, in the filter's order.
pub async fn order_connection(
    ctx: &Context<'_>,
    filter: OrderFilter,
    first: Option<i32>,
    after: Option<String>,
) -> Result<OrderConnection, Error> {
    let services = ctx.data::<Services>()?;
    let first = page_size(first)?;
    let after = after.as_deref().map(decode_order_cursor).transpose()?;
    if let Some(log) = ctx.data_opt::<ReadLog>() {
        log.pages();
    }
    let page = services.order_cache.list(&filter, after.as_ref(), first + 1).await.map_err(internal)?;
    let has_next = page.len() > first as usize;
    let rows: Vec<_> = page.iter().take(first as usize).cloned().collect();
    let prefetched = Arc::new(Prefetched::for_orders(ctx, &rows).await?);
    let mut connection = Connection::with_additional_fields(after.is_some(), has_next, OrderListFields { filter });
    connection.edges.extend(rows.into_iter().map(|row| {
        let cursor = encode_time_cursor(row.placed_at.timestamp_micros(), &row.order_id);
        Edge::new(cursor, Order(row, Some(prefetched.clone())))
    }));
    Ok(connection)
}

fn decode_order_cursor(cursor: &str) -> Result<OrderCursor, Error> {
    let (placed_at_micros, order_id) = decode_time_cursor(cursor)?;
    Ok(OrderCursor { placed_at_micros, order_id })
}

/// The order of an orders list.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Default)]
pub enum OrderSort {
    /// Latest `placedAt` first (the default).
    #[default]
    NewestFirst,
    /// Earliest `placedAt` first.
    OldestFirst,
}

#[derive(Default)]
pub struct OrderQuery;

#[Object]
impl OrderQuery {
    /// One order, or null if no such order has been projected (or, for a
    /// customer, if it is another customer's: the same answer).
    async fn order(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Order>, Error> {
        let id = parse_id("id", &id)?;
        let caller = caller(ctx)?;
        caller.require_known("read orders")?;
        let services = ctx.data::<Services>()?;
        let id = id.to_string();
        if let Some(log) = ctx.data_opt::<ReadLog>() {
            log.row(&id);
        }
        let order = services.order_cache.get(&id).await.map_err(internal)?;
        Ok(order
            .filter(|order| caller.may_see_orders_of(&order.customer_id))
            .map(|order| Order::single(OrderView::clone(&order))))
    }

    /// Orders as a Relay connection, newest first unless `orderBy` says
    /// otherwise; `status` or `statuses` (any of them), `placedFrom`
    /// (inclusive) and `placedBefore` (exclusive) narrow it.
    #[graphql(complexity = "connection_complexity(first, child_complexity)")]
    #[allow(clippy::too_many_arguments)]
    async fn orders(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        status: Option<OrderStatus>,
        statuses: Option<Vec<OrderStatus>>,
        customer_id: Option<ID>,
        placed_from: Option<DateTime<Utc>>,
        placed_before: Option<DateTime<Utc>>,
        #[graphql(default)] order_by: OrderSort,
    ) -> Result<OrderConnection, Error> {
        if status.is_some() && statuses.is_some() {
            return Err(coded(schema::codes::INVALID_INPUT, "give status or statuses, not both"));
        }
        let mut wanted = Vec::new();
        for status in status.into_iter().chain(statuses.into_iter().flatten()).map(view::OrderStatus::from) {
            if !wanted.contains(&status) {
                wanted.push(status);
            }
        }
        let mut filter = OrderFilter {
            statuses: wanted,
            customer_id: customer_id.map(|id| parse_id("customerId", &id).map(|id| id.to_string())).transpose()?,
            placed_from_micros: placed_from.map(|at| at.timestamp_micros()),
            placed_before_micros: placed_before.map(|at| at.timestamp_micros()),
            oldest_first: order_by == OrderSort::OldestFirst,
        };
        // A customer sees only its own orders.
        if let Some(me) = caller(ctx)?.customer_scope("list orders")? {
            if filter.customer_id.as_ref().is_some_and(|asked| *asked != me) {
                return Err(coded(crate::auth::FORBIDDEN, "a customer may list only its own orders"));
            }
            filter.customer_id = Some(me);
        }
        order_connection(ctx, filter, first, after).await
    }

    /// The outcome of a command the caller sent, once decided (null while
    /// pending, unknown, or sent by someone else; admin sees every command's).
    async fn command_outcome(&self, ctx: &Context<'_>, command_id: ID) -> Result<Option<CommandResult>, Error> {
        let id = parse_id("commandId", &command_id)?;
        let caller = caller(ctx)?;
        caller.require_known("look up commands")?;
        let services = ctx.data::<Services>()?;
        let outcome = services.bus.outcome(id).await.map_err(unavailable)?;
        Ok(outcome.filter(|outcome| caller.may_see_outcome(outcome.sender.as_deref())).map(|outcome| {
            let (status, error) = outcome_parts(&outcome);
            CommandResult { command_id: ID(id.to_string()), status, error }
        }))
    }
}
