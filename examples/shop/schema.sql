-- The shop's own tables. The outbox and inbox tables come from their
-- packages' migrations.
CREATE TABLE IF NOT EXISTS orders (
    id              text PRIMARY KEY,
    customer_id     text   NOT NULL,
    status          text   NOT NULL,
    items           json   NOT NULL DEFAULT '[]',
    amount_cents    bigint NOT NULL DEFAULT 0,
    tracking_number text   NOT NULL DEFAULT '',
    created_at      bigint NOT NULL,           -- epoch ms, as in the events
    updated_at      bigint NOT NULL DEFAULT 0,
    shipped_at      bigint NOT NULL DEFAULT 0,
    version         bigint NOT NULL,           -- events written for the order
    last_event_id   text   NOT NULL,
    last_event_at   bigint NOT NULL            -- event times of an order strictly increase
);

-- One row per charge: no unique key, so a repeated effect would show.
CREATE TABLE IF NOT EXISTS payments (
    order_id     text   NOT NULL,
    amount_cents bigint NOT NULL,
    currency     text   NOT NULL,
    event_id     text   NOT NULL
);
