//! Delivery through every fault, on a three-broker Kafka cluster (`scripts/stack up cluster`):
//! while sessions keep committing (and rolling back) transactions, the worker is killed,
//! PostgreSQL crashes, the partition leader is killed, a broker hangs, and all brokers stop for
//! 30 s. A read_committed consumer then finds every committed message, nothing of a rolled-back
//! transaction, and per key the order of commits: exactly once with `kafka.delivery =
//! exactly_once`; at least once by default, where a duplicate may only repeat a run of messages
//! (`5 6 7 | 5 6 7`), never put one before an earlier one (`6 7 5`). Each transaction also inserts
//! a row into a table captured with `method => 'wal'`: its events obey the same rules.

use pg_kafka_e2e::*;
use postgres::Client;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

const SESSIONS: u32 = 3;
const PER_TRANSACTION: u32 = 20;
const PACE: Duration = Duration::from_millis(20);

fn cluster_servers() -> String {
    std::env::var("KAFKA_CLUSTER_SERVERS").expect("KAFKA_CLUSTER_SERVERS is not set: run scripts/test")
}

/// A connection that leaves `kafka.broker` alone (`pg()` would add the single broker back, and a
/// producer bootstrapped from two clusters would write to either).
fn db() -> Client {
    connect_to(&std::env::var("PGDATABASE").unwrap())
}

/// Points pg_kafka at the cluster in delivery mode `mode`; back to the single broker at the end.
struct OnCluster;

impl OnCluster {
    fn start(mode: &str) -> OnCluster {
        stack(&["up", "cluster"]);
        let mut c = pg();
        c.batch_execute(
            "DELETE FROM kafka.broker;
             INSERT INTO kafka.broker VALUES ('127.0.0.1', 9192), ('127.0.0.1', 9292), ('127.0.0.1', 9392);
             CREATE TABLE IF NOT EXISTS e2e_committed (topic text, session int, seq int, PRIMARY KEY (topic, session, seq));
             CREATE TABLE IF NOT EXISTS e2e_cluster_wal (topic text, session int, seq int, PRIMARY KEY (topic, session, seq));",
        )
        .unwrap();
        c.batch_execute(&format!("ALTER SYSTEM SET kafka.delivery = '{mode}'")).unwrap();
        c.batch_execute("SELECT pg_reload_conf()").unwrap();
        wait_until(mode, || {
            let r = c.query_one("SELECT delivery FROM kafka.status", &[]).unwrap();
            r.get::<_, Option<String>>(0).as_deref() == Some(mode)
        });
        OnCluster
    }
}

impl Drop for OnCluster {
    fn drop(&mut self) {
        stack(&["up"]);
        stack(&["up", "cluster"]); // resumes a paused node, starts a stopped one
        let mut c = pg();
        c.batch_execute("ALTER SYSTEM RESET kafka.delivery").unwrap();
        c.batch_execute("SELECT pg_reload_conf()").unwrap();
        c.batch_execute("DELETE FROM kafka.broker; INSERT INTO kafka.broker VALUES ('localhost', 9092)")
            .unwrap();
        stack(&["down", "cluster"]);
    }
}

/// One session's load: transactions of [`PER_TRANSACTION`] messages keyed by the session, each
/// recorded in `e2e_committed` in the same transaction; every fifth one rolls back. Through
/// crashes it reconnects and learns from `e2e_committed` whether its last COMMIT happened.
fn session_load(topic: String, session: u32, stop: Arc<AtomicBool>) {
    let (mut seq, mut attempts) = (0, 0_u64);
    let mut c: Option<Client> = None;
    while !stop.load(Ordering::Relaxed) {
        let Some(client) = c.as_mut() else {
            match std::panic::catch_unwind(db) {
                Ok(mut client) => {
                    let last: Option<i32> = client
                        .query_one(
                            "SELECT max(seq) FROM e2e_committed WHERE topic = $1 AND session = $2",
                            &[&topic, &(session as i32)],
                        )
                        .map(|r| r.get(0))
                        .unwrap_or(None);
                    seq = last.unwrap_or(0) as u32;
                    c = Some(client);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)), // PostgreSQL restarting: retry
            }
            continue;
        };
        let next = seq + 1;
        attempts += 1;
        let rolled_back = attempts % 5 == 0;
        let sql = format!(
            "BEGIN;
             SELECT kafka.publish('{topic}', '{session}:{next}:' || i, key => 's{session}') FROM generate_series(1, {PER_TRANSACTION}) i;
             INSERT INTO e2e_committed VALUES ('{topic}', {session}, {next});
             INSERT INTO e2e_cluster_wal VALUES ('{topic}', {session}, {next});
             {}",
            if rolled_back { "ROLLBACK" } else { "COMMIT" }
        );
        match client.batch_execute(&sql) {
            Ok(()) if rolled_back => {
                // The number is used again by the next transaction, with other messages: a
                // rolled-back message that arrived would show up as a duplicate or a stray.
                client
                    .batch_execute(&format!(
                        "BEGIN; SELECT kafka.publish('{topic}', 'rolled back {session}:{next}'); ROLLBACK"
                    ))
                    .ok();
            }
            Ok(()) => seq = next,
            Err(_) => c = None, // a crash: reconnect and read back what committed
        }
        std::thread::sleep(PACE); // pacing of the load (some 50 transactions per second per session)
    }
}

