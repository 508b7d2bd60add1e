//! What a Kafka record may hold: checks of topic names, keys, headers, partitions and
//! timestamps, done in the caller's statement so that bad input fails before anything is queued.
//! The rules are [`kafka_core::input`]'s (tested there); this module gives their refusals as
//! [`KafkaError`]s. No pgrx here.

use crate::error::KafkaError;
use kafka_core::input::{self as rules, Refused};
use serde_json::Value;

/// Kafka record headers, in order; a name may repeat; a value may be null.
pub use kafka_core::input::Headers;
/// PostgreSQL counts time from 2000-01-01, Kafka and Debezium from 1970-01-01 (microseconds).
pub use kafka_core::input::{unix_us, PG_EPOCH_UNIX_US};

impl From<Refused> for KafkaError {
    fn from(refused: Refused) -> KafkaError {
        match refused {
            Refused::NullTopic => KafkaError::NullTopic,
            Refused::EmptyTopic => KafkaError::EmptyTopic,
            Refused::TopicTooLong(len) => KafkaError::TopicTooLong(len),
            Refused::TopicBadChar { topic, ch } => KafkaError::TopicBadChar { topic, ch },
            Refused::TopicReserved(topic) => KafkaError::TopicReserved(topic),
            Refused::BadHeaders(why) => KafkaError::BadHeaders(why),
            Refused::NegativePartition(p) => KafkaError::NegativePartition(p),
            Refused::NoValueNoKey => KafkaError::NoValueNoKey,
            Refused::TwoKeys => KafkaError::TwoKeys,
        }
    }
}

/// Checks a topic name the way the Kafka broker does, before anything is queued.
pub fn check_topic(topic: Option<&str>) -> Result<&str, KafkaError> {
    Ok(rules::check_topic(topic)?)
}

/// The record's key (text or bytes, not both); a record without a value needs one.
pub fn check_key<'a>(
    key: Option<&'a [u8]>,
    key_bytes: Option<&'a [u8]>,
    has_value: bool,
) -> Result<Option<&'a [u8]>, KafkaError> {
    Ok(rules::check_key(key, key_bytes, has_value)?)
}

/// Reads headers given as a JSON object (`{"name": "value" | null}`) or as an array of
/// `[name, value]` pairs (where a name may repeat).
pub fn parse_headers(json: &Value) -> Result<Headers, KafkaError> {
    Ok(rules::parse_headers(json)?)
}

/// A partition from 0, or none (Kafka chooses).
pub fn check_partition(partition: Option<i32>) -> Result<Option<i32>, KafkaError> {
    Ok(rules::check_partition(partition)?)
}

/// Converts PostgreSQL microseconds since 2000-01-01 to Kafka milliseconds since 1970-01-01;
/// `shown` gives the timestamp as the error shows it.
pub fn kafka_timestamp_ms(pg_micros: i64, shown: impl FnOnce() -> String) -> Result<i64, KafkaError> {
    rules::kafka_timestamp_ms(pg_micros).ok_or_else(|| KafkaError::BadTimestamp(shown()))
}
