//! The customer aggregate.

use schema::Rejection;
use schema::codes;
use schema::customer::{self, CustomerCommand, CustomerEvent, CustomerRegistered};

use crate::aggregate::Aggregate;

#[derive(Debug, Default)]
pub struct Customer {
    /// Set once registered.
    pub credit_limit_cents: Option<i64>,
}

impl Aggregate for Customer {
    const TYPE: &'static str = customer::AGGREGATE;
    type Command = CustomerCommand;
    type Event = CustomerEvent;

    fn apply(&mut self, event: &CustomerEvent) {
        match event {
            CustomerEvent::CustomerRegistered(registered) => {
                self.credit_limit_cents = Some(registered.credit_limit_cents)
            }
        }
    }

    fn decide(&self, command: &CustomerCommand) -> Result<Vec<CustomerEvent>, Rejection> {
        match command {
            CustomerCommand::RegisterCustomer(register) => {
                if self.credit_limit_cents.is_some() {
                    return Err(Rejection::new(codes::CUSTOMER_ALREADY_EXISTS, "this customer is already registered"));
                }
                register.validate()?;
                Ok(vec![CustomerEvent::CustomerRegistered(CustomerRegistered {
                    name: register.name.trim().to_string(),
                    email: register.email.trim().to_string(),
                    credit_limit_cents: register.credit_limit_cents,
                })])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::customer::RegisterCustomer;

    fn register(limit: i64) -> CustomerCommand {
        CustomerCommand::RegisterCustomer(RegisterCustomer {
            name: " Ada ".into(),
            email: "ada@example.com".into(),
            credit_limit_cents: limit,
        })
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
