//! ALTER EXTENSION kafka UPDATE from 0.1.0 (whose install script stays in sql/released/) to this version: the
//! messages 0.1.0 left waiting are delivered, in order, with their keys and headers; captures,
//! brokers, settings and dead letters carry over.

use pg_kafka_e2e::*;

/// Serves the usual database again and drops the test's database, even when the test fails.
struct Cleanup;
impl Drop for Cleanup {
    fn drop(&mut self) {
        let mut c = connect_to("postgres");
        c.batch_execute("ALTER SYSTEM RESET kafka.database").unwrap();
        c.batch_execute("SELECT pg_reload_conf()").unwrap();
        wait_until("the worker to serve postgres again", || status(&mut pg()).running);
        c.batch_execute("DROP DATABASE IF EXISTS e2e_upgrade WITH (FORCE)").unwrap();
    }
}

/// A 0.1.0 pack of capture events: topic, key and value per message, each a little-endian u32
/// length (u32::MAX for NULL) and bytes.
fn pack_v1(messages: &[(&str, Option<&str>, Option<&str>)]) -> Vec<u8> {
    let mut p = Vec::new();
    for (topic, key, value) in messages {
        for field in [Some(*topic), *key, *value] {
            match field {
                Some(s) => {
                    p.extend_from_slice(&(s.len() as u32).to_le_bytes());
                    p.extend_from_slice(s.as_bytes());
                }
                None => p.extend_from_slice(&u32::MAX.to_le_bytes()),
            }
        }
    }
    p
}

#[test]
fn upgrading_from_0_1_0_delivers_what_waited_and_keeps_captures() {
    let _cleanup = Cleanup;
    let (t, cap) = (topic("upgrade"), topic("upgrade_cap"));
    let mut c = connect_to("postgres");
    c.batch_execute("DROP DATABASE IF EXISTS e2e_upgrade WITH (FORCE)").unwrap();
    c.batch_execute("CREATE DATABASE e2e_upgrade").unwrap();
    let mut u = connect_to("e2e_upgrade");
    u.batch_execute(&format!(
        "CREATE EXTENSION kafka VERSION '0.1.0';
         INSERT INTO kafka.broker VALUES ('localhost', 9092);
         INSERT INTO kafka.config VALUES ('linger.ms', '2');
         CREATE TABLE items (id int PRIMARY KEY, name text);
         SELECT kafka.capture('items', topic => '{cap}');
         INSERT INTO kafka.dead_letter (id, topic, payload, produced_at, first_attempt_at, error)
         VALUES (100000, '{t}', 'dead', now(), now(), 'refused');"
    ))
    .unwrap();
    // What 0.1.0's produce(), publish() and capture left in its outbox.
    u.execute(
        "INSERT INTO kafka.outbox (id, topic, key, payload, headers, partition, timestamp_ms)
         VALUES (10, $1, 'k1', 'one', '[[\"h\", \"v\"], [\"n\", null]]', NULL, NULL),
                (11, $1, NULL, 'two', NULL, 0, 1714557600123),
                (13, $1, 'k3', NULL, NULL, NULL, NULL)",
        &[&t],
    )
    .unwrap();
    let packed = pack_v1(&[(&t, Some("k4"), Some("four")), (&t, None, Some("five"))]);
    u.execute("INSERT INTO kafka.outbox (id, topic, payload, packed) VALUES (12, $1, $2, 2)", &[&t, &packed])
        .unwrap();

    u.batch_execute("ALTER EXTENSION kafka UPDATE").unwrap();
    let (version, default): (String, String) = {
        let row = u
            .query_one(
                "SELECT e.extversion, a.default_version FROM pg_extension e
                   JOIN pg_available_extensions a ON a.name = e.extname WHERE e.extname = 'kafka'",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(version, default, "ALTER EXTENSION UPDATE reaches the current version through 0.2.0");
    let backlog: i64 = u.query_one("SELECT backlog FROM kafka.status", &[]).unwrap().get(0);
    assert_eq!(backlog, 5, "every waiting message is queued again");

    c.batch_execute("ALTER SYSTEM SET kafka.database = 'e2e_upgrade'").unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait_until("the worker to serve e2e_upgrade", || status(&mut u).running);
    let mut r = TopicReader::new(&t);
    let got: Vec<(Option<String>, Option<String>)> = r
        .read_at_least(5)
        .iter()
        .map(|m| (m.key.clone().map(|k| String::from_utf8(k).unwrap()), m.text()))
        .collect();
    let some = |s: &str| Some(s.to_owned());
    assert_eq!(
        got,
        [
            (some("k1"), some("one")),
            (None, some("two")),
            (some("k4"), some("four")),
            (None, some("five")),
            (some("k3"), None),
        ],
        "in 0.1.0's id order"
    );
    // Captures carry over: the trigger was re-created with 0.2.0's function.
    u.batch_execute("INSERT INTO items VALUES (1, 'after the upgrade')").unwrap();
    let event = TopicReader::new(&cap).read_at_least(1)[0].text().unwrap();
    assert!(event.contains("after the upgrade"), "{event}");
    let (dead, config): (i64, String) = {
        let row = u
            .query_one(
                "SELECT (SELECT count(*) FROM kafka.dead_letter WHERE id = 100000),
                        (SELECT value FROM kafka.config WHERE name = 'linger.ms')",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((dead, config.as_str()), (1, "2"));
    let id: i64 = u.query_one("SELECT kafka.publish($1, 'new')", &[&t]).unwrap().get(0);
    assert!(id > 100000, "new ids follow the old ones: {id}");
}

/// More messages waiting than a transaction keeps before it writes them (10,000): the 0.1.0 ->
/// 0.2.0 step writes packs into 0.2.0's outbox, which has none of 0.3.0's columns yet, before the
/// 0.2.0 -> 0.3.0 step adds them. All of them are delivered, in order.
#[test]
fn upgrading_from_0_1_0_with_many_messages_waiting_delivers_them_all() {
    let _cleanup = Cleanup;
    let t = topic("upgrade_many");
    let mut c = connect_to("postgres");
    c.batch_execute("DROP DATABASE IF EXISTS e2e_upgrade WITH (FORCE)").unwrap();
    c.batch_execute("CREATE DATABASE e2e_upgrade").unwrap();
    let mut u = connect_to("e2e_upgrade");
    u.batch_execute(
        "CREATE EXTENSION kafka VERSION '0.1.0'; INSERT INTO kafka.broker VALUES ('localhost', 9092)",
    )
    .unwrap();
    const N: i64 = 25_000;
    u.execute(
        "INSERT INTO kafka.outbox (id, topic, payload)
         SELECT i, $1, convert_to('m' || i, 'UTF8') FROM generate_series(1, $2::int8) i",
        &[&t, &N],
    )
    .unwrap();
    u.batch_execute("ALTER EXTENSION kafka UPDATE").unwrap();
    let backlog: i64 = u.query_one("SELECT backlog FROM kafka.status", &[]).unwrap().get(0);
    assert_eq!(backlog, N, "every waiting message is queued again");
    c.batch_execute("ALTER SYSTEM SET kafka.database = 'e2e_upgrade'").unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    let got: Vec<String> =
        TopicReader::new(&t).read_at_least(N as usize).iter().map(|m| m.text().unwrap()).collect();
    let want: Vec<String> = (1..=N).map(|i| format!("m{i}")).collect();
    assert!(got == want, "all {N} of them, once each, in 0.1.0's id order ({} read)", got.len());
}
