//! What a Kafka record may hold: checks of topic names, headers, partitions and timestamps, done
//! in the caller's statement so that bad input fails before anything is queued. No pgrx here.

use crate::error::{KafkaError, MAX_TOPIC_LEN};
use serde_json::Value;

/// Kafka record headers, in order; a name may repeat; a value may be null.
pub use kafka_core::message::Headers;

/// Checks a topic name the way the Kafka broker does, before anything is queued.
pub fn check_topic(topic: Option<&str>) -> Result<&str, KafkaError> {
    let topic = topic.ok_or(KafkaError::NullTopic)?;
    if topic.is_empty() {
        return Err(KafkaError::EmptyTopic);
    }
    if topic == "." || topic == ".." {
        return Err(KafkaError::TopicReserved(topic.into()));
    }
    if let Some(ch) = topic.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(KafkaError::TopicBadChar { topic: topic.into(), ch });
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(KafkaError::TopicTooLong(topic.len()));
    }
    Ok(topic)
}

/// Reads headers given as a JSON object (`{"name": "value" | null}`) or as an array of
/// `[name, value]` pairs (where a name may repeat).
pub fn parse_headers(json: &Value) -> Result<Headers, KafkaError> {
    let bad = |why: &str| KafkaError::BadHeaders(why.to_owned());
    let value = |v: &Value, name: &str| match v {
        Value::String(s) => Ok(Some(s.clone())),
        Value::Null => Ok(None),
        _ => Err(bad(&format!("the value of header \"{name}\" is not a string or null"))),
    };
    match json {
        Value::Object(map) => map.iter().map(|(n, v)| Ok((n.clone(), value(v, n)?))).collect(),
        Value::Array(pairs) => pairs
            .iter()
            .map(|p| match p.as_array().map(Vec::as_slice) {
                Some([Value::String(n), v]) => Ok((n.clone(), value(v, n)?)),
                _ => Err(bad(&format!("{p} is not a [name, value] pair with a string name"))),
            })
            .collect(),
        other => Err(bad(&format!("{other} is neither an object nor an array of pairs"))),
    }
}

pub fn check_partition(partition: Option<i32>) -> Result<Option<i32>, KafkaError> {
    match partition {
        Some(p) if p < 0 => Err(KafkaError::NegativePartition(p)),
        p => Ok(p),
    }
}

/// PostgreSQL counts time from 2000-01-01, Kafka and Debezium from 1970-01-01: the difference,
/// in microseconds.
pub const PG_EPOCH_UNIX_US: i64 = 946_684_800_000_000;

/// Microseconds since 1970 of a PostgreSQL timestamp (microseconds since 2000).
pub fn unix_us(ts: i64) -> i64 {
    ts + PG_EPOCH_UNIX_US
}

/// Converts PostgreSQL microseconds since 2000-01-01 to Kafka milliseconds since 1970-01-01.
pub fn kafka_timestamp_ms(pg_micros: i64, shown: impl FnOnce() -> String) -> Result<i64, KafkaError> {
    match pg_micros.checked_add(PG_EPOCH_UNIX_US) {
        Some(us) if us >= 0 && pg_micros != i64::MAX => Ok(us / 1000),
        _ => Err(KafkaError::BadTimestamp(shown())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_what_kafka_accepts() {
        for t in ["test_topic", "a", "A.b-c_9", &"x".repeat(249), "..."] {
            assert_eq!(check_topic(Some(t)), Ok(t));
        }
    }

    #[test]
    fn rejects_what_kafka_rejects() {
        assert_eq!(check_topic(None), Err(KafkaError::NullTopic));
        assert_eq!(check_topic(Some("")), Err(KafkaError::EmptyTopic));
        assert_eq!(check_topic(Some(".")), Err(KafkaError::TopicReserved(".".into())));
        assert_eq!(check_topic(Some("..")), Err(KafkaError::TopicReserved("..".into())));
        assert_eq!(check_topic(Some(&"x".repeat(250))), Err(KafkaError::TopicTooLong(250)));
        assert_eq!(check_topic(Some("a b")), Err(KafkaError::TopicBadChar { topic: "a b".into(), ch: ' ' }));
        assert!(matches!(check_topic(Some("tópico")), Err(KafkaError::TopicBadChar { ch: 'ó', .. })));
    }

    #[test]
    fn headers_as_object_or_pairs() {
        assert_eq!(
            parse_headers(&json!({"a": "1", "b": null})).unwrap(),
            vec![("a".into(), Some("1".into())), ("b".into(), None)]
        );
        assert_eq!(
            parse_headers(&json!([["t", "x"], ["t", "y"], ["n", null]])).unwrap(),
            vec![("t".into(), Some("x".into())), ("t".into(), Some("y".into())), ("n".into(), None)]
        );
        assert_eq!(parse_headers(&json!([])).unwrap(), vec![]);
    }

    #[test]
    fn bad_headers_are_refused() {
        for bad in
            [json!("x"), json!(1), json!({"a": 1}), json!([["a"]]), json!([[1, "x"]]), json!([{"a": "b"}])]
        {
            assert!(matches!(parse_headers(&bad), Err(KafkaError::BadHeaders(_))), "{bad}");
        }
    }

    #[test]
    fn partitions_and_timestamps() {
        assert_eq!(check_partition(Some(0)), Ok(Some(0)));
        assert_eq!(check_partition(None), Ok(None));
        assert_eq!(check_partition(Some(-1)), Err(KafkaError::NegativePartition(-1)));
        assert_eq!(kafka_timestamp_ms(0, String::new), Ok(946_684_800_000));
        assert_eq!(kafka_timestamp_ms(-946_684_800_000_000, String::new), Ok(0));
        assert!(kafka_timestamp_ms(-946_684_800_000_001, String::new).is_err());
        assert!(kafka_timestamp_ms(i64::MAX, String::new).is_err());
    }
}
