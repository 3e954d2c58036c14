//! How a process reaches NATS (credentials, TLS), and `conveyor dlq`'s arguments.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// How this process authenticates to NATS and checks the server
/// (docs/operations.md, "NATS users and permissions"). Credentials may also
/// be in the URL (`nats://user:password@host`, `nats://token@host`); a
/// `tls://` URL requires TLS. Secrets are never logged.
#[derive(Debug, Args, Clone, Default)]
pub struct NatsAuthArgs {
    /// A NATS credentials file (user JWT and nkey seed, as `nsc` writes it).
    #[arg(long, env = "NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// A file holding this process's nkey seed (`SU…`).
    #[arg(long, env = "NATS_NKEY_SEED_FILE")]
    pub nats_nkey_seed_file: Option<PathBuf>,
    /// NATS user name (with --nats-password).
    #[arg(long, env = "NATS_USER")]
    pub nats_user: Option<String>,
    #[arg(long, env = "NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,
    /// NATS authentication token.
    #[arg(long, env = "NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,
    /// PEM file of the CA that signed the NATS server's certificate (turns TLS on).
    #[arg(long, env = "NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (with --nats-tls-key).
    #[arg(long, env = "NATS_TLS_CERT")]
    pub nats_tls_cert: Option<PathBuf>,
    /// PEM private key of --nats-tls-cert.
    #[arg(long, env = "NATS_TLS_KEY")]
    pub nats_tls_key: Option<PathBuf>,
    /// Refuse to talk to NATS without TLS.
    #[arg(long, env = "NATS_TLS_REQUIRED")]
    pub nats_tls_required: bool,
}

impl NatsAuthArgs {
    /// The connection settings; reads the nkey seed file.
    pub fn auth(&self) -> anyhow::Result<schema::nats::NatsAuth> {
        use anyhow::Context as _;
        let nkey_seed = match &self.nats_nkey_seed_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the nkey seed file {}", path.display()))?,
            ),
            None => None,
        };
        Ok(schema::nats::NatsAuth {
            credentials_file: self.nats_creds.clone(),
            nkey_seed,
            user: self.nats_user.clone(),
            password: self.nats_password.clone(),
            token: self.nats_token.clone(),
            tls_ca: self.nats_tls_ca.clone(),
            tls_client_cert: self.nats_tls_cert.clone(),
            tls_client_key: self.nats_tls_key.clone(),
            tls_required: self.nats_tls_required,
        })
    }
}

#[derive(Debug, Args, Clone)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub command: DlqCommand,
}

/// What `conveyor dlq` needs: NATS, not the database.
#[derive(Debug, Args, Clone)]
pub struct DlqServer {
    /// NATS server URL, e.g. nats://127.0.0.1:4222.
    #[arg(long = "nats", env = "NATS_URL")]
    pub nats: String,
    #[command(flatten)]
    pub nats_auth: NatsAuthArgs,
}

#[derive(Debug, Subcommand, Clone)]
pub enum DlqCommand {
    /// One line per dead letter: id, time, source, original subject, deliveries, reason.
    List {
        /// At most this many, oldest first.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        server: DlqServer,
    },
    /// One dead letter's headers and body.
    Show {
        id: u64,
        #[command(flatten)]
        server: DlqServer,
    },
    /// Publishes a dead letter to its original subject again, then deletes it.
    Redrive {
        id: u64,
        #[command(flatten)]
        server: DlqServer,
    },
    /// Deletes every dead letter.
    Purge {
        #[command(flatten)]
        server: DlqServer,
    },
}

impl DlqCommand {
    pub fn server(&self) -> &DlqServer {
        match self {
            Self::List { server, .. }
            | Self::Show { server, .. }
            | Self::Redrive { server, .. }
            | Self::Purge { server } => server,
        }
    }
}
