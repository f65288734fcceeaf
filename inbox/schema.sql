-- Schema of the inbox: one row per event a consumer group has processed.
-- Safe to run more than once. Inbox.Migrate runs exactly this.
CREATE TABLE IF NOT EXISTS processed_events (
    consumer_group text        NOT NULL,
    event_id       text        NOT NULL,
    processed_at   timestamptz NOT NULL DEFAULT now(),
    -- What the effect returned, handed back unchanged to every duplicate.
    response       bytea,
    PRIMARY KEY (consumer_group, event_id)
);

-- The retention job deletes a group's oldest keys.
CREATE INDEX IF NOT EXISTS processed_events_retention
    ON processed_events (consumer_group, processed_at);
