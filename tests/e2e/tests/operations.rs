//! A DBA's operations: DROP EXTENSION with messages waiting, several databases, dump and restore.

use pg_kafka_e2e::*;

#[test]
fn drop_extension_refuses_while_messages_wait() {
    let (_db, mut o) = OtherDb::new("e2e_ops_drop");
    // Messages no worker delivers here: rows as a restored copy would hold them.
    o.batch_execute(
        "INSERT INTO kafka.outbox (id, xid, messages, topics, payload) VALUES (1, pg_current_xact_id(), 3, '{t}', '\\x00')",
    )
    .unwrap();
    for sql in [
        "DROP EXTENSION kafka",
        "DROP EXTENSION IF EXISTS plpgsql_nope, kafka CASCADE",
        "DROP SCHEMA kafka CASCADE",
    ] {
        let (state, hint) = error_of(&mut o, sql);
        assert_eq!(state, "55006", "{sql}");
        assert!(hint.unwrap().contains("TRUNCATE kafka.outbox"), "{sql}");
    }
    o.batch_execute("TRUNCATE kafka.outbox, kafka.outbox_commit; DROP EXTENSION kafka").unwrap();
    let left: i64 = o
        .query_one(
            "SELECT (SELECT count(*) FROM pg_class WHERE relnamespace = 'kafka'::regnamespace)
                  + (SELECT count(*) FROM pg_proc WHERE pronamespace = 'kafka'::regnamespace)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "nothing is left behind");
    o.batch_execute("CREATE EXTENSION kafka").unwrap(); // and it installs again
}

/// Nothing done in a database the worker does not serve disturbs the served one: captures are
/// refused there like produce(), its status says it is not served, close() is refused, and its
/// broker and config changes do not restart the served producer.
#[test]
fn other_databases_do_not_disturb_the_served_one() {
    let (_db, mut o) = OtherDb::new("e2e_ops_other");
    let mut c = pg();
    let log_from = std::fs::metadata(server_log()).unwrap().len() as usize;
    o.batch_execute("CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE ob (id uuid, aggregatetype text, aggregateid text, type text, payload jsonb)")
        .unwrap();
    for sql in [
        "SELECT kafka.capture('t')",
        "SELECT kafka.capture_outbox('ob')",
        "SELECT kafka.close()",
        "SELECT kafka.produce('x', 'y')",
    ] {
        let (state, hint) = error_of(&mut o, sql);
        assert_eq!(state, "55000", "{sql}");
        assert!(hint.unwrap().contains("kafka.database"), "{sql}");
    }
    let s = status(&mut o);
    assert!(!s.running);
    assert!(s.last_error.unwrap().contains("not delivered"), "the status says this database is not served");
    o.batch_execute(
        "INSERT INTO kafka.broker VALUES ('127.0.0.1', 1); INSERT INTO kafka.config VALUES ('linger.ms', '7');
         DELETE FROM kafka.broker",
    )
    .unwrap();
    // A message of the served database after those commits: its delivery comes after any
    // restart they would have caused.
    let t = topic("ops_other");
    c.execute("SELECT kafka.produce($1, 'served')", &[&t]).unwrap();
    assert_eq!(TopicReader::new(&t).read_at_least(1)[0].text().as_deref(), Some("served"));
    let log = std::fs::read_to_string(server_log()).unwrap()[log_from..].to_owned();
    assert!(!log.contains("closing the Kafka producer"), "another database restarted the producer: {log}");
}

