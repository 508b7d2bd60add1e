//! Latency benchmark: single-message autocommit transactions at a steady rate (200 per second
//! for 20 s by default), from COMMIT returned to a Kafka consumer holding the message.
//!
//! Baseline, in the same run: the same trickle sent by a plain producer built from pg_kafka's own
//! producer module and settings, from `send` to the same consumer holding the message. Prints
//! p50, p90, p99 and max of both, and the ratio of the p50s and p99s.
//!
//! Run with `scripts/bench latency [SECONDS]`.

#[path = "../../src/producer.rs"]
#[allow(dead_code)]
mod producer;

mod stack;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const RATE: u32 = 200;

fn main() {
    let seconds = stack::count_arg(20) as u32;
    let n = (RATE * seconds) as usize;
    let servers = stack::env("KAFKA_BOOTSTRAP_SERVERS");
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    println!("latency: {n} single-message transactions at {RATE}/s, COMMIT returned -> consumer received");

    let plain_topic = format!("bench_latency_plain_{stamp}");
    let p = producer::Producer::new(&producer::base_config(&servers, 30_000)).expect("producer");
    let plain = measure(&servers, &plain_topic, n, |i| {
        let payload = i.to_string();
        let r =
            producer::Record { topic: &plain_topic, payload: Some(payload.as_bytes()), ..Default::default() };
        let sent = Instant::now();
        let out = p.deliver(std::slice::from_ref(&r), &mut || false);
        assert_eq!(out, vec![producer::Outcome::Delivered]);
        sent
    });

    let topic = format!("bench_latency_pg_kafka_{stamp}");
    let mut pg = stack::connect();
    let pg_kafka = measure(&servers, &topic, n, |i| {
        pg.execute("SELECT kafka.produce($1, $2)", &[&topic, &i.to_string()]).unwrap();
        Instant::now()
    });

    let show = |name: &str, l: &[Duration]| {
        let ms = |q: f64| l[((l.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
        println!(
            "{name:<30} p50 {:>6.1} ms  p90 {:>6.1} ms  p99 {:>6.1} ms  max {:>6.1} ms",
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(1.0)
        );
    };
    show("pg_kafka (COMMIT -> consumer)", &pg_kafka);
    show("plain producer (send -> consumer)", &plain);
    let q = |l: &[Duration], q: f64| l[((l.len() - 1) as f64 * q) as usize].as_secs_f64();
    println!(
        "ratio pg_kafka / plain: p50 {:.2}, p99 {:.2}",
        q(&pg_kafka, 0.5) / q(&plain, 0.5),
        q(&pg_kafka, 0.99) / q(&plain, 0.99)
    );
}

/// Calls `send(i)` for i in 0..n at `RATE` per second (it returns the instant the message counts
/// from) while a consumer reads `topic`; returns the sorted latencies.
fn measure(servers: &str, topic: &str, n: usize, mut send: impl FnMut(usize) -> Instant) -> Vec<Duration> {
    // The topic exists and the consumer has read a first message before the clock starts (for
    // pg_kafka, `send` returns at COMMIT, before the topic exists: a consumer that fetched too
    // early backs off for librdkafka's fetch.error.backoff.ms, 500 ms, inside the measurement).
    send(usize::MAX);
    let (tx, rx) = mpsc::channel::<(usize, Instant)>();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let consumer = {
        let (servers, topic) = (servers.to_owned(), topic.to_owned());
        std::thread::spawn(move || {
            let c: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &servers)
                .set("group.id", format!("bench-{topic}"))
                .set("enable.auto.commit", "false")
                .set("fetch.wait.max.ms", "100")
                .create()
                .expect("consumer");
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, 0, Offset::Beginning).unwrap();
            c.assign(&tpl).unwrap();
            let mut got = 0;
            let deadline = Instant::now() + Duration::from_secs(300);
            while got < n && Instant::now() < deadline {
                if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                    let i: Option<usize> =
                        m.payload().and_then(|p| std::str::from_utf8(p).ok()?.parse().ok());
                    if i == Some(usize::MAX) {
                        let _ = ready_tx.send(());
                    } else if let Some(i) = i.filter(|&i| i < n) {
                        tx.send((i, Instant::now())).unwrap();
                        got += 1;
                    }
                }
            }
        })
    };
    ready_rx.recv_timeout(Duration::from_secs(120)).expect("the consumer read the first message");
    let period = Duration::from_secs(1) / RATE;
    let start = Instant::now() + Duration::from_secs(1);
    let mut sent = vec![start; n];
    for (i, at) in sent.iter_mut().enumerate() {
        let due = start + period * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait); // pacing of the trickle, not a wait for a condition
        }
        *at = send(i);
    }
    consumer.join().unwrap();
    let mut latencies: Vec<Duration> =
        rx.try_iter().map(|(i, got)| got.saturating_duration_since(sent[i])).collect();
    assert_eq!(latencies.len(), n, "every message arrived");
    latencies.sort();
    latencies
}
