//! Capture events compared, field by field, with the records Debezium 3.6.1 produced for the same
//! statements (tests/e2e/reference/debezium-3.6.1: types.sql, events-json.jsonl and, with Kafka
//! Connect schemas, events-json-schemas.jsonl). Ignored: the fields that differ from run to run by
//! nature (times, transaction id, LSN and sequence, connector name and version, database name), as
//! that reference's README lists them.

use pg_kafka_e2e::*;
use serde_json::{json, Value};

fn reference(file: &str) -> String {
    let dir = format!("{}/reference/debezium-3.6.1", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(format!("{dir}/{file}")).unwrap_or_else(|e| panic!("{dir}/{file}: {e}"))
}

/// A record's value without the fields that differ from run to run.
fn comparable(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        for f in ["ts_ms", "ts_us", "ts_ns"] {
            o.remove(f);
        }
        if let Some(s) = o.get_mut("source").and_then(Value::as_object_mut) {
            for f in
                ["ts_ms", "ts_us", "ts_ns", "txId", "lsn", "sequence", "db", "name", "version", "connector"]
            {
                s.remove(f);
            }
        }
    }
    v
}

/// Runs the reference's statements on a table captured with `options` on `topic`; returns the
/// records (key, value) as JSON.
fn captured_reference_run(topic: &str, options: &str, n: usize) -> Vec<(Value, Option<Value>)> {
    let mut c = pg();
    let sql = reference("types.sql");
    let (ddl, dml) = sql.split_at(sql.find("INSERT INTO public.types").expect("types.sql has an INSERT"));
    c.batch_execute(ddl).unwrap();
    c.execute(&format!("SELECT kafka.capture('public.types', topic => $1{options})"), &[&topic]).unwrap();
    for statement in dml.split(";\n").map(str::trim).filter(|s| !s.is_empty() && !s.starts_with("--")) {
        c.batch_execute(statement).unwrap(); // each its own transaction, as in the reference run
    }
    let got = TopicReader::new(topic).read_at_least(n).to_vec();
    c.batch_execute("SELECT kafka.uncapture('public.types'); DROP TABLE public.types; DROP TYPE public.mood")
        .unwrap();
    got.iter()
        .map(|r| {
            let key: Value = serde_json::from_slice(r.key.as_deref().unwrap()).unwrap();
            (key, r.payload.as_deref().map(|p| serde_json::from_slice::<Value>(p).unwrap()))
        })
        .collect()
}

/// Compares two event values (Debezium envelopes) part by part, then whole.
fn assert_same_event(i: usize, got: Option<Value>, want: &Value) {
    let want_value = (!want.is_null()).then(|| comparable(want.clone()));
    let got_value = got.map(comparable);
    if got_value != want_value {
        let (g, w) = (got_value.unwrap_or(json!(null)), want_value.unwrap_or(json!(null)));
        for part in ["before", "after", "source", "op", "transaction"] {
            assert_eq!(g[part], w[part], "record {i}: {part}");
        }
        assert_eq!(g, w, "record {i}");
    }
}

#[test]
fn events_match_debeziums_for_every_type() {
    let t = topic("debezium_types");
    let expected: Vec<Value> =
        reference("events-json.jsonl").lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(expected.len(), 4, "insert, update, delete and its tombstone");
    let got = captured_reference_run(&t, "", expected.len());
    for (i, (want, (key, value))) in expected.iter().zip(got).enumerate() {
        assert_eq!(key, want["key"], "record {i}: key");
        assert_same_event(i, value, &want["value"]);
    }
}

