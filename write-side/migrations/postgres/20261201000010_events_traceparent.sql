-- no-transaction
-- The W3C trace context an event was appended in (schema/src/trace.rs):
-- tracing data only, NULL unless traces are exported, so work that starts
-- from the store (a projector's catch-up, the outbox relay) stays in the
-- order's trace.
ALTER TABLE events ADD COLUMN IF NOT EXISTS traceparent TEXT;
