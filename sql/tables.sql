-- pg_kafka tables. Created before any function (bootstrap).

-- The seed's broker list. Changes take effect when they commit; the worker re-reads it.
CREATE TABLE kafka.broker (
    host text NOT NULL,
    port integer NOT NULL DEFAULT 9092,
    PRIMARY KEY (host, port)
);

-- Messages of committed transactions that Kafka has not acknowledged yet. Ordinary WAL-logged
-- table: it survives crashes and follows physical replication. Ids come from the sequence at
-- produce() time, so a session's messages keep the order it produced them in.
CREATE SEQUENCE kafka.outbox_id_seq AS bigint CACHE 100;
CREATE TABLE kafka.outbox (
    id bigint PRIMARY KEY,
    topic text NOT NULL,
    key bytea,
    payload bytea COMPRESSION lz4,
    headers jsonb,                 -- [["name", "value" or null], ...] in order; NULL: none
    partition integer,             -- NULL: Kafka's partitioner decides (by key)
    timestamp_ms bigint,           -- record timestamp; NULL: the time librdkafka sends it
    produced_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    first_attempt_at timestamptz,  -- set when a delivery attempt failed and will be retried
    packed integer                 -- NULL: one message; n: payload packs n messages (src/pack.rs)
) WITH (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.02);
ALTER SEQUENCE kafka.outbox_id_seq OWNED BY kafka.outbox.id;

-- Messages Kafka refused for good (too large, invalid or forbidden topic...), with its error.
CREATE TABLE kafka.dead_letter (
    id bigint PRIMARY KEY,
    topic text NOT NULL,
    key bytea,
    payload bytea,
    headers jsonb,
    partition integer,
    timestamp_ms bigint,
    produced_at timestamptz NOT NULL,
    first_attempt_at timestamptz NOT NULL,
    last_attempt_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    error text NOT NULL
);
CREATE INDEX dead_letter_topic ON kafka.dead_letter (topic);

-- pg_dump keeps their rows.
SELECT pg_catalog.pg_extension_config_dump('kafka.broker', '');
SELECT pg_catalog.pg_extension_config_dump('kafka.outbox', '');
SELECT pg_catalog.pg_extension_config_dump('kafka.outbox_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('kafka.dead_letter', '');

-- librdkafka producer settings (name, value), checked by librdkafka when written; applied by the
-- worker when they change. Secret values are readable by superusers only (see kafka.settings).
CREATE TABLE kafka.config (
    name text PRIMARY KEY,
    value text NOT NULL
);
SELECT pg_catalog.pg_extension_config_dump('kafka.config', '');
