//! Row-change capture: Debezium-shaped events for INSERT, UPDATE, DELETE and TRUNCATE, the type
//! mappings (exact JSON per type group), options, refusals, the outbox relay and backfill.

use pg_kafka_e2e::*;
use postgres::Client;
use serde_json::{json, Value};

/// A fresh table named after the test, captured with `options` (SQL named arguments).
fn captured(c: &mut Client, name: &str, columns: &str, options: &str) -> String {
    let t = topic(name);
    c.batch_execute(&format!("DROP TABLE IF EXISTS {name}; CREATE TABLE {name} ({columns})")).unwrap();
    c.execute(&format!("SELECT kafka.capture('{name}', topic => $1 {options})"), &[&t]).unwrap();
    t
}

fn drop_table(c: &mut Client, name: &str) {
    c.batch_execute(&format!("SELECT kafka.uncapture('{name}'); DROP TABLE {name}")).unwrap();
}

/// The first n events of a topic as (key, value) JSON; a tombstone has value None.
fn events(t: &str, n: usize) -> Vec<(Option<Value>, Option<Value>)> {
    let mut r = TopicReader::new(t);
    let parse = |b: &Option<Vec<u8>>| b.as_ref().map(|b| serde_json::from_slice::<Value>(b).unwrap());
    r.read_at_least(n).iter().take(n).map(|m| (parse(&m.key), parse(&m.payload))).collect()
}

fn after(e: &(Option<Value>, Option<Value>)) -> &Value {
    &e.1.as_ref().unwrap()["after"]
}

#[test]
fn every_operation_becomes_a_debezium_event() {
    let mut c = pg();
    let t = captured(&mut c, "cap_ops", "id int PRIMARY KEY, name text", "");
    c.batch_execute(
        "INSERT INTO cap_ops VALUES (1, 'one'), (2, 'two');
         UPDATE cap_ops SET name = 'uno' WHERE id = 1;
         UPDATE cap_ops SET id = 3 WHERE id = 2;
         DELETE FROM cap_ops WHERE id = 1;
         TRUNCATE cap_ops;",
    )
    .unwrap();
    let ev = events(&t, 9);
    let ops: Vec<&str> =
        ev.iter().map(|(_, v)| v.as_ref().map_or("tombstone", |v| v["op"].as_str().unwrap())).collect();
    assert_eq!(ops, ["c", "c", "u", "d", "tombstone", "c", "d", "tombstone", "t"]);
    assert_eq!(ev[0].0, Some(json!({"id": 1})));
    assert_eq!(after(&ev[0]), &json!({"id": 1, "name": "one"}));
    let u = ev[2].1.as_ref().unwrap();
    assert_eq!(
        (&u["before"], &u["after"]),
        (&json!({"id": 1, "name": "one"}), &json!({"id": 1, "name": "uno"}))
    );
    // A key change: delete on the old key, its tombstone, create on the new key.
    assert_eq!(
        (ev[3].0.clone(), ev[4].0.clone(), ev[5].0.clone()),
        (Some(json!({"id": 2})), Some(json!({"id": 2})), Some(json!({"id": 3})))
    );
    let src = &ev[0].1.as_ref().unwrap()["source"];
    assert_eq!(src["connector"], "postgresql");
    assert_eq!(
        (src["db"].as_str(), src["schema"].as_str(), src["table"].as_str()),
        (Some("postgres"), Some("public"), Some("cap_ops"))
    );
    assert!(src["txId"].is_i64() && src["ts_ms"].is_i64() && src["lsn"].is_null());
    assert_eq!(src["snapshot"], "false");
    assert!(ev[0].1.as_ref().unwrap()["ts_ms"].is_i64());
    assert_eq!(ev[8].1.as_ref().unwrap()["before"], Value::Null);
    drop_table(&mut c, "cap_ops");
}

#[test]
fn numbers_and_booleans() {
    let mut c = pg();
    let t = captured(
        &mut c,
        "cap_num",
        "id int PRIMARY KEY, a smallint, b bigint, n numeric(10,2), f float8, r real, ok bool",
        "",
    );
    c.batch_execute("INSERT INTO cap_num VALUES (1, -2, 9007199254740993, 12.50, 1.5, 0.25, true)").unwrap();
    assert_eq!(
        after(&events(&t, 1)[0]),
        &json!({"id": 1, "a": -2, "b": 9007199254740993i64, "n": "12.50", "f": 1.5, "r": 0.25, "ok": true})
    );
    drop_table(&mut c, "cap_num");
}

