//! kafka.autonomous_publish(): sent now, outside the caller's transaction, with Kafka's answer.

use pg_kafka_e2e::*;

#[test]
fn returns_where_kafka_stored_it_even_if_the_caller_rolls_back() {
    let mut c = pg();
    let t = topic("immediate");
    let mut tx = c.transaction().unwrap();
    let row = tx.query_one("SELECT * FROM kafka.autonomous_publish($1, 'now', key => 'k')", &[&t]).unwrap();
    let (partition, offset): (i32, i64) = (row.get(0), row.get(1));
    tx.rollback().unwrap();
    assert_eq!((partition, offset), (0, 0));
    let row = c.query_one("SELECT * FROM kafka.autonomous_publish($1, '\\x00ff'::bytea)", &[&t]).unwrap();
    assert_eq!(row.get::<_, i64>(1), 1);
    let mut r = TopicReader::new(&t);
    let got = r.read_at_least(2);
    assert_eq!((got[0].key.as_deref(), got[0].text().as_deref()), (Some(&b"k"[..]), Some("now")));
    assert_eq!(got[1].payload.as_deref(), Some(&[0u8, 0xff][..]));
}

#[test]
fn kafka_refusal_is_an_error_with_the_brokers_reason() {
    let mut c = pg();
    let t = topic("immediate_refused");
    let e =
        c.query_one("SELECT * FROM kafka.autonomous_publish($1, repeat('x', 2000000))", &[&t]).unwrap_err();
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code().code(), "08000");
    assert!(db.message().contains("too large"), "{}", db.message());
    let e =
        c.query_one("SELECT * FROM kafka.autonomous_publish($1, 'x', partition => 5)", &[&t]).unwrap_err();
    assert!(e.as_db_error().unwrap().message().contains("Unknown partition"), "{e}");
    let (state, hint) =
        error_of(&mut c, "SELECT * FROM kafka.autonomous_publish('t', 'x', timeout => '-1s')");
    assert_eq!(state, "22023");
    assert!(hint.is_some());
}

/// With `min_dynamic_shared_memory`, the segment that carries a record to the worker comes from a
/// preallocated area in whole pages, larger than the record: only the record is read.
#[test]
fn works_with_preallocated_dynamic_shared_memory() {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            pg().batch_execute("ALTER SYSTEM RESET min_dynamic_shared_memory").unwrap();
            stack(&["down", "pg"]);
            stack(&["up", "pg"]);
        }
    }
    let _reset = Reset;
    pg().batch_execute("ALTER SYSTEM SET min_dynamic_shared_memory = '4MB'").unwrap();
    stack(&["down", "pg"]); // a postmaster setting: a restart applies it
    stack(&["up", "pg"]);
    let mut c = pg();
    let t = topic("immediate_dsm");
    wait_until("the worker to run", || status(&mut c).running);
    let row = c.query_one("SELECT * FROM kafka.autonomous_publish($1, 'from a preallocated segment')", &[&t]);
    let row = row.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(row.get::<_, i64>(1), 0);
    assert_eq!(
        TopicReader::new(&t).read_at_least(1)[0].text().as_deref(),
        Some("from a preallocated segment")
    );
}
