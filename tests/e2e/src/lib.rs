//! Helpers for the end-to-end tests: connections to the stack started by `scripts/stack up`
//! (found through the variables `scripts/stack env` prints), unique topics, a consumer that reads
//! a topic from the beginning, and waiting on conditions with deadlines.

use postgres::{Client, NoTls};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a test waits for something that normally takes a second.
pub const PATIENCE: Duration = Duration::from_secs(60);

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run the tests with scripts/test"))
}

/// The stack's PostgreSQL server log.
pub fn server_log() -> String {
    env("PG_KAFKA_SERVER_LOG")
}

pub fn bootstrap_servers() -> String {
    env("KAFKA_BOOTSTRAP_SERVERS")
}

/// The connection string of the stack's PostgreSQL (database PGDATABASE).
pub fn connect_string() -> String {
    format!(
        "host={} port={} user={} dbname={}",
        env("PGHOST"),
        env("PGPORT"),
        env("PGUSER"),
        env("PGDATABASE")
    )
}

/// A connection to the stack's PostgreSQL, to `database` (default: PGDATABASE).
pub fn connect_to(database: &str) -> Client {
    let conf =
        format!("host={} port={} user={} dbname={database}", env("PGHOST"), env("PGPORT"), env("PGUSER"));
    Client::connect(&conf, NoTls).unwrap_or_else(|e| panic!("cannot connect to PostgreSQL ({conf}): {e}"))
}

/// A connection with the extension created and the original extension's broker row present.
pub fn pg() -> Client {
    let mut c = connect_to(&env("PGDATABASE"));
    c.batch_execute(
        "CREATE EXTENSION IF NOT EXISTS kafka;
         INSERT INTO kafka.broker VALUES ('localhost', 9092) ON CONFLICT DO NOTHING;",
    )
    .unwrap();
    c
}

/// A topic name no other test (or earlier run) uses.
pub fn topic(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("e2e_{name}_{}_{nanos}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Runs `scripts/stack ARGS...` and fails the test if it fails.
pub fn stack(args: &[&str]) {
    let script = env("PG_KAFKA_STACK");
    let status = Command::new(&script).args(args).status().expect("cannot run scripts/stack");
    assert!(status.success(), "{script} {args:?} failed: {status}");
}

/// Polls `f` until it returns true; panics with `what` after `PATIENCE`.
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !f() {
        assert!(Instant::now() < deadline, "timed out after {PATIENCE:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100)); // poll interval of a condition wait, not a fixed delay
    }
}

/// One consumed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// The record's timestamp (ms): when the worker handed it to librdkafka, unless the
    /// message gave its own.
    pub timestamp_ms: Option<i64>,
}

impl Record {
    pub fn text(&self) -> Option<String> {
        self.payload.as_ref().map(|p| String::from_utf8_lossy(p).into_owned())
    }
}

/// Reads partition 0 of `topic` from the beginning.
pub struct TopicReader {
    consumer: BaseConsumer,
    pub records: Vec<Record>,
}

impl TopicReader {
    pub fn new(topic: &str) -> TopicReader {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap_servers())
            .set("group.id", format!("e2e-{topic}"))
            .set("enable.auto.commit", "false")
            .set("topic.metadata.refresh.interval.ms", "500")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
        consumer.assign(&tpl).unwrap();
        TopicReader { consumer, records: Vec::new() }
    }

    /// Reads until at least `n` records have arrived in all; panics after `PATIENCE`.
    pub fn read_at_least(&mut self, n: usize) -> &[Record] {
        let deadline = Instant::now() + PATIENCE;
        while self.records.len() < n {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {n} records, got {}: {:?}",
                self.records.len(),
                self.records.iter().rev().take(3).collect::<Vec<_>>()
            );
            if let Some(Ok(m)) = self.consumer.poll(Duration::from_millis(200)) {
                self.records.push(Record {
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec),
                    timestamp_ms: m.timestamp().to_millis(),
                });
            }
        }
        &self.records
    }

    /// Reads until a record with payload `marker` arrives; returns the payloads before it.
    pub fn texts_until(&mut self, marker: &str) -> Vec<String> {
        let mut n = 1;
        loop {
            self.read_at_least(n);
            if self.records[n - 1].text().as_deref() == Some(marker) {
                return self.records[..n - 1].iter().map(|r| r.text().unwrap_or_default()).collect();
            }
            n += 1;
        }
    }
}

