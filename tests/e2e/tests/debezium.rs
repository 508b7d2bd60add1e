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
