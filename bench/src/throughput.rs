//! Throughput benchmark: N messages of 100 bytes produced by `kafka.produce()` in one transaction.
//!
//! Prints the enqueue rate (until COMMIT returns), the drain rate (COMMIT to the last message
//! acknowledged by Kafka, from the worker's own counter, checked against the topic's high
//! watermark), the worker's peak private memory while draining, and, on the same broker in the
//! same run, the rate of a plain producer built from pg_kafka's own producer module and settings,
//! and the rate of a plain `INSERT ... SELECT` of the same messages into an ordinary logged table.
//!
//! Run with `scripts/bench [N]` (the stack must be up; the script brings it up).

use kafka_core::producer;

mod stack;

use postgres::Client;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PAYLOAD_BYTES: usize = 100;

fn main() {
    let n = stack::count_arg(1_000_000) as usize;
    let servers = stack::env("KAFKA_BOOTSTRAP_SERVERS");
    let mut pg = stack::connect();
    // Start from an empty queue, so that the worker's counter counts this run's messages only.
    let started = Instant::now();
    while pg.query_one("SELECT backlog FROM kafka.status", &[]).unwrap().get::<_, i64>(0) > 0 {
        assert!(started.elapsed() < Duration::from_secs(600), "an earlier backlog did not drain");
        std::thread::sleep(Duration::from_millis(100)); // sampling period while an earlier backlog drains
    }
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    println!("pg_kafka throughput: {n} messages of {PAYLOAD_BYTES} bytes, one transaction");

    // Baseline: a plain producer, same crate, same settings, same broker, same messages.
    let plain_topic = format!("bench_plain_{stamp}");
    let plain = plain_rate(&servers, &plain_topic, n);
    assert_eq!(high_watermark(&servers, &plain_topic), n as i64 + 1, "plain producer delivered everything");

    // Baseline of the enqueue: the same messages inserted into an ordinary logged table.
    let insert = plain_insert(&mut pg, n);

    // pg_kafka: enqueue in one transaction, then the worker drains.
    let topic = format!("bench_pg_kafka_{stamp}");
    // Warm up the same way: the topic exists and the worker knows it before the clock starts.
    let warm: i64 = pg.query_one("SELECT delivered FROM kafka.status", &[]).unwrap().get(0);
    pg.execute("SELECT kafka.produce($1, 'warm-up')", &[&topic]).unwrap();
    wait_delivered(&mut pg, warm + 1);
    let before = warm + 1;
    let worker_pid: i32 = pg.query_one("SELECT worker_pid FROM kafka.status", &[]).unwrap().get(0);
    let started = Instant::now();
    pg.execute(
        "SELECT kafka.produce($1, repeat('x', $2)) FROM generate_series(1, $3::int)",
        &[&topic, &(PAYLOAD_BYTES as i32), &(n as i32)],
    )
    .unwrap();
    let enqueue = started.elapsed();
    let drain_start = Instant::now();
    let mut peak_anon_kb = 0;
    loop {
        peak_anon_kb = peak_anon_kb.max(stack::rss_anon_kb(worker_pid));
        let delivered: i64 = pg.query_one("SELECT delivered FROM kafka.status", &[]).unwrap().get(0);
        if delivered - before >= n as i64 {
            break;
        }
        assert!(drain_start.elapsed() < Duration::from_secs(1800), "drain did not finish");
        std::thread::sleep(Duration::from_millis(20)); // sampling period of the progress counter
    }
    let drain = drain_start.elapsed();
    assert_eq!(high_watermark(&servers, &topic), n as i64 + 1, "every message reached Kafka once");

    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "enqueue (until COMMIT returns): {:>9.0} msgs/s  ({:.2} s)",
        rate(enqueue),
        enqueue.as_secs_f64()
    );
    println!("drain (COMMIT to last ack):     {:>9.0} msgs/s  ({:.2} s)", rate(drain), drain.as_secs_f64());
    println!("plain INSERT into a table:      {:>9.0} msgs/s  ({:.2} s)", rate(insert), insert.as_secs_f64());
    println!("ratio enqueue / plain INSERT:   {:>9.2}", rate(enqueue) / rate(insert));
    println!("end to end (enqueue + drain):   {:>9.0} msgs/s", rate(enqueue + drain));
    println!("plain rdkafka producer:         {:>9.0} msgs/s  ({:.2} s)", rate(plain), plain.as_secs_f64());
    println!("ratio drain / plain:            {:>9.2}", rate(drain) / rate(plain));
    println!("worker peak private memory:     {:>9.1} MB (RssAnon)", peak_anon_kb as f64 / 1024.0);
}

/// Sends n messages with pg_kafka's producer module and settings; returns the time to the last ack.
fn plain_rate(servers: &str, topic: &str, n: usize) -> Duration {
    let p = producer::Producer::new(&producer::base_config(servers, 30_000)).expect("producer");
    let payload = vec![b'x'; PAYLOAD_BYTES];
    let records: Vec<producer::Record> =
        (0..n).map(|_| producer::Record { topic, payload: Some(&payload), ..Default::default() }).collect();
    // Warm up: topic creation and metadata are not part of the measurement.
    let warm = p.deliver(&records[..1], &mut || false);
    assert_eq!(warm, vec![producer::Outcome::Delivered]);
    let started = Instant::now();
    let outcomes = p.deliver(&records, &mut || false);
    let took = started.elapsed();
    assert!(outcomes.iter().all(|o| *o == producer::Outcome::Delivered), "plain producer failed");
    took
}

/// Inserts n rows (topic, 100-byte payload) into a fresh logged table in one statement, the
/// way an application would write its own outbox; returns the time until COMMIT returned.
fn plain_insert(pg: &mut Client, n: usize) -> Duration {
    pg.batch_execute(
        "DROP TABLE IF EXISTS bench_plain_outbox;
         CREATE TABLE bench_plain_outbox (topic text NOT NULL, payload text);
         CHECKPOINT;",
    )
    .unwrap();
    let started = Instant::now();
    pg.execute(
        "INSERT INTO bench_plain_outbox (topic, payload) SELECT 'bench', repeat('x', $1) FROM generate_series(1, $2::int)",
        &[&(PAYLOAD_BYTES as i32), &(n as i32)],
    )
    .unwrap();
    let took = started.elapsed();
    pg.batch_execute("DROP TABLE bench_plain_outbox; CHECKPOINT;").unwrap();
    took
}

fn wait_delivered(pg: &mut Client, target: i64) {
    let started = Instant::now();
    while pg.query_one("SELECT delivered FROM kafka.status", &[]).unwrap().get::<_, i64>(0) < target {
        assert!(started.elapsed() < Duration::from_secs(60), "warm-up message not delivered");
        std::thread::sleep(Duration::from_millis(20)); // sampling period of the progress counter
    }
}

fn high_watermark(servers: &str, topic: &str) -> i64 {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", servers).create().unwrap();
    c.fetch_watermarks(topic, 0, Duration::from_secs(10)).expect("watermarks").1
}
