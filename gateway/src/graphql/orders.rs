//! Orders: the `order`/`orders` queries, the `placeOrder`/`cancelOrder`/
//! `shipOrder` mutations and the `orderUpdated` subscription.

use std::sync::Arc;

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::dataloader::DataLoader;
use async_graphql::{ComplexObject, Context, Enum, Error, ID, InputObject, Object, SimpleObject, Subscription};
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt};
use read_side::orders::{self as view, OrderCursor, OrderFilter, OrderView, TimelineEntry, ViewLine};
use schema::envelope::derived_id;
use schema::order::{self as contract, CancelOrder, OrderCommand, PlaceOrder, ShipOrder};

use super::Services;
use super::commands::{
    CommandError, CommandResult, CommandStatus, Consistency, await_view, caller, command_id, outcome_parts, send,
};
use super::customers::Customer;
use super::errors::{coded, internal, parse_id, unavailable};
use super::loaders::{CustomerLoader, Prefetched, ProductLoader, TimelineLoader};
use super::pagination::{connection_complexity, decode_cursor, encode_cursor, page_size};
use super::products::Product;

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum OrderStatus {
    /// Placed; stock and payment are being arranged.
    Pending,
    Confirmed,
    Rejected,
    Cancelled,
    Shipped,
}

impl From<view::OrderStatus> for OrderStatus {
    fn from(status: view::OrderStatus) -> Self {
        match status {
            view::OrderStatus::Pending => Self::Pending,
            view::OrderStatus::Confirmed => Self::Confirmed,
            view::OrderStatus::Rejected => Self::Rejected,
            view::OrderStatus::Cancelled => Self::Cancelled,
            view::OrderStatus::Shipped => Self::Shipped,
        }
    }
}

impl From<OrderStatus> for view::OrderStatus {
    fn from(status: OrderStatus) -> Self {
        match status {
            OrderStatus::Pending => Self::Pending,
            OrderStatus::Confirmed => Self::Confirmed,
            OrderStatus::Rejected => Self::Rejected,
            OrderStatus::Cancelled => Self::Cancelled,
            OrderStatus::Shipped => Self::Shipped,
        }
    }
}

/// An order as the read side last projected it, with its page's
/// prefetched nested data when it came in a list.
pub struct Order(pub OrderView, pub Option<Arc<Prefetched>>);

impl Order {
    pub fn single(view: OrderView) -> Self {
        Self(view, None)
    }
}

