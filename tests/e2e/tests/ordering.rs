//! The ordering contract, tried the way it breaks: a transaction whose messages straddle other
//! sessions' commits, transactions serialized by a row lock, and a transaction left open.
//! Each runs many rounds under load, so a race shows rather than passing one lucky run.

use pg_kafka_e2e::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

/// Other sessions committing large transactions until dropped, so the worker always has full
/// batches in flight while the test's transactions commit; each session waits for the backlog
/// to fall under `2 * per_commit` before its next commit, so the worker keeps up with them.
struct Load {
    stop: Arc<AtomicBool>,
    commits: Arc<AtomicU64>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Load {
    fn start(sessions: usize, per_commit: usize) -> Load {
        drop(pg()); // the extension exists before the sessions race to create it
        let stop = Arc::new(AtomicBool::new(false));
        let commits = Arc::new(AtomicU64::new(0));
        let t = topic("load");
        let threads = (0..sessions)
            .map(|_| {
                let (stop, commits, t) = (stop.clone(), commits.clone(), t.clone());
                thread::spawn(move || {
                    let mut c = pg();
                    while !stop.load(Ordering::Relaxed) {
                        c.execute(
                            "SELECT kafka.produce($1, 'load') FROM generate_series(1, $2::int)",
                            &[&t, &(per_commit as i32)],
                        )
                        .unwrap();
                        commits.fetch_add(1, Ordering::Relaxed);
                        wait_until("the worker to keep up with the load", || {
                            stop.load(Ordering::Relaxed) || status(&mut c).backlog < 2 * per_commit as i64
                        });
                    }
                })
            })
            .collect();
        Load { stop, commits, threads }
    }

    /// Waits until the other sessions have committed `n` more transactions.
    fn wait_commits(&self, n: u64) {
        let target = self.commits.load(Ordering::Relaxed) + n;
        wait_until("the load sessions to commit", || {
            assert!(!self.threads.iter().any(|t| t.is_finished()), "a load session failed");
            self.commits.load(Ordering::Relaxed) >= target
        });
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Issue: a message produced early in a transaction, before other sessions commit tens of
/// thousands of messages (which the worker delivers meanwhile), reached Kafka after the
/// transaction's later messages.
#[test]
fn a_transaction_that_straddles_other_commits_keeps_its_order() {
    let t = topic("straddle");
    let load = Load::start(2, 20_000);
    let mut c = pg();
    let mut watch = pg();
    const ROUNDS: usize = 30;
    for round in 0..ROUNDS {
        let mut tx = c.transaction().unwrap();
        let first: i64 = tx
            .query_one("SELECT kafka.publish($1, $2, key => 'k')", &[&t, &format!("{round}:1")])
            .unwrap()
            .get(0);
        load.wait_commits(2);
        // The worker has gone past this transaction's first message (not committed yet).
        wait_until("the worker to deliver what was queued before the first message", || {
            let q = "SELECT NOT EXISTS (SELECT FROM kafka.outbox WHERE id < $1)";
            watch.query_one(q, &[&first]).unwrap().get(0)
        });
        tx.execute(
            "SELECT kafka.publish($1, $2 || ':' || i, key => 'k') FROM generate_series(2, 300) i",
            &[&t, &round.to_string()],
        )
        .unwrap();
        tx.commit().unwrap();
    }
    drop(load);
    let mut r = TopicReader::new(&t);
    let got: Vec<String> = r.read_at_least(ROUNDS * 300).iter().map(|m| m.text().unwrap()).collect();
    let want: Vec<String> =
        (0..ROUNDS).flat_map(|round| (1..=300).map(move |i| format!("{round}:{i}"))).collect();
    assert_eq!(got.len(), want.len(), "no duplicates without a fault");
    let first_bad = got.iter().zip(&want).position(|(g, w)| g != w);
    assert_eq!(first_bad, None, "messages arrive in the order the transactions produced and committed them");
}

/// Issue: three sessions taking turns on one row lock (each waits for the previous to commit)
/// reached Kafka out of commit order, for capture events and produced messages alike.
#[test]
fn transactions_serialized_by_a_row_lock_arrive_in_commit_order() {
    let table = topic("locked");
    let events = format!("{table}_events");
    let produced = format!("{table}_produced");
    let mut c = pg();
    c.batch_execute(&format!(
        "CREATE TABLE {table} (id int PRIMARY KEY, v int NOT NULL);
         INSERT INTO {table} VALUES (1, 0);
         SELECT kafka.capture('{table}', topic => '{events}');"
    ))
    .unwrap();
    const SESSIONS: usize = 3;
    const EACH: usize = 150;
    let workers: Vec<_> = (0..SESSIONS)
        .map(|_| {
            let (table, produced) = (table.clone(), produced.clone());
            thread::spawn(move || {
                let mut c = pg();
                for _ in 0..EACH {
                    let mut tx = c.transaction().unwrap();
                    // The row lock orders the sessions: v is this transaction's place in commit order.
                    let v: i32 = tx
                        .query_one(&format!("UPDATE {table} SET v = v + 1 WHERE id = 1 RETURNING v"), &[])
                        .unwrap()
                        .get(0);
                    tx.execute("SELECT kafka.publish($1, $2, key => 'row1')", &[&produced, &v.to_string()])
                        .unwrap();
                    tx.commit().unwrap();
                }
            })
        })
        .collect();
    workers.into_iter().for_each(|h| h.join().unwrap());
    let total = SESSIONS * EACH;
    let want: Vec<i64> = (1..=total as i64).collect();

    let mut r = TopicReader::new(&produced);
    let got: Vec<i64> = r.read_at_least(total).iter().map(|m| m.text().unwrap().parse().unwrap()).collect();
    assert_eq!(got, want, "produced messages arrive in commit order");

    let mut r = TopicReader::new(&events);
    let got: Vec<i64> = r
        .read_at_least(total)
        .iter()
        .filter_map(|m| m.text())
        .map(|v| {
            let e: serde_json::Value = serde_json::from_str(&v).unwrap();
            e["after"]["v"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(got, want, "row images arrive in commit order: a consumer ends with the newest");
    c.batch_execute(&format!("DROP TABLE {table}")).unwrap();
}

/// One session's successive transactions arrive in its commit order, while others commit too.
#[test]
fn one_sessions_transactions_arrive_in_its_order_under_load() {
    let t = topic("session_order");
    let load = Load::start(1, 5_000);
    let mut c = pg();
    for i in 0..500 {
        c.execute("SELECT kafka.produce($1, $2)", &[&t, &i.to_string()]).unwrap();
    }
    drop(load);
    let mut r = TopicReader::new(&t);
    let got: Vec<String> = r.read_at_least(500).iter().map(|m| m.text().unwrap()).collect();
    assert_eq!(got, (0..500).map(|i| i.to_string()).collect::<Vec<_>>());
}

/// A transaction left open (idle in transaction) holds back nobody else's messages, and its own
/// arrive once it commits.
#[test]
fn an_open_transaction_holds_back_nobody() {
    let t = topic("idle_tx");
    let other = topic("idle_other");
    let mut idle = pg();
    let mut tx = idle.transaction().unwrap();
    tx.execute("SELECT kafka.produce($1, 'from the open transaction')", &[&t]).unwrap();
    let mut c = pg();
    for i in 0..50 {
        c.execute("SELECT kafka.produce($1, $2)", &[&other, &i.to_string()]).unwrap();
    }
    let mut r = TopicReader::new(&other);
    let got: Vec<String> = r.read_at_least(50).iter().map(|m| m.text().unwrap()).collect();
    assert_eq!(got, (0..50).map(|i| i.to_string()).collect::<Vec<_>>());
    c.execute("SELECT kafka.produce($1, 'committed while the other was open')", &[&t]).unwrap();
    let mut r = TopicReader::new(&t);
    assert_eq!(r.read_at_least(1)[0].text().unwrap(), "committed while the other was open");
    tx.commit().unwrap();
    assert_eq!(r.read_at_least(2)[1].text().unwrap(), "from the open transaction");
}

/// The worker empties the outbox with TRUNCATE once it drained it; a transaction that already
/// wrote packs and is still open, or is prepared, keeps them.
#[test]
fn open_and_prepared_transactions_keep_their_messages_when_the_outbox_is_emptied() {
    let t = topic("truncate");
    let other = topic("truncate_other");
    let mut open = pg();
    let mut tx = open.transaction().unwrap();
    // More than a transaction buffers: most of it is written to the outbox before COMMIT.
    tx.execute("SELECT kafka.produce($1, 'open ' || i) FROM generate_series(1, 12000) i", &[&t]).unwrap();
    /// A prepared transaction outlives the test if it fails half-way: roll it back then.
    struct Prepared;
    impl Drop for Prepared {
        fn drop(&mut self) {
            let _ = pg().batch_execute("ROLLBACK PREPARED 'pg_kafka_truncate_test'");
        }
    }
    drop(Prepared); // one left by an earlier, failed run
    let _cleanup = Prepared;
    let mut prepared = pg();
    prepared
        .batch_execute(&format!(
            "BEGIN; SELECT kafka.produce('{t}', 'prepared ' || i) FROM generate_series(1, 11000) i;
             PREPARE TRANSACTION 'pg_kafka_truncate_test';"
        ))
        .unwrap();
    // Others' messages (megabytes of them) are delivered and the worker finds nothing more to
    // send: it tries to empty the outbox, which it must not while those two hold packs there.
    let mut c = pg();
    c.execute(
        "SELECT kafka.produce($1, repeat(md5(i::text), 4)) FROM generate_series(1, 100000) i",
        &[&other],
    )
    .unwrap();
    TopicReader::new(&other).read_at_least(100_000);
    wait_until("the worker to go idle", || {
        let q = "SELECT query = 'idle' FROM pg_stat_activity WHERE backend_type = 'pg_kafka'";
        c.query_one(q, &[]).unwrap().get(0)
    });
    tx.commit().unwrap();
    c.batch_execute("COMMIT PREPARED 'pg_kafka_truncate_test'").unwrap();
    let mut r = TopicReader::new(&t);
    let got: Vec<String> = r.read_at_least(23_000).iter().map(|m| m.text().unwrap()).collect();
    let mut want: Vec<String> = (1..=12_000).map(|i| format!("open {i}")).collect();
    want.extend((1..=11_000).map(|i| format!("prepared {i}")));
    let (mut got_sorted, mut want_sorted) = (got.clone(), want.clone());
    got_sorted.sort();
    want_sorted.sort();
    assert_eq!(got_sorted, want_sorted, "nothing lost, nothing twice");
    for prefix in ["open ", "prepared "] {
        let mine: Vec<&String> = got.iter().filter(|m| m.starts_with(prefix)).collect();
        let theirs: Vec<&String> = want.iter().filter(|m| m.starts_with(prefix)).collect();
        assert_eq!(mine, theirs, "{prefix}messages in order");
    }
    // Once nobody holds packs there, the drained outbox gives its space back.
    c.execute(
        "SELECT kafka.produce($1, repeat(md5(i::text), 4)) FROM generate_series(1, 100000) i",
        &[&other],
    )
    .unwrap();
    wait_until("the drained outbox to be emptied", || {
        let q = "SELECT pg_total_relation_size('kafka.outbox') < 1048576 AND backlog = 0 FROM kafka.status";
        c.query_one(q, &[]).unwrap().get(0)
    });
}
