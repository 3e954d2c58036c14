//! Logging: `tracing` to stderr, filtered by `RUST_LOG` (default `info`).
//! PostgreSQL's "no transaction in progress" notice is hidden by default: it
//! follows every serialization failure at COMMIT (PostgreSQL has already
//! rolled back when sqlx sends its ROLLBACK), which the retries handle.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,sqlx=warn,sqlx::postgres::notice=error,async_nats=warn,tower_http=warn")
    });
    // Ignore a second init (tests call this once per app).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