#[Object]
impl Order {
    async fn id(&self) -> ID {
        ID(self.0.order_id.clone())
    }
    async fn customer_id(&self) -> ID {
        ID(self.0.customer_id.clone())
    }
    /// The customer, if registered.
    async fn customer(&self, ctx: &Context<'_>) -> Result<Option<Customer>, Error> {
        if let Some(customers) = self.1.as_ref().and_then(|prefetched| prefetched.customers.as_ref()) {
            return Ok(customers.get(&self.0.customer_id).cloned().map(Customer));
        }
        let loader = ctx.data::<DataLoader<CustomerLoader>>()?;
        Ok(loader.load_one(self.0.customer_id.clone()).await.map_err(internal)?.map(Customer))
    }
    async fn status(&self) -> OrderStatus {
        self.0.status.into()
    }
    /// NONE, AUTHORIZED, DECLINED, CAPTURED, REFUNDED or VOIDED.
    async fn payment_status(&self) -> &str {
        &self.0.payment_status
    }
    /// NONE, PARTIAL, RESERVED, RELEASED or COMMITTED.
    async fn stock_status(&self) -> &str {
        &self.0.stock_status
    }
    /// Why the order was rejected, once it is.
    async fn rejection_reason(&self) -> Option<&str> {
        self.0.rejection_reason.as_deref()
    }
    /// The code of the rejection (`OUT_OF_STOCK`, `PAYMENT_DECLINED`, …).
    async fn rejection_code(&self) -> Option<&str> {
        self.0.rejection_code.as_deref()
    }
    async fn items(&self) -> Vec<OrderLine> {
        self.0.items.iter().cloned().map(|line| OrderLine(line, self.1.clone())).collect()
    }
    /// The catalog total of the reserved lines (final once CONFIRMED).
    async fn total_cents(&self) -> i64 {
        self.0.total_cents
    }
    /// Why the order was cancelled, once it is.
    async fn cancel_reason(&self) -> Option<&str> {
        self.0.cancel_reason.as_deref()
    }
    /// The order stream's version this view reflects; grows with every order event.
    async fn version(&self) -> i64 {
        self.0.version as i64
    }
    async fn placed_at(&self) -> DateTime<Utc> {
        self.0.placed_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// Every event of the order and of the steps taken for it, oldest first.
    async fn timeline(&self, ctx: &Context<'_>) -> Result<Vec<TimelineItem>, Error> {
        if let Some(timelines) = self.1.as_ref().and_then(|prefetched| prefetched.timelines.as_ref()) {
            let entries = timelines.get(&self.0.order_id).cloned().unwrap_or_default();
            return Ok(entries.into_iter().map(TimelineItem).collect());
        }
        let loader = ctx.data::<DataLoader<TimelineLoader>>()?;
        let entries = loader.load_one(self.0.order_id.clone()).await.map_err(internal)?.unwrap_or_default();
        Ok(entries.into_iter().map(TimelineItem).collect())
    }
}

pub struct OrderLine(ViewLine, Option<Arc<Prefetched>>);

#[Object]
impl OrderLine {
    async fn sku(&self) -> &str {
        &self.0.sku
    }
    async fn quantity(&self) -> i32 {
        self.0.quantity as i32
    }
    /// The catalog price it was reserved at; null until then.
    async fn unit_price_cents(&self) -> Option<i64> {
        self.0.unit_price_cents
    }
    async fn product(&self, ctx: &Context<'_>) -> Result<Option<Product>, Error> {
        if let Some(products) = self.1.as_ref().and_then(|prefetched| prefetched.products.as_ref()) {
            return Ok(products.get(&self.0.sku).cloned().map(Product));
        }
        let loader = ctx.data::<DataLoader<ProductLoader>>()?;
        Ok(loader.load_one(self.0.sku.clone()).await.map_err(internal)?.map(Product))
    }
}

pub struct TimelineItem(TimelineEntry);

#[Object]
impl TimelineItem {
    async fn at(&self) -> DateTime<Utc> {
        self.0.at
    }
    /// The event's type, e.g. `StockReserved`.
    #[graphql(name = "type")]
    async fn event_type(&self) -> &str {
        &self.0.event_type
    }
    /// The aggregate that recorded it: order, product or payment.
    async fn aggregate_type(&self) -> &str {
        &self.0.aggregate_type
    }
    async fn aggregate_id(&self) -> &str {
        &self.0.aggregate_id
    }
    /// The message that caused it (a command id).
    async fn causation_id(&self) -> &str {
        &self.0.causation_id
    }
    async fn actor(&self) -> &str {
        &self.0.actor
    }
    async fn summary(&self) -> &str {
        &self.0.summary
    }
}

#[derive(InputObject)]
pub struct OrderLineInput {
    sku: String,
    quantity: i32,
    /// The price the customer saw: if the catalog's differs, the order is
    /// rejected with PRICE_MISMATCH. Prices always come from the catalog.
    unit_price_cents: Option<i64>,
}

#[derive(InputObject)]
pub struct PlaceOrderInput {
    customer_id: ID,
    items: Vec<OrderLineInput>,
    /// A client-chosen key: the same key means the same command, decided once.
    idempotency_key: Option<String>,
    /// ACCEPTED (default), or AWAIT_VIEW to get the projected `order` back.
    consistency: Option<Consistency>,
}

#[derive(InputObject)]
pub struct CancelOrderInput {
    order_id: ID,
    reason: String,
    idempotency_key: Option<String>,
    consistency: Option<Consistency>,
}

#[derive(InputObject)]
pub struct ShipOrderInput {
    order_id: ID,
    idempotency_key: Option<String>,
    consistency: Option<Consistency>,
}

/// Declares an order mutation's payload: the command's id, status and
/// error, the order's id, and the order's view as the read side has it now.
macro_rules! order_payload {
    ($name:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(SimpleObject)]
        #[graphql(complex)]
        pub struct $name {
            command_id: ID,
            status: CommandStatus,
            error: Option<CommandError>,
            order_id: ID,
        }

        #[ComplexObject]
        impl $name {
            /// The order's view as the read side has it now.
            async fn order(&self, ctx: &Context<'_>) -> Result<Option<Order>, Error> {
                let services = ctx.data::<Services>()?;
                Ok(services.orders.get(&self.order_id).await.map_err(internal)?.map(Order::single))
            }
        }

        impl $name {
            /// The payload, once the view shows the command if the caller asked to wait.
            async fn answer(
                ctx: &Context<'_>,
                sent: super::commands::Sent,
                order_id: String,
                consistency: Option<Consistency>,
            ) -> Result<Self, Error> {
                if let Some(version) = sent.awaited_version(consistency) {
                    await_order(ctx, &order_id, version, sent.deadline).await?;
                }
                Ok(Self {
                    command_id: ID(sent.command_id.to_string()),
                    status: sent.status,
                    error: sent.error,
                    order_id: ID(order_id),
                })
            }
        }
    };
}

