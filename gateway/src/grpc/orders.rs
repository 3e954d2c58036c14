//! `conveyor.v1.Orders`: each method is the GraphQL operation of the same
//! name (`placeOrder`, `order`, `orders`, `orderUpdated`, …) run as the
//! caller, its answer turned into the proto's messages.

use chrono::{DateTime, Utc};
use futures::stream::{BoxStream, StreamExt};
use schema::codes;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::edge::Edge;
use super::proto::{self, orders_server::Orders};
use super::status;
use crate::ws::connections::ConnectionCounts;

/// The fields of an order every method reads.
const ORDER_FIELDS: &str = "id customerId status items { sku quantity unitPriceCents } totalCents version \
                            paymentStatus stockStatus placedAt updatedAt rejectionReason rejectionCode cancelReason";

const RESULT_FIELDS: &str = "commandId status error { code message } orderId";

pub struct OrdersApi {
    edge: Edge,
    /// Live `WatchOrder` streams per connection (its peer's address), held
    /// to a WebSocket's subscription limit.
    watches: ConnectionCounts,
    max_watches: usize,
    shutdown: CancellationToken,
}

impl OrdersApi {
    pub fn new(edge: Edge, max_watches: usize, shutdown: CancellationToken) -> Self {
        Self { edge, watches: ConnectionCounts::default(), max_watches: max_watches.max(1), shutdown }
    }

    /// Runs one of the order mutations and answers its payload.
    async fn command<T>(
        &self,
        request: Request<T>,
        mutation: &str,
        input_type: &str,
        input: Value,
    ) -> Result<Response<proto::CommandResult>, Status> {
        let caller = self.edge.caller(&request)?;
        let document =
            format!("mutation($input: {input_type}!) {{ answer: {mutation}(input: $input) {{ {RESULT_FIELDS} }} }}");
        let data: Answer<GqlResult> = self.edge.run(caller, &document, json!({ "input": input })).await?;
        Ok(Response::new(data.answer.into_proto()))
    }
}

#[tonic::async_trait]
impl Orders for OrdersApi {
    async fn place_order(
        &self,
        request: Request<proto::PlaceOrderRequest>,
    ) -> Result<Response<proto::CommandResult>, Status> {
        let message = request.get_ref();
        let items: Vec<Value> = message
            .items
            .iter()
            .map(|line| {
                json!({
                    "sku": line.sku,
                    // Beyond i32 is beyond any order's rules: rejected as GraphQL rejects it.
                    "quantity": i32::try_from(line.quantity).unwrap_or(i32::MAX),
                    "unitPriceCents": line.expected_unit_price_cents,
                })
            })
            .collect();
        let input = json!({
            "customerId": message.customer_id,
            "items": items,
            "idempotencyKey": key(&message.idempotency_key),
            "consistency": consistency(message.consistency),
        });
        self.command(request, "placeOrder", "PlaceOrderInput", input).await
    }

    async fn cancel_order(
        &self,
        request: Request<proto::CancelOrderRequest>,
    ) -> Result<Response<proto::CommandResult>, Status> {
        let message = request.get_ref();
        let input = json!({
            "orderId": message.order_id,
            "reason": message.reason,
            "idempotencyKey": key(&message.idempotency_key),
            "consistency": consistency(message.consistency),
        });
        self.command(request, "cancelOrder", "CancelOrderInput", input).await
    }

    async fn ship_order(
        &self,
        request: Request<proto::ShipOrderRequest>,
    ) -> Result<Response<proto::CommandResult>, Status> {
        let message = request.get_ref();
        let input = json!({
            "orderId": message.order_id,
            "idempotencyKey": key(&message.idempotency_key),
            "consistency": consistency(message.consistency),
        });
        self.command(request, "shipOrder", "ShipOrderInput", input).await
    }

    /// `order(id:)`; null (none, or another customer's) is NOT_FOUND.
    async fn get_order(&self, request: Request<proto::GetOrderRequest>) -> Result<Response<proto::Order>, Status> {
        let caller = self.edge.caller(&request)?;
        let id = request.get_ref().order_id.clone();
        let document = format!("query($id: ID!) {{ answer: order(id: $id) {{ {ORDER_FIELDS} }} }}");
        let data: Answer<Option<GqlOrder>> = self.edge.run(caller, &document, json!({ "id": id })).await?;
        match data.answer {
            Some(order) => Ok(Response::new(order.into_proto())),
            None => Err(status::coded(codes::ORDER_NOT_FOUND, format!("no order {id} is known"), None)),
        }
    }

