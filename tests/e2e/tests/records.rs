//! Full Kafka records through kafka.publish(): keys, headers, partitions, timestamps, and payload
//! bytes exactly as given; dead letters a user can re-queue or purge.

use futures_executor::block_on;
use pg_kafka_e2e::*;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::time::{Duration, Instant};

/// A consumed record with everything Kafka carries.
#[derive(Debug)]
struct Full {
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    partition: i32,
    timestamp: Option<i64>,
}

fn read_full(topic: &str, partitions: i32, n: usize) -> Vec<Full> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap_servers())
        .set("group.id", format!("e2e-{topic}"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let deadline = Instant::now() + PATIENCE;
    let mut out = Vec::new();
    while out.len() < n {
        assert!(Instant::now() < deadline, "got {} of {n} records: {out:?}", out.len());
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            let headers = m
                .headers()
                .map(|h| h.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec))).collect())
                .unwrap_or_default();
            out.push(Full {
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().map(<[u8]>::to_vec),
                headers,
                partition: m.partition(),
                timestamp: m.timestamp().to_millis(),
            });
        }
    }
    out
}

fn admin() -> AdminClient<DefaultClientContext> {
    ClientConfig::new().set("bootstrap.servers", bootstrap_servers()).create().unwrap()
}

/// Kafka deletes a segment whose newest timestamp is past the topic's retention at its next
/// retention check, and a record stamped years ago is; these topics keep everything.
fn create_topic(topic: &str, partitions: i32) {
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1)).set("retention.ms", "-1");
    let res = block_on(admin().create_topics(&[new], &AdminOptions::new())).unwrap();
    assert!(res.iter().all(|r| r.is_ok()), "{res:?}");
}

#[test]
fn publish_carries_key_headers_partition_and_timestamp() {
    let mut c = pg();
    let t = topic("full");
    create_topic(&t, 3);
    let id: i64 = c
        .query_one(
            "SELECT kafka.publish($1, 'v', key => 'k', headers => '[[\"h\", \"1\"], [\"h\", \"2\"], [\"n\", null]]',
                                  partition => 2, ts => '2021-02-03 04:05:06.789+00')",
            &[&t],
        )
        .unwrap()
        .get(0);
    assert!(id > 0, "publish returns the outbox id");
    c.execute("SELECT kafka.publish($1, 'o', headers => '{\"a\": \"x\"}', partition => 2)", &[&t]).unwrap();
    let r = read_full(&t, 3, 2);
    assert_eq!(r[0].key.as_deref(), Some(&b"k"[..]));
    assert_eq!(r[0].payload.as_deref(), Some(&b"v"[..]));
    assert_eq!(r[0].partition, 2);
    assert_eq!(r[0].timestamp, Some(1_612_325_106_789));
    let h = |n: &str, v: Option<&str>| (n.to_owned(), v.map(|v| v.as_bytes().to_vec()));
    assert_eq!(r[0].headers, vec![h("h", Some("1")), h("h", Some("2")), h("n", None)]);
    assert_eq!(r[1].headers, vec![h("a", Some("x"))]);
}