#[test]
fn strings_bytes_uuids_and_enums() {
    let mut c = pg();
    c.batch_execute("DROP TYPE IF EXISTS cap_mood CASCADE; CREATE TYPE cap_mood AS ENUM ('sad', 'happy')")
        .unwrap();
    let t = captured(
        &mut c,
        "cap_str",
        "id int PRIMARY KEY, s text, v varchar(5), ch char(3), b bytea, u uuid, m cap_mood",
        "",
    );
    c.batch_execute(
        "INSERT INTO cap_str VALUES (1, 'naïve \"q\"', 'abc', 'ab', '\\x00ff80', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'happy')",
    )
    .unwrap();
    assert_eq!(
        after(&events(&t, 1)[0]),
        &json!({"id": 1, "s": "naïve \"q\"", "v": "abc", "ch": "ab ", "b": "AP+A",
                "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "m": "happy"})
    );
    drop_table(&mut c, "cap_str");
    c.batch_execute("DROP TYPE cap_mood").unwrap();
}

#[test]
fn dates_times_and_intervals() {
    let mut c = pg();
    let t = captured(
        &mut c,
        "cap_time",
        "id int PRIMARY KEY, d date, t time, t3 time(3), tz timetz, ts timestamp, ts3 timestamp(3), tstz timestamptz, i interval",
        "",
    );
    c.batch_execute(
        "SET TimeZone = 'Europe/Paris';
         INSERT INTO cap_time VALUES (1, '2021-02-03', '04:05:06.789', '04:05:06.789', '04:05:06+02',
           '2021-02-03 04:05:06.789', '2021-02-03 04:05:06.789', '2021-02-03 04:05:06.789+02', '1 month 1 day 02:00:00.5');
         RESET TimeZone;",
    )
    .unwrap();
    assert_eq!(
        after(&events(&t, 1)[0]),
        &json!({"id": 1, "d": 18661, "t": 14706789000i64, "t3": 14706789, "tz": "02:05:06Z",
                "ts": 1612325106789000i64, "ts3": 1612325106789i64, "tstz": "2021-02-03T02:05:06.789000Z",
                "i": 2629800000000i64 + 86400000000i64 + 7200500000i64})
    );
    drop_table(&mut c, "cap_time");
}

/// Compared as text, as Debezium's JSON converter writes them: floats keep a fraction or an
/// exponent (Java's `Double.toString`), `timestamptz` has the column's precision of fraction
/// digits (6 without one) and a sign past year 9999, infinite dates and timestamps are
/// Debezium's sentinel numbers, and a key (and its schema) follows the primary key's order.
#[test]
fn values_are_written_as_debeziums_json_converter_writes_them() {
    let mut c = pg();
    let t = captured(
        &mut c,
        "cap_java",
        "b int, a int, f float8, r real, tz timestamptz, tz3 timestamptz(3), tz0 timestamptz(0), d date,
         ts timestamp, ts3 timestamp(3), tza timestamptz[], PRIMARY KEY (b, a)",
        "",
    );
    c.batch_execute(
        "INSERT INTO cap_java VALUES
           (2, 1, 100, 0.1, '2024-05-01 10:00:00+00', '2024-05-01 10:00:00.5+00', '2024-05-01 10:00:00+00',
            'infinity', 'infinity', '-infinity', ARRAY['2020-04-01 11:51:02+00'::timestamptz]);
         INSERT INTO cap_java VALUES
           (4, 3, 1e20, 1e10, '21016-11-04 06:51:30+00', NULL, NULL, '-infinity', '-infinity', NULL, NULL)",
    )
    .unwrap();
    let got = TopicReader::new(&t).read_at_least(2).to_vec();
    let text = |b: &Option<Vec<u8>>| String::from_utf8(b.clone().unwrap()).unwrap();
    assert_eq!(text(&got[0].key), r#"{"b":2,"a":1}"#);
    let first = text(&got[0].payload);
    for want in [
        r#""f":100.0"#,
        r#""r":0.1"#,
        r#""tz":"2024-05-01T10:00:00.000000Z""#,
        r#""tz3":"2024-05-01T10:00:00.500Z""#,
        r#""tz0":"2024-05-01T10:00:00Z""#,
        r#""d":-2147472692"#,
        r#""ts":9223372036825200000"#,
        r#""ts3":-9223372036832400"#,
        r#""tza":["2020-04-01T11:51:02.000000Z"]"#,
        r#""after":{"b":2,"a":1,"#,
    ] {
        assert!(first.contains(want), "{want} in {first}");
    }
    let second = text(&got[1].payload);
    for want in [
        r#""f":1.0E20"#,
        r#""r":1.0E10"#,
        r#""tz":"+21016-11-04T06:51:30.000000Z""#,
        r#""d":-2147472691"#,
        r#""ts":-9223372036832400000"#,
    ] {
        assert!(second.contains(want), "{want} in {second}");
    }
    drop_table(&mut c, "cap_java");

    let t = captured(&mut c, "cap_java_s", "b int, a int, PRIMARY KEY (b, a)", ", schemas => true");
    c.batch_execute("INSERT INTO cap_java_s VALUES (2, 1)").unwrap();
    let key = text(&TopicReader::new(&t).read_at_least(1)[0].key);
    let (b, a) = (key.find(r#""field":"b""#).unwrap(), key.find(r#""field":"a""#).unwrap());
    assert!(b < a, "the key schema in primary key order: {key}");
    assert!(key.ends_with(r#""payload":{"b":2,"a":1}}"#), "{key}");
    drop_table(&mut c, "cap_java_s");
}

#[test]
fn json_arrays_and_nulls() {
    let mut c = pg();
    let t = captured(
        &mut c,
        "cap_json",
        "id int PRIMARY KEY, j json, jb jsonb, ia int[], ta text[], e int[], n text",
        "",
    );
    c.batch_execute(
        "INSERT INTO cap_json VALUES (1, '{\"b\": 1,  \"a\": [1]}', '{\"b\": 1, \"a\": [1]}', '{1,2}', '{a,NULL}', '{}', NULL),
                                     (2, NULL, NULL, NULL, NULL, NULL, NULL)",
    )
    .unwrap();
    let ev = events(&t, 2);
    assert_eq!(
        after(&ev[0]),
        &json!({"id": 1, "j": "{\"b\": 1,  \"a\": [1]}", "jb": "{\"a\": [1], \"b\": 1}", "ia": [1, 2],
                "ta": ["a", null], "e": [], "n": null})
    );
    assert_eq!(
        after(&ev[1]),
        &json!({"id": 2, "j": null, "jb": null, "ia": null, "ta": null, "e": null, "n": null})
    );
    drop_table(&mut c, "cap_json");
}

#[test]
fn unchanged_toasted_values_are_still_in_after() {
    let mut c = pg();
    let t = captured(&mut c, "cap_toast", "id int PRIMARY KEY, big text, n int", "");
    c.batch_execute(
        "ALTER TABLE cap_toast ALTER big SET STORAGE EXTERNAL;
         INSERT INTO cap_toast SELECT 1, string_agg(md5(i::text), '') , 0 FROM generate_series(1, 3000) i;
         UPDATE cap_toast SET n = 1;",
    )
    .unwrap();
    let big: String = c.query_one("SELECT big FROM cap_toast", &[]).unwrap().get(0);
    assert_eq!(big.len(), 96_000);
    let ev = events(&t, 2);
    assert_eq!(after(&ev[1])["big"].as_str(), Some(big.as_str()));
    assert_eq!(ev[1].1.as_ref().unwrap()["before"]["big"].as_str(), Some(big.as_str()));
    assert_eq!(after(&ev[1])["n"], 1);
    drop_table(&mut c, "cap_toast");
}

#[test]
fn options_key_columns_exclusions_before_and_tombstones() {
    let mut c = pg();
    let t = captured(
        &mut c,
        "cap_opts",
        "code text, region text, secret text, v int",
        ", key_columns => ARRAY['region', 'code'], exclude_columns => ARRAY['secret'], emit_before => false, tombstones => false",
    );
    c.batch_execute(
        "INSERT INTO cap_opts VALUES ('a', 'eu', 'pw', 1);
         UPDATE cap_opts SET v = 2;
         DELETE FROM cap_opts;
         INSERT INTO cap_opts VALUES ('end', 'eu', 'pw', 0);",
    )
    .unwrap();
    let ev = events(&t, 4);
    assert_eq!(ev[0].0, Some(json!({"code": "a", "region": "eu"})));
    assert_eq!(after(&ev[0]), &json!({"code": "a", "region": "eu", "v": 1}));
    assert_eq!(ev[1].1.as_ref().unwrap()["before"], Value::Null, "emit_before => false");
    assert_eq!(ev[2].1.as_ref().unwrap()["op"], "d");
    assert_eq!(ev[3].1.as_ref().unwrap()["op"], "c", "no tombstone after the delete");
    drop_table(&mut c, "cap_opts");
}

#[test]
fn only_committed_changes_are_sent() {
    let mut c = pg();
    let t = captured(&mut c, "cap_tx", "id int PRIMARY KEY", "");
    c.batch_execute(
        "BEGIN; INSERT INTO cap_tx VALUES (1); ROLLBACK;
         BEGIN; INSERT INTO cap_tx VALUES (2); SAVEPOINT s; INSERT INTO cap_tx VALUES (3); ROLLBACK TO s; COMMIT;
         INSERT INTO cap_tx VALUES (4);",
    )
    .unwrap();
    let keys: Vec<Value> = events(&t, 2).into_iter().map(|e| e.0.unwrap()["id"].clone()).collect();
    assert_eq!(keys, [json!(2), json!(4)]);
    drop_table(&mut c, "cap_tx");
}

#[test]
fn refusals_are_clear() {
    let mut c = pg();
    c.batch_execute(
        "DROP TABLE IF EXISTS cap_nopk, cap_unlogged; DROP VIEW IF EXISTS cap_view;
         CREATE TABLE cap_nopk (a int); CREATE VIEW cap_view AS SELECT 1 AS x;
         CREATE UNLOGGED TABLE cap_unlogged (id int PRIMARY KEY);",
    )
    .unwrap();
    for (sql, state) in [
        ("SELECT kafka.capture('cap_nopk')", "55000"),
        ("SELECT kafka.capture('cap_view')", "42809"),
        ("SELECT kafka.capture('cap_nopk', key_columns => ARRAY['nope'])", "42703"),
        ("SELECT kafka.capture('cap_nopk', topic => 'bad topic', key_columns => ARRAY['a'])", "22023"),
        ("CREATE TEMP TABLE cap_temp (id int PRIMARY KEY); SELECT kafka.capture('cap_temp')", "0A000"),
    ] {
        let (got, hint) = error_of(&mut c, sql);
        assert_eq!(got, state, "{sql}");
        assert!(hint.is_some(), "{sql}");
    }
    c.batch_execute("SELECT kafka.capture('cap_unlogged')").unwrap();
    let (twice, _) = error_of(&mut c, "SELECT kafka.capture('cap_unlogged')");
    assert_eq!(twice, "42710");
    let listed: i64 = c
        .query_one("SELECT count(*) FROM kafka.captures WHERE \"table\" = 'cap_unlogged'::regclass", &[])
        .unwrap()
        .get(0);
    assert_eq!(listed, 1);
    let uncaptured: bool = c.query_one("SELECT kafka.uncapture('cap_unlogged')", &[]).unwrap().get(0);
    assert!(uncaptured);
    let triggers: i64 = c
        .query_one("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'cap_unlogged'::regclass", &[])
        .unwrap()
        .get(0);
    assert_eq!(triggers, 0);
    c.batch_execute("DROP TABLE cap_nopk, cap_unlogged; DROP VIEW cap_view").unwrap();
}

#[test]
fn outbox_table_relay_in_debeziums_shape() {
    let mut c = pg();
    let kind = topic("order").replace('_', "");
    c.batch_execute(
        "DROP TABLE IF EXISTS cap_outbox;
         CREATE TABLE cap_outbox (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), aggregatetype text NOT NULL,
                                  aggregateid text NOT NULL, type text NOT NULL, payload jsonb);
         SELECT kafka.capture_outbox('cap_outbox', delete_after_queue => true);",
    )
    .unwrap();
    c.execute(
        "INSERT INTO cap_outbox (aggregatetype, aggregateid, type, payload) VALUES ($1, 'o-1', 'OrderCreated', '{\"total\": 5}')",
        &[&kind],
    )
    .unwrap();
    let left: i64 = c.query_one("SELECT count(*) FROM cap_outbox", &[]).unwrap().get(0);
    assert_eq!(left, 0, "rows are deleted once queued");
    let mut r = TopicReader::new(&format!("outbox.event.{kind}"));
    let m = &r.read_at_least(1)[0];
    assert_eq!(m.key.as_deref(), Some(&b"o-1"[..]));
    assert_eq!(m.text().as_deref(), Some("{\"total\": 5}"));
    drop_table(&mut c, "cap_outbox");
}

#[test]
fn backfill_resumes_after_interruption_without_duplicates() {
    let mut c = pg();
    let t = captured(&mut c, "cap_fill", "id int PRIMARY KEY, v text", "");
    c.batch_execute("ALTER TABLE cap_fill DISABLE TRIGGER USER; INSERT INTO cap_fill SELECT i, 'v' || i FROM generate_series(1, 20000) i; ALTER TABLE cap_fill ENABLE TRIGGER USER;").unwrap();
    // First run, killed once it has committed some chunks.
    let mut victim = pg();
    let pid: i32 = victim.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let run =
        std::thread::spawn(move || victim.batch_execute("CALL kafka.backfill('cap_fill', 100)").is_err());
    wait_until("some committed progress", || {
        c.query_opt("SELECT rows_done FROM kafka.backfills WHERE \"table\" = 'cap_fill'::regclass", &[])
            .unwrap()
            .is_some_and(|r| r.get::<_, i64>(0) >= 500)
    });
    c.execute("SELECT pg_terminate_backend($1)", &[&pid]).unwrap();
    let interrupted = run.join().unwrap();
    let (done, finished): (i64, bool) = {
        let r = c.query_one("SELECT rows_done, finished_at IS NOT NULL FROM kafka.backfills WHERE \"table\" = 'cap_fill'::regclass", &[]).unwrap();
        (r.get(0), r.get(1))
    };
    assert!(interrupted && !finished && done < 20000, "the first run was cut off ({done} rows)");
    c.batch_execute("CALL kafka.backfill('cap_fill', 1000)").unwrap();
    let r = c.query_one("SELECT rows_done, finished_at IS NOT NULL FROM kafka.backfills WHERE \"table\" = 'cap_fill'::regclass", &[]).unwrap();
    assert_eq!((r.get::<_, i64>(0), r.get::<_, bool>(1)), (20000, true));
    let ev = events(&t, 20000);
    let mut ids: Vec<i64> = ev.iter().map(|e| e.0.as_ref().unwrap()["id"].as_i64().unwrap()).collect();
    assert!(ev.iter().all(|e| e.1.as_ref().unwrap()["op"] == "r"));
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 20000, "every row once");
    drop_table(&mut c, "cap_fill");
}

#[test]
fn altered_and_dropped_tables_keep_working() {
    let mut c = pg();
    let t = captured(&mut c, "cap_alter", "id int PRIMARY KEY, old text, gone int", "");
    c.batch_execute(
        "ALTER TABLE cap_alter ADD COLUMN added date DEFAULT '1970-01-02';
         ALTER TABLE cap_alter DROP COLUMN gone;
         INSERT INTO cap_alter (id, old) VALUES (1, 'x');",
    )
    .unwrap();
    c.batch_execute(
        "ALTER TABLE cap_alter RENAME old TO renamed; ALTER TABLE cap_alter RENAME id TO key;
                     INSERT INTO cap_alter (key, renamed) VALUES (2, 'y');",
    )
    .unwrap();
    let ev = events(&t, 2);
    assert_eq!(after(&ev[0]), &json!({"id": 1, "old": "x", "added": 1}));
    assert_eq!(ev[1].0, Some(json!({"key": 2})), "a renamed key column keeps being the key");
    assert_eq!(after(&ev[1]), &json!({"key": 2, "renamed": "y", "added": 1}));
    let (state, hint) = error_of(&mut c, "ALTER TABLE cap_alter DROP COLUMN key");
    assert_eq!((state.as_str(), hint.is_some()), ("2BP01", true), "a key column cannot be dropped");
    c.batch_execute("DROP TABLE cap_alter").unwrap();
    // Tables dropped by other commands than DROP TABLE.
    c.batch_execute(
        "DROP SCHEMA IF EXISTS cap_gone CASCADE; CREATE SCHEMA cap_gone;
         CREATE TABLE cap_gone.t (id int PRIMARY KEY); SELECT kafka.capture('cap_gone.t');
         DROP SCHEMA cap_gone CASCADE;",
    )
    .unwrap();
    as_role(&mut c, "e2e_cap_owned", &["kafka_admin", "CREATE ON SCHEMA public"], |c| {
        c.batch_execute("CREATE TABLE cap_owned (id int PRIMARY KEY); SELECT kafka.capture('cap_owned')")
            .unwrap();
    }); // drops what the role owns: DROP OWNED BY
    let left: i64 = c
        .query_one(
            "SELECT (SELECT count(*) FROM kafka.capture_config) - (SELECT count(*) FROM pg_class WHERE oid IN (SELECT relid FROM kafka.capture_config))",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "no capture is left pointing at a dropped table");
}

#[test]
fn a_bulk_statement_is_packed_and_arrives_whole_and_in_order() {
    let mut c = pg();
    let t = captured(&mut c, "cap_bulk", "id int PRIMARY KEY, v text", "");
    let mut tx = c.transaction().unwrap();
    tx.execute("INSERT INTO cap_bulk SELECT i, 'v' || i FROM generate_series(1, 12000) i", &[]).unwrap();
    // 10,000 events were written during the statement: packed, they take a few outbox rows.
    let r = tx
        .query_one(
            "SELECT count(*), sum(messages)::int8 FROM kafka.outbox WHERE xid = pg_current_xact_id()",
            &[],
        )
        .unwrap();
    let (rows, messages): (i64, i64) = (r.get(0), r.get(1));
    assert_eq!(messages, 10_000);
    assert!(rows <= 100, "{rows} outbox rows for {messages} events");
    tx.commit().unwrap();
    let ids: Vec<i64> =
        events(&t, 12_000).iter().map(|e| e.0.as_ref().unwrap()["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, (1..=12_000).collect::<Vec<i64>>());
    drop_table(&mut c, "cap_bulk");
}

#[test]
fn a_small_transactions_events_are_stored_compressed_and_arrive_intact() {
    let mut c = pg();
    let t = captured(&mut c, "cap_small", "id int PRIMARY KEY, note text", "");
    let note = "the same words again and again ".repeat(4);
    let mut tx = c.transaction().unwrap();
    // RELEASE writes the subtransaction's events to the outbox, so they can be looked at here.
    tx.batch_execute("SAVEPOINT s").unwrap();
    tx.execute("INSERT INTO cap_small VALUES (1, $1), (2, $1)", &[&note]).unwrap();
    tx.batch_execute("RELEASE s").unwrap();
    let r = tx
        .query_one(
            "SELECT messages, pg_column_compression(payload), length(payload), pg_column_size(payload)
               FROM kafka.outbox WHERE xid = pg_current_xact_id()",
            &[],
        )
        .unwrap();
    let (packed, method, size, stored): (i32, Option<String>, i32, i32) =
        (r.get(0), r.get(1), r.get(2), r.get(3));
    assert_eq!((packed, method.as_deref()), (2, Some("lz4")), "two events in one lz4-compressed row");
    assert!(stored < size, "{stored} bytes stored for a {size}-byte pack");
    tx.commit().unwrap();
    let ev = events(&t, 2);
    assert_eq!(after(&ev[0]), &json!({"id": 1, "note": note}));
    assert_eq!(after(&ev[1]), &json!({"id": 2, "note": note}));
    drop_table(&mut c, "cap_small");
}

/// With `kafka.transaction_topic`, as Debezium's `provide.transaction.metadata`: each event
/// carries its transaction's id and its place in the transaction (overall and per table), and
/// the transaction topic gets BEGIN before the first event and END with the counts per table —
/// counted after savepoints rolled back, and nothing at all for a rolled-back transaction.
#[test]
fn transaction_metadata_counts_what_commits() {
    let mut c = pg();
    let meta = topic("txn_metadata");
    c.batch_execute(&format!("ALTER SYSTEM SET kafka.transaction_topic = '{meta}'")).unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    let mut s = pg();
    wait_until("the session to read the reloaded setting", || {
        s.query_one("SHOW kafka.transaction_topic", &[]).unwrap().get::<_, String>(0) == meta
    });
    let ta = captured(&mut s, "txn_meta_a", "id int PRIMARY KEY, v text", "");
    let tb = captured(&mut s, "txn_meta_b", "id int PRIMARY KEY", "");
    s.batch_execute(
        "BEGIN; INSERT INTO txn_meta_a VALUES (1, 'x'); SAVEPOINT s; INSERT INTO txn_meta_b VALUES (1);
         ROLLBACK TO s; INSERT INTO txn_meta_b VALUES (2); COMMIT;
         BEGIN; INSERT INTO txn_meta_a VALUES (9, 'rolled back'); ROLLBACK;
         BEGIN; SAVEPOINT s; INSERT INTO txn_meta_b VALUES (3); ROLLBACK TO s;
         INSERT INTO txn_meta_a VALUES (2, 'y'), (3, 'z'); UPDATE txn_meta_b SET id = 4 WHERE id = 2; COMMIT;",
    )
    .unwrap();
    c.batch_execute("ALTER SYSTEM RESET kafka.transaction_topic").unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait_until("transaction metadata to be off again", || {
        pg().query_one("SHOW kafka.transaction_topic", &[]).unwrap().get::<_, String>(0).is_empty()
    });

    let a = events(&ta, 3);
    let b = events(&tb, 4); // c(2); then the key change: d(2), its tombstone, c(4)
    let block = |e: &(Option<Value>, Option<Value>)| e.1.as_ref().unwrap()["transaction"].clone();
    let id1 = block(&a[0])["id"].as_str().unwrap().to_owned();
    let id2 = block(&a[1])["id"].as_str().unwrap().to_owned();
    assert_ne!(id1, id2);
    let order = |e: &(Option<Value>, Option<Value>)| {
        let t = block(e);
        (
            t["id"].as_str().unwrap().to_owned(),
            t["total_order"].as_i64().unwrap(),
            t["data_collection_order"].as_i64().unwrap(),
        )
    };
    assert_eq!(order(&a[0]), (id1.clone(), 1, 1));
    assert_eq!(order(&b[0]), (id1.clone(), 2, 1), "the rolled-back savepoint's event is not counted");
    assert_eq!(order(&a[1]), (id2.clone(), 1, 1));
    assert_eq!(order(&a[2]), (id2.clone(), 2, 2));
    assert_eq!(order(&b[1]), (id2.clone(), 3, 1));
    assert_eq!(order(&b[3]), (id2.clone(), 4, 2));

    let records = events(&meta, 4);
    let m = |i: usize| records[i].1.clone().unwrap();
    assert_eq!(records[0].0, Some(json!({"id": id1})));
    assert_eq!(
        (m(0)["status"].clone(), m(0)["id"].clone(), m(0)["event_count"].clone()),
        (json!("BEGIN"), json!(id1), json!(null))
    );
    assert_eq!(m(1)["status"], "END");
    assert_eq!(m(1)["event_count"], 2);
    assert_eq!(
        m(1)["data_collections"],
        json!([{"data_collection": "public.txn_meta_a", "event_count": 1}, {"data_collection": "public.txn_meta_b", "event_count": 1}])
    );
    assert_eq!(
        (m(2)["status"].clone(), m(2)["id"].clone()),
        (json!("BEGIN"), json!(id2)),
        "nothing of the rolled-back transaction"
    );
    assert_eq!(m(3)["event_count"], 4);
    assert_eq!(
        m(3)["data_collections"],
        json!([{"data_collection": "public.txn_meta_a", "event_count": 2}, {"data_collection": "public.txn_meta_b", "event_count": 2}])
    );
    drop_table(&mut s, "txn_meta_a");
    drop_table(&mut s, "txn_meta_b");
}