/// Waits until the order's view shows stream version `version`.
async fn await_order(
    ctx: &Context<'_>,
    order_id: &str,
    version: u64,
    deadline: tokio::time::Instant,
) -> Result<(), Error> {
    let orders = ctx.data::<Services>()?.orders.clone();
    await_view(ctx, view::VIEW, order_id, deadline, || {
        let orders = orders.clone();
        async move {
            let order = orders.get(order_id).await.map_err(internal)?;
            Ok(order.is_some_and(|order| order.version >= version))
        }
    })
    .await
}

order_payload!(PlaceOrderPayload, "`placeOrder`'s answer.");
order_payload!(CancelOrderPayload, "`cancelOrder`'s answer.");
order_payload!(ShipOrderPayload, "`shipOrder`'s answer.");

/// A connection over the `orders` view, newest first.
pub async fn order_connection(
    ctx: &Context<'_>,
    filter: OrderFilter,
    first: Option<i32>,
    after: Option<String>,
) -> Result<Connection<String, Order, EmptyFields, EmptyFields>, Error> {
    let services = ctx.data::<Services>()?;
    let first = page_size(first)?;
    let after = after.as_deref().map(decode_order_cursor).transpose()?;
    let mut rows = services.orders.list(&filter, after.as_ref(), first + 1).await.map_err(internal)?;
    let has_next = rows.len() > first as usize;
    rows.truncate(first as usize);
    let prefetched = Arc::new(Prefetched::for_orders(ctx, &rows).await?);
    let mut connection = Connection::new(after.is_some(), has_next);
    connection.edges.extend(rows.into_iter().map(|row| {
        let cursor = encode_cursor(&format!("{}:{}", row.placed_at.timestamp_micros(), row.order_id));
        Edge::new(cursor, Order(row, Some(prefetched.clone())))
    }));
    Ok(connection)
}

fn decode_order_cursor(cursor: &str) -> Result<OrderCursor, Error> {
    let invalid = || coded(schema::codes::INVALID_INPUT, "after is not a cursor from this connection");
    let text = decode_cursor(cursor)?;
    let (micros, order_id) = text.split_once(':').ok_or_else(invalid)?;
    Ok(OrderCursor { placed_at_micros: micros.parse().map_err(|_| invalid())?, order_id: order_id.to_string() })
}

#[derive(Default)]
pub struct OrderQuery;

