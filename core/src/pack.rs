//! Packed outbox rows: every message waits in `kafka.outbox` inside a pack of up to
//! [`MAX_MESSAGES`] messages of one transaction, so that a million `produce()` calls or a
//! million-row captured statement write a few thousand outbox rows (compressed) instead of a
//! million, each row taking one heap and one index entry. No pgrx here.
//!
//! A pack's row id `id` comes from `kafka.outbox_id_seq`, which counts in steps of
//! [`MAX_MESSAGES`]: message `i` of the pack has the id `id + i`, unique across the database.
//!
//! Format of a packed payload, per message, little-endian: a flags byte (which optional parts
//! follow), the topic (u32 length and bytes), then if flagged: key (u32 length, bytes), value
//! (same), headers (u32 count, then per header a name as u32 length and bytes, and a value as
//! u32 length and bytes or `u32::MAX` for null), partition (i32), timestamp in ms (i64).

use crate::message::Message;

/// A pack takes at most this many messages (the step of `kafka.outbox_id_seq`)...
pub const MAX_MESSAGES: i32 = 512;
/// ...and is closed once it holds this many bytes.
pub const MAX_BYTES: usize = 256 * 1024;
const NULL: u32 = u32::MAX;
const KEY: u8 = 1;
const VALUE: u8 = 2;
const HEADERS: u8 = 4;
const PARTITION: u8 = 8;
const TIMESTAMP: u8 = 16;

/// One message as a backend hands it over: borrowed, so nothing is copied but into the pack.
#[derive(Debug, Default, Clone, Copy)]
pub struct Parts<'a> {
    pub topic: &'a str,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    pub headers: Option<&'a [(String, Option<String>)]>,
    pub partition: Option<i32>,
    pub timestamp_ms: Option<i64>,
}

impl Message {
    pub fn parts(&self) -> Parts<'_> {
        Parts {
            topic: &self.topic,
            key: self.key.as_deref(),
            payload: self.payload.as_deref(),
            headers: self.headers.as_deref(),
            partition: self.partition,
            timestamp_ms: self.timestamp_ms,
        }
    }
}

/// A pack being filled by a backend.
#[derive(Debug, Default)]
pub struct Pack {
    /// Its row id (the id of its first message).
    pub id: i64,
    /// How many messages it holds.
    pub count: i32,
    pub bytes: Vec<u8>,
    /// The distinct topics of its messages, in first-seen order (`kafka.outbox.topics`, which
    /// `kafka.topics` reads for the oldest message waiting per topic without unpacking).
    pub topics: Vec<String>,
}

impl Pack {
    pub fn new(id: i64) -> Pack {
        Pack::with_buffer(id, Vec::with_capacity(1024))
    }

    /// A new pack that fills `buffer` (cleared first), e.g. the memory of a pack already written.
    pub fn with_buffer(id: i64, mut buffer: Vec<u8>) -> Pack {
        buffer.clear();
        Pack { id, count: 0, bytes: buffer, topics: Vec::new() }
    }

    /// Whether it takes one more message.
    pub fn has_room(&self) -> bool {
        self.count < MAX_MESSAGES && self.bytes.len() < MAX_BYTES
    }