/// The worker's state as `kafka.status` shows it.
pub struct Status {
    pub running: bool,
    pub pid: Option<i32>,
    pub backlog: i64,
    pub last_error: Option<String>,
}

pub fn status(c: &mut Client) -> Status {
    let r =
        c.query_one("SELECT worker_running, worker_pid, backlog, last_error FROM kafka.status", &[]).unwrap();
    Status { running: r.get(0), pid: r.get(1), backlog: r.get(2), last_error: r.get(3) }
}

/// Runs `sql` expecting an error; returns (SQLSTATE, hint).
pub fn error_of(c: &mut Client, sql: &str) -> (String, Option<String>) {
    let e = c.batch_execute(sql).expect_err(sql);
    let db = e.as_db_error().unwrap_or_else(|| panic!("{sql}: not a database error: {e}"));
    (db.code().code().to_owned(), db.hint().map(str::to_owned))
}

/// Runs `f` as a fresh role that is granted each of `grants` (roles, or privileges such as
/// `CREATE ON SCHEMA public`), then drops the role and whatever it created, even one left by an
/// earlier, failed run.
pub fn as_role(c: &mut Client, name: &str, grants: &[&str], f: impl FnOnce(&mut Client)) {
    c.batch_execute(&format!("DROP OWNED BY {name}")).ok(); // fails only if there is no such role
    c.batch_execute(&format!("DROP ROLE IF EXISTS {name}; CREATE ROLE {name}")).unwrap();
    for g in grants {
        c.batch_execute(&format!("GRANT {g} TO {name}")).unwrap();
    }
    c.batch_execute(&format!("SET ROLE {name}")).unwrap();
    f(c);
    c.batch_execute(&format!("RESET ROLE; DROP OWNED BY {name}; DROP ROLE {name}")).unwrap();
}

/// Reads every partition of `topic` on `servers` from the beginning, with `isolation.level`
/// `isolation`, until at least `n` records have arrived and every partition is at its end (so
/// a duplicate behind the `n`th record is seen too); panics after `patience`. Returns each
/// record with its partition, in offset order per partition.
pub fn read_all(
    servers: &str,
    topic: &str,
    isolation: &str,
    n: usize,
    patience: Duration,
) -> Vec<(i32, Record)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", format!("e2e-all-{topic}"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", isolation)
        .create()
        .expect("consumer");
    let deadline = Instant::now() + patience;
    let partitions = loop {
        let found = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)).ok().and_then(|m| {
            m.topics().first().filter(|t| t.error().is_none()).map(|t| t.partitions().len() as i32)
        });
        match found {
            Some(p) if p > 0 => break p,
            _ => assert!(Instant::now() < deadline, "topic {topic} did not appear"),
        }
    };
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut at_end = vec![false; partitions as usize];
    let mut records = Vec::new();
    while records.len() < n || at_end.iter().any(|e| !e) {
        assert!(
            Instant::now() < deadline,
            "timed out after {patience:?} waiting for {n} records of {topic}, got {}",
            records.len()
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                at_end[m.partition() as usize] = false;
                let r = Record {
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec),
                    timestamp_ms: m.timestamp().to_millis(),
                };
                records.push((m.partition(), r));
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => at_end[p as usize] = true,
            _ => {}
        }
    }
    records
}

/// Sets `kafka.delivery` to `mode` and waits until the worker delivers so.
pub fn delivery_mode(mode: &str) {
    let mut c = pg();
    c.batch_execute(&format!("ALTER SYSTEM SET kafka.delivery = '{mode}'")).unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait_until(&format!("the worker to deliver {mode}"), || {
        let r = c.query_one("SELECT delivery FROM kafka.status", &[]).unwrap();
        r.get::<_, Option<String>>(0).as_deref() == Some(mode)
    });
}

