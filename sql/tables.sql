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
    payload bytea,
    produced_at timestamptz NOT NULL DEFAULT pg_catalog.now()
) WITH (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.02);
ALTER SEQUENCE kafka.outbox_id_seq OWNED BY kafka.outbox.id;

-- Messages Kafka refused for good (too large, invalid or forbidden topic...), with its error.
CREATE TABLE kafka.dead_letter (
    id bigint PRIMARY KEY,
    topic text NOT NULL,
    key bytea,
    payload bytea,
    produced_at timestamptz NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    error text NOT NULL
);

-- pg_dump keeps their rows.
SELECT pg_catalog.pg_extension_config_dump('kafka.broker', '');
SELECT pg_catalog.pg_extension_config_dump('kafka.outbox', '');
SELECT pg_catalog.pg_extension_config_dump('kafka.outbox_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('kafka.dead_letter', '');
