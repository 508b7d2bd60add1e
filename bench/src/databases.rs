//! Several databases benchmark: what serving two databases of one cluster at once costs each.
//!
//! 1. Drain: N messages of 100 bytes produced in one transaction, from COMMIT to the worker's
//!    count of delivered messages: first in database `postgres` alone, then in `postgres` and
//!    `bench_db_b` at once (each its own worker). Prints each database's rate and its ratio to
//!    the one database alone, the median of ROUNDS (3) runs.
//! 2. Isolation: single-message transactions in `bench_db_b` at 200 per second for 20 s, COMMIT
//!    -> a consumer holding the message, first with `postgres` idle, then with `postgres`
//!    flooded 2 s in: a poison record Kafka refuses (2 MB, over its message size limit), then
//!    1M messages in transactions of 100,000, committed back to back. Prints both p99s and
//!    their ratio (the flood and its delivery take a few of the 20 s: the p99 falls in them).
//!
//! Serves `postgres, bench_db_b` while it runs, and the default afterwards. Run with
//! `scripts/bench databases [N]` (N = 1000000).

mod drain;
mod stack;
mod trickle;

use drain::{delivered, drain, wait_delivered, PAYLOAD_BYTES};
use postgres::{Client, NoTls};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const LATENCY_SECONDS: u32 = 20;
const OTHER: &str = "bench_db_b";

fn main() {
    let n = stack::count_arg(1_000_000);
    let rounds: usize = std::env::var("ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    let servers = stack::env("KAFKA_BOOTSTRAP_SERVERS");
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let mut a = stack::connect();
    a.batch_execute(&format!("DROP DATABASE IF EXISTS {OTHER} WITH (FORCE)")).unwrap();
    a.batch_execute(&format!("CREATE DATABASE {OTHER}")).unwrap();
    let mut b = connect_to(OTHER);
    b.batch_execute("CREATE EXTENSION kafka; INSERT INTO kafka.broker VALUES ('localhost', 9092)").unwrap();
    serve(&mut a, &format!("postgres, {OTHER}"));
    wait(|| running(&mut b) && running(&mut a), "both workers");
    println!("two databases served at once: drain of {n} messages of {PAYLOAD_BYTES} bytes in one transaction each, median of {rounds}");

    let (mut alone, mut first, mut second) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds {
        alone.push(drain(&mut a, &format!("bench_db_alone_{stamp}_{r}"), n));
        let (ta, tb) = (format!("bench_db_a_{stamp}_{r}"), format!("bench_db_b_{stamp}_{r}"));
        let (x, y) = std::thread::scope(|s| {
            let hb = s.spawn(|| drain(&mut connect_to(OTHER), &tb, n));
            let x = drain(&mut stack::connect(), &ta, n);
            (x, hb.join().unwrap())
        });
        first.push(x);
        second.push(y);
    }
    let rate = |d: &mut Vec<Duration>| {
        d.sort();
        n as f64 / d[d.len() / 2].as_secs_f64()
    };
    let (solo, ra, rb) = (rate(&mut alone), rate(&mut first), rate(&mut second));
    println!("drain, one database alone:          {solo:>9.0} msgs/s");
    println!("drain, postgres with {OTHER} busy: {ra:>9.0} msgs/s  ratio {:.2}", ra / solo);
    println!("drain, {OTHER} with postgres busy: {rb:>9.0} msgs/s  ratio {:.2}", rb / solo);
    println!("both together:                      {:>9.0} msgs/s  ratio {:.2}", ra + rb, (ra + rb) / solo);

    // Isolation: B's latency with A idle, then with A flooding (and a poison record).
    let count = (trickle::RATE * LATENCY_SECONDS) as usize;
    let idle = latency(&servers, &mut b, &format!("bench_db_idle_{stamp}"), count);
    trickle::show(&format!("{OTHER}, postgres idle"), &idle);
    let busy = std::thread::scope(|s| {
        let flood = s.spawn(|| flood(&mut a, &format!("bench_db_flood_{stamp}")));
        let busy = latency(&servers, &mut b, &format!("bench_db_busy_{stamp}"), count);
        let (committed, drained) = flood.join().unwrap();
        println!(
            "postgres: poison + 1M messages committed in {:.1} s, all delivered or dead-lettered {:.1} s after",
            committed.as_secs_f64(),
            drained.as_secs_f64()
        );
        busy
    });
    trickle::show(&format!("{OTHER}, postgres flooding"), &busy);
    let p99 = |l: &[Duration]| trickle::quantile(l, 0.99);
    println!("p99 ratio flooding / idle: {:.2}", p99(&busy) / p99(&idle));

    a.batch_execute("ALTER SYSTEM RESET kafka.database").unwrap();
    a.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait(|| running(&mut a), "the default database's worker");
    drop(b);
    a.batch_execute(&format!("DROP DATABASE {OTHER} WITH (FORCE)")).unwrap();
}

fn connect_to(database: &str) -> Client {
    let conf = format!(
        "host={} port={} user={} dbname={database}",
        stack::env("PGHOST"),
        stack::env("PGPORT"),
        stack::env("PGUSER")
    );
    Client::connect(&conf, NoTls).expect("connect to PostgreSQL")
}

fn serve(pg: &mut Client, spec: &str) {
    pg.batch_execute(&format!("ALTER SYSTEM SET kafka.database = '{spec}'")).unwrap();
    pg.batch_execute("SELECT pg_reload_conf()").unwrap();
}

fn running(pg: &mut Client) -> bool {
    pg.query_one("SELECT worker_running FROM kafka.status", &[]).unwrap().get(0)
}

fn wait(mut f: impl FnMut() -> bool, what: &str) {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20)); // sampling period of a condition wait
    }
}

/// Single-message transactions in `pg`'s database at 200/s: COMMIT -> consumer, sorted.
fn latency(servers: &str, pg: &mut Client, topic: &str, count: usize) -> Vec<Duration> {
    trickle::measure(servers, topic, count, |i| {
        pg.execute("SELECT kafka.produce($1, $2)", &[&topic, &i.to_string()]).unwrap();
        Instant::now()
    })
}

/// Floods `pg`'s database 2 s from now: a poison record (2 MB: refused and dead-lettered), then
/// 1M messages in transactions of 100,000. Returns how long committing took, and how long after
/// that the last was delivered.
fn flood(pg: &mut Client, topic: &str) -> (Duration, Duration) {
    std::thread::sleep(Duration::from_secs(2)); // lets the measurement start with the database idle
    let before = delivered(pg);
    let started = Instant::now();
    pg.execute("SELECT kafka.produce($1, repeat('p', 2000000))", &[&topic]).unwrap();
    for _ in 0..10 {
        pg.execute(
            "SELECT kafka.produce($1, repeat('x', $2)) FROM generate_series(1, 100000)",
            &[&topic, &PAYLOAD_BYTES],
        )
        .unwrap();
    }
    let committed = started.elapsed();
    wait_delivered(pg, before + 1_000_001, Duration::from_secs(600));
    let dead: i64 = pg.query_one("SELECT count(*) FROM kafka.dead_letter", &[]).unwrap().get(0);
    assert!(dead >= 1, "the poison record was dead-lettered");
    pg.batch_execute("DELETE FROM kafka.dead_letter").unwrap();
    (committed, started.elapsed() - committed)
}
