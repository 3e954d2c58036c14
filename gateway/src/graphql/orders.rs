//! Orders: the `order`/`orders` queries, the `placeOrder`/`cancelOrder`
//! mutations and the `orderUpdated` subscription.

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{Context, Enum, Error, ID, InputObject, Object, SimpleObject, Subscription};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt};
use read_side::orders::{self as view, OrderCursor, OrderFilter, OrderView};
use schema::envelope::derived_id;
use schema::order::{self as contract, CancelOrder, OrderCommand, PlaceOrder};
use schema::ports::Dispatched;
use schema::{CommandEnvelope, CommandOutcome, Metadata, OutcomeStatus, codes};
use uuid::Uuid;

use super::Services;
use super::errors::{coded, internal, parse_id, unavailable};

/// Page size when `first` is not given, and the most a page may hold.
const DEFAULT_PAGE: i32 = 20;
const MAX_PAGE: i32 = 100;
const MAX_IDEMPOTENCY_KEY_CHARS: usize = 128;
/// Until authentication lands, every caller is the same actor.
const ANONYMOUS: &str = "anonymous";

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum OrderStatus {
    Placed,
    Cancelled,
}

impl From<view::OrderStatus> for OrderStatus {
    fn from(status: view::OrderStatus) -> Self {
        match status {
            view::OrderStatus::Placed => Self::Placed,
            view::OrderStatus::Cancelled => Self::Cancelled,
        }
    }
}

impl From<OrderStatus> for view::OrderStatus {
    fn from(status: OrderStatus) -> Self {
        match status {
            OrderStatus::Placed => Self::Placed,
            OrderStatus::Cancelled => Self::Cancelled,
        }
    }
}

/// An order as the read side last projected it.
pub struct Order(OrderView);

