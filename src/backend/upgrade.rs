//! What upgrading from an older version needs from the library: the 0.1.0 outbox kept one row
//! per message (or a pack of capture events in its own format), and
//! `sql/kafka--0.1.0--0.2.0.sql` hands each of those rows here, in id order, to be queued again
//! in the upgrading transaction (so they are sent, in that order, once it commits). Not granted
//! to anyone; the upgrade script runs as the extension's owner.

use crate::backend::pending;
use crate::error::{KafkaError, SqlResult};
use kafka_core::pack::Parts;
use pgrx::prelude::*;
use pgrx::JsonB;

/// Queues one 0.1.0 outbox row: a message, or with `packed` a 0.1.0 pack of `packed` messages
/// in `payload`. Returns how many messages it queued.
#[pg_extern(volatile, parallel_unsafe, schema = "kafka_internal")]
fn requeue_v1(
    topic: &str,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    headers: Option<JsonB>,
    partition: Option<i32>,
    timestamp_ms: Option<i64>,
    packed: Option<i32>,
) -> SqlResult<i64> {
    if packed.is_some() {
        let messages = unpack_v1(payload.unwrap_or_default())
            .ok_or_else(|| KafkaError::Internal(format!("a 0.1.0 pack for {topic} is malformed")))?;
        for (topic, key, value) in &messages {
            pending::push(&Parts {
                topic,
                key: key.as_deref(),
                payload: value.as_deref(),
                ..Default::default()
            })?;
        }
        return Ok(messages.len() as i64);
    }
    let headers = headers.map(|h| headers_v1(&h.0));
    pending::push(&Parts { topic, key, payload, headers: headers.as_deref(), partition, timestamp_ms })?;
    Ok(1)
}

/// 0.1.0 headers: `[["name", "value" or null], ...]`.
fn headers_v1(json: &serde_json::Value) -> Vec<(String, Option<String>)> {
    let pairs = json.as_array().map(Vec::as_slice).unwrap_or_default();
    pairs
        .iter()
        .filter_map(|p| {
            let name = p.get(0)?.as_str()?.to_owned();
            Some((name, p.get(1).and_then(|v| v.as_str()).map(str::to_owned)))
        })
        .collect()
}

type Message = (String, Option<Vec<u8>>, Option<Vec<u8>>);

/// A 0.1.0 pack: per message, topic, key and value, each as a little-endian u32 length (or
/// `u32::MAX` for NULL) and bytes. None if malformed.
fn unpack_v1(mut rest: &[u8]) -> Option<Vec<Message>> {
    let field = |rest: &mut &[u8]| -> Option<Option<Vec<u8>>> {
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?);
        *rest = &rest[4..];
        if len == u32::MAX {
            return Some(None);
        }
        let bytes = rest.get(..len as usize)?.to_vec();
        *rest = &rest[len as usize..];
        Some(Some(bytes))
    };
    let mut out = Vec::new();
    while !rest.is_empty() {
        let topic = String::from_utf8(field(&mut rest)??).ok()?;
        let key = field(&mut rest)?;
        let value = field(&mut rest)?;
        out.push((topic, key, value));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_0_1_0_pack() {
        let mut p = Vec::new();
        for (t, k, v) in [
            ("a", Some(&b"k"[..]), Some(&b"v1"[..])),
            ("b", None, Some(&b"v2"[..])),
            ("c", Some(&b"x"[..]), None),
        ] {
            for f in [Some(t.as_bytes()), k, v] {
                match f {
                    Some(b) => {
                        p.extend_from_slice(&(b.len() as u32).to_le_bytes());
                        p.extend_from_slice(b);
                    }
                    None => p.extend_from_slice(&u32::MAX.to_le_bytes()),
                }
            }
        }
        let got = unpack_v1(&p).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[1], ("b".into(), None, Some(b"v2".to_vec())));
        assert_eq!(got[2].2, None);
        assert!(unpack_v1(&p[..p.len() - 1]).is_none(), "a cut pack is malformed");
        assert_eq!(
            headers_v1(&serde_json::json!([["a", "1"], ["b", null]])),
            vec![("a".into(), Some("1".into())), ("b".into(), None)]
        );
    }
}

/// 0.1.0's `kafka.wake_at_commit()` (called by its generated relay functions): kept in the
/// library, without SQL, so that a 0.1.0 installation still loads with this library until
/// `ALTER EXTENSION kafka UPDATE` replaces it.
#[pg_extern(sql = false)]
fn wake_at_commit() {}
