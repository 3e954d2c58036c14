//! One set of limits for every GraphQL operation — queries, mutations,
//! subscriptions and introspection alike, over HTTP and WebSocket:
//!
//! * depth and complexity: async-graphql's own validation rules
//!   (`limit_depth`, `limit_complexity`; a connection costs its page size
//!   times its children);
//! * fields and aliases, counted over the whole document with fragments
//!   expanded where they are spread: checked here right after parsing,
//!   before validation or execution, and cheaply — the count stops at the
//!   limit, so a 2 000-alias document or a fragment bomb costs a parse and
//!   a short walk;
//! * the size of each answer, measured as it would be sent (a counting
//!   writer that stops at the limit): a larger one is replaced by a
//!   `RESPONSE_TOO_LARGE` error.
//!
//! The same extension refuses a mutation that arrived over GET, whatever
//! form the document took (text or an automatic persisted query's hash:
//! the hash is resolved before this check), and gives every error a code
//! (`errors::add_missing_codes`) on both transports.

use std::io::Write;
use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextRequest, NextSubscribe,
};
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet};
use async_graphql::{Response, ServerError, ServerResult, Variables};
use futures::StreamExt;
use futures::stream::BoxStream;
use schema::codes;

use crate::graphql::errors::add_missing_codes;

/// The limits every operation is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    /// Nesting deeper than this is refused. graphql-js's standard
    /// introspection query (GraphiQL's) is 15 deep.
    pub max_depth: usize,
    /// Sum of field costs (a connection costs its page size times its children).
    pub max_complexity: usize,
    /// Fields selected in the whole document, fragments counted where spread.
    pub max_fields: usize,
    /// Aliased fields in the whole document, likewise.
    pub max_aliases: usize,
    /// Largest answer (serialized JSON) one operation may send.
    pub max_response_bytes: usize,
}

impl QueryLimits {
    pub const DEFAULT: Self =
        Self { max_depth: 16, max_complexity: 2_000, max_fields: 1_000, max_aliases: 50, max_response_bytes: 4 << 20 };
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The request came over a safe method (GET): it may only query. Holds the
/// operation name the request asked for.
#[derive(Debug, Clone)]
pub struct SafeMethod {
    pub operation_name: Option<String>,
}

/// The extension that applies [`QueryLimits`] (fields, aliases, response
/// size), refuses mutations over GET and codes every error.
pub struct EdgeLimits(pub QueryLimits);

impl ExtensionFactory for EdgeLimits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(EdgeLimitsExtension(self.0))
    }
}

struct EdgeLimitsExtension(QueryLimits);

#[async_trait::async_trait]
impl Extension for EdgeLimitsExtension {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        finish(next.run(ctx).await, self.0.max_response_bytes)
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        let max = self.0.max_response_bytes;
        next.run(ctx, stream).map(move |response| finish(response, max)).boxed()
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        check_size(&document, &self.0)?;
        if let Some(safe) = ctx.data_opt::<SafeMethod>()
            && runs_a_mutation(&document, safe.operation_name.as_deref())
        {
            return Err(refusal(codes::MUTATION_NEEDS_POST, "mutations need POST".into()));
        }
        Ok(document)
    }
}

/// Codes every error, then swaps an answer over the size limit for an error.
fn finish(mut response: Response, max_bytes: usize) -> Response {
    add_missing_codes(&mut response);
    let mut counter = Counter { written: 0, max: max_bytes };
    if serde_json::to_writer(&mut counter, &response).is_err() {
        tracing::warn!(max_bytes, "an answer over the response size limit was refused");
        let message = format!("the answer is larger than {max_bytes} bytes; select fewer fields or smaller pages");
        return Response::from_errors(vec![refusal(codes::RESPONSE_TOO_LARGE, message)]);
    }
    response
}

