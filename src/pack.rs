//! Packed outbox rows: many small messages in one `kafka.outbox` row, so that a statement that
//! changes a million captured rows writes a few thousand outbox rows (compressed by PostgreSQL's
//! TOAST) instead of a million. No pgrx here.
//!
//! Format of a packed payload, per message, little-endian: id (i64), topic length (u32) and
//! bytes, key length (u32, `u32::MAX` for NULL) and bytes, value length (same) and bytes.
//! Only messages without headers, partition or timestamp are packed.

use crate::outbox::OutboxMessage;

/// At most this many messages...
pub const MAX_MESSAGES: usize = 512;
/// ...or about this many bytes per packed row.
pub const MAX_BYTES: usize = 256 * 1024;
const NULL: u32 = u32::MAX;

/// Packs messages (all packable) into one payload.
pub fn pack(msgs: &[OutboxMessage]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msgs.iter().map(|m| m.size() + 20).sum());
    for m in msgs {
        out.extend_from_slice(&m.id.to_le_bytes());
        field(&mut out, Some(m.topic.as_bytes()));
        field(&mut out, m.key.as_deref());
        field(&mut out, m.payload.as_deref());
    }
    out
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
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, tail) = (rest.get(..n)?, rest.get(n..)?);
        rest = tail;
        Some(head)
    };
    let mut msgs = Vec::new();
    while let Some(id) = take(8) {
        let id = i64::from_le_bytes(id.try_into().ok()?);
        let mut field = || -> Option<Option<Vec<u8>>> {
            let len = u32::from_le_bytes(take(4)?.try_into().ok()?);
            if len == NULL {
                Some(None)
            } else {
                Some(Some(take(len as usize)?.to_vec()))
            }
        };
        let topic = String::from_utf8(field()??).ok()?;
        let key = field()?;
        let payload = field()?;
        msgs.push(OutboxMessage { id, row, topic, key, payload, ..Default::default() });
    }
    Some(msgs)
}

/// Splits `batch` into runs to write as rows: a run is one unpackable message, or consecutive
/// packable ones within the limits. Returns (start, end, packed).
pub fn runs(batch: &[OutboxMessage]) -> Vec<(usize, usize, bool)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < batch.len() {
        if !batch[i].packable() {
            runs.push((i, i + 1, false));
            i += 1;
            continue;
        }
        let (start, mut bytes) = (i, 0);
        while i < batch.len() && batch[i].packable() && i - start < MAX_MESSAGES && bytes < MAX_BYTES {
            bytes += batch[i].size() + 20;
            i += 1;
        }
        runs.push((start, i, i - start > 1));
    }
    runs
}

#[cfg(test)]
mod unit {
    use super::*;

    fn msg(id: i64, key: Option<&str>, payload: Option<&str>) -> OutboxMessage {
        OutboxMessage {
            id,
            row: id,
            topic: format!("t{id}"),
            key: key.map(|k| k.as_bytes().to_vec()),
            payload: payload.map(|p| p.as_bytes().to_vec()),
            pack: true,
            ..Default::default()
        }
    }

    #[test]
    fn round_trip_keeps_order_ids_and_nulls() {
        let msgs = vec![msg(7, Some("k"), Some("{}")), msg(9, None, None), msg(12, Some(""), Some("é"))];
        let back = unpack(7, &pack(&msgs)).unwrap();
        assert_eq!(back.len(), 3);
        for (a, b) in msgs.iter().zip(&back) {
            assert_eq!((a.id, &a.topic, &a.key, &a.payload), (b.id, &b.topic, &b.key, &b.payload));
            assert_eq!(b.row, 7);
        }
        assert!(unpack(7, &pack(&msgs)[..10]).is_none(), "a cut payload is refused");
    }

    #[test]
    fn runs_pack_only_packable_neighbours() {
        let mut single = msg(3, None, Some("x"));
        single.pack = false;
        let batch = vec![msg(1, None, None), msg(2, None, None), single, msg(4, None, None)];
        assert_eq!(runs(&batch), vec![(0, 2, true), (2, 3, false), (3, 4, false)]);
        let many: Vec<_> = (0..MAX_MESSAGES as i64 + 1).map(|i| msg(i, None, None)).collect();
        assert_eq!(runs(&many), vec![(0, MAX_MESSAGES, true), (MAX_MESSAGES, MAX_MESSAGES + 1, false)]);
    }
}
