//! Authentication (JWT, HS256 secret or RS256 public key) and the access
//! rules. With no key configured Conveyor runs open: every caller may do
//! everything, and start-up says so loudly.
//!
//! | caller | may |
//! |---|---|
//! | anyone | read the catalog (`product`, `products`) |
//! | `customer` (its `sub` is its customer id) | read, place, cancel and subscribe to its own orders; read itself |
//! | `service` | everything on orders (any customer), including `shipOrder` |
//! | `admin` | everything, including catalog and customer writes |

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_graphql::Error;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::graphql::errors::coded;

/// No or an invalid token where one is needed.
pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
/// A valid token whose role or subject may not do this.
pub const FORBIDDEN: &str = "FORBIDDEN";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Admin,
    Service,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: Role,
    exp: u64,
    iat: u64,
}

/// Who is calling, for one request or one WebSocket connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No key is configured: everything is allowed.
    Open,
    /// A key is configured and the request carried no token.
    Anonymous,
    Authenticated {
        role: Role,
        subject: String,
    },
}

/// Verifies tokens; `None` runs open.
#[derive(Clone)]
pub struct Authenticator {
    key: Option<(DecodingKey, Validation)>,
}

impl std::fmt::Debug for Authenticator {
    /// Never prints key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_open() { "Authenticator(open)" } else { "Authenticator(jwt)" })
    }
}

impl Authenticator {
    pub fn open() -> Self {
        Self { key: None }
    }

    pub fn hs256(secret: &[u8]) -> Result<Self, jsonwebtoken::errors::Error> {
        Ok(Self { key: Some((DecodingKey::from_secret(secret)?, validation(Algorithm::HS256))) })
    }

    pub fn rs256(public_key_pem: &[u8]) -> Result<Self, jsonwebtoken::errors::Error> {
        Ok(Self { key: Some((DecodingKey::from_rsa_pem(public_key_pem)?, validation(Algorithm::RS256))) })
    }

    pub fn is_open(&self) -> bool {
        self.key.is_none()
    }

    /// The caller an `Authorization` value (`Bearer …`) names.
    pub fn caller(&self, authorization: Option<&str>) -> Result<Caller, Error> {
        self.caller_until(authorization).map(|(caller, _)| caller)
    }

    /// The caller, and until when its token is accepted (its `exp` plus the
    /// validation's leeway for clock skew); `None` without a token. A
    /// WebSocket connection ends then: it outlives no token.
    pub fn caller_until(&self, authorization: Option<&str>) -> Result<(Caller, Option<SystemTime>), Error> {
        let Some((key, validation)) = &self.key else { return Ok((Caller::Open, None)) };
        let Some(value) = authorization.map(str::trim).filter(|value| !value.is_empty()) else {
            return Ok((Caller::Anonymous, None));
        };
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| coded(UNAUTHENTICATED, "authorization must be `Bearer <token>`"))?;
        let claims = jsonwebtoken::decode::<Claims>(token.trim(), key, validation)
            .map_err(|error| coded(UNAUTHENTICATED, format!("invalid token: {error}")))?
            .claims;
        let until = UNIX_EPOCH + Duration::from_secs(claims.exp.saturating_add(validation.leeway));
        Ok((Caller::Authenticated { role: claims.role, subject: claims.sub }, Some(until)))
    }
}

/// How long past its `exp` a token is still accepted, for clock skew.
pub const LEEWAY: Duration = Duration::from_secs(60);

fn validation(algorithm: Algorithm) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = LEEWAY.as_secs();
    validation
}

/// Signs a token with an HS256 secret (for `conveyor token`).
pub fn issue(secret: &[u8], role: Role, subject: &str, ttl: Duration) -> Result<String, jsonwebtoken::errors::Error> {
    issue_expiring(secret, role, subject, SystemTime::now() + ttl)
}

