//! Exactly-once benchmark: what `kafka.delivery = exactly_once` costs against the default
//! at-least-once delivery, measured in the same run on the same broker.
//!
//! 1. Drain: N messages of 100 bytes produced in one transaction, from COMMIT to the worker's
//!    count of delivered messages, first at least once, then exactly once (Kafka transactions);
//!    prints both rates and their ratio.
//! 2. Latency exactly once: single-message autocommit transactions at 200 per second, COMMIT
//!    returned -> a read_committed consumer holding the message; p50/p90/p99/max.
//!
//! Leaves the worker at least once. Run with `scripts/bench exactly-once [N]` (N = 1000000).

mod stack;
mod trickle;

use postgres::Client;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PAYLOAD_BYTES: i32 = 100;
const LATENCY_SECONDS: u32 = 20;

fn main() {
    let n = stack::count_arg(1_000_000);
    let servers = stack::env("KAFKA_BOOTSTRAP_SERVERS");
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let mut pg = stack::connect();
    println!("exactly-once delivery: drain of {n} messages of {PAYLOAD_BYTES} bytes in one transaction, and latency");

    set_mode(&mut pg, "at_least_once");
    let alo = drain(&mut pg, &format!("bench_alo_{stamp}"), n);
    set_mode(&mut pg, "exactly_once");
    let eos = drain(&mut pg, &format!("bench_eos_{stamp}"), n);
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!("drain at least once:            {:>9.0} msgs/s  ({:.2} s)", rate(alo), alo.as_secs_f64());
    println!("drain exactly once:             {:>9.0} msgs/s  ({:.2} s)", rate(eos), eos.as_secs_f64());
    println!("ratio exactly once / at least once: {:>5.2}", rate(eos) / rate(alo));

    let topic = format!("bench_eos_latency_{stamp}");
    let count = (trickle::RATE * LATENCY_SECONDS) as usize;
    let latencies = trickle::measure(&servers, &topic, count, |i| {
        pg.execute("SELECT kafka.produce($1, $2)", &[&topic, &i.to_string()]).unwrap();
        Instant::now()
    });
    trickle::show(&format!("exactly once, {}/s (COMMIT -> consumer)", trickle::RATE), &latencies);
    set_mode(&mut pg, "at_least_once");
}

fn set_mode(pg: &mut Client, mode: &str) {
    pg.batch_execute(&format!("ALTER SYSTEM SET kafka.delivery = '{mode}'")).unwrap();
    pg.batch_execute("SELECT pg_reload_conf()").unwrap();
    let started = Instant::now();
    loop {
        let r = pg.query_one("SELECT delivery FROM kafka.status", &[]).unwrap();
        if r.get::<_, Option<String>>(0).as_deref() == Some(mode) {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the worker did not switch to {mode}");
        std::thread::sleep(Duration::from_millis(20)); // sampling period of a condition wait
    }
}

fn delivered(pg: &mut Client) -> i64 {
    pg.query_one("SELECT delivered FROM kafka.status", &[]).unwrap().get(0)
}

/// Waits until the worker's counter reaches `target` (it restarts at 0 with a new worker).
fn wait_delivered(pg: &mut Client, target: i64, limit: Duration) {
    let started = Instant::now();
    while delivered(pg) < target {
        assert!(started.elapsed() < limit, "not delivered within {limit:?}");
        std::thread::sleep(Duration::from_millis(20)); // sampling period of the progress counter
    }
}

/// COMMIT of n messages in one transaction -> the worker counted them delivered.
fn drain(pg: &mut Client, topic: &str, n: i64) -> Duration {
    // Warm up: the topic exists and the producer (and its Kafka transactions) is ready.
    let warm = delivered(pg);
    pg.execute("SELECT kafka.produce($1, 'warm-up')", &[&topic]).unwrap();
    wait_delivered(pg, warm + 1, Duration::from_secs(60));
    let before = delivered(pg);
    pg.execute(
        "SELECT kafka.produce($1, repeat('x', $2)) FROM generate_series(1, $3::int)",
        &[&topic, &PAYLOAD_BYTES, &(n as i32)],
    )
    .unwrap();
    let started = Instant::now();
    wait_delivered(pg, before + n, Duration::from_secs(1800));
    started.elapsed()
}
