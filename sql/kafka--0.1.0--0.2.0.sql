-- pg_kafka 0.1.0 -> 0.2.0, as released with 0.2.0 (frozen: scripts/check-released fails if it
-- changes), with the check for dependent objects and privileges added first. It was built by
-- joining a first part, 0.2.0's install script and a last part.
--
-- 0.2.0 stores messages differently (packs in commit order, src/pack.rs), so this upgrade
-- rebuilds the extension's objects: the data of 0.1.0's tables is set aside in schema
-- kafka_upgrade, every other object of the extension is dropped (with the capture triggers on
-- users' tables, which refer to its functions), 0.2.0's objects are created by its install
-- script, and the last part puts the data back, queues 0.1.0's waiting messages again in their
-- order, and re-creates the capture triggers. It all happens in ALTER EXTENSION's transaction:
-- a failure leaves 0.1.0 as it was.

-- The rebuild below drops every object of schema kafka with CASCADE. Objects outside pg_kafka
-- that depend on one (a user's view over kafka.status, a function taking kafka.dead_letter, a
-- trigger calling a kafka function) would go with them, and privileges granted on them after
-- CREATE EXTENSION would be lost: stop first, naming them. (pg_kafka's own capture triggers on
-- users' tables, and the outbox relay functions it made in schema kafka, are re-created.)
DO $$
DECLARE
    dependents text;
    grants text;
BEGIN
    WITH doomed AS (  -- what the rebuild drops: schema kafka's objects and the extension's others
        SELECT 'pg_catalog.pg_proc'::pg_catalog.regclass::pg_catalog.oid AS classid, p.oid AS objid
          FROM pg_catalog.pg_proc p WHERE p.pronamespace = 'kafka'::pg_catalog.regnamespace
        UNION ALL
        SELECT 'pg_catalog.pg_class'::pg_catalog.regclass::pg_catalog.oid, c.oid
          FROM pg_catalog.pg_class c WHERE c.relnamespace = 'kafka'::pg_catalog.regnamespace
        UNION ALL
        SELECT 'pg_catalog.pg_type'::pg_catalog.regclass::pg_catalog.oid, t.oid
          FROM pg_catalog.pg_type t WHERE t.typnamespace = 'kafka'::pg_catalog.regnamespace
        UNION ALL
        SELECT d.classid, d.objid FROM pg_catalog.pg_depend d
         WHERE d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
           AND d.refobjid = (SELECT x.oid FROM pg_catalog.pg_extension x WHERE x.extname = 'kafka')
           AND d.deptype = 'e'
    ), dependent AS (
        SELECT DISTINCT d.classid, d.objid, d.objsubid
          FROM pg_catalog.pg_depend d JOIN doomed x ON d.refclassid = x.classid AND d.refobjid = x.objid
         WHERE d.deptype IN ('n', 'a')
    ), placed AS (  -- each dependent with the object it belongs to (a rule: its view; an index: its table...)
        SELECT d.*, coalesce(
                 (SELECT ROW('pg_catalog.pg_class'::pg_catalog.regclass::pg_catalog.oid, r.ev_class)::text FROM pg_catalog.pg_rewrite r
                   WHERE d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND r.oid = d.objid),
                 (SELECT ROW('pg_catalog.pg_class'::pg_catalog.regclass::pg_catalog.oid, t.tgrelid)::text FROM pg_catalog.pg_trigger t
                   WHERE d.classid = 'pg_catalog.pg_trigger'::pg_catalog.regclass AND t.oid = d.objid),
                 (SELECT ROW('pg_catalog.pg_class'::pg_catalog.regclass::pg_catalog.oid, a.adrelid)::text FROM pg_catalog.pg_attrdef a
                   WHERE d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND a.oid = d.objid),
                 (SELECT ROW('pg_catalog.pg_class'::pg_catalog.regclass::pg_catalog.oid, c.conrelid)::text FROM pg_catalog.pg_constraint c
                   WHERE d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND c.oid = d.objid AND c.conrelid <> 0),
                 (SELECT ROW('pg_catalog.pg_class'::pg_catalog.regclass::pg_catalog.oid, i.indrelid)::text FROM pg_catalog.pg_index i
                   WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND i.indexrelid = d.objid),
                 (SELECT ROW('pg_catalog.pg_class'::pg_catalog.regclass::pg_catalog.oid, p.polrelid)::text FROM pg_catalog.pg_policy p
                   WHERE d.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass AND p.oid = d.objid),
                 ROW(d.classid, d.objid)::text) AS owner
          FROM dependent d
    )
    SELECT pg_catalog.string_agg(DISTINCT coalesce(   -- a view, rather than its rule
                 (SELECT pg_catalog.pg_describe_object('pg_catalog.pg_class'::pg_catalog.regclass, r.ev_class, 0)
                    FROM pg_catalog.pg_rewrite r
                   WHERE p.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND r.oid = p.objid),
                 pg_catalog.pg_describe_object(p.classid, p.objid, p.objsubid)), ', ')
      INTO dependents
      FROM placed p
     WHERE p.owner NOT IN (SELECT ROW(x.classid, x.objid)::text FROM doomed x)
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_trigger t   -- pg_kafka's capture triggers
                        WHERE p.classid = 'pg_catalog.pg_trigger'::pg_catalog.regclass AND t.oid = p.objid
                          AND t.tgname IN ('kafka_capture_insert', 'kafka_capture_update', 'kafka_capture_delete',
                                           'kafka_capture_truncate', 'kafka_capture_outbox'));
    -- Privileges on pg_kafka's objects that CREATE EXTENSION did not grant (pg_init_privs).
    WITH acl AS (
        SELECT 'pg_catalog.pg_class'::pg_catalog.regclass::pg_catalog.oid AS classid, c.oid AS objid, 0 AS objsubid, c.relacl AS acl
          FROM pg_catalog.pg_class c WHERE c.relnamespace = 'kafka'::pg_catalog.regnamespace AND c.relacl IS NOT NULL
        UNION ALL
        SELECT 'pg_catalog.pg_class'::pg_catalog.regclass::pg_catalog.oid, a.attrelid, a.attnum, a.attacl
          FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
         WHERE c.relnamespace = 'kafka'::pg_catalog.regnamespace AND a.attacl IS NOT NULL
        UNION ALL
        SELECT 'pg_catalog.pg_proc'::pg_catalog.regclass::pg_catalog.oid, p.oid, 0, p.proacl
          FROM pg_catalog.pg_proc p WHERE p.pronamespace = 'kafka'::pg_catalog.regnamespace AND p.proacl IS NOT NULL
    ), granted AS (
        SELECT a.classid, a.objid, a.objsubid, e.grantee, e.privilege_type
          FROM acl a, pg_catalog.aclexplode(a.acl) e
        EXCEPT
        SELECT i.classoid, i.objoid, i.objsubid, e.grantee, e.privilege_type
          FROM pg_catalog.pg_init_privs i, pg_catalog.aclexplode(i.initprivs) e
    )
    SELECT pg_catalog.string_agg(pg_catalog.format('%s on %s to %s', g.privilege_type,
                                     pg_catalog.pg_describe_object(g.classid, g.objid, g.objsubid),
                                     CASE g.grantee WHEN 0 THEN 'PUBLIC' ELSE g.grantee::pg_catalog.regrole::text END),
                                 ', ' ORDER BY 1)
      INTO grants
      FROM granted g
     WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_class c   -- relay functions pg_kafka made, their tables
                        WHERE g.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND c.oid = g.objid
                          AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d
                                           WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                                             AND d.objid = c.oid AND d.deptype = 'e'))
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_proc p
                        WHERE g.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND p.oid = g.objid
                          AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d
                                           WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                                             AND d.objid = p.oid AND d.deptype = 'e'));
    IF dependents IS NOT NULL OR grants IS NOT NULL THEN
        RAISE EXCEPTION 'pg_kafka 0.1.0 cannot be upgraded while objects outside it depend on it or privileges were granted on it'
            USING ERRCODE = '2BP01',
                  DETAIL = pg_catalog.concat_ws(E'\n', 'depend on it: ' || dependents, 'granted on it: ' || grants),
                  HINT = 'The upgrade re-creates every object of schema kafka. Save these (pg_dump of the objects, '
                         'the GRANT statements), drop or revoke them, run ALTER EXTENSION kafka UPDATE, and '
                         'create or grant them again.';
    END IF;
