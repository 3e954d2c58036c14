//! The payment aggregate's contract. One payment per order: the aggregate id
//! is the order id.

use serde::{Deserialize, Serialize};

use crate::envelope::Message;

pub const AGGREGATE: &str = "payment";

/// Asks the provider to hold `amount_cents` for the order (sent by the saga).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizePayment {
    pub order_id: String,
    pub customer_id: String,
    pub amount_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturePayment {}

/// Returns the money (or drops the hold) after a cancellation or a compensation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundPayment {
    pub order_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum PaymentCommand {
    AuthorizePayment(AuthorizePayment),
    CapturePayment(CapturePayment),
    RefundPayment(RefundPayment),
}

impl Message for PaymentCommand {
    const KIND: &'static str = "command";
    fn schema_version(type_name: &str) -> Option<u32> {
        matches!(type_name, "AuthorizePayment" | "CapturePayment" | "RefundPayment").then_some(1)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentAuthorized {
    pub order_id: String,
    pub customer_id: String,
    pub amount_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentDeclined {
    pub order_id: String,
    pub customer_id: String,
    pub amount_cents: i64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentCaptured {
    pub order_id: String,
    pub amount_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRefunded {
    pub order_id: String,
    pub amount_cents: i64,
}

/// A refund before any authorization: the payment is closed, so an
/// authorization arriving late is ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentVoided {
    pub order_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum PaymentEvent {
    PaymentAuthorized(PaymentAuthorized),
    PaymentDeclined(PaymentDeclined),
    PaymentCaptured(PaymentCaptured),
    PaymentRefunded(PaymentRefunded),
    PaymentVoided(PaymentVoided),
}

impl Message for PaymentEvent {
    const KIND: &'static str = "event";
    fn schema_version(type_name: &str) -> Option<u32> {
        matches!(
            type_name,
            "PaymentAuthorized" | "PaymentDeclined" | "PaymentCaptured" | "PaymentRefunded" | "PaymentVoided"
        )
        .then_some(1)
    }
}
