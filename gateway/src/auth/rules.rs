//! The access rules: which caller may do what (docs/operations.md, "Who
//! may do what", is the matrix these methods implement; nothing else in
//! the gateway decides access).

use async_graphql::Error;

use super::{Caller, FORBIDDEN, Role, UNAUTHENTICATED};
use crate::graphql::errors::coded;

impl Caller {
    /// The actor recorded in command envelopes, and the idempotency keys' scope.
    pub fn actor(&self) -> String {
        match self {
            Self::Open | Self::Anonymous => "anonymous".into(),
            Self::Authenticated { role, subject } => format!("{}:{subject}", role_name(*role)),
        }
    }

    fn denied(&self, what: &str) -> Error {
        match self {
            Self::Anonymous => coded(UNAUTHENTICATED, format!("{what} needs a token")),
            _ => coded(FORBIDDEN, format!("this caller may not {what}")),
        }
    }

    /// Catalog and customer writes.
    pub fn require_admin(&self, what: &str) -> Result<(), Error> {
        match self {
            Self::Open | Self::Authenticated { role: Role::Admin, .. } => Ok(()),
            _ => Err(self.denied(what)),
        }
    }

    /// Operations on any customer's orders (shipping).
    pub fn require_staff(&self, what: &str) -> Result<(), Error> {
        match self {
            Self::Open | Self::Authenticated { role: Role::Admin | Role::Service, .. } => Ok(()),
            _ => Err(self.denied(what)),
        }
    }

    /// Anything about one customer's orders: its own for a customer; any for staff.
    pub fn require_customer(&self, customer_id: &str, what: &str) -> Result<(), Error> {
        match self {
            Self::Anonymous => Err(self.denied(what)),
            _ if self.may_see_orders_of(customer_id) => Ok(()),
            _ => Err(self.denied(what)),
        }
    }

    /// Whether this caller may see an order of `customer_id`. A customer
    /// that may not is answered as if the order did not exist.
    pub fn may_see_orders_of(&self, customer_id: &str) -> bool {
        match self {
            Self::Open | Self::Authenticated { role: Role::Admin | Role::Service, .. } => true,
            Self::Authenticated { role: Role::Customer, subject } => subject == customer_id,
            Self::Anonymous => false,
        }
    }

    /// A customer's personal data (name, email, credit limit, spend): the
    /// customer itself and admin; `service` works on orders, not people.
    pub fn require_personal_data(&self, customer_id: &str, what: &str) -> Result<(), Error> {
        match self {
            Self::Open | Self::Authenticated { role: Role::Admin, .. } => Ok(()),
            Self::Authenticated { role: Role::Customer, subject } if subject == customer_id => Ok(()),
            _ => Err(self.denied(what)),
        }
    }

    /// Whether this caller may read anyone's personal data (itself, for a customer).
    pub fn may_read_personal_data(&self) -> bool {
        matches!(self, Self::Open | Self::Authenticated { role: Role::Admin | Role::Customer, .. })
    }

    /// The only customer whose personal data a list may show; `None` for all.
    pub fn personal_data_scope(&self, what: &str) -> Result<Option<String>, Error> {
        match self {
            Self::Open | Self::Authenticated { role: Role::Admin, .. } => Ok(None),
            Self::Authenticated { role: Role::Customer, subject } => Ok(Some(subject.clone())),
            _ => Err(self.denied(what)),
        }
    }

    /// Any authenticated caller (or open mode).
    pub fn require_known(&self, what: &str) -> Result<(), Error> {
        match self {
            Self::Anonymous => Err(self.denied(what)),
            _ => Ok(()),
        }
    }

    /// The only customer a list may show this caller; `None` for all.
    pub fn customer_scope(&self, what: &str) -> Result<Option<String>, Error> {
        match self {
            Self::Open | Self::Authenticated { role: Role::Admin | Role::Service, .. } => Ok(None),
            Self::Authenticated { role: Role::Customer, subject } => Ok(Some(subject.clone())),
            Self::Anonymous => Err(self.denied(what)),
        }
    }

    /// Whether this caller may read the outcome of a command sent by
    /// `sender` (the actor recorded with it; `None` for outcomes stored
    /// before senders were): its own commands only, admin (and open mode)
    /// every command. Saga steps are sent by the saga: admin only.
    pub fn may_see_outcome(&self, sender: Option<&str>) -> bool {
        match self {
            Self::Open | Self::Authenticated { role: Role::Admin, .. } => true,
            Self::Authenticated { .. } => sender == Some(self.actor().as_str()),
            Self::Anonymous => false,
        }
    }

    /// An actor as this caller may see it in a timeline: customers see
    /// themselves and the system's actors, but a staff member only as
    /// `staff` (no staff ids); everyone else sees it as recorded.
    pub fn shown_actor<'a>(&self, actor: &'a str) -> &'a str {
        let customer = matches!(self, Self::Authenticated { role: Role::Customer, .. });
        let staff = actor.starts_with("admin:") || actor.starts_with("service:");
        if customer && staff { "staff" } else { actor }
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Customer => "customer",
        Role::Admin => "admin",
        Role::Service => "service",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules() {
        let customer = Caller::Authenticated { role: Role::Customer, subject: "c-1".into() };
        let service = Caller::Authenticated { role: Role::Service, subject: "svc".into() };
        let admin = Caller::Authenticated { role: Role::Admin, subject: "ops".into() };
        assert!(customer.require_customer("c-1", "x").is_ok());
        assert!(customer.require_customer("c-2", "x").is_err());
        assert!(customer.require_admin("x").is_err());
        assert!(customer.require_staff("x").is_err());
        assert!(service.require_staff("x").is_ok());
        assert!(service.require_admin("x").is_err());
        assert!(admin.require_admin("x").is_ok());
        assert!(Caller::Anonymous.require_known("x").is_err());
        assert_eq!(customer.customer_scope("x").expect("scoped"), Some("c-1".into()));
        assert_eq!(admin.customer_scope("x").expect("all"), None);
    }

    #[test]
    fn the_role_matrix_for_personal_data_outcomes_and_actors() {
        let customer = Caller::Authenticated { role: Role::Customer, subject: "c-1".into() };
        let service = Caller::Authenticated { role: Role::Service, subject: "svc".into() };
        let admin = Caller::Authenticated { role: Role::Admin, subject: "ops".into() };
        assert!(customer.require_personal_data("c-1", "x").is_ok());
        assert!(customer.require_personal_data("c-2", "x").is_err());
        assert!(service.require_personal_data("c-1", "x").is_err(), "service reads orders, not people");
        assert!(service.personal_data_scope("x").is_err());
        assert!(admin.require_personal_data("c-1", "x").is_ok());
        assert!(customer.may_see_outcome(Some("customer:c-1")));
        assert!(!customer.may_see_outcome(Some("customer:c-2")));
        assert!(!customer.may_see_outcome(Some("saga:order-fulfillment")));
        assert!(!customer.may_see_outcome(None));
        assert!(!service.may_see_outcome(Some("customer:c-1")));
        assert!(service.may_see_outcome(Some("service:svc")));
        assert!(admin.may_see_outcome(None));
        assert_eq!(customer.shown_actor("admin:ops"), "staff");
        assert_eq!(customer.shown_actor("service:svc"), "staff");
        assert_eq!(customer.shown_actor("customer:c-1"), "customer:c-1");
        assert_eq!(customer.shown_actor("saga:order-fulfillment"), "saga:order-fulfillment");
        assert_eq!(admin.shown_actor("service:svc"), "service:svc");
    }
}