#[Object]
impl OrderQuery {
    /// One order, or null if no such order has been projected.
    async fn order(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Order>, Error> {
        let id = parse_id("id", &id)?;
        let caller = caller(ctx)?;
        caller.require_known("read orders")?;
        let services = ctx.data::<Services>()?;
        let order = services.orders.get(&id.to_string()).await.map_err(internal)?;
        if let Some(order) = &order {
            caller.require_customer(&order.customer_id, "read this order")?;
        }
        Ok(order.map(Order::single))
    }

    /// Orders, newest first, as a Relay connection.
    #[graphql(complexity = "connection_complexity(first, child_complexity)")]
    async fn orders(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        status: Option<OrderStatus>,
        customer_id: Option<ID>,
    ) -> Result<Connection<String, Order, EmptyFields, EmptyFields>, Error> {
        let mut filter = OrderFilter {
            status: status.map(Into::into),
            customer_id: customer_id.map(|id| parse_id("customerId", &id).map(|id| id.to_string())).transpose()?,
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

    /// The outcome of a command, once decided (null while pending or unknown).
    async fn command_outcome(&self, ctx: &Context<'_>, command_id: ID) -> Result<Option<CommandResult>, Error> {
        let id = parse_id("commandId", &command_id)?;
        caller(ctx)?.require_known("look up commands")?;
        let services = ctx.data::<Services>()?;
        let outcome = services.bus.outcome(id).await.map_err(unavailable)?;
        Ok(outcome.map(|outcome| {
            let (status, error) = outcome_parts(&outcome);
            CommandResult { command_id: ID(id.to_string()), status, error }
        }))
    }
}

#[derive(Default)]
pub struct OrderMutation;

#[Object]
impl OrderMutation {
    /// Places an order (PENDING); the saga then reserves stock, authorizes
    /// payment and confirms it, or rejects it. Answers once the order is
    /// placed, or PENDING after the configured wait.
    async fn place_order(&self, ctx: &Context<'_>, input: PlaceOrderInput) -> Result<PlaceOrderPayload, Error> {
        let customer_id = parse_id("customerId", &input.customer_id)?;
        caller(ctx)?.require_customer(&customer_id.to_string(), "place orders for this customer")?;
        let command = PlaceOrder {
            customer_id: customer_id.to_string(),
            items: input
                .items
                .into_iter()
                .map(|line| contract::OrderLine {
                    sku: line.sku,
                    // Negative quantities become 0, which the rules reject.
                    quantity: u32::try_from(line.quantity).unwrap_or(0),
                    expected_unit_price_cents: line.unit_price_cents,
                })
                .collect(),
        };
        command.validate().map_err(|rejection| coded(&rejection.code, rejection.message))?;
        let command_id = command_id(ctx, "placeOrder", input.idempotency_key.as_deref())?;
        // Derived from the command id, so a retried placeOrder names the same order.
        let order_id = derived_id("order", &command_id.to_string()).to_string();
        let sent = send(ctx, command_id, contract::AGGREGATE, &order_id, &OrderCommand::PlaceOrder(command)).await?;
        PlaceOrderPayload::answer(ctx, sent, order_id, input.consistency).await
    }

    /// Cancels an order: a pending one is compensated, a confirmed one refunded.
    async fn cancel_order(&self, ctx: &Context<'_>, input: CancelOrderInput) -> Result<CancelOrderPayload, Error> {
        let order_id = parse_id("orderId", &input.order_id)?.to_string();
        require_own_order(ctx, &order_id, "cancel this order").await?;
        let command = CancelOrder { reason: input.reason };
        command.validate().map_err(|rejection| coded(&rejection.code, rejection.message))?;
        let command_id = command_id(ctx, "cancelOrder", input.idempotency_key.as_deref())?;
        let sent = send(ctx, command_id, contract::AGGREGATE, &order_id, &OrderCommand::CancelOrder(command)).await?;
        CancelOrderPayload::answer(ctx, sent, order_id, input.consistency).await
    }

    /// Ships a confirmed order: its payment is captured and its stock leaves the shelf.
    async fn ship_order(&self, ctx: &Context<'_>, input: ShipOrderInput) -> Result<ShipOrderPayload, Error> {
        let order_id = parse_id("orderId", &input.order_id)?.to_string();
        caller(ctx)?.require_staff("ship orders")?;
        let command_id = command_id(ctx, "shipOrder", input.idempotency_key.as_deref())?;
        let sent =
            send(ctx, command_id, contract::AGGREGATE, &order_id, &OrderCommand::ShipOrder(ShipOrder {})).await?;
        ShipOrderPayload::answer(ctx, sent, order_id, input.consistency).await
    }
}

#[derive(Default)]
pub struct OrderSubscription;

#[Subscription]
impl OrderSubscription {
    /// The order's current view at once (as soon as it exists), then the
    /// view after each change (status, stock, payment, timeline).
    async fn order_updated(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> Result<BoxStream<'static, Result<Order, Error>>, Error> {
        let id = parse_id("id", &id)?.to_string();
        let caller = caller(ctx)?.clone();
        caller.require_known("follow orders")?;
        let services = ctx.data::<Services>()?.clone();
        // Watch before the first read, so no change falls between the two.
        let changes = services.notifier.watch(view::VIEW, &id).await.map_err(unavailable)?;
        let shutdown = services.shutdown.clone();
        let reads = stream::once(futures::future::ready(())).chain(changes.map(|_| ()));
        let updates = reads
            .then(move |()| {
                let repository = services.orders.clone();
                let id = id.clone();
                async move { repository.get(&id).await }
            })
            .scan((None::<OrderView>, false), move |(last, ended), read| {
                if *ended {
                    return futures::future::ready(None);
                }
                let item = match read {
                    Ok(Some(order)) => match caller.require_customer(&order.customer_id, "follow this order") {
                        // Not the caller's: say so, then end.
                        Err(error) => {
                            *ended = true;
                            Some(Err(error))
                        }
                        // Only rows that changed: notifications may repeat or arrive late.
                        Ok(()) if last.as_ref() != Some(&order) && is_newer(last.as_ref(), &order) => {
                            *last = Some(order.clone());
                            Some(Ok(Order::single(order)))
                        }
                        Ok(()) => None,
                    },
                    Ok(None) => None,
                    Err(error) => Some(Err(internal(error))),
                };
                futures::future::ready(Some(item))
            })
            .filter_map(futures::future::ready)
            .take_until(shutdown.cancelled_owned());
        Ok(updates.boxed())
    }
}

/// Customers may act only on their own orders; staff and open mode on any.
async fn require_own_order(ctx: &Context<'_>, order_id: &str, what: &str) -> Result<(), Error> {
    let caller = caller(ctx)?;
    if caller.customer_scope(what)?.is_some() {
        let order = ctx.data::<Services>()?.orders.get(order_id).await.map_err(internal)?;
        // An order not (yet) in the view is not known to be the caller's.
        caller.require_customer(order.as_ref().map_or("", |order| order.customer_id.as_str()), what)?;
    }
    Ok(())
}

/// A row read later is never older: same or higher order version.
fn is_newer(last: Option<&OrderView>, order: &OrderView) -> bool {
    last.is_none_or(|last| order.version >= last.version)
}
