//! Sustained load: 10,000,000 messages of 100 bytes in 100 transactions of 100,000, committed
//! one after the other while the worker delivers.
//!
//! Prints the worker's peak private memory (sampled throughout), the outbox's size on disk after
//! the first million was produced and after the whole drain, and the drain rate of the first and
//! of the last million (the baseline: the same worker in the same run, before the queue grew).
//!
//! Run with `scripts/bench sustained [N]` (N messages, default 10,000,000).

mod stack;

use postgres::Client;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PER_TX: i64 = 100_000;
const MILLION: i64 = 1_000_000;

fn main() {
    let n = stack::count_arg(10 * MILLION);
    let mut pg = stack::connect();
    let mut sampler = stack::connect();
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let topic = format!("bench_sustained_{stamp}");
    println!("sustained: {n} messages of 100 bytes in transactions of {PER_TX}, produced while the worker delivers");
    let base: i64 = pg.query_one("SELECT delivered FROM kafka.status", &[]).unwrap().get(0);
    let pid: i32 = pg.query_one("SELECT worker_pid FROM kafka.status", &[]).unwrap().get(0);

    let producer = {
        let topic = topic.clone();
        std::thread::spawn(move || {
            let mut size_after_first_million = 0;
            for tx in 0..n / PER_TX {
                pg.execute(
                    "SELECT kafka.produce($1, repeat('x', 100)) FROM generate_series(1, $2::int)",
                    &[&topic, &(PER_TX as i32)],
                )
                .unwrap();
                if (tx + 1) * PER_TX == MILLION {
                    size_after_first_million = outbox_size(&mut pg);
                }
            }
            size_after_first_million
        })
    };

    // Sample the worker's progress and memory until everything was delivered.
    let started = Instant::now();
    let (mut peak_kb, mut peak_size, mut crossed) = (0_u64, 0_i64, Vec::new());
    loop {
        peak_kb = peak_kb.max(stack::rss_anon_kb(pid));
        peak_size = peak_size.max(outbox_size(&mut sampler));
        let delivered: i64 =
            sampler.query_one("SELECT delivered FROM kafka.status", &[]).unwrap().get::<_, i64>(0) - base;
        while (crossed.len() as i64) * MILLION <= delivered && (crossed.len() as i64) * MILLION <= n {
            crossed.push(started.elapsed());
        }
        if delivered >= n {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(3600), "the drain did not finish");
        std::thread::sleep(Duration::from_millis(20)); // sampling period of the progress counter
    }
    let first_million_size = producer.join().unwrap();
    // After the drain: once the worker found the outbox empty and went idle.
    let idle_since = Instant::now();
    while sampler
        .query_one("SELECT query <> 'idle' FROM pg_stat_activity WHERE backend_type = 'pg_kafka'", &[])
        .unwrap()
        .get::<_, bool>(0)
    {
        assert!(idle_since.elapsed() < Duration::from_secs(60), "the worker did not go idle");
        std::thread::sleep(Duration::from_millis(20)); // sampling period of the worker's state
    }
    let final_size = outbox_size(&mut sampler);
    let millions = crossed.len() - 1;
    let rate = |i: usize| MILLION as f64 / (crossed[i] - crossed[i - 1]).as_secs_f64();
    let (first, last) = (rate(1), rate(millions));
    println!("total time:                        {:>9.1} s", started.elapsed().as_secs_f64());
    println!("drain rate, first million:         {first:>9.0} msgs/s");
    println!("drain rate, last million:          {last:>9.0} msgs/s");
    println!("ratio last / first million:        {:>9.2}", last / first);
    println!("worker peak private memory:        {:>9.1} MB (RssAnon)", peak_kb as f64 / 1024.0);
    println!("outbox on disk after 1st million:  {:>9.1} MB", first_million_size as f64 / 1048576.0);
    println!("outbox on disk, peak (backlog):    {:>9.1} MB", peak_size as f64 / 1048576.0);
    println!("outbox on disk after the drain:    {:>9.1} MB", final_size as f64 / 1048576.0);
    println!(
        "ratio after drain / after 1st M:   {:>9.2}",
        final_size as f64 / first_million_size.max(1) as f64
    );
}

fn outbox_size(pg: &mut Client) -> i64 {
    pg.query_one(
        "SELECT pg_total_relation_size('kafka.outbox') + pg_total_relation_size('kafka.outbox_commit')",
        &[],
    )
    .unwrap()
    .get(0)
}
