//! Bulk capture benchmark: `INSERT … SELECT` of N rows into a plain table and into the same table
//! captured with kafka.capture(), in the same run; prints rows/s of each and the cost ratio.
//! The captured insert includes building every Debezium event and writing it to the outbox
//! (delivery to Kafka happens after COMMIT, in the worker, and is not part of the figure).
//!
//! Run with `scripts/bench capture [N]`.

mod stack;

use postgres::Client;
use std::time::Instant;

fn main() {
    let n = stack::count_arg(1_000_000);
    let mut pg = stack::connect();
    pg.batch_execute(
        "DROP TABLE IF EXISTS bench_plain, bench_captured;
         CREATE TABLE bench_plain (id bigint PRIMARY KEY, name text, amount numeric(12,2), created timestamptz);
         CREATE TABLE bench_captured (LIKE bench_plain INCLUDING ALL);",
    )
    .unwrap();
    pg.execute("SELECT kafka.capture('bench_captured', topic => 'bench_capture_' || extract(epoch FROM now())::int8)", &[])
        .unwrap();
    println!(
        "bulk capture: INSERT ... SELECT of {n} rows (bigint key, text, numeric, timestamptz), one statement"
    );
    let insert = |pg: &mut Client, table: &str| {
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
    };
    let plain = insert(&mut pg, "bench_plain");
    let captured = insert(&mut pg, "bench_captured");
    let rate = |d: std::time::Duration| n as f64 / d.as_secs_f64();
    println!("plain table:        {:>9.0} rows/s  ({:.2} s)", rate(plain), plain.as_secs_f64());
    println!(
        "captured table:     {:>9.0} rows/s  ({:.2} s, events included)",
        rate(captured),
        captured.as_secs_f64()
    );
    println!(
        "capture cost ratio: {:>9.2}x (captured time / plain time; target <= 2)",
        captured.as_secs_f64() / plain.as_secs_f64()
    );
    pg.batch_execute("SELECT kafka.uncapture('bench_captured'); DROP TABLE bench_plain, bench_captured;")
        .unwrap();
}
