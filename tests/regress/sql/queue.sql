-- The transaction buffer, checked without a broker: what a transaction queues waits in
-- kafka.outbox, in the order it was queued, and only once the transaction commits.
-- kafka.waiting() lists the waiting messages in commit order.
CREATE EXTENSION kafka;
-- What a user checks: per transaction in commit order, the messages in order.
CREATE VIEW queued AS
  SELECT dense_rank() OVER (ORDER BY commit_order) AS txn, topic,
         convert_from(value, 'UTF8') AS value
    FROM kafka.waiting(max_rows => 100000) ORDER BY commit_order, id;
-- Empties the queue between cases (through the dead letters, as an operator would).
CREATE FUNCTION reset() RETURNS void LANGUAGE sql AS $$
  SELECT kafka.dead_letter_waiting(array_agg(id), 'reset') FROM kafka.waiting(max_rows => 100000);
  SELECT kafka.purge_dead_letters();
$$;
SELECT count(*) AS waiting FROM kafka.waiting();

-- A committed transaction's messages wait, a rolled-back one's do not, autocommit is a commit.
BEGIN;
SELECT kafka.produce('regress.a', 'one');
SELECT kafka.produce('regress.a', 'two');
-- nothing is queued before COMMIT, not even for the transaction itself
SELECT count(*) AS waiting FROM kafka.waiting();
COMMIT;
BEGIN;
SELECT kafka.produce('regress.a', 'rolled back');
ROLLBACK;
SELECT kafka.produce('regress.a', 'three');
SELECT * FROM queued;
SELECT reset();

-- Savepoints: ROLLBACK TO drops what was queued after the savepoint, at any depth; RELEASE
-- keeps it.
BEGIN;
SELECT kafka.produce('regress.b', 'a');
SAVEPOINT s1;
SELECT kafka.produce('regress.b', 'b (rolled back to s1)');
ROLLBACK TO SAVEPOINT s1;
SELECT kafka.produce('regress.b', 'c');
SAVEPOINT s2;
SELECT kafka.produce('regress.b', 'd');
RELEASE SAVEPOINT s2;
SAVEPOINT s3;
SELECT kafka.produce('regress.b', 'e (rolled back to s3)');
SAVEPOINT s4;
SELECT kafka.produce('regress.b', 'f (rolled back to s3)');
ROLLBACK TO SAVEPOINT s3;
SELECT kafka.produce('regress.b', 'g');
SAVEPOINT s5;
SELECT kafka.produce('regress.b', 'h');
SAVEPOINT s6;
SELECT kafka.produce('regress.b', 'i');
RELEASE SAVEPOINT s5;
COMMIT;
SELECT * FROM queued;
SELECT reset();

-- A PL/pgSQL block that catches an error runs in a subtransaction: its messages go with it.
DO $$
BEGIN
  PERFORM kafka.produce('regress.c', 'before');
  BEGIN
    PERFORM kafka.produce('regress.c', 'in the failed block');
    RAISE EXCEPTION 'boom';
  EXCEPTION WHEN OTHERS THEN
    NULL;
  END;
  PERFORM kafka.produce('regress.c', 'after');
END $$;
SELECT * FROM queued;
SELECT reset();

-- An error aborts the transaction: COMMIT rolls back, nothing is queued.
BEGIN;
SELECT kafka.produce('regress.d', 'lost with the transaction');
SELECT 1 / 0;
COMMIT;
-- Bad input is refused with nothing half-written; a savepoint keeps what came before.
SELECT kafka.produce('regress d', 'bad topic');
BEGIN;
SELECT kafka.produce('regress.d', 'kept');
SAVEPOINT s;
SELECT kafka.produce('', 'empty topic');
ROLLBACK TO SAVEPOINT s;
SELECT kafka.produce('regress.d', 'also kept');
COMMIT;
SELECT * FROM queued;
SELECT reset();

