//! What a user sees in Kafka after committing, rolling back and producing in bulk.

use pg_kafka_e2e::*;

#[test]
fn original_extension_usage_verbatim() {
    let mut c = pg();
    let t = topic("original");
    c.batch_execute("DELETE FROM kafka.broker").unwrap();
    c.batch_execute("insert into kafka.broker values ('localhost', 9092);").unwrap();
    let queued: bool =
        c.query_one(&format!("select kafka.produce('{t}', 'my message');"), &[]).unwrap().get(0);
    assert!(queued);
    assert_eq!(TopicReader::new(&t).read_at_least(1)[0].text().as_deref(), Some("my message"));
}

#[test]
fn commit_delivers_and_rollback_does_not() {
    let mut c = pg();
    let t = topic("rollback");
    c.batch_execute(&format!(
        "BEGIN; SELECT kafka.produce('{t}', 'rolled back'); ROLLBACK;
         BEGIN; SELECT kafka.produce('{t}', 'committed'); COMMIT;
         SELECT kafka.produce('{t}', 'end');"
    ))
    .unwrap();
    assert_eq!(TopicReader::new(&t).texts_until("end"), ["committed"]);
}

#[test]
fn savepoint_rollback_drops_only_its_messages() {
    let mut c = pg();
    let t = topic("savepoint");
    c.batch_execute(&format!(
        "BEGIN;
         SELECT kafka.produce('{t}', 'a');
         SAVEPOINT s1; SELECT kafka.produce('{t}', 'b'); ROLLBACK TO s1;
         SELECT kafka.produce('{t}', 'c');
         SAVEPOINT s2; SELECT kafka.produce('{t}', 'd');
           SAVEPOINT s3; SELECT kafka.produce('{t}', 'e'); ROLLBACK TO s3;
         RELEASE s2;
         SAVEPOINT s4; SELECT kafka.produce('{t}', 'f'); RELEASE s4;
         SELECT kafka.produce('{t}', 'end');
         COMMIT;"
    ))
    .unwrap();
    assert_eq!(TopicReader::new(&t).texts_until("end"), ["a", "c", "d", "f"]);
}

/// PL/pgSQL exception blocks are subtransactions too, and big ones are written to the outbox
/// before they end: what they produced must still vanish with them, and stay when they succeed.
#[test]
fn exception_blocks_keep_or_drop_their_messages_whatever_their_size() {
    let mut c = pg();
    let t = topic("plpgsql");
    c.batch_execute(&format!(
        "DO $$
         BEGIN
           PERFORM kafka.produce('{t}', 'first');
           BEGIN
             PERFORM kafka.produce('{t}', 'dropped-' || i) FROM generate_series(1, 25000) i;
             RAISE EXCEPTION 'undo';
           EXCEPTION WHEN raise_exception THEN NULL;
           END;
           BEGIN
             PERFORM kafka.produce('{t}', 'kept-' || i) FROM generate_series(1, 25000) i;
           END;
           PERFORM kafka.produce('{t}', 'end');
         END $$;"
    ))
    .unwrap();
    let got = TopicReader::new(&t).texts_until("end");
    let want: Vec<String> =
        std::iter::once("first".to_string()).chain((1..=25000).map(|i| format!("kept-{i}"))).collect();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "first difference at {:?}", got.iter().zip(&want).position(|(a, b)| a != b));
}

#[test]
fn null_message_is_a_tombstone() {
    let mut c = pg();
    let t = topic("tombstone");
    c.batch_execute(&format!("SELECT kafka.produce('{t}', NULL); SELECT kafka.produce('{t}', 'end');"))
        .unwrap();
    let mut r = TopicReader::new(&t);
    let recs = r.read_at_least(2);
    assert_eq!(recs[0].payload, None);
    assert_eq!(recs[1].text().as_deref(), Some("end"));
}

#[test]
fn ten_thousand_in_one_transaction_arrive_in_order() {
    let mut c = pg();
    let t = topic("tenk");
    c.batch_execute(&format!("SELECT kafka.produce('{t}', i::text) FROM generate_series(1, 10000) i"))
        .unwrap();
    let mut r = TopicReader::new(&t);
    let got: Vec<String> = r.read_at_least(10_000).iter().map(|m| m.text().unwrap()).collect();
    let want: Vec<String> = (1..=10_000).map(|i| i.to_string()).collect();
    assert_eq!(got, want);
}

