//! How the outcomes of a chunk settle, as pure logic: which messages are done, which become
//! dead letters, which stay in the outbox to be sent again, and what becomes of each outbox row
//! (pack). The worker carries a [`Settlement`] out in PostgreSQL (its `worker::record`) in
//! both delivery modes. What must stay true:
//!
//! - A message Kafka acknowledged for good is done and never sent again, whatever happened to
//!   its neighbours; a message Kafka refused for good is a dead letter.
//! - A message kept to be sent again holds its topic back (`held`): the topic's later messages
//!   are kept too, even those Kafka acknowledged, so that consumers end with them in order (as
//!   a CDC consumer needs); other topics' messages are done, so one failing record never makes
//!   another topic's messages arrive twice. A record refused for good holds nothing back.
//! - After an aborted Kafka transaction nothing Kafka took is visible: only the dead letters
//!   leave the outbox, everything else stays as it is, and no topic is held.

use crate::message::Message;
use crate::producer::Outcome;
use std::collections::HashSet;

/// How the Kafka side of a chunk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// What Kafka acknowledged is stored for good: delivery at least once, or a committed Kafka
    /// transaction.
    Kept,
    /// The Kafka transaction was aborted: none of its records is visible to read_committed
    /// consumers.
    Aborted,
}

/// An outbox row some of whose messages settled, but not all: it keeps only `left`.
#[derive(Debug)]
pub struct Partly<'a> {
    pub row: i64,
    pub xid: i64,
    /// How many messages the row held when it was read.
    pub count: i32,
    /// The messages still to send, in order.
    pub left: Vec<&'a Message>,
}

/// What becomes of a chunk, from its outcomes.
#[derive(Debug, Default)]
pub struct Settlement<'a> {
    /// Acknowledged for good: recorded as delivered.
    pub delivered: Vec<&'a Message>,
    /// Refused for good, with Kafka's error: dead letters.
    pub refused: Vec<(&'a Message, String)>,
    /// Outbox rows (id, xid) all of whose messages settled: they leave the outbox.
    /// (`done`, `retried`, `partly` and `csns` are empty after an abort, which leaves every
    /// row as it is but for its dead letters.)
    pub done: Vec<(i64, i64)>,
    /// Outbox rows (id, xid) none of whose messages settled: they stay whole.
    pub retried: Vec<(i64, i64)>,
    /// Outbox rows some of whose messages settled.
    pub partly: Vec<Partly<'a>>,
    /// The transactions (commit numbers) the chunk holds messages of, in order.
    pub csns: Vec<i64>,
    /// The first error of a message kept to be sent again; None if none is (then what was
    /// refused is in the dead letters, and delivery itself works).
    pub retry: Option<String>,
    /// How many messages wait for this failure: those kept, or after an abort the whole chunk.
    pub waiting: usize,
}

/// Settles `batch` by its `outcomes` (one per message, in order). `held` holds the topics with
/// a message kept since the log of commits last restarted; with [`Ending::Kept`] the topics of
/// this chunk's kept messages join it.
pub fn settle<'a>(
    batch: &'a [Message],
    mut outcomes: Vec<Outcome>,
    held: &mut HashSet<String>,
    ending: Ending,
) -> Settlement<'a> {
    if ending == Ending::Kept {
        hold_back(batch, &mut outcomes, held);
    }
    let mut s = Settlement::default();
    let mut outcomes = outcomes.into_iter();
    for pack in batch.chunk_by(|a, b| a.row == b.row) {
        let mut left = Vec::new();
        for (m, o) in pack.iter().zip(outcomes.by_ref()) {
            match o {
                Outcome::Delivered if ending == Ending::Kept => s.delivered.push(m),
                Outcome::Delivered => left.push(m),
                Outcome::Refused(e) => s.refused.push((m, e)),
                Outcome::Retry(e) | Outcome::BatchRefused(e) | Outcome::Bystander(e) => {
                    s.retry.get_or_insert(e);
                    left.push(m);
                }
            }
        }
        if ending == Ending::Aborted {
            continue;
        }
        let (row, xid, csn) = (pack[0].row, pack[0].xid, pack[0].csn);
        if s.csns.last() != Some(&csn) {
            s.csns.push(csn);
        }
        s.waiting += left.len();
        if left.is_empty() {
            s.done.push((row, xid));
        } else if left.len() == pack.len() {
            s.retried.push((row, xid));
        } else {
            s.partly.push(Partly { row, xid, count: pack.len() as i32, left });
        }
    }
    if ending == Ending::Aborted {
        s.waiting = batch.len();
    }
    s
}

