-- pg_kafka tables. Created before any function (bootstrap).

-- CREATE EXTENSION uses an existing schema named kafka whoever made it. Its owner could rename it
-- and put a look-alike in its place, whose tables' triggers would then run with the rights of
-- pg_kafka's event triggers and worker (superuser): refuse a schema that the installing
-- superuser does not own, or in which another role may create objects (PostgreSQL's advice
-- after CVE-2023-39417). Every name below is qualified: the script's search_path starts with
-- that schema.
DO $$
DECLARE
    nsp pg_catalog.pg_namespace;
BEGIN
    SELECT * INTO STRICT nsp FROM pg_catalog.pg_namespace n WHERE n.nspname OPERATOR(pg_catalog.=) 'kafka';
    IF nsp.nspowner OPERATOR(pg_catalog.<>) (SELECT r.oid FROM pg_catalog.pg_roles r
                                               WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER)
       OR EXISTS (SELECT FROM pg_catalog.aclexplode(nsp.nspacl) a
                   WHERE a.grantee OPERATOR(pg_catalog.<>) nsp.nspowner
                     AND a.privilege_type OPERATOR(pg_catalog.=) 'CREATE') THEN
        -- KafkaError::SchemaTaken (kafka_internal.raise_error() does not exist yet; a test holds
        -- this SQLSTATE and hint to the variant's)
        RAISE EXCEPTION 'schema kafka belongs to role %, or other roles may create objects in it',
                        nsp.nspowner::pg_catalog.regrole
            USING ERRCODE = '42501',
                  HINT = 'pg_kafka runs code with a superuser''s rights on the objects of schema kafka: it must be '
                         'created by CREATE EXTENSION, or owned by the superuser who installs pg_kafka with no CREATE '
                         'privilege for others. DROP SCHEMA kafka (after checking what it holds), then CREATE EXTENSION kafka.';
    END IF;
END $$;

-- pg_kafka's internal helpers (trigger functions, checks, the worker's state) live apart from the
-- API in schema kafka: nothing there is for PUBLIC; kafka_admin may use what its functions need.
CREATE SCHEMA kafka_internal;
REVOKE ALL ON SCHEMA kafka_internal FROM PUBLIC;
COMMENT ON SCHEMA kafka_internal IS 'pg_kafka''s internal helpers: not an API, may change in any version';

-- The native trigger functions (src/): in kafka_internal, which pgrx does not place them in.
CREATE FUNCTION kafka_internal.broker_changed() RETURNS trigger LANGUAGE c AS 'MODULE_PATHNAME', 'broker_changed_wrapper';
CREATE FUNCTION kafka_internal.config_check() RETURNS trigger LANGUAGE c AS 'MODULE_PATHNAME', 'config_check_wrapper';
CREATE FUNCTION kafka_internal.broker_guard() RETURNS trigger LANGUAGE c AS 'MODULE_PATHNAME', 'broker_guard_wrapper';
CREATE FUNCTION kafka_internal.capture_changes() RETURNS trigger LANGUAGE c AS 'MODULE_PATHNAME', 'capture_changes_wrapper';
CREATE FUNCTION kafka_internal.capture_outbox_relay() RETURNS trigger LANGUAGE c
    AS 'MODULE_PATHNAME', 'capture_outbox_relay_wrapper';
CREATE FUNCTION kafka_internal.topic_rules_changed() RETURNS trigger LANGUAGE c
    AS 'MODULE_PATHNAME', 'topic_rules_changed_wrapper';
-- Raises pg_kafka's error `name` (a variant of KafkaError, core/src/error/mod.rs) with its fields:
-- the SQL below raises its errors through it, with the SQLSTATE, message and hint defined there.
CREATE FUNCTION kafka_internal.raise_error(name text, VARIADIC args text[] DEFAULT '{}') RETURNS void
    LANGUAGE c AS 'MODULE_PATHNAME', 'raise_error_wrapper';
REVOKE ALL ON ALL ROUTINES IN SCHEMA kafka_internal FROM PUBLIC;

-- The original extension's broker list. Changes take effect when they commit; the worker re-reads it.
CREATE TABLE kafka.broker (
    host text NOT NULL,
    port integer NOT NULL DEFAULT 9092,
    PRIMARY KEY (host, port)
);

