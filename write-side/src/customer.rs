//! The customer aggregate, and the email claim each registration makes
//! first (see [`schema::customer`]).

use schema::Rejection;
use schema::codes;
use schema::customer::{
    self, CustomerCommand, CustomerEvent, CustomerRegistered, EmailClaimed, EmailCommand, EmailEvent,
};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::aggregate::Aggregate;
use crate::event_store::{SqlEventStore, StoreError};

/// A customer command, with what the handler found out first: whether the
/// registration's email is this customer's (claimed now or before) or
/// another's.
#[derive(Debug, Clone)]
pub struct CustomerInput {
    pub command: CustomerCommand,
    pub email_taken: bool,
}

#[derive(Debug, Default)]
pub struct Customer {
    /// Set once registered.
    pub credit_limit_cents: Option<i64>,
}

impl Aggregate for Customer {
    const TYPE: &'static str = customer::AGGREGATE;
    type Command = CustomerInput;
    type Event = CustomerEvent;

    /// A registration (or an email claim) is the first event of its stream.
    fn starts_stream(_command: &Self::Command) -> bool {
        true
    }

    fn apply(&mut self, event: &CustomerEvent) {
        match event {
            CustomerEvent::CustomerRegistered(registered) => {
                self.credit_limit_cents = Some(registered.credit_limit_cents)
            }
        }
    }

    fn decide(&self, input: &CustomerInput) -> Result<Vec<CustomerEvent>, Rejection> {
        match &input.command {
            CustomerCommand::RegisterCustomer(register) => {
                if self.credit_limit_cents.is_some() {
                    return Err(Rejection::new(codes::CUSTOMER_ALREADY_EXISTS, "this customer is already registered"));
                }
                register.validate()?;
                if input.email_taken {
                    return Err(Rejection::new(
                        codes::CUSTOMER_EMAIL_TAKEN,
                        format!("a customer with the email `{}` is already registered", register.email.trim()),
                    ));
                }
                Ok(vec![CustomerEvent::CustomerRegistered(CustomerRegistered {
                    name: register.name.trim().to_string(),
                    email: register.email.trim().to_string(),
                    credit_limit_cents: register.credit_limit_cents,
                })])
            }
        }
    }
}

/// One email address: the customer who claimed it, if any.
#[derive(Debug, Default)]
pub struct CustomerEmail {
    pub owner: Option<String>,
}

impl Aggregate for CustomerEmail {
    const TYPE: &'static str = customer::EMAIL_AGGREGATE;
    type Command = EmailCommand;
    type Event = EmailEvent;

    /// A registration (or an email claim) is the first event of its stream.
    fn starts_stream(_command: &Self::Command) -> bool {
        true
    }

    fn apply(&mut self, event: &EmailEvent) {
        match event {
            EmailEvent::EmailClaimed(claimed) => self.owner = Some(claimed.customer_id.clone()),
        }
    }

