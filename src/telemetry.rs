//! Logging and traces.
//!
//! Logs: `tracing` to stderr, filtered by `RUST_LOG` (default `info`), as
//! text or (`--log-format json`) one JSON object per line; traced, every
//! hop's span carries `trace_id`, so JSON lines inside it do too.
//! PostgreSQL's "no transaction in progress" notice is hidden by default: it
//! follows every serialization failure at COMMIT (PostgreSQL has already
//! rolled back when sqlx sends its ROLLBACK), which the retries handle.
//!
//! Traces: with the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, spans are exported over OTLP
//! HTTP/protobuf by a batch processor (`OTEL_BSP_*` tune it), with the
//! service name `OTEL_SERVICE_NAME` or `conveyor-<mode>`; see
//! [`schema::trace`] for how one order becomes one trace.

use std::io::IsTerminal;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

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

/// Which process exports spans, if any: its default service name and its
/// `messaging.system` (`nats`, or `conveyor` for embedded mode's
/// in-process bus).
#[derive(Debug, Clone, Copy)]
pub struct Traced {
    pub service: &'static str,
    pub messaging_system: &'static str,
}

/// Flushes and stops the span exporter when dropped (at the end of `main`).
pub struct Traces(Option<SdkTracerProvider>);

impl Drop for Traces {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("conveyor: flushing the last spans failed: {error}");
        }
    }
}

/// Text logs, no traces (tests call this once per app).
pub fn init() {
    let _ = init_with(LogFormat::Text, None);
}

/// Sets up logging, and traces when `traced` and an OTLP endpoint is
/// configured. A bad exporter configuration is an error; a second init is
/// ignored.
pub fn init_with(format: LogFormat, traced: Option<Traced>) -> anyhow::Result<Traces> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,sqlx=warn,sqlx::postgres::notice=error,async_nats=warn,tower_http=warn")
    });
    let provider = match traced {
        Some(traced) if endpoint_configured() => Some(provider(traced)?),
        _ => None,
    };
    // Exported: the hop spans (target `conveyor::trace`, see schema::trace),
    // whatever RUST_LOG says, and warnings and errors as their events. The
    // other spans are log context (a command's id, a projection's name):
    // exported, each would be a trace of its own.
    let exported = Targets::new().with_target("conveyor::trace", Level::INFO).with_default(Level::WARN);
    let otel = provider
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer("conveyor")).with_filter(exported));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).with_filter(filter).boxed(),
        LogFormat::Json => fmt.json().with_current_span(true).with_span_list(true).with_filter(filter).boxed(),
    };
    // Ignore a second init.
    let installed = tracing_subscriber::registry().with(otel).with(fmt).try_init();
    if let (Some(traced), Ok(())) = (traced, installed)
        && provider.is_some()
    {
        schema::trace::enable(traced.messaging_system);
    }
    Ok(Traces(provider))
}

fn endpoint_configured() -> bool {
    ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|value| !value.trim().is_empty()))
}

fn provider(traced: Traced) -> anyhow::Result<SdkTracerProvider> {
    // The endpoint, headers and timeout come from the standard OTEL_* variables.
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()
        .context("cannot set up the OTLP span exporter (OTEL_EXPORTER_OTLP_ENDPOINT)")?;
    let service = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| traced.service.to_owned());
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build())
}
