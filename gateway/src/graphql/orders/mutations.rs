//! `placeOrder`, `cancelOrder`, `shipOrder`: inputs, payloads, access.

use async_graphql::{ComplexObject, Context, Error, ID, InputObject, Object, SimpleObject};
use futures::StreamExt;
use read_side::orders::{self as view};
use schema::envelope::derived_id;
use schema::order::{self as contract, CancelOrder, OrderCommand, PlaceOrder, ShipOrder};

use crate::graphql::Services;
use crate::graphql::commands::{CommandError, CommandStatus, Consistency, await_view, caller, command_id, send};
use crate::graphql::errors::{coded, internal, overloaded, parse_id, unavailable};

use super::types::Order;

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
    /// Sent again with a different request, it is refused with
    /// IDEMPOTENCY_KEY_REUSED (the first request stands).
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
                let (services, caller) = (ctx.data::<Services>()?, caller(ctx)?);
                let order = services.orders.get(&self.order_id).await.map_err(internal)?;
                Ok(order.filter(|order| caller.may_see_orders_of(&order.customer_id)).map(Order::single))
            }
        }

        impl $name {
            /// The payload, once the view shows the command if the caller asked to wait.
            async fn answer(
                ctx: &Context<'_>,
                sent: crate::graphql::commands::Sent,
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
        admit_new_order(ctx, command_id, input.idempotency_key.is_some()).await?;
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

/// Refuses a new order while the saga backlog is at its limit (see
/// `crate::admission`). A retried idempotency key whose order was already
/// decided adds no work, so it goes through and gets its stored answer; one
/// still undecided (PENDING) is refused like a new order, and stands. The
/// lookup (one read of the outcome by id) holds an in-flight slot, so
/// clients retrying in a loop cannot turn it into unbounded work.
async fn admit_new_order(ctx: &Context<'_>, command_id: uuid::Uuid, keyed: bool) -> Result<(), Error> {
    let services = ctx.data::<Services>()?;
    let Some(refusal) = services.admission.new_order_refusal() else { return Ok(()) };
    if keyed {
        let _slot = services.admission.try_command_permit().map_err(overloaded)?;
        match services.bus.outcome(command_id).await {
            Ok(Some(_decided)) => return Ok(()),
            Ok(None) => {}
            // Already refusing: an unreadable outcome is refused too.
            Err(error) => tracing::debug!(%error, "cannot look up a retried order's outcome"),
        }
    }
    Err(overloaded(refusal))
}

/// Customers may act only on their own orders; staff and open mode on any.
/// Ownership is read from the view, which may not show an order placed a
/// moment ago: then this waits for it, within the mutation's bound, so a
/// customer can cancel right after placing. An order that never shows up is
/// ORDER_NOT_FOUND — and so is another customer's order, by the same path
/// (it never shows up as the caller's), so the answer and its timing say
/// nothing about which orders exist.
async fn require_own_order(ctx: &Context<'_>, order_id: &str, what: &str) -> Result<(), Error> {
    let caller = caller(ctx)?;
    let Some(me) = caller.customer_scope(what)? else { return Ok(()) };
    let services = ctx.data::<Services>()?;
    let mine = || async {
        let order = services.orders.get(order_id).await.map_err(internal)?;
        Ok::<_, Error>(order.is_some_and(|order| order.customer_id == me))
    };
    if mine().await? {
        return Ok(());
    }
    // Watch (before reading again, so no change is missed) only the
    // caller's changes of this order: another customer's order wakes
    // nothing, exactly as a missing one.
    let deadline = tokio::time::Instant::now() + services.mutation_wait;
    let mut changes = services.notifier.watch_scope(view::VIEW, &me, Some(order_id)).await.map_err(unavailable)?;
    while !mine().await? {
        match tokio::time::timeout_at(deadline, changes.next()).await {
            Ok(Some(_)) => continue,
            // A last look, in case a notification was lost.
            Ok(None) | Err(_) if mine().await? => break,
            Ok(None) | Err(_) => {
                return Err(coded(schema::codes::ORDER_NOT_FOUND, format!("no order {order_id} is known")));
            }
        }
    }
    Ok(())
}