/// Signs a token that expires at `exp` (whole seconds).
pub fn issue_expiring(
    secret: &[u8],
    role: Role,
    subject: &str,
    exp: SystemTime,
) -> Result<String, jsonwebtoken::errors::Error> {
    let seconds = |at: SystemTime| at.duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_secs()).unwrap_or(0);
    let claims = Claims { sub: subject.to_string(), role, iat: seconds(SystemTime::now()), exp: seconds(exp) };
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret)?)
}

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

    /// Anything about one customer's data.
    pub fn require_customer(&self, customer_id: &str, what: &str) -> Result<(), Error> {
        match self {
            Self::Open | Self::Authenticated { role: Role::Admin | Role::Service, .. } => Ok(()),
            Self::Authenticated { role: Role::Customer, subject } if subject == customer_id => Ok(()),
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
    fn tokens_round_trip_and_bad_ones_are_refused() {
        let auth = Authenticator::hs256(b"s3cret").expect("key");
        let token = issue(b"s3cret", Role::Customer, "c-1", Duration::from_secs(60)).expect("signs");
        let caller = auth.caller(Some(&format!("Bearer {token}"))).expect("valid");
        assert_eq!(caller, Caller::Authenticated { role: Role::Customer, subject: "c-1".into() });
        assert_eq!(auth.caller(None).expect("no token"), Caller::Anonymous);
        let forged = issue(b"other", Role::Admin, "x", Duration::from_secs(60)).expect("signs");
        assert!(auth.caller(Some(&format!("Bearer {forged}"))).is_err());
        assert!(auth.caller(Some("Basic abc")).is_err());
        assert_eq!(Authenticator::open().caller(Some("garbage")).expect("open"), Caller::Open);
    }

    #[test]
    fn rs256_tokens_verify_with_the_public_key_only() {
        // A key pair made for this test alone (openssl genpkey -algorithm RSA).
        let private = include_bytes!("testdata/rsa-private.pem");
        let public = include_bytes!("testdata/rsa-public.pem");
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let claims = Claims { sub: "svc".into(), role: Role::Service, iat: now, exp: now + 60 };
        let key = EncodingKey::from_rsa_pem(private).expect("private key");
        let token = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).expect("signs");
        let auth = Authenticator::rs256(public).expect("public key");
        let caller = auth.caller(Some(&format!("Bearer {token}"))).expect("verifies");
        assert_eq!(caller, Caller::Authenticated { role: Role::Service, subject: "svc".into() });
        let hs = issue(b"a-secret-of-enough-length", Role::Admin, "x", Duration::from_secs(60)).expect("signs");
        assert!(auth.caller(Some(&format!("Bearer {hs}"))).is_err(), "an HS256 token is not accepted by an RS256 key");
    }

    #[test]
    fn expired_tokens_are_refused() {
        let auth = Authenticator::hs256(b"s3cret").expect("key");
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let claims = Claims { sub: "a".into(), role: Role::Admin, iat: now - 7200, exp: now - 3600 };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"s3cret").expect("key"),
        )
        .expect("signs");
        assert!(auth.caller(Some(&format!("Bearer {token}"))).is_err());
    }

    #[test]
    fn a_token_is_good_until_its_expiry_plus_the_leeway() {
        let auth = Authenticator::hs256(b"s3cret").expect("key");
        let exp = UNIX_EPOCH + Duration::from_secs(4_000_000_000);
        let token = issue_expiring(b"s3cret", Role::Admin, "a", exp).expect("signs");
        let (_, until) = auth.caller_until(Some(&format!("Bearer {token}"))).expect("valid");
        assert_eq!(until, Some(exp + LEEWAY));
        assert_eq!(auth.caller_until(None).expect("anonymous").1, None);
        assert_eq!(Authenticator::open().caller_until(None).expect("open").1, None);
        // Within the leeway: still accepted.
        let lately = issue_expiring(b"s3cret", Role::Admin, "a", SystemTime::now() - LEEWAY / 2).expect("signs");
        assert!(auth.caller(Some(&format!("Bearer {lately}"))).is_ok());
    }

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
}
