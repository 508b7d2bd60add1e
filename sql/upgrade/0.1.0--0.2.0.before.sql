-- pg_kafka 0.1.0 -> 0.2.0, first part (scripts/upgrade-sql joins it with 0.2.0's install script
-- and the last part into sql/kafka--0.1.0--0.2.0.sql).
--
-- 0.2.0 stores messages differently (packs in commit order, src/pack.rs), so this upgrade
-- rebuilds the extension's objects: the data of 0.1.0's tables is set aside in schema
-- kafka_upgrade, every other object of the extension is dropped (with the capture triggers on
-- users' tables, which refer to its functions), 0.2.0's objects are created by its install
-- script, and the last part puts the data back, queues 0.1.0's waiting messages again in their
-- order, and re-creates the capture triggers. It all happens in ALTER EXTENSION's transaction:
-- a failure leaves 0.1.0 as it was.

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
    -- Functions (and what refers to them: views, triggers, users' capture triggers).
    FOR r IN SELECT p.oid::regprocedure AS f, p.prokind FROM pg_catalog.pg_proc p
              WHERE p.pronamespace = 'kafka'::regnamespace
    LOOP
        EXECUTE format('DROP %s IF EXISTS %s CASCADE', CASE r.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END, r.f);
    END LOOP;
    FOR r IN SELECT c.oid::regclass AS rel, c.relkind FROM pg_catalog.pg_class c
              WHERE c.relnamespace = 'kafka'::regnamespace AND c.relkind IN ('v', 'r', 'S')
    LOOP
        EXECUTE format('DROP %s IF EXISTS %s CASCADE',
                       CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'r' THEN 'TABLE' ELSE 'SEQUENCE' END, r.rel);
    END LOOP;
END $$;

-- ---- pg_kafka 0.2.0's install script ----
