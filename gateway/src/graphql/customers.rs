//! Customers: `registerCustomer`, `customer(id)` with its orders, and `customers`.

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{ComplexObject, Context, Error, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use read_side::customers::{CustomerView, VIEW};
use read_side::orders::OrderFilter;
use schema::customer::{self as contract, CustomerCommand, RegisterCustomer};
use schema::envelope::derived_id;

use super::Services;
use super::commands::{CommandError, CommandStatus, Consistency, await_view, caller, command_id, send};
use super::errors::{coded, internal, parse_id};
use super::orders::{OrderConnection, order_connection};
use super::pagination::{connection_complexity, decode_time_cursor, encode_time_cursor, page_size};

/// A registered customer, as the `customers` view has it.
pub struct Customer(pub CustomerView);

#[Object]
impl Customer {
    async fn id(&self) -> ID {
        ID(self.0.customer_id.clone())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn email(&self) -> &str {
        &self.0.email
    }
    /// The most one order may cost; the payment provider declines above it.
    async fn credit_limit_cents(&self) -> i64 {
        self.0.credit_limit_cents
    }
    /// Orders placed, whatever became of them.
    async fn order_count(&self) -> i64 {
        self.0.order_count
    }
    /// Confirmed totals, less what cancellations refunded.
    async fn lifetime_spend_cents(&self) -> i64 {
        self.0.lifetime_spend_cents
    }
    /// Orders not yet rejected, cancelled or shipped.
    async fn open_orders(&self) -> i64 {
        self.0.open_orders
    }
    async fn registered_at(&self) -> DateTime<Utc> {
        self.0.registered_at
    }
    /// The customer's orders, newest first.
    #[graphql(complexity = "connection_complexity(first, child_complexity)")]
    async fn orders(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<OrderConnection, Error> {
        let filter = OrderFilter { customer_id: Some(self.0.customer_id.clone()), ..OrderFilter::default() };
        order_connection(ctx, filter, first, after).await
    }
}

#[derive(InputObject)]
pub struct RegisterCustomerInput {
    name: String,
    email: String,
    credit_limit_cents: i64,
    idempotency_key: Option<String>,
    /// ACCEPTED (default), or AWAIT_VIEW to get the projected `customer` back.
    consistency: Option<Consistency>,
}

#[derive(SimpleObject)]
#[graphql(complex)]
pub struct RegisterCustomerPayload {
    command_id: ID,
    status: CommandStatus,
    error: Option<CommandError>,
    customer_id: ID,
}

#[ComplexObject]
impl RegisterCustomerPayload {
    /// The customer's view as the read side has it now.
    async fn customer(&self, ctx: &Context<'_>) -> Result<Option<Customer>, Error> {
        let services = ctx.data::<Services>()?;
        Ok(services.customers.get(&self.customer_id).await.map_err(internal)?.map(Customer))
    }
}

#[derive(Default)]
pub struct CustomerQuery;

#[Object]
impl CustomerQuery {
    /// A registered customer, or null.
    async fn customer(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Customer>, Error> {
        let id = parse_id("id", &id)?;
        caller(ctx)?.require_personal_data(&id.to_string(), "read this customer")?;
        let services = ctx.data::<Services>()?;
        Ok(services.customers.get(&id.to_string()).await.map_err(internal)?.map(Customer))
    }

    /// Registered customers, newest first, as a Relay connection. A
    /// customer caller sees only itself.
    #[graphql(complexity = "connection_complexity(first, child_complexity)")]
    async fn customers(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Customer, EmptyFields, EmptyFields>, Error> {
        let only = caller(ctx)?.personal_data_scope("list customers")?;
        let first = page_size(first)?;
        let after = after.as_deref().map(decode_time_cursor).transpose()?;
        let services = ctx.data::<Services>()?;
        let position = after.as_ref().map(|(micros, id)| (*micros, id.as_str()));
        let mut rows = services.customers.list(only.as_deref(), position, first + 1).await.map_err(internal)?;
        let has_next = rows.len() > first as usize;
        rows.truncate(first as usize);
        let mut connection = Connection::new(after.is_some(), has_next);
        connection.edges.extend(rows.into_iter().map(|row| {
            let cursor = encode_time_cursor(row.registered_at.timestamp_micros(), &row.customer_id);
            Edge::new(cursor, Customer(row))
        }));
        Ok(connection)
    }
}

#[derive(Default)]
pub struct CustomerMutation;

#[Object]
impl CustomerMutation {
    /// Registers a customer with a credit limit. One customer per email: an
    /// address already registered (whatever its case or surrounding space)
    /// is REJECTED with CUSTOMER_EMAIL_TAKEN.
    async fn register_customer(
        &self,
        ctx: &Context<'_>,
        input: RegisterCustomerInput,
    ) -> Result<RegisterCustomerPayload, Error> {
        caller(ctx)?.require_admin("register customers")?;
        let command =
            RegisterCustomer { name: input.name, email: input.email, credit_limit_cents: input.credit_limit_cents };
        command.validate().map_err(|rejection| coded(&rejection.code, rejection.message))?;
        let command_id = command_id(ctx, "registerCustomer", input.idempotency_key.as_deref())?;
        let customer_id = derived_id("customer", &command_id.to_string()).to_string();
        let sent =
            send(ctx, command_id, contract::AGGREGATE, &customer_id, &CustomerCommand::RegisterCustomer(command))
                .await?;
        if sent.awaited_version(input.consistency).is_some() {
            // Registration is the customer's only command: the row existing is enough.
            let customers = ctx.data::<Services>()?.customers.clone();
            await_view(ctx, VIEW, &customer_id, sent.deadline, || {
                let (customers, id) = (customers.clone(), customer_id.clone());
                async move { Ok(customers.get(&id).await.map_err(internal)?.is_some()) }
            })
            .await?;
        }
        Ok(RegisterCustomerPayload {
            command_id: ID(command_id.to_string()),
            status: sent.status,
            error: sent.error,
            customer_id: ID(customer_id),
        })
    }
}
