//! The worker's place in the log of commits ([`Round`]s read in commit order), and what
//! it remembers across passes: which messages to send one at a time after Kafka refused the
//! record batch they travelled in, and the failed attempts that `kafka.dead_letter_after` counts.

use crate::error::KafkaError;
use crate::gucs;
use crate::store::owner;
use crate::store::read::{self, Round};
use kafka_core::message::Message;
use kafka_core::producer::Outcome;

/// The worker's place in the log of commits: the round being read, and where the last one ended.
#[derive(Default)]
pub(super) struct Log {
    /// Where the last finished round ended (None: read everything from the start).
    after: Option<String>,
    round: Option<Round>,
    /// Kafka refused a whole record batch: in the next pass, send each of its messages
    /// (`suspects`) alone, to find the one that is bad and let the others through.
    pub(super) isolate: bool,
    /// The messages (by id) of record batches Kafka refused as a whole, not sent since.
    pub(super) suspects: std::collections::HashSet<i64>,
    /// Topics with a message left to send again since the log last restarted: their later
    /// messages, even those Kafka acknowledged, are sent again after it, so that a topic's
    /// messages end in their order (other topics' are recorded as delivered).
    pub(super) held: std::collections::HashSet<String>,
    /// Failed attempts of messages (by id) in chunks where other messages were delivered, for
    /// `kafka.dead_letter_after`. Kept across restarts of the log, not of the worker.
    attempts: std::collections::HashMap<i64, u32>,
}

impl Log {
    /// The next chunk in commit order, or an empty one when nothing more has committed. Runs
    /// inside a transaction.
    pub(super) fn next_chunk(&mut self) -> Result<Vec<Message>, KafkaError> {
        loop {
            let fresh = self.round.is_none();
            let round = match self.round.as_mut() {
                Some(round) => round,
                None => self.round.insert(Round::start(self.after.clone())?),
            };
            let chunk = read::read_chunk(round, gucs::batch_size(), gucs::batch_bytes())?;
            if !chunk.is_empty() {
                return Ok(chunk);
            }
            self.after = self.round.take().map(|r| r.upto);
            if fresh {
                return Ok(chunk);
            }
        }
    }

    /// The next chunk, read in a transaction of its own while earlier chunks are in flight
    /// (empty if the extension is gone meanwhile).
    pub(super) fn read_ahead(&mut self) -> Result<Vec<Message>, KafkaError> {
        pgrx::bgworkers::BackgroundWorker::transaction(std::panic::AssertUnwindSafe(|| {
            if owner::installed() {
                self.next_chunk()
            } else {
                Ok(Vec::new())
            }
        }))
    }

    /// After a failure: read the outbox again from its start (what was sent and not recorded
    /// is sent again, in order).
    pub(super) fn restart(&mut self) {
        let (isolate, attempts) = (self.isolate, std::mem::take(&mut self.attempts));
        let suspects = std::mem::take(&mut self.suspects);
        *self = Log { isolate, suspects, attempts, ..Log::default() };
    }

    /// Notes the messages of `batch` that travelled in a record batch Kafka refused as a whole:
    /// the next pass sends each of them alone.
    pub(super) fn suspect(&mut self, batch: &[Message], outcomes: &[Outcome]) {
        if self.suspects.len() > 100_000 {
            self.suspects.clear(); // bounded memory: the next refusal names them again
        }
        for (m, o) in batch.iter().zip(outcomes) {
            if matches!(o, Outcome::BatchRefused(_)) {
                self.isolate = true;
                self.suspects.insert(m.id);
            }
        }
    }

    /// After a pass that sent `batch` with `suspects` isolated: the suspects it did not settle
    /// (in a later chunk than this pass read, or without an answer of their own: the pass failed
    /// for another reason, as a Kafka transaction does right after one a bad record aborted)
    /// stay suspects, so that the next pass isolates them still and the bad record is found.
    pub(super) fn keep_unsettled(
        &mut self,
        suspects: std::collections::HashSet<i64>,
        batch: &[Message],
        outcomes: &[Outcome],
    ) {
        let settled: std::collections::HashSet<i64> = batch
            .iter()
            .zip(outcomes)
            .filter(|(_, o)| matches!(o, Outcome::Delivered | Outcome::Refused(_)))
            .map(|(m, _)| m.id)
            .collect();
        let left: Vec<i64> = suspects.into_iter().filter(|id| !settled.contains(id)).collect();
        if !left.is_empty() {
            self.isolate = true;
            self.suspects.extend(left);
        }
    }

