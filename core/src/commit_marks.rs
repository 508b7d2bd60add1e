//! Commit marks: WAL capture encodes the events of a transaction streamed before it commits
//! while the session still writes, so their commit time (`source.ts_ms`, `ts_us`, `ts_ns`) and
//! the end of the commit before theirs (in `source.sequence`) are not known yet. They are written
//! as [`COMMIT_MARK`]s, the events are packed and compressed as they are, and the outbox row
//! keeps the two numbers that fill them in (`kafka.outbox.commit_marks`, [`Commit`]); whoever
//! reads the row back ([`unpack`]) fills them in. So a bulk transaction's events are compressed
//! once, while it is written, and nothing is left to do to them at its COMMIT.
//!
//! What must stay true: only event values hold the mark, a control character JSON never holds
//! unescaped; marks are filled in their order (`ts_ms`, the last commit's end, `ts_us`, `ts_ns`).

use crate::message::Message;

/// The mark, where a streamed event's value holds a commit field.
pub const COMMIT_MARK: u8 = 0x01;

/// What fills the marks of a transaction's events: its commit time (microseconds since 1970)
/// and the end LSN of the commit before it, as `kafka.outbox.commit_marks` stores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    pub commit_us: i64,
    pub last_commit_end: u64,
}

impl Commit {
    /// As the outbox column stores it (`{commit_us, last_commit_end}`).
    pub fn to_column(self) -> Vec<i64> {
        vec![self.commit_us, self.last_commit_end as i64]
    }

    /// From the outbox column; None if it is not two numbers.
    pub fn from_column(column: &[i64]) -> Option<Commit> {
        match *column {
            [commit_us, end] => Some(Commit { commit_us, last_commit_end: end as u64 }),
            _ => None,
        }
    }

    /// What replaces the marks, in their order: `ts_ms`, the last commit's end (as
    /// [`in_sequence`]), `ts_us`, `ts_ns`.
    pub fn fills(self) -> [Vec<u8>; 4] {
        let us = self.commit_us;
        [
            us.div_euclid(1000).to_string(),
            in_sequence(self.last_commit_end),
            us.to_string(),
            (us * 1000).to_string(),
        ]
        .map(String::into_bytes)
    }
}

/// The last commit's end as it stands in `source.sequence` (a JSON array of strings, itself in
/// a JSON string, as Debezium writes it): `\"<end>\"`, or `null` where no transaction was
/// decoded before (0: the first after the slot was made), as Debezium writes it with no last
/// commit.
pub fn in_sequence(last_commit_end: u64) -> String {
    match last_commit_end {
        0 => "null".into(),
        end => format!("\\\"{end}\\\""),
    }
}

/// Fills the marks of `value` with `fills` ([`Commit::fills`]), into `out`. Bytes, not text:
/// the value is JSON, which holds that byte nowhere else.
pub fn fill_into(value: &[u8], fills: &[Vec<u8>; 4], out: &mut Vec<u8>) {
    out.clear();
    let mut rest = value;
    for fill in fills.iter().cycle() {
        let Some(at) = memchr::memchr(COMMIT_MARK, rest) else { break };
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(fill);
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
}

/// The messages of outbox row `row` (its packed `payload`), their values' marks filled with
/// `commit` (None: the row has none) as they are copied out of the pack; None if it is
/// malformed.
pub fn unpack(row: i64, payload: &[u8], commit: Option<Commit>) -> Option<Vec<Message>> {
    let Some(commit) = commit else { return crate::pack::unpack(row, payload) };
    let fills = commit.fills();
    crate::pack::unpack_with(row, payload, |v| {
        let mut out = Vec::with_capacity(v.len() + 48);
        fill_into(v, &fills, &mut out);
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMIT: Commit = Commit { commit_us: 1_612_325_106_789_123, last_commit_end: 24_023_928 };

    fn marked() -> String {
        let m = COMMIT_MARK as char;
        format!(r#"{{"ts_ms":{m},"sequence":"[{m},\"99\"]","ts_us":{m},"ts_ns":{m},"op":"c"}}"#)
    }

    const FILLED: &str = r#"{"ts_ms":1612325106789,"sequence":"[\"24023928\",\"99\"]","ts_us":1612325106789123,"ts_ns":1612325106789123000,"op":"c"}"#;

    #[test]
    fn a_streamed_events_commit_marks_are_filled_in_their_order() {
        let mut out = Vec::new();
        fill_into(marked().as_bytes(), &COMMIT.fills(), &mut out);
        assert_eq!(String::from_utf8(out.clone()).unwrap(), FILLED);
        fill_into(br#"{"op":"c"}"#, &COMMIT.fills(), &mut out);
        assert_eq!(out, br#"{"op":"c"}"#, "a value without marks is copied as it is");
    }

    #[test]
    fn a_row_read_back_is_filled_only_with_a_commit() {
        let mut pack = crate::pack::Pack::new(512);
        let marked = marked();
        for v in [Some(marked.as_bytes()), None, Some(&br#"{"op":"d"}"#[..])] {
            pack.push(&crate::pack::Parts { topic: "t", payload: v, ..Default::default() });
        }
        let payloads = |msgs: Vec<Message>| msgs.into_iter().map(|m| (m.id, m.payload)).collect::<Vec<_>>();
        let as_is = payloads(unpack(512, &pack.bytes, None).unwrap());
        assert_eq!(as_is, payloads(crate::pack::unpack(512, &pack.bytes).unwrap()), "no commit: as it is");
        assert_eq!(as_is[0].1.as_deref(), Some(marked.as_bytes()));
        let filled = payloads(unpack(512, &pack.bytes, Some(COMMIT)).unwrap());
        assert_eq!(
            filled,
            [(512, Some(FILLED.as_bytes().to_vec())), (513, None), (514, Some(br#"{"op":"d"}"#.to_vec()))]
        );
        assert!(unpack(512, &pack.bytes[1..], Some(COMMIT)).is_none(), "malformed");
    }

    #[test]
    fn the_first_transaction_after_the_slot_has_no_last_commit() {
        let first = Commit { commit_us: COMMIT.commit_us, last_commit_end: 0 };
        let mut out = Vec::new();
        fill_into(marked().as_bytes(), &first.fills(), &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let seq: Vec<Option<String>> = serde_json::from_str(v["sequence"].as_str().unwrap()).unwrap();
        assert_eq!(seq, [None, Some("99".into())]);
    }

    #[test]
    fn the_column_holds_both_numbers() {
        assert_eq!(Commit::from_column(&COMMIT.to_column()), Some(COMMIT));
        let late = Commit { commit_us: -5, last_commit_end: u64::MAX >> 1 };
        assert_eq!(Commit::from_column(&late.to_column()), Some(late));
        assert_eq!(Commit::from_column(&[1]), None);
    }
}
