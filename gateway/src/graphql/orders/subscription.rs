//! `orderUpdated`: one order's view at once, then after each change;
//! `ordersUpdated`: every order as it is placed or changes (the live list).

use std::sync::Arc;

use async_graphql::{Context, Error, ID, Subscription};
use futures::stream::{self, BoxStream, StreamExt};
use read_side::orders::OrderView;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::{BroadcastStream, WatchStream};

use crate::graphql::Services;
use crate::graphql::commands::caller;
use crate::graphql::errors::{coded, internal, parse_id, unavailable};

use super::live::Reading;
use super::live_list::{ListUpdate, is_newer};
use super::types::Order;

#[derive(Default)]
pub struct OrderSubscription;

#[Subscription]
impl OrderSubscription {
    /// The order's current view at once (as soon as it exists), then the
    /// view after each change (status, stock, payment, timeline). For a
    /// customer, another customer's order is a missing one: nothing is sent.
    async fn order_updated(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> Result<BoxStream<'static, Result<Order, Error>>, Error> {
        let id = parse_id("id", &id)?.to_string();
        let caller = caller(ctx)?.clone();
        caller.require_known("follow orders")?;
        let services = ctx.data::<Services>()?.clone();
        // One watch and one read per change for every subscriber of the
        // order (see `live.rs`). A customer follows the order only as its
        // own: another customer's order is never read again.
        let scope = caller.customer_scope("follow orders")?;
        let readings = services.live_orders.follow(&id, scope.as_deref()).await.map_err(unavailable)?;
        let updates = WatchStream::new(readings)
            .scan(None::<Arc<OrderView>>, move |last, reading| {
                let item = match reading {
                    // Only the caller's rows, and only those that changed:
                    // readings may repeat, or be skipped for newer ones.
                    Reading::Row(Some(order))
                        if caller.may_see_orders_of(&order.customer_id)
                            && last.as_deref() != Some(&*order)
                            && is_newer(last.as_deref(), &order) =>
                    {
                        if last.is_some() {
                            schema::metrics::metrics().change_age("sent", super::live::change_age(&order));
                        }
                        let item = Order::single(OrderView::clone(&order));
                        *last = Some(order);
                        Some(Ok(item))
                    }
                    Reading::Failed(error) => Some(Err(internal(error))),
                    Reading::Unread | Reading::Row(_) => None,
                };
                futures::future::ready(Some(item))
            })
            .filter_map(futures::future::ready)
            .take_until(services.shutdown.clone().cancelled_owned());
        Ok(updates.boxed())
    }

    /// Every order as it is placed and after each change, from now on (read
    /// `orders` first for the ones before). With `customerId`, only that
    /// customer's; a customer caller only ever gets its own. Filtered
    /// before anything is read: only that customer's changes reach it.
    async fn orders_updated(
        &self,
        ctx: &Context<'_>,
        customer_id: Option<ID>,
    ) -> Result<BoxStream<'static, Result<Order, Error>>, Error> {
        let mut customer = customer_id.map(|id| parse_id("customerId", &id).map(|id| id.to_string())).transpose()?;
        let caller = caller(ctx)?.clone();
        if let Some(me) = caller.customer_scope("follow orders")? {
            if customer.as_ref().is_some_and(|asked| *asked != me) {
                return Err(coded(crate::auth::FORBIDDEN, "a customer may follow only its own orders"));
            }
            customer = Some(me);
        }
        let services = ctx.data::<Services>()?.clone();
        // One watch and one read per change for every subscriber of the
        // same scope (see `live_list.rs`); what each may see is its own.
        let lists = services.live_lists.clone();
        let updates = lists.follow(customer.as_deref()).await.map_err(unavailable)?;
        let updates = BroadcastStream::new(updates)
            .then(move |update| {
                let (lists, customer, caller) = (lists.clone(), customer.clone(), caller.clone());
                async move {
                    let rows: Vec<Arc<OrderView>> = match update {
                        Ok(ListUpdate::Rows(rows)) => rows.to_vec(),
                        Ok(ListUpdate::Failed(error)) => return vec![Err(internal(error))],
                        // Fell behind the others: the newest orders cover what a live list shows.
                        Err(BroadcastStreamRecvError::Lagged(_)) => match lists.newest(customer.as_deref()).await {
                            Ok(newest) => newest.iter().cloned().map(Arc::new).collect(),
                            Err(error) => return vec![Err(internal(error))],
                        },
                    };
                    rows.into_iter()
                        .filter(|order| {
                            customer.as_ref().is_none_or(|c| *c == order.customer_id)
                                && caller.may_see_orders_of(&order.customer_id)
                        })
                        .map(|order| Ok(Order::single(OrderView::clone(&order))))
                        .collect()
                }
            })
            .flat_map(stream::iter)
            .take_until(services.shutdown.clone().cancelled_owned());
        Ok(updates.boxed())
    }
}
