//! The Kafka side of exactly-once delivery (`kafka.delivery = exactly_once`), with no pgrx: the
//! transactional id of a database, the *position record* that each Kafka transaction carries,
//! and reading the last committed one back.
//!
//! Every Kafka transaction of the worker ends with one record on the position topic (compacted,
//! one partition; key: the transactional id) that lists the outbox rows the transaction carries.
//! Kafka commits it atomically with the messages, so after any crash the last committed position
//! record says exactly which rows Kafka holds: the worker deletes them before it sends anything
//! (the worker's `exactly_once::connect`). The worker records a committed transaction in PostgreSQL
//! (synchronously) before it begins the next one, so only the last one can be unrecorded.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::time::{Duration, Instant};

/// What a position record starts with (format and version).
const MAGIC: &[u8; 4] = b"pgk1";

/// The transactional id (and position key) of a database: stable across restarts of the worker
/// and of PostgreSQL, kept by a physical replica (which then fences the old primary's worker),
/// different in a restored copy or another cluster.
pub fn transactional_id(system_identifier: u64, database_oid: u32) -> String {
    format!("pg_kafka-{system_identifier}-{database_oid}")
}

/// The outbox rows (transaction id, pack id) a Kafka transaction carries, as a position record:
/// sorted, delta-encoded varints (a few bytes per row).
pub fn encode(rows: &[(i64, i64)]) -> Vec<u8> {
    let mut rows = rows.to_vec();
    rows.sort_unstable();
    rows.dedup();
    let mut out = MAGIC.to_vec();
    varint(&mut out, rows.len() as u64);
    let mut prev = (0_i64, 0_i64);
    for (xid, id) in rows {
        varint(&mut out, zigzag(xid.wrapping_sub(prev.0)));
        varint(&mut out, zigzag(id.wrapping_sub(prev.1)));
        prev = (xid, id);
    }
    out
}

/// The rows of a position record; None if it is not one.
pub fn decode(bytes: &[u8]) -> Option<Vec<(i64, i64)>> {
    let mut b = bytes.strip_prefix(MAGIC.as_slice())?;
    let n = read_varint(&mut b)?;
    let mut rows = Vec::with_capacity(n.min(1 << 20) as usize);
    let mut prev = (0_i64, 0_i64);
    for _ in 0..n {
        let xid = prev.0.wrapping_add(unzigzag(read_varint(&mut b)?));
        let id = prev.1.wrapping_add(unzigzag(read_varint(&mut b)?));
        prev = (xid, id);
        rows.push(prev);
    }
    b.is_empty().then_some(rows)
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(b: &mut &[u8]) -> Option<u64> {
    let mut v = 0_u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = b.split_first()?;
        *b = rest;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(v);
        }
    }
    None
}

/// A client configuration for reading positions and creating their topic: the producer's
/// connection settings (TLS, SASL...) without what only a producer understands.
fn reader_config(producer: &ClientConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (name, value) in producer.config_map() {
        let name: &str = name;
        let producer_only = name.starts_with("transaction")
            || ["enable.idempotence", "acks", "linger.ms", "message.timeout.ms", "delivery.timeout.ms"]
                .contains(&name)
            || name.starts_with("queue.buffering")
            || name.starts_with("batch.")
            || name.starts_with("compression")
            || name.starts_with("message.send")
            || name.starts_with("retries")
            || name.contains("partitioner")
            || name.starts_with("sticky")
            || name == "statistics.interval.ms";
        if !producer_only {
            c.set(name, value);
        }
    }
    c.set("client.id", "pg_kafka-positions").set_log_level(RDKafkaLogLevel::Error);
    c
}

