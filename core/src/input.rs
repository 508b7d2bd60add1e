//! What a Kafka record may hold: the rules for topic names, keys, headers, partitions and
//! timestamps, checked in the caller's statement so that bad input fails before anything is
//! queued. The rules only: the extension (`src/backend/input.rs`) turns a [`Refused`] into the
//! `KafkaError` of the same name.
//!
//! What must stay true: a topic name passes only if the Kafka broker would take it (Kafka's
//! `Topic.validate`), and a timestamp only if Kafka can carry it (milliseconds from 1970).

use crate::error::MAX_TOPIC_LEN;
pub use crate::message::Headers;
use serde_json::Value;

/// Why a record's argument is refused; each is the `KafkaError` variant of the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    NullTopic,
    EmptyTopic,
    TopicTooLong(usize),
    TopicBadChar { topic: String, ch: char },
    TopicReserved(String),
    BadHeaders(String),
    NegativePartition(i32),
    NoValueNoKey,
    TwoKeys,
}

/// Checks a topic name the way the Kafka broker does.
pub fn check_topic(topic: Option<&str>) -> Result<&str, Refused> {
    let topic = topic.ok_or(Refused::NullTopic)?;
    if topic.is_empty() {
        return Err(Refused::EmptyTopic);
    }
    if topic == "." || topic == ".." {
        return Err(Refused::TopicReserved(topic.into()));
    }
    if let Some(ch) = topic.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(Refused::TopicBadChar { topic: topic.into(), ch });
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(Refused::TopicTooLong(topic.len()));
    }
    Ok(topic)
}

/// The record's key, given as text (`key`) or as bytes (`key_bytes`) but not both; a record
/// without a value needs one (a NULL value with a key is a tombstone).
pub fn check_key<'a>(
    key: Option<&'a [u8]>,
    key_bytes: Option<&'a [u8]>,
    has_value: bool,
) -> Result<Option<&'a [u8]>, Refused> {
    let key = match (key, key_bytes) {
        (Some(_), Some(_)) => return Err(Refused::TwoKeys),
        (k, kb) => k.or(kb),
    };
    if !has_value && key.is_none() {
        return Err(Refused::NoValueNoKey);
    }
    Ok(key)
}

/// Reads headers given as a JSON object (`{"name": "value" | null}`) or as an array of
/// `[name, value]` pairs (where a name may repeat).
pub fn parse_headers(json: &Value) -> Result<Headers, Refused> {
    let bad = |why: &str| Refused::BadHeaders(why.to_owned());
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

/// A partition from 0, or none (Kafka chooses).
pub fn check_partition(partition: Option<i32>) -> Result<Option<i32>, Refused> {
    match partition {
        Some(p) if p < 0 => Err(Refused::NegativePartition(p)),
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

/// Kafka milliseconds since 1970-01-01 of PostgreSQL microseconds since 2000-01-01; `None` for a
/// time Kafka cannot carry (before 1970, or `infinity`, which PostgreSQL stores as `i64::MAX`).
pub fn kafka_timestamp_ms(pg_micros: i64) -> Option<i64> {
    match pg_micros.checked_add(PG_EPOCH_UNIX_US) {
        Some(us) if us >= 0 && pg_micros != i64::MAX => Some(us / 1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_what_kafka_accepts() {
        for t in ["test_topic", "a", "A.b-c_9", &"x".repeat(249), "...", ".a", "a..b", "_", "-"] {
            assert_eq!(check_topic(Some(t)), Ok(t));
        }
    }

    #[test]
    fn rejects_what_kafka_rejects() {
        assert_eq!(check_topic(None), Err(Refused::NullTopic));
        assert_eq!(check_topic(Some("")), Err(Refused::EmptyTopic));
        assert_eq!(check_topic(Some(".")), Err(Refused::TopicReserved(".".into())));
        assert_eq!(check_topic(Some("..")), Err(Refused::TopicReserved("..".into())));
        assert_eq!(check_topic(Some(&"x".repeat(250))), Err(Refused::TopicTooLong(250)));
        assert_eq!(check_topic(Some("a b")), Err(Refused::TopicBadChar { topic: "a b".into(), ch: ' ' }));
        assert!(matches!(check_topic(Some("tópico")), Err(Refused::TopicBadChar { ch: 'ó', .. })));
        for (t, ch) in [("a/b", '/'), ("a:b", ':'), ("a\0b", '\0'), ("t%s", '%'), ("a\nb", '\n')] {
            assert_eq!(check_topic(Some(t)), Err(Refused::TopicBadChar { topic: t.into(), ch }), "{t:?}");
        }
        // a bad character is named before the length: the more useful of the two
        let long_and_bad = format!("{} ", "x".repeat(300));
        assert!(matches!(check_topic(Some(&long_and_bad)), Err(Refused::TopicBadChar { ch: ' ', .. })));
    }

    #[test]
    fn keys() {
        let (k, b): (&[u8], &[u8]) = (b"k", b"\x00\x01");
        assert_eq!(check_key(Some(k), None, true), Ok(Some(k)));
        assert_eq!(check_key(None, Some(b), false), Ok(Some(b)), "a tombstone");
        assert_eq!(check_key(None, None, true), Ok(None), "a value without a key");
        assert_eq!(check_key(Some(k), Some(b), true), Err(Refused::TwoKeys));
        assert_eq!(check_key(Some(k), Some(b), false), Err(Refused::TwoKeys), "two keys is named first");
        assert_eq!(check_key(None, None, false), Err(Refused::NoValueNoKey));
        assert_eq!(check_key(Some(b""), None, false), Ok(Some(&b""[..])), "an empty key is a key");
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
        assert_eq!(parse_headers(&json!({})).unwrap(), vec![]);
    }

    #[test]
    fn bad_headers_are_refused() {
        for bad in [
            json!("x"),
            json!(1),
            json!(null),
            json!({"a": 1}),
            json!({"a": ["x"]}),
            json!([["a"]]),
            json!([["a", "b", "c"]]),
            json!([[1, "x"]]),
            json!([["a", 1]]),
            json!([{"a": "b"}]),
        ] {
            assert!(matches!(parse_headers(&bad), Err(Refused::BadHeaders(_))), "{bad}");
        }
    }

    #[test]
    fn partitions() {
        assert_eq!(check_partition(Some(0)), Ok(Some(0)));
        assert_eq!(check_partition(Some(i32::MAX)), Ok(Some(i32::MAX)));
        assert_eq!(check_partition(None), Ok(None));
        assert_eq!(check_partition(Some(-1)), Err(Refused::NegativePartition(-1)));
        assert_eq!(check_partition(Some(i32::MIN)), Err(Refused::NegativePartition(i32::MIN)));
    }

    #[test]
    fn timestamps() {
        assert_eq!(kafka_timestamp_ms(0), Some(946_684_800_000), "2000-01-01");
        assert_eq!(kafka_timestamp_ms(-PG_EPOCH_UNIX_US), Some(0), "1970-01-01 00:00");
        assert_eq!(kafka_timestamp_ms(-PG_EPOCH_UNIX_US + 999), Some(0), "within the first millisecond");
        assert_eq!(kafka_timestamp_ms(-PG_EPOCH_UNIX_US - 1), None, "1969-12-31 23:59:59.999999");
        assert_eq!(kafka_timestamp_ms(i64::MAX), None, "infinity");
        assert_eq!(kafka_timestamp_ms(i64::MIN), None, "-infinity");
        assert_eq!(unix_us(0), PG_EPOCH_UNIX_US);
    }
}
