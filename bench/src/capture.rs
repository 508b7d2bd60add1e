//! Bulk capture benchmark: `INSERT … SELECT` of N rows into a plain table and into the same table
//! captured with kafka.capture(), in the same run; prints rows/s of each and the cost ratio.
//! The captured insert includes building every Debezium event and writing it to the outbox
//! (delivery to Kafka happens after COMMIT, in the worker, and is not part of the figure).
//! Three rounds, plain and captured alternately, each into fresh tables on a quiet server (no
//! backlog being delivered, after a checkpoint); the ratio reported is the median round's. The
//! benchmark's tables are not autovacuumed: PostgreSQL's autovacuum looks at a database once a
//! minute, so whether it vacuums a million fresh rows during a timed insert or delivery would be
//! chance, and with `wal` it had two such tables to vacuum in the WAL-captured round against one
//! in the trigger round. (`kafka.outbox` keeps its autovacuum: it is part of what is measured.)
//!
//! With `wal` (`method => 'wal'`): the COMMIT time of the captured insert against the plain one,
//! and the time until every event is in Kafka against the trigger method's.
//!
//! Run with `scripts/bench capture [N] [wal]`.

mod stack;

use postgres::Client;
use std::time::{Duration, Instant};

const ROUNDS: usize = 3;

fn main() {
    let n = stack::count_arg(1_000_000);
    if std::env::args().nth(2).as_deref() == Some("wal") {
        return wal(n);
    }
    let mut pg = stack::connect();
    println!(
        "bulk capture: INSERT ... SELECT of {n} rows (bigint key, text, numeric, timestamptz), one statement, \
         {ROUNDS} rounds"
    );
    let mut ratios = Vec::new();
    for round in 1..=ROUNDS {
        fresh_tables(&mut pg, "trigger");
        let plain = insert(&mut pg, "bench_plain", n);
        let captured = insert(&mut pg, "bench_captured", n);
        let rate = |d: Duration| n as f64 / d.as_secs_f64();
        let ratio = captured.as_secs_f64() / plain.as_secs_f64();
        println!(
            "round {round}: plain {:>7.0} rows/s ({:.2} s), captured {:>7.0} rows/s ({:.2} s, events included), ratio {ratio:.2}x",
            rate(plain),
            plain.as_secs_f64(),
            rate(captured),
            captured.as_secs_f64(),
        );
        ratios.push(ratio);
        pg.batch_execute("SELECT kafka.uncapture('bench_captured'); DROP TABLE bench_plain, bench_captured;")
            .unwrap();
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "capture cost ratio: {:.2}x median (captured time / plain time; target <= 1.75)",
        ratios[ratios.len() / 2]
    );
}

/// A plain table and one captured with `method`, empty.
fn fresh_tables(pg: &mut Client, method: &str) {
    pg.batch_execute(
        "DROP TABLE IF EXISTS bench_plain, bench_captured;
         CREATE TABLE bench_plain (id bigint PRIMARY KEY, name text, amount numeric(12,2), created timestamptz)
             WITH (autovacuum_enabled = false);
         CREATE TABLE bench_captured (LIKE bench_plain INCLUDING ALL) WITH (autovacuum_enabled = false);",
    )
    .unwrap();
    pg.execute(
        "SELECT kafka.capture('bench_captured', topic => 'bench_capture_' || extract(epoch FROM clock_timestamp())::int8,
                              method => $1)",
        &[&method],
    )
    .unwrap();
}

