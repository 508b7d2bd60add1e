-- Upgrades. An installation upgraded from each released version has exactly the schema of a
-- fresh install (every object of the extension: definitions, columns, indexes, triggers,
-- privileges, comments); the 0.1.0 -> 0.2.0 rebuild stops rather than drop what users built on
-- pg_kafka's objects.
\set VERBOSITY default
DROP VIEW queued;
DROP FUNCTION reset();
-- The rebuild refuses while a user's view, function or grant depends on schema kafka.
DROP EXTENSION kafka;
CREATE EXTENSION kafka VERSION '0.1.0';
CREATE TABLE items (id int PRIMARY KEY, name text);
SELECT kafka.capture('items', topic => 'regress.items') IS NOT NULL AS captured;
CREATE TABLE events (id uuid PRIMARY KEY, aggregatetype text, aggregateid text, type text, payload jsonb);
SELECT kafka.capture_outbox('events') IS NOT NULL AS relayed;
CREATE VIEW my_captures AS SELECT "table", topic FROM kafka.captures ORDER BY 1;
CREATE FUNCTION my_letters() RETURNS SETOF kafka.dead_letter LANGUAGE sql AS 'SELECT * FROM kafka.dead_letter';
CREATE ROLE regress_reader;
GRANT SELECT ON kafka.dead_letter TO regress_reader;
ALTER EXTENSION kafka UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'kafka';
DROP VIEW my_captures;
DROP FUNCTION my_letters();
ALTER EXTENSION kafka UPDATE;
REVOKE SELECT ON kafka.dead_letter FROM regress_reader;
DROP ROLE regress_reader;
-- With nothing in the way, it upgrades, and the capture carries over.
ALTER EXTENSION kafka UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'kafka';
SELECT "table", topic FROM kafka.captures ORDER BY 1;
SELECT tgrelid::regclass, tgname FROM pg_trigger WHERE tgrelid IN ('items'::regclass, 'events'::regclass) ORDER BY 1, 2;
SELECT kafka.uncapture('items'), kafka.uncapture('events');
DROP TABLE items, events;

