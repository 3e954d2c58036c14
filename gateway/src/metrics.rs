//! The gateway's share of the process's metrics (see [`schema::metrics`]):
//! GraphQL requests by operation type and result with their latency, and
//! the subscriptions open. WebSocket connections are counted where they
//! are served. When traces are exported, each query and mutation is also
//! the span `<type> <name>` (OpenTelemetry's GraphQL conventions) that the
//! commands it sends are children of ([`schema::trace`]).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextRequest, NextSubscribe,
};
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType};
use async_graphql::{Response, ServerResult, Variables};
use futures::StreamExt;
use futures::stream::BoxStream;
use schema::metrics::{GaugeGuard, metrics};
use tracing::Instrument as _;

/// Counts every query and mutation answered and every subscription open.
pub struct GraphqlMetrics;

impl ExtensionFactory for GraphqlMetrics {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(RequestMetrics::default())
    }
}

/// One request's: the document's operations, once parsed, and the one run.
#[derive(Default)]
struct RequestMetrics {
    operation: Mutex<Operation>,
}

#[derive(Default)]
struct Operation {
    /// Each operation's name and type, from the parsed document.
    parsed: Vec<(Option<String>, OperationType)>,
    /// The document, kept only while traces are exported.
    document: Option<String>,
    /// The type of the operation executed.
    executed: Option<OperationType>,
}

impl Operation {
    /// The operation's type; `unknown` for a document that did not parse
    /// or that names no operation it has.
    fn label(&self) -> &'static str {
        let ty = self.executed.or(match self.parsed.as_slice() {
            [(_, only)] => Some(*only),
            _ => None,
        });
        match ty {
            Some(OperationType::Query) => "query",
            Some(OperationType::Mutation) => "mutation",
            Some(OperationType::Subscription) => "subscription",
            None => "unknown",
        }
    }
}

impl RequestMetrics {
    fn operation(&self) -> std::sync::MutexGuard<'_, Operation> {
        // Poisoned only by a panic in this file's few lines; the data is a label.
        self.operation.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait::async_trait]
impl Extension for RequestMetrics {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let started = Instant::now();
        let response = next.run(ctx).await;
        let result = if response.errors.is_empty() { "ok" } else { "error" };
        let operation_type = self.operation().label();
        metrics().graphql_request(operation_type, result, started.elapsed());
        response
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        // Held while the subscription's stream lives.
        let open = GaugeGuard::new(&metrics().subscriptions_active);
        next.run(ctx, stream)
            .map(move |response| {
                let _held = &open;
                response
            })
            .boxed()
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        let parsed = match &document.operations {
            DocumentOperations::Single(operation) => vec![(None, operation.node.ty)],
            DocumentOperations::Multiple(operations) => {
                operations.iter().map(|(name, operation)| (Some(name.to_string()), operation.node.ty)).collect()
            }
        };
        let mut operation = self.operation();
        operation.parsed = parsed;
        if schema::trace::enabled() {
            operation.document = Some(query.to_owned());
        }
        drop(operation);
        Ok(document)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        {
            let mut operation = self.operation();
            let executed = match (operation.parsed.as_slice(), operation_name) {
                ([(_, only)], _) => Some(*only),
                (all, Some(name)) => all.iter().find(|(named, _)| named.as_deref() == Some(name)).map(|(_, ty)| *ty),
                _ => None,
            };
            operation.executed = executed;
        }
        if !schema::trace::enabled() {
            return next.run(ctx, operation_name).await;
        }
        let span = {
            let operation = self.operation();
            let ty = match operation.executed {
                Some(OperationType::Query) => "query",
                Some(OperationType::Mutation) => "mutation",
                Some(OperationType::Subscription) => "subscription",
                None => "unknown",
            };
            let name = operation_name
                .map(str::to_owned)
                .or_else(|| match operation.parsed.as_slice() {
                    [(only, _)] => only.clone(),
                    _ => None,
                })
                .unwrap_or_default();
            let span_name = if name.is_empty() { ty.to_owned() } else { format!("{ty} {name}") };
            tracing::info_span!(
                target: "conveyor::trace",
                "graphql",
                otel.name = span_name,
                otel.kind = "server",
                graphql.operation.type = ty,
                graphql.operation.name = name,
                graphql.document = operation.document.as_deref().unwrap_or_default(),
                trace_id = tracing::field::Empty,
            )
        };
        schema::trace::stamp(&span);
        next.run(ctx, operation_name).instrument(span).await
    }
}