    /// First come, first served; claiming again for the same customer (a
    /// redelivered registration) changes nothing.
    fn decide(&self, command: &EmailCommand) -> Result<Vec<EmailEvent>, Rejection> {
        match command {
            EmailCommand::ClaimEmail(claim) => match &self.owner {
                None => Ok(vec![EmailEvent::EmailClaimed(EmailClaimed { customer_id: claim.customer_id.clone() })]),
                Some(owner) if *owner == claim.customer_id => Ok(Vec::new()),
                Some(_) => Err(Rejection::new(codes::CUSTOMER_EMAIL_TAKEN, "the email belongs to another customer")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::customer::{ClaimEmail, RegisterCustomer};

    fn register(limit: i64) -> CustomerInput {
        CustomerInput {
            command: CustomerCommand::RegisterCustomer(RegisterCustomer {
                name: " Ada ".into(),
                email: "ada@example.com".into(),
                credit_limit_cents: limit,
            }),
            email_taken: false,
        }
    }

    #[test]
    fn an_email_goes_to_its_first_claimant_and_a_repeat_claim_changes_nothing() {
        let claim = |id: &str| EmailCommand::ClaimEmail(ClaimEmail { customer_id: id.into() });
        let mut email = CustomerEmail::default();
        let events = email.decide(&claim("c-1")).expect("free");
        assert_eq!(events, vec![EmailEvent::EmailClaimed(EmailClaimed { customer_id: "c-1".into() })]);
        email.apply(&events[0]);
        assert_eq!(email.decide(&claim("c-1")), Ok(Vec::new()));
        assert_eq!(email.decide(&claim("c-2")).err().map(|r| r.code).as_deref(), Some(codes::CUSTOMER_EMAIL_TAKEN));
    }

    #[test]
    fn a_registration_whose_email_is_taken_is_rejected() {
        let taken = CustomerInput { email_taken: true, ..register(1) };
        assert_eq!(
            Customer::default().decide(&taken).err().map(|r| r.code).as_deref(),
            Some(codes::CUSTOMER_EMAIL_TAKEN)
        );
    }

    #[test]
    fn registering_records_the_trimmed_name_and_the_limit() {
        let events = Customer::default().decide(&register(5000)).expect("accepted");
        assert_eq!(
            events,
            vec![CustomerEvent::CustomerRegistered(CustomerRegistered {
                name: "Ada".into(),
                email: "ada@example.com".into(),
                credit_limit_cents: 5000
            })]
        );
    }

    #[test]
    fn registering_twice_or_with_bad_input_is_rejected() {
        let mut customer = Customer::default();
        customer.apply(&Customer::default().decide(&register(1)).expect("accepted")[0]);
        assert_eq!(
            customer.decide(&register(1)).err().map(|r| r.code).as_deref(),
            Some(codes::CUSTOMER_ALREADY_EXISTS)
        );
        assert_eq!(
            Customer::default().decide(&register(-1)).err().map(|r| r.code).as_deref(),
            Some(codes::INVALID_CREDIT_LIMIT)
        );
    }
}

/// Registered customers' credit limits, read from the store once per
/// process: a registration is the only event of a customer's stream, so a
/// limit once read never changes. Every order reads its customer twice
/// (the saga's check, the payment's authorization); this makes both free
/// after the first. A customer not registered yet is not remembered.
#[derive(Clone)]
pub struct CreditLimits {
    store: SqlEventStore,
    known: Arc<Mutex<HashMap<String, i64>>>,
}

/// Customers remembered, at most (then the memory starts over).
const REMEMBERED: usize = 100_000;

impl CreditLimits {
    pub fn new(store: SqlEventStore) -> Self {
        Self { store, known: Arc::default() }
    }

    /// The customer's credit limit, or `None` if no such customer is registered.
    pub async fn get(&self, customer_id: &str) -> Result<Option<i64>, StoreError> {
        if let Some(limit) = self.known.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(customer_id) {
            return Ok(Some(*limit));
        }
        let (customer, _) = self.store.load::<Customer>(customer_id).await?;
        if let Some(limit) = customer.credit_limit_cents {
            let mut known = self.known.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if known.len() >= REMEMBERED {
                known.clear();
            }
            known.insert(customer_id.to_string(), limit);
        }
        Ok(customer.credit_limit_cents)
    }
}

#[cfg(test)]
mod credit_limit_tests {
    use schema::customer::RegisterCustomer;
    use schema::{CommandEnvelope, Metadata};
    use uuid::Uuid;

    use super::*;

    #[tokio::test]
    async fn a_registered_limit_is_read_once_and_an_unknown_customer_is_not_remembered() {
        let pool = schema::sql::connect("sqlite::memory:", 1).await.expect("sqlite");
        let store = SqlEventStore::new(pool.clone());
        store.migrate().await.expect("migrate");
        let limits = CreditLimits::new(store.clone());
        assert_eq!(limits.get("ada").await.expect("read"), None, "not registered yet");

        let register = CustomerCommand::RegisterCustomer(RegisterCustomer {
            name: "Ada".into(),
            email: "ada@example.com".into(),
            credit_limit_cents: 5_000,
        });
        let id = Uuid::now_v7();
        let envelope = CommandEnvelope::new(id, "customer", "ada", Metadata::origin(id, "test"), &register);
        store
            .execute::<Customer>(&envelope, CustomerInput { command: register, email_taken: false })
            .await
            .expect("registered");
        assert_eq!(limits.get("ada").await.expect("read"), Some(5_000), "registered since: read again");

        // Remembered: the store is not asked again (its copy is gone here).
        sqlx::query("DELETE FROM events WHERE aggregate_id = 'ada'").execute(&pool).await.expect("delete");
        assert_eq!(limits.get("ada").await.expect("read"), Some(5_000));
        assert_eq!(CreditLimits::new(store).get("ada").await.expect("read"), None, "a new cache reads the store");
    }
}
