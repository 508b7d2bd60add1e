-- pg_kafka 0.2.0 -> 0.3.0: the changes to 0.2.0's objects, written by hand (CREATE OR REPLACE,
-- ALTER, what is new). tests/regress/sql/upgrade.sql checks that an upgraded schema equals a
-- fresh install's. Frozen once 0.3.0 is released (scripts/check-released).

\echo Use "ALTER EXTENSION kafka UPDATE TO '0.3.0'" to load this file. \quit

-- Raises pg_kafka's error `name` (a variant of KafkaError, core/src/error/mod.rs) with its fields:
-- the SQL below raises its errors through it, with the SQLSTATE, message and hint defined there.
CREATE FUNCTION kafka_internal.raise_error(name text, VARIADIC args text[] DEFAULT '{}') RETURNS void
    LANGUAGE c AS 'MODULE_PATHNAME', 'raise_error_wrapper';

-- Privileged code trusts schema kafka only if a superuser owns it: the event triggers check.

-- Whether schema kafka is owned by a superuser. The event triggers below run as the extension's
-- owner and reach kafka.capture_config by name: in a schema another role owns (or put in the
-- place of the extension's after renaming it) a look-alike table's triggers would run with those
-- rights, so they do nothing then, and say why. (CREATE EXTENSION refuses such a schema:
-- sql/tables.sql.)
CREATE OR REPLACE FUNCTION kafka_internal.schema_trusted() RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF coalesce((SELECT r.rolsuper FROM pg_catalog.pg_namespace n
                   JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) n.nspowner
                  WHERE n.nspname OPERATOR(pg_catalog.=) 'kafka'), false) THEN
        RETURN true;
    END IF;
    RAISE WARNING 'pg_kafka ignores schema kafka: it is not owned by a superuser'
        USING HINT = 'ALTER SCHEMA kafka OWNER TO a superuser if its owner is trusted; otherwise check its objects, '
                     'DROP EXTENSION kafka and create it again.';
    RETURN false;
END $$;

-- Keeps captures in step with their tables. Capture triggers read the table's columns at each
-- statement (new columns appear in events, dropped ones leave them, renamed ones take their new
-- name); after ALTER TABLE the outbox relay's function is generated again, and a key column of a
-- capture cannot be dropped. After DROP TABLE the configuration (and function) go too. Runs as
-- the extension's owner.
CREATE OR REPLACE FUNCTION kafka_internal.capture_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cfg kafka.capture_config;
BEGIN
    IF NOT kafka_internal.schema_trusted() THEN
        RETURN;
    END IF;
    FOR cfg IN SELECT * FROM kafka.capture_config c
                WHERE c.relid IN (SELECT d.objid FROM pg_event_trigger_ddl_commands() d
                                   WHERE d.classid = 'pg_class'::regclass)
    LOOP
        IF cfg.kind = 'table' AND cardinality(kafka_internal.capture_names(cfg.relid, cfg.key_attnums)) < cardinality(cfg.key_attnums) THEN
            PERFORM kafka_internal.raise_error('KeyColumnDropped', cfg.relid::regclass::text);
        END IF;
        IF cfg.kind = 'table' THEN  -- renamed or dropped columns: the names follow the numbers
            UPDATE kafka.capture_config c
               SET key_names = kafka_internal.capture_names(c.relid, c.key_attnums),
                   exclude_names = kafka_internal.capture_names(c.relid, c.exclude_attnums)
             WHERE c.relid = cfg.relid;
        END IF;
    END LOOP;
END $$;

CREATE OR REPLACE FUNCTION kafka_internal.capture_dropped() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    gone oid;
BEGIN
    IF NOT kafka_internal.schema_trusted() THEN
        RETURN;
    END IF;
    FOR gone IN
        DELETE FROM kafka.capture_config c
         USING pg_event_trigger_dropped_objects() d
         WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0 AND d.objid = c.relid
        RETURNING c.relid
    LOOP
        DELETE FROM kafka.backfill_progress WHERE relid = gone;
    END LOOP;
END $$;

-- Who may write a topic: capturing into one follows produce()'s rule (src/backend/topics.rs).

CREATE OR REPLACE FUNCTION kafka_internal."check_capture_topic"(
	"topic" TEXT /* & str */
) RETURNS VOID /* SqlResult < () > */
STRICT STABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'check_capture_topic_wrapper';

