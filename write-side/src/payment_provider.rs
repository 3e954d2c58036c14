//! The payment provider port, and a simulated provider for development,
//! tests and benchmarks. A real provider would receive the command id as its
//! idempotency key, so a retried authorization never charges twice.

use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use crate::payment::ProviderAnswer;

#[derive(Debug, thiserror::Error)]
#[error("payment provider unavailable: {0}")]
pub struct ProviderError(pub String);

#[async_trait]
pub trait PaymentProvider: Send + Sync {
    /// Asks to hold `amount_cents`; `key` identifies the request (idempotency).
    async fn authorize(
        &self,
        key: Uuid,
        amount_cents: i64,
        credit_limit_cents: i64,
    ) -> Result<ProviderAnswer, ProviderError>;
}

/// Declines what exceeds the customer's credit limit; otherwise approves,
/// after `latency`, failing a `failure_rate` share of requests outright.
#[derive(Debug, Clone, Default)]
pub struct SimulatedProvider {
    pub latency: Duration,
    /// 0.0 (never fails) to 1.0 (always fails).
    pub failure_rate: f64,
}

#[async_trait]
impl PaymentProvider for SimulatedProvider {
    async fn authorize(
        &self,
        _key: Uuid,
        amount_cents: i64,
        credit_limit_cents: i64,
    ) -> Result<ProviderAnswer, ProviderError> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        // A fresh random draw per request: failures are transient.
        let draw = (Uuid::new_v4().as_u128() % 1_000_000) as f64 / 1_000_000.0;
        if draw < self.failure_rate {
            return Err(ProviderError("simulated failure".into()));
        }
        if amount_cents > credit_limit_cents {
            return Ok(ProviderAnswer::Declined(format!(
                "amount {amount_cents} exceeds the credit limit {credit_limit_cents}"
            )));
        }
        Ok(ProviderAnswer::Approved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_simulation_declines_above_the_limit_and_fails_at_its_rate() {
        let provider = SimulatedProvider::default();
        assert_eq!(provider.authorize(Uuid::nil(), 100, 100).await.ok(), Some(ProviderAnswer::Approved));
        assert!(matches!(provider.authorize(Uuid::nil(), 101, 100).await, Ok(ProviderAnswer::Declined(_))));
        let broken = SimulatedProvider { failure_rate: 1.0, ..Default::default() };
        assert!(broken.authorize(Uuid::nil(), 1, 100).await.is_err());
    }
}