#[test]
fn payload_bytes_arrive_exactly_as_given() {
    let mut c = pg();
    let t = topic("bytes");
    let binary: Vec<u8> = vec![0, 0xff, 0x80, b'a', 0, 0xc3, 0x28];
    c.execute("SELECT kafka.publish($1, $2::bytea, key_bytes => '\\x00ff'::bytea)", &[&t, &binary]).unwrap();
    c.execute(
        "SELECT kafka.publish($1, '{\"b\": [1, 2.50], \"a\": {\"c\": null}}'::jsonb, key => 'j')",
        &[&t],
    )
    .unwrap();
    c.execute("SELECT kafka.publish($1, 'naïve ✓')", &[&t]).unwrap();
    c.execute("SELECT kafka.publish($1, NULL, key => 'deleted')", &[&t]).unwrap();
    let r = read_full(&t, 1, 4);
    assert_eq!(r[0].payload.as_deref(), Some(&binary[..]));
    assert_eq!(r[0].key.as_deref(), Some(&[0u8, 0xff][..]));
    assert_eq!(
        r[1].payload.as_deref(),
        Some(&br#"{"a": {"c": null}, "b": [1, 2.50]}"#[..]),
        "jsonb's canonical text"
    );
    assert_eq!(r[2].payload.as_deref(), Some("naïve ✓".as_bytes()));
    assert_eq!((r[3].key.as_deref(), r[3].payload.as_deref()), (Some(&b"deleted"[..]), None), "a tombstone");
}

#[test]
fn missing_partition_is_dead_lettered_and_can_be_requeued_once_fixed() {
    let mut c = pg();
    let t = topic("partition");
    create_topic(&t, 1);
    c.execute("SELECT kafka.publish($1, 'to p1', partition => 1)", &[&t]).unwrap();
    c.execute("SELECT kafka.publish($1, 'to p0', partition => 0)", &[&t]).unwrap();
    read_full(&t, 1, 1); // the queue moved on
    let mut error = String::new();
    wait_until("the dead letter", || {
        let row = c.query_opt("SELECT error FROM kafka.dead_letter WHERE topic = $1", &[&t]).unwrap();
        row.map(|r| error = r.get(0)).is_some()
    });
    assert!(error.contains("Unknown partition"), "{error}");
    let row = c
        .query_one(
            "SELECT partition, payload, first_attempt_at <= last_attempt_at FROM kafka.dead_letter WHERE topic = $1",
            &[&t],
        )
        .unwrap();
    assert_eq!(row.get::<_, Option<i32>>(0), Some(1));
    assert_eq!(row.get::<_, Vec<u8>>(1), b"to p1");
    assert!(row.get::<_, bool>(2));

    let more = NewPartitions::new(&t, 2);
    let res = block_on(admin().create_partitions(&[more], &AdminOptions::new())).unwrap();
    assert!(res.iter().all(|r| r.is_ok()), "{res:?}");
    let n: i64 = c.query_one("SELECT kafka.requeue_dead_letters(topic => $1)", &[&t]).unwrap().get(0);
    assert_eq!(n, 1);
    let r = read_full(&t, 2, 2);
    assert!(r.iter().any(|m| m.partition == 1 && m.payload.as_deref() == Some(&b"to p1"[..])), "{r:?}");
    let left: i64 =
        c.query_one("SELECT count(*) FROM kafka.dead_letter WHERE topic = $1", &[&t]).unwrap().get(0);
    assert_eq!(left, 0);
}

#[test]
fn dead_letters_can_be_purged_by_id() {
    let mut c = pg();
    let t = topic("purge");
    c.execute("SELECT kafka.publish($1, repeat('x', 2000000))", &[&t]).unwrap();
    let mut id = 0i64;
    wait_until("the dead letter", || {
        let row = c.query_opt("SELECT id FROM kafka.dead_letter WHERE topic = $1", &[&t]).unwrap();
        row.map(|r| id = r.get(0)).is_some()
    });
    let n: i64 = c.query_one("SELECT kafka.purge_dead_letters(ARRAY[$1::bigint])", &[&id]).unwrap().get(0);
    assert_eq!(n, 1);
    let left: i64 =
        c.query_one("SELECT count(*) FROM kafka.dead_letter WHERE id = $1", &[&id]).unwrap().get(0);
    assert_eq!(left, 0);
}

#[test]
fn every_bad_argument_gets_a_clear_error() {
    let mut c = pg();
    for (sql, state) in [
        ("SELECT kafka.publish('t', 'v', partition => -1)", "22023"),
        ("SELECT kafka.publish('t', 'v', headers => '\"x\"')", "22023"),
        ("SELECT kafka.publish('t', 'v', headers => '{\"a\": 1}')", "22023"),
        ("SELECT kafka.publish('t', 'v', headers => '[[\"a\"]]')", "22023"),
        ("SELECT kafka.publish('t', 'v', ts => '1969-12-31 23:59:59+00')", "22008"),
        ("SELECT kafka.publish('t', 'v', ts => 'infinity')", "22008"),
        ("SELECT kafka.publish('t', NULL)", "22004"),
        ("SELECT kafka.publish('t', NULL::bytea, key => NULL)", "22004"),
        ("SELECT kafka.publish('t', 'v', key => 'a', key_bytes => 'b')", "22023"),
        ("SELECT kafka.publish(NULL, 'v')", "22004"),
        ("SELECT kafka.publish('bad topic', 'v')", "22023"),
    ] {
        let (got, hint) = error_of(&mut c, sql);
        assert_eq!(got, state, "{sql}");
        assert!(hint.is_some_and(|h| !h.is_empty()), "{sql}");
    }
}
