-- pg_kafka row-change capture: Debezium-compatible change events for INSERT, UPDATE, DELETE and
-- TRUNCATE, written to kafka.outbox by statement-level triggers over transition tables (one
-- set-based INSERT per statement, in the statement's transaction: sent only on commit, in order).
--
-- kafka.capture() generates, per captured table, a trigger function with static SQL (so its plans
-- are cached per session) from the column types, following Debezium's default mappings except
-- decimal.handling.mode, which is "string" here (exact and readable). See the README's table.

CREATE TABLE kafka.capture_config (
    relid oid PRIMARY KEY,
    table_name text NOT NULL,          -- schema-qualified, as given
    kind text NOT NULL CHECK (kind IN ('table', 'outbox')),
    topic text NOT NULL,               -- for kind 'outbox': a pattern with %s for aggregatetype
    key_columns text[],
    exclude_columns text[] NOT NULL DEFAULT '{}',
    emit_before boolean NOT NULL DEFAULT true,
    tombstones boolean NOT NULL DEFAULT true,
    delete_after_queue boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);

-- The JSON (as text) of one column value the way Debezium's JSON converter writes it.
CREATE FUNCTION kafka.debezium_value(expr text, typ oid, typmod integer) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t pg_type;
    elem text;
BEGIN
    SELECT * INTO t FROM pg_type WHERE oid = typ;
    IF t.typtype = 'd' THEN
        RETURN kafka.debezium_value(expr, t.typbasetype, t.typtypmod);
    END IF;
    IF t.typcategory = 'A' AND t.typelem <> 0 THEN
        elem := kafka.debezium_value('e', t.typelem, typmod);
        RETURN format('CASE WHEN %1$s IS NULL THEN NULL ELSE coalesce((SELECT json_agg((%2$s)::json) FROM unnest(%1$s) e), ''[]'')::text END', expr, elem);
    END IF;
    -- Each expression yields the value's JSON text (NULL for NULL). Only strings need escaping
    -- (to_json); numbers, booleans, dates and times are written directly, which is much faster.
    RETURN CASE
        WHEN typ IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype, 'oid'::regtype, 'bool'::regtype)
            THEN format('(%s)::text', expr)
        WHEN typ IN ('float4'::regtype, 'float8'::regtype) THEN format('to_json(%s)::text', expr)
        WHEN typ = 'numeric'::regtype THEN format($e$'"' || (%s)::text || '"'$e$, expr)
        WHEN typ = 'bytea'::regtype
            THEN format($e$'"' || translate(encode(%s, 'base64'), E'\n', '') || '"'$e$, expr)
        WHEN typ = 'date'::regtype THEN format($e$((%s) - DATE '1970-01-01')::text$e$, expr)
        WHEN typ = 'time'::regtype AND typmod BETWEEN 0 AND 3
            THEN format('((extract(epoch FROM %s) * 1000)::int)::text', expr)
        WHEN typ = 'time'::regtype THEN format('((extract(epoch FROM %s) * 1000000)::int8)::text', expr)
        WHEN typ = 'timetz'::regtype
            THEN format($e$'"' || rtrim(rtrim(to_char(DATE '2000-01-01' + ((%s) AT TIME ZONE 'UTC')::time, 'HH24:MI:SS.US'), '0'), '.') || 'Z"'$e$, expr)
        WHEN typ = 'timestamp'::regtype AND typmod BETWEEN 0 AND 3
            THEN format('((extract(epoch FROM %s) * 1000)::int8)::text', expr)
        WHEN typ = 'timestamp'::regtype THEN format('((extract(epoch FROM %s) * 1000000)::int8)::text', expr)
        WHEN typ = 'timestamptz'::regtype   -- independent of DateStyle
            THEN format($e$'"' || rtrim(rtrim(to_char((%s) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'), '0'), '.') || 'Z"'$e$, expr)
        WHEN typ = 'interval'::regtype
            THEN format('(((extract(year FROM %1$s) * 12 + extract(month FROM %1$s)) * 2629800000000'
                        ' + extract(day FROM %1$s) * 86400000000 + extract(hour FROM %1$s) * 3600000000'
                        ' + extract(minute FROM %1$s) * 60000000 + extract(microseconds FROM %1$s))::int8)::text', expr)
        WHEN typ = 'uuid'::regtype THEN format($e$'"' || (%s)::text || '"'$e$, expr)
        WHEN t.typcategory IN ('S', 'E')
            THEN format('to_json(%s)::text', expr)      -- text, varchar, char (padded), enums
        ELSE format('to_json(%s::text)::text', expr)     -- json and jsonb as strings, and everything else
    END;
END $$;

-- JSON object text of the given columns of row alias `r`, in column order.
CREATE FUNCTION kafka.debezium_row(relid oid, cols text[], r text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT '''{'' || ' || coalesce(string_agg(
               format('%L || coalesce(%s, ''null'')', to_json(a.attname::text)::text || ':',
                      kafka.debezium_value(format('%s.%I', r, a.attname), a.atttypid, a.atttypmod)),
               ' || '','' || ' ORDER BY a.attnum), '''''') || ' || ''}'''
    FROM pg_attribute a
    WHERE a.attrelid = relid AND a.attnum > 0 AND NOT a.attisdropped AND a.attname = ANY (cols)
$$;

-- (Re)creates the trigger function of one captured table from its row in kafka.capture_config.
-- Runs as the extension's owner (it creates a function in schema kafka); the triggers that use
-- the function are created by the caller of capture(), so PostgreSQL checks their privileges.
CREATE FUNCTION kafka.capture_function(relid oid) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
DECLARE
    cfg kafka.capture_config;
    fn text := format('kafka.%I', 'capture_' || relid);
    nsp text;
    tbl text;
    cols text[];
    key_expr_new text;
    key_expr_old text;
    after_new text;
    before_old text;
    source text;
    ins text; upd text; del text; trunc text;
    body text;
BEGIN
    SELECT * INTO cfg FROM kafka.capture_config c WHERE c.relid = capture_function.relid;
    IF NOT FOUND THEN
        EXECUTE format('DROP FUNCTION IF EXISTS %s()', fn);
        RETURN NULL;
    END IF;
    SELECT n.nspname, c.relname INTO nsp, tbl
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = cfg.relid;
    IF cfg.kind = 'outbox' THEN
        -- Debezium's Outbox Event Router: topic from aggregatetype, key aggregateid, value payload,
        -- headers id and type.
        ins := format($q$
            INSERT INTO kafka.outbox (id, topic, key, payload, headers)
            SELECT nextval('kafka.outbox_id_seq'), replace(%1$L, '%%s', n.aggregatetype::text),
                   convert_to(n.aggregateid::text, 'UTF8'), convert_to(n.payload::text, 'UTF8'),
                   jsonb_build_array(jsonb_build_array('id', n.id::text), jsonb_build_array('type', n.type::text))
            FROM kafka_new n$q$, cfg.topic);
        IF cfg.delete_after_queue THEN
            ins := ins || format('; DELETE FROM %s t WHERE t.id IN (SELECT n.id FROM kafka_new n)', cfg.relid::regclass);
        END IF;
        EXECUTE format($f$
CREATE OR REPLACE FUNCTION %1$s() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    %2$s;
    PERFORM kafka.wake_at_commit();
    RETURN NULL;
END $fn$;
REVOKE ALL ON FUNCTION %1$s() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION %1$s() TO kafka_admin;
$f$, fn, ins);
        RETURN fn;
    END IF;
    SELECT array_agg(attname::text ORDER BY attnum) INTO cols FROM pg_attribute
     WHERE attrelid = cfg.relid AND attnum > 0 AND NOT attisdropped AND attname <> ALL (cfg.exclude_columns);
    key_expr_new := kafka.debezium_row(cfg.relid, cfg.key_columns, 'n');
    key_expr_old := kafka.debezium_row(cfg.relid, cfg.key_columns, 'o');
    after_new := kafka.debezium_row(cfg.relid, cols, 'n');
    before_old := CASE WHEN cfg.emit_before THEN kafka.debezium_row(cfg.relid, cols, 'o') ELSE '''null''' END;
    -- source: computed once per statement by the trigger function, passed in as src.
    source := format(
        $f$'{"version":"pg_kafka-0.1.0","connector":"postgresql","name":' || to_json(current_database())::text
        || ',"ts_ms":' || (extract(epoch FROM statement_timestamp()) * 1000)::int8
        || ',"snapshot":"' || snap || '","db":' || to_json(current_database())::text
        || ',"sequence":null,"schema":%s,"table":%s,"txId":' || txid_current() || ',"lsn":null,"xmin":null}'$f$,
        to_json(nsp)::text, to_json(tbl)::text);

    -- Events are ordered by (row number, part): part 1 the event, part 2 its tombstone.
    ins := format($q$
        INSERT INTO kafka.outbox (id, topic, key, payload)
        SELECT nextval('kafka.outbox_id_seq'), %1$L, convert_to(k, 'UTF8'), convert_to(v, 'UTF8') FROM (
          SELECT %2$s AS k,
                 '{"before":null,"after":' || %3$s || ',"source":' || src || ',"op":"' || op || '","ts_ms":' || now_ms || '}' AS v
          FROM kafka_new n) e$q$, cfg.topic, key_expr_new, after_new);
    upd := format($q$
        INSERT INTO kafka.outbox (id, topic, key, payload)
        SELECT nextval('kafka.outbox_id_seq'), %1$L, convert_to(k, 'UTF8'), convert_to(v, 'UTF8') FROM (
          SELECT ev.k, ev.v FROM (
            SELECT row_number() OVER () AS rn, o.* FROM kafka_old o) o
          JOIN (SELECT row_number() OVER () AS rn, n.* FROM kafka_new n) n USING (rn)
          CROSS JOIN LATERAL (
            SELECT %2$s AS kn, %3$s AS ko, %4$s AS an, %5$s AS bo) j
          CROSS JOIN LATERAL (VALUES
            -- the key did not change: one update event
            (1, j.kn, CASE WHEN j.kn = j.ko THEN
                '{"before":' || j.bo || ',"after":' || j.an || ',"source":' || src || ',"op":"u","ts_ms":' || now_ms || '}' END),
            -- the key changed: a delete on the old key (and its tombstone), then a create on the new one
            (2, j.ko, CASE WHEN j.kn <> j.ko THEN
                '{"before":' || j.bo || ',"after":null,"source":' || src || ',"op":"d","ts_ms":' || now_ms || '}' END),
            (3, j.ko, NULL),
            (4, j.kn, CASE WHEN j.kn <> j.ko THEN
                '{"before":null,"after":' || j.an || ',"source":' || src || ',"op":"c","ts_ms":' || now_ms || '}' END)
          ) ev(part, k, v)
          WHERE ev.v IS NOT NULL OR (ev.part = 3 AND j.kn <> j.ko AND %6$L)
          ORDER BY o.rn, ev.part) e$q$,
        cfg.topic, key_expr_new, key_expr_old, after_new, before_old, cfg.tombstones);
    del := format($q$
        INSERT INTO kafka.outbox (id, topic, key, payload)
        SELECT nextval('kafka.outbox_id_seq'), %1$L, convert_to(k, 'UTF8'), convert_to(v, 'UTF8') FROM (
          SELECT j.k, ev.v FROM (SELECT row_number() OVER () AS rn, o.* FROM kafka_old o) o
          CROSS JOIN LATERAL (SELECT %2$s AS k, %3$s AS bo) j
          CROSS JOIN LATERAL (VALUES
            (1, '{"before":' || j.bo || ',"after":null,"source":' || src || ',"op":"d","ts_ms":' || now_ms || '}'),
            (2, NULL)) ev(part, v)
          WHERE ev.part = 1 OR %4$L
          ORDER BY o.rn, ev.part) e$q$,
        cfg.topic, key_expr_old, before_old, cfg.tombstones);
    trunc := format($q$
        INSERT INTO kafka.outbox (id, topic, key, payload)
        VALUES (nextval('kafka.outbox_id_seq'), %1$L, NULL, convert_to(
          '{"before":null,"after":null,"source":' || src || ',"op":"t","ts_ms":' || now_ms || '}', 'UTF8'))$q$,
        cfg.topic);

    body := format($f$
CREATE OR REPLACE FUNCTION %1$s() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    snap text := 'false';
    op text := 'c';
    src text;
    now_ms int8 := (extract(epoch FROM clock_timestamp()) * 1000)::int8;
BEGIN
    src := %2$s;
    IF TG_OP = 'INSERT' THEN %3$s;
    ELSIF TG_OP = 'UPDATE' THEN %4$s;
    ELSIF TG_OP = 'DELETE' THEN %5$s;
    ELSE %6$s;
    END IF;
    PERFORM kafka.wake_at_commit();
    RETURN NULL;
END $fn$;
REVOKE ALL ON FUNCTION %1$s() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION %1$s() TO kafka_admin;
$f$, fn, source, ins, upd, del, trunc);
    EXECUTE body;
    RETURN fn;
END $body$;

-- Creates the triggers of a captured table (as the caller: PostgreSQL checks its privileges).
CREATE FUNCTION kafka.capture_triggers(relid oid, fn text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $body$
DECLARE
    rel text := relid::regclass::text;
BEGIN
    IF (SELECT kind FROM kafka.capture_config c WHERE c.relid = capture_triggers.relid) = 'outbox' THEN
        EXECUTE format('CREATE TRIGGER kafka_capture_outbox AFTER INSERT ON %s REFERENCING NEW TABLE AS kafka_new '
                       'FOR EACH STATEMENT EXECUTE FUNCTION %s()', rel, fn);
        RETURN;
    END IF;
    EXECUTE format('CREATE TRIGGER kafka_capture_insert AFTER INSERT ON %s REFERENCING NEW TABLE AS kafka_new '
                   'FOR EACH STATEMENT EXECUTE FUNCTION %s()', rel, fn);
    EXECUTE format('CREATE TRIGGER kafka_capture_update AFTER UPDATE ON %s REFERENCING OLD TABLE AS kafka_old '
                   'NEW TABLE AS kafka_new FOR EACH STATEMENT EXECUTE FUNCTION %s()', rel, fn);
    EXECUTE format('CREATE TRIGGER kafka_capture_delete AFTER DELETE ON %s REFERENCING OLD TABLE AS kafka_old '
                   'FOR EACH STATEMENT EXECUTE FUNCTION %s()', rel, fn);
    EXECUTE format('CREATE TRIGGER kafka_capture_truncate AFTER TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION %s()', rel, fn);
END $body$;

-- Checks shared by capture() and capture_outbox(): an ordinary or partitioned table, not yet
-- captured; and named columns that exist.
CREATE FUNCTION kafka.capture_check_table("table" regclass) RETURNS void
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

CREATE FUNCTION kafka.capture_check_columns("table" regclass, columns text[], hint text) RETURNS void
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
    tombstones boolean DEFAULT true
) RETURNS kafka.capture_config
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c pg_class;
    nsp text;
    keys text[];
    cfg kafka.capture_config;
BEGIN
    SELECT * INTO c FROM pg_class WHERE oid = "table";
    nsp := (SELECT nspname FROM pg_namespace WHERE oid = c.relnamespace);
    IF c.relkind IN ('r', 'p') AND c.relpersistence = 't' THEN
        RAISE EXCEPTION '% is a temporary table', "table" USING ERRCODE = '0A000',
            HINT = 'Temporary tables live in one session only; capture a permanent table.';
    END IF;
    PERFORM kafka.capture_check_table("table");
    keys := coalesce(key_columns, (
        SELECT array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum))
          FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
         WHERE i.indrelid = "table" AND i.indisprimary));
    IF keys IS NULL OR cardinality(keys) = 0 THEN
        RAISE EXCEPTION '% has no primary key', "table" USING ERRCODE = '55000',
            HINT = 'Add a primary key, or name the key columns: kafka.capture(''t'', key_columns => ARRAY[''id'']).';
    END IF;
    PERFORM kafka.capture_check_columns("table", keys || exclude_columns,
                                        'Name existing columns in key_columns and exclude_columns.');
    IF keys && exclude_columns THEN
        RAISE EXCEPTION 'key columns cannot be excluded' USING ERRCODE = '22023',
            HINT = 'Leave key columns out of exclude_columns.';
    END IF;
    IF c.relpersistence = 'u' THEN
        RAISE NOTICE '% is unlogged: its change events are durable, but after a crash the table is empty', "table";
    END IF;
    topic := coalesce(topic, current_database() || '.' || nsp || '.' || c.relname);
    PERFORM kafka.check_topic(topic);
    INSERT INTO kafka.capture_config (relid, table_name, kind, topic, key_columns, exclude_columns, emit_before, tombstones)
    VALUES ("table", "table"::text, 'table', topic, keys, exclude_columns, emit_before, tombstones)
    RETURNING * INTO cfg;
    PERFORM kafka.capture_triggers(cfg.relid, kafka.capture_function(cfg.relid));
    RETURN cfg;
END $$;

CREATE FUNCTION kafka.drop_capture_trigger(rel regclass, name name) RETURNS void
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
    PERFORM kafka.drop_capture_trigger("table", t.tgname) FROM pg_trigger t
     WHERE t.tgrelid = "table" AND t.tgname LIKE 'kafka\_capture\_%';
    DELETE FROM kafka.capture_config WHERE relid = "table";
    DELETE FROM kafka.backfill_progress WHERE relid = "table";
    PERFORM kafka.capture_function("table"::oid);  -- without its row: drops the function
    RETURN true;
END $$;

-- Captured tables and their options.
CREATE VIEW kafka.captures AS
SELECT relid::regclass AS "table", kind, topic, key_columns, exclude_columns, emit_before, tombstones,
       delete_after_queue, created_at
FROM kafka.capture_config;

-- Relays a user's own outbox table (Debezium's outbox pattern: id uuid, aggregatetype text,
-- aggregateid text, type text, payload jsonb): each inserted row becomes one message on
-- topic_pattern with %s replaced by aggregatetype, key aggregateid, value payload, headers id, type.
CREATE FUNCTION kafka.capture_outbox(
    "table" regclass,
    topic_pattern text DEFAULT 'outbox.event.%s',
    delete_after_queue boolean DEFAULT false
) RETURNS kafka.capture_config
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cfg kafka.capture_config;
BEGIN
    PERFORM kafka.capture_check_table("table");
    PERFORM kafka.capture_check_columns("table", ARRAY['id', 'aggregatetype', 'aggregateid', 'type', 'payload'],
                                        'An outbox table has columns id, aggregatetype, aggregateid, type and payload.');
    IF strpos(topic_pattern, '%s') = 0 THEN
        PERFORM kafka.check_topic(topic_pattern);
    ELSE
        PERFORM kafka.check_topic(replace(topic_pattern, '%s', 'x'));
    END IF;
    INSERT INTO kafka.capture_config (relid, table_name, kind, topic, delete_after_queue)
    VALUES ("table", "table"::text, 'outbox', topic_pattern, delete_after_queue)
    RETURNING * INTO cfg;
    PERFORM kafka.capture_triggers(cfg.relid, kafka.capture_function(cfg.relid));
    RETURN cfg;
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

CREATE VIEW kafka.backfills AS
SELECT relid::regclass AS "table", rows_done, last_key, started_at, updated_at, finished_at
FROM kafka.backfill_progress;

-- One chunk of a backfill: the next `chunk_size` rows after the recorded key (in key order) as
-- op "r" events; records the progress. Returns how many rows it queued (0: done).
CREATE FUNCTION kafka.backfill_chunk(relid oid, chunk_size integer) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
DECLARE
    cfg kafka.capture_config;
    cols text[];
    keys_list text;
    after_list text;
    nsp text; tbl text;
    after text[];
    last text[];
    n bigint;
BEGIN
    SELECT * INTO STRICT cfg FROM kafka.capture_config c WHERE c.relid = backfill_chunk.relid AND c.kind = 'table';
    SELECT p.last_key INTO STRICT after FROM kafka.backfill_progress p WHERE p.relid = backfill_chunk.relid;
    SELECT nspname, relname INTO nsp, tbl FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
     WHERE c.oid = cfg.relid;
    SELECT array_agg(attname::text ORDER BY attnum) INTO cols FROM pg_attribute
     WHERE attrelid = cfg.relid AND attnum > 0 AND NOT attisdropped AND attname <> ALL (cfg.exclude_columns);
    SELECT string_agg(format('n.%I', k), ', ' ORDER BY o),
           string_agg(format('$1[%s]::%s', o, format_type(a.atttypid, a.atttypmod)), ', ' ORDER BY o)
      INTO keys_list, after_list
      FROM unnest(cfg.key_columns) WITH ORDINALITY u(k, o)
      JOIN pg_attribute a ON a.attrelid = cfg.relid AND a.attname = u.k;
    EXECUTE format($q$
        WITH chunk AS MATERIALIZED (
            SELECT * FROM %1$s n %2$s ORDER BY %3$s LIMIT %4$s),
        queued AS (
            INSERT INTO kafka.outbox (id, topic, key, payload)
            SELECT nextval('kafka.outbox_id_seq'), %5$L, convert_to(%6$s, 'UTF8'),
                   convert_to('{"before":null,"after":' || %7$s || ',"source":{"version":"pg_kafka-0.1.0","connector":"postgresql","name":'
                              || to_json(current_database())::text || ',"ts_ms":' || (extract(epoch FROM statement_timestamp()) * 1000)::int8
                              || ',"snapshot":"true","db":' || to_json(current_database())::text || ',"sequence":null,"schema":'
                              || %8$L || ',"table":' || %9$L || ',"txId":' || txid_current() || ',"lsn":null,"xmin":null},"op":"r","ts_ms":'
                              || (extract(epoch FROM clock_timestamp()) * 1000)::int8 || '}', 'UTF8')
            FROM (SELECT * FROM chunk n ORDER BY %3$s) n
            RETURNING 1)
        SELECT (SELECT count(*) FROM queued),
               (SELECT ARRAY[%10$s] FROM chunk n ORDER BY %3$s DESC LIMIT 1)$q$,
        cfg.relid::regclass,
        CASE WHEN after IS NULL THEN '' ELSE format('WHERE (%s) > (%s)', keys_list, after_list) END,
        keys_list, chunk_size, cfg.topic,
        kafka.debezium_row(cfg.relid, cfg.key_columns, 'n'), kafka.debezium_row(cfg.relid, cols, 'n'),
        to_json(nsp)::text, to_json(tbl)::text,
        (SELECT string_agg(format('n.%I::text', k), ', ') FROM unnest(cfg.key_columns) k))
    INTO n, last USING after;
    IF n > 0 THEN
        UPDATE kafka.backfill_progress p SET last_key = last, rows_done = p.rows_done + n, updated_at = now()
         WHERE p.relid = backfill_chunk.relid;
        PERFORM kafka.wake_at_commit();
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
    IF NOT EXISTS (SELECT FROM kafka.capture_config WHERE relid = "table" AND kind = 'table') THEN
        RAISE EXCEPTION '% is not captured', "table" USING ERRCODE = '55000',
            HINT = 'Call kafka.capture() first: the backfill uses its topic, key and columns.';
    END IF;
    IF NOT pg_catalog.has_table_privilege("table", 'SELECT') THEN
        RAISE EXCEPTION 'permission denied for table %', "table" USING ERRCODE = '42501';
    END IF;
    IF chunk_size IS NULL OR chunk_size < 1 THEN
        RAISE EXCEPTION 'chunk_size must be positive' USING ERRCODE = '22023', HINT = 'e.g. chunk_size => 10000';
    END IF;
    SELECT * INTO p FROM kafka.backfill_progress WHERE relid = "table";
    IF NOT FOUND OR p.finished_at IS NOT NULL THEN
        DELETE FROM kafka.backfill_progress WHERE relid = "table";
        INSERT INTO kafka.backfill_progress (relid) VALUES ("table") RETURNING * INTO p;
        COMMIT;
    ELSE
        RAISE NOTICE 'resuming the backfill of % after % rows', "table", p.rows_done;
    END IF;
    LOOP
        EXIT WHEN kafka.backfill_chunk("table", chunk_size) = 0;
        COMMIT;
    END LOOP;
    UPDATE kafka.backfill_progress SET finished_at = pg_catalog.now(), updated_at = pg_catalog.now() WHERE relid = "table";
    COMMIT;
END $$;

-- Keeps captures in step with their tables: after ALTER TABLE the trigger function is generated
-- again (new columns appear in events, dropped ones leave them, nothing breaks the DML); after
-- DROP TABLE its configuration and function go too. Runs as the extension's owner.
CREATE FUNCTION kafka.capture_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM kafka.capture_function(c.relid)
       FROM kafka.capture_config c
      WHERE c.relid IN (SELECT d.objid FROM pg_event_trigger_ddl_commands() d
                         WHERE d.classid = 'pg_class'::regclass);
END $$;

CREATE FUNCTION kafka.capture_dropped() RETURNS event_trigger
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
        PERFORM kafka.capture_function(gone);  -- without its row: drops the function
    END LOOP;
END $$;

CREATE EVENT TRIGGER kafka_capture_ddl ON ddl_command_end WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION kafka.capture_ddl();
CREATE EVENT TRIGGER kafka_capture_dropped ON sql_drop WHEN TAG IN ('DROP TABLE')
    EXECUTE FUNCTION kafka.capture_dropped();