/// pg_dump and pg_restore keep the capture list (captures work in the copy, and uncapture()
/// finds them), and a restored copy does not send the messages its original owns: the worker
/// holds them, says so in kafka.status, and delivers them only after kafka.release(). The
/// original's table had a column dropped before its key: the copy numbers its columns
/// differently, and its events still have the right key and leave the excluded column out.
#[test]
fn a_restored_copy_keeps_its_captures_and_holds_the_originals_messages() {
    let _default = ServeDefault;
    let (_src_db, mut src) = OtherDb::new("e2e_ops_src");
    let (t, cap) = (topic("ops_restore"), topic("ops_restore_cap"));
    src.batch_execute(
        "INSERT INTO kafka.broker VALUES ('localhost', 9092);
         CREATE TABLE items (junk int, id int PRIMARY KEY, name text, secret text);
         ALTER TABLE items DROP COLUMN junk;",
    )
    .unwrap();
    serve("e2e_ops_src");
    src.batch_execute(&format!(
        "SELECT kafka.capture('items', topic => '{cap}', exclude_columns => ARRAY['secret']);
         SELECT kafka.produce('{t}', 'probe')"
    ))
    .unwrap();
    let mut rt = TopicReader::new(&t);
    rt.read_at_least(1); // the worker has a producer
    make_broker_unreachable(&mut src); // nothing listens: messages wait
    src.batch_execute(&format!(
        "SELECT kafka.produce('{t}', 'm' || i) FROM generate_series(1, 3) i;
         INSERT INTO items VALUES (1, 'one', 'secret-1');"
    ))
    .unwrap();
    wait_until("the messages to wait", || {
        let s = status(&mut src);
        s.backlog == 4 && s.last_error.is_some()
    });
    let dump = std::env::temp_dir().join(format!("pg_kafka_e2e_{}.dump", std::process::id()));
    let dump = dump.to_str().unwrap();
    run("pg_dump", &["-Fc", "-d", "e2e_ops_src", "-f", dump]);
    src.batch_execute("UPDATE kafka.broker SET port = 9092").unwrap();
    let mut rcap = TopicReader::new(&cap);
    rt.read_at_least(4);
    rcap.read_at_least(1);

    let (_copy_db, mut copy) = OtherDb::empty("e2e_ops_copy");
    run("pg_restore", &["-d", "e2e_ops_copy", dump]);
    std::fs::remove_file(dump).unwrap();
    let captured: Vec<String> = copy
        .query("SELECT \"table\"::text FROM kafka.captures", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(captured, ["items"], "the capture list survived the restore");
    copy.batch_execute("UPDATE kafka.broker SET port = 9092").unwrap();
    serve("e2e_ops_copy");
    wait_until("the copy to say its queue is held", || {
        let s = status(&mut copy);
        s.backlog == 4 && s.last_error.is_some_and(|e| e.contains("kafka.release()"))
    });
    copy.batch_execute("SELECT kafka.release(); INSERT INTO items VALUES (2, 'two', 'secret-2')").unwrap();
    assert_eq!(rt.read_at_least(7).len(), 7, "released: the copy sends what it was restored with");
    let events = rcap.read_at_least(3);
    let event = events[2].text().unwrap();
    assert!(event.contains(r#""after":{"id":2,"name":"two"}"#), "captures work in the copy: {event}");
    assert_eq!(String::from_utf8(events[2].key.clone().unwrap()).unwrap(), r#"{"id":2}"#);
    assert!(events.iter().all(|e| !e.text().unwrap().contains("secret-")), "the excluded column stays out");
    wait_until("the copy's status to clear", || status(&mut copy).last_error.is_none());
    assert!(copy.query_one("SELECT kafka.uncapture('items')", &[]).unwrap().get::<_, bool>(0));
    drop(src);
    drop(copy);
}

/// A pg_kafka table altered by hand (here an index on an expression, which the append cannot
/// maintain) makes queuing fail with 55000 and a hint, not with an internal error; nothing is
/// queued, and once undone, queuing works again.
#[test]
fn an_altered_outbox_is_a_clear_error() {
    let mut c = pg();
    let t = topic("altered");
    c.batch_execute("CREATE INDEX e2e_altered ON kafka.outbox ((id + 1))").unwrap();
    let refused = error_of(&mut c, &format!("SELECT kafka.produce('{t}', 'refused')"));
    c.batch_execute("DROP INDEX kafka.e2e_altered").unwrap();
    let (state, hint) = refused;
    assert_eq!(state, "55000");
    assert!(hint.unwrap().contains("ALTER EXTENSION kafka UPDATE"));
    c.execute("SELECT kafka.produce($1, 'after')", &[&t]).unwrap();
    let texts = TopicReader::new(&t).texts_until("after");
    assert!(texts.is_empty(), "nothing of the refused transaction was queued: {texts:?}");
}
