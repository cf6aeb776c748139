-- Webhook endpoints: where a merchant is told of outcomes. The signing secret is sealed under
-- the master keyring (the service must sign with it, so it cannot be a hash); after a
-- rotation the previous one signs too until previous_until.
CREATE TABLE webhook_endpoints (
    endpoint_id     uuid        PRIMARY KEY,
    merchant_id     text        NOT NULL,
    url             text        NOT NULL,
    events          text[]      NOT NULL CHECK (cardinality(events) > 0),
    secret          bytea       NOT NULL,
    previous_secret bytea,
    previous_until  timestamptz,
    enabled         boolean     NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL
);
CREATE INDEX webhook_endpoints_merchant ON webhook_endpoints (merchant_id) WHERE enabled;

-- The outbox: one row per (audit event, subscribed endpoint), written in the transaction
-- that stores the audit row, so an event is delivered if and only if its audit row exists.
-- A deliverer claims due rows (FOR UPDATE SKIP LOCKED) under a lease: one claimant at a time,
-- and a claimant that died (its lease run out) leaves the row to the next. A session's
-- session.expired is written with the session, due at its expiry, and withdrawn when the
-- session is decided before.
CREATE TABLE webhook_outbox (
    event_id        uuid        NOT NULL,
    at              timestamptz NOT NULL,
    endpoint_id     uuid        NOT NULL REFERENCES webhook_endpoints ON DELETE CASCADE,
    type            text        NOT NULL,
    state           text        NOT NULL DEFAULT 'pending'
                                CHECK (state IN ('pending', 'delivered', 'dead', 'withdrawn')),
    attempts        integer     NOT NULL DEFAULT 0,
    due_at          timestamptz NOT NULL,  -- when the event became deliverable
    next_attempt_at timestamptz NOT NULL,
    lease_until     timestamptz,
    last_status     integer,
    last_error      text,
    delivered_at    timestamptz,
    PRIMARY KEY (event_id, endpoint_id)
);
-- Each endpoint's due rows, earliest first (the claim takes as many as the endpoint has
-- room for, so a slow endpoint's backlog never stands in front of another's events).
CREATE INDEX webhook_outbox_due ON webhook_outbox (endpoint_id, next_attempt_at)
    WHERE state = 'pending';
