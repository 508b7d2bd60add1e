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

mod drain;
mod stack;
mod trickle;

use drain::{drain, PAYLOAD_BYTES};
use postgres::Client;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
