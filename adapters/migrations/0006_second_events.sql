-- One audit row may make two events for one endpoint: an account lock is account.locked now
-- and account.unlocked when the lock ends. So an outbox row is one (audit event, endpoint,
-- event type).
ALTER TABLE webhook_outbox DROP CONSTRAINT webhook_outbox_pkey;
ALTER TABLE webhook_outbox ADD PRIMARY KEY (event_id, endpoint_id, type);
