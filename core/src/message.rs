//! One Kafka message as pg_kafka carries it: read back out of a pack by the worker, or handed
//! to an immediate send. (A backend queuing a message hands over borrowed [`crate::pack::Parts`]
//! instead.)

/// Kafka record headers: (name, value) in order; a name may repeat, a value may be null.
pub type Headers = Vec<(String, Option<String>)>;

/// One message: what a backend queues, and what the worker reads back out of a pack.
#[derive(Debug, Clone, Default)]
pub struct Message {
    /// Its id (`kafka.publish()` returns it; a dead letter keeps it).
    pub id: i64,
    /// The outbox row (pack) it was read from, and that row's transaction (the worker's side).
    pub row: i64,
    pub xid: i64,
    /// Its transaction's place in commit order (the worker's side).
    pub csn: i64,
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Option<Headers>,
    pub partition: Option<i32>,
    pub timestamp_ms: Option<i64>,
}
