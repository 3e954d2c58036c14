-- The W3C trace context an event was appended in (schema/src/trace.rs):
-- tracing data only, NULL unless traces are exported.
ALTER TABLE events ADD COLUMN traceparent TEXT;
