//! One order, one trace: the W3C trace context (`traceparent`) travels with
//! every command and event — in its envelope's metadata (in memory, on the
//! bus, and in the event store's `traceparent` column, so work that starts
//! from the store stays in the trace) and, on NATS, in the message's
//! `traceparent` header too, for tools that read headers only.
//!
//! Each hop opens its span as the child of the context it received
//! ([`follow`]) and then passes on its *own* context ([`current`]), so the
//! trace reads as the order's path: GraphQL request → `send cmd…` →
//! `process cmd…` (the handler) → `process evt…` (saga step, projector) →
//! `process changed…` (the subscription push). Spans follow the OpenTelemetry
//! semantic conventions for messaging (`messaging.system`,
//! `messaging.destination.name`, `messaging.operation.type`, span names
//! `send <destination>` / `process <destination>`).
//!
//! With no OpenTelemetry layer installed (no `OTEL_EXPORTER_OTLP_ENDPOINT`)
//! every span's context is invalid and nothing is added to any message.

/// The W3C header (and metadata field) name.
pub const TRACEPARENT: &str = "traceparent";

#[cfg(feature = "trace")]
mod otel {
    use std::collections::HashMap;

    use opentelemetry::propagation::TextMapPropagator as _;
    use opentelemetry::trace::TraceContextExt as _;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    use super::TRACEPARENT;

    /// The current span's context as a `traceparent` value; `None` when no
    /// trace is being recorded.
    pub fn current() -> Option<String> {
        if !super::enabled() {
            return None;
        }
        let context = tracing::Span::current().context();
        if !context.span().span_context().is_valid() {
            return None;
        }
        let mut carrier = HashMap::new();
        TraceContextPropagator::new().inject_context(&context, &mut carrier);
        carrier.remove(TRACEPARENT)
    }

    /// Records the span's trace id as its `trace_id` field (declared
    /// empty), so log lines inside it name the trace.
    pub fn stamp(span: &tracing::Span) {
        let trace_id = span.context().span().span_context().trace_id();
        if trace_id != opentelemetry::trace::TraceId::INVALID {
            span.record("trace_id", tracing::field::display(trace_id));
        }
    }

    /// Makes `span` a child of the context in `traceparent` (a malformed or
    /// absent one leaves it a root).
    pub fn follow(span: &tracing::Span, traceparent: Option<&str>) {
        let Some(traceparent) = traceparent else { return };
        let carrier = HashMap::from([(TRACEPARENT.to_string(), traceparent.to_string())]);
        let context = TraceContextPropagator::new().extract(&carrier);
        if context.span().span_context().is_valid() {
            let _ = span.set_parent(context);
        }
    }
}

#[cfg(feature = "trace")]
pub use otel::{current, follow, stamp};

/// Without the `trace` feature there is never a context to pass on.
#[cfg(not(feature = "trace"))]
pub fn current() -> Option<String> {
    None
}

#[cfg(not(feature = "trace"))]
pub fn follow<S>(_span: &S, _traceparent: Option<&str>) {}

/// `current()` if a trace is being recorded here, else what came in: a hop
/// without a span of its own passes the context on unchanged.
pub fn current_or(received: Option<&str>) -> Option<String> {
    current().or_else(|| received.map(str::to_owned))
}

#[cfg(feature = "trace")]
mod spans {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicBool, Ordering};

    static ON: AtomicBool = AtomicBool::new(false);
    static SYSTEM: OnceLock<&'static str> = OnceLock::new();

    /// Called once when spans are exported: until then hop spans are not
    /// even created (they would cost an allocation per message for nothing).
    /// `system` is `messaging.system`: `nats`, or `conveyor` for the
    /// in-process bus of embedded mode.
    pub fn enable(system: &'static str) {
        let _ = SYSTEM.set(system);
        ON.store(true, Ordering::Relaxed);
    }

    pub fn enabled() -> bool {
        ON.load(Ordering::Relaxed)
    }

    fn system() -> &'static str {
        SYSTEM.get().copied().unwrap_or("conveyor")
    }

    /// A consumer's span for one message: `process <destination>`, the child
    /// of the context the message carried.
    pub fn process(destination: &str, message_id: &str, traceparent: Option<&str>) -> tracing::Span {
        let span = hop("process", "consumer", destination, message_id);
        super::follow(&span, traceparent);
        super::stamp(&span);
        span
    }

    /// A producer's span for one message: `send <destination>`, a child of
    /// the current span.
    pub fn send(destination: &str, message_id: &str) -> tracing::Span {
        let span = hop("send", "producer", destination, message_id);
        super::stamp(&span);
        span
    }

    /// `<operation> <destination>` with the messaging attributes; none unless traced.
    fn hop(operation: &'static str, kind: &'static str, destination: &str, message_id: &str) -> tracing::Span {
        if !enabled() {
            return tracing::Span::none();
        }
        tracing::info_span!(
            target: "conveyor::trace",
            "message",
            otel.name = format!("{operation} {destination}"),
            otel.kind = kind,
            messaging.system = system(),
            messaging.operation.type = operation,
            messaging.operation.name = operation,
            messaging.destination.name = destination,
            messaging.message.id = message_id,
            trace_id = tracing::field::Empty,
        )
    }
}

#[cfg(feature = "trace")]
pub use spans::{enable, enabled, process, send};
