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
    -- The time of the insert, not of the transaction's start: writers that
    -- lock the aggregate before writing its events get increasing times
    -- per aggregate, which the polling relay's order follows.
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- The polling relay reads the oldest rows first.
CREATE INDEX IF NOT EXISTS outbox_created_at ON outbox (created_at, id);