/// A message to send again holds back its topic (`held`): the topic's later messages that
/// Kafka acknowledged become [`Outcome::Bystander`]s, to be sent again after it.
fn hold_back(batch: &[Message], outcomes: &mut [Outcome], held: &mut HashSet<String>) {
    // Nothing to look at in the usual pass: everything delivered, no topic held.
    if held.is_empty() && outcomes.iter().all(|o| *o == Outcome::Delivered) {
        return;
    }
    for (m, o) in batch.iter().zip(outcomes.iter_mut()) {
        match o {
            Outcome::Delivered if held.contains(&m.topic) => {
                let why = "sent again after an earlier message of its topic, to keep their order";
                *o = Outcome::Bystander(why.into());
            }
            Outcome::Retry(_) | Outcome::BatchRefused(_) | Outcome::Bystander(_) => {
                if !held.contains(&m.topic) {
                    held.insert(m.topic.clone());
                }
            }
            Outcome::Delivered | Outcome::Refused(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Messages (id, outbox row, topic); each row is one transaction, its commit number the row's.
    fn messages(spec: &[(i64, i64, &str)]) -> Vec<Message> {
        spec.iter()
            .map(|&(id, row, topic)| Message {
                id,
                row,
                xid: row * 10,
                csn: row,
                topic: topic.into(),
                ..Default::default()
            })
            .collect()
    }

    fn ids(ms: &[&Message]) -> Vec<i64> {
        ms.iter().map(|m| m.id).collect()
    }

    fn delivered() -> Outcome {
        Outcome::Delivered
    }

    #[test]
    fn all_acknowledged_every_row_is_done() {
        let batch = messages(&[(1, 1, "a"), (2, 1, "b"), (3, 2, "a")]);
        let mut held = HashSet::new();
        let s = settle(&batch, vec![delivered(); 3], &mut held, Ending::Kept);
        assert_eq!(ids(&s.delivered), [1, 2, 3]);
        assert_eq!(s.done, [(1, 10), (2, 20)]);
        assert!(s.refused.is_empty() && s.retried.is_empty() && s.partly.is_empty());
        assert_eq!(s.csns, [1, 2]);
        assert_eq!((s.retry, s.waiting), (None, 0));
        assert!(held.is_empty());
    }

    #[test]
    fn a_batch_refused_record_holds_its_topics_later_messages_and_no_other_topics() {
        // Topic a: 1 delivered, 2 in a record batch Kafka refused, 3 and 5 acknowledged after it.
        let batch = messages(&[(1, 1, "a"), (2, 1, "a"), (3, 1, "a"), (4, 1, "b"), (5, 2, "a"), (6, 2, "b")]);
        let refused = Outcome::BatchRefused("Invalid timestamp".into());
        let outcomes = vec![delivered(), refused, delivered(), delivered(), delivered(), delivered()];
        let mut held = HashSet::new();
        let s = settle(&batch, outcomes, &mut held, Ending::Kept);
        assert_eq!(ids(&s.delivered), [1, 4, 6], "before it, and the other topic: done");
        assert!(s.refused.is_empty());
        let left: Vec<Vec<i64>> = s.partly.iter().map(|p| ids(&p.left)).collect();
        assert_eq!(left, [vec![2, 3], vec![5]], "the rest of topic a: kept, in order");
        assert_eq!((s.partly[0].row, s.partly[0].xid, s.partly[0].count), (1, 10, 4));
        assert!(s.done.is_empty() && s.retried.is_empty());
        assert_eq!(s.retry.as_deref(), Some("Invalid timestamp"));
        assert_eq!(s.waiting, 3);
        assert_eq!(held, ["a".to_owned()].into_iter().collect());
        // The next chunk of the same log: topic a stays held, even fully acknowledged.
        let next = messages(&[(7, 3, "a"), (8, 3, "b")]);
        let s = settle(&next, vec![delivered(); 2], &mut held, Ending::Kept);
        assert_eq!(ids(&s.delivered), [8]);
        assert_eq!(ids(&s.partly[0].left), [7]);
        assert!(s.retry.is_some_and(|e| e.contains("keep their order")));
    }

    #[test]
    fn a_record_refused_for_good_is_a_dead_letter_and_holds_nothing_back() {
        let batch = messages(&[(1, 1, "a"), (2, 1, "a"), (3, 1, "a")]);
        let outcomes = vec![delivered(), Outcome::Refused("too large".into()), delivered()];
        let mut held = HashSet::new();
        let s = settle(&batch, outcomes, &mut held, Ending::Kept);
        assert_eq!(ids(&s.delivered), [1, 3]);
        assert_eq!(s.refused.iter().map(|(m, e)| (m.id, e.as_str())).collect::<Vec<_>>(), [(2, "too large")]);
        assert_eq!(s.done, [(1, 10)]);
        assert_eq!((s.retry, s.waiting), (None, 0));
        assert!(held.is_empty());
    }

    #[test]
    fn a_retryable_failure_keeps_its_row_and_holds_its_topic() {
        let batch = messages(&[(1, 1, "a"), (2, 2, "b"), (3, 3, "a")]);
        let outcomes = vec![Outcome::Retry("timed out".into()), delivered(), delivered()];
        let mut held = HashSet::new();
        let s = settle(&batch, outcomes, &mut held, Ending::Kept);
        assert_eq!(ids(&s.delivered), [2]);
        assert_eq!(s.retried, [(1, 10), (3, 30)], "message 3 waits behind message 1");
        assert_eq!(s.done, [(2, 20)]);
        assert_eq!(s.csns, [1, 2, 3]);
        assert_eq!(s.retry.as_deref(), Some("timed out"));
        assert_eq!(s.waiting, 2);
        assert!(held.contains("a") && !held.contains("b"));
    }

    #[test]
    fn after_an_abort_only_dead_letters_leave_and_suspects_stay() {
        // An exactly-once pass that sent its suspects alone: 1 went through, 2 is the bad
        // record, 3 was not sent; 4 travelled in a record batch Kafka refused as a whole.
        let batch = messages(&[(1, 1, "a"), (2, 1, "a"), (3, 1, "a"), (4, 2, "b")]);
        let outcomes = vec![
            delivered(),
            Outcome::Refused("Invalid timestamp".into()),
            Outcome::Bystander("sent after a refused record batch".into()),
            Outcome::BatchRefused("Invalid record".into()),
        ];
        let mut held = HashSet::new();
        let s = settle(&batch, outcomes, &mut held, Ending::Aborted);
        assert!(s.delivered.is_empty(), "nothing of an aborted transaction is visible");
        assert_eq!(s.refused.iter().map(|(m, _)| m.id).collect::<Vec<_>>(), [2]);
        assert!(s.done.is_empty() && s.retried.is_empty() && s.partly.is_empty() && s.csns.is_empty());
        assert_eq!(s.retry.as_deref(), Some("sent after a refused record batch"));
        assert_eq!(s.waiting, 4, "the whole transaction waited");
        assert!(held.is_empty(), "an abort holds no topic back");
        // Refused messages alone: the others are sent again at once, with no error.
        let s =
            settle(&batch[..2], vec![delivered(), Outcome::Refused("x".into())], &mut held, Ending::Aborted);
        assert_eq!((s.refused.len(), s.retry), (1, None));
    }
}
