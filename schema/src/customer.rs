//! The customer aggregate's contract, and the email claims that keep one
//! email to one customer: before a registration is decided, the write side
//! claims its email in a stream of its own (`customer_email`, keyed by a
//! hash of the normalized address), which serializes registrations racing
//! for the same address.

use serde::{Deserialize, Serialize};

use crate::codes;
use crate::envelope::Message;
use crate::outcome::Rejection;

pub const AGGREGATE: &str = "customer";
/// One stream per email address, holding who claimed it.
pub const EMAIL_AGGREGATE: &str = "customer_email";
pub const MAX_NAME_CHARS: usize = 100;
pub const MAX_EMAIL_CHARS: usize = 254;
/// The highest credit limit (a hundred million in currency units), which
/// also bounds every confirmed order's total.
pub const MAX_CREDIT_LIMIT_CENTS: i64 = 10_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterCustomer {
    pub name: String,
    pub email: String,
    /// The most one order may cost; the payment provider declines above it.
    pub credit_limit_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum CustomerCommand {
    RegisterCustomer(RegisterCustomer),
}

impl Message for CustomerCommand {
    const KIND: &'static str = "command";
    fn schema_version(type_name: &str) -> Option<u32> {
        (type_name == "RegisterCustomer").then_some(1)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerRegistered {
    pub name: String,
    pub email: String,
    pub credit_limit_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum CustomerEvent {
    CustomerRegistered(CustomerRegistered),
}

impl Message for CustomerEvent {
    const KIND: &'static str = "event";
    fn schema_version(type_name: &str) -> Option<u32> {
        (type_name == "CustomerRegistered").then_some(1)
    }
}

/// Claims an email address for a customer (sent by the write side itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimEmail {
    pub customer_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum EmailCommand {
    ClaimEmail(ClaimEmail),
}

impl Message for EmailCommand {
    const KIND: &'static str = "command";
    fn schema_version(type_name: &str) -> Option<u32> {
        (type_name == "ClaimEmail").then_some(1)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailClaimed {
    pub customer_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum EmailEvent {
    EmailClaimed(EmailClaimed),
}

impl Message for EmailEvent {
    const KIND: &'static str = "event";
    fn schema_version(type_name: &str) -> Option<u32> {
        (type_name == "EmailClaimed").then_some(1)
    }
}

/// The `customer_email` stream of an address: the same for any spelling
/// that differs only in surrounding space or letter case. A hash, so the
/// address itself appears in no stream id, subject or log line.
pub fn email_claim_id(email: &str) -> String {
    crate::envelope::derived_id("customer-email", &email.trim().to_lowercase()).to_string()
}

impl RegisterCustomer {
    pub fn validate(&self) -> Result<(), Rejection> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
            return Err(Rejection::new(codes::INVALID_NAME, format!("name must be 1 to {MAX_NAME_CHARS} characters")));
        }
        let email = self.email.trim();
        let plausible = email.chars().count() <= MAX_EMAIL_CHARS
            && !email.chars().any(char::is_whitespace)
            && email.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
        if !plausible {
            return Err(Rejection::new(codes::INVALID_EMAIL, format!("`{email}` is not an email address")));
        }
        if !(0..=MAX_CREDIT_LIMIT_CENTS).contains(&self.credit_limit_cents) {
            return Err(Rejection::new(
                codes::INVALID_CREDIT_LIMIT,
                format!("credit limit must be 0 to {MAX_CREDIT_LIMIT_CENTS} cents"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(name: &str, email: &str, limit: i64) -> Option<String> {
        RegisterCustomer { name: name.into(), email: email.into(), credit_limit_cents: limit }
            .validate()
            .err()
            .map(|rejection| rejection.code)
    }

    #[test]
    fn an_email_is_claimed_whatever_its_case_or_surrounding_space() {
        assert_eq!(email_claim_id("Ada@Example.com "), email_claim_id("ada@example.com"));
        assert_ne!(email_claim_id("ada@example.com"), email_claim_id("ada@example.org"));
        assert!(!email_claim_id("ada@example.com").contains('@'), "no address in stream ids");
    }

    #[test]
    fn registration_rules() {
        assert_eq!(code("Ada", "ada@example.com", 0), None);
        assert_eq!(code(" ", "ada@example.com", 0).as_deref(), Some(codes::INVALID_NAME));
        assert_eq!(code(&"x".repeat(101), "ada@example.com", 0).as_deref(), Some(codes::INVALID_NAME));
        assert_eq!(code("Ada", "ada.example.com", 0).as_deref(), Some(codes::INVALID_EMAIL));
        assert_eq!(code("Ada", "@example.com", 0).as_deref(), Some(codes::INVALID_EMAIL));
        assert_eq!(code("Ada", "ada@localhost", 0).as_deref(), Some(codes::INVALID_EMAIL));
        assert_eq!(code("Ada", "ada@example.com", -1).as_deref(), Some(codes::INVALID_CREDIT_LIMIT));
        assert_eq!(code("Ada", "ada@example.com", MAX_CREDIT_LIMIT_CENTS), None);
        assert_eq!(
            code("Ada", "ada@example.com", MAX_CREDIT_LIMIT_CENTS + 1).as_deref(),
            Some(codes::INVALID_CREDIT_LIMIT)
        );
    }
}
