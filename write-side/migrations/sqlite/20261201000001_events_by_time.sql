-- The events in time order, for EventStore.StreamEvents (docs/grpc.md).
CREATE INDEX IF NOT EXISTS events_by_time ON events (occurred_at, event_id);