-- A row of kafka.capture_config makes pg_kafka emit events for a table, so writing one takes what
-- capturing the table takes: the TRIGGER privilege on it (its owner has it). Removing one, too,
-- unless the table is gone. Superusers (and the extension's own event triggers) pass.
CREATE OR REPLACE FUNCTION kafka_internal.capture_config_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r kafka.capture_config := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
BEGIN
    IF TG_OP <> 'DELETE' THEN
        IF (SELECT relkind FROM pg_class WHERE oid = r.relid) IS DISTINCT FROM 'r'
           AND (SELECT relkind FROM pg_class WHERE oid = r.relid) IS DISTINCT FROM 'p' THEN
            PERFORM kafka_internal.raise_error('NotATable', r.relid::regclass::text);
        END IF;
        IF (SELECT relpersistence FROM pg_class WHERE oid = r.relid) = 't' THEN
            PERFORM kafka_internal.raise_error('TemporaryTable', r.relid::regclass::text);
        END IF;
        IF r.kind = 'table' THEN
            PERFORM kafka_internal.check_topic(r.topic);
            -- who may write a topic: the rule of produce(), for the role that captures
            -- (src/backend/topics.rs); the extension's own event triggers (as its owner) pass
            PERFORM kafka_internal.check_capture_topic(r.topic);
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
                    PERFORM kafka_internal.raise_error('KeyColumnsMissing', r.key_names::text, r.relid::regclass::text);
                END IF;
            END IF;
        ELSE
            PERFORM kafka_internal.check_topic(replace(r.topic, '%s', 'x'));
        END IF;
        IF r.topic IN (current_setting('kafka.position_topic', true), current_setting('kafka.transaction_topic', true)) THEN
            PERFORM kafka_internal.raise_error('WorkerTopic', r.topic);
        END IF;
        -- A captured topic is written by its capture only: another table's events there could
        -- pass for the first one's. (A superuser may still merge tables into one topic.)
        IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
           AND EXISTS (SELECT FROM kafka.capture_config o WHERE o.topic = r.topic AND o.relid <> r.relid) THEN
            PERFORM kafka_internal.raise_error('TopicOfAnotherCapture', r.topic);
        END IF;
    END IF;
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
       AND NOT coalesce(has_table_privilege(r.relid, 'TRIGGER'), TG_OP = 'DELETE') THEN
        PERFORM kafka_internal.raise_error('CaptureDenied', r.relid::regclass::text);
    END IF;
    RETURN r;
END $$;

-- Errors raised through kafka_internal.raise_error (one definition of each error); the column
-- check takes whether the table is an outbox instead of a hint, and cuts long names.

DROP FUNCTION kafka_internal.capture_check_columns(regclass, text[], text);

CREATE FUNCTION kafka_internal.capture_check_columns("table" regclass, columns text[], outbox boolean) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    missing text;
BEGIN
    -- each name as it is shown in a message: quoted, cut to 100 characters (a name can be any text)
    SELECT string_agg(CASE WHEN length(k) > 100 THEN format('"%s…" (%s characters)', left(k, 100), length(k))
                           ELSE format('"%s"', k) END, ', ')
      INTO missing FROM unnest(columns) k
     WHERE NOT EXISTS (SELECT FROM pg_attribute WHERE attrelid = "table" AND attname = k AND attnum > 0 AND NOT attisdropped);
    IF missing IS NOT NULL AND outbox THEN
        PERFORM kafka_internal.raise_error('NotAnOutboxTable', left(missing, 1000), "table"::text);
    ELSIF missing IS NOT NULL THEN
        PERFORM kafka_internal.raise_error('NoSuchColumns', left(missing, 1000), "table"::text);
    END IF;
END $$;

-- Checks shared by capture() and capture_outbox(): an ordinary or partitioned table, not yet
-- captured; and named columns that exist (the key and excluded columns, or an outbox table's).
CREATE OR REPLACE FUNCTION kafka_internal.capture_check_table("table" regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = "table") NOT IN ('r', 'p') THEN
        PERFORM kafka_internal.raise_error('NotATable', "table"::text);
    END IF;
    IF EXISTS (SELECT FROM kafka.capture_config WHERE relid = "table") THEN
        PERFORM kafka_internal.raise_error('AlreadyCaptured', "table"::text);
    END IF;
END $$;

-- Starts capturing a table: every committed INSERT, UPDATE, DELETE and TRUNCATE becomes a
-- Debezium-shaped change event on `topic`.
CREATE OR REPLACE FUNCTION kafka.capture(
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
        PERFORM kafka_internal.raise_error('TemporaryTable', "table"::text);
    END IF;
    PERFORM kafka_internal.capture_check_table("table");
    keys := coalesce(key_columns, (
        SELECT array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum))
          FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
         WHERE i.indrelid = "table" AND i.indisprimary));
    IF keys IS NULL OR cardinality(keys) = 0 THEN
        PERFORM kafka_internal.raise_error('NoPrimaryKey', "table"::text);
    END IF;
    PERFORM kafka_internal.capture_check_columns("table", keys || exclude_columns, outbox => false);
    IF keys && exclude_columns THEN
        PERFORM kafka_internal.raise_error('KeyExcluded');
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

-- Relays a user's own outbox table (Debezium's outbox pattern: id uuid, aggregatetype text,
-- aggregateid text, type text, payload jsonb): each inserted row becomes one message on
-- topic_pattern with %s replaced by aggregatetype, key aggregateid, value payload, headers id, type.
CREATE OR REPLACE FUNCTION kafka.capture_outbox(
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
                                                 outbox => true);
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