/// The reference's statements on a table captured with `method => 'wal'` (REPLICA IDENTITY FULL,
/// as the reference ran): the same records, with what Debezium takes from the WAL in `source`:
/// the change's LSN, `sequence` ending with it, and one commit time and transaction id per
/// transaction.
#[test]
fn wal_events_match_debeziums_for_every_type() {
    let t = topic("debezium_types_wal");
    let expected: Vec<Value> =
        reference("events-json.jsonl").lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let got = captured_reference_run(&t, ", method => 'wal'", expected.len());
    let mut last_lsn = 0;
    for (i, (want, (key, value))) in expected.iter().zip(got).enumerate() {
        assert_eq!(key, want["key"], "record {i}: key");
        if let Some(v) = &value {
            let (s, w) = (&v["source"], &want["value"]["source"]);
            for f in ["ts_ms", "ts_us", "ts_ns", "txId", "lsn"] {
                assert!(s[f].is_u64() == w[f].is_u64(), "record {i}: source.{f} is a number as Debezium's");
            }
            let lsn = s["lsn"].as_u64().unwrap();
            assert!(lsn > last_lsn, "record {i}: LSNs grow");
            last_lsn = lsn;
            let seq: Vec<Option<String>> = serde_json::from_str(s["sequence"].as_str().unwrap()).unwrap();
            assert_eq!(seq.len(), 2);
            assert_eq!(seq[1], Some(lsn.to_string()), "record {i}: sequence = [last commit, lsn]");
            assert!(s["ts_us"].as_i64().unwrap() <= v["ts_us"].as_i64().unwrap(), "committed before sent");
        }
        assert_same_event(i, value, &want["value"]);
    }
}

/// With `schemas => true`, keys and values carry Kafka Connect schemas, as JsonConverter writes
/// them with `schemas.enable=true`: Connect sinks (the JDBC sink) can read the events. Debezium
/// names the schemas after the topic (`dbz.public.types.Key`, `.Value`, `.Envelope`); so does
/// pg_kafka, so the reference's names are compared with this test's topic in place.
#[test]
fn events_with_schemas_match_debeziums_for_every_type() {
    let t = topic("debezium_schemas");
    let expected: Vec<Value> = reference("events-json-schemas.jsonl")
        .replace("dbz.public.types", &t)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(expected.len(), 4, "insert, update, delete and its tombstone");
    let got = captured_reference_run(&t, ", schemas => true", expected.len());
    for (i, (want, (key, value))) in expected.iter().zip(got).enumerate() {
        assert_eq!(key, want["key"], "record {i}: key with its schema");
        let want = &want["value"];
        if want.is_null() {
            assert_eq!(value, None, "record {i}: a tombstone");
            continue;
        }
        let value = value.unwrap_or_else(|| panic!("record {i}: a value"));
        assert_eq!(value["schema"], want["schema"], "record {i}: schema");
        assert_same_event(i, Some(value["payload"].clone()), &want["payload"]);
    }
}

