//! The Kafka side of pg_kafka: a librdkafka producer and the delivery of one batch, with no pgrx.
//!
//! This module never touches PostgreSQL, so it can be unit-tested against librdkafka's mock
//! cluster and reused by the benchmark's plain-producer baseline. Delivery works like this:
//! every record of a batch is handed to librdkafka (idempotent, `acks=all`: [`base_config`])
//! tagged with its index; [`Producer::deliver`] then polls **on the calling thread** until each
//! record has its delivery report, and returns one [`Outcome`] per record. A record counts as
//! delivered only when its own report says so
//! ([`in_flight_count()`](rdkafka::producer::Producer::in_flight_count) `== 0` alone says
//! nothing about success). Callbacks only push into mutex-guarded vectors, because librdkafka
//! may call [`log`](rdkafka::ClientContext::log) from its own threads.
//!
//! This module owns the [`Producer`] and its configuration ([`base_config`], [`check_setting`]);
//! the rest lives in private parts, whose items it re-exports (`kafka_core::producer::X` is the
//! path to use):
//!
//! - `record`: a [`Record`] to send, made from a [`Message`](crate::message::Message), and as
//!   librdkafka takes it;
//! - `outcome`: what became of a record ([`Outcome`], [`classify`]);
//! - `delivery`: batches in flight ([`InFlight`], [`Producer::send_batch`], [`Producer::wait`])
//!   and immediate sends ([`Producer::send_immediate`]);
//! - `transaction`: Kafka transactions for exactly-once ([`Producer::begin`],
//!   [`Producer::commit`]);
//! - `context`: what librdkafka's callbacks record ([`Context`]) and how the polling thread
//!   wakes up.

mod context;
mod delivery;
mod outcome;
mod record;
mod transaction;

pub use context::{Context, Report};
pub use delivery::{Answer, InFlight};
pub use outcome::{classify, Outcome};
pub use rdkafka::config::ClientConfig;
pub use record::Record;

use context::{BatchReport, Wakeup};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, Producer as _};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

/// The librdkafka settings every pg_kafka producer uses, before per-deployment settings.
pub fn base_config(bootstrap_servers: &str, message_timeout_ms: i32) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap_servers)
        .set("client.id", "pg_kafka")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        .set("message.timeout.ms", message_timeout_ms.to_string())
        .set("log.connection.close", "false")
        .set("statistics.interval.ms", "60000") // kafka.producer_statistics; kafka.config may change it
        .set_log_level(RDKafkaLogLevel::Warning);
    c
}

/// Checks one librdkafka setting the way librdkafka does, without creating a client (no thread
/// starts, nothing connects). The error is librdkafka's own message.
pub fn check_setting(name: &str, value: &str) -> Result<(), String> {
    let mut c = ClientConfig::new();
    c.set(name, value);
    match c.create_native_config() {
        Ok(_) => Ok(()),
        Err(KafkaError::ClientConfig(_, desc, _, _)) => Err(desc),
        Err(e) => Err(e.to_string()),
    }
}

/// A librdkafka producer with pg_kafka's delivery on top: batches in flight
/// ([`Producer::send_batch`], [`Producer::wait`]), immediate sends
/// ([`Producer::send_immediate`]) and Kafka transactions ([`Producer::begin`]…). Only the
/// thread that owns it polls it.
pub struct Producer {
    /// How librdkafka wakes a waiting [`poll_until`](Producer::poll_until). Declared before
    /// `inner`: fields drop in order, and its queue reference must go before the client does.
    wakeup: Wakeup,
    inner: BaseProducer<Context>,
    next_seq: Cell<usize>,
    /// The oldest batch whose reports are still wanted; reports of batches before it (waited
    /// for, or given up) are dropped.
    oldest_seq: Cell<usize>,
    /// Reports that arrived while collecting for another batch, by batch: (index, report).
    stash: RefCell<HashMap<usize, Vec<(usize, BatchReport)>>>,
    /// Partitions (topic, partition) where the broker named the bad records of a refused record
    /// batch: librdkafka reported its other records as
    /// [`InvalidDifferentRecord`](rdkafka::error::RDKafkaErrorCode::InvalidDifferentRecord). A
    /// record batch may hold records of two batches of ours, and its reports all arrive in one
    /// poll, so this is kept across batches. (A broker that names bad records keeps doing so.)
    named: RefCell<Vec<(String, i32)>>,
}

impl Producer {
    /// A producer made with `config` (usually [`base_config`] and the deployment's settings).
    pub fn new(config: &ClientConfig) -> Result<Producer, String> {
        let inner: BaseProducer<Context> =
            config.create_with_context(Context::default()).map_err(|e| e.to_string())?;
        let wakeup = Wakeup::new(inner.client().native_ptr())?;
        Ok(Producer {
            wakeup,
            inner,
            next_seq: Cell::new(0),
            oldest_seq: Cell::new(0),
            stash: RefCell::new(HashMap::new()),
            named: RefCell::new(Vec::new()),
        })
    }

    /// Errors and warnings librdkafka reported since the last call (connection refused, auth...).
    pub fn take_events(&self) -> Vec<String> {
        std::mem::take(&mut *self.inner.context().events.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// librdkafka's statistics emitted since the last call (the latest only).
    pub fn take_statistics(&self) -> Option<Vec<u8>> {
        self.inner.context().statistics.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// A fatal error of the idempotent producer: this producer must be replaced.
    pub fn fatal_error(&self) -> Option<String> {
        self.inner.client().fatal_error().map(|(code, msg)| format!("{code}: {msg}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_by_librdkafka() {
        assert_eq!(check_setting("linger.ms", "20"), Ok(()));
        assert_eq!(check_setting("compression.type", "zstd"), Ok(()));
        assert!(check_setting("no.such.setting", "1")
            .unwrap_err()
            .contains("No such configuration property"));
        assert!(check_setting("linger.ms", "soon").is_err());
    }
}
