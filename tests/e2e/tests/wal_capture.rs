//! WAL capture (`kafka.capture(…, method => 'wal')`): events decoded from the WAL by the worker,
//! with what only the WAL knows (the change's LSN, Debezium's `sequence`, the commit time), the
//! table's shape at each change's moment, partitions under their root's topic, REPLICA IDENTITY
//! as Debezium reads it, the slot's life, the requirements refused with a clear error, and
//! nothing lost, nothing out of order (and, exactly once, nothing twice) through a killed
//! worker, a crashed PostgreSQL and a broker outage while sessions commit.

use pg_kafka_e2e::*;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

fn events(t: &str, n: usize) -> Vec<(Option<Value>, Option<Value>)> {
    let mut r = TopicReader::new(t);
    r.read_at_least(n)
        .iter()
        .map(|r| {
            let json =
                |b: &Option<Vec<u8>>| b.as_deref().map(|b| serde_json::from_slice::<Value>(b).unwrap());
            (json(&r.key), json(&r.payload))
        })
        .collect()
}

fn lsn(text: &str) -> u64 {
    let (hi, lo) = text.split_once('/').unwrap();
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

fn current_lsn(c: &mut postgres::Client) -> u64 {
    lsn(&c.query_one("SELECT pg_current_wal_lsn()::text", &[]).unwrap().get::<_, String>(0))
}

/// An event's `source.sequence`, `"[\"<last commit's end>\",\"<lsn>\"]"` (a JSON string, as
/// Debezium writes it): the last commit's end (None: `null`, no transaction before it since the
/// slot was made) and the LSN.
fn sequence(source: &Value) -> (Option<u64>, u64) {
    let seq: Vec<Option<String>> =
        serde_json::from_str(source["sequence"].as_str().expect("sequence is a string")).unwrap();
    assert_eq!(seq.len(), 2, "{seq:?}");
    (seq[0].as_ref().map(|x| x.parse().unwrap()), seq[1].as_ref().expect("an LSN").parse().unwrap())
}

/// Every kind of change, in one transaction and alone, comes with the change's LSN (between
/// the WAL positions around its statement), `sequence` = `["<last commit's end>", "<lsn>"]`
/// (`null` first for the first transaction after the slot was made),
/// the transaction's commit time (the same for all its events, not its statements' times) and
/// its 32-bit id; TRUNCATE is `op: "t"`; the capture says its method and the slot is in
/// `kafka.status`.
#[test]
fn events_carry_what_the_wal_knows() {
    let mut c = pg();
    let t = topic("wal_kinds");
    c.batch_execute(
        "DROP TABLE IF EXISTS wal_kinds; CREATE TABLE wal_kinds (id int PRIMARY KEY, v text);
         ALTER TABLE wal_kinds REPLICA IDENTITY FULL",
    )
    .unwrap();
    let fresh_slot: bool = c.query_one("SELECT wal_slot IS NULL FROM kafka.status", &[]).unwrap().get(0);
    let method: String = c
        .query_one("SELECT method FROM kafka.capture('wal_kinds', topic => $1, method => 'wal')", &[&t])
        .unwrap()
        .get(0);
    assert_eq!(method, "wal");
    let before = current_lsn(&mut c);
    let mut tx = c.transaction().unwrap();
    tx.batch_execute("INSERT INTO wal_kinds VALUES (1, 'a'), (2, 'b')").unwrap();
    tx.batch_execute("SELECT pg_sleep(0.05)").unwrap(); // the commit comes later than the statements
    tx.batch_execute("UPDATE wal_kinds SET v = 'c' WHERE id = 1; DELETE FROM wal_kinds WHERE id = 2")
        .unwrap();
    tx.commit().unwrap();
    let between = current_lsn(&mut c);
    c.batch_execute("TRUNCATE wal_kinds").unwrap();
    let after = current_lsn(&mut c);
    let got = events(&t, 6);
    let ops: Vec<&str> =
        got.iter().map(|(_, v)| v.as_ref().map_or("tombstone", |v| v["op"].as_str().unwrap())).collect();
    assert_eq!(ops, ["c", "c", "u", "d", "tombstone", "t"]);
    let sources: Vec<&Value> = got.iter().filter_map(|(_, v)| v.as_ref()).map(|v| &v["source"]).collect();
    let lsns: Vec<u64> = sources.iter().map(|s| s["lsn"].as_u64().expect("source.lsn")).collect();
    assert!(lsns.windows(2).all(|w| w[0] < w[1]), "LSNs grow: {lsns:?}");
    // (pg_current_wal_lsn() is where the next record goes)
    assert!(lsns[..4].iter().all(|&l| before <= l && l < between), "{before} <= {lsns:?} < {between}");
    assert!(between <= lsns[4] && lsns[4] < after);
    for (s, l) in sources.iter().zip(&lsns) {
        assert_eq!(sequence(s).1, *l, "sequence ends with the LSN");
        assert_eq!(s["snapshot"], "false");
        assert!(s["txId"].as_u64().unwrap() < 1 << 32);
    }
    if fresh_slot {
        // As Debezium writes it with no last commit.
        assert_eq!(sequence(sources[0]).0, None, "the first transaction after the slot was made: null");
    }
    let seq_of = |i: usize| -> u64 { sequence(sources[i]).0.expect("a commit before") };
    assert!(
        seq_of(4) > lsns[3] && seq_of(4) <= lsns[4],
        "the TRUNCATE's sequence starts at the first commit's end"
    );
    let first: Vec<&Value> = sources[..4].iter().map(|s| &s["ts_us"]).collect();
    assert!(first.iter().all(|ts| *ts == first[0]), "one commit time for the transaction: {first:?}");
    assert!(sources[..4].iter().all(|s| s["txId"] == sources[0]["txId"]));
    // The commit came after the 50 ms sleep: the events' time is the commit's, not the INSERT's.
    let envelope_ts = got[0].1.as_ref().unwrap()["ts_us"].as_i64().unwrap();
    assert!(first[0].as_i64().unwrap() <= envelope_ts);
    let slot: Option<String> = c.query_one("SELECT wal_slot FROM kafka.status", &[]).unwrap().get(0);
    assert!(slot.is_some_and(|s| s.starts_with("pg_kafka_")));
    c.batch_execute("SELECT kafka.uncapture('wal_kinds'); DROP TABLE wal_kinds").unwrap();
}

/// Sets a server setting for as long as it lives (the worker reloads it).
struct SystemSet(&'static str);

impl SystemSet {
    fn set(c: &mut postgres::Client, name: &'static str, value: &str) -> SystemSet {
        c.batch_execute(&format!("ALTER SYSTEM SET {name} = '{value}'")).unwrap();
        c.batch_execute("SELECT pg_reload_conf()").unwrap();
        SystemSet(name)
    }
}

impl Drop for SystemSet {
    fn drop(&mut self) {
        let mut c = pg();
        let _ = c.batch_execute(&format!("ALTER SYSTEM RESET {}", self.0));
        let _ = c.batch_execute("SELECT pg_reload_conf()");
    }
}

/// How many transactions the worker's slot streamed before they committed.
fn streamed(c: &mut postgres::Client) -> i64 {
    c.query_one(
        "SELECT coalesce(sum(stream_txns), 0)::int8 FROM pg_stat_replication_slots WHERE slot_name LIKE 'pg_kafka_%'",
        &[],
    )
    .unwrap()
    .get(0)
}

/// A fresh table `name` (`id int PRIMARY KEY, v text`, REPLICA IDENTITY FULL) captured from the
/// WAL to a topic of its own (returned), and a table `<name>_warmup` for [`streaming`].
fn wal_table(c: &mut postgres::Client, name: &str) -> String {
    let t = topic(name);
    c.batch_execute(&format!(
        "DROP TABLE IF EXISTS {name}, {name}_warmup;
         CREATE TABLE {name} (id int PRIMARY KEY, v text); ALTER TABLE {name} REPLICA IDENTITY FULL;
         CREATE TABLE {name}_warmup (v text)"
    ))
    .unwrap();
    c.execute(&format!("SELECT kafka.capture('{name}', topic => $1, method => 'wal')"), &[&t]).unwrap();
    t
}

/// Sets `logical_decoding_work_mem` to its least (64 kB) until the guard drops, and returns once
/// the worker streams (it reloads the setting between passes): transactions larger than that are
/// streamed to it from then on. Writes to `warmup`, a table with a text column `v`, until then.
fn streaming(c: &mut postgres::Client, warmup: &str) -> SystemSet {
    let work_mem = SystemSet::set(c, "logical_decoding_work_mem", "64kB");
    let before = streamed(c);
    wait_until("the worker streams large transactions", || {
        let fill = format!("INSERT INTO {warmup} SELECT repeat('w', 200) FROM generate_series(1, 2000)");
        c.batch_execute(&fill).unwrap();
        streamed(c) > before
    });
    work_mem
}

/// A streamed transaction's events are staged as they were packed while it was written, with its
/// commit time and the last commit's end kept beside them: whoever reads them gets them whole.
/// While Kafka is unreachable, `kafka.waiting()` shows them with their commit fields,
/// `kafka.dead_letter_waiting()` moves some with theirs, and once Kafka is back the rest are
/// delivered with theirs, exactly as they were shown.
#[test]
fn a_streamed_transaction_read_from_the_outbox_has_its_commit_fields() {
    let _back = BrokerBack;
    let mut c = pg();
    let t = wal_table(&mut c, "wal_marks");
    let _work_mem = streaming(&mut c, "wal_marks_warmup");
    // (After the reload: a SIGHUP makes the worker start a new producer.)
    c.execute("SELECT kafka.produce($1, 'probe')", &[&t]).unwrap();
    let mut r = TopicReader::new(&t);
    r.read_at_least(1); // the worker has a producer
    make_broker_unreachable(&mut c); // nothing listens: events wait
    let before = streamed(&mut c);
    let mut tx = c.transaction().unwrap();
    tx.batch_execute("INSERT INTO wal_marks SELECT i, repeat('v', 200) || i FROM generate_series(1, 3000) i")
        .unwrap();
    tx.batch_execute("SELECT pg_sleep(0.05)").unwrap(); // the commit comes later than the statement
    let committed_after: f64 =
        tx.query_one("SELECT extract(epoch FROM clock_timestamp())::float8", &[]).unwrap().get(0);
    tx.commit().unwrap();
    let waiting = |c: &mut postgres::Client| -> Vec<(i64, String)> {
        c.query("SELECT id, convert_from(value, 'UTF8') FROM kafka.waiting($1, 10000)", &[&t])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    };
    wait_until("the transaction's events wait in the outbox", || waiting(&mut c).len() == 3000);
    assert!(streamed(&mut c) > before, "the transaction was streamed");
    let shown = waiting(&mut c);
    let marked: i64 =
        c.query_one("SELECT count(*) FROM kafka.outbox WHERE $1 = ANY (topics)", &[&t]).unwrap().get(0);
    let with_marks: i64 = c
        .query_one(
            "SELECT count(*) FROM kafka.outbox WHERE $1 = ANY (topics) AND commit_marks IS NOT NULL",
            &[&t],
        )
        .unwrap()
        .get(0);
    assert!(with_marks > 0 && with_marks == marked, "its packs were staged with their commit marks");
    let check = |what: &str, values: &[String]| {
        let first: Value = serde_json::from_str(&values[0]).unwrap();
        let us = first["source"]["ts_us"].as_i64().unwrap();
        assert!(us as f64 / 1e6 >= committed_after, "{what}: the commit's time");
        for v in values {
            assert!(!v.contains('\u{1}'), "{what}: no mark left in {v}");
            let v: Value = serde_json::from_str(v).unwrap();
            let s = &v["source"];
            assert_eq!((s["ts_us"].as_i64(), s["ts_ms"].as_i64()), (Some(us), Some(us / 1000)), "{what}");
            assert_eq!(s["ts_ns"].as_i64(), Some(us * 1000), "{what}");
            let last = sequence(&first["source"]).0;
            assert_eq!(sequence(s), (last, s["lsn"].as_u64().unwrap()), "{what}");
        }
    };
    let shown_values: Vec<String> = shown.iter().map(|(_, v)| v.clone()).collect();
    check("kafka.waiting()", &shown_values);
    // Ten events from the middle of a pack go to the dead letters.
    let take: Vec<i64> = shown[1000..1010].iter().map(|(id, _)| *id).collect();
    let moved: i64 = c.query_one("SELECT kafka.dead_letter_waiting($1, 'stuck')", &[&take]).unwrap().get(0);
    assert_eq!(moved, 10);
    let dead: Vec<String> = c
        .query(
            "SELECT convert_from(payload, 'UTF8') FROM kafka.dead_letter WHERE id = ANY ($1) ORDER BY id",
            &[&take],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(dead, shown_values[1000..1010], "dead letters as they were shown");
    assert_eq!(
        waiting(&mut c).iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(),
        [&shown_values[..1000], &shown_values[1010..]].concat(),
        "the pack split around them still reads the same"
    );
    c.batch_execute("UPDATE kafka.broker SET port = 9092").unwrap();
    let got: Vec<String> = r.read_at_least(1 + 2990).iter().skip(1).map(|m| m.text().unwrap()).collect();
    assert_eq!(got, [&shown_values[..1000], &shown_values[1010..]].concat(), "delivered as they were shown");
    check("delivered", &got);
    drop(_work_mem);
    c.batch_execute("SELECT kafka.uncapture('wal_marks'); DROP TABLE wal_marks, wal_marks_warmup").unwrap();
}

/// A transaction larger than `logical_decoding_work_mem` (set to its least, 64 kB, here) is
/// streamed to the worker while it writes, and its events are what its replay at COMMIT gives:
/// in order, with its commit time, its id, `sequence` from the last commit's end. A rolled-back
/// savepoint takes its events with it (also once they were written to disk, and with a released
/// savepoint inside it), a released one keeps them, a rolled-back transaction gives nothing, and
/// two streamed at once arrive in commit order; the worker runs on throughout.
#[test]
fn large_transactions_are_streamed_as_they_write() {
    let mut c = pg();
    let t = wal_table(&mut c, "wal_stream");
    let worker = |c: &mut postgres::Client| -> i32 {
        c.query_one("SELECT worker_pid FROM kafka.status", &[]).unwrap().get(0)
    };
    let pid = worker(&mut c);
    let _work_mem = streaming(&mut c, "wal_stream_warmup");
    let before = streamed(&mut c);
    // The capture is looked up again (a relcache invalidation) while A is streamed.
    c.batch_execute("ALTER TABLE wal_stream SET (fillfactor = 90)").unwrap();
    let rows = |from: i32, to: i32| {
        format!("INSERT INTO wal_stream SELECT i, repeat('v', 200) || i FROM generate_series({from}, {to}) i")
    };
    // A: 20,000 rows kept (past 8 MB: on disk), 20,000 rolled back (cut in the file), a released
    // savepoint's update kept, a nested pair rolled back together, then 500 rows more.
    let mut a = c.transaction().unwrap();
    a.batch_execute(&rows(1, 20_000)).unwrap();
    a.batch_execute(&format!("SAVEPOINT s1; {}; ROLLBACK TO s1", rows(20_001, 40_000))).unwrap();
    a.batch_execute("SAVEPOINT s2; UPDATE wal_stream SET v = 'u' WHERE id <= 10; RELEASE s2").unwrap();
    a.batch_execute(&format!(
        "SAVEPOINT s3; SAVEPOINT s4; {}; RELEASE s4; {}; ROLLBACK TO s3",
        rows(50_001, 51_000),
        rows(52_001, 53_000)
    ))
    .unwrap();
    a.batch_execute(&rows(60_001, 60_500)).unwrap();
    a.batch_execute("SELECT pg_sleep(0.05)").unwrap(); // the commit comes later than the statements
    let a_committed_after: f64 =
        a.query_one("SELECT extract(epoch FROM clock_timestamp())::float8", &[]).unwrap().get(0);
    a.commit().unwrap();
    // B: rolled back.
    let mut b = c.transaction().unwrap();
    b.batch_execute(&rows(70_001, 80_000)).unwrap();
    b.rollback().unwrap();
    // C1 and C2 at once; C2 commits first.
    let mut c2_conn = pg();
    let mut c1 = c.transaction().unwrap();
    c1.batch_execute(&rows(100_001, 103_000)).unwrap();
    let mut c2 = c2_conn.transaction().unwrap();
    c2.batch_execute(&rows(200_001, 203_000)).unwrap();
    c1.batch_execute(&rows(103_001, 106_000)).unwrap();
    c2.commit().unwrap();
    c1.commit().unwrap();
    let a_events = 20_000 + 10 + 500;
    let got = events(&t, a_events + 3000 + 6000);
    assert_eq!(got.len(), a_events + 9000, "nothing of the rolled-back parts, nothing of B");
    let values: Vec<&Value> = got.iter().map(|(_, v)| v.as_ref().expect("no tombstone")).collect();
    let id = |v: &Value| v["after"]["id"].as_i64().unwrap();
    let ids: Vec<i64> = values.iter().map(|v| id(v)).collect();
    let expected: Vec<i64> = (1..=20_000)
        .chain(1..=10)
        .chain(60_001..=60_500)
        .chain(200_001..=203_000)
        .chain(100_001..=106_000)
        .collect();
    assert!(ids == expected, "events in order: A, then C2, then C1");
    let ops: Vec<&str> = values[20_000..20_010].iter().map(|v| v["op"].as_str().unwrap()).collect();
    assert!(ops.iter().all(|&o| o == "u") && values[20_000]["after"]["v"] == "u");
    assert_eq!(values[20_000]["before"]["v"], format!("{}1", "v".repeat(200)), "the whole old row");
    let source = |i: usize| &values[i]["source"];
    // (null, for a transaction with no captured one before it since the slot was made, as 0)
    let seq = |i: usize| -> Vec<u64> {
        let (last, lsn) = sequence(source(i));
        vec![last.unwrap_or(0), lsn]
    };
    let lsn = |i: usize| source(i)["lsn"].as_u64().unwrap();
    for (from, to) in [(0, a_events), (a_events, a_events + 3000), (a_events + 3000, got.len())] {
        let first = source(from);
        for i in from..to {
            let s = source(i);
            assert!(
                s["ts_us"] == first["ts_us"] && s["txId"] == first["txId"],
                "one commit for a transaction"
            );
            assert_eq!(s["ts_ms"].as_i64().unwrap(), first["ts_us"].as_i64().unwrap() / 1000);
            assert_eq!(s["ts_ns"].as_i64().unwrap(), first["ts_us"].as_i64().unwrap() * 1000);
            assert_eq!(seq(i), [seq(from)[0], lsn(i)], "sequence: the last commit's end, then the LSN");
            assert!(i == from || lsn(i) > lsn(i - 1), "LSNs grow within a transaction");
        }
    }
    let a_ts = source(0)["ts_us"].as_i64().unwrap() as f64 / 1e6;
    assert!(a_ts >= a_committed_after, "A's time is its commit's: {a_ts} >= {a_committed_after}");
    let max_lsn = |from: usize, to: usize| (from..to).map(lsn).max().unwrap();
    assert!(seq(a_events)[0] > max_lsn(0, a_events), "C2's sequence starts at A's commit end");
    assert!(seq(a_events + 3000)[0] > max_lsn(a_events, a_events + 3000), "C1's at C2's");
    assert!(source(a_events)["ts_us"].as_i64() <= source(a_events + 3000)["ts_us"].as_i64());
    assert!(streamed(&mut c) >= before + 3, "A, B, C1 and C2 were streamed");
    assert_eq!(worker(&mut c), pid, "the worker never stopped");
    drop(_work_mem);
    c.batch_execute("SELECT kafka.uncapture('wal_stream'); DROP TABLE wal_stream, wal_stream_warmup")
        .unwrap();
}

/// With REPLICA IDENTITY DEFAULT (the default), as Debezium: an UPDATE's `before` is null, a
/// DELETE's holds the key only, an unchanged TOASTed value is `__debezium_unavailable_value`;
/// capture() says so in a NOTICE.
#[test]
fn replica_identity_default_gives_what_debezium_gives() {
    let mut c = pg();
    let t = topic("wal_identity");
    c.batch_execute(
        "DROP TABLE IF EXISTS wal_identity;
         CREATE TABLE wal_identity (id int PRIMARY KEY, n int, big text);
         ALTER TABLE wal_identity ALTER big SET STORAGE EXTERNAL",
    )
    .unwrap();
    c.execute("SELECT kafka.capture('wal_identity', topic => $1, method => 'wal')", &[&t]).unwrap();
    c.batch_execute(
        "INSERT INTO wal_identity VALUES (1, 1, repeat('x', 10000));
         UPDATE wal_identity SET n = 2 WHERE id = 1;
         DELETE FROM wal_identity WHERE id = 1",
    )
    .unwrap();
    let got = events(&t, 4);
    let (ins, upd, del) = (got[0].1.clone().unwrap(), got[1].1.clone().unwrap(), got[2].1.clone().unwrap());
    assert_eq!(ins["after"]["big"].as_str().map(str::len), Some(10000));
    assert_eq!(upd["before"], Value::Null);
    assert_eq!(upd["after"]["n"], 2);
    assert_eq!(upd["after"]["big"], "__debezium_unavailable_value");
    assert_eq!(del["before"]["id"], 1);
    assert_eq!(del["before"]["n"], Value::Null);
    assert_eq!(got[3].1, None, "the tombstone");
    c.batch_execute("SELECT kafka.uncapture('wal_identity'); DROP TABLE wal_identity").unwrap();
}

/// Columns added, renamed, retyped and dropped between changes (in one transaction and in
/// several, decoded after all of them committed or not): each event has the columns the table
/// had when it changed.
#[test]
fn each_event_has_the_shape_of_its_moment() {
    let mut c = pg();
    let t = topic("wal_shapes");
    c.batch_execute("DROP TABLE IF EXISTS wal_shapes; CREATE TABLE wal_shapes (id int PRIMARY KEY, a int)")
        .unwrap();
    c.execute("SELECT kafka.capture('wal_shapes', topic => $1, method => 'wal')", &[&t]).unwrap();
    c.batch_execute(
        "INSERT INTO wal_shapes VALUES (1, 1);
         BEGIN;
         ALTER TABLE wal_shapes ADD COLUMN b text;
         INSERT INTO wal_shapes VALUES (2, 2, 'two');
         ALTER TABLE wal_shapes RENAME COLUMN a TO a2;
         INSERT INTO wal_shapes VALUES (3, 3, 'three');
         COMMIT;
         ALTER TABLE wal_shapes ALTER COLUMN a2 TYPE text;
         INSERT INTO wal_shapes VALUES (4, 'four', 'four');
         ALTER TABLE wal_shapes DROP COLUMN b;
         INSERT INTO wal_shapes VALUES (5, 'five')",
    )
    .unwrap();
    let after: Vec<Value> = events(&t, 5).into_iter().map(|(_, v)| v.unwrap()["after"].clone()).collect();
    assert_eq!(after[0], serde_json::json!({"id": 1, "a": 1}));
    assert_eq!(after[1], serde_json::json!({"id": 2, "a": 2, "b": "two"}));
    assert_eq!(after[2], serde_json::json!({"id": 3, "a2": 3, "b": "three"}));
    assert_eq!(after[3], serde_json::json!({"id": 4, "a2": "four", "b": "four"}));
    assert_eq!(after[4], serde_json::json!({"id": 5, "a2": "five"}));
    c.batch_execute("SELECT kafka.uncapture('wal_shapes'); DROP TABLE wal_shapes").unwrap();
}

/// A captured partitioned table: its partitions' changes (one with its columns in another
/// order) come under the root's topic, table name and columns, as `publish_via_partition_root`.
#[test]
fn partitions_come_under_their_root() {
    let mut c = pg();
    let t = topic("wal_parts");
    c.batch_execute(
        "DROP TABLE IF EXISTS wal_parts;
         CREATE TABLE wal_parts (id int, region text, v int, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
         CREATE TABLE wal_parts_eu PARTITION OF wal_parts FOR VALUES IN ('eu');
         CREATE TABLE wal_parts_us (v int, junk int, region text NOT NULL, id int NOT NULL);
         ALTER TABLE wal_parts_us DROP COLUMN junk;
         ALTER TABLE wal_parts ATTACH PARTITION wal_parts_us FOR VALUES IN ('us')",
    )
    .unwrap();
    c.execute("SELECT kafka.capture('wal_parts', topic => $1, method => 'wal')", &[&t]).unwrap();
    c.batch_execute(
        "INSERT INTO wal_parts VALUES (1, 'eu', 10), (2, 'us', 20);
         UPDATE wal_parts SET v = v + 1",
    )
    .unwrap();
    let got = events(&t, 4);
    for (_, v) in &got {
        let v = v.as_ref().unwrap();
        assert_eq!(v["source"]["table"], "wal_parts");
        let row = &v["after"];
        let keys: Vec<&str> = row.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["id", "region", "v"], "the root's columns, in its order");
    }
    let us = got.iter().find(|(_, v)| v.as_ref().unwrap()["after"]["region"] == "us").unwrap();
    assert_eq!(us.1.as_ref().unwrap()["after"], serde_json::json!({"id": 2, "region": "us", "v": 20}));
    c.batch_execute("SELECT kafka.uncapture('wal_parts'); DROP TABLE wal_parts").unwrap();
}

/// `produce()` keeps working beside a wal-captured table, in the same transactions: both arrive.
#[test]
fn produce_and_wal_capture_work_side_by_side() {
    let mut c = pg();
    let (t, p) = (topic("wal_side"), topic("wal_side_produced"));
    c.batch_execute("DROP TABLE IF EXISTS wal_side; CREATE TABLE wal_side (id int PRIMARY KEY)").unwrap();
    c.execute("SELECT kafka.capture('wal_side', topic => $1, method => 'wal')", &[&t]).unwrap();
    for i in 0..20 {
        let mut tx = c.transaction().unwrap();
        tx.execute("INSERT INTO wal_side VALUES ($1)", &[&i]).unwrap();
        tx.execute("SELECT kafka.produce($1, $2)", &[&p, &i.to_string()]).unwrap();
        tx.commit().unwrap();
    }
    let ids: Vec<i64> =
        events(&t, 20).iter().map(|(k, _)| k.as_ref().unwrap()["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, (0..20).collect::<Vec<i64>>());
    let produced: Vec<String> =
        TopicReader::new(&p).read_at_least(20).iter().map(|r| r.text().unwrap()).collect();
    assert_eq!(produced, (0..20).map(|i| i.to_string()).collect::<Vec<_>>());
    c.batch_execute("SELECT kafka.uncapture('wal_side'); DROP TABLE wal_side").unwrap();
}

/// What the server cannot do is refused before anything is made: an unknown method (22023), a
/// server that will not load the plugin (55000, naming the setting). The slot is made by the
/// first wal capture and dropped once the last is gone.
#[test]
fn requirements_are_checked_and_the_slot_follows_the_captures() {
    let mut c = pg();
    c.batch_execute("DROP TABLE IF EXISTS wal_req; CREATE TABLE wal_req (id int PRIMARY KEY)").unwrap();
    let (state, hint) = error_of(&mut c, "SELECT kafka.capture('wal_req', method => 'logical')");
    assert_eq!(state, "22023");
    assert!(hint.unwrap().contains("'wal'"));
    c.batch_execute("SET output_plugin_libraries = 'pgoutput'").unwrap();
    let (state, hint) = error_of(&mut c, "SELECT kafka.capture('wal_req', method => 'wal')");
    assert_eq!(state, "55000");
    assert!(hint.unwrap().contains("output_plugin_libraries"));
    c.batch_execute("RESET output_plugin_libraries").unwrap();
    // pg_kafka's own tables: the worker writes them, and WAL capture skips the worker's writes.
    let (state, hint) = error_of(&mut c, "SELECT kafka.capture('kafka.config', method => 'wal')");
    assert_eq!(state, "55000");
    assert!(hint.unwrap().contains("method => 'trigger'"));
    let captured: i64 = c
        .query_one("SELECT count(*) FROM kafka.captures WHERE \"table\" = 'wal_req'::regclass", &[])
        .unwrap()
        .get(0);
    assert_eq!(captured, 0, "nothing written by a refused capture");

    // Only this test's capture: once it is gone, so is the slot.
    let others: i64 =
        c.query_one("SELECT count(*) FROM kafka.captures WHERE method = 'wal'", &[]).unwrap().get(0);
    c.batch_execute("SELECT kafka.capture('wal_req', method => 'wal')").unwrap();
    let slot = |c: &mut postgres::Client| -> Option<String> {
        c.query_one("SELECT wal_slot FROM kafka.status", &[]).unwrap().get(0)
    };
    assert!(slot(&mut c).is_some());
    c.batch_execute("SELECT kafka.uncapture('wal_req')").unwrap();
    if others == 0 {
        wait_until("the slot to be dropped", || slot(&mut c).is_none());
        // And the first capture in a transaction that already wrote cannot make it.
        let mut tx = c.transaction().unwrap();
        tx.batch_execute("INSERT INTO wal_req VALUES (1)").unwrap();
        let err = tx.batch_execute("SELECT kafka.capture('wal_req', method => 'wal')").unwrap_err();
        assert_eq!(err.as_db_error().unwrap().code().code(), "25001");
    }
    c.batch_execute("DROP TABLE wal_req").unwrap();
}

/// The first wal capture makes the slot and holds it until the slot's start point is found,
/// which waits for the transactions running then to end. Meanwhile the worker leaves the slot
/// alone and goes on delivering (it used to try to acquire the slot, fail, and restart), then
/// decodes from it once the capture is made.
#[test]
fn the_worker_goes_on_while_a_capture_makes_the_slot() {
    let mut c = pg();
    c.batch_execute(
        "DROP TABLE IF EXISTS wal_making, wal_making_busy, wal_making_ddl1, wal_making_ddl2;
         CREATE TABLE wal_making (id int PRIMARY KEY); CREATE TABLE wal_making_busy (id int);",
    )
    .unwrap();
    let others: i64 =
        c.query_one("SELECT count(*) FROM kafka.captures WHERE method = 'wal'", &[]).unwrap().get(0);
    assert_eq!(others, 0, "another wal capture is left over: this test needs the slot not to exist");
    let slot = |c: &mut postgres::Client| -> Option<i32> {
        let row =
            c.query_opt("SELECT active_pid FROM pg_replication_slots WHERE slot_name LIKE 'pg_kafka_%'", &[]);
        row.unwrap().and_then(|r| r.get(0))
    };
    wait_until("the slot of earlier captures to be dropped", || {
        c.query_one("SELECT count(*) = 0 FROM pg_replication_slots WHERE slot_name LIKE 'pg_kafka_%'", &[])
            .unwrap()
            .get(0)
    });
    let worker = status(&mut c).pid;
    let (t, during) = (topic("wal_making"), topic("wal_making_produce"));

    // A transaction with an xid runs: the capture's slot waits for it, held by that session.
    let mut busy = pg();
    let mut tx = busy.transaction().unwrap();
    tx.batch_execute("INSERT INTO wal_making_busy VALUES (1)").unwrap();
    let making = {
        let t = t.clone();
        std::thread::spawn(move || {
            pg().execute("SELECT kafka.capture('wal_making', topic => $1, method => 'wal')", &[&t]).unwrap();
        })
    };
    let mut holder = None;
    wait_until("the capture to hold the slot it makes", || {
        holder = slot(&mut c);
        holder.is_some()
    });
    // A commit wakes the worker, and its pass finds the slot held by the capture.
    c.execute("SELECT kafka.produce($1, 'while the slot is made')", &[&during]).unwrap();
    let mut reader = TopicReader::new(&during);
    let r = reader.read_at_least(1);
    assert_eq!(r[0].payload.as_deref(), Some(&b"while the slot is made"[..]));
    assert_eq!(slot(&mut c), holder, "the capture still holds the slot");
    assert_eq!(status(&mut c).pid, worker, "the worker ran on");

    // A catalog change begins while the slot waits, and commits after the slot has its first
    // snapshot: making the slot replays its invalidations then, and the capture still succeeds
    // (it failed with "snapshot reference … is not owned by resource owner TopTransaction").
    let mut other = pg();
    let mut ddl = other.transaction().unwrap();
    ddl.batch_execute("CREATE TABLE wal_making_ddl1 (id int)").unwrap();
    let log_from = log_len();
    tx.commit().unwrap();
    wait_until("the slot's first snapshot, waiting for the catalog change", || {
        log_since(log_from).contains("found initial consistent point")
    });
    ddl.batch_execute("CREATE TABLE wal_making_ddl2 (id int)").unwrap();
    ddl.commit().unwrap();
    making.join().expect("the capture succeeds");
    c.batch_execute("INSERT INTO wal_making VALUES (1), (2)").unwrap();
    let ids: Vec<_> = events(&t, 2).iter().map(|(_, v)| v.as_ref().unwrap()["after"]["id"].clone()).collect();
    assert_eq!(ids, vec![Value::from(1), Value::from(2)]);
    assert_eq!(status(&mut c).pid, worker, "the worker ran on");
    c.batch_execute(
        "SELECT kafka.uncapture('wal_making'); DROP TABLE wal_making, wal_making_busy, wal_making_ddl1, wal_making_ddl2",
    )
    .unwrap();
}

/// Sessions write a wal-captured table (with late-committing transactions and rollbacks, each
/// larger than `logical_decoding_work_mem`, so streamed to the worker while it is written) while
/// the worker is killed, PostgreSQL crashes and Kafka restarts: every committed change arrives,
/// none of a rolled-back transaction, and each row's events in commit order; exactly once,
/// a read_committed consumer sees each event once.
fn wal_capture_survives_faults(exactly_once: bool) {
    let _mode = exactly_once.then(ExactlyOnce::on);
    let t = topic(if exactly_once { "wal_faults_eo" } else { "wal_faults" });
    let table = if exactly_once { "wal_faults_eo" } else { "wal_faults" };
    let mut c = pg();
    c.batch_execute(&format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id int PRIMARY KEY, session int, n int);
         ALTER TABLE {table} REPLICA IDENTITY FULL"
    ))
    .unwrap();
    c.execute(&format!("SELECT kafka.capture('{table}', topic => $1, method => 'wal')"), &[&t]).unwrap();
    // Each transaction is larger than the reorder buffer may hold: streamed while it is written.
    let _work_mem = SystemSet::set(&mut c, "logical_decoding_work_mem", "64kB");
    let streamed_before = streamed(&mut c);
    const SESSIONS: i32 = 3;
    const TXS: i32 = 60;
    const ROWS: i32 = 400;
    let kept = |i: i32| i % 7 != 3;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(0));
    let writers: Vec<_> = (0..SESSIONS)
        .map(|s| {
            let done = done.clone();
            let table = table.to_owned();
            std::thread::spawn(move || {
                let mut c = pg();
                for i in 0..TXS {
                    // A crash may cut a transaction off: retried until it commits (or rolls back).
                    loop {
                        let r = (|| -> Result<(), postgres::Error> {
                            let mut tx = c.transaction()?;
                            // each transaction inserts its ROWS rows and updates the session's row 0
                            tx.execute(
                                &format!(
                                    "INSERT INTO {table} SELECT $1 * 1000000 + $2 * 1000 + j, $1, 0 FROM generate_series(1, $3) j"
                                ),
                                &[&s, &i, &ROWS],
                            )?;
                            tx.execute(
                                &format!("INSERT INTO {table} VALUES ($1 * 1000000, $1, $2) ON CONFLICT (id) DO UPDATE SET n = $2"),
                                &[&s, &i],
                            )?;
                            if i % 5 == 0 {
                                tx.batch_execute("SELECT pg_sleep(0.2)")?; // commits late, after others
                            }
                            if kept(i) {
                                tx.commit()
                            } else {
                                tx.rollback()
                            }
                        })();
                        if r.is_ok() {
                            break;
                        }
                        c = loop {
                            match postgres::Client::connect(&connect_string(), postgres::NoTls) {
                                Ok(c) => break c,
                                // the server restarting: a condition wait on a reconnection
                                Err(_) => std::thread::sleep(std::time::Duration::from_millis(200)),
                            }
                        };
                        // The commit may have happened before the connection broke.
                        let probe = format!("SELECT FROM {table} WHERE id = $1 * 1000000 + $2 * 1000 + 1");
                        if c.query(&probe, &[&s, &i]).map(|r| !r.is_empty()).unwrap_or(false) {
                            break;
                        }
                    }
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    wait_until("a third of the transactions", || {
        done.load(std::sync::atomic::Ordering::Relaxed) >= SESSIONS * TXS / 3
    });
    wait_until("a transaction streamed before its commit", || streamed(&mut c) > streamed_before);
    let worker = status(&mut c).pid.expect("the worker runs");
    std::process::Command::new("kill").args(["-9", &worker.to_string()]).status().unwrap();
    wait_until("two thirds of the transactions", || {
        done.load(std::sync::atomic::Ordering::Relaxed) >= 2 * SESSIONS * TXS / 3
    });
    stack(&["crash", "pg"]);
    stack(&["up", "pg"]);
    stack(&["down", "kafka"]);
    stack(&["up", "kafka"]);
    writers.into_iter().for_each(|h| h.join().unwrap());

    // What the table holds is what committed: every row's events must be there.
    let mut c = pg();
    let rows: Vec<(i32, i32)> = c
        .query(&format!("SELECT id, n FROM {table}"), &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let committed_txs = (0..TXS).filter(|&i| kept(i)).count() as i32;
    assert_eq!(rows.len() as i32, SESSIONS * (committed_txs * ROWS + 1), "the table holds what committed");
    // Each committed transaction: ROWS creates and one create-or-update of row s*1000000.
    let expected = (SESSIONS * committed_txs * (ROWS + 1)) as usize;
    let isolation = if exactly_once { "read_committed" } else { "read_uncommitted" };
    let got = read_all(&bootstrap_servers(), &t, isolation, expected, std::time::Duration::from_secs(120));
    let mut per_key: BTreeMap<i64, Vec<(String, i64)>> = BTreeMap::new();
    let mut seen = HashMap::new();
    for (_, r) in &got {
        let Some(p) = r.payload.as_deref() else { continue };
        let v: Value = serde_json::from_slice(p).unwrap();
        let after = &v["after"];
        let id = after["id"].as_i64().unwrap();
        let lsn = v["source"]["lsn"].as_i64().unwrap();
        *seen.entry((id, lsn)).or_insert(0) += 1;
        per_key
            .entry(id)
            .or_default()
            .push((v["op"].as_str().unwrap().to_owned(), after["n"].as_i64().unwrap()));
    }
    let rows: HashMap<i64, i64> = rows.iter().map(|&(id, n)| (id as i64, n as i64)).collect();
    for (id, n) in &rows {
        let evs = per_key.get(id).unwrap_or_else(|| panic!("row {id}: no event"));
        assert_eq!(evs.last().unwrap().1, *n, "row {id}: the last event is the row's state");
        if *id % 1000000 == 0 {
            let ns: Vec<i64> = evs.iter().map(|e| e.1).collect();
            let mut first: Vec<i64> = Vec::new();
            for n in &ns {
                if !first.contains(n) {
                    first.push(*n);
                }
            }
            assert!(first.windows(2).all(|w| w[0] < w[1]), "row {id}: updates in commit order: {ns:?}");
            assert!(first.iter().all(|&i| kept(i as i32)), "row {id}: a rolled-back update arrived");
        }
    }
    assert_eq!(per_key.len(), rows.len(), "no event of a rolled-back row");
    if exactly_once {
        let dup = seen.values().filter(|&&n| n > 1).count();
        assert_eq!(dup, 0, "exactly once: no event twice to a read_committed consumer");
    }
    c.batch_execute(&format!("SELECT kafka.uncapture('{table}'); DROP TABLE {table}")).unwrap();
}

#[test]
fn wal_capture_loses_nothing_through_crashes_and_outages() {
    wal_capture_survives_faults(false);
}

#[test]
fn wal_capture_exactly_once_sends_nothing_twice_through_crashes() {
    wal_capture_survives_faults(true);
}

/// A backfill of a wal-captured table while sessions update it: a consumer applying the events
/// in order ends with the table's rows.
#[test]
fn a_backfill_during_changes_ends_with_the_tables_state() {
    let mut c = pg();
    let t = topic("wal_backfill");
    c.batch_execute(
        "DROP TABLE IF EXISTS wal_backfill; CREATE TABLE wal_backfill (id int PRIMARY KEY, n int);
         INSERT INTO wal_backfill SELECT i, 0 FROM generate_series(1, 3000) i",
    )
    .unwrap();
    c.execute("SELECT kafka.capture('wal_backfill', topic => $1, method => 'wal')", &[&t]).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut c = pg();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                c.execute("UPDATE wal_backfill SET n = $1 WHERE id % 97 = $1 % 97", &[&n]).unwrap();
                c.execute("DELETE FROM wal_backfill WHERE id = 3000 - $1", &[&n]).unwrap();
            }
        })
    };
    c.batch_execute("CALL kafka.backfill('wal_backfill', 100)").unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let rows: HashMap<i64, i64> = c
        .query("SELECT id, n FROM wal_backfill", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, i32>(0) as i64, r.get::<_, i32>(1) as i64))
        .collect();
    // Apply every event (r, c, u, d) in order until the table's last change is in.
    let last_lsn = current_lsn(&mut c);
    let mut r = TopicReader::new(&t);
    let mut applied: HashMap<i64, i64> = HashMap::new();
    let mut i = 0;
    loop {
        let rec = r.read_at_least(i + 1)[i].clone();
        i += 1;
        let Some(p) = rec.payload else { continue };
        let Ok(v) = serde_json::from_slice::<Value>(&p) else { continue };
        match v["op"].as_str().unwrap() {
            "d" => {
                applied.remove(&v["before"]["id"].as_i64().unwrap());
            }
            _ => {
                applied.insert(v["after"]["id"].as_i64().unwrap(), v["after"]["n"].as_i64().unwrap());
            }
        }
        if v["source"]["lsn"].as_u64().is_some_and(|l| l >= last_lsn) || applied == rows {
            break;
        }
    }
    assert_eq!(applied, rows, "the consumer's copy is the table");
    c.batch_execute("SELECT kafka.uncapture('wal_backfill'); DROP TABLE wal_backfill").unwrap();
}

/// The slot disappears under a wal capture (what a promoted standby finds before PostgreSQL 17,
/// here dropped by hand): the worker says so in `kafka.status` and the log, with the way out
/// (`kafka.backfill`), makes the slot again, and changes from then on are captured.
#[test]
fn a_lost_slot_is_reported_and_made_again() {
    let mut c = pg();
    let t = topic("wal_lost");
    c.batch_execute("DROP TABLE IF EXISTS wal_lost; CREATE TABLE wal_lost (id int PRIMARY KEY)").unwrap();
    c.execute("SELECT kafka.capture('wal_lost', topic => $1, method => 'wal')", &[&t]).unwrap();
    let slot: String = c.query_one("SELECT wal_slot FROM kafka.status", &[]).unwrap().get(0);
    let log_from = log_len();
    // The worker holds the slot: end it, and drop the slot before the new one takes it.
    wait_until("the slot to be dropped by hand", || {
        let pid = status(&mut c).pid;
        if let Some(pid) = pid {
            c.execute("SELECT pg_terminate_backend($1)", &[&pid]).unwrap();
        }
        c.execute("SELECT pg_drop_replication_slot($1)", &[&slot]).is_ok()
    });
    made_again(&mut c, "wal_lost", &t, 1, &format!("replication slot {slot} was missing"), log_from);
    c.batch_execute("SELECT kafka.uncapture('wal_lost'); DROP TABLE wal_lost").unwrap();
}

/// PostgreSQL invalidates a slot that keeps more WAL than `max_slot_wal_keep_size` allows (here
/// a transaction stays open while WAL is written and checkpointed): the worker says so and makes
/// it again, as for a lost slot, once that transaction ended, delivering meanwhile. It used to
/// restart in a loop, unable to read the slot, and delivered nothing.
#[test]
fn an_invalidated_slot_is_reported_and_made_again() {
    let mut c = pg();
    let t = topic("wal_invalid");
    c.batch_execute(
        "DROP TABLE IF EXISTS wal_invalid, wal_invalid_fill;
         CREATE TABLE wal_invalid (id int PRIMARY KEY); CREATE TABLE wal_invalid_fill (x text);",
    )
    .unwrap();
    c.execute("SELECT kafka.capture('wal_invalid', topic => $1, method => 'wal')", &[&t]).unwrap();
    let slot: String = c.query_one("SELECT wal_slot FROM kafka.status", &[]).unwrap().get(0);
    let log_from = log_len();
    let _keep = SystemSet::set(&mut c, "max_slot_wal_keep_size", "1"); // MB
                                                                       // The slot cannot move past an open transaction's first change.
    let mut open = pg();
    let mut tx = open.transaction().unwrap();
    tx.batch_execute("INSERT INTO wal_invalid VALUES (1)").unwrap();
    wait_until("PostgreSQL to invalidate the slot", || {
        c.batch_execute(
            "INSERT INTO wal_invalid_fill SELECT repeat('x', 1000) FROM generate_series(1, 20000);
             SELECT pg_switch_wal(); CHECKPOINT;",
        )
        .unwrap();
        log_since(log_from)
            .lines()
            .any(|l| l.contains("invalidating") && l.contains(&format!("slot \"{slot}\"")))
    });
    // Making the slot again would wait for this transaction: the worker puts it off, says so,
    // and delivers meanwhile.
    wait_until("the worker to put off making the slot", || {
        log_since(log_from).contains(&format!("replication slot {slot} was invalidated by PostgreSQL"))
            && log_since(log_from).contains("it is made again once the transactions")
    });
    let during = topic("wal_invalid_produce");
    c.execute("SELECT kafka.produce($1, 'while the slot waits')", &[&during]).unwrap();
    let mut reader = TopicReader::new(&during);
    assert_eq!(reader.read_at_least(1)[0].payload.as_deref(), Some(&b"while the slot waits"[..]));
    // Once it ends the slot is made. (Its change came before the new slot: not captured.)
    tx.commit().unwrap();
    made_again(&mut c, "wal_invalid", &t, 2, &format!("replication slot {slot} was invalidated"), log_from);
    c.batch_execute("SELECT kafka.uncapture('wal_invalid'); DROP TABLE wal_invalid, wal_invalid_fill")
        .unwrap();
}

fn log_len() -> u64 {
    std::fs::metadata(server_log()).unwrap().len()
}

/// The server log from byte `from` on.
fn log_since(from: u64) -> String {
    let log = std::fs::read(server_log()).unwrap();
    String::from_utf8_lossy(&log[from as usize..]).into_owned()
}

/// After the slot was lost (the log from `log_from` says `said`): `kafka.status` says when, the
/// WARNING gives the way out, the slot is made again and captures row `id` inserted now into
/// `table`, and backfilling the wal-captured tables clears the status.
fn made_again(c: &mut postgres::Client, table: &str, t: &str, id: i32, said: &str, log_from: u64) {
    let lost = |c: &mut postgres::Client| -> bool {
        c.query_one("SELECT wal_slot_lost_at IS NOT NULL FROM kafka.status", &[]).unwrap().get(0)
    };
    wait_until("the WARNING, with the way out, in the server log", || {
        let log = log_since(log_from);
        log.contains(said) && log.contains("kafka.backfill(table)")
    });
    assert!(lost(c), "kafka.status says when the slot was lost");
    let noted: i64 = c
        .query_one("SELECT count(*) FROM kafka.recent_errors WHERE strpos(error, $1) > 0", &[&said])
        .unwrap()
        .get(0);
    assert!(noted >= 1, "kafka.recent_errors has it");
    assert!(
        !log_since(log_from).contains("delivery stopped"),
        "delivery went on, and the log does not say otherwise"
    );
    wait_until("the slot to be made again", || {
        c.query_one("SELECT wal_slot IS NOT NULL FROM kafka.status", &[]).unwrap().get::<_, bool>(0)
    });
    c.execute(&format!("INSERT INTO {table} VALUES ($1)"), &[&id]).unwrap();
    let got = events(t, 1);
    assert_eq!(got[0].0.as_ref().unwrap()["id"], id, "the first event after the slot was made again");
    // The way out: backfilling the wal-captured tables (here, the only one of this test's).
    let others: Vec<String> = c
        .query(
            "SELECT \"table\"::text FROM kafka.captures WHERE method = 'wal' AND \"table\" <> $1::text::regclass",
            &[&table],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for other in others.iter().map(String::as_str).chain([table]) {
        c.batch_execute(&format!("CALL kafka.backfill('{other}')")).unwrap();
    }
    assert!(!lost(c), "backfilled: kafka.status no longer shows the lost slot");
}