/// Values at the edges of PostgreSQL's ranges (they used to wrap: `interval '178000000 years'`
/// came out as -9004142481413242880, `timestamptz '294276-12-31 23:59:59.999999+00'` in year
/// -290278) are written as Debezium writes them: an interval past 2^63 µs as Long.MAX_VALUE /
/// MIN_VALUE (MicroDuration's saturating cast), timestamptz, timestamp(3) and timestamp up to the
/// last microsecond that fits in 64 bits exactly. Where Debezium would write garbage (a timestamp
/// after 294247-01-10 04:00:54.775807: its micros wrap) or stop (an interval of 2^31 hours) the
/// statement fails with 22008, and nothing of it is queued.
#[test]
fn values_at_the_edges_of_the_ranges_are_debeziums_or_refused() {
    let mut c = pg();
    let t = topic("debezium_edges");
    c.batch_execute(
        "DROP TABLE IF EXISTS dbz_edges;
         CREATE TABLE dbz_edges (id int PRIMARY KEY, i interval, tz timestamptz, ts timestamp,
                                 ts3 timestamp(3))",
    )
    .unwrap();
    c.execute("SELECT kafka.capture('dbz_edges', topic => $1)", &[&t]).unwrap();
    c.batch_execute(
        "INSERT INTO dbz_edges VALUES
           (1, '178000000 years', '294276-12-31 23:59:59.999999+00', '294247-01-10 04:00:54.775807',
            '294276-12-31 23:59:59.999'),
           (2, '-178000000 years', '4714-11-24 00:00:00+00 BC', '4714-11-24 00:00:00 BC',
            '4714-11-24 00:00:00 BC')",
    )
    .unwrap();
    for refused in [
        "INSERT INTO dbz_edges (id, ts) VALUES (3, '294276-12-31 23:59:59.999999')",
        "INSERT INTO dbz_edges (id, ts) VALUES (3, '294247-01-10 04:00:54.775808')",
        "INSERT INTO dbz_edges (id, i) VALUES (3, interval '2147483647 hours' + interval '1 hour')",
    ] {
        let (state, hint) = error_of(&mut c, refused);
        assert_eq!(state, "22008", "{refused}");
        assert!(hint.is_some_and(|h| h.contains("exclude_columns")), "{refused}");
    }
    c.batch_execute("INSERT INTO dbz_edges (id, i) VALUES (4, '2147483647:59:59.999999')").unwrap();
    let got: Vec<(Value, Value)> = TopicReader::new(&t)
        .read_at_least(3)
        .iter()
        .take(3)
        .map(|r| {
            let value: Value = serde_json::from_slice(r.payload.as_deref().unwrap()).unwrap();
            (serde_json::from_slice(r.key.as_deref().unwrap()).unwrap(), value["after"].clone())
        })
        .collect();
    c.batch_execute("SELECT kafka.uncapture('dbz_edges'); DROP TABLE dbz_edges").unwrap();
    let keys: Vec<&Value> = got.iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [&json!({"id": 1}), &json!({"id": 2}), &json!({"id": 4})],
        "the refused rows left nothing"
    );
    assert_eq!(
        got[0].1,
        json!({"id": 1, "i": 9_223_372_036_854_775_807_i64, "tz": "+294276-12-31T23:59:59.999999Z",
               "ts": 9_223_372_036_854_775_807_i64, "ts3": 9_224_318_015_999_999_i64})
    );
    assert_eq!(
        got[1].1,
        json!({"id": 2, "i": i64::MIN, "tz": "-4713-11-24T00:00:00.000000Z",
               "ts": -210_866_803_200_000_000_i64, "ts3": -210_866_803_200_000_i64})
    );
    assert_eq!(
        got[2].1,
        json!({"id": 4, "i": 7_730_941_132_799_999_999_i64, "tz": null, "ts": null, "ts3": null})
    );
}

/// Creates `table` (`columns`, after `CREATE EXTENSION IF NOT EXISTS hstore`), captures it on
/// `topic` with `options`, runs `inserts` (one statement), then a backfill of the same rows: the
/// records of both capture paths, `op` "c" then "r", as (key, value) JSON; the table is dropped.
fn captured_rows(
    table: &str,
    columns: &str,
    inserts: &str,
    options: &str,
    topic: &str,
) -> Vec<(Value, Value)> {
    let mut c = pg();
    c.batch_execute(&format!(
        "CREATE EXTENSION IF NOT EXISTS hstore;
         DROP TABLE IF EXISTS {table};
         CREATE TABLE {table} ({columns})"
    ))
    .unwrap();
    c.execute(&format!("SELECT kafka.capture('{table}', topic => $1{options})"), &[&topic]).unwrap();
    let rows = c.execute(inserts, &[]).unwrap() as usize;
    c.batch_execute(&format!("CALL kafka.backfill('{table}')")).unwrap();
    let got = TopicReader::new(topic).read_at_least(2 * rows).to_vec();
    c.batch_execute(&format!("SELECT kafka.uncapture('{table}'); DROP TABLE {table}")).unwrap();
    assert_eq!(got.len(), 2 * rows, "one event per row and path");
    got.iter()
        .map(|r| {
            let json = |b: &Option<Vec<u8>>| serde_json::from_slice::<Value>(b.as_deref().unwrap()).unwrap();
            (json(&r.key), json(&r.payload))
        })
        .collect()
}

/// Checks captured records against the rows they should carry (`after`, in insert order), for
/// the insert's events and then the backfill's; with `schemas`, each record's `payload`.
fn assert_rows(got: &[(Value, Value)], after: &[Value], schemas: bool) {
    for (i, (key, value)) in got.iter().enumerate() {
        let want = &after[i % after.len()];
        let (key, value) = if schemas { (&key["payload"], &value["payload"]) } else { (key, value) };
        assert_eq!(key, &json!({"id": want["id"]}), "record {i}: key");
        assert_eq!(value["op"], if i < after.len() { "c" } else { "r" }, "record {i}: op");
        assert_eq!(value["before"], Value::Null, "record {i}: before");
        assert_eq!(&value["after"], want, "record {i}: after");
    }
}

