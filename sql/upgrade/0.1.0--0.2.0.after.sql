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

DROP SCHEMA kafka_upgrade CASCADE;
