-- Schema of the transactional outbox. Safe to run more than once.
-- outbox.Migrate runs exactly this.
CREATE TABLE IF NOT EXISTS outbox (
    id             uuid        PRIMARY KEY,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    event_type     text        NOT NULL,
    -- json, not jsonb: json keeps the payload's bytes as written, and the
    -- relay publishes them unchanged.
    payload        json        NOT NULL,
    headers        json,
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- The polling relay reads the oldest rows first.
CREATE INDEX IF NOT EXISTS outbox_created_at ON outbox (created_at, id);
