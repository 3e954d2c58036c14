//! The catalog: `addProduct`, `restockProduct`, `product(sku)`, `products`.

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{ComplexObject, Context, Error, ID, InputObject, Object, SimpleObject};
use read_side::products::{ProductView, VIEW};
use schema::product::{self as contract, AddProduct, ProductCommand, RestockProduct, validate_sku};

use super::Services;
use super::commands::{CommandError, CommandStatus, Consistency, Sent, await_view, caller, command_id, send};
use super::errors::{coded, internal};
use super::pagination::{connection_complexity, decode_cursor, encode_cursor, page_size};

pub struct Product(pub ProductView);

#[Object]
impl Product {
    async fn sku(&self) -> &str {
        &self.0.sku
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn price_cents(&self) -> i64 {
        self.0.price_cents
    }
    /// Units on the shelf, reserved or not.
    async fn on_hand(&self) -> i64 {
        self.0.on_hand
    }
    /// Units held for orders not yet shipped.
    async fn reserved(&self) -> i64 {
        self.0.reserved
    }
    /// Units an order can still reserve: `onHand - reserved`, never below zero.
    async fn available(&self) -> i64 {
        self.0.available()
    }
    /// The product stream's version this view reflects.
    async fn version(&self) -> i64 {
        self.0.version as i64
    }
}

#[derive(InputObject)]
pub struct AddProductInput {
    sku: String,
    name: String,
    price_cents: i64,
    initial_stock: i64,
    idempotency_key: Option<String>,
    /// ACCEPTED (default), or AWAIT_VIEW to get the projected `product` back.
    consistency: Option<Consistency>,
}

#[derive(InputObject)]
pub struct RestockProductInput {
    sku: String,
    quantity: i64,
    idempotency_key: Option<String>,
    consistency: Option<Consistency>,
}

#[derive(SimpleObject)]
#[graphql(complex)]
pub struct ProductPayload {
    command_id: ID,
    status: CommandStatus,
    error: Option<CommandError>,
    sku: String,
}

#[ComplexObject]
impl ProductPayload {
    /// The product's view as the read side has it now.
    async fn product(&self, ctx: &Context<'_>) -> Result<Option<Product>, Error> {
        let services = ctx.data::<Services>()?;
        Ok(services.products.get(&self.sku).await.map_err(internal)?.map(Product))
    }
}

impl ProductPayload {
    async fn answer(
        ctx: &Context<'_>,
        sent: Sent,
        sku: String,
        consistency: Option<Consistency>,
    ) -> Result<Self, Error> {
        if let Some(version) = sent.awaited_version(consistency) {
            let products = ctx.data::<Services>()?.products.clone();
            await_view(ctx, VIEW, &sku, sent.deadline, || {
                let (products, sku) = (products.clone(), sku.clone());
                async move { Ok(products.get(&sku).await.map_err(internal)?.is_some_and(|p| p.version >= version)) }
            })
            .await?;
        }
        Ok(Self { command_id: ID(sent.command_id.to_string()), status: sent.status, error: sent.error, sku })
    }
}

#[derive(Default)]
pub struct ProductQuery;

#[Object]
impl ProductQuery {
    /// A product in the catalog, or null.
    async fn product(&self, ctx: &Context<'_>, sku: String) -> Result<Option<Product>, Error> {
        validate_sku(&sku).map_err(|rejection| coded(&rejection.code, rejection.message))?;
        let services = ctx.data::<Services>()?;
        Ok(services.products.get(&sku).await.map_err(internal)?.map(Product))
    }

    /// The catalog in sku order, as a Relay connection.
    #[graphql(complexity = "connection_complexity(first, child_complexity)")]
    async fn products(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Product, EmptyFields, EmptyFields>, Error> {
        let first = page_size(first)?;
        let after = after.as_deref().map(decode_cursor).transpose()?;
        let services = ctx.data::<Services>()?;
        let mut rows = services.products.list(after.as_deref(), first + 1).await.map_err(internal)?;
        let has_next = rows.len() > first as usize;
        rows.truncate(first as usize);
        let mut connection = Connection::new(after.is_some(), has_next);
        connection.edges.extend(rows.into_iter().map(|row| Edge::new(encode_cursor(&row.sku), Product(row))));
        Ok(connection)
    }
}

#[derive(Default)]
pub struct ProductMutation;

#[Object]
impl ProductMutation {
    /// Adds a product to the catalog with its price and initial stock.
    async fn add_product(&self, ctx: &Context<'_>, input: AddProductInput) -> Result<ProductPayload, Error> {
        caller(ctx)?.require_admin("change the catalog")?;
        validate_sku(&input.sku).map_err(|rejection| coded(&rejection.code, rejection.message))?;
        let command =
            AddProduct { name: input.name, price_cents: input.price_cents, initial_stock: input.initial_stock };
        command.validate().map_err(|rejection| coded(&rejection.code, rejection.message))?;
        let command_id = command_id(ctx, "addProduct", input.idempotency_key.as_deref())?;
        let sent = send(ctx, command_id, contract::AGGREGATE, &input.sku, &ProductCommand::AddProduct(command)).await?;
        ProductPayload::answer(ctx, sent, input.sku, input.consistency).await
    }

    /// Puts more units on the shelf.
    async fn restock_product(&self, ctx: &Context<'_>, input: RestockProductInput) -> Result<ProductPayload, Error> {
        caller(ctx)?.require_admin("change the catalog")?;
        validate_sku(&input.sku).map_err(|rejection| coded(&rejection.code, rejection.message))?;
        let command = RestockProduct { quantity: input.quantity };
        command.validate().map_err(|rejection| coded(&rejection.code, rejection.message))?;
        let command_id = command_id(ctx, "restockProduct", input.idempotency_key.as_deref())?;
        let sent =
            send(ctx, command_id, contract::AGGREGATE, &input.sku, &ProductCommand::RestockProduct(command)).await?;
        ProductPayload::answer(ctx, sent, input.sku, input.consistency).await
    }
}