/// WAL capture of a bulk insert: COMMIT time against a plain table's (the session pays only
/// its own WAL), and the time until every event is in Kafka against the trigger method's
/// (INSERT to the last event delivered), with the worker's peak private memory meanwhile.
fn wal(n: i64) {
    let mut pg = stack::connect();
    println!("bulk WAL capture: INSERT ... SELECT of {n} rows, one transaction, {ROUNDS} rounds");
    let (mut commit_ratios, mut rate_ratios) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        fresh_tables(&mut pg, "wal");
        let plain = insert(&mut pg, "bench_plain", n);
        let base = delivered(&mut pg);
        let worker: i32 = pg.query_one("SELECT worker_pid FROM kafka.status", &[]).unwrap().get(0);
        let started = Instant::now();
        let committed = insert(&mut pg, "bench_captured", n);
        let (wal_all, wal_peak_kb) = until_delivered(&mut pg, base + n, started, worker);
        pg.batch_execute("SELECT kafka.uncapture('bench_captured')").unwrap();
        fresh_tables(&mut pg, "trigger");
        let base = delivered(&mut pg);
        let started = Instant::now();
        insert(&mut pg, "bench_captured", n);
        let (trigger_all, _) = until_delivered(&mut pg, base + n, started, worker);
        let commit_ratio = committed.as_secs_f64() / plain.as_secs_f64();
        let rate = |d: Duration| n as f64 / d.as_secs_f64();
        println!(
            "round {round}: COMMIT plain {:.2} s, wal-captured {:.2} s (ratio {commit_ratio:.2}x); all events in Kafka: \
             wal {:.2} s ({:.0} events/s), trigger {:.2} s ({:.0} events/s); worker peak {} MB",
            plain.as_secs_f64(),
            committed.as_secs_f64(),
            wal_all.as_secs_f64(),
            rate(wal_all),
            trigger_all.as_secs_f64(),
            rate(trigger_all),
            wal_peak_kb / 1024
        );
        commit_ratios.push(commit_ratio);
        rate_ratios.push(trigger_all.as_secs_f64() / wal_all.as_secs_f64());
        pg.batch_execute("SELECT kafka.uncapture('bench_captured'); DROP TABLE bench_plain, bench_captured;")
            .unwrap();
    }
    commit_ratios.sort_by(f64::total_cmp);
    rate_ratios.sort_by(f64::total_cmp);
    println!(
        "WAL capture: COMMIT {:.2}x the plain time (median; target <= 1.10); end-to-end rate {:.2}x the trigger \
         method's (median; target >= 1.00)",
        commit_ratios[ROUNDS / 2],
        rate_ratios[ROUNDS / 2]
    );
}

fn delivered(pg: &mut Client) -> i64 {
    pg.query_one("SELECT delivered FROM kafka.status", &[]).unwrap().get(0)
}

/// Waits until the worker counted `target` messages delivered; returns the time since `started`
/// and the worker's peak private memory (kB) sampled meanwhile. Says when the first message was
/// delivered (from then on the worker only delivers).
fn until_delivered(pg: &mut Client, target: i64, started: Instant, worker: i32) -> (Duration, u64) {
    let (mut peak, mut first) = (0, None);
    let base = target - delivered(pg).max(0).min(target);
    loop {
        let d = delivered(pg);
        if d >= target {
            break;
        }
        if first.is_none() && d > target - base {
            first = Some(started.elapsed());
        }
        peak = peak.max(stack::rss_anon_kb(worker));
        assert!(started.elapsed() < Duration::from_secs(1800), "not delivered within 30 minutes");
        std::thread::sleep(Duration::from_millis(20)); // sampling period of the progress counter
    }
    if let Some(first) = first {
        println!(
            "    first message delivered after {:.2} s, the last after {:.2} s",
            first.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
    }
    (started.elapsed(), peak)
}

/// Times one `INSERT … SELECT` of n rows into `table`, started on a quiet server.
fn insert(pg: &mut Client, table: &str, n: i64) -> Duration {
    while pg.query_one("SELECT backlog FROM kafka.status", &[]).unwrap().get::<_, i64>(0) > 0 {
        std::thread::sleep(Duration::from_millis(200)); // poll interval of a condition wait, not a measured delay
    }
    // ...with the WAL decoded up to here (a WAL capture's worker decodes every table's changes,
    // the plain table's too, before it gets to the next ones).
    let lsn: String = pg.query_one("SELECT pg_catalog.pg_current_wal_flush_lsn()::text", &[]).unwrap().get(0);
    let behind = "SELECT count(*) FROM pg_catalog.pg_replication_slots
                   WHERE slot_name LIKE 'pg_kafka_%' AND confirmed_flush_lsn < $1::text::pg_lsn";
    while pg.query_one(behind, &[&lsn]).unwrap().get::<_, i64>(0) > 0 {
        std::thread::sleep(Duration::from_millis(200)); // poll interval of a condition wait, not a measured delay
    }
    pg.batch_execute("CHECKPOINT").unwrap();
    let started = Instant::now();
    pg.execute(
        &format!(
            "INSERT INTO {table} SELECT i, 'name ' || i, i * 1.25, '2024-01-01'::timestamptz + i * interval '1 s'
             FROM generate_series(1, $1::int8) i"
        ),
        &[&n],
    )
    .unwrap();
    started.elapsed()
}