/// Waits until the worker delivers again after a fault that began at `since`.
fn delivering_after(since: SystemTime, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let done = std::panic::catch_unwind(|| {
            let mut c = db();
            let r = c.query_one("SELECT last_delivery_at FROM kafka.status", &[]).unwrap();
            r.get::<_, Option<SystemTime>>(0).is_some_and(|t| t > since)
        });
        if done.unwrap_or(false) {
            return;
        }
        assert!(Instant::now() < deadline, "delivery did not resume after {what}");
        std::thread::sleep(Duration::from_millis(200)); // poll interval of a condition wait
    }
}

fn worker_pid() -> i32 {
    let mut c = db();
    wait_until("the worker to run", || status(&mut c).pid.is_some());
    status(&mut c).pid.unwrap()
}

/// The node that leads partition 0 of `topic` (after a restart the metadata may not name one yet).
fn leader_of(topic: &str) -> String {
    let mut leader = String::new();
    wait_until(&format!("a leader of {topic}"), || {
        let out = std::process::Command::new(std::env::var("PG_KAFKA_STACK").unwrap())
            .args(["cluster", "leader", topic, "0"])
            .output()
            .unwrap();
        leader = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        out.status.success() && !leader.is_empty()
    });
    leader
}

fn faults(topic: &str) {
    let now = SystemTime::now;
    delivering_after(now(), "the start");

    let at = now();
    std::process::Command::new("kill").args(["-9", &worker_pid().to_string()]).status().unwrap();
    delivering_after(at, "kill -9 of the worker");

    let at = now();
    stack(&["crash", "pg"]);
    stack(&["up", "pg"]);
    delivering_after(at, "PostgreSQL crashed");

    let leader = leader_of(topic);
    let at = now();
    stack(&["cluster", "kill", &leader]);
    delivering_after(at, "the partition leader was killed");
    stack(&["cluster", "start", &leader]);

    let hung = if leader == "1" { "2" } else { "1" };
    let at = now();
    stack(&["cluster", "pause", hung]);
    delivering_after(at, "a broker hung");
    stack(&["cluster", "resume", hung]);

    let at = now();
    stack(&["down", "cluster"]);
    std::thread::sleep(Duration::from_secs(30)); // the length of the outage under test
    stack(&["up", "cluster"]);
    delivering_after(at, "all brokers stopped for 30 s");
}

/// What the consumer must find: for each session, the messages of its committed transactions.
fn committed(topic: &str) -> BTreeSet<String> {
    let mut c = db();
    let rows = c.query("SELECT session, seq FROM e2e_committed WHERE topic = $1", &[&topic]).unwrap();
    rows.iter()
        .flat_map(|r| {
            let (s, q): (i32, i32) = (r.get(0), r.get(1));
            (1..=PER_TRANSACTION).map(move |i| format!("{s}:{q}:{i}"))
        })
        .collect()
}