END $$;

-- First the event triggers: 0.1.0's would fire on the ALTER TABLEs below.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT e.evtname FROM pg_catalog.pg_event_trigger e
              WHERE e.evtfoid IN (SELECT p.oid FROM pg_catalog.pg_proc p WHERE p.pronamespace = 'kafka'::regnamespace)
    LOOP
        EXECUTE format('DROP EVENT TRIGGER %I', r.evtname);
    END LOOP;
END $$;

CREATE SCHEMA kafka_upgrade;
ALTER TABLE kafka.broker SET SCHEMA kafka_upgrade;
ALTER TABLE kafka.config SET SCHEMA kafka_upgrade;
ALTER TABLE kafka.dead_letter SET SCHEMA kafka_upgrade;
ALTER TABLE kafka.outbox SET SCHEMA kafka_upgrade;   -- with its sequence, outbox_id_seq
ALTER TABLE kafka.capture_config SET SCHEMA kafka_upgrade;
ALTER TABLE kafka.backfill_progress SET SCHEMA kafka_upgrade;

DO $$
DECLARE
    r record;
BEGIN
    -- Functions (and what refers to them: views, triggers, users' capture triggers). Each is
    -- looked up again when its turn comes: an earlier CASCADE may have dropped it (which one
    -- depends on the catalog's physical order).
    FOR r IN SELECT p.oid, p.prokind FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'kafka'::regnamespace
    LOOP
        CONTINUE WHEN NOT EXISTS (SELECT FROM pg_catalog.pg_proc q WHERE q.oid = r.oid);
        EXECUTE format('DROP %s %s CASCADE', CASE r.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END,
                       r.oid::pg_catalog.regprocedure);
    END LOOP;
    FOR r IN SELECT c.oid, c.relkind FROM pg_catalog.pg_class c
              WHERE c.relnamespace = 'kafka'::regnamespace AND c.relkind IN ('v', 'r', 'S')
    LOOP
        CONTINUE WHEN NOT EXISTS (SELECT FROM pg_catalog.pg_class q WHERE q.oid = r.oid);
        EXECUTE format('DROP %s %s CASCADE',
                       CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'r' THEN 'TABLE' ELSE 'SEQUENCE' END,
                       r.oid::pg_catalog.regclass);
    END LOOP;
END $$;

-- ---- pg_kafka 0.2.0's install script ----
/* <begin connected objects> */
/*
This file is auto generated by pgrx.

The ordering of items is not stable, it is driven by a dependency graph.
*/
/* </end connected objects> */

/* <begin connected objects> */
-- bootstrap
-- pg_kafka tables. Created before any function (bootstrap).

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
-- transactions in that order and a transaction's packs in id order (README, "How it works").
CREATE SEQUENCE kafka.outbox_id_seq AS bigint INCREMENT BY 512 CACHE 16;  -- message i of a pack: id + i
CREATE TABLE kafka.outbox (
    id bigint NOT NULL,             -- the pack's first message id
    xid xid8 NOT NULL,              -- the transaction that wrote it
    messages integer NOT NULL,      -- how many messages the pack holds
    topics text[] NOT NULL,         -- the distinct topics of its messages (for kafka.topics)
    payload bytea NOT NULL,         -- the pack (core/src/pack.rs), lz4-compressed from 256 bytes
    produced_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    first_attempt_at timestamptz,   -- set when a delivery attempt failed and will be retried
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
-- until kafka.release() (src/store/outbox.rs, at_home); a physical replica or pg_upgrade does not.
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
/* </end connected objects> */

/* <begin connected objects> */
-- kafka::backend::api::autonomous_publish
CREATE  FUNCTION "autonomous_publish"(
	"topic" TEXT, /* Option < & str > */
	"value" bytea, /* Option < & [u8] > */
	"key" TEXT DEFAULT NULL, /* Option < & str > */
	"key_bytes" bytea DEFAULT NULL, /* Option < & [u8] > */
	"headers" jsonb DEFAULT NULL, /* Option < JsonB > */
	"partition" INT DEFAULT NULL, /* Option < i32 > */
	"ts" timestamp with time zone DEFAULT NULL, /* Option < TimestampWithTimeZone > */
	"timeout" interval DEFAULT '10 seconds' /* Option < Interval > */
) RETURNS TABLE (
	"partition" INT,  /* i32 */
	"offset" bigint  /* i64 */
)
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'autonomous_publish_bytea_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- kafka::backend::api::autonomous_publish
CREATE  FUNCTION "autonomous_publish"(
	"topic" TEXT, /* Option < & str > */
	"value" TEXT, /* Option < & str > */
	"key" TEXT DEFAULT NULL, /* Option < & str > */
	"key_bytes" bytea DEFAULT NULL, /* Option < & [u8] > */
	"headers" jsonb DEFAULT NULL, /* Option < JsonB > */
	"partition" INT DEFAULT NULL, /* Option < i32 > */
	"ts" timestamp with time zone DEFAULT NULL, /* Option < TimestampWithTimeZone > */
	"timeout" interval DEFAULT '10 seconds' /* Option < Interval > */
) RETURNS TABLE (
	"partition" INT,  /* i32 */
	"offset" bigint  /* i64 */
)
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'autonomous_publish_text_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- kafka::backend::api::close
CREATE  FUNCTION "close"() RETURNS bool /* SqlResult < bool > */
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'close_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- kafka::backend::api::dead_letter_waiting
CREATE  FUNCTION "dead_letter_waiting"(
	"ids" bigint[], /* Vec < i64 > */
	"reason" TEXT DEFAULT 'moved by an administrator' /* & str */
) RETURNS bigint /* SqlResult < i64 > */
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'dead_letter_waiting_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- kafka::backend::api::produce
CREATE  FUNCTION "produce"(
	"topic" TEXT, /* Option < & str > */
	"message" TEXT /* Option < & str > */
) RETURNS bool /* SqlResult < bool > */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'produce_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- kafka::backend::api::publish
CREATE  FUNCTION "publish"(
	"topic" TEXT, /* Option < & str > */
	"value" bytea, /* Option < & [u8] > */
	"key" TEXT DEFAULT NULL, /* Option < & str > */
	"key_bytes" bytea DEFAULT NULL, /* Option < & [u8] > */
	"headers" jsonb DEFAULT NULL, /* Option < JsonB > */
	"partition" INT DEFAULT NULL, /* Option < i32 > */
	"ts" timestamp with time zone DEFAULT NULL /* Option < TimestampWithTimeZone > */
) RETURNS bigint /* SqlResult < i64 > */
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'publish_bytea_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- kafka::backend::api::publish
CREATE  FUNCTION "publish"(
	"topic" TEXT, /* Option < & str > */
	"value" TEXT, /* Option < & str > */
	"key" TEXT DEFAULT NULL, /* Option < & str > */
	"key_bytes" bytea DEFAULT NULL, /* Option < & [u8] > */
	"headers" jsonb DEFAULT NULL, /* Option < JsonB > */
	"partition" INT DEFAULT NULL, /* Option < i32 > */
	"ts" timestamp with time zone DEFAULT NULL /* Option < TimestampWithTimeZone > */
) RETURNS bigint /* SqlResult < i64 > */
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'publish_text_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- kafka::backend::api::purge_dead_letters
CREATE  FUNCTION "purge_dead_letters"(
	"ids" bigint[] DEFAULT NULL, /* :: std :: option :: Option < Vec < i64 > > */
	"topic" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS bigint /* SqlResult < i64 > */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'purge_dead_letters_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- kafka::backend::api::release
CREATE  FUNCTION "release"() RETURNS bool /* SqlResult < bool > */
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'release_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- kafka::backend::api::requeue_dead_letters
CREATE  FUNCTION "requeue_dead_letters"(
	"ids" bigint[] DEFAULT NULL, /* :: std :: option :: Option < Vec < i64 > > */
	"topic" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS bigint /* SqlResult < i64 > */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'requeue_dead_letters_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- kafka::backend::upgrade::wake_at_commit
-- Skipped due to `#[pgrx(sql = false)]`
/* </end connected objects> */

/* <begin connected objects> */
-- kafka::backend::api::broker_changed
-- Skipped due to `#[pgrx(sql = false)]`
/* </end connected objects> */

/* <begin connected objects> */
-- kafka::backend::api::broker_guard
-- Skipped due to `#[pgrx(sql = false)]`
/* </end connected objects> */

/* <begin connected objects> */
-- kafka::backend::capture::capture_changes
-- Skipped due to `#[pgrx(sql = false)]`
/* </end connected objects> */

/* <begin connected objects> */
-- kafka::backend::capture::relay::capture_outbox_relay
-- Skipped due to `#[pgrx(sql = false)]`
/* </end connected objects> */

/* <begin connected objects> */
-- kafka::backend::api::config_check
-- Skipped due to `#[pgrx(sql = false)]`
/* </end connected objects> */

/* <begin connected objects> */
-- kafka::backend::topics::topic_rules_changed
-- Skipped due to `#[pgrx(sql = false)]`
/* </end connected objects> */

/* <begin connected objects> */
CREATE SCHEMA IF NOT EXISTS kafka_internal; /* kafka::kafka_internal */
/* </end connected objects> */

/* <begin connected objects> */
-- kafka::backend::api::check_served
CREATE  FUNCTION kafka_internal."check_served"() RETURNS VOID /* SqlResult < () > */
STRICT STABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'check_served_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- kafka::backend::api::worker_errors
CREATE  FUNCTION kafka_internal."worker_errors"() RETURNS TABLE (
	"first_at" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"last_at" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"attempts" bigint,  /* i64 */
	"error" TEXT  /* String */
)
STRICT VOLATILE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'worker_errors_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- kafka::backend::upgrade::requeue_v1
CREATE  FUNCTION kafka_internal."requeue_v1"(
	"topic" TEXT, /* & str */
	"key" bytea, /* Option < & [u8] > */
	"payload" bytea, /* Option < & [u8] > */
	"headers" jsonb, /* Option < JsonB > */
	"partition" INT, /* Option < i32 > */
	"timestamp_ms" bigint, /* Option < i64 > */
	"packed" INT /* Option < i32 > */
) RETURNS bigint /* SqlResult < i64 > */
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'requeue_v1_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- kafka::backend::capture::backfill_events
CREATE  FUNCTION kafka_internal."backfill_events"(
	"rel" oid, /* pg_sys :: Oid */
	"rows" anyarray /* pgrx :: AnyArray */
) RETURNS bigint /* SqlResult < i64 > */
STRICT VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'backfill_events_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- kafka::backend::api::check_topic
CREATE  FUNCTION kafka_internal."check_topic"(
	"topic" TEXT /* Option < & str > */
) RETURNS VOID /* SqlResult < () > */
IMMUTABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'check_topic_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- requires:
--   backend::api::check_topic
--   backend::capture::backfill_events

-- pg_kafka row-change capture: Debezium-compatible change events for INSERT, UPDATE, DELETE and
-- TRUNCATE. A captured table gets statement-level triggers over transition tables that call
-- kafka_internal.capture_changes() (native, src/backend/capture/mod.rs): it encodes every row's event and adds it to
-- the transaction's pending messages, so events are sent only on commit, in order.
-- Values follow Debezium's default mappings except decimal.handling.mode, which is "string" here
-- (exact and readable). See the README's table.

CREATE TABLE kafka.capture_config (
    relid regclass PRIMARY KEY,        -- regclass: pg_dump writes it as the table's name
    table_name text NOT NULL,          -- schema-qualified, as given
    kind text NOT NULL CHECK (kind IN ('table', 'outbox')),
    topic text NOT NULL,               -- for kind 'outbox': a pattern with %s for aggregatetype
    key_attnums int2[],                -- attribute numbers: they survive column renames
    exclude_attnums int2[] NOT NULL DEFAULT '{}',
    emit_before boolean NOT NULL DEFAULT true,
    tombstones boolean NOT NULL DEFAULT true,
    schemas boolean NOT NULL DEFAULT false,  -- events in Kafka Connect's {"schema", "payload"} form
    delete_after_queue boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- The key and excluded columns by name, kept in step by capture_config_check and capture_ddl:
    -- a restored copy (pg_dump leaves dropped columns out) numbers its columns differently, and
    -- its rows of this table get their numbers back from these names.
    key_names text[],
    exclude_names text[]
);
-- pg_dump keeps the capture list; the tables' triggers are dumped with the tables.
SELECT pg_catalog.pg_extension_config_dump('kafka.capture_config', '');

-- A row of kafka.capture_config makes pg_kafka emit events for a table, so writing one takes what
-- capturing the table takes: the TRIGGER privilege on it (its owner has it). Removing one, too,
-- unless the table is gone. Superusers (and the extension's own event triggers) pass.
CREATE FUNCTION kafka_internal.capture_config_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r kafka.capture_config := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
BEGIN
    IF TG_OP <> 'DELETE' THEN
        IF (SELECT relkind FROM pg_class WHERE oid = r.relid) IS DISTINCT FROM 'r'
           AND (SELECT relkind FROM pg_class WHERE oid = r.relid) IS DISTINCT FROM 'p' THEN
            RAISE EXCEPTION 'relation % is not a table', r.relid USING ERRCODE = '42809',
                HINT = 'Capture tables with kafka.capture() or kafka.capture_outbox().';
        END IF;
        IF (SELECT relpersistence FROM pg_class WHERE oid = r.relid) = 't' THEN
            RAISE EXCEPTION '% is a temporary table', r.relid USING ERRCODE = '0A000',
                HINT = 'Temporary tables live in one session only; capture a permanent table.';
        END IF;
        IF r.kind = 'table' THEN
            PERFORM kafka_internal.check_topic(r.topic);
            IF r.key_names IS NULL OR r.exclude_names IS NULL THEN
                -- written by kafka.capture() (or an upgrade): the names of the numbers
                r.key_names := kafka_internal.capture_names(r.relid, r.key_attnums);
                r.exclude_names := kafka_internal.capture_names(r.relid, r.exclude_attnums);
            ELSIF kafka_internal.capture_names(r.relid, r.key_attnums) IS DISTINCT FROM r.key_names
               OR kafka_internal.capture_names(r.relid, r.exclude_attnums) IS DISTINCT FROM r.exclude_names THEN
                -- restored into a copy whose columns have other numbers: the numbers of the names
                r.key_attnums := kafka_internal.capture_attnums(r.relid, r.key_names);
                r.exclude_attnums := kafka_internal.capture_attnums(r.relid, r.exclude_names);
                IF cardinality(r.key_attnums) < cardinality(r.key_names) THEN
                    RAISE EXCEPTION 'key columns % of % are missing', r.key_names, r.relid USING ERRCODE = '42703',
                        HINT = 'Capture the table again with kafka.capture() and the key it has now.';
                END IF;
            END IF;
        ELSE
            PERFORM kafka_internal.check_topic(replace(r.topic, '%s', 'x'));
        END IF;
        IF r.topic IN (current_setting('kafka.position_topic', true), current_setting('kafka.transaction_topic', true)) THEN
            RAISE EXCEPTION 'topic "%" is pg_kafka''s own', r.topic USING ERRCODE = '42501',
                HINT = 'kafka.position_topic and kafka.transaction_topic are written by pg_kafka''s worker only; capture to another topic.';
        END IF;
        -- A captured topic is written by its capture only: another table's events there could
        -- pass for the first one's. (A superuser may still merge tables into one topic.)
        IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
           AND EXISTS (SELECT FROM kafka.capture_config o WHERE o.topic = r.topic AND o.relid <> r.relid) THEN
            RAISE EXCEPTION 'topic "%" already carries the events of another captured table', r.topic
                USING ERRCODE = '42501',
                HINT = 'Capture each table to a topic of its own; a superuser may put several tables in one topic.';
        END IF;
    END IF;
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
       AND NOT coalesce(has_table_privilege(r.relid, 'TRIGGER'), TG_OP = 'DELETE') THEN
        RAISE EXCEPTION 'permission denied to capture table %', r.relid::regclass USING ERRCODE = '42501',
            HINT = 'Capturing a table takes the TRIGGER privilege on it, as for its owner; ask the table''s owner to capture it.';
    END IF;
    RETURN r;
END $$;

CREATE TRIGGER capture_config_check BEFORE INSERT OR UPDATE OR DELETE ON kafka.capture_config
    FOR EACH ROW EXECUTE FUNCTION kafka_internal.capture_config_check();

-- Attribute numbers of named columns, and names of attribute numbers (in the order given).
CREATE FUNCTION kafka_internal.capture_attnums(relid oid, names text[]) RETURNS int2[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(array_agg(a.attnum ORDER BY u.o), '{}') FROM unnest(names) WITH ORDINALITY u(n, o)
      JOIN pg_attribute a ON a.attrelid = relid AND a.attname = u.n AND a.attnum > 0 AND NOT a.attisdropped
$$;

CREATE FUNCTION kafka_internal.capture_names(relid oid, attnums int2[]) RETURNS text[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(array_agg(a.attname::text ORDER BY u.o), '{}') FROM unnest(attnums) WITH ORDINALITY u(n, o)
      JOIN pg_attribute a ON a.attrelid = relid AND a.attnum = u.n AND NOT a.attisdropped
$$;

-- Captured tables and their options.
CREATE VIEW kafka.captures AS
SELECT relid::regclass AS "table", kind, topic, kafka_internal.capture_names(relid, key_attnums) AS key_columns,
       kafka_internal.capture_names(relid, exclude_attnums) AS exclude_columns, emit_before, tombstones,
       delete_after_queue, created_at, schemas
FROM kafka.capture_config;

-- Creates the triggers of a captured table (as the caller: PostgreSQL checks its privileges).
-- The arguments of a table's capture trigger, the one place they are built: what
-- kafka_internal.capture_changes() reads back (Options::from_args, src/backend/capture/plan.rs),
-- for the triggers and for kafka.backfill() alike.
CREATE FUNCTION kafka_internal.capture_args(cfg kafka.capture_config) RETURNS text[]
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT ARRAY[cfg.topic, array_to_string(cfg.key_attnums, ','), array_to_string(cfg.exclude_attnums, ','),
                 cfg.emit_before::text, cfg.tombstones::text, cfg.schemas::text]
$$;

CREATE FUNCTION kafka_internal.capture_triggers(relid oid) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $body$
DECLARE
    cfg kafka.capture_config;
    rel text := relid::regclass::text;
    call text;
BEGIN
    SELECT * INTO STRICT cfg FROM kafka.capture_config c WHERE c.relid = capture_triggers.relid;
    IF cfg.kind = 'outbox' THEN
        EXECUTE format('CREATE TRIGGER kafka_capture_outbox AFTER INSERT ON %s REFERENCING NEW TABLE AS kafka_new '
                       'FOR EACH STATEMENT EXECUTE FUNCTION kafka_internal.capture_outbox_relay(%L, %L)',
                       rel, cfg.topic, cfg.delete_after_queue);
        RETURN;
    END IF;
    call := format('kafka_internal.capture_changes(%s)',
                   (SELECT string_agg(quote_literal(a.arg), ', ' ORDER BY a.n)
                      FROM unnest(kafka_internal.capture_args(cfg)) WITH ORDINALITY AS a(arg, n)));
    EXECUTE format('CREATE TRIGGER kafka_capture_insert AFTER INSERT ON %s REFERENCING NEW TABLE AS kafka_new '
                   'FOR EACH STATEMENT EXECUTE FUNCTION %s', rel, call);
    EXECUTE format('CREATE TRIGGER kafka_capture_update AFTER UPDATE ON %s REFERENCING OLD TABLE AS kafka_old '
                   'NEW TABLE AS kafka_new FOR EACH STATEMENT EXECUTE FUNCTION %s', rel, call);
    EXECUTE format('CREATE TRIGGER kafka_capture_delete AFTER DELETE ON %s REFERENCING OLD TABLE AS kafka_old '
                   'FOR EACH STATEMENT EXECUTE FUNCTION %s', rel, call);
    EXECUTE format('CREATE TRIGGER kafka_capture_truncate AFTER TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION %s', rel, call);
END $body$;

-- Checks shared by capture() and capture_outbox(): an ordinary or partitioned table, not yet
-- captured; and named columns that exist.
CREATE FUNCTION kafka_internal.capture_check_table("table" regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = "table") NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', "table" USING ERRCODE = '42809',
            HINT = 'Only ordinary and partitioned tables can be captured; capture the tables a view reads.';
    END IF;
    IF EXISTS (SELECT FROM kafka.capture_config WHERE relid = "table") THEN
        RAISE EXCEPTION '% is already captured', "table" USING ERRCODE = '42710',
            HINT = 'Call kafka.uncapture() first to capture it with other options.';
    END IF;
END $$;

CREATE FUNCTION kafka_internal.capture_check_columns("table" regclass, columns text[], hint text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    missing text;
BEGIN
    SELECT string_agg(k, ', ') INTO missing FROM unnest(columns) k
     WHERE NOT EXISTS (SELECT FROM pg_attribute WHERE attrelid = "table" AND attname = k AND attnum > 0 AND NOT attisdropped);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'no column % in %', missing, "table" USING ERRCODE = '42703', HINT = hint;
    END IF;
END $$;

-- Starts capturing a table: every committed INSERT, UPDATE, DELETE and TRUNCATE becomes a
-- Debezium-shaped change event on `topic`.
CREATE FUNCTION kafka.capture(
    "table" regclass,
    topic text DEFAULT NULL,
    key_columns text[] DEFAULT NULL,
    exclude_columns text[] DEFAULT '{}',
    emit_before boolean DEFAULT true,
    tombstones boolean DEFAULT true,
    schemas boolean DEFAULT false
) RETURNS kafka.captures
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c pg_class;
    nsp text;
    keys text[];
    result kafka.captures;
BEGIN
    PERFORM kafka_internal.check_served();  -- events queued where no worker delivers would wait forever
    SELECT * INTO c FROM pg_class WHERE oid = "table";
    nsp := (SELECT nspname FROM pg_namespace WHERE oid = c.relnamespace);
    IF c.relkind IN ('r', 'p') AND c.relpersistence = 't' THEN
        RAISE EXCEPTION '% is a temporary table', "table" USING ERRCODE = '0A000',
            HINT = 'Temporary tables live in one session only; capture a permanent table.';
    END IF;
    PERFORM kafka_internal.capture_check_table("table");
    keys := coalesce(key_columns, (
        SELECT array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum))
          FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
         WHERE i.indrelid = "table" AND i.indisprimary));
    IF keys IS NULL OR cardinality(keys) = 0 THEN
        RAISE EXCEPTION '% has no primary key', "table" USING ERRCODE = '55000',
            HINT = 'Add a primary key, or name the key columns: kafka.capture(''t'', key_columns => ARRAY[''id'']).';
    END IF;
    PERFORM kafka_internal.capture_check_columns("table", keys || exclude_columns,
                                        'Name existing columns in key_columns and exclude_columns.');
    IF keys && exclude_columns THEN
        RAISE EXCEPTION 'key columns cannot be excluded' USING ERRCODE = '22023',
            HINT = 'Leave key columns out of exclude_columns.';
    END IF;
    IF c.relpersistence = 'u' THEN
        RAISE NOTICE '% is unlogged: its change events are durable, but after a crash the table is empty', "table";
    END IF;
    topic := coalesce(topic, current_database() || '.' || nsp || '.' || c.relname);
    PERFORM kafka_internal.check_topic(topic);
    INSERT INTO kafka.capture_config (relid, table_name, kind, topic, key_attnums, exclude_attnums, emit_before,
                                      tombstones, schemas)
    VALUES ("table", "table"::text, 'table', topic, kafka_internal.capture_attnums("table", keys),
            kafka_internal.capture_attnums("table", exclude_columns), emit_before, tombstones, schemas);
    PERFORM kafka_internal.capture_triggers("table");
    SELECT * INTO result FROM kafka.captures k WHERE k."table" = capture."table";
    RETURN result;
END $$;

CREATE FUNCTION kafka_internal.drop_capture_trigger(rel regclass, name name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('DROP TRIGGER %I ON %s', name, rel);
END $$;

-- Stops capturing a table; returns whether it was captured.
CREATE FUNCTION kafka.uncapture("table" regclass) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM kafka.capture_config WHERE relid = "table") THEN
        RETURN false;
    END IF;
    PERFORM kafka_internal.drop_capture_trigger("table", t.tgname) FROM pg_trigger t
     WHERE t.tgrelid = "table" AND t.tgname LIKE 'kafka\_capture\_%';
    DELETE FROM kafka.capture_config WHERE relid = "table";
    DELETE FROM kafka.backfill_progress WHERE relid = "table";
    RETURN true;
END $$;

-- Relays a user's own outbox table (Debezium's outbox pattern: id uuid, aggregatetype text,
-- aggregateid text, type text, payload jsonb): each inserted row becomes one message on
-- topic_pattern with %s replaced by aggregatetype, key aggregateid, value payload, headers id, type.
CREATE FUNCTION kafka.capture_outbox(
    "table" regclass,
    topic_pattern text DEFAULT 'outbox.event.%s',
    delete_after_queue boolean DEFAULT false
) RETURNS kafka.captures
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    result kafka.captures;
BEGIN
    PERFORM kafka_internal.check_served();  -- events queued where no worker delivers would wait forever
    PERFORM kafka_internal.capture_check_table("table");
    PERFORM kafka_internal.capture_check_columns("table", ARRAY['id', 'aggregatetype', 'aggregateid', 'type', 'payload'],
                                        'An outbox table has columns id, aggregatetype, aggregateid, type and payload.');
    IF strpos(topic_pattern, '%s') = 0 THEN
        PERFORM kafka_internal.check_topic(topic_pattern);
    ELSE
        PERFORM kafka_internal.check_topic(replace(topic_pattern, '%s', 'x'));
    END IF;
    INSERT INTO kafka.capture_config (relid, table_name, kind, topic, delete_after_queue)
    VALUES ("table", "table"::text, 'outbox', topic_pattern, delete_after_queue);
    PERFORM kafka_internal.capture_triggers("table");
    SELECT * INTO result FROM kafka.captures c WHERE c."table" = capture_outbox."table";
    RETURN result;
END $$;

-- Backfill progress, one row per captured table (the latest run).
CREATE TABLE kafka.backfill_progress (
    relid oid PRIMARY KEY,
    last_key text[],
    rows_done bigint NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    finished_at timestamptz
);

-- A backfill's progress decides which rows a resumed backfill sends: writing it takes what
-- backfilling the table takes (SELECT and TRIGGER on it); removing it, what uncapturing takes
-- (TRIGGER), or that the table is gone. Superusers (and the extension's event triggers) pass.
CREATE FUNCTION kafka_internal.backfill_progress_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r kafka.backfill_progress := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    may boolean;
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RETURN r;
    END IF;
    IF TG_OP = 'DELETE' THEN  -- NULL: the table is gone
        may := coalesce(has_table_privilege(OLD.relid, 'TRIGGER'), true);
    ELSE
        may := coalesce(has_table_privilege(NEW.relid, 'SELECT') AND has_table_privilege(NEW.relid, 'TRIGGER'), false)
               AND (TG_OP = 'INSERT'
                    OR coalesce(has_table_privilege(OLD.relid, 'SELECT') AND has_table_privilege(OLD.relid, 'TRIGGER'), false));
    END IF;
    IF NOT may THEN
        RAISE EXCEPTION 'permission denied to change the backfill progress of table %', r.relid::regclass
            USING ERRCODE = '42501',
            HINT = 'kafka.backfill() records it for whoever may backfill the table (SELECT and TRIGGER on it).';
    END IF;
    RETURN r;
END $$;

CREATE TRIGGER backfill_progress_check BEFORE INSERT OR UPDATE OR DELETE ON kafka.backfill_progress
    FOR EACH ROW EXECUTE FUNCTION kafka_internal.backfill_progress_check();

CREATE VIEW kafka.backfills AS
SELECT relid::regclass AS "table", rows_done, last_key, started_at, updated_at, finished_at
FROM kafka.backfill_progress;

-- One chunk of a backfill: the next `chunk_size` rows after the recorded key (in key order) as
-- op "r" events (encoded by kafka_internal.backfill_events, like the capture trigger's); records the
-- progress. Returns how many rows it queued (0: done). Runs as the caller: it reads the table
-- (and runs its types' code) with the caller's rights, and kafka_internal.backfill_events() checks them.
CREATE FUNCTION kafka_internal.backfill_chunk(relid oid, chunk_size integer) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $body$
DECLARE
    keys text[];
    keys_list text;
    after_list text;
    after text[];
    last text[];
    n bigint;
BEGIN
    SELECT kafka_internal.capture_names(c.relid, c.key_attnums) INTO STRICT keys
      FROM kafka.capture_config c WHERE c.relid = backfill_chunk.relid AND c.kind = 'table';
    SELECT p.last_key INTO STRICT after FROM kafka.backfill_progress p WHERE p.relid = backfill_chunk.relid;
    SELECT string_agg(format('n.%I', k), ', ' ORDER BY o),
           string_agg(format('$1[%s]::%s', o, format_type(a.atttypid, a.atttypmod)), ', ' ORDER BY o)
      INTO keys_list, after_list
      FROM unnest(keys) WITH ORDINALITY u(k, o)
      JOIN pg_attribute a ON a.attrelid = backfill_chunk.relid AND a.attname = u.k;
    EXECUTE format($q$
        SELECT kafka_internal.backfill_events(%5$s, c.a), (SELECT ARRAY[%6$s] FROM (SELECT (c.a[cardinality(c.a)]).*) n)
          FROM (SELECT ARRAY(SELECT n FROM %1$s n %2$s ORDER BY %3$s LIMIT %4$s) AS a) c$q$,
        relid::regclass,
        CASE WHEN after IS NULL THEN '' ELSE format('WHERE (%s) > (%s)', keys_list, after_list) END,
        keys_list, chunk_size, relid,
        (SELECT string_agg(format('n.%I::text', k), ', ') FROM unnest(keys) k))
    INTO n, last USING after;
    IF n > 0 THEN
        UPDATE kafka.backfill_progress p SET last_key = last, rows_done = p.rows_done + n, updated_at = now()
         WHERE p.relid = backfill_chunk.relid;
    END IF;
    RETURN n;
END $body$;

-- Emits the table's current rows as op "r" events, chunk by chunk, each chunk committed on its
-- own; progress is in kafka.backfills, and a CALL after an interruption resumes where it stopped.
-- (No SET clause: a procedure with one cannot COMMIT. Names are schema-qualified instead.)
CREATE PROCEDURE kafka.backfill("table" regclass, chunk_size integer DEFAULT 10000)
LANGUAGE plpgsql AS $$
DECLARE
    p kafka.backfill_progress;
BEGIN
    -- No SET search_path here (a procedure that commits cannot have one): every operator is
    -- qualified, so none from a schema on the caller's path runs with the caller's rights.
    IF NOT EXISTS (SELECT FROM kafka.capture_config c
                    WHERE c.relid::pg_catalog.oid OPERATOR(pg_catalog.=) "table"::pg_catalog.oid
                      AND c.kind OPERATOR(pg_catalog.=) 'table') THEN
        RAISE EXCEPTION '% is not captured', "table" USING ERRCODE = '55000',
            HINT = 'Call kafka.capture() first: the backfill uses its topic, key and columns.';
    END IF;
    IF NOT pg_catalog.has_table_privilege("table", 'SELECT') OR NOT pg_catalog.has_table_privilege("table", 'TRIGGER') THEN
        RAISE EXCEPTION 'permission denied to backfill table %', "table" USING ERRCODE = '42501',
            HINT = 'Backfilling a table takes the SELECT and TRIGGER privileges on it, as for its owner.';
    END IF;
    IF chunk_size IS NULL OR chunk_size OPERATOR(pg_catalog.<) 1 THEN
        RAISE EXCEPTION 'chunk_size must be positive' USING ERRCODE = '22023', HINT = 'e.g. chunk_size => 10000';
    END IF;
    SELECT * INTO p FROM kafka.backfill_progress b WHERE b.relid OPERATOR(pg_catalog.=) "table"::pg_catalog.oid;
    IF NOT FOUND OR p.finished_at IS NOT NULL THEN
        DELETE FROM kafka.backfill_progress b WHERE b.relid OPERATOR(pg_catalog.=) "table"::pg_catalog.oid;
        INSERT INTO kafka.backfill_progress (relid) VALUES ("table") RETURNING * INTO p;
        COMMIT;
    ELSE
        RAISE NOTICE 'resuming the backfill of % after % rows', "table", p.rows_done;
    END IF;
    LOOP
        EXIT WHEN kafka_internal.backfill_chunk("table", chunk_size) OPERATOR(pg_catalog.=) 0;
        COMMIT;
    END LOOP;
    UPDATE kafka.backfill_progress b SET finished_at = pg_catalog.now(), updated_at = pg_catalog.now()
     WHERE b.relid OPERATOR(pg_catalog.=) "table"::pg_catalog.oid;
    COMMIT;
END $$;

-- Keeps captures in step with their tables. Capture triggers read the table's columns at each
-- statement (new columns appear in events, dropped ones leave them, renamed ones take their new
-- name); after ALTER TABLE the outbox relay's function is generated again, and a key column of a
-- capture cannot be dropped. After DROP TABLE the configuration (and function) go too. Runs as
-- the extension's owner.
CREATE FUNCTION kafka_internal.capture_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cfg kafka.capture_config;
BEGIN
    FOR cfg IN SELECT * FROM kafka.capture_config c
                WHERE c.relid IN (SELECT d.objid FROM pg_event_trigger_ddl_commands() d
                                   WHERE d.classid = 'pg_class'::regclass)
    LOOP
        IF cfg.kind = 'table' AND cardinality(kafka_internal.capture_names(cfg.relid, cfg.key_attnums)) < cardinality(cfg.key_attnums) THEN
            RAISE EXCEPTION 'cannot drop a key column of captured table %', cfg.relid::regclass
                USING ERRCODE = '2BP01',
                      HINT = 'Call kafka.uncapture() first, then kafka.capture() with the new key.';
        END IF;
        IF cfg.kind = 'table' THEN  -- renamed or dropped columns: the names follow the numbers
            UPDATE kafka.capture_config c
               SET key_names = kafka_internal.capture_names(c.relid, c.key_attnums),
                   exclude_names = kafka_internal.capture_names(c.relid, c.exclude_attnums)
             WHERE c.relid = cfg.relid;
        END IF;
    END LOOP;
END $$;

CREATE FUNCTION kafka_internal.capture_dropped() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    gone oid;
BEGIN
    FOR gone IN
        DELETE FROM kafka.capture_config c
         USING pg_event_trigger_dropped_objects() d
         WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0 AND d.objid = c.relid
        RETURNING c.relid
    LOOP
        DELETE FROM kafka.backfill_progress WHERE relid = gone;
    END LOOP;
END $$;

CREATE EVENT TRIGGER kafka_capture_ddl ON ddl_command_end WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION kafka_internal.capture_ddl();
-- Every command that can drop a table: DROP TABLE, DROP SCHEMA ... CASCADE, DROP OWNED BY.
CREATE EVENT TRIGGER kafka_capture_dropped ON sql_drop
    EXECUTE FUNCTION kafka_internal.capture_dropped();
/* </end connected objects> */

/* <begin connected objects> */
-- kafka::backend::api::is_secret
CREATE  FUNCTION kafka_internal."is_secret"(
	"name" TEXT /* & str */
) RETURNS bool /* bool */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'is_secret_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- kafka::backend::api::worker_state
CREATE  FUNCTION kafka_internal."worker_state"() RETURNS TABLE (
	"running" bool,  /* bool */
	"pid" INT,  /* Option < i32 > */
	"started_at" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"delivery" TEXT,  /* Option < & '_ str > */
	"delivered" bigint,  /* i64 */
	"dead_lettered" bigint,  /* i64 */
	"last_delivery_at" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"last_error" TEXT,  /* Option < String > */
	"last_error_at" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"failing_since" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"previous_error" TEXT,  /* Option < String > */
	"previous_error_at" timestamp with time zone  /* Option < TimestampWithTimeZone > */
)
STRICT VOLATILE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'worker_state_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- finalize
-- pg_kafka: broker checks, the status view and privileges. Runs after every function exists.

CREATE FUNCTION kafka_internal.broker_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.host IS NULL OR NEW.host !~ '^[A-Za-z0-9._:\[\]-]+$' THEN
        RAISE EXCEPTION 'invalid Kafka broker host: %', coalesce(quote_literal(NEW.host), 'NULL')
            USING ERRCODE = '22023',
                  HINT = 'Give a host name or IP address (letters, digits, ".", "-", ":"), e.g. ''localhost''.';
    END IF;
    IF NEW.port IS NULL OR NEW.port < 1 OR NEW.port > 65535 THEN
        RAISE EXCEPTION 'invalid Kafka broker port: %', coalesce(NEW.port::text, 'NULL')
            USING ERRCODE = '22023',
                  HINT = 'A port is a number from 1 to 65535; Kafka listens on 9092 by default.';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER broker_check BEFORE INSERT OR UPDATE ON kafka.broker
    FOR EACH ROW EXECUTE FUNCTION kafka_internal.broker_check();
-- Only rows that really changed restart the producer (the original extension's INSERT ... ON CONFLICT DO
-- NOTHING, run by every new session of some applications, does not interrupt deliveries).
CREATE TRIGGER broker_changed AFTER INSERT OR UPDATE OR DELETE ON kafka.broker
    FOR EACH ROW EXECUTE FUNCTION kafka_internal.broker_changed();
CREATE TRIGGER broker_truncated AFTER TRUNCATE ON kafka.broker
    FOR EACH STATEMENT EXECUTE FUNCTION kafka_internal.broker_changed();

CREATE TRIGGER config_check BEFORE INSERT OR UPDATE OR DELETE ON kafka.config
    FOR EACH ROW EXECUTE FUNCTION kafka_internal.config_check();
-- While a secret is stored, only a superuser may point the producer at other brokers.
CREATE TRIGGER broker_guard BEFORE INSERT OR UPDATE OR DELETE ON kafka.broker
    FOR EACH ROW EXECUTE FUNCTION kafka_internal.broker_guard();
CREATE TRIGGER config_changed AFTER INSERT OR UPDATE OR DELETE ON kafka.config
    FOR EACH ROW EXECUTE FUNCTION kafka_internal.broker_changed();
CREATE TRIGGER config_truncated AFTER TRUNCATE ON kafka.config
    FOR EACH STATEMENT EXECUTE FUNCTION kafka_internal.broker_changed();

-- Sessions cache who may write which topic; these tables' changes make them forget (src/backend/topics.rs).
CREATE TRIGGER topic_rules_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON kafka.topic_grants
    FOR EACH STATEMENT EXECUTE FUNCTION kafka_internal.topic_rules_changed();
CREATE TRIGGER topic_rules_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON kafka.capture_config
    FOR EACH STATEMENT EXECUTE FUNCTION kafka_internal.topic_rules_changed();

-- kafka.config as administrators may read it: secret values masked.
CREATE VIEW kafka.settings AS
SELECT name, CASE WHEN kafka_internal.is_secret(name) THEN '********' ELSE value END AS value,
       kafka_internal.is_secret(name) AS secret
FROM kafka.config;

-- The jsonb value variant of publish(): the value is jsonb's canonical text.
CREATE FUNCTION kafka.publish(topic text, value jsonb, key text DEFAULT NULL, key_bytes bytea DEFAULT NULL,
                              headers jsonb DEFAULT NULL, partition integer DEFAULT NULL,
                              ts timestamptz DEFAULT NULL)
RETURNS bigint LANGUAGE sql VOLATILE PARALLEL UNSAFE AS $$
    SELECT kafka.publish(topic, value::text, key, key_bytes, headers, partition, ts)
$$;

CREATE FUNCTION kafka.autonomous_publish(topic text, value jsonb, key text DEFAULT NULL,
                                         key_bytes bytea DEFAULT NULL, headers jsonb DEFAULT NULL,
                                         partition integer DEFAULT NULL, ts timestamptz DEFAULT NULL,
                                         timeout interval DEFAULT '10 seconds')
RETURNS TABLE (partition integer, "offset" bigint) LANGUAGE sql VOLATILE PARALLEL UNSAFE AS $$
    SELECT * FROM kafka.autonomous_publish(topic, value::text, key, key_bytes, headers, partition, ts, timeout)
$$;

-- One row: is the worker running, how much waits, what was delivered, what went wrong last.
CREATE VIEW kafka.status AS
SELECT w.running AS worker_running,
       w.pid AS worker_pid,
       w.started_at AS worker_started_at,
       w.delivery,
       (SELECT coalesce(pg_catalog.sum(o.messages), 0) FROM kafka.outbox o)::bigint AS backlog,
       (SELECT pg_catalog.now() OPERATOR(pg_catalog.-) pg_catalog.min(o.produced_at) FROM kafka.outbox o) AS oldest_age,
       w.delivered,
       w.dead_lettered,
       (SELECT pg_catalog.count(*) FROM kafka.dead_letter) AS dead_letters,
       w.last_delivery_at,
       w.last_error,
       w.last_error_at,
       w.failing_since,
       w.previous_error,
       w.previous_error_at
FROM kafka_internal.worker_state() w;

-- The worker's recent distinct failures, newest first (the same failure again only counts).
CREATE VIEW kafka.recent_errors AS
SELECT e.first_at, e.last_at, e.attempts, e.error FROM kafka_internal.worker_errors() e;

-- Per topic: what was delivered and dead-lettered, and when last; and since when its oldest
-- waiting message waits (from the packs' topic lists: one outbox row per pack, nothing unpacked).
CREATE VIEW kafka.topics AS
WITH waiting AS (
    SELECT t.topic, pg_catalog.min(o.produced_at) AS oldest
      FROM kafka.outbox o, pg_catalog.unnest(o.topics) AS t(topic)
     GROUP BY t.topic
)
SELECT coalesce(s.topic, w.topic) AS topic,
       coalesce(s.delivered, 0) AS delivered,
       coalesce(s.dead_lettered, 0) AS dead_lettered,
       coalesce(s.bytes, 0) AS bytes,
       s.last_delivery_at,
       s.last_dead_letter_at,
       w.oldest AS oldest_waiting_at,
       pg_catalog.now() OPERATOR(pg_catalog.-) w.oldest AS oldest_age
FROM kafka.topic_stats s FULL JOIN waiting w ON w.topic OPERATOR(pg_catalog.=) s.topic;

-- Privileges. Nothing here is for PUBLIC. Two roles, created if absent (roles are cluster-wide
-- and outlive the extension): kafka_producer may produce; kafka_admin manages brokers, settings
-- and dead letters (but cannot read secret setting values, nor produce).
REVOKE ALL ON ALL TABLES IN SCHEMA kafka FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA kafka FROM PUBLIC;
REVOKE EXECUTE ON ALL ROUTINES IN SCHEMA kafka FROM PUBLIC;   -- functions and procedures
REVOKE EXECUTE ON ALL ROUTINES IN SCHEMA kafka_internal FROM PUBLIC;

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'kafka_producer') THEN
        CREATE ROLE kafka_producer NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'kafka_admin') THEN
        CREATE ROLE kafka_admin NOLOGIN;
    END IF;
END $$;

GRANT USAGE ON SCHEMA kafka TO kafka_producer, kafka_admin, pg_monitor;
GRANT EXECUTE ON FUNCTION kafka.produce(text, text) TO kafka_producer;
GRANT EXECUTE ON FUNCTION kafka.publish(text, text, text, bytea, jsonb, integer, timestamptz),
                          kafka.publish(text, bytea, text, bytea, jsonb, integer, timestamptz),
                          kafka.publish(text, jsonb, text, bytea, jsonb, integer, timestamptz),
                          kafka.autonomous_publish(text, text, text, bytea, jsonb, integer, timestamptz, interval),
                          kafka.autonomous_publish(text, bytea, text, bytea, jsonb, integer, timestamptz, interval),
                          kafka.autonomous_publish(text, jsonb, text, bytea, jsonb, integer, timestamptz, interval)
    TO kafka_producer;

-- kafka_admin's functions run with its rights (none is SECURITY DEFINER) and call these helpers.
GRANT USAGE ON SCHEMA kafka_internal TO kafka_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON kafka.broker TO kafka_admin;
GRANT SELECT (name), INSERT, UPDATE, DELETE ON kafka.config TO kafka_admin;
GRANT SELECT ON kafka.settings TO kafka_admin;
GRANT SELECT, DELETE ON kafka.dead_letter TO kafka_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON kafka.topic_grants TO kafka_admin;
GRANT SELECT ON kafka.outbox, kafka.outbox_commit, kafka.status, kafka.recent_errors TO kafka_admin;
GRANT EXECUTE ON FUNCTION kafka.close(), kafka_internal.worker_state(), kafka_internal.worker_errors(), kafka_internal.is_secret(text), kafka_internal.check_served(),
                          kafka.requeue_dead_letters(bigint[], text), kafka.purge_dead_letters(bigint[], text),
                          kafka.release(), kafka.dead_letter_waiting(bigint[], text)
    TO kafka_admin;

GRANT SELECT, INSERT, DELETE ON kafka.capture_config TO kafka_admin;
GRANT SELECT ON kafka.captures, kafka.backfills TO kafka_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON kafka.backfill_progress TO kafka_admin;
GRANT EXECUTE ON FUNCTION kafka.capture(regclass, text, text[], text[], boolean, boolean, boolean), kafka.uncapture(regclass),
                          kafka.capture_outbox(regclass, text, boolean), kafka_internal.capture_triggers(oid),
                          kafka_internal.capture_args(kafka.capture_config),
                          kafka_internal.capture_changes(), kafka_internal.capture_attnums(oid, text[]), kafka_internal.capture_names(oid, int2[]),
                          kafka_internal.capture_outbox_relay(), kafka_internal.check_topic(text), kafka_internal.drop_capture_trigger(regclass, name),
                          kafka_internal.backfill_chunk(oid, integer), kafka_internal.backfill_events(oid, anyarray),
                          kafka_internal.capture_check_table(regclass),
                          kafka_internal.capture_check_columns(regclass, text[], text)
    TO kafka_admin;
GRANT EXECUTE ON PROCEDURE kafka.backfill(regclass, integer) TO kafka_admin;

GRANT SELECT ON kafka.status, kafka.topics, kafka.recent_errors TO pg_monitor;
GRANT SELECT ON kafka.producer_statistics TO kafka_admin, pg_monitor;
GRANT SELECT ON kafka.topics TO kafka_admin;
GRANT TRUNCATE ON kafka.topic_stats TO kafka_admin;
GRANT EXECUTE ON FUNCTION kafka_internal.worker_state(), kafka_internal.worker_errors() TO pg_monitor;

-- What \dx+ kafka and \df+ show.
COMMENT ON TABLE kafka.broker IS 'Kafka brokers to bootstrap from (host, port); changes apply when they commit';
COMMENT ON TABLE kafka.config IS 'librdkafka producer settings (name, value); secret values readable by superusers only';
COMMENT ON TABLE kafka.outbox IS 'Committed messages waiting for Kafka''s acknowledgement, in packs; read it, do not write it';
COMMENT ON TABLE kafka.producer_statistics IS 'librdkafka''s latest statistics (JSON) of each producer of the worker';
COMMENT ON TABLE kafka.outbox_commit IS 'Commit order of the transactions whose packs wait in kafka.outbox';
COMMENT ON TABLE kafka.dead_letter IS 'Messages Kafka refused for good, with the error; see kafka.requeue_dead_letters()';
COMMENT ON TABLE kafka.topic_grants IS 'Optional: the topics each role may produce to (empty: any topic)';
COMMENT ON TABLE kafka.capture_config IS 'Captured tables and their options; use kafka.capture() and kafka.uncapture()';
COMMENT ON TABLE kafka.home IS 'The database the waiting messages belong to (a restored copy holds them until kafka.release())';
COMMENT ON VIEW kafka.recent_errors IS 'The delivery worker''s last 8 distinct failures: first and last time, attempts';
COMMENT ON VIEW kafka.status IS 'The delivery worker: running, backlog, delivered, current and previous failure';
COMMENT ON VIEW kafka.topics IS 'Per topic: messages delivered and dead-lettered, bytes, when last, oldest waiting';
COMMENT ON VIEW kafka.settings IS 'kafka.config with secret values masked';
COMMENT ON VIEW kafka.captures IS 'Captured tables, their topics and options';
COMMENT ON VIEW kafka.backfills IS 'Progress of the latest backfill of each captured table';
COMMENT ON FUNCTION kafka.produce(text, text) IS 'Queues a message for a topic; sent if and only if the transaction commits';
COMMENT ON FUNCTION kafka.publish(text, text, text, bytea, jsonb, integer, timestamptz) IS 'Queues a full Kafka record (text value); sent if and only if the transaction commits';
COMMENT ON FUNCTION kafka.publish(text, bytea, text, bytea, jsonb, integer, timestamptz) IS 'Queues a full Kafka record (bytes value); sent if and only if the transaction commits';
COMMENT ON FUNCTION kafka.publish(text, jsonb, text, bytea, jsonb, integer, timestamptz) IS 'Queues a full Kafka record (JSON value); sent if and only if the transaction commits';
COMMENT ON FUNCTION kafka.autonomous_publish(text, text, text, bytea, jsonb, integer, timestamptz, interval) IS 'Sends a record now, outside the transaction, and returns its partition and offset';
COMMENT ON FUNCTION kafka.autonomous_publish(text, bytea, text, bytea, jsonb, integer, timestamptz, interval) IS 'Sends a record (bytes value) now, outside the transaction, and returns its partition and offset';
COMMENT ON FUNCTION kafka.autonomous_publish(text, jsonb, text, bytea, jsonb, integer, timestamptz, interval) IS 'Sends a record (JSON value) now, outside the transaction, and returns its partition and offset';
COMMENT ON FUNCTION kafka.close() IS 'Makes the worker re-read kafka.broker and kafka.config and make a new producer';
COMMENT ON FUNCTION kafka.release() IS 'Lets a restored copy of a database deliver the messages it was restored with';
COMMENT ON FUNCTION kafka.requeue_dead_letters(bigint[], text) IS 'Moves dead letters back to the queue (all, or by ids and/or topic)';
COMMENT ON FUNCTION kafka.dead_letter_waiting(bigint[], text) IS 'Moves given waiting messages out of the queue into kafka.dead_letter';
COMMENT ON FUNCTION kafka.purge_dead_letters(bigint[], text) IS 'Deletes dead letters (all, or by ids and/or topic)';
COMMENT ON FUNCTION kafka.capture(regclass, text, text[], text[], boolean, boolean, boolean) IS 'Starts emitting Debezium-shaped change events of a table';
COMMENT ON FUNCTION kafka.capture_outbox(regclass, text, boolean) IS 'Relays a Debezium-style outbox table: each inserted row becomes a message';
COMMENT ON FUNCTION kafka.uncapture(regclass) IS 'Stops capturing a table';
COMMENT ON PROCEDURE kafka.backfill(regclass, integer) IS 'Emits a captured table''s current rows as snapshot events, chunk by chunk; resumable';
/* </end connected objects> */

-- ---- end of pg_kafka 0.2.0's install script ----

-- Data of 0.1.0, back in place. Ids of new messages follow the old ones (dead letters keep
-- their ids).
INSERT INTO kafka.broker SELECT host, port FROM kafka_upgrade.broker ON CONFLICT DO NOTHING;
INSERT INTO kafka.config SELECT name, value FROM kafka_upgrade.config;
INSERT INTO kafka.dead_letter (id, topic, key, payload, headers, partition, timestamp_ms, produced_at,
                               first_attempt_at, last_attempt_at, error)
SELECT id, topic, key, payload, headers, partition, timestamp_ms, produced_at, first_attempt_at,
       last_attempt_at, error
  FROM kafka_upgrade.dead_letter;
INSERT INTO kafka.capture_config (relid, table_name, kind, topic, key_attnums, exclude_attnums, emit_before,
                                  tombstones, delete_after_queue, created_at)
SELECT c.relid::regclass, c.table_name, c.kind, c.topic, c.key_attnums, c.exclude_attnums, c.emit_before,
       c.tombstones, c.delete_after_queue, c.created_at
  FROM kafka_upgrade.capture_config c
 WHERE EXISTS (SELECT FROM pg_catalog.pg_class r WHERE r.oid = c.relid);
INSERT INTO kafka.backfill_progress SELECT * FROM kafka_upgrade.backfill_progress;
SELECT kafka_internal.capture_triggers(relid) FROM kafka.capture_config;

SELECT pg_catalog.setval('kafka.outbox_id_seq',
       greatest((SELECT last_value FROM kafka_upgrade.outbox_id_seq),
                           (SELECT pg_catalog.max(id) FROM kafka_upgrade.dead_letter),
                           (SELECT pg_catalog.max(id) FROM kafka_upgrade.outbox), 1) + 512);
-- 0.1.0's waiting messages, queued again in their order: sent once ALTER EXTENSION commits.
SELECT pg_catalog.count(kafka_internal.requeue_v1(o.topic, o.key, o.payload, o.headers, o.partition, o.timestamp_ms, o.packed))
  FROM (SELECT * FROM kafka_upgrade.outbox ORDER BY id) o;

-- 0.1.0's tables leave the extension before they are dropped: a table dropped as a member stays
-- in pg_extension.extconfig (pg_dump's list of tables whose rows it dumps) as a dangling oid.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT c.oid::pg_catalog.regclass AS rel, c.relkind FROM pg_catalog.pg_class c
              WHERE c.relnamespace = 'kafka_upgrade'::pg_catalog.regnamespace AND c.relkind IN ('r', 'S')
                AND EXISTS (SELECT FROM pg_catalog.pg_depend d
                             WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid
                               AND d.deptype = 'e')
    LOOP
        EXECUTE pg_catalog.format('ALTER EXTENSION kafka DROP %s %s',
                                  CASE r.relkind WHEN 'r' THEN 'TABLE' ELSE 'SEQUENCE' END, r.rel);
    END LOOP;
END $$;
DROP SCHEMA kafka_upgrade CASCADE;
