//! Connecting to NATS: credentials (a `.creds` file, an nkey seed,
//! user and password, a token, or any of these in the URL) and TLS (a CA,
//! a client certificate), as the `--nats-*` flags describe them.

use std::path::PathBuf;
use std::time::Duration;

/// How a process proves who it is to NATS, and how it checks the server.
/// Every field is optional: a URL alone connects as before. Credentials in
/// the URL (`nats://user:password@host`, `nats://token@host`) work too.
#[derive(Debug, Clone, Default)]
pub struct NatsAuth {
    /// A `.creds` file (a user JWT and its nkey seed), as `nsc` writes them.
    pub credentials_file: Option<PathBuf>,
    /// An nkey seed (`SU…`): the server knows the public key.
    pub nkey_seed: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// PEM file of the CA that signed the server's certificate; implies TLS.
    pub tls_ca: Option<PathBuf>,
    /// PEM certificate and key for TLS client authentication (mutual TLS).
    pub tls_client_cert: Option<PathBuf>,
    pub tls_client_key: Option<PathBuf>,
    /// Refuse a connection without TLS (also implied by a `tls://` URL).
    pub tls_required: bool,
}

/// Why a connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NatsConnectError {
    #[error("{0}")]
    Options(String),
    #[error(transparent)]
    Connect(#[from] async_nats::ConnectError),
}

impl NatsAuth {
    /// The connect options these settings ask for.
    pub async fn options(&self) -> Result<async_nats::ConnectOptions, NatsConnectError> {
        let mut options = match &self.credentials_file {
            Some(path) => async_nats::ConnectOptions::with_credentials_file(path).await.map_err(|error| {
                NatsConnectError::Options(format!("cannot read the NATS credentials file {}: {error}", path.display()))
            })?,
            None => async_nats::ConnectOptions::new(),
        };
        if let Some(seed) = &self.nkey_seed {
            options = options.nkey(seed.trim().to_string());
        }
        match (&self.user, &self.password) {
            (Some(user), Some(password)) => options = options.user_and_password(user.clone(), password.clone()),
            (None, None) => {}
            _ => return Err(NatsConnectError::Options("give the NATS user and password together".into())),
        }
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        if let Some(ca) = &self.tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        match (&self.tls_client_cert, &self.tls_client_key) {
            (Some(cert), Some(key)) => options = options.add_client_certificate(cert.clone(), key.clone()),
            (None, None) => {}
            _ => {
                return Err(NatsConnectError::Options("give the NATS client certificate and its key together".into()));
            }
        }
        if self.tls_required {
            options = options.require_tls(true);
        }
        Ok(options)
    }
}

/// Connects, failing fast (not retrying forever) when the server is unreachable
/// at start; after that the client reconnects on its own. Credentials in
/// the URL are used unless `auth` gives some (async-nats ignores them).
pub async fn connect(url: &str, client_name: &str, auth: &NatsAuth) -> Result<async_nats::Client, NatsConnectError> {
    let (url, in_url) = split_credentials(url);
    let mut auth = auth.clone();
    let explicit =
        auth.credentials_file.is_some() || auth.nkey_seed.is_some() || auth.user.is_some() || auth.token.is_some();
    if !explicit {
        match in_url {
            Some(UrlCredentials::UserPassword(user, password)) => {
                auth.user = Some(user);
                auth.password = Some(password);
            }
            Some(UrlCredentials::Token(token)) => auth.token = Some(token),
            None => {}
        }
    }
    let options = auth.options().await?;
    Ok(options.name(client_name).connection_timeout(Duration::from_secs(5)).connect(url.as_str()).await?)
}

/// Credentials written into a server URL.
#[derive(Debug, PartialEq, Eq)]
enum UrlCredentials {
    /// `nats://user:password@host`
    UserPassword(String, String),
    /// `nats://token@host`
    Token(String),
}

/// The URL(s) without credentials, and the first URL's credentials.
fn split_credentials(urls: &str) -> (String, Option<UrlCredentials>) {
    let mut found = None;
    let stripped: Vec<String> = urls
        .split(',')
        .map(|url| {
            let url = url.trim();
            let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
            let Some((userinfo, host)) = rest.rsplit_once('@') else { return url.to_string() };
            if found.is_none() {
                found = Some(match userinfo.split_once(':') {
                    Some((user, password)) => {
                        UrlCredentials::UserPassword(percent_decode(user), percent_decode(password))
                    }
                    None => UrlCredentials::Token(percent_decode(userinfo)),
                });
            }
            format!("{scheme}://{host}")
        })
        .collect();
    (stripped.join(","), found)
}

/// `%XX` escapes decoded (a password may hold `@`, `:` or `/`).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = (bytes[index] == b'%' && index + 2 < bytes.len())
            .then(|| std::str::from_utf8(&bytes[index + 1..index + 3]).ok())
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                index += 3;
            }
            None => {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_the_url_are_taken_out_of_it() {
        assert_eq!(
            split_credentials("nats://gateway:p%40ss@127.0.0.1:4222"),
            ("nats://127.0.0.1:4222".into(), Some(UrlCredentials::UserPassword("gateway".into(), "p@ss".into())))
        );
        assert_eq!(
            split_credentials("tls://s3cret@a:4222, tls://s3cret@b:4222"),
            ("tls://a:4222,tls://b:4222".into(), Some(UrlCredentials::Token("s3cret".into())))
        );
        assert_eq!(split_credentials("nats://127.0.0.1:4222"), ("nats://127.0.0.1:4222".into(), None));
        assert_eq!(percent_decode("100%"), "100%");
    }
}