/// Creates the position topic if it does not exist: one partition, compacted, replicated like
/// Kafka's own transaction log (3 copies, or as many as there are brokers).
pub fn ensure_topic(producer: &ClientConfig, topic: &str, timeout: Duration) -> Result<(), String> {
    let config = reader_config(producer);
    let consumer: BaseConsumer = config.create().map_err(|e| e.to_string())?;
    let metadata = consumer.fetch_metadata(Some(topic), timeout).map_err(|e| e.to_string())?;
    let exists = metadata.topics().iter().any(|t| t.name() == topic && t.error().is_none());
    if exists {
        return Ok(());
    }
    let copies = metadata.brokers().len().clamp(1, 3) as i32;
    let admin: AdminClient<DefaultClientContext> = config.create().map_err(|e| e.to_string())?;
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(copies))
        .set("cleanup.policy", "compact")
        .set("segment.ms", "3600000")
        .set("min.compaction.lag.ms", "0");
    let opts = AdminOptions::new().operation_timeout(Some(timeout)).request_timeout(Some(timeout));
    let results = block_on(admin.create_topics([&new], &opts), timeout + Duration::from_secs(5))
        .ok_or("timed out creating the position topic")?
        .map_err(|e| e.to_string())?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(format!("could not create the position topic {name}: {code}")),
        }
    }
    Ok(())
}

/// The rows of the last position record with key `key` that Kafka committed on `topic`, read
/// with `isolation.level=read_committed` (call it after `init_transactions`, which settles the
/// previous producer's open transaction). None: no position yet. Reads back from the end in
/// growing windows, so a topic shared by many databases is not read whole.
pub fn last_position(
    producer: &ClientConfig,
    topic: &str,
    key: &str,
    timeout: Duration,
) -> Result<Option<Vec<(i64, i64)>>, String> {
    let deadline = Instant::now() + timeout;
    let mut config = reader_config(producer);
    config
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .set("group.id", "pg_kafka-positions");
    let consumer: BaseConsumer = config.create().map_err(|e| e.to_string())?;
    let (low, high) = consumer.fetch_watermarks(topic, 0, timeout).map_err(|e| e.to_string())?;
    let mut window = 64_i64;
    loop {
        let start = (high - window).max(low);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Offset(start)).map_err(|e| e.to_string())?;
        consumer.assign(&tpl).map_err(|e| e.to_string())?;
        let mut found = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("timed out reading the position topic {topic}"));
            }
            match consumer.poll(left.min(Duration::from_millis(500))) {
                None => continue,
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => return Err(format!("could not read the position topic {topic}: {e}")),
                Some(Ok(m)) if m.key() == Some(key.as_bytes()) => {
                    let rows = m.payload().and_then(decode).ok_or_else(|| {
                        format!("the position record at offset {} of {topic} is malformed", m.offset())
                    })?;
                    found = Some(rows);
                }
                Some(Ok(_)) => {}
            }
        }
        if found.is_some() || start <= low {
            return Ok(found);
        }
        window *= 4;
    }
}

/// Runs a future to completion on this thread (rdkafka's admin client completes it from its own
/// polling thread); None if it took longer than `timeout`.
fn block_on<F: std::future::Future>(f: F, timeout: Duration) -> Option<F::Output> {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    let deadline = Instant::now() + timeout;
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return Some(v);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        std::thread::park_timeout(left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_survive_their_encoding() {
        let rows = vec![(900, 5), (17, 1_000_000), (17, 3), (i64::MAX, i64::MIN), (0, -1)];
        let mut sorted = rows.clone();
        sorted.sort_unstable();
        assert_eq!(decode(&encode(&rows)), Some(sorted));
        assert_eq!(decode(&encode(&[])), Some(vec![]));
        let many: Vec<(i64, i64)> = (0..20_000).map(|i| (1_000_000 + i, 512 * i)).collect();
        assert!(encode(&many).len() < 5 * many.len(), "a few bytes per row");
        assert!(decode(b"nope").is_none());
        assert!(decode(&encode(&rows)[..7]).is_none(), "truncated");
        assert!(decode(&[encode(&rows), vec![1]].concat()).is_none(), "trailing bytes");
    }

    #[test]
    fn transactional_ids_name_the_cluster_and_database() {
        assert_eq!(transactional_id(7301, 5), "pg_kafka-7301-5");
        assert_ne!(transactional_id(7301, 5), transactional_id(7302, 5));
    }
}