    /// With `kafka.dead_letter_after`, a message that failed that many times while Kafka took
    /// other messages of the same chunk is refused for good (dead-lettered) instead of retried:
    /// the one message that Kafka keeps failing does not hold the queue back for ever. While
    /// Kafka takes nothing (an outage), nothing counts.
    pub(super) fn give_up_on_stuck(
        &mut self,
        limit: Option<u32>,
        batch: &[Message],
        outcomes: &mut [Outcome],
    ) {
        let Some(limit) = limit else { return };
        if !outcomes.iter().any(|o| matches!(o, Outcome::Delivered)) {
            return;
        }
        if self.attempts.len() > 100_000 {
            self.attempts.clear(); // bounded memory; counts start again
        }
        for (m, o) in batch.iter().zip(outcomes.iter_mut()) {
            let Outcome::Retry(e) = o else { continue };
            let n = self.attempts.entry(m.id).or_default();
            *n += 1;
            if *n >= limit {
                *o = Outcome::Refused(format!(
                    "{e} (failed {n} times while Kafka took other messages: kafka.dead_letter_after)"
                ));
                self.attempts.remove(&m.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_of_a_refused_record_batch_are_sent_alone_next_time() {
        let mut log = Log::default();
        let batch = messages(&[1, 2, 3, 4]);
        let outcomes = [
            Outcome::Delivered,
            Outcome::BatchRefused("Invalid timestamp".into()),
            Outcome::Bystander("another record was invalid".into()),
            Outcome::BatchRefused("Invalid timestamp".into()),
        ];
        log.suspect(&batch, &outcomes);
        assert!(log.isolate);
        assert_eq!(log.suspects, [2, 4].into_iter().collect());
        log.restart();
        assert!(log.isolate && log.suspects.len() == 2, "kept across a restart of the log");
        let mut quiet = Log::default();
        quiet.suspect(&batch, &[Outcome::Delivered, Outcome::Retry("timed out".into())]);
        assert!(!quiet.isolate && quiet.suspects.is_empty());
    }

    #[test]
    fn a_message_that_was_not_sent_is_not_a_failed_attempt() {
        let mut log = Log::default();
        let batch = messages(&[1, 2]);
        for _ in 0..5 {
            let mut outcomes = vec![Outcome::Bystander("not sent".into()), Outcome::Delivered];
            log.give_up_on_stuck(Some(2), &batch, &mut outcomes);
            assert!(matches!(outcomes[0], Outcome::Bystander(_)));
        }
    }

    fn messages(ids: &[i64]) -> Vec<Message> {
        ids.iter().map(|&id| Message { id, ..Default::default() }).collect()
    }

    #[test]
    fn a_message_that_keeps_failing_while_others_pass_is_given_up_after_the_limit() {
        let mut log = Log::default();
        let batch = messages(&[1, 2]);
        let round = |log: &mut Log, limit| {
            let mut outcomes = vec![Outcome::Retry("timed out".into()), Outcome::Delivered];
            log.give_up_on_stuck(limit, &batch, &mut outcomes);
            outcomes
        };
        assert!(matches!(round(&mut log, None)[0], Outcome::Retry(_)), "0: never");
        assert!(matches!(round(&mut log, Some(3))[0], Outcome::Retry(_)));
        assert!(matches!(round(&mut log, Some(3))[0], Outcome::Retry(_)));
        log.restart();
        match &round(&mut log, Some(3))[0] {
            Outcome::Refused(e) => assert!(e.contains("timed out") && e.contains("3 times"), "{e}"),
            o => panic!("{o:?}"),
        }
        // An outage: nothing is delivered, nothing counts.
        let mut outage = Log::default();
        for _ in 0..10 {
            let mut outcomes = vec![Outcome::Retry("down".into()), Outcome::Retry("down".into())];
            outage.give_up_on_stuck(Some(2), &batch, &mut outcomes);
            assert!(outcomes.iter().all(|o| matches!(o, Outcome::Retry(_))));
        }
    }
}