    /// Appends one message; returns its id and how many bytes it took.
    pub fn push(&mut self, m: &Parts) -> (i64, usize) {
        let before = self.bytes.len();
        let out = &mut self.bytes;
        let flags = (m.key.is_some() as u8 * KEY)
            | (m.payload.is_some() as u8 * VALUE)
            | (m.headers.is_some() as u8 * HEADERS)
            | (m.partition.is_some() as u8 * PARTITION)
            | (m.timestamp_ms.is_some() as u8 * TIMESTAMP);
        out.push(flags);
        bytes(out, m.topic.as_bytes());
        if self.topics.last().is_none_or(|t| t != m.topic) && !self.topics.iter().any(|t| t == m.topic) {
            self.topics.push(m.topic.to_owned());
        }
        if let Some(k) = m.key {
            bytes(out, k);
        }
        if let Some(v) = m.payload {
            bytes(out, v);
        }
        if let Some(h) = m.headers {
            out.extend_from_slice(&(h.len() as u32).to_le_bytes());
            for (name, value) in h {
                bytes(out, name.as_bytes());
                match value {
                    Some(v) => bytes(out, v.as_bytes()),
                    None => out.extend_from_slice(&NULL.to_le_bytes()),
                }
            }
        }
        if let Some(p) = m.partition {
            out.extend_from_slice(&p.to_le_bytes());
        }
        if let Some(t) = m.timestamp_ms {
            out.extend_from_slice(&t.to_le_bytes());
        }
        self.count += 1;
        (self.id + i64::from(self.count) - 1, self.bytes.len() - before)
    }
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()?;
        self.take(n as usize)
    }
    fn text(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
}

impl Pack {
    /// Pack `id` holding the packed payload `payload` as it is (another pack's bytes, e.g. a
    /// spooled one): its messages are counted and its topics listed, nothing is copied out.
    /// None if it is malformed.
    pub fn from_packed(id: i64, payload: &[u8], mut buffer: Vec<u8>) -> Option<Pack> {
        let mut r = Reader(payload);
        let (mut count, mut topics) = (0, Vec::<String>::new());
        while !r.0.is_empty() {
            skip_message(&mut r, &mut topics)?;
            count += 1;
        }
        buffer.clear();
        buffer.extend_from_slice(payload);
        Some(Pack { id, count, bytes: buffer, topics })
    }

    /// Keeps only the first `count` messages (those after were rolled back).
    pub fn truncate(&mut self, count: i32) {
        if count >= self.count {
            return;
        }
        let mut r = Reader(&self.bytes);
        let mut topics = Vec::new();
        for _ in 0..count {
            if skip_message(&mut r, &mut topics).is_none() {
                break;
            }
        }
        let len = self.bytes.len() - r.0.len();
        self.bytes.truncate(len);
        self.count = count;
        self.topics = topics;
    }
}

/// Reads past one message, noting its topic in `topics` (first-seen order, no repeats).
fn skip_message(r: &mut Reader<'_>, topics: &mut Vec<String>) -> Option<()> {
    let flags = r.take(1)?[0];
    let topic = std::str::from_utf8(r.bytes()?).ok()?;
    if topics.last().is_none_or(|t| t != topic) && !topics.iter().any(|t| t == topic) {
        topics.push(topic.to_owned());
    }
    for part in [KEY, VALUE] {
        if flags & part != 0 {
            r.bytes()?;
        }
    }
    if flags & HEADERS != 0 {
        for _ in 0..r.u32()? {
            r.bytes()?;
            if u32::from_le_bytes(r.0.get(..4)?.try_into().ok()?) == NULL {
                r.take(4)?;
            } else {
                r.bytes()?;
            }
        }
    }
    r.take(if flags & PARTITION != 0 { 4 } else { 0 } + if flags & TIMESTAMP != 0 { 8 } else { 0 })?;
    Some(())
}

