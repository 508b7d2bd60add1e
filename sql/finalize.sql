-- pg_kafka: broker checks, the status view and privileges. Runs after every function exists.

CREATE FUNCTION kafka.broker_check() RETURNS trigger
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
    FOR EACH ROW EXECUTE FUNCTION kafka.broker_check();
CREATE TRIGGER broker_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON kafka.broker
    FOR EACH STATEMENT EXECUTE FUNCTION kafka.broker_changed();

-- One row: is the worker running, how much waits, what was delivered, what went wrong last.
CREATE VIEW kafka.status AS
SELECT w.running AS worker_running,
       w.pid AS worker_pid,
       w.started_at AS worker_started_at,
       (SELECT pg_catalog.count(*) FROM kafka.outbox) AS backlog,
       (SELECT pg_catalog.now() - o.produced_at FROM kafka.outbox o ORDER BY o.id LIMIT 1) AS oldest_age,
       w.delivered,
       w.dead_lettered,
       (SELECT pg_catalog.count(*) FROM kafka.dead_letter) AS dead_letters,
       w.last_delivery_at,
       w.last_error,
       w.last_error_at
FROM kafka.worker_state() w;

-- Nothing here is for PUBLIC: produce() reaches the network through the worker.
REVOKE ALL ON ALL TABLES IN SCHEMA kafka FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA kafka FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA kafka FROM PUBLIC;
GRANT SELECT ON kafka.status TO pg_monitor;
GRANT EXECUTE ON FUNCTION kafka.worker_state() TO pg_monitor;
