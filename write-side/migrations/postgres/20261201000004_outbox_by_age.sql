-- no-transaction
CREATE INDEX IF NOT EXISTS outbox_by_age ON outbox (created_at);
