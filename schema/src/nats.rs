//! The JetStream resources every side agrees on. Each process calls the
//! `ensure_*` function for what it touches, so start order does not matter
//! and a restart re-creates nothing.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};

use crate::Namespace;
use crate::dead_letters::DeadLetterLimits;

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
/// at start; after that the client reconnects on its own.
pub async fn connect(url: &str, client_name: &str, auth: &NatsAuth) -> Result<async_nats::Client, NatsConnectError> {
    let options = auth.options().await?;
    Ok(options.name(client_name).connection_timeout(Duration::from_secs(5)).connect(url).await?)
}

/// How long JetStream remembers a `Nats-Msg-Id` to drop a duplicate publish.
/// Beyond it, the stored command outcome still makes retries exactly-once.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Tunables of the streams, for clusters (replicas) and disk budgets.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// 1 for a single server, 3 for a production cluster.
    pub replicas: usize,
    /// How long published events stay in the events stream. The SQL event
    /// store is the truth; the stream is transport and may be trimmed.
    pub event_retention: Duration,
    /// What the dead-letter stream keeps.
    pub dead_letters: DeadLetterLimits,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            replicas: 1,
            event_retention: Duration::from_secs(7 * 24 * 3600),
            dead_letters: DeadLetterLimits::default(),
        }
    }
}

/// `<ns>_COMMANDS`: a work queue; each command is removed once a handler acks it.
pub async fn ensure_commands_stream(
    js: &jetstream::Context,
    ns: &Namespace,
    settings: &StreamSettings,
) -> Result<stream::Stream, jetstream::context::CreateStreamError> {
    js.get_or_create_stream(stream::Config {
        name: ns.resource("COMMANDS"),
        subjects: vec![ns.all_commands()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: settings.replicas,
        ..Default::default()
    })
    .await
}

/// `<ns>_EVENTS`: every published event, subject `<ns>.evt.<aggregate>.<id>`.
pub async fn ensure_events_stream(
    js: &jetstream::Context,
    ns: &Namespace,
    settings: &StreamSettings,
) -> Result<stream::Stream, jetstream::context::CreateStreamError> {
    js.get_or_create_stream(stream::Config {
        name: ns.resource("EVENTS"),
        subjects: vec![ns.all_events()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        max_age: settings.event_retention,
        num_replicas: settings.replicas,
        ..Default::default()
    })
    .await
}

/// `<ns>_outcomes`: the latest outcome per command id, so a gateway that
/// retries a deduplicated command (which no handler will see again) still
/// gets its answer. A cache of the SQL outcome table, which stays the truth.
pub async fn ensure_outcomes_bucket(
    js: &jetstream::Context,
    ns: &Namespace,
    settings: &StreamSettings,
) -> Result<kv::Store, jetstream::context::CreateKeyValueError> {
    let bucket = ns.resource("outcomes");
    if let Ok(store) = js.get_key_value(&bucket).await {
        return Ok(store);
    }
    let created = js
        .create_key_value(kv::Config {
            bucket: bucket.clone(),
            history: 1,
            max_age: Duration::from_secs(24 * 3600),
            storage: stream::StorageType::File,
            num_replicas: settings.replicas,
            ..Default::default()
        })
        .await;
    match created {
        Ok(store) => Ok(store),
        // Another process created it between our get and create.
        Err(error) => js.get_key_value(&bucket).await.map_err(|_| error),
    }
}
