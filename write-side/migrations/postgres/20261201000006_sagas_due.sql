-- no-transaction
CREATE INDEX IF NOT EXISTS sagas_due ON sagas (active, next_attempt_at);
