//! Commit marks: WAL capture encodes the events of a transaction streamed before it commits
//! while the session still writes, so their commit time (`source.ts_ms`, `ts_us`, `ts_ns`) and
//! the end of the commit before theirs (in `source.sequence`) are not known yet. They are written
//! as [`COMMIT_MARK`]s, the events are packed and compressed as they are, and the outbox row
//! keeps the two numbers that fill them in (`kafka.outbox.commit_marks`, [`Commit`]); whoever
//! reads the row back ([`fill`]) fills them in. So a bulk transaction's events are compressed
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

    /// What replaces the marks, in their order: `ts_ms`, the last commit's end, `ts_us`, `ts_ns`.
    pub fn fills(self) -> [Vec<u8>; 4] {
        let us = self.commit_us;
        [
            us.div_euclid(1000).to_string(),
            self.last_commit_end.to_string(),
            us.to_string(),
            (us * 1000).to_string(),
        ]
        .map(String::into_bytes)
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

/// Fills the marks of the values of messages read back from a row with `commit` (None: the
/// row has none).
pub fn fill(messages: &mut [Message], commit: Option<Commit>) {
    let Some(commit) = commit else { return };
    let fills = commit.fills();
    for m in messages {
        if let Some(v) = &m.payload {
            if memchr::memchr(COMMIT_MARK, v).is_some() {
                let mut out = Vec::with_capacity(v.len() + 48);
                fill_into(v, &fills, &mut out);
                m.payload = Some(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMIT: Commit = Commit { commit_us: 1_612_325_106_789_123, last_commit_end: 24_023_928 };

    fn marked() -> String {
        let m = COMMIT_MARK as char;
        format!(r#"{{"ts_ms":{m},"sequence":"[\"{m}\",\"99\"]","ts_us":{m},"ts_ns":{m},"op":"c"}}"#)
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
    fn messages_read_back_are_filled_only_with_a_commit() {
        let m = |v: &str| Message { payload: Some(v.as_bytes().to_vec()), ..Default::default() };
        let mut msgs = vec![m(&marked()), Message::default(), m(r#"{"op":"d"}"#)];
        let payloads = |msgs: &[Message]| msgs.iter().map(|m| m.payload.clone()).collect::<Vec<_>>();
        let before = payloads(&msgs);
        fill(&mut msgs, None);
        assert_eq!(payloads(&msgs), before, "a row without commit marks is left as it is");
        fill(&mut msgs, Some(COMMIT));
        assert_eq!(msgs[0].payload.as_deref(), Some(FILLED.as_bytes()));
        assert_eq!(
            (msgs[1].payload.as_deref(), msgs[2].payload.as_deref()),
            (None, Some(&br#"{"op":"d"}"#[..]))
        );
    }

    #[test]
    fn the_column_holds_both_numbers() {
        assert_eq!(Commit::from_column(&COMMIT.to_column()), Some(COMMIT));
        let late = Commit { commit_us: -5, last_commit_end: u64::MAX >> 1 };
        assert_eq!(Commit::from_column(&late.to_column()), Some(late));
        assert_eq!(Commit::from_column(&[1]), None);
    }
}