/// A column of each type Debezium maps to a logical type of its own (issue 24), and rows of them.
const SPECIAL_COLUMNS: &str = "id int PRIMARY KEY, h hstore, b1 bit(1), b5 bit(5), b16 bit(16),
    vb bit varying(16), vbu bit varying, vb1 bit varying(1), p point, n numeric";
const SPECIAL_INSERTS: &str = r#"INSERT INTO dbz_special VALUES
    (1, '"a"=>"1", "b"=>NULL', B'1', B'10101', B'1010101010101010', B'0000000100000010', B'101', B'0',
     '(1.5,-2)', 'NaN'),
    (2, 'id=>7, name=>x, tags=>NULL, color=>red, weight=>1.5', B'0', B'00000', B'0000000000000001', B'',
     B'10000000000000000', B'', '(0,1e20)', 'Infinity'),
    (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '-Infinity')"#;

/// The rows of `SPECIAL_INSERTS` as Debezium 3.6.1 writes them with its defaults (the encodings
/// read in its sources: PostgresValueConverter, JdbcValueConverters, Point, SpecialValueDecimal):
/// - hstore (`hstore.handling.mode=json`): a string holding a JSON object, its keys in the order
///   of the Java HashMap Debezium fills (`color` before `name` before `weight` before `id`);
/// - bit(1) and bit varying(1): a boolean (an empty bit varying(1), which Debezium fails to
///   convert, null); longer bit strings: Debezium's Bits, the bits as a little-endian number in
///   base64 (`B'10101'` 21 = `"FQ=="`, `B'1010101010101010'` `"qqo="`, `B'0000000100000010'` the
///   bytes 02 01 = `"AgE="`; no set bit, no bytes: `""`);
/// - point: io.debezium.data.geometry.Point, `wkb` little-endian WKB (01, type 1, x, y);
/// - numeric NaN, Infinity and -Infinity: SpecialValueDecimal's names.
fn special_after() -> Vec<Value> {
    vec![
        json!({"id": 1, "h": "{\"a\":\"1\",\"b\":null}", "b1": true, "b5": "FQ==", "b16": "qqo=",
               "vb": "AgE=", "vbu": "BQ==", "vb1": false,
               "p": {"x": 1.5, "y": -2.0, "wkb": "AQEAAAAAAAAAAAD4PwAAAAAAAADA", "srid": null},
               "n": "NAN"}),
        json!({"id": 2,
               "h": "{\"color\":\"red\",\"name\":\"x\",\"weight\":\"1.5\",\"id\":\"7\",\"tags\":null}",
               "b1": false, "b5": "", "b16": "AQ==", "vb": "", "vbu": "AAAB", "vb1": null,
               "p": {"x": 0.0, "y": 1.0e20, "wkb": "AQEAAAAAAAAAAAAAAECMtXgdrxVE", "srid": null},
               "n": "POSITIVE_INFINITY"}),
        json!({"id": 3, "h": null, "b1": null, "b5": null, "b16": null, "vb": null, "vbu": null,
               "vb1": null, "p": null, "n": "NEGATIVE_INFINITY"}),
    ]
}

#[test]
fn hstore_bits_point_and_numeric_specials_are_debeziums() {
    let t = topic("debezium_special");
    let got = captured_rows("dbz_special", SPECIAL_COLUMNS, SPECIAL_INSERTS, "", &t);
    assert_rows(&got, &special_after(), false);
}

