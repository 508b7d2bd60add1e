//! Bad input gets a clear error with a SQLSTATE and a hint, and leaves nothing behind.

use pg_kafka_e2e::*;

#[test]
fn bad_topics_are_refused_before_commit() {
    let mut c = pg();
    for (sql, state) in [
        ("SELECT kafka.produce(NULL, 'm')", "22004"),
        ("SELECT kafka.produce('', 'm')", "22023"),
        ("SELECT kafka.produce('no spaces', 'm')", "22023"),
        ("SELECT kafka.produce('.', 'm')", "22023"),
        ("SELECT kafka.produce('..', 'm')", "22023"),
        ("SELECT kafka.produce(repeat('t', 250), 'm')", "22023"),
    ] {
        let (got, hint) = error_of(&mut c, sql);
        assert_eq!(got, state, "{sql}");
        assert!(hint.is_some_and(|h| !h.is_empty()), "{sql} has a hint");
    }
}

#[test]
fn a_failing_statement_sends_nothing_it_produced() {
    let mut c = pg();
    let t = topic("halfway");
    let (state, _) = error_of(
        &mut c,
        &format!("SELECT kafka.produce(x, 'm') FROM unnest(ARRAY['{t}', '{t}', 'bad topic']) x"),
    );
    assert_eq!(state, "22023");
    c.execute("SELECT kafka.produce($1, 'end')", &[&t]).unwrap();
    assert!(TopicReader::new(&t).texts_until("end").is_empty());
}

#[test]
fn bad_broker_rows_are_refused() {
    let mut c = pg();
    for sql in [
        "INSERT INTO kafka.broker VALUES ('localhost', 0)",
        "INSERT INTO kafka.broker VALUES ('localhost', 65536)",
        "INSERT INTO kafka.broker VALUES ('localhost', NULL)",
        "INSERT INTO kafka.broker VALUES ('two,hosts', 9092)",
    ] {
        let (state, hint) = error_of(&mut c, sql);
        assert_eq!(state, "22023", "{sql}");
        assert!(hint.is_some(), "{sql}");
    }
    let n: i64 = c
        .query_one("SELECT count(*) FROM kafka.broker WHERE port NOT BETWEEN 1 AND 65535", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[test]
fn produce_in_a_database_the_worker_does_not_serve_is_refused() {
    let mut c = pg();
    c.batch_execute("DROP DATABASE IF EXISTS e2e_other").unwrap();
    c.batch_execute("CREATE DATABASE e2e_other").unwrap();
    let mut other = connect_to("e2e_other");
    other.batch_execute("CREATE EXTENSION kafka").unwrap();
    let (state, hint) = error_of(&mut other, "SELECT kafka.produce('t', 'lost?')");
    assert_eq!(state, "55000");
    assert!(hint.unwrap().contains("kafka.database"));
    drop(other);
    c.batch_execute("DROP DATABASE e2e_other").unwrap();
}

#[test]
fn public_cannot_produce_or_read_the_queue() {
    let mut c = pg();
    c.batch_execute("DROP ROLE IF EXISTS e2e_plain; CREATE ROLE e2e_plain LOGIN").unwrap();
    c.batch_execute("SET ROLE e2e_plain").unwrap();
    for sql in ["SELECT kafka.produce('t', 'm')", "SELECT * FROM kafka.outbox", "SELECT kafka.close()"] {
        let (state, _) = error_of(&mut c, sql);
        assert_eq!(state, "42501", "{sql}");
    }
    c.batch_execute("RESET ROLE; DROP ROLE e2e_plain").unwrap();
}

#[test]
fn a_role_granted_produce_needs_nothing_else() {
    let mut c = pg();
    let t = topic("granted");
    c.batch_execute(
        "DROP ROLE IF EXISTS e2e_producer; CREATE ROLE e2e_producer;
         GRANT USAGE ON SCHEMA kafka TO e2e_producer;
         GRANT EXECUTE ON FUNCTION kafka.produce(text, text) TO e2e_producer;",
    )
    .unwrap();
    c.batch_execute("SET ROLE e2e_producer").unwrap();
    c.execute("SELECT kafka.produce($1, 'from a granted role')", &[&t]).unwrap();
    c.batch_execute("RESET ROLE").unwrap();
    assert_eq!(TopicReader::new(&t).read_at_least(1)[0].text().as_deref(), Some("from a granted role"));
    c.batch_execute("REVOKE ALL ON SCHEMA kafka FROM e2e_producer; REVOKE ALL ON FUNCTION kafka.produce(text, text) FROM e2e_producer; DROP ROLE e2e_producer").unwrap();
}