-- Every object of the extension, one line each, as text that does not depend on oids.
CREATE DATABASE kafka_snapshot_template;
\c kafka_snapshot_template
CREATE FUNCTION schema_snapshot() RETURNS SETOF text LANGUAGE sql AS $fn$
  WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'kafka'),
  member AS (
    SELECT d.classid, d.objid FROM pg_depend d, ext
     WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
  ),
  rel AS (SELECT c.* FROM pg_class c JOIN member m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid)
  SELECT 'member ' || pg_describe_object(classid, objid, 0) FROM member
  UNION ALL
  SELECT format('function %s: %s acl=%s comment=%s', p.oid::regprocedure,
                replace(pg_get_functiondef(p.oid), E'\n', ' '), p.proacl, obj_description(p.oid, 'pg_proc'))
    FROM pg_proc p JOIN member m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid
  UNION ALL
  SELECT format('relation %s: kind=%s options=%s acl=%s rls=%s comment=%s', c.oid::regclass, c.relkind,
                c.reloptions, c.relacl, c.relrowsecurity, obj_description(c.oid, 'pg_class'))
    FROM rel c
  UNION ALL
  SELECT format('column %s.%s #%s: %s notnull=%s default=%s acl=%s comment=%s', a.attrelid::regclass, a.attname,
                rank() OVER (PARTITION BY a.attrelid ORDER BY a.attnum), format_type(a.atttypid, a.atttypmod),
                a.attnotnull, pg_get_expr(ad.adbin, ad.adrelid), a.attacl, col_description(a.attrelid, a.attnum))
    FROM pg_attribute a JOIN rel c ON c.oid = a.attrelid
    LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
   WHERE a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
  SELECT format('view %s: %s', c.oid::regclass, replace(pg_get_viewdef(c.oid), E'\n', ' '))
    FROM rel c WHERE c.relkind IN ('v', 'm')
  UNION ALL
  SELECT format('index %s', pg_get_indexdef(i.indexrelid)) FROM pg_index i JOIN rel c ON c.oid = i.indrelid
  UNION ALL
  SELECT format('constraint %s on %s: %s', co.conname, co.conrelid::regclass, pg_get_constraintdef(co.oid))
    FROM pg_constraint co JOIN rel c ON c.oid = co.conrelid
  UNION ALL
  SELECT format('trigger %s', pg_get_triggerdef(t.oid)) FROM pg_trigger t JOIN rel c ON c.oid = t.tgrelid
   WHERE NOT t.tgisinternal
  UNION ALL
  SELECT format('sequence %s: %s %s %s %s %s cache=%s cycle=%s', s.seqrelid::regclass, format_type(s.seqtypid, NULL),
                s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle)
    FROM pg_sequence s JOIN rel c ON c.oid = s.seqrelid
  UNION ALL
  SELECT format('policy %s on %s: %s', p.polname, p.polrelid::regclass, pg_get_expr(p.polqual, p.polrelid))
    FROM pg_policy p JOIN rel c ON c.oid = p.polrelid
  UNION ALL
  SELECT format('event trigger %s: %s %s %s %s', e.evtname, e.evtevent, e.evtfoid::regprocedure, e.evttags, e.evtenabled)
    FROM pg_event_trigger e JOIN member m ON m.classid = 'pg_event_trigger'::regclass AND m.objid = e.oid
  UNION ALL
  SELECT format('schema %s: acl=%s comment=%s', n.nspname, n.nspacl, obj_description(n.oid, 'pg_namespace'))
    FROM pg_namespace n WHERE n.nspname IN ('kafka', 'kafka_internal')
  UNION ALL
  SELECT format('type %s: %s', t.oid::regtype, t.typtype)
    FROM pg_type t JOIN member m ON m.classid = 'pg_type'::regclass AND m.objid = t.oid
  UNION ALL
  SELECT format('initial privileges %s: %s', pg_describe_object(i.classoid, i.objoid, i.objsubid), i.initprivs)
    FROM pg_init_privs i JOIN member m ON m.classid = i.classoid AND m.objid = i.objoid
  UNION ALL
  SELECT format('configuration table %s: %s', cfg.rel, cfg.cond)
    FROM pg_extension x, ext, unnest(x.extconfig::regclass[], x.extcondition) AS cfg(rel, cond) WHERE x.oid = ext.oid
$fn$;
\c kafka_regress
CREATE DATABASE kafka_fresh TEMPLATE kafka_snapshot_template;
CREATE DATABASE kafka_from_0_1_0 TEMPLATE kafka_snapshot_template;
CREATE DATABASE kafka_from_0_2_0 TEMPLATE kafka_snapshot_template;

\c kafka_fresh
CREATE EXTENSION kafka;
SELECT count(*) > 100 AS snapshot_has_lines FROM schema_snapshot();
SELECT string_agg(s, E'\n' ORDER BY s) AS fresh FROM schema_snapshot() s \gset

\c kafka_from_0_2_0
CREATE EXTENSION kafka VERSION '0.2.0';
ALTER EXTENSION kafka UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'kafka';
-- what differs from a fresh install: nothing, either way
SELECT s AS only_after_upgrade FROM schema_snapshot() s EXCEPT SELECT unnest(string_to_array(:'fresh', E'\n'));
SELECT s AS only_in_fresh FROM unnest(string_to_array(:'fresh', E'\n')) s EXCEPT SELECT schema_snapshot();

\c kafka_from_0_1_0
CREATE EXTENSION kafka VERSION '0.1.0';
ALTER EXTENSION kafka UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'kafka';
SELECT s AS only_after_upgrade FROM schema_snapshot() s EXCEPT SELECT unnest(string_to_array(:'fresh', E'\n'));
SELECT s AS only_in_fresh FROM unnest(string_to_array(:'fresh', E'\n')) s EXCEPT SELECT schema_snapshot();

\c kafka_regress
DROP DATABASE kafka_fresh;
DROP DATABASE kafka_from_0_1_0;
DROP DATABASE kafka_from_0_2_0;
DROP DATABASE kafka_snapshot_template;
