//! Capture events compared, field by field, with the records Debezium 3.6.1 produced for the same
//! statements (tests/e2e/reference/debezium-3.6.1: types.sql and events-json.jsonl). Ignored: the
//! fields that differ from run to run by nature (times, transaction id, LSN and sequence,
//! connector name and version, database name), as that reference's README lists them.

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

#[test]
fn events_match_debeziums_for_every_type() {
    let mut c = pg();
    let t = topic("debezium_types");
    let sql = reference("types.sql");
    let (ddl, dml) = sql.split_at(sql.find("INSERT INTO public.types").expect("types.sql has an INSERT"));
    c.batch_execute(ddl).unwrap();
    c.execute("SELECT kafka.capture('public.types', topic => $1)", &[&t]).unwrap();
    for statement in dml.split(";\n").map(str::trim).filter(|s| !s.is_empty() && !s.starts_with("--")) {
        c.batch_execute(statement).unwrap(); // each its own transaction, as in the reference run
    }
    let expected: Vec<Value> =
        reference("events-json.jsonl").lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut r = TopicReader::new(&t);
    assert_eq!(expected.len(), 4, "insert, update, delete and its tombstone");
    let got = r.read_at_least(expected.len()).to_vec();
    for (i, (want, record)) in expected.iter().zip(&got).enumerate() {
        let key: Value = serde_json::from_slice(record.key.as_deref().unwrap()).unwrap();
        assert_eq!(key, want["key"], "record {i}: key");
        let value = record.payload.as_deref().map(|p| serde_json::from_slice::<Value>(p).unwrap());
        let want_value = (!want["value"].is_null()).then(|| comparable(want["value"].clone()));
        let got_value = value.map(comparable);
        if got_value != want_value {
            let (g, w) = (got_value.unwrap_or(json!(null)), want_value.unwrap_or(json!(null)));
            for part in ["before", "after", "source", "op", "transaction"] {
                assert_eq!(g[part], w[part], "record {i}: {part}");
            }
            assert_eq!(g, w, "record {i}");
        }
    }
    c.batch_execute("SELECT kafka.uncapture('public.types'); DROP TABLE public.types; DROP TYPE public.mood")
        .unwrap();
}
