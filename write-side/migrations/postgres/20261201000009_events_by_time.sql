-- no-transaction
-- The events in time order, for EventStore.StreamEvents (docs/grpc.md). On
-- CockroachDB an index on a time-ordered column puts every new event in one
-- range: create it hash-sharded before this migration runs (docs/operations.md,
-- "Migrations and upgrades"); IF NOT EXISTS then leaves it as it is.
CREATE INDEX IF NOT EXISTS events_by_time ON events (occurred_at, event_id);
