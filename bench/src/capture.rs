//! Bulk capture benchmark: `INSERT … SELECT` of N rows into a plain table and into the same table
//! captured with kafka.capture(), in the same run; prints rows/s of each and the cost ratio.
//! The captured insert includes building every Debezium event and writing it to the outbox
//! (delivery to Kafka happens after COMMIT, in the worker, and is not part of the figure).
//! Three rounds, plain and captured alternately, each into fresh tables on a quiet server (no
//! backlog being delivered, after a checkpoint); the ratio reported is the median round's.
//!
//! Run with `scripts/bench capture [N]`.

mod stack;

use postgres::Client;
use std::time::{Duration, Instant};

const ROUNDS: usize = 3;

fn main() {
    let n = stack::count_arg(1_000_000);
    let mut pg = stack::connect();
    println!(
        "bulk capture: INSERT ... SELECT of {n} rows (bigint key, text, numeric, timestamptz), one statement, \
         {ROUNDS} rounds"
    );
    let mut ratios = Vec::new();
    for round in 1..=ROUNDS {
        pg.batch_execute(
            "DROP TABLE IF EXISTS bench_plain, bench_captured;
             CREATE TABLE bench_plain (id bigint PRIMARY KEY, name text, amount numeric(12,2), created timestamptz);
             CREATE TABLE bench_captured (LIKE bench_plain INCLUDING ALL);",
        )
        .unwrap();
        pg.execute(
            "SELECT kafka.capture('bench_captured', topic => 'bench_capture_' || extract(epoch FROM now())::int8)",
            &[],
        )
        .unwrap();
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

/// Times one `INSERT … SELECT` of n rows into `table`, started on a quiet server.
fn insert(pg: &mut Client, table: &str, n: i64) -> Duration {
    while pg.query_one("SELECT backlog FROM kafka.status", &[]).unwrap().get::<_, i64>(0) > 0 {
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