-- A backfill's progress decides which rows a resumed backfill sends: writing it takes what
-- backfilling the table takes (SELECT and TRIGGER on it); removing it, what uncapturing takes
-- (TRIGGER), or that the table is gone. Superusers (and the extension's event triggers) pass.
CREATE OR REPLACE FUNCTION kafka_internal.backfill_progress_check() RETURNS trigger
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
        PERFORM kafka_internal.raise_error('BackfillProgressDenied', r.relid::regclass::text);
    END IF;
    RETURN r;
END $$;

CREATE OR REPLACE FUNCTION kafka_internal.broker_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.host IS NULL OR NEW.host !~ '^[A-Za-z0-9._:\[\]-]+$' THEN
        PERFORM kafka_internal.raise_error('BadBrokerHost', coalesce(quote_literal(NEW.host), 'NULL'));
    END IF;
    IF NEW.port IS NULL OR NEW.port < 1 OR NEW.port > 65535 THEN
        PERFORM kafka_internal.raise_error('BadBrokerPort', coalesce(NEW.port::text, 'NULL'));
    END IF;
    RETURN NEW;
END $$;

-- A backfill chunk is read as the table's owner, security-restricted: the plpgsql function that
-- did it as the caller is replaced by a native one and the query it runs.
DROP FUNCTION kafka_internal.backfill_chunk(oid, integer);

CREATE  FUNCTION kafka_internal."backfill_chunk"(
	"relid" oid, /* pg_sys :: Oid */
	"chunk_size" INT /* i32 */
) RETURNS bigint /* SqlResult < i64 > */
STRICT VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'backfill_chunk_wrapper';

-- The query of one backfill chunk, built from the catalog: the next `chunk_size` rows of the
-- table in key order after the last key sent ($1, as text; none at the start), as an array of
-- rows, and the last row's key as text. kafka_internal.backfill_chunk() (src/backend/capture/
-- backfill.rs) runs it as the table's owner, security-restricted: the casts and comparisons of
-- the key's types run with the owner's rights only, whoever calls the backfill.
CREATE FUNCTION kafka_internal.backfill_query(relid oid, chunk_size integer) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $body$
DECLARE
    keys text[];
    keys_list text;
    after_list text;
    first boolean;
    r text := 'r';  -- the rows' alias: `SELECT r FROM t r` is the whole row only if no column is named r
