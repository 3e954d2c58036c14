//! Authentication (JWT, HS256 secret or RS256 public key) and the access
//! rules. With no key configured Conveyor runs open: every caller may do
//! everything, and start-up says so loudly.
//!
//! The role matrix is in docs/operations.md ("Who may do what"); the
//! `require_*`, `may_*` and `*_scope` methods of [`Caller`] (in
//! `auth/rules.rs`) are its only source in code. In short: anyone reads the catalog; a `customer` (its `sub` is its
//! customer id) reads, places, cancels and follows its own orders and reads
//! itself; `service` works on every order but reads no customer's personal
//! data; `admin` may do everything. For a customer, another customer's
//! order is answered exactly as a missing one, and command outcomes are
//! shown only to the caller who sent the command (admin: all).
//!
//! Tokens: HS256 secrets of at least [`MIN_SECRET_BYTES`], or an RS256
//! public key; `exp` required, `nbf` honoured, and `iss` / `aud` required
//! and checked when configured ([`Authenticator::with_claims`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_graphql::Error;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::graphql::errors::coded;

mod rules;

/// No or an invalid token where one is needed.
pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
/// A valid token whose role or subject may not do this.
pub const FORBIDDEN: &str = "FORBIDDEN";
/// The shortest HS256 secret accepted: as many bytes as the hash (RFC 7518 §3.2).
pub const MIN_SECRET_BYTES: usize = 32;

/// Why a key cannot verify tokens.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the HS256 secret must be at least {MIN_SECRET_BYTES} bytes, got {0}")]
    ShortSecret(usize),
    #[error(transparent)]
    Key(#[from] jsonwebtoken::errors::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    /// Issued when configured. Checked by the validation (from the token
    /// itself: `aud` may be one audience or a list), never read from here.
    #[serde(default, skip_deserializing, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(default, skip_deserializing, skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
}