/// Calls `f` with each message of a packed payload, borrowed (headers, rare, are copied); None
/// if it is malformed.
pub fn each_part(payload: &[u8], mut f: impl FnMut(Parts<'_>)) -> Option<()> {
    let mut r = Reader(payload);
    while !r.0.is_empty() {
        let flags = r.take(1)?[0];
        let topic = std::str::from_utf8(r.bytes()?).ok()?;
        let key = if flags & KEY != 0 { Some(r.bytes()?) } else { None };
        let payload = if flags & VALUE != 0 { Some(r.bytes()?) } else { None };
        let mut headers = None;
        if flags & HEADERS != 0 {
            let n = r.u32()?;
            let mut h = Vec::with_capacity(n.min(1024) as usize);
            for _ in 0..n {
                let name = r.text()?;
                let value = match u32::from_le_bytes(r.0.get(..4)?.try_into().ok()?) {
                    NULL => {
                        r.take(4)?;
                        None
                    }
                    _ => Some(r.text()?),
                };
                h.push((name, value));
            }
            headers = Some(h);
        }
        let partition =
            if flags & PARTITION != 0 { Some(i32::from_le_bytes(r.take(4)?.try_into().ok()?)) } else { None };
        let timestamp_ms =
            if flags & TIMESTAMP != 0 { Some(i64::from_le_bytes(r.take(8)?.try_into().ok()?)) } else { None };
        f(Parts { topic, key, payload, headers: headers.as_deref(), partition, timestamp_ms });
    }
    Some(())
}

/// The messages of the packed payload of outbox row `row`; None if it is malformed.
pub fn unpack(row: i64, payload: &[u8]) -> Option<Vec<Message>> {
    unpack_with(row, payload, <[u8]>::to_vec)
}

/// [`unpack`], each message's value made by `value` from its bytes in the pack (e.g. with its
/// [commit marks](crate::commit_marks) filled in).
pub fn unpack_with(
    row: i64,
    payload: &[u8],
    mut value: impl FnMut(&[u8]) -> Vec<u8>,
) -> Option<Vec<Message>> {
    let mut msgs = Vec::new();
    each_part(payload, |p| {
        msgs.push(Message {
            id: row + msgs.len() as i64,
            row,
            topic: p.topic.to_owned(),
            key: p.key.map(<[u8]>::to_vec),
            payload: p.payload.map(&mut value),
            headers: p.headers.map(<[_]>::to_vec),
            partition: p.partition,
            timestamp_ms: p.timestamp_ms,
            ..Default::default()
        })
    })?;
    Some(msgs)
}

#[cfg(test)]
mod unit {
    use super::*;

    fn msg(topic: &str) -> Message {
        Message { topic: topic.into(), ..Default::default() }
    }

    /// Every part of a message, to compare.
    type Stripped =
        (String, Option<Vec<u8>>, Option<Vec<u8>>, Option<crate::message::Headers>, Option<i32>, Option<i64>);

    fn strip(m: &Message) -> Stripped {
        (m.topic.clone(), m.key.clone(), m.payload.clone(), m.headers.clone(), m.partition, m.timestamp_ms)
    }

    /// A message with every part.
    fn full() -> Message {
        Message {
            key: Some(b"k".to_vec()),
            payload: Some(b"{}".to_vec()),
            headers: Some(vec![("a".into(), Some("1".into())), ("b".into(), None)]),
            partition: Some(2),
            timestamp_ms: Some(7),
            ..msg("t1")
        }
    }

    #[test]
    fn a_packed_payload_is_taken_whole_with_its_count_and_topics() {
        let mut pack = Pack::new(0);
        let full = full();
        for m in [&full, &msg("t2"), &full] {
            pack.push(&m.parts());
        }
        let whole = Pack::from_packed(512, &pack.bytes, Vec::new()).unwrap();
        assert_eq!((whole.id, whole.count, &whole.bytes, &whole.topics), (512, 3, &pack.bytes, &pack.topics));
        assert_eq!(unpack(512, &whole.bytes).unwrap()[2].id, 514);
        assert!(Pack::from_packed(0, &pack.bytes[..pack.bytes.len() - 1], Vec::new()).is_none(), "cut short");
    }

    #[test]
    fn a_pack_cut_short_keeps_its_first_messages_and_their_topics() {
        let mut pack = Pack::new(0);
        for t in ["a", "b", "a", "c"] {
            pack.push(&Message { payload: Some(t.as_bytes().to_vec()), ..msg(t) }.parts());
        }
        let whole = pack.bytes.clone();
        pack.truncate(2);
        assert_eq!((pack.count, &pack.topics), (2, &vec!["a".to_string(), "b".to_string()]));
        let back = unpack(0, &pack.bytes).unwrap();
        assert_eq!(back.iter().map(|m| m.topic.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert!(whole.starts_with(&pack.bytes));
        pack.truncate(5);
        assert_eq!(pack.count, 2, "nothing to cut");
        pack.truncate(0);
        assert!(pack.bytes.is_empty() && pack.topics.is_empty());
    }

    #[test]
    fn each_part_lends_every_part_in_order() {
        let mut pack = Pack::new(0);
        let full = full();
        for m in [&full, &msg("t2")] {
            pack.push(&m.parts());
        }
        let mut seen = Vec::new();
        each_part(&pack.bytes, |p| {
            seen.push((
                p.topic.to_owned(),
                p.key.map(<[u8]>::to_vec),
                p.payload.map(<[u8]>::to_vec),
                p.headers.map(<[_]>::to_vec),
                p.partition,
                p.timestamp_ms,
            ))
        })
        .unwrap();
        assert_eq!(seen, vec![strip(&full), strip(&msg("t2"))]);
        assert!(each_part(&pack.bytes[..pack.bytes.len() - 1], |_| {}).is_none(), "cut short");
    }

    #[test]
    fn round_trip_keeps_order_nulls_and_every_part() {
        let mut pack = Pack::new(1024);
        let full = Message {
            key: Some(b"k".to_vec()),
            payload: Some(b"{}".to_vec()),
            headers: Some(vec![("a".into(), Some("1".into())), ("a".into(), None)]),
            partition: Some(3),
            timestamp_ms: Some(1_577_836_800_000),
            ..msg("a")
        };
        let empty = Message { key: Some(Vec::new()), payload: Some("é".as_bytes().to_vec()), ..msg("c") };
        assert_eq!(pack.push(&full.parts()).0, 1024);
        assert_eq!(pack.push(&msg("b").parts()).0, 1025);
        assert_eq!(pack.push(&empty.parts()).0, 1026);
        let back = unpack(1024, &pack.bytes).unwrap();
        assert_eq!(back.iter().map(strip).collect::<Vec<_>>(), [&full, &msg("b"), &empty].map(strip));
        assert_eq!(
            back.iter().map(|m| (m.row, m.id)).collect::<Vec<_>>(),
            [(1024, 1024), (1024, 1025), (1024, 1026)]
        );
        for cut in 1..pack.bytes.len() {
            if let Some(partial) = unpack(1024, &pack.bytes[..cut]) {
                assert!(partial.len() < 3, "a cut payload never yields the whole pack ({cut})");
            }
        }
    }

    #[test]
    fn a_pack_lists_each_topic_once_in_first_seen_order() {
        let mut pack = Pack::new(0);
        for t in ["b", "a", "b", "b", "c", "a"] {
            pack.push(&msg(t).parts());
        }
        assert_eq!(pack.topics, ["b", "a", "c"]);
    }

    #[test]
    fn a_pack_closes_at_its_limits() {
        let mut pack = Pack::new(0);
        assert!(pack.has_room());
        pack.count = MAX_MESSAGES;
        assert!(!pack.has_room());
        pack.count = 1;
        pack.bytes = vec![0; MAX_BYTES];
        assert!(!pack.has_room());
    }

    #[test]
    fn the_outbox_id_sequence_steps_by_a_pack() {
        // Message i of a pack has the id `id + i`: ids stay unique only if the sequence that
        // numbers packs steps by MAX_MESSAGES (sql/tables.sql).
        let tables = include_str!("../../sql/tables.sql");
        let step = format!("CREATE SEQUENCE kafka.outbox_id_seq AS bigint INCREMENT BY {MAX_MESSAGES} ");
        assert!(
            tables.contains(&step),
            "sql/tables.sql must create kafka.outbox_id_seq stepping by {MAX_MESSAGES}"
        );
    }
}