BEGIN
    SELECT kafka_internal.capture_names(c.relid, c.key_attnums) INTO STRICT keys
      FROM kafka.capture_config c WHERE c.relid = backfill_query.relid AND c.kind = 'table';
    SELECT p.last_key IS NULL INTO STRICT first FROM kafka.backfill_progress p WHERE p.relid = backfill_query.relid;
    WHILE EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = backfill_query.relid AND a.attname = r) LOOP
        r := r || '_';
    END LOOP;
    SELECT string_agg(format('%I.%I', r, k), ', ' ORDER BY o),
           string_agg(format('$1[%s]::%s', o, format_type(a.atttypid, a.atttypmod)), ', ' ORDER BY o)
      INTO keys_list, after_list
      FROM unnest(keys) WITH ORDINALITY u(k, o)
      JOIN pg_attribute a ON a.attrelid = backfill_query.relid AND a.attname = u.k;
    RETURN format($q$
        SELECT c.a, (SELECT ARRAY[%5$s] FROM (SELECT (c.a[cardinality(c.a)]).*) n)
          FROM (SELECT ARRAY(SELECT %6$I FROM %1$s %6$I %2$s ORDER BY %3$s LIMIT %4$s) AS a) c$q$,
        relid::regclass,
        CASE WHEN first THEN '' ELSE format('WHERE (%s) > (%s)', keys_list, after_list) END,
        keys_list, chunk_size,
        (SELECT string_agg(format('n.%I::text', k), ', ') FROM unnest(keys) k),
        r);
END $body$;

-- Emits the table's current rows as op "r" events, chunk by chunk, each chunk committed on its
-- own; progress is in kafka.backfills, and a CALL after an interruption resumes where it stopped.
-- (No SET clause: a procedure with one cannot COMMIT. Names are schema-qualified instead.)
CREATE OR REPLACE PROCEDURE kafka.backfill("table" regclass, chunk_size integer DEFAULT 10000)
LANGUAGE plpgsql AS $$
DECLARE
    p kafka.backfill_progress;
BEGIN
    -- No SET search_path here (a procedure that commits cannot have one): every operator is
    -- qualified, so none from a schema on the caller's path runs with the caller's rights.
    IF NOT EXISTS (SELECT FROM kafka.capture_config c
                    WHERE c.relid::pg_catalog.oid OPERATOR(pg_catalog.=) "table"::pg_catalog.oid
                      AND c.kind OPERATOR(pg_catalog.=) 'table') THEN
        PERFORM kafka_internal.raise_error('NotCaptured', "table"::pg_catalog.text);
    END IF;
    IF NOT pg_catalog.has_table_privilege("table", 'SELECT') OR NOT pg_catalog.has_table_privilege("table", 'TRIGGER') THEN
        PERFORM kafka_internal.raise_error('BackfillDenied', "table"::pg_catalog.text);
    END IF;
    IF chunk_size IS NULL OR chunk_size OPERATOR(pg_catalog.<) 1 THEN
        PERFORM kafka_internal.raise_error('BadChunkSize');
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

-- kafka.waiting(): the messages waiting for Kafka, in commit order.

CREATE FUNCTION kafka."waiting"(
	"topic" TEXT DEFAULT NULL, /* Option < & str > */
	"max_rows" bigint DEFAULT 1000 /* i64 */
) RETURNS TABLE (
	"id" bigint,  /* i64 */
	"commit_order" bigint,  /* i64 */
	"topic" TEXT,  /* String */
	"key" bytea,  /* :: std :: option :: Option < Vec < u8 > > */
	"value" bytea,  /* :: std :: option :: Option < Vec < u8 > > */
	"headers" jsonb,  /* Option < JsonB > */
	"partition" INT,  /* Option < i32 > */
	"timestamp" timestamp with time zone  /* Option < TimestampWithTimeZone > */
)
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'waiting_wrapper';

REVOKE EXECUTE ON FUNCTION kafka.waiting(text, bigint) FROM PUBLIC;
REVOKE EXECUTE ON ALL ROUTINES IN SCHEMA kafka_internal FROM PUBLIC;
GRANT EXECUTE ON FUNCTION kafka.waiting(text, bigint) TO kafka_admin;
GRANT EXECUTE ON FUNCTION kafka_internal.check_capture_topic(text), kafka_internal.backfill_chunk(oid, integer),
                          kafka_internal.backfill_query(oid, integer),
                          kafka_internal.capture_check_columns(regclass, text[], boolean),
                          kafka_internal.raise_error(text, text[])
    TO kafka_admin;
COMMENT ON FUNCTION kafka.waiting(text, bigint) IS 'Lists the messages waiting for Kafka, in the order they will be sent';

