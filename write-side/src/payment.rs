//! The payment aggregate. The provider is asked by the handler before
//! deciding (see [`crate::payment_provider`]); its answer travels into
//! `decide` with the command, so `decide` stays pure.

use schema::Rejection;
use schema::codes;
use schema::payment::{
    self, PaymentAuthorized, PaymentCaptured, PaymentCommand, PaymentDeclined, PaymentEvent, PaymentRefunded,
    PaymentVoided,
};

use crate::aggregate::Aggregate;

/// The provider's answer to an authorization request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderAnswer {
    Approved,
    Declined(String),
}

/// A payment command, with the provider's answer for an authorization.
#[derive(Debug, Clone)]
pub struct PaymentInput {
    pub command: PaymentCommand,
    pub provider: Option<ProviderAnswer>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Authorized,
    Declined,
    Captured,
    Refunded,
    Voided,
}

#[derive(Debug, Default)]
pub struct Payment {
    status: Option<Status>,
    order_id: String,
    amount_cents: i64,
}

impl Payment {
    /// Whether the provider still has to be asked (nothing decided yet).
    pub fn needs_provider(&self) -> bool {
        self.status.is_none()
    }
}

impl Aggregate for Payment {
    const TYPE: &'static str = payment::AGGREGATE;
    type Command = PaymentInput;
    type Event = PaymentEvent;

    fn starts_stream(command: &Self::Command) -> bool {
        matches!(command.command, PaymentCommand::AuthorizePayment(_))
    }

    fn apply(&mut self, event: &PaymentEvent) {
        match event {
            PaymentEvent::PaymentAuthorized(authorized) => {
                self.status = Some(Status::Authorized);
                self.order_id = authorized.order_id.clone();
                self.amount_cents = authorized.amount_cents;
            }
            PaymentEvent::PaymentDeclined(declined) => {
                self.status = Some(Status::Declined);
                self.order_id = declined.order_id.clone();
            }
            PaymentEvent::PaymentCaptured(_) => self.status = Some(Status::Captured),
            PaymentEvent::PaymentRefunded(_) => self.status = Some(Status::Refunded),
            PaymentEvent::PaymentVoided(_) => self.status = Some(Status::Voided),
        }
    }

    fn decide(&self, input: &PaymentInput) -> Result<Vec<PaymentEvent>, Rejection> {
        let (order_id, amount_cents) = (self.order_id.clone(), self.amount_cents);
        match &input.command {
            // Decided once; a repeat changes nothing.
            PaymentCommand::AuthorizePayment(_) if self.status.is_some() => Ok(Vec::new()),
            PaymentCommand::AuthorizePayment(authorize) => match &input.provider {
                Some(ProviderAnswer::Approved) => Ok(vec![PaymentEvent::PaymentAuthorized(PaymentAuthorized {
                    order_id: authorize.order_id.clone(),
                    customer_id: authorize.customer_id.clone(),
                    amount_cents: authorize.amount_cents,
                })]),
                Some(ProviderAnswer::Declined(reason)) => Ok(vec![PaymentEvent::PaymentDeclined(PaymentDeclined {
                    order_id: authorize.order_id.clone(),
                    customer_id: authorize.customer_id.clone(),
                    amount_cents: authorize.amount_cents,
                    reason: reason.clone(),
                })]),
                None => Err(Rejection::new(codes::PAYMENT_PROVIDER_UNAVAILABLE, "the provider was not asked")),
            },
            PaymentCommand::CapturePayment(_) => match self.status {
                Some(Status::Authorized) => {
                    Ok(vec![PaymentEvent::PaymentCaptured(PaymentCaptured { order_id, amount_cents })])
                }
                Some(Status::Captured) => Ok(Vec::new()),
                _ => Err(Rejection::new(codes::PAYMENT_NOT_AUTHORIZED, "nothing authorized to capture")),
            },
            PaymentCommand::RefundPayment(refund) => match self.status {
                Some(Status::Authorized | Status::Captured) => {
                    Ok(vec![PaymentEvent::PaymentRefunded(PaymentRefunded { order_id, amount_cents })])
                }
                // Nothing taken yet: void the payment, so an authorization
                // that arrives late (after a timed-out step was compensated)
                // holds nothing.
                None => Ok(vec![PaymentEvent::PaymentVoided(PaymentVoided { order_id: refund.order_id.clone() })]),
                Some(Status::Declined | Status::Refunded | Status::Voided) => Ok(Vec::new()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::payment::{AuthorizePayment, CapturePayment, RefundPayment};

    fn given(events: &[PaymentEvent]) -> Payment {
        let mut payment = Payment::default();
        events.iter().for_each(|event| payment.apply(event));
        payment
    }

    fn authorize(answer: Option<ProviderAnswer>) -> PaymentInput {
        PaymentInput {
            command: PaymentCommand::AuthorizePayment(AuthorizePayment {
                order_id: "o1".into(),
                customer_id: "c1".into(),
                amount_cents: 500,
            }),
            provider: answer,
        }
    }

    fn plain(command: PaymentCommand) -> PaymentInput {
        PaymentInput { command, provider: None }
    }

    fn authorized() -> PaymentEvent {
        PaymentEvent::PaymentAuthorized(PaymentAuthorized {
            order_id: "o1".into(),
            customer_id: "c1".into(),
            amount_cents: 500,
        })
    }

    #[test]
    fn the_providers_answer_decides_the_authorization() {
        assert_eq!(given(&[]).decide(&authorize(Some(ProviderAnswer::Approved))), Ok(vec![authorized()]));
        let declined = given(&[]).decide(&authorize(Some(ProviderAnswer::Declined("limit".into())))).expect("decided");
        assert!(matches!(&declined[0], PaymentEvent::PaymentDeclined(d) if d.reason == "limit"));
    }

    #[test]
    fn an_authorization_is_decided_once() {
        let payment = given(&[authorized()]);
        assert!(!payment.needs_provider());
        assert_eq!(payment.decide(&authorize(Some(ProviderAnswer::Approved))), Ok(vec![]));
    }

    #[test]
    fn capture_needs_an_authorization_and_refund_returns_what_was_taken() {
        let capture = plain(PaymentCommand::CapturePayment(CapturePayment {}));
        let refund = plain(PaymentCommand::RefundPayment(RefundPayment { order_id: "o1".into() }));
        assert!(given(&[]).decide(&capture).is_err());
        let voided = given(&[]).decide(&refund).expect("voided");
        assert_eq!(voided, vec![PaymentEvent::PaymentVoided(PaymentVoided { order_id: "o1".into() })]);
        let late = given(&[voided[0].clone()]).decide(&authorize(Some(ProviderAnswer::Approved)));
        assert_eq!(late, Ok(vec![]), "a late authorization after a void holds nothing");
        let refunded = given(&[authorized()]).decide(&refund).expect("refunded");
        assert_eq!(
            refunded,
            vec![PaymentEvent::PaymentRefunded(PaymentRefunded { order_id: "o1".into(), amount_cents: 500 })]
        );
        assert_eq!(given(&[authorized(), refunded[0].clone()]).decide(&refund), Ok(vec![]));
        assert!(given(&[authorized()]).decide(&capture).is_ok());
    }
}
