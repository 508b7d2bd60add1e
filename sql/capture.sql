-- pg_kafka row-change capture: Debezium-compatible change events for INSERT, UPDATE, DELETE and
-- TRUNCATE. A captured table gets statement-level triggers over transition tables that call
-- kafka_internal.capture_changes() (native, src/backend/capture/mod.rs): it encodes every row's event and adds it to
-- the transaction's pending messages, so events are sent only on commit, in order.
-- Values follow Debezium's default mappings except decimal.handling.mode, which is "string" here
-- (exact and readable). See docs/capture.md's type table.

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
    exclude_names text[],
    -- 'trigger': statement triggers encode events in the writing session; 'wal': the worker
    -- decodes them from the WAL (src/decoding)
    method text NOT NULL DEFAULT 'trigger' CHECK (method IN ('trigger', 'wal'))
);
-- WAL capture reads this table while it decodes, as of each change's place in the WAL: logical
-- decoding keeps the old versions of a user catalog table's rows for that.
ALTER TABLE kafka.capture_config SET (user_catalog_table = true);

-- Where WAL capture is (src/store/wal.rs): the end LSN of the last decoded transaction whose
-- events are in the outbox, written with them; and of the last with captured events (Debezium's
-- source.sequence). The slot never passes a transaction that is not staged.
CREATE TABLE kafka.wal_position (
    slot_name name PRIMARY KEY,
    staged_end bigint NOT NULL,
    last_commit_end bigint NOT NULL,
    updated_at timestamptz NOT NULL,
    -- when the worker found the slot gone under a wal capture (a failover) and made it again:
    -- changes committed before were not captured (kafka.status.wal_slot_lost_at until backfilled)
    slot_lost_at timestamptz
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
       delete_after_queue, created_at, schemas, method
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
-- captured; and named columns that exist (the key and excluded columns, or an outbox table's).
CREATE FUNCTION kafka_internal.capture_check_table("table" regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = "table") NOT IN ('r', 'p') THEN
        PERFORM kafka_internal.raise_error('NotATable', "table"::text);
    END IF;
    IF EXISTS (SELECT FROM kafka.capture_config WHERE relid = "table") THEN
        PERFORM kafka_internal.raise_error('AlreadyCaptured', "table"::text);
    END IF;
END $$;

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

-- Starts capturing a table: every committed INSERT, UPDATE, DELETE and TRUNCATE becomes a
-- Debezium-shaped change event on `topic`.
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
    IF (SELECT c.method FROM kafka.capture_config c WHERE c.relid = "table") = 'wal' THEN
        PERFORM kafka_internal.wal_invalidate("table");  -- decoding stops at this commit
    END IF;
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
        PERFORM kafka_internal.raise_error('BackfillProgressDenied', r.relid::regclass::text);
    END IF;
    RETURN r;
END $$;

CREATE TRIGGER backfill_progress_check BEFORE INSERT OR UPDATE OR DELETE ON kafka.backfill_progress
    FOR EACH ROW EXECUTE FUNCTION kafka_internal.backfill_progress_check();

CREATE VIEW kafka.backfills AS
SELECT relid::regclass AS "table", rows_done, last_key, started_at, updated_at, finished_at
FROM kafka.backfill_progress;

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

-- Whether schema kafka is owned by a superuser. The event triggers below run as the extension's
-- owner and reach kafka.capture_config by name: in a schema another role owns (or put in the
-- place of the extension's after renaming it) a look-alike table's triggers would run with those
-- rights, so they do nothing then, and say why. (CREATE EXTENSION refuses such a schema:
-- sql/tables.sql.)
CREATE FUNCTION kafka_internal.schema_trusted() RETURNS boolean
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
CREATE FUNCTION kafka_internal.capture_ddl() RETURNS event_trigger
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

CREATE FUNCTION kafka_internal.capture_dropped() RETURNS event_trigger
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

CREATE EVENT TRIGGER kafka_capture_ddl ON ddl_command_end WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION kafka_internal.capture_ddl();
-- Every command that can drop a table: DROP TABLE, DROP SCHEMA ... CASCADE, DROP OWNED BY.
CREATE EVENT TRIGGER kafka_capture_dropped ON sql_drop
    EXECUTE FUNCTION kafka_internal.capture_dropped();