-- WAL capture: kafka.capture(..., method => 'wal'), decoded by the worker with pg_kafka's own output
-- plugin (src/decoding). Existing captures keep method 'trigger'.
ALTER TABLE kafka.capture_config
    ADD COLUMN method text NOT NULL DEFAULT 'trigger' CHECK (method IN ('trigger', 'wal'));
ALTER TABLE kafka.capture_config SET (user_catalog_table = true);

-- WAL capture of a transaction streamed before it committed: its packs are staged as they were
-- compressed while it was written, with what fills their events' commit marks.
ALTER TABLE kafka.outbox ADD COLUMN commit_marks bigint[];

CREATE TABLE kafka.wal_position (
    slot_name name PRIMARY KEY,
    staged_end bigint NOT NULL,
    last_commit_end bigint NOT NULL,
    updated_at timestamptz NOT NULL,
    -- when the worker found the slot gone under a wal capture (a failover) and made it again:
    -- changes committed before were not captured (kafka.status.wal_slot_lost_at until backfilled)
    slot_lost_at timestamptz
);
REVOKE ALL ON kafka.wal_position FROM PUBLIC;
GRANT SELECT ON kafka.wal_position TO kafka_admin;

CREATE  FUNCTION kafka_internal."wal_prepare"(
	"table" oid /* pg_sys :: Oid */
) RETURNS VOID /* SqlResult < () > */
STRICT VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wal_prepare_wrapper';

CREATE  FUNCTION kafka_internal."wal_invalidate"(
	"table" oid /* pg_sys :: Oid */
) RETURNS void
STRICT VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wal_invalidate_wrapper';

CREATE OR REPLACE VIEW kafka.captures AS
SELECT relid::regclass AS "table", kind, topic, kafka_internal.capture_names(relid, key_attnums) AS key_columns,
       kafka_internal.capture_names(relid, exclude_attnums) AS exclude_columns, emit_before, tombstones,
       delete_after_queue, created_at, schemas, method
FROM kafka.capture_config;


CREATE OR REPLACE VIEW kafka.status AS
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
       w.previous_error_at,
       s.slot_name AS wal_slot,
       CASE WHEN NOT pg_catalog.pg_is_in_recovery() THEN
           (pg_catalog.pg_current_wal_lsn() OPERATOR(pg_catalog.-) s.confirmed_flush_lsn)::bigint END AS wal_lag_bytes,
       CASE WHEN NOT pg_catalog.pg_is_in_recovery() THEN
           (pg_catalog.pg_current_wal_lsn() OPERATOR(pg_catalog.-) s.restart_lsn)::bigint END AS wal_retained_bytes,
       -- the slot was lost (a failover) and made again, and a wal-captured table was not backfilled since
       (SELECT p.slot_lost_at FROM kafka.wal_position p
         WHERE p.slot_lost_at IS NOT NULL
           AND EXISTS (SELECT FROM kafka.capture_config c
                        WHERE c.method OPERATOR(pg_catalog.=) 'wal'
                          AND NOT EXISTS (SELECT FROM kafka.backfill_progress b
                                           WHERE b.relid OPERATOR(pg_catalog.=) c.relid::pg_catalog.oid
                                             AND b.finished_at OPERATOR(pg_catalog.>) p.slot_lost_at))
         ORDER BY p.slot_lost_at DESC LIMIT 1) AS wal_slot_lost_at
FROM kafka_internal.worker_state() w
LEFT JOIN pg_catalog.pg_replication_slots s
       ON s.slot_name OPERATOR(pg_catalog.=) ('pg_kafka_' OPERATOR(pg_catalog.||)
          (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()))::name;

COMMENT ON VIEW kafka.status IS 'The delivery worker: running, backlog, delivered, current and previous failure; WAL capture''s slot, its lag and retained WAL';

DROP FUNCTION kafka.capture(regclass, text, text[], text[], boolean, boolean, boolean);
CREATE FUNCTION kafka.capture(
    "table" regclass,
    topic text DEFAULT NULL,
    key_columns text[] DEFAULT NULL,
    exclude_columns text[] DEFAULT '{}',
    emit_before boolean DEFAULT true,
    tombstones boolean DEFAULT true,
    schemas boolean DEFAULT false,
    method text DEFAULT 'trigger'
) RETURNS kafka.captures
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c pg_class;
    nsp text;
    keys text[];
    result kafka.captures;
