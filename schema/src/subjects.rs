//! Namespaced names. Every subject, stream, consumer and bucket carries the
//! deployment's namespace, so deployments and test runs share one NATS server
//! without touching each other.

use std::fmt;

/// A validated namespace: 1 to 32 of `[A-Za-z0-9_-]`, so it is legal in
/// subjects, stream names and key-value bucket names alike.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace(String);

#[derive(Debug, thiserror::Error)]
#[error("namespace `{0}` must be 1 to 32 characters of A-Z, a-z, 0-9, `_` or `-`")]
pub struct InvalidNamespace(pub String);

impl Namespace {
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidNamespace> {
        let name = name.into();
        let valid = !name.is_empty()
            && name.len() <= 32
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if valid { Ok(Self(name)) } else { Err(InvalidNamespace(name)) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `<ns>.cmd.<aggregate>.<verb>`
    pub fn command_subject(&self, aggregate: &str, verb: &str) -> String {
        format!("{}.cmd.{aggregate}.{verb}", self.0)
    }

    /// `<ns>.cmd.<aggregate>.>`: one handler group's share of the commands stream.
    pub fn command_filter(&self, aggregate: &str) -> String {
        format!("{}.cmd.{aggregate}.>", self.0)
    }

    /// `<ns>.cmd.internal.<aggregate>.<verb>`: the commands only the order
    /// saga issues ([`is_internal_command`]). A separate subject space, so a
    /// NATS user that may publish `<ns>.cmd.*.*` (the gateway) cannot
    /// publish them; the handler refuses them on any other subject.
    pub fn internal_command_subject(&self, aggregate: &str, verb: &str) -> String {
        format!("{}.cmd.internal.{aggregate}.{verb}", self.0)
    }

    /// `<ns>.cmd.internal.<aggregate>.>`: one handler group's internal commands.
    pub fn internal_command_filter(&self, aggregate: &str) -> String {
        format!("{}.cmd.internal.{aggregate}.>", self.0)
    }

    /// Where a command of this type travels: the internal subject for the
    /// saga's commands, the public one for the rest.
    pub fn subject_for_command(&self, aggregate: &str, verb: &str) -> String {
        if is_internal_command(aggregate, verb) {
            self.internal_command_subject(aggregate, verb)
        } else {
            self.command_subject(aggregate, verb)
        }
    }

    /// `<ns>.cmd.>`
    pub fn all_commands(&self) -> String {
        format!("{}.cmd.>", self.0)
    }

    /// `<ns>.evt.<aggregate>.<id>`
    pub fn event_subject(&self, aggregate: &str, id: &str) -> String {
        format!("{}.evt.{aggregate}.{}", self.0, subject_token(id))
    }

    /// `<ns>.evt.<aggregate>.>`
    pub fn event_filter(&self, aggregate: &str) -> String {
        format!("{}.evt.{aggregate}.>", self.0)
    }

    /// `<ns>.evt.>`
    pub fn all_events(&self) -> String {
        format!("{}.evt.>", self.0)
    }

    /// `<ns>.outcome.<command-id>`
    pub fn outcome_subject(&self, command_id: &uuid::Uuid) -> String {
        format!("{}.outcome.{command_id}", self.0)
    }

    /// `<ns>.outcome.*`: every command's outcome.
    pub fn outcome_filter(&self) -> String {
        format!("{}.outcome.*", self.0)
    }

    /// `<ns>.changed.<view>.<id>.<scope>`: a row changed; its scope is
    /// whom the row belongs to (an order's customer), `_` for rows of no
    /// one, so a watcher can subscribe to one customer's rows only.
    pub fn changed_subject(&self, view: &str, id: &str, scope: Option<&str>) -> String {
        let scope = scope.map_or_else(|| NO_SCOPE.to_string(), subject_token);
        format!("{}.changed.{view}.{}.{scope}", self.0, subject_token(id))
    }

    /// `<ns>.changed.<view>.<id>.*`: one row, whoever it belongs to.
    pub fn changed_row_filter(&self, view: &str, id: &str) -> String {
        format!("{}.changed.{view}.{}.*", self.0, subject_token(id))
    }

    /// `<ns>.changed.<view>.*.*`: every row of one view.
    pub fn changed_view_filter(&self, view: &str) -> String {
        format!("{}.changed.{view}.*.*", self.0)
    }

    /// `<ns>.changed.<view>.<id|*>.<scope>`: the rows of one view (or one
    /// row) that belong to `scope`.
    pub fn changed_scope_filter(&self, view: &str, scope: &str, id: Option<&str>) -> String {
        let id = id.map_or_else(|| "*".to_string(), subject_token);
        format!("{}.changed.{view}.{id}.{}", self.0, subject_token(scope))
    }

    /// `<ns>.dlq.<source>`
    pub fn dead_letter_subject(&self, source: &str) -> String {
        format!("{}.dlq.{source}", self.0)
    }

    /// `<ns>.dlq.>`: every dead letter (the `<ns>_DLQ` stream's subjects).
    pub fn all_dead_letters(&self) -> String {
        format!("{}.dlq.>", self.0)
    }

    /// `<ns>_<NAME>`: streams, consumers and buckets cannot contain `.`.
    pub fn resource(&self, name: &str) -> String {
        format!("{}_{name}", self.0)
    }
}

impl Default for Namespace {
    fn default() -> Self {
        Self("conveyor".into())
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The commands only the order saga issues: stock reservations and their
/// release and commit, the payment's authorization, refund and capture, the
/// order's confirmation and rejection. No client may send them (the gateway
/// has no mutation for them); they travel on
/// [`Namespace::internal_command_subject`].
pub const INTERNAL_COMMANDS: &[(&str, &str)] = &[
    (crate::product::AGGREGATE, "ReserveStock"),
    (crate::product::AGGREGATE, "ReleaseStock"),
    (crate::product::AGGREGATE, "CommitStock"),
    (crate::payment::AGGREGATE, "AuthorizePayment"),
    (crate::payment::AGGREGATE, "RefundPayment"),
    (crate::payment::AGGREGATE, "CapturePayment"),
    (crate::order::AGGREGATE, "ConfirmOrder"),
    (crate::order::AGGREGATE, "RejectOrder"),
];

/// The actor of every command a saga issues starts so (the order saga's is
/// `saga:order-fulfillment`); no client's actor does (the gateway records
/// `anonymous` or `<role>:<subject>` from the caller's token).
pub const SAGA_ACTOR_PREFIX: &str = "saga:";

/// Whether `verb` on `aggregate` is one of the [`INTERNAL_COMMANDS`].
pub fn is_internal_command(aggregate: &str, verb: &str) -> bool {
    INTERNAL_COMMANDS.iter().any(|(kind, name)| *kind == aggregate && *name == verb)
}

/// The scope token of a row that belongs to no one.
const NO_SCOPE: &str = "_";

/// Makes an id safe as one subject token: `.`, `*`, `>` and whitespace would
/// change the subject's meaning, so they become `_`.
fn subject_token(id: &str) -> String {
    id.chars().map(|c| if c == '.' || c == '*' || c == '>' || c.is_whitespace() { '_' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_validated() {
        assert!(Namespace::new("prod-eu_1").is_ok());
        assert!(Namespace::new("").is_err());
        assert!(Namespace::new("a.b").is_err());
        assert!(Namespace::new("x".repeat(33)).is_err());
    }

    #[test]
    fn the_sagas_commands_travel_apart_from_the_clients() {
        let ns = Namespace::new("t").expect("valid");
        assert_eq!(ns.subject_for_command("order", "ConfirmOrder"), "t.cmd.internal.order.ConfirmOrder");
        assert_eq!(ns.subject_for_command("order", "PlaceOrder"), "t.cmd.order.PlaceOrder");
        assert_eq!(ns.subject_for_command("product", "ReserveStock"), "t.cmd.internal.product.ReserveStock");
        assert_eq!(ns.subject_for_command("product", "RestockProduct"), "t.cmd.product.RestockProduct");
    }

    #[test]
    fn ids_cannot_escape_their_subject_token() {
        let ns = Namespace::new("t").expect("valid");
        assert_eq!(ns.event_subject("order", "a.b>*c d"), "t.evt.order.a_b__c_d");
        assert_eq!(ns.changed_subject("orders", "o.1", Some("c*1")), "t.changed.orders.o_1.c_1");
    }

    #[test]
    fn change_subjects_carry_their_scope_for_narrow_watchers() {
        let ns = Namespace::new("t").expect("valid");
        assert_eq!(ns.changed_subject("orders", "o1", Some("c1")), "t.changed.orders.o1.c1");
        assert_eq!(ns.changed_subject("products", "sku", None), "t.changed.products.sku._");
        assert_eq!(ns.changed_row_filter("orders", "o1"), "t.changed.orders.o1.*");
        assert_eq!(ns.changed_view_filter("orders"), "t.changed.orders.*.*");
        assert_eq!(ns.changed_scope_filter("orders", "c1", None), "t.changed.orders.*.c1");
        assert_eq!(ns.changed_scope_filter("orders", "c1", Some("o1")), "t.changed.orders.o1.c1");
    }
}