-- Messages of committed transactions that Kafka has not acknowledged yet, in packs of up to 512
-- (core/src/pack.rs). Ordinary WAL-logged tables: they survive crashes and follow physical replication.
-- Delivery order is commit order: each transaction that wrote packs also writes one row of
-- kafka.outbox_commit just before it commits, numbered from kafka.commit_seq; the worker sends
-- transactions in that order and a transaction's packs in id order (docs/architecture.md).
CREATE SEQUENCE kafka.outbox_id_seq AS bigint INCREMENT BY 512 CACHE 16;  -- message i of a pack: id + i
CREATE TABLE kafka.outbox (
    id bigint NOT NULL,             -- the pack's first message id
    xid xid8 NOT NULL,              -- the transaction that wrote it
    messages integer NOT NULL,      -- how many messages the pack holds
    topics text[] NOT NULL,         -- the distinct topics of its messages (for kafka.topics)
    payload bytea NOT NULL,         -- the pack (core/src/pack.rs), lz4-compressed from 256 bytes
    produced_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    first_attempt_at timestamptz,   -- set when a delivery attempt failed and will be retried
    -- WAL capture of a transaction streamed before it committed: {commit time in µs since 1970,
    -- end LSN of the commit before}, filled into its events' commit marks when they are read
    -- (core/src/commit_marks.rs); NULL for every other pack
    commit_marks bigint[],
    PRIMARY KEY (xid, id)           -- one index: a transaction's packs, in id order
) WITH (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.02);
ALTER SEQUENCE kafka.outbox_id_seq OWNED BY kafka.outbox.id;

-- One row per committed transaction with packs waiting: its place in commit order. The number is
-- taken at PRE-COMMIT, after every lock the transaction waited for was granted, so transactions the
-- database orders (one session's, or serialized by a lock) are numbered in their commit order.
CREATE SEQUENCE kafka.commit_seq AS bigint;  -- no cache: numbers are handed out in time order
CREATE TABLE kafka.outbox_commit (
    csn bigint PRIMARY KEY,
    xid xid8 NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.02);

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

-- Where this queue lives: the database and this table's own oid, recorded by the worker when it
-- first serves the database. A restored dump or a TEMPLATE copy differs, and holds delivery
-- until kafka.release() (src/store/home.rs, at_home); a physical replica or pg_upgrade does not.
CREATE TABLE kafka.home (
    database_oid oid NOT NULL,
    table_oid oid NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);

-- pg_dump keeps their rows.
SELECT pg_catalog.pg_extension_config_dump('kafka.home', '');
SELECT pg_catalog.pg_extension_config_dump('kafka.broker', '');
SELECT pg_catalog.pg_extension_config_dump('kafka.outbox', '');
SELECT pg_catalog.pg_extension_config_dump('kafka.outbox_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('kafka.outbox_commit', '');
SELECT pg_catalog.pg_extension_config_dump('kafka.commit_seq', '');
SELECT pg_catalog.pg_extension_config_dump('kafka.dead_letter', '');

-- Per-topic delivery figures, added to by the worker as it records outcomes (src/store/topic_stats.rs).
-- Operational counters: not dumped; TRUNCATE resets them.
CREATE TABLE kafka.topic_stats (
    topic text PRIMARY KEY,
    delivered bigint NOT NULL DEFAULT 0,
    dead_lettered bigint NOT NULL DEFAULT 0,
    bytes bigint NOT NULL DEFAULT 0,          -- of delivered values
    last_delivery_at timestamptz,
    last_dead_letter_at timestamptz
);

-- librdkafka's statistics (statistics.interval.ms: 60 s unless kafka.config sets it), the latest
-- document of each producer of the worker: 'delivery' and, with kafka.delivery = exactly_once,
-- 'immediate'. Written by the worker only.
CREATE TABLE kafka.producer_statistics (
    producer text PRIMARY KEY,
    updated_at timestamptz NOT NULL,
    stats jsonb NOT NULL
);

-- Which roles may produce to which topics. Empty (the default): every role that may produce may
-- produce to any topic. Once it has rows, a role other than a superuser may produce only to the
-- topics granted to it or to a role it belongs to: `topic` is a topic name, or a prefix ending in
-- `*` ('orders.*'). Captured tables' topics are written by their capture only, whatever this says.
CREATE TABLE kafka.topic_grants (
    grantee name NOT NULL,             -- a role name
    topic text NOT NULL CHECK (topic <> ''),
    PRIMARY KEY (grantee, topic)
);
SELECT pg_catalog.pg_extension_config_dump('kafka.topic_grants', '');

-- librdkafka producer settings (name, value), checked by librdkafka when written; applied by the
-- worker when they change. Secret values are readable by superusers only (see kafka.settings).
CREATE TABLE kafka.config (
    name text PRIMARY KEY,
    value text NOT NULL
);
SELECT pg_catalog.pg_extension_config_dump('kafka.config', '');