BEGIN
    PERFORM kafka_internal.check_served();  -- events queued where no worker delivers would wait forever
    IF method IS NULL OR method NOT IN ('trigger', 'wal') THEN
        PERFORM kafka_internal.raise_error('BadCaptureMethod', coalesce(method, 'NULL'));
    END IF;
    SELECT * INTO c FROM pg_class WHERE oid = "table";
    nsp := (SELECT nspname FROM pg_namespace WHERE oid = c.relnamespace);
    IF c.relkind IN ('r', 'p') AND c.relpersistence = 't' THEN
        PERFORM kafka_internal.raise_error('TemporaryTable', "table"::text);
    END IF;
    PERFORM kafka_internal.capture_check_table("table");
    keys := coalesce(key_columns, (
        SELECT array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum))
          FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
         WHERE i.indrelid = "table" AND i.indisprimary));
    IF keys IS NULL OR cardinality(keys) = 0 THEN
        PERFORM kafka_internal.raise_error('NoPrimaryKey', "table"::text);
    END IF;
    PERFORM kafka_internal.capture_check_columns("table", keys || exclude_columns, outbox => false);
    IF keys && exclude_columns THEN
        PERFORM kafka_internal.raise_error('KeyExcluded');
    END IF;
    IF c.relpersistence = 'u' THEN
        RAISE NOTICE '% is unlogged: its change events are durable, but after a crash the table is empty', "table";
    END IF;
    topic := coalesce(topic, current_database() || '.' || nsp || '.' || c.relname);
    PERFORM kafka_internal.check_topic(topic);
    IF method = 'wal' THEN
        -- before anything is written: the first WAL capture makes the replication slot
        PERFORM kafka_internal.wal_prepare("table");
        IF c.relreplident = 'f' THEN
            NULL;
        ELSIF c.relreplident = 'n' THEN
            RAISE NOTICE '% has REPLICA IDENTITY NOTHING: the WAL holds no old rows, so its UPDATE events have "before": null and its DELETEs cannot be captured', "table"
                  USING HINT = format('ALTER TABLE %s REPLICA IDENTITY FULL', "table");
        ELSE
            RAISE NOTICE 'with REPLICA IDENTITY %, the WAL holds only the key of old rows: "before" of UPDATE events is null and that of DELETE events holds only the key; unchanged TOASTed values are "__debezium_unavailable_value"',
                  CASE c.relreplident WHEN 'i' THEN 'USING INDEX' ELSE 'DEFAULT' END
                  USING HINT = format('For whole old rows, as the trigger method gives: ALTER TABLE %s REPLICA IDENTITY FULL', "table");
        END IF;
    END IF;
    INSERT INTO kafka.capture_config (relid, table_name, kind, topic, key_attnums, exclude_attnums, emit_before,
                                      tombstones, schemas, method)
    VALUES ("table", "table"::text, 'table', topic, kafka_internal.capture_attnums("table", keys),
            kafka_internal.capture_attnums("table", exclude_columns), emit_before, tombstones, schemas, method);
    IF method = 'trigger' THEN
        PERFORM kafka_internal.capture_triggers("table");
    END IF;
    SELECT * INTO result FROM kafka.captures k WHERE k."table" = capture."table";
    RETURN result;
END $$;

CREATE OR REPLACE FUNCTION kafka.uncapture("table" regclass) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM kafka.capture_config WHERE relid = "table") THEN
        RETURN false;
    END IF;
    PERFORM kafka_internal.drop_capture_trigger("table", t.tgname) FROM pg_trigger t
     WHERE t.tgrelid = "table" AND t.tgname LIKE 'kafka\_capture\_%';
    IF (SELECT c.method FROM kafka.capture_config c WHERE c.relid = "table") = 'wal' THEN
        PERFORM kafka_internal.wal_invalidate("table");  -- decoding stops at this commit
    END IF;
    DELETE FROM kafka.capture_config WHERE relid = "table";
    DELETE FROM kafka.backfill_progress WHERE relid = "table";
    RETURN true;
END $$;

