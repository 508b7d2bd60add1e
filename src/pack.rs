//! Packed outbox rows: many small messages in one `kafka.outbox` row, so that a statement that
//! changes a million captured rows writes a few thousand outbox rows (compressed by PostgreSQL's
//! TOAST) instead of a million, and takes one outbox id per row instead of one per message.
//! No pgrx here.
//!
//! Format of a packed payload, per message, little-endian: topic length (u32) and bytes, key
//! length (u32, `u32::MAX` for NULL) and bytes, value length (same) and bytes. Packed messages
//! have no headers, partition or timestamp. The messages of a row share its id; one that goes to
//! `kafka.dead_letter` gets an id of its own there.

use crate::outbox::OutboxMessage;

/// A pack takes at most this many messages...
pub const MAX_MESSAGES: i32 = 512;
/// ...and is closed once it holds this many bytes.
pub const MAX_BYTES: usize = 256 * 1024;
const NULL: u32 = u32::MAX;

/// Whether `pack` (a packed message being filled) takes one more message.
pub fn has_room(pack: &OutboxMessage) -> bool {
    pack.packed.is_some_and(|n| n < MAX_MESSAGES)
        && pack.payload.as_ref().is_some_and(|p| p.len() < MAX_BYTES)
}

/// Appends one message to a packed payload.
pub fn append(payload: &mut Vec<u8>, topic: &str, key: Option<&[u8]>, value: Option<&[u8]>) {
    payload.reserve(12 + topic.len() + key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len));
    field(payload, Some(topic.as_bytes()));
    field(payload, key);
    field(payload, value);
}

fn field(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => {
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        }
        None => out.extend_from_slice(&NULL.to_le_bytes()),
    }
}

/// The messages of a packed payload of outbox row `row`; None if it is malformed.
pub fn unpack(row: i64, bytes: &[u8]) -> Option<Vec<OutboxMessage>> {
    let mut rest = bytes;
    let mut msgs = Vec::new();
    while !rest.is_empty() {
        let mut field = || -> Option<Option<Vec<u8>>> {
            let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?);
            rest = &rest[4..];
            if len == NULL {
                return Some(None);
            }
            let bytes = rest.get(..len as usize)?.to_vec();
            rest = &rest[len as usize..];
            Some(Some(bytes))
        };
        let topic = String::from_utf8(field()??).ok()?;
        let key = field()?;
        let payload = field()?;
        msgs.push(OutboxMessage { id: row, row, topic, key, payload, unpacked: true, ..Default::default() });
    }
    Some(msgs)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn round_trip_keeps_order_and_nulls() {
        let mut payload = Vec::new();
        append(&mut payload, "a", Some(b"k"), Some(b"{}"));
        append(&mut payload, "b", None, None);
        append(&mut payload, "c", Some(b""), Some("é".as_bytes()));
        let back = unpack(7, &payload).unwrap();
        let got: Vec<_> =
            back.iter().map(|m| (m.topic.as_str(), m.key.as_deref(), m.payload.as_deref())).collect();
        assert_eq!(
            got,
            [
                ("a", Some(&b"k"[..]), Some(&b"{}"[..])),
                ("b", None, None),
                ("c", Some(&b""[..]), Some("é".as_bytes()))
            ]
        );
        assert!(back.iter().all(|m| m.row == 7 && m.id == 7));
        assert!(unpack(7, &payload[..10]).is_none(), "a cut payload is refused");
    }

    #[test]
    fn a_pack_closes_at_its_limits() {
        let mut pack = OutboxMessage { packed: Some(1), payload: Some(vec![0; 10]), ..Default::default() };
        assert!(has_room(&pack));
        pack.packed = Some(MAX_MESSAGES);
        assert!(!has_room(&pack));
        pack.packed = Some(1);
        pack.payload = Some(vec![0; MAX_BYTES]);
        assert!(!has_room(&pack));
        assert!(!has_room(&OutboxMessage::default()), "a plain message is not a pack");
    }
}