-- Order within one transaction, across packs (512 messages per outbox row) and topics.
SELECT count(*) FROM (SELECT kafka.produce('regress.e' || (i % 3), i::text)
                        FROM generate_series(1, 1300) i) s;
SELECT count(*) AS messages, count(DISTINCT txn) AS transactions,
       array_agg(value::int ORDER BY ord) = array_agg(value::int ORDER BY value::int) AS in_order
  FROM (SELECT q.*, row_number() OVER () AS ord FROM queued q) s;
-- each topic's own messages are in order too
SELECT topic, count(*), min(n), max(n), array_agg(n ORDER BY id) = array_agg(n ORDER BY n) AS in_order
  FROM (SELECT topic, id, convert_from(value, 'UTF8')::int AS n FROM kafka.waiting(max_rows => 100000)) w
 GROUP BY topic ORDER BY topic;
-- kafka.waiting() filters by topic and stops at max_rows
SELECT count(*) FROM kafka.waiting(topic => 'regress.e1');
SELECT count(*) FROM kafka.waiting();  -- 1000 rows by default
SELECT count(*) FROM kafka.waiting(max_rows => 0);
SELECT count(*) FROM kafka.waiting(max_rows => -1);  -- refused
SELECT convert_from(value, 'UTF8') FROM kafka.waiting(max_rows => 3);
SELECT reset();

-- Transactions in commit order, each one's messages together.
SELECT kafka.produce('regress.f', 'first transaction');
BEGIN;
SELECT kafka.produce('regress.f', 'second transaction, 1');
SELECT kafka.produce('regress.g', 'second transaction, 2');
COMMIT;
SELECT kafka.produce('regress.f', 'third transaction');
SELECT * FROM queued;
SELECT reset();

-- Full records: key, headers, partition, timestamp, bytes and JSON values.
SELECT kafka.publish('regress.h', 'text value', key => 'k1',
                     headers => '{"source": "regress", "empty": null}', partition => 2,
                     ts => '2026-01-02 03:04:05.678+00') IS NOT NULL AS queued;
SELECT kafka.publish('regress.h', '\x00ff'::bytea, key_bytes => '\x01'::bytea) IS NOT NULL AS queued;
SELECT kafka.publish('regress.h', '{"a": [1, 2]}'::jsonb) IS NOT NULL AS queued;
SELECT kafka.produce('regress.h', NULL) AS tombstone;
SELECT topic, key, value, headers, partition, timestamp AT TIME ZONE 'UTC' AS ts_utc
  FROM kafka.waiting() ORDER BY id;
SELECT reset();

-- Prepared transactions: queued when COMMIT PREPARED, gone with ROLLBACK PREPARED.
BEGIN;
SELECT kafka.produce('regress.i', 'prepared, then committed');
PREPARE TRANSACTION 'regress_p1';
BEGIN;
SELECT kafka.produce('regress.i', 'prepared, then rolled back');
PREPARE TRANSACTION 'regress_p2';
SELECT count(*) AS waiting FROM kafka.waiting();
COMMIT PREPARED 'regress_p1';
ROLLBACK PREPARED 'regress_p2';
SELECT * FROM queued;

-- A moved-out message leaves the queue for the dead letters, with its id and the reason.
SELECT kafka.dead_letter_waiting(array_agg(id), 'regress check') FROM kafka.waiting();
SELECT count(*) AS waiting FROM kafka.waiting();
SELECT topic, convert_from(payload, 'UTF8') AS value, error LIKE 'regress check%' AS reason
  FROM kafka.dead_letter;
SELECT kafka.purge_dead_letters();

-- Reading the queue takes SELECT on it: a plain role is refused, kafka_admin may.
CREATE ROLE regress_plain;
CREATE ROLE regress_admin IN ROLE kafka_admin;
SET ROLE regress_plain;
SELECT count(*) FROM kafka.waiting();
RESET ROLE;
SET ROLE regress_admin;
SELECT count(*) FROM kafka.waiting();
RESET ROLE;
DROP ROLE regress_plain;
DROP ROLE regress_admin;