CREATE OR REPLACE FUNCTION kafka_internal.backfill_query(relid oid, chunk_size integer) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $body$
DECLARE
    keys text[];
    keys_list text;
    after_list text;
    first boolean;
    r text := 'r';  -- the rows' alias: `SELECT r FROM t r` is the whole row only if no column is named r
    lock text;
BEGIN
    -- WAL capture: the chunk's rows are locked until the backfill's commit, so a change to one of
    -- them commits (and is decoded) after the chunk's "r" events, never between its read and them
    SELECT kafka_internal.capture_names(c.relid, c.key_attnums), CASE c.method WHEN 'wal' THEN ' FOR SHARE' ELSE '' END
      INTO STRICT keys, lock
      FROM kafka.capture_config c WHERE c.relid = backfill_query.relid AND c.kind = 'table';
    SELECT p.last_key IS NULL INTO STRICT first FROM kafka.backfill_progress p WHERE p.relid = backfill_query.relid;
    WHILE EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = backfill_query.relid AND a.attname = r) LOOP
        r := r || '_';
    END LOOP;
    SELECT string_agg(format('%I.%I', r, k), ', ' ORDER BY o),
           string_agg(format('$1[%s]::%s', o, format_type(a.atttypid, a.atttypmod)), ', ' ORDER BY o)
      INTO keys_list, after_list
      FROM unnest(keys) WITH ORDINALITY u(k, o)
      JOIN pg_attribute a ON a.attrelid = backfill_query.relid AND a.attname = u.k;
    RETURN format($q$
        SELECT c.a, (SELECT ARRAY[%5$s] FROM (SELECT (c.a[cardinality(c.a)]).*) n)
          FROM (SELECT ARRAY(SELECT %6$I FROM %1$s %6$I %2$s ORDER BY %3$s LIMIT %4$s%7$s) AS a) c$q$,
        relid::regclass,
        CASE WHEN first THEN '' ELSE format('WHERE (%s) > (%s)', keys_list, after_list) END,
        keys_list, chunk_size,
        (SELECT string_agg(format('n.%I::text', k), ', ') FROM unnest(keys) k),
        r, lock);
END $body$;

REVOKE EXECUTE ON FUNCTION kafka.capture(regclass, text, text[], text[], boolean, boolean, boolean, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION kafka_internal.wal_prepare(oid), kafka_internal.wal_invalidate(oid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION kafka.capture(regclass, text, text[], text[], boolean, boolean, boolean, text),
                          kafka_internal.wal_prepare(oid), kafka_internal.wal_invalidate(oid)
    TO kafka_admin;
COMMENT ON FUNCTION kafka.capture(regclass, text, text[], text[], boolean, boolean, boolean, text) IS 'Starts emitting Debezium-shaped change events of a table (method trigger or wal)';

-- Several databases: every served database's worker at a glance.
CREATE  FUNCTION kafka_internal."databases"() RETURNS TABLE (
	"database" TEXT,  /* String */
	"worker_running" bool,  /* bool */
	"worker_pid" INT,  /* Option < i32 > */
	"worker_started_at" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"delivery" TEXT,  /* Option < & '_ str > */
	"backlog" bigint,  /* Option < i64 > */
	"backlog_at" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"delivered" bigint,  /* i64 */
	"dead_lettered" bigint,  /* i64 */
	"last_delivery_at" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"last_error" TEXT,  /* Option < String > */
	"last_error_at" timestamp with time zone  /* Option < TimestampWithTimeZone > */
)
STRICT VOLATILE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'databases_wrapper';
REVOKE EXECUTE ON FUNCTION kafka_internal.databases() FROM PUBLIC;

CREATE VIEW kafka.databases AS
SELECT d.database, d.worker_running, d.worker_pid, d.worker_started_at, d.delivery, d.backlog,
       d.backlog_at, d.delivered, d.dead_lettered, d.last_delivery_at, d.last_error, d.last_error_at
FROM kafka_internal.databases() d;
REVOKE ALL ON kafka.databases FROM PUBLIC;
GRANT SELECT ON kafka.databases TO kafka_admin, pg_monitor;
GRANT EXECUTE ON FUNCTION kafka_internal.databases() TO kafka_admin, pg_monitor;
COMMENT ON VIEW kafka.databases IS 'Every served database of the cluster: its worker, backlog (as last counted), deliveries and current failure';