/// Points `kafka.broker` at a port nothing listens on, and returns once the worker dropped the
/// producer it had (it must have one: read a delivered message first): from then on, messages
/// wait. [`BrokerBack`] puts the broker back.
pub fn make_broker_unreachable(c: &mut Client) {
    let log_from = std::fs::metadata(server_log()).unwrap().len() as usize;
    c.batch_execute("UPDATE kafka.broker SET port = 1").unwrap();
    wait_until("the worker to use the new broker", || {
        std::fs::read_to_string(server_log()).unwrap()[log_from..].contains("closing the Kafka producer")
    });
}

/// Puts the usual broker (`localhost:9092`) back when a test that pointed `kafka.broker`
/// elsewhere ends, even failed.
pub struct BrokerBack;

impl Drop for BrokerBack {
    fn drop(&mut self) {
        let _ = pg()
            .batch_execute("DELETE FROM kafka.broker; INSERT INTO kafka.broker VALUES ('localhost', 9092)");
    }
}

/// Switches the worker to exactly-once delivery, and back when the test ends (even failed),
/// with the stack up, a broker row and no `acks` setting, as the tests found them.
pub struct ExactlyOnce;

impl ExactlyOnce {
    pub fn on() -> ExactlyOnce {
        delivery_mode("exactly_once");
        ExactlyOnce
    }
}

impl Drop for ExactlyOnce {
    fn drop(&mut self) {
        stack(&["up"]);
        let mut c = pg();
        c.batch_execute("DELETE FROM kafka.config WHERE name = 'acks'").unwrap();
        c.batch_execute("INSERT INTO kafka.broker VALUES ('localhost', 9092) ON CONFLICT DO NOTHING")
            .unwrap();
        delivery_mode("at_least_once");
    }
}

/// A database of its own, with the extension; dropped at the end even if the test fails.
pub struct OtherDb(String);

impl OtherDb {
    pub fn new(name: &str) -> (OtherDb, Client) {
        let (db, mut o) = OtherDb::empty(name);
        o.batch_execute("CREATE EXTENSION kafka").unwrap();
        (db, o)
    }

    pub fn empty(name: &str) -> (OtherDb, Client) {
        let mut c = pg();
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).unwrap();
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        (OtherDb(name.to_owned()), connect_to(name))
    }
}

impl Drop for OtherDb {
    fn drop(&mut self) {
        if let Err(e) = pg().batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0)) {
            eprintln!("could not drop database {}: {e}", self.0); // a panic here would abort the run
        }
    }
}

/// Points the worker at `database` and waits until it serves it.
pub fn serve(database: &str) {
    let mut c = connect_to("postgres");
    c.batch_execute(&format!("ALTER SYSTEM SET kafka.database = '{database}'")).unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    let mut d = connect_to(database);
    wait_until(&format!("the worker to serve {database}"), || status(&mut d).running);
}

/// Serves the usual database again, even when the test fails half-way.
pub struct ServeDefault;

impl Drop for ServeDefault {
    fn drop(&mut self) {
        let mut c = connect_to("postgres");
        c.batch_execute("ALTER SYSTEM RESET kafka.database").unwrap();
        c.batch_execute("SELECT pg_reload_conf()").unwrap();
        wait_until("the worker to serve postgres again", || status(&mut pg()).running);
    }
}

/// Runs a program (pg_dump, pg_restore) and fails the test if it fails.
pub fn run(program: &str, args: &[&str]) {
    let out = std::process::Command::new(program).args(args).output().unwrap();
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Empties `kafka.topic_grants` when dropped (even when the test fails half-way).
pub struct NoTopicGrants;

impl Drop for NoTopicGrants {
    fn drop(&mut self) {
        pg().batch_execute("DELETE FROM kafka.topic_grants").unwrap();
    }
}