/// What a token must say about where it comes from and whom it is for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenClaims {
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud` (one of the token's audiences), when set.
    pub audience: Option<String>,
}

/// Who is calling, for one request or one WebSocket connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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

    /// Verifies HS256 tokens; a secret shorter than [`MIN_SECRET_BYTES`] is refused.
    pub fn hs256(secret: &[u8]) -> Result<Self, KeyError> {
        check_secret(secret)?;
        Ok(Self { key: Some((DecodingKey::from_secret(secret)?, validation(Algorithm::HS256))) })
    }

    pub fn rs256(public_key_pem: &[u8]) -> Result<Self, jsonwebtoken::errors::Error> {
        Ok(Self { key: Some((DecodingKey::from_rsa_pem(public_key_pem)?, validation(Algorithm::RS256))) })
    }

    /// Requires and checks `iss` and `aud` where `claims` names them.
    pub fn with_claims(mut self, claims: &TokenClaims) -> Self {
        if let Some((_, validation)) = &mut self.key {
            let mut required = vec!["exp"];
            if let Some(issuer) = &claims.issuer {
                validation.set_issuer(&[issuer]);
                required.push("iss");
            }
            if let Some(audience) = &claims.audience {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            validation.set_required_spec_claims(&required);
        }
        self
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

/// `exp` required; `nbf` honoured (both with [`LEEWAY`]); without an
/// audience configured, a token that names one is refused.
fn validation(algorithm: Algorithm) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = LEEWAY.as_secs();
    validation.validate_nbf = true;
    validation
}

fn check_secret(secret: &[u8]) -> Result<(), KeyError> {
    if secret.len() < MIN_SECRET_BYTES { Err(KeyError::ShortSecret(secret.len())) } else { Ok(()) }
}

/// Signs a token with an HS256 secret (for `conveyor token` and tests).
pub fn issue(secret: &[u8], role: Role, subject: &str, ttl: Duration) -> Result<String, KeyError> {
    issue_expiring(secret, role, subject, SystemTime::now() + ttl)
}

/// Signs a token that expires at `exp` (whole seconds).
pub fn issue_expiring(secret: &[u8], role: Role, subject: &str, exp: SystemTime) -> Result<String, KeyError> {
    issue_with(secret, role, subject, exp, &TokenClaims::default())
}

/// Signs a token that expires at `exp` and carries `claims`' issuer and audience.
pub fn issue_with(
    secret: &[u8],
    role: Role,
    subject: &str,
    exp: SystemTime,
    claims: &TokenClaims,
) -> Result<String, KeyError> {
    check_secret(secret)?;
    let seconds = |at: SystemTime| at.duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_secs()).unwrap_or(0);
    let claims = Claims {
        sub: subject.to_string(),
        role,
        iat: seconds(SystemTime::now()),
        exp: seconds(exp),
        iss: claims.issuer.clone(),
        aud: claims.audience.clone(),
    };
    Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a-unit-test-secret-of-32-bytes!!";

    #[test]
    fn tokens_round_trip_and_bad_ones_are_refused() {
        let auth = Authenticator::hs256(SECRET).expect("key");
        let token = issue(SECRET, Role::Customer, "c-1", Duration::from_secs(60)).expect("signs");
        let caller = auth.caller(Some(&format!("Bearer {token}"))).expect("valid");
        assert_eq!(caller, Caller::Authenticated { role: Role::Customer, subject: "c-1".into() });
        assert_eq!(auth.caller(None).expect("no token"), Caller::Anonymous);
        let forged =
            issue(b"another-secret-of-at-least-32-bytes", Role::Admin, "x", Duration::from_secs(60)).expect("signs");
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
        let claims = Claims { sub: "svc".into(), role: Role::Service, iat: now, exp: now + 60, iss: None, aud: None };
        let key = EncodingKey::from_rsa_pem(private).expect("private key");
        let token = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).expect("signs");
        let auth = Authenticator::rs256(public).expect("public key");
        let caller = auth.caller(Some(&format!("Bearer {token}"))).expect("verifies");
        assert_eq!(caller, Caller::Authenticated { role: Role::Service, subject: "svc".into() });
        let hs = issue(b"a-secret-of-enough-length-32-byte", Role::Admin, "x", Duration::from_secs(60)).expect("signs");
        assert!(auth.caller(Some(&format!("Bearer {hs}"))).is_err(), "an HS256 token is not accepted by an RS256 key");
    }

    #[test]
    fn expired_tokens_are_refused() {
        let auth = Authenticator::hs256(SECRET).expect("key");
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let claims =
            Claims { sub: "a".into(), role: Role::Admin, iat: now - 7200, exp: now - 3600, iss: None, aud: None };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET).expect("key"),
        )
        .expect("signs");
        assert!(auth.caller(Some(&format!("Bearer {token}"))).is_err());
    }

    #[test]
    fn a_token_is_good_until_its_expiry_plus_the_leeway() {
        let auth = Authenticator::hs256(SECRET).expect("key");
        let exp = UNIX_EPOCH + Duration::from_secs(4_000_000_000);
        let token = issue_expiring(SECRET, Role::Admin, "a", exp).expect("signs");
        let (_, until) = auth.caller_until(Some(&format!("Bearer {token}"))).expect("valid");
        assert_eq!(until, Some(exp + LEEWAY));
        assert_eq!(auth.caller_until(None).expect("anonymous").1, None);
        assert_eq!(Authenticator::open().caller_until(None).expect("open").1, None);
        // Within the leeway: still accepted.
        let lately = issue_expiring(SECRET, Role::Admin, "a", SystemTime::now() - LEEWAY / 2).expect("signs");
        assert!(auth.caller(Some(&format!("Bearer {lately}"))).is_ok());
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(matches!(Authenticator::hs256(b"sixteen-byte-key"), Err(KeyError::ShortSecret(16))));
        assert!(issue(b"short", Role::Admin, "a", Duration::from_secs(60)).is_err());
        assert!(Authenticator::hs256(&[7; MIN_SECRET_BYTES]).is_ok());
    }

    fn signed(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET).expect("key"))
            .expect("signs")
    }

    #[test]
    fn issuer_audience_and_not_before_are_enforced() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let wanted = TokenClaims { issuer: Some("https://id.example".into()), audience: Some("conveyor".into()) };
        let auth = Authenticator::hs256(SECRET).expect("key").with_claims(&wanted);
        let bearer = |token: String| format!("Bearer {token}");
        let base = serde_json::json!({ "sub": "a", "role": "admin", "iat": now, "exp": now + 600 });
        let with = |extra: serde_json::Value| {
            let mut claims = base.clone();
            if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
                claims.extend(extra.clone());
            }
            signed(claims)
        };
        let good = with(serde_json::json!({ "iss": "https://id.example", "aud": "conveyor" }));
        assert!(auth.caller(Some(&bearer(good))).is_ok());
        let issued = issue_with(SECRET, Role::Admin, "a", SystemTime::now() + Duration::from_secs(60), &wanted);
        assert!(auth.caller(Some(&bearer(issued.expect("signs")))).is_ok(), "`conveyor token` issues what is required");
        for (bad, why) in [
            (with(serde_json::json!({ "aud": "conveyor" })), "no issuer"),
            (with(serde_json::json!({ "iss": "https://evil.example", "aud": "conveyor" })), "another issuer"),
            (with(serde_json::json!({ "iss": "https://id.example" })), "no audience"),
            (with(serde_json::json!({ "iss": "https://id.example", "aud": "billing" })), "another audience"),
            (
                with(serde_json::json!({ "iss": "https://id.example", "aud": "conveyor", "nbf": now + 3600 })),
                "not valid before an hour from now",
            ),
        ] {
            assert!(auth.caller(Some(&bearer(bad))).is_err(), "accepted a token with {why}");
        }
        // Without any configured: nbf still holds; an audience nobody asked for is refused.
        let plain = Authenticator::hs256(SECRET).expect("key");
        assert!(plain.caller(Some(&bearer(with(serde_json::json!({ "nbf": now + 3600 }))))).is_err());
        assert!(plain.caller(Some(&bearer(with(serde_json::json!({ "nbf": now - 10 }))))).is_ok());
    }
}