/// One round of load and faults; `exactly_once`: no duplicate either.
fn one_round(exactly_once: bool) {
    let topic = topic("cluster");
    let wal_topic = format!("{topic}_wal");
    db().execute(
        "SELECT kafka.capture('e2e_cluster_wal', topic => $1, key_columns => ARRAY['session'], method => 'wal')",
        &[&wal_topic],
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (1..=SESSIONS)
        .map(|s| {
            let (t, stop) = (topic.clone(), stop.clone());
            std::thread::spawn(move || session_load(t, s, stop))
        })
        .collect();
    faults(&topic);
    stop.store(true, Ordering::Relaxed);
    load.into_iter().for_each(|h| h.join().unwrap());
    let mut c = db();
    wait_until("the outbox to drain", || status(&mut c).backlog == 0);

    let want = committed(&topic);
    assert!(want.len() > 1000, "the load ran through the faults: {} messages", want.len());
    let seen = read_all(&cluster_servers(), &topic, "read_committed", want.len(), Duration::from_secs(120));
    let texts: Vec<String> = seen.iter().map(|(_, r)| r.text().unwrap_or_default()).collect();
    let distinct: BTreeSet<String> = texts.iter().cloned().collect();
    let lost: Vec<&String> = want.difference(&distinct).take(5).collect();
    let strays: Vec<&String> = distinct.difference(&want).take(5).collect();
    let duplicates = texts.len() - distinct.len();
    // Order: per key, the (transaction, message) numbers of first arrivals only grow along the
    // partition (a repeated run of messages is a duplicate, not a reordering).
    let mut last: BTreeMap<Vec<u8>, (u32, u32)> = BTreeMap::new();
    let mut first_arrivals = BTreeSet::new();
    let mut order_violations = 0;
    for (_, r) in &seen {
        let text = r.text().unwrap_or_default();
        if !first_arrivals.insert(text.clone()) {
            continue;
        }
        let mut parts = text.split(':').skip(1).map(|n| n.parse::<u32>().unwrap_or(0));
        let n = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        let key = r.key.clone().unwrap_or_default();
        if last.get(&key).is_some_and(|prev| *prev >= n) {
            order_violations += 1;
        }
        last.insert(key, n);
    }
    let duplicates = if exactly_once { duplicates } else { 0 }; // allowed at least once
    assert_eq!(
        (lost.len(), duplicates, strays.len(), order_violations),
        (0, 0, 0, 0),
        "{} committed messages: lost {lost:?}, {duplicates} duplicates, strays {strays:?}, \
         {order_violations} out of order",
        want.len()
    );
    eprintln!(
        "{} committed messages arrived, in order, none rolled back ({} copies)",
        want.len(),
        texts.len()
    );
    wal_events_arrived(&wal_topic, exactly_once);
}

/// The events of the wal-captured table: one per committed transaction, none of a rolled-back
/// one, per session (the key) in commit order; exactly once, none twice.
fn wal_events_arrived(wal_topic: &str, exactly_once: bool) {
    let topic = wal_topic.strip_suffix("_wal").unwrap();
    let mut c = db();
    let want: BTreeSet<(i64, i64)> = c
        .query("SELECT session, seq FROM e2e_committed WHERE topic = $1", &[&topic])
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, i32>(0) as i64, r.get::<_, i32>(1) as i64))
        .collect();
    let seen =
        read_all(&cluster_servers(), wal_topic, "read_committed", want.len(), Duration::from_secs(180));
    let got: Vec<(i64, i64)> = seen
        .iter()
        .filter_map(|(_, r)| {
            let v: serde_json::Value = serde_json::from_slice(r.payload.as_deref()?).ok()?;
            Some((v["after"]["session"].as_i64()?, v["after"]["seq"].as_i64()?))
        })
        .collect();
    let distinct: BTreeSet<(i64, i64)> = got.iter().copied().collect();
    let lost = want.difference(&distinct).count();
    let strays = distinct.difference(&want).count();
    let duplicates = if exactly_once { got.len() - distinct.len() } else { 0 };
    let mut last: BTreeMap<i64, i64> = BTreeMap::new();
    let mut first = BTreeSet::new();
    let mut order_violations = 0;
    for &(s, q) in &got {
        if first.insert((s, q)) {
            if last.get(&s).is_some_and(|&p| p >= q) {
                order_violations += 1;
            }
            last.insert(s, q);
        }
    }
    assert_eq!(
        (lost, duplicates, strays, order_violations),
        (0, 0, 0, 0),
        "{} committed transactions' WAL-captured events: lost, duplicates, strays, out of order",
        want.len()
    );
    c.batch_execute("SELECT kafka.uncapture('e2e_cluster_wal')").unwrap();
    eprintln!("{} WAL-captured events arrived, in order ({} copies)", want.len(), got.len());
}

#[test]
fn exactly_once_through_crashes_and_broker_failures() {
    let _cluster = OnCluster::start("exactly_once");
    let rounds: usize = std::env::var("PG_KAFKA_FAULT_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(2);
    for _ in 0..rounds {
        one_round(true);
    }
}

#[test]
fn at_least_once_through_crashes_and_broker_failures() {
    let _cluster = OnCluster::start("at_least_once");
    one_round(false);
}