/// With `schemas => true`, the same payloads, and Debezium's schemas for them: Json for hstore,
/// boolean for a length of 1, `io.debezium.data.Bits` with its `length` (2147483647 for a bit
/// varying without one: PgJDBC's unknown length), `io.debezium.data.geometry.Point` (version 1,
/// its doc, x and y required, wkb and srid optional), a string for numeric.
#[test]
fn hstore_bits_point_and_numeric_specials_with_schemas_are_debeziums() {
    let t = topic("debezium_special_schemas");
    let got = captured_rows("dbz_special", SPECIAL_COLUMNS, SPECIAL_INSERTS, ", schemas => true", &t);
    assert_rows(&got, &special_after(), true);
    let bits = |length: &str, field: &str| {
        json!({"type": "bytes", "optional": true, "name": "io.debezium.data.Bits", "version": 1,
               "parameters": {"length": length}, "field": field})
    };
    let after = json!({"type": "struct", "fields": [
        {"type": "int32", "optional": false, "field": "id"},
        {"type": "string", "optional": true, "name": "io.debezium.data.Json", "version": 1, "field": "h"},
        {"type": "boolean", "optional": true, "field": "b1"},
        bits("5", "b5"),
        bits("16", "b16"),
        bits("16", "vb"),
        bits("2147483647", "vbu"),
        {"type": "boolean", "optional": true, "field": "vb1"},
        {"type": "struct", "fields": [
            {"type": "double", "optional": false, "field": "x"},
            {"type": "double", "optional": false, "field": "y"},
            {"type": "bytes", "optional": true, "field": "wkb"},
            {"type": "int32", "optional": true, "field": "srid"}],
         "optional": true, "name": "io.debezium.data.geometry.Point", "version": 1,
         "doc": "Geometry (POINT)", "field": "p"},
        {"type": "string", "optional": true, "field": "n"}],
        "optional": true, "name": format!("{t}.Value"), "field": "after"});
    let key = json!({"type": "struct", "fields": [{"type": "int32", "optional": false, "field": "id"}],
                     "optional": false, "name": format!("{t}.Key")});
    for (i, (k, v)) in got.iter().enumerate() {
        assert_eq!(k["schema"], key, "record {i}: key schema");
        assert_eq!(v["schema"]["fields"][1], after, "record {i}: the after struct's schema");
        assert_eq!(v["schema"]["fields"][0]["fields"], after["fields"], "record {i}: before's fields");
    }
}

/// Where Debezium 3.6.1 drops the column (line, lseg, box, path, polygon, circle, pg_lsn: it has
/// no converter for them) or writes null (numeric arrays, name), pg_kafka sends the value: the
/// type's text (a numeric array as an array of numeric's strings), and with schemas a string.
#[test]
fn types_debezium_drops_or_nulls_are_sent() {
    let columns = "id int PRIMARY KEY, l line, ls lseg, bx box, pa path, pg polygon, c circle,
                   lsn pg_lsn, na numeric[], nm name";
    let inserts = "INSERT INTO dbz_dropped VALUES (1, '{1,-1,0}', '[(0,0),(1,1)]', '(1,1),(0,0)',
                   '((0,0),(1,1))', '((0,0),(1,1),(1,0))', '<(0,0),1>', '0/16B3748',
                   '{1.5,NaN,NULL}', 'abc')";
    let after = [json!({"id": 1, "l": "{1,-1,0}", "ls": "[(0,0),(1,1)]", "bx": "(1,1),(0,0)",
                        "pa": "((0,0),(1,1))", "pg": "((0,0),(1,1),(1,0))", "c": "<(0,0),1>",
                        "lsn": "0/16B3748", "na": ["1.5", "NAN", null], "nm": "abc"})];
    let t = topic("debezium_dropped");
    assert_rows(&captured_rows("dbz_dropped", columns, inserts, "", &t), &after, false);
    let t = topic("debezium_dropped_schemas");
    let got = captured_rows("dbz_dropped", columns, inserts, ", schemas => true", &t);
    assert_rows(&got, &after, true);
    let string = |field: &str| json!({"type": "string", "optional": true, "field": field});
    let mut fields = vec![json!({"type": "int32", "optional": false, "field": "id"})];
    fields.extend(["l", "ls", "bx", "pa", "pg", "c", "lsn"].map(string));
    fields.push(json!({"type": "array", "items": {"type": "string", "optional": true}, "optional": true,
                       "field": "na"}));
    fields.push(string("nm"));
    assert_eq!(got[0].1["schema"]["fields"][1]["fields"], Value::Array(fields));
}
