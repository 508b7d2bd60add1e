//! A steady trickle of messages and the latency of each to a consumer (shared by the latency
//! benchmarks). The consumer reads with librdkafka's default `isolation.level=read_committed`.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Messages per second.
pub const RATE: u32 = 200;

/// The `q` quantile of sorted latencies, in seconds.
pub fn quantile(l: &[Duration], q: f64) -> f64 {
    l[((l.len() - 1) as f64 * q) as usize].as_secs_f64()
}

/// Prints p50, p90, p99 and max of sorted latencies.
pub fn show(name: &str, l: &[Duration]) {
    let ms = |q: f64| quantile(l, q) * 1000.0;
    println!(
        "{name:<34} p50 {:>6.1} ms  p90 {:>6.1} ms  p99 {:>6.1} ms  max {:>6.1} ms",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(1.0)
    );
}

/// Calls `send(i)` for i in 0..n at `RATE` per second (it returns the instant the message counts
/// from) while a consumer reads `topic`; returns the sorted latencies.
pub fn measure(
    servers: &str,
    topic: &str,
    n: usize,
    mut send: impl FnMut(usize) -> Instant,
) -> Vec<Duration> {
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
                    // The message's number: its payload, or a capture event's key `{"id":N}`.
                    let i: Option<usize> =
                        m.payload().and_then(|p| std::str::from_utf8(p).ok()?.parse().ok()).or_else(|| {
                            let key = std::str::from_utf8(m.key()?).ok()?;
                            key.strip_prefix("{\"id\":")?
                                .strip_suffix('}')?
                                .parse::<i64>()
                                .ok()
                                .map(|i| i as usize)
                        });
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
