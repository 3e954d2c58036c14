//! Rate limits per caller: every GraphQL operation — an HTTP request, a
//! WebSocket `subscribe` — takes one cell of its caller's budget (GCRA, the
//! `governor` crate): `per_second` cells come back each second, up to
//! `burst` saved. The caller is the token's subject when the request
//! carries a valid token, else the client's IP address. Past it, the
//! operation is refused before anything runs: `RATE_LIMITED` with
//! `retryAfterSeconds` (HTTP 429 with `Retry-After`).
//!
//! The budgets live in this gateway process's memory, so N gateways allow
//! N times the rate; a background task forgets idle callers once a minute.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use tokio_util::sync::CancellationToken;

use crate::auth::Caller;

/// Operations per caller: `per_second` sustained (0 turns the limit off),
/// `burst` at once (0: as many as one second's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitSettings {
    pub per_second: u32,
    pub burst: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl RateLimitSettings {
    pub const DEFAULT: Self = Self { per_second: 100, burst: 200 };

    pub fn off() -> Self {
        Self { per_second: 0, burst: 0 }
    }
}

/// Whose budget an operation takes.
pub fn caller_key(caller: &Caller, ip: IpAddr) -> String {
    match caller {
        Caller::Authenticated { subject, .. } => format!("sub:{subject}"),
        Caller::Open | Caller::Anonymous => format!("ip:{ip}"),
    }
}

/// Every caller's budget; cheap to clone.
#[derive(Clone)]
pub struct RateLimiter {
    limiter: Option<Arc<DefaultKeyedRateLimiter<String>>>,
}

impl RateLimiter {
    /// The limiter, and a task that forgets idle callers until `shutdown`.
    pub fn start(settings: RateLimitSettings, shutdown: CancellationToken) -> Self {
        let Some(per_second) = NonZeroU32::new(settings.per_second) else { return Self { limiter: None } };
        // No burst given: one second's worth.
        let burst = NonZeroU32::new(settings.burst).unwrap_or(per_second);
        let limiter = Arc::new(DefaultKeyedRateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)));
        let sweep = Arc::downgrade(&limiter);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = every.tick() => match sweep.upgrade() {
                        Some(limiter) => {
                            limiter.retain_recent();
                            limiter.shrink_to_fit();
                        }
                        None => return,
                    },
                }
            }
        });
        Self { limiter: Some(limiter) }
    }

    /// Takes one operation from `key`'s budget, or says how long until one is back.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        limiter.check_key(&key.to_string()).map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_caller_past_its_burst_waits_and_others_do_not() {
        let limiter = RateLimiter::start(RateLimitSettings { per_second: 1, burst: 2 }, CancellationToken::new());
        assert!(limiter.check("ip:1").is_ok());
        assert!(limiter.check("ip:1").is_ok());
        let wait = limiter.check("ip:1").expect_err("past the burst");
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
        assert!(limiter.check("ip:2").is_ok(), "another caller has its own budget");
        let off = RateLimiter::start(RateLimitSettings::off(), CancellationToken::new());
        assert!((0..1000).all(|_| off.check("ip:1").is_ok()));
    }

    #[test]
    fn callers_are_their_subject_else_their_address() {
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let customer = Caller::Authenticated { role: crate::Role::Customer, subject: "c1".into() };
        assert_eq!(caller_key(&customer, ip), "sub:c1");
        assert_eq!(caller_key(&Caller::Anonymous, ip), "ip:10.0.0.1");
    }
}