/// Counts bytes, failing once past `max` (so nothing big is ever held).
struct Counter {
    written: usize,
    max: usize,
}

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.written += buf.len();
        if self.written > self.max {
            return Err(std::io::Error::other("too large"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(crate) fn refusal(code: &str, message: String) -> ServerError {
    let mut error = ServerError::new(message, None);
    error.extensions.get_or_insert_with(Default::default).set("code", code);
    error
}

/// Whether the operation the request names (or the only one) is a mutation.
fn runs_a_mutation(document: &ExecutableDocument, name: Option<&str>) -> bool {
    let operation = match (&document.operations, name) {
        (DocumentOperations::Single(operation), _) => Some(operation),
        (DocumentOperations::Multiple(operations), Some(name)) => operations.get(name),
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => operations.values().next(),
        (DocumentOperations::Multiple(_), None) => None,
    };
    operation.is_some_and(|operation| operation.node.ty == OperationType::Mutation)
}

/// Counts fields and aliases over every operation, fragments expanded
/// where spread (a fragment inside itself is not followed: validation
/// reports the cycle). Stops at the first limit passed.
fn check_size(document: &ExecutableDocument, limits: &QueryLimits) -> ServerResult<()> {
    let mut count = Count { document, limits, fields: 0, aliases: 0, visited: 0, expanding: Vec::new() };
    for (_, operation) in document.operations.iter() {
        count.walk(&operation.node.selection_set.node, 0)?;
    }
    Ok(())
}

struct Count<'a> {
    document: &'a ExecutableDocument,
    limits: &'a QueryLimits,
    fields: usize,
    aliases: usize,
    /// Every selection visited, spreads included, so chains of fragments
    /// that select nothing cannot make the walk long either.
    visited: usize,
    expanding: Vec<&'a str>,
}

impl<'a> Count<'a> {
    fn walk(&mut self, set: &'a SelectionSet, depth: usize) -> ServerResult<()> {
        // Deeper than the depth limit is validation's to refuse; no need to count it.
        if depth > self.limits.max_depth {
            return Ok(());
        }
        for item in &set.items {
            self.visited += 1;
            if self.visited > self.limits.max_fields.saturating_mul(4) {
                return Err(self.too_large());
            }
            match &item.node {
                Selection::Field(field) => {
                    self.fields += 1;
                    if field.node.alias.is_some() {
                        self.aliases += 1;
                    }
                    if self.fields > self.limits.max_fields || self.aliases > self.limits.max_aliases {
                        return Err(self.too_large());
                    }
                    self.walk(&field.node.selection_set.node, depth + 1)?;
                }
                Selection::FragmentSpread(spread) => {
                    let name = spread.node.fragment_name.node.as_str();
                    if self.expanding.contains(&name) {
                        continue;
                    }
                    if let Some(fragment) = self.document.fragments.get(&spread.node.fragment_name.node) {
                        self.expanding.push(name);
                        self.walk(&fragment.node.selection_set.node, depth)?;
                        self.expanding.pop();
                    }
                }
                Selection::InlineFragment(inline) => self.walk(&inline.node.selection_set.node, depth)?,
            }
        }
        Ok(())
    }

    fn too_large(&self) -> ServerError {
        let QueryLimits { max_fields, max_aliases, .. } = self.limits;
        refusal(
            codes::QUERY_TOO_LARGE,
            format!("the document selects too many fields (at most {max_fields}, {max_aliases} of them aliased)"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(query: &str, limits: &QueryLimits) -> Result<(), String> {
        let document = async_graphql::parser::parse_query(query).map_err(|error| error.to_string())?;
        check_size(&document, limits).map_err(|error| error.message)
    }

    #[test]
    fn fields_and_aliases_are_counted_with_fragments_expanded() {
        let limits = QueryLimits { max_fields: 10, max_aliases: 2, ..QueryLimits::default() };
        assert!(check("{ a b c { d e } }", &limits).is_ok());
        assert!(check("{ x: a y: a }", &limits).is_ok());
        assert!(check("{ x: a y: a z: a }", &limits).is_err(), "three aliases");
        assert!(check("{ ...F ...F } fragment F on Q { a b c d e f }", &limits).is_err(), "twelve fields");
        assert!(check("{ ...F } fragment F on Q { a ...F }", &limits).is_ok(), "a cycle is validation's");
        let bomb = "{ ...A } fragment A on Q { ...B ...B } fragment B on Q { ...C ...C } \
                    fragment C on Q { ...D ...D } fragment D on Q { ...E ...E } fragment E on Q { ...F ...F } \
                    fragment F on Q { ...G ...G } fragment G on Q { a }";
        assert!(check(bomb, &limits).is_err(), "a fragment bomb stops at the limit");
    }

    #[test]
    fn graphiqls_introspection_query_fits() {
        let query = include_str!("../../tests/e2e/introspection.graphql");
        assert!(check(query, &QueryLimits::default()).is_ok());
        let aliased: String = (0..60).map(|i| format!("a{i}: __schema {{ queryType {{ name }} }} ")).collect();
        assert!(check(&format!("{{ {aliased} }}"), &QueryLimits::default()).is_err());
    }

    #[test]
    fn only_a_mutation_that_would_run_is_one() {
        let doc = |query: &str| async_graphql::parser::parse_query(query).expect("parses");
        assert!(runs_a_mutation(&doc("mutation { a }"), None));
        assert!(!runs_a_mutation(&doc("{ a }"), None));
        assert!(runs_a_mutation(&doc("query Q { a } mutation M { b }"), Some("M")));
        assert!(!runs_a_mutation(&doc("query Q { a } mutation M { b }"), Some("Q")));
        assert!(!runs_a_mutation(&doc("query Q { a } mutation M { b }"), None));
    }

    #[test]
    fn the_counter_stops_past_the_limit() {
        let big = Response::new(async_graphql::Value::String("x".repeat(100)));
        let refused = finish(big, 50);
        assert_eq!(
            refused.errors[0].extensions.as_ref().and_then(|e| e.get("code")).cloned(),
            Some(async_graphql::Value::from(codes::RESPONSE_TOO_LARGE))
        );
        let small = finish(Response::new(async_graphql::Value::String("x".into())), 50);
        assert!(small.errors.is_empty());
    }
}