#[Object]
impl Order {
    async fn id(&self) -> ID {
        ID(self.0.order_id.clone())
    }
    async fn customer_id(&self) -> ID {
        ID(self.0.customer_id.clone())
    }
    async fn status(&self) -> OrderStatus {
        self.0.status.into()
    }
    async fn items(&self) -> Vec<OrderLine> {
        self.0
            .items
            .iter()
            .map(|line| OrderLine {
                sku: line.sku.clone(),
                quantity: line.quantity as i32,
                unit_price_cents: line.unit_price_cents,
            })
            .collect()
    }
    async fn total_cents(&self) -> i64 {
        self.0.total_cents
    }
    /// Why the order was cancelled, once it is.
    async fn cancel_reason(&self) -> Option<&str> {
        self.0.cancel_reason.as_deref()
    }
    /// The order stream's version this view reflects; grows with every event.
    async fn version(&self) -> i64 {
        self.0.version as i64
    }
    async fn placed_at(&self) -> DateTime<Utc> {
        self.0.placed_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

#[derive(SimpleObject)]
pub struct OrderLine {
    sku: String,
    quantity: i32,
    unit_price_cents: i64,
}

#[derive(InputObject)]
pub struct OrderLineInput {
    sku: String,
    quantity: i32,
    unit_price_cents: i64,
}

#[derive(InputObject)]
pub struct PlaceOrderInput {
    customer_id: ID,
    items: Vec<OrderLineInput>,
    /// A client-chosen key: the same key means the same command, decided once.
    idempotency_key: Option<String>,
}

#[derive(InputObject)]
pub struct CancelOrderInput {
    order_id: ID,
    reason: String,
    idempotency_key: Option<String>,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum CommandStatus {
    /// Decided and committed: its events are in the event store.
    Accepted,
    /// Decided and refused: see `error`; nothing changed.
    Rejected,
    /// Durably queued, not decided within the wait; ask `commandOutcome`.
    Pending,
}

#[derive(SimpleObject)]
pub struct CommandError {
    code: String,
    message: String,
}

#[derive(SimpleObject)]
pub struct PlaceOrderPayload {
    command_id: ID,
    status: CommandStatus,
    error: Option<CommandError>,
    order_id: ID,
}

#[derive(SimpleObject)]
pub struct CancelOrderPayload {
    command_id: ID,
    status: CommandStatus,
    error: Option<CommandError>,
    order_id: ID,
}

/// A command's outcome, looked up by id (after a PENDING answer).
#[derive(SimpleObject)]
pub struct CommandResult {
    command_id: ID,
    status: CommandStatus,
    error: Option<CommandError>,
}

fn status_and_error(dispatched: &Dispatched) -> (CommandStatus, Option<CommandError>) {
    match dispatched {
        Dispatched::Pending => (CommandStatus::Pending, None),
        Dispatched::Decided(outcome) => outcome_parts(outcome),
    }
}

fn outcome_parts(outcome: &CommandOutcome) -> (CommandStatus, Option<CommandError>) {
    match outcome.status {
        OutcomeStatus::Accepted => (CommandStatus::Accepted, None),
        OutcomeStatus::Rejected => (
            CommandStatus::Rejected,
            outcome
                .rejection
                .as_ref()
                .map(|rejection| CommandError { code: rejection.code.clone(), message: rejection.message.clone() }),
        ),
    }
}

/// The command id: derived from the idempotency key (scoped to the actor and
/// the mutation), or fresh.
fn command_id(mutation: &str, actor: &str, key: Option<&str>) -> Result<Uuid, Error> {
    match key {
        None => Ok(Uuid::now_v7()),
        Some(key) if key.is_empty() || key.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS => Err(coded(
            codes::INVALID_INPUT,
            format!("idempotencyKey must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters"),
        )),
        Some(key) => Ok(derived_id(mutation, &format!("{actor}:{key}"))),
    }
}

async fn dispatch(ctx: &Context<'_>, command: CommandEnvelope) -> Result<Dispatched, Error> {
    let services = ctx.data::<Services>()?;
    services.bus.dispatch(command, services.mutation_wait).await.map_err(unavailable)
}

#[derive(Default)]
pub struct OrderQuery;

#[Object]
impl OrderQuery {
    /// One order, or null if no such order has been projected.
    async fn order(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Order>, Error> {
        let id = parse_id("id", &id)?;
        let services = ctx.data::<Services>()?;
        Ok(services.orders.get(&id.to_string()).await.map_err(internal)?.map(Order))
    }

    /// Orders, newest first, as a Relay connection.
    #[graphql(complexity = "first.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE) as usize * child_complexity")]
    async fn orders(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        status: Option<OrderStatus>,
        customer_id: Option<ID>,
    ) -> Result<Connection<String, Order, EmptyFields, EmptyFields>, Error> {
        let first = first.unwrap_or(DEFAULT_PAGE);
        if !(0..=MAX_PAGE).contains(&first) {
            return Err(coded(codes::INVALID_INPUT, format!("first must be 0 to {MAX_PAGE}")));
        }
        let after = after.as_deref().map(decode_cursor).transpose()?;
        let filter = OrderFilter {
            status: status.map(Into::into),
            customer_id: customer_id.map(|id| parse_id("customerId", &id).map(|id| id.to_string())).transpose()?,
        };
        let services = ctx.data::<Services>()?;
        let mut rows = services.orders.list(&filter, after.as_ref(), first as u32 + 1).await.map_err(internal)?;
        let has_next = rows.len() > first as usize;
        rows.truncate(first as usize);
        let mut connection = Connection::new(after.is_some(), has_next);
        connection.edges.extend(rows.into_iter().map(|row| Edge::new(encode_cursor(&row), Order(row))));
        Ok(connection)
    }

    /// The outcome of a command, once decided (null while pending or unknown).
    async fn command_outcome(&self, ctx: &Context<'_>, command_id: ID) -> Result<Option<CommandResult>, Error> {
        let id = parse_id("commandId", &command_id)?;
        let services = ctx.data::<Services>()?;
        let outcome = services.bus.outcome(id).await.map_err(unavailable)?;
        Ok(outcome.map(|outcome| {
            let (status, error) = outcome_parts(&outcome);
            CommandResult { command_id: ID(id.to_string()), status, error }
        }))
    }
}

fn encode_cursor(order: &OrderView) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{}", order.placed_at.timestamp_micros(), order.order_id))
}

fn decode_cursor(cursor: &str) -> Result<OrderCursor, Error> {
    let invalid = || coded(codes::INVALID_INPUT, "after is not a cursor from this connection");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (micros, order_id) = text.split_once(':').ok_or_else(invalid)?;
    Ok(OrderCursor { placed_at_micros: micros.parse().map_err(|_| invalid())?, order_id: order_id.to_string() })
}

#[derive(Default)]
pub struct OrderMutation;

#[Object]
impl OrderMutation {
    /// Places an order. Answers once the write side decided, or PENDING
    /// after the configured wait.
    async fn place_order(&self, ctx: &Context<'_>, input: PlaceOrderInput) -> Result<PlaceOrderPayload, Error> {
        let customer_id = parse_id("customerId", &input.customer_id)?;
        let command = PlaceOrder {
            customer_id: customer_id.to_string(),
            items: input
                .items
                .into_iter()
                .map(|line| contract::OrderLine {
                    sku: line.sku,
                    // Negative quantities become 0, which the rules reject.
                    quantity: u32::try_from(line.quantity).unwrap_or(0),
                    unit_price_cents: line.unit_price_cents,
                })
                .collect(),
        };
        command.validate().map_err(|rejection| coded(&rejection.code, rejection.message))?;
        let command_id = command_id("placeOrder", ANONYMOUS, input.idempotency_key.as_deref())?;
        // Derived from the command id, so a retried placeOrder names the same order.
        let order_id = derived_id("order", &command_id.to_string());
        let envelope = CommandEnvelope::new(
            command_id,
            contract::AGGREGATE,
            order_id.to_string(),
            Metadata::origin(command_id, ANONYMOUS),
            &OrderCommand::PlaceOrder(command),
        );
        let (status, error) = status_and_error(&dispatch(ctx, envelope).await?);
        Ok(PlaceOrderPayload {
            command_id: ID(command_id.to_string()),
            status,
            error,
            order_id: ID(order_id.to_string()),
        })
    }

    /// Cancels an order; cancelling twice is rejected with ORDER_ALREADY_CANCELLED.
    async fn cancel_order(&self, ctx: &Context<'_>, input: CancelOrderInput) -> Result<CancelOrderPayload, Error> {
        let order_id = parse_id("orderId", &input.order_id)?;
        let command = CancelOrder { reason: input.reason };
        command.validate().map_err(|rejection| coded(&rejection.code, rejection.message))?;
        let command_id = command_id("cancelOrder", ANONYMOUS, input.idempotency_key.as_deref())?;
        let envelope = CommandEnvelope::new(
            command_id,
            contract::AGGREGATE,
            order_id.to_string(),
            Metadata::origin(command_id, ANONYMOUS),
            &OrderCommand::CancelOrder(command),
        );
        let (status, error) = status_and_error(&dispatch(ctx, envelope).await?);
        Ok(CancelOrderPayload {
            command_id: ID(command_id.to_string()),
            status,
            error,
            order_id: ID(order_id.to_string()),
        })
    }
}

#[derive(Default)]
pub struct OrderSubscription;

#[Subscription]
impl OrderSubscription {
    /// The order's current view at once (as soon as it exists), then the
    /// view after each change.
    async fn order_updated(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> Result<BoxStream<'static, Result<Order, Error>>, Error> {
        let id = parse_id("id", &id)?.to_string();
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
            .scan(0u64, |last_version, read| {
                let item = match read {
                    // Only newer versions: notifications may repeat or arrive late.
                    Ok(Some(order)) if order.version > *last_version => {
                        *last_version = order.version;
                        Some(Ok(Order(order)))
                    }
                    Ok(_) => None,
                    Err(error) => Some(Err(internal(error))),
                };
                futures::future::ready(Some(item))
            })
            .filter_map(futures::future::ready)
            .take_until(shutdown.cancelled_owned());
        Ok(updates.boxed())
    }
}
