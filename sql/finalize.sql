-- pg_kafka: broker checks, the status view and privileges. Runs after every function exists.

CREATE FUNCTION kafka_internal.broker_check() RETURNS trigger
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

-- Every served database of the cluster: its worker, backlog, deliveries and current failure (or
-- why no worker runs). The same rows in every database with the extension.
CREATE VIEW kafka.databases AS
SELECT d.database, d.worker_running, d.worker_pid, d.worker_started_at, d.delivery, d.backlog,
       d.backlog_at, d.delivered, d.dead_lettered, d.last_delivery_at, d.last_error, d.last_error_at
FROM kafka_internal.databases() d;

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
                          kafka.release(), kafka.dead_letter_waiting(bigint[], text), kafka.waiting(text, bigint)
    TO kafka_admin;

GRANT SELECT, INSERT, DELETE ON kafka.capture_config TO kafka_admin;
GRANT SELECT ON kafka.wal_position TO kafka_admin;
GRANT SELECT ON kafka.captures, kafka.backfills TO kafka_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON kafka.backfill_progress TO kafka_admin;
GRANT EXECUTE ON FUNCTION kafka.capture(regclass, text, text[], text[], boolean, boolean, boolean, text), kafka.uncapture(regclass),
                          kafka_internal.wal_prepare(oid), kafka_internal.wal_invalidate(oid),
                          kafka.capture_outbox(regclass, text, boolean), kafka_internal.capture_triggers(oid),
                          kafka_internal.capture_args(kafka.capture_config),
                          kafka_internal.capture_changes(), kafka_internal.capture_attnums(oid, text[]), kafka_internal.capture_names(oid, int2[]),
                          kafka_internal.capture_outbox_relay(), kafka_internal.check_topic(text), kafka_internal.check_capture_topic(text), kafka_internal.drop_capture_trigger(regclass, name),
                          kafka_internal.backfill_chunk(oid, integer), kafka_internal.backfill_query(oid, integer),
                          kafka_internal.backfill_events(oid, anyarray),
                          kafka_internal.capture_check_table(regclass),
                          kafka_internal.capture_check_columns(regclass, text[], boolean),
                          kafka_internal.raise_error(text, text[])
    TO kafka_admin;
GRANT EXECUTE ON PROCEDURE kafka.backfill(regclass, integer) TO kafka_admin;

GRANT SELECT ON kafka.status, kafka.topics, kafka.recent_errors TO pg_monitor;
GRANT SELECT ON kafka.databases TO kafka_admin, pg_monitor;
GRANT EXECUTE ON FUNCTION kafka_internal.databases() TO kafka_admin, pg_monitor;
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
COMMENT ON VIEW kafka.status IS 'The delivery worker: running, backlog, delivered, current and previous failure; WAL capture''s slot, its lag and retained WAL';
COMMENT ON VIEW kafka.databases IS 'Every served database of the cluster: its worker, backlog (as last counted), deliveries and current failure';
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
COMMENT ON FUNCTION kafka.waiting(text, bigint) IS 'Lists the messages waiting for Kafka, in the order they will be sent';
COMMENT ON FUNCTION kafka.purge_dead_letters(bigint[], text) IS 'Deletes dead letters (all, or by ids and/or topic)';
COMMENT ON FUNCTION kafka.capture(regclass, text, text[], text[], boolean, boolean, boolean, text) IS 'Starts emitting Debezium-shaped change events of a table (method trigger or wal)';
COMMENT ON FUNCTION kafka.capture_outbox(regclass, text, boolean) IS 'Relays a Debezium-style outbox table: each inserted row becomes a message';
COMMENT ON FUNCTION kafka.uncapture(regclass) IS 'Stops capturing a table';
COMMENT ON PROCEDURE kafka.backfill(regclass, integer) IS 'Emits a captured table''s current rows as snapshot events, chunk by chunk; resumable';