    /// `orders(first:, after:, status:, customerId:)`; the page token is the connection's cursor.
    async fn list_orders(
        &self,
        request: Request<proto::ListOrdersRequest>,
    ) -> Result<Response<proto::ListOrdersResponse>, Status> {
        let caller = self.edge.caller(&request)?;
        let message = request.get_ref();
        let first =
            if message.page_size == 0 { None } else { Some(i32::try_from(message.page_size).unwrap_or(i32::MAX)) };
        let status = proto::OrderStatus::try_from(message.status)
            .ok()
            .and_then(|status| status.as_str_name().strip_prefix("ORDER_STATUS_"))
            .filter(|status| *status != "UNSPECIFIED");
        let variables = json!({
            "first": first,
            "after": key(&message.page_token),
            "status": status,
            "customerId": key(&message.customer_id),
        });
        let document = format!(
            "query($first: Int, $after: String, $status: OrderStatus, $customerId: ID) {{ \
             answer: orders(first: $first, after: $after, status: $status, customerId: $customerId) {{ \
             edges {{ node {{ {ORDER_FIELDS} }} }} pageInfo {{ hasNextPage endCursor }} }} }}"
        );
        let data: Answer<GqlConnection> = self.edge.run(caller, &document, variables).await?;
        let page = data.answer;
        let next_page_token =
            if page.page_info.has_next_page { page.page_info.end_cursor.unwrap_or_default() } else { String::new() };
        Ok(Response::new(proto::ListOrdersResponse {
            orders: page.edges.into_iter().map(|edge| edge.node.into_proto()).collect(),
            next_page_token,
        }))
    }

    type WatchOrderStream = BoxStream<'static, Result<proto::Order, Status>>;

    /// `orderUpdated(id:)`: the current view, then each change.
    async fn watch_order(
        &self,
        request: Request<proto::GetOrderRequest>,
    ) -> Result<Response<Self::WatchOrderStream>, Status> {
        let caller = self.edge.caller(&request)?;
        let connection = request.remote_addr().map_or_else(|| "unknown".to_owned(), |peer| peer.to_string());
        let watch = self.watches.try_acquire(connection, self.max_watches).ok_or_else(|| {
            let message = format!("this connection runs {} subscriptions, as many as it may", self.max_watches);
            status::coded(codes::TOO_MANY_SUBSCRIPTIONS, message, None)
        })?;
        let id = request.get_ref().order_id.clone();
        let document = format!("subscription($id: ID!) {{ answer: orderUpdated(id: $id) {{ {ORDER_FIELDS} }} }}");
        let updates = self
            .edge
            .subscribe::<Answer<GqlOrder>>(caller, &document, json!({ "id": id }))
            .map(move |update| {
                // Held while the stream lives.
                let _watch = &watch;
                update.map(|data| data.answer.into_proto())
            })
            .take_until(self.shutdown.clone().cancelled_owned());
        Ok(Response::new(updates.boxed()))
    }
}

/// An empty string is "none" in proto3.
fn key(value: &str) -> Option<&str> {
    (!value.is_empty()).then_some(value)
}

fn consistency(value: i32) -> Option<&'static str> {
    match proto::Consistency::try_from(value) {
        Ok(proto::Consistency::AwaitView) => Some("AWAIT_VIEW"),
        Ok(proto::Consistency::Accepted) => Some("ACCEPTED"),
        _ => None,
    }
}

/// Every document aliases its one field as `answer`.
#[derive(Deserialize)]
struct Answer<T> {
    answer: T,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GqlResult {
    command_id: String,
    status: String,
    error: Option<GqlCommandError>,
    order_id: String,
}

#[derive(Deserialize)]
struct GqlCommandError {
    code: String,
    message: String,
}

impl GqlResult {
    fn into_proto(self) -> proto::CommandResult {
        let status = match self.status.as_str() {
            "ACCEPTED" => proto::CommandStatus::Accepted,
            "REJECTED" => proto::CommandStatus::Rejected,
            "PENDING" => proto::CommandStatus::Pending,
            _ => proto::CommandStatus::Unspecified,
        };
        proto::CommandResult {
            command_id: self.command_id,
            status: status.into(),
            order_id: self.order_id,
            error: self.error.map(|error| proto::CommandError { code: error.code, message: error.message }),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GqlOrder {
    id: String,
    customer_id: String,
    status: String,
    items: Vec<GqlLine>,
    total_cents: Option<i64>,
    version: i64,
    payment_status: String,
    stock_status: String,
    placed_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    rejection_reason: Option<String>,
    rejection_code: Option<String>,
    cancel_reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GqlLine {
    sku: String,
    quantity: i32,
    unit_price_cents: Option<i64>,
}

impl GqlOrder {
    fn into_proto(self) -> proto::Order {
        let status = proto::OrderStatus::from_str_name(&format!("ORDER_STATUS_{}", self.status))
            .unwrap_or(proto::OrderStatus::Unspecified);
        proto::Order {
            order_id: self.id,
            customer_id: self.customer_id,
            status: status.into(),
            items: self
                .items
                .into_iter()
                .map(|line| proto::OrderItem {
                    sku: line.sku,
                    quantity: u32::try_from(line.quantity).unwrap_or(0),
                    unit_price_cents: line.unit_price_cents,
                })
                .collect(),
            total_cents: self.total_cents,
            version: u64::try_from(self.version).unwrap_or(0),
            payment_status: self.payment_status,
            stock_status: self.stock_status,
            placed_at: Some(timestamp(self.placed_at)),
            updated_at: Some(timestamp(self.updated_at)),
            rejection_reason: self.rejection_reason,
            rejection_code: self.rejection_code,
            cancel_reason: self.cancel_reason,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GqlConnection {
    edges: Vec<GqlEdge>,
    page_info: GqlPageInfo,
}

#[derive(Deserialize)]
struct GqlEdge {
    node: GqlOrder,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GqlPageInfo {
    has_next_page: bool,
    end_cursor: Option<String>,
}

pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: at.timestamp(), nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0) }
}
