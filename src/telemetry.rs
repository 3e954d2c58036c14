//! Logging: `tracing` to stderr, filtered by `RUST_LOG` (default `info`),
//! as text or (`--log-format json`) one JSON object per line.
//! PostgreSQL's "no transaction in progress" notice is hidden by default: it
//! follows every serialization failure at COMMIT (PostgreSQL has already
//! rolled back when sqlx sends its ROLLBACK), which the retries handle.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colored on a terminal).
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, target, fields and the
    /// spans it happened in.
    Json,
}

/// Text logs (tests call this once per app).
pub fn init() {
    init_with(LogFormat::Text);
}

pub fn init_with(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,sqlx=warn,sqlx::postgres::notice=error,async_nats=warn,tower_http=warn")
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // Ignore a second init.
    let _ = match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(true).try_init(),
    };
}