#[test]
fn many_sessions_each_keep_their_order() {
    let t = topic("sessions");
    let threads: Vec<_> = (0..4)
        .map(|s| {
            let t = t.clone();
            std::thread::spawn(move || {
                let mut c = pg();
                for i in 0..200 {
                    c.execute("SELECT kafka.produce($1, $2)", &[&t, &format!("{s}:{i}")]).unwrap();
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|h| h.join().unwrap());
    let mut r = TopicReader::new(&t);
    let got: Vec<String> = r.read_at_least(800).iter().map(|m| m.text().unwrap()).collect();
    for s in 0..4 {
        let mine: Vec<&String> = got.iter().filter(|m| m.starts_with(&format!("{s}:"))).collect();
        let want: Vec<String> = (0..200).map(|i| format!("{s}:{i}")).collect();
        assert_eq!(mine, want.iter().collect::<Vec<_>>(), "session {s}");
    }
}

#[test]
fn broker_changes_apply_without_restart() {
    let mut c = pg();
    let t = topic("brokers");
    c.batch_execute("DELETE FROM kafka.broker").unwrap();
    c.execute("SELECT kafka.produce($1, 'waited for a broker')", &[&t]).unwrap();
    wait_until("the worker to report that no broker is configured", || {
        status(&mut c).last_error.is_some_and(|e| e.contains("no Kafka broker"))
    });
    c.batch_execute("INSERT INTO kafka.broker VALUES ('127.0.0.1', 9092)").unwrap();
    assert_eq!(TopicReader::new(&t).read_at_least(1)[0].text().as_deref(), Some("waited for a broker"));
    c.batch_execute("DELETE FROM kafka.broker WHERE host = '127.0.0.1'").unwrap();
}

#[test]
fn close_reconnects_and_keeps_delivering() {
    let mut c = pg();
    let t = topic("close");
    c.execute("SELECT kafka.produce($1, 'before')", &[&t]).unwrap();
    let mut r = TopicReader::new(&t);
    r.read_at_least(1);
    let running: bool = c.query_one("SELECT kafka.close()", &[]).unwrap().get(0);
    assert!(running);
    c.execute("SELECT kafka.produce($1, 'after')", &[&t]).unwrap();
    assert_eq!(r.read_at_least(2)[1].text().as_deref(), Some("after"));
}

#[test]
fn worker_is_visible_and_reports_deliveries() {
    let mut c = pg();
    let t = topic("status");
    c.execute("SELECT kafka.produce($1, 'counted')", &[&t]).unwrap();
    TopicReader::new(&t).read_at_least(1);
    let s = status(&mut c);
    assert!(s.running);
    let row = c
        .query_one(
            "SELECT a.backend_type, s.delivered > 0, s.last_delivery_at IS NOT NULL
               FROM kafka.status s JOIN pg_stat_activity a ON a.pid = s.worker_pid",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "pg_kafka");
    assert!(row.get::<_, bool>(1));
    assert!(row.get::<_, bool>(2));
}

/// DROP EXTENSION ends the database's worker (without the extension it keeps no worker slot);
/// CREATE EXTENSION brings one back at once, and it delivers.
#[test]
fn drop_extension_ends_the_worker_and_create_extension_serves_again() {
    let mut c = pg();
    let pid = status(&mut c).pid.expect("worker runs");
    c.batch_execute("DROP EXTENSION kafka").unwrap();
    wait_until("the worker to exit", || {
        c.query_opt("SELECT 1 FROM pg_stat_activity WHERE pid = $1", &[&pid]).unwrap().is_none()
    });
    let mut c = pg(); // creates the extension again
    let t = topic("recreated");
    c.execute("SELECT kafka.produce($1, 'served again')", &[&t]).unwrap();
    assert_eq!(TopicReader::new(&t).read_at_least(1)[0].text().as_deref(), Some("served again"));
    let now = status(&mut c).pid;
    assert!(now.is_some_and(|p| p != pid), "a new worker serves the database: {now:?}");
}

/// kafka.topics counts, per topic, what was delivered (and its bytes) and dead-lettered.
#[test]
fn per_topic_figures_count_deliveries_and_dead_letters() {
    let mut c = pg();
    let t = topic("per_topic");
    c.execute("SELECT kafka.produce($1, x) FROM unnest(ARRAY['abc', 'de', repeat('x', 2000000)]) x", &[&t])
        .unwrap();
    let figures = |c: &mut postgres::Client| -> Option<(i64, i64, i64)> {
        c.query_opt("SELECT delivered, dead_lettered, bytes FROM kafka.topics WHERE topic = $1", &[&t])
            .unwrap()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
    };
    wait_until("the figures of the topic", || figures(&mut c) == Some((2, 1, 5)));
    let monitor_reads: bool = c
        .query_one("SELECT has_table_privilege('pg_monitor', 'kafka.topics', 'SELECT')", &[])
        .unwrap()
        .get(0);
    assert!(monitor_reads);
}

/// librdkafka's own statistics are readable from SQL: the latest document of the worker's
/// producer, refreshed every `statistics.interval.ms` (set in `kafka.config`).
#[test]
fn librdkafka_statistics_are_readable_from_sql() {
    let mut c = pg();
    let t = topic("statistics");
    c.batch_execute("INSERT INTO kafka.config VALUES ('statistics.interval.ms', '500')").unwrap();
    c.execute("SELECT kafka.produce($1, 'counted')", &[&t]).unwrap();
    TopicReader::new(&t).read_at_least(1);
    wait_until("statistics that count the topic's message", || {
        c.query_one(
            "SELECT coalesce((stats->'topics'->$1->'partitions'->'0'->>'txmsgs')::int, 0) >= 1
                AND stats->>'type' = 'producer' AND jsonb_typeof(stats->'brokers') = 'object'
                AND updated_at > now() - interval '1 minute'
               FROM kafka.producer_statistics WHERE producer = 'delivery'
             UNION ALL SELECT false LIMIT 1",
            &[&t],
        )
        .unwrap()
        .get(0)
    });
    // Readable by monitoring roles, not by everyone.
    let (code, _) =
        error_of(&mut c, "SET ROLE kafka_producer; SELECT count(*) FROM kafka.producer_statistics");
    assert_eq!(code, "42501");
    c.batch_execute("RESET ROLE; DELETE FROM kafka.config WHERE name = 'statistics.interval.ms'").unwrap();
}
