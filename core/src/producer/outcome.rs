//! What became of one record ([`Outcome`]), read from librdkafka's delivery error
//! ([`classify`]), and which records of a record batch Kafka refused were the bad ones
//! ([`name_refused`]). What must stay true: only an error no resend can fix is
//! [`Outcome::Refused`] (a dead letter); an error that says nothing about the record itself
//! (broker down, timeout, an unknown code) is [`Outcome::Retry`], so nothing is lost by
//! guessing; and a record refused with its record batch is [`Outcome::Refused`] only when the
//! broker named it as a bad one.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// What became of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Kafka acknowledged it (all in-sync replicas).
    Delivered,
    /// Kafka can never take it (too large, invalid or forbidden topic...): dead-letter it.
    Refused(String),
    /// Not delivered this time (broker down, timeout, stop requested): keep it and retry.
    Retry(String),
    /// Kafka refused the whole record batch it travelled in (an invalid timestamp or record):
    /// one record of the batch is bad, not necessarily this one. Sent alone, it is either
    /// delivered or refused for good. (When the broker names the bad records, they are
    /// `Refused` and their neighbours `Bystander`: see [`Producer::wait`](super::Producer::wait).)
    BatchRefused(String),
    /// Not stored, through no fault of its own: refused with its record batch because of
    /// another record the broker named as invalid, or not handed to Kafka at all (the worker
    /// stopped short after a refused record). Sent again in a later pass; not a failed attempt
    /// (`kafka.dead_letter_after` does not count it).
    Bystander(String),
}

/// Sorts a delivery error into "never deliverable" and "try again later".
pub fn classify(e: &KafkaError) -> Outcome {
    use RDKafkaErrorCode::*;
    let code = e.rdkafka_error_code();
    let text = e.to_string();
    match code {
        Some(
            MessageSizeTooLarge
            | InvalidMessageSize
            | InvalidTopic
            | MessageBatchTooLarge
            | TopicAuthorizationFailed
            | UnknownPartition
            | UnknownTopic
            | PolicyViolation
            | InvalidRequiredAcks
            | InvalidArgument
            | InvalidPartitions
            | UnsupportedCompressionType
            | UnsupportedForMessageFormat,
        ) => Outcome::Refused(text),
        // The broker checks these per record batch and fails the whole batch.
        Some(InvalidTimestamp | InvalidRecord | InvalidMessage) => Outcome::BatchRefused(text),
        // A neighbour of a record the broker named as invalid: never stored, fine itself.
        Some(InvalidDifferentRecord) => Outcome::Bystander(text),
        _ => Outcome::Retry(text),
    }
}

/// Records of a refused record batch (`batch_refused`: index, topic, partition) whose partition
/// had records reported as [`InvalidDifferentRecord`](RDKafkaErrorCode::InvalidDifferentRecord)
/// (`named`) are the ones the broker named as invalid: refused for good. The others stay
/// [`Outcome::BatchRefused`] (the broker did not say which).
pub(super) fn name_refused(
    outcomes: &mut [Option<Outcome>],
    batch_refused: &[(usize, String, i32)],
    named: &[(String, i32)],
) {
    for (index, topic, partition) in batch_refused {
        if !named.iter().any(|(t, p)| t == topic && p == partition) {
            continue;
        }
        if let Some(Some(Outcome::BatchRefused(e))) = outcomes.get(*index) {
            outcomes[*index] = Some(Outcome::Refused(e.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let refused = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert!(matches!(classify(&refused), Outcome::Refused(_)));
        let stuck = KafkaError::MessageProduction(RDKafkaErrorCode::InvalidTimestamp);
        assert!(
            matches!(classify(&stuck), Outcome::BatchRefused(_)),
            "no retry of the batch can fix a bad timestamp"
        );
        let later = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert!(matches!(classify(&later), Outcome::Retry(_)));
        let neighbour = KafkaError::MessageProduction(RDKafkaErrorCode::InvalidDifferentRecord);
        assert!(
            matches!(classify(&neighbour), Outcome::Bystander(_)),
            "never stored, fine itself: sent again"
        );
    }

    #[test]
    fn records_the_broker_named_in_a_refused_batch_are_refused_for_good() {
        let bad = || Some(Outcome::BatchRefused("Invalid timestamp".into()));
        let mut outcomes =
            vec![Some(Outcome::Delivered), bad(), Some(Outcome::Bystander("different record".into())), bad()];
        // Record 1 is on a partition where the broker named the bad records, record 3 is not.
        let refused = [(1, "t".to_owned(), 0), (3, "u".to_owned(), 0)];
        name_refused(&mut outcomes, &refused, &[("t".to_owned(), 0), ("u".to_owned(), 1)]);
        assert_eq!(outcomes[0], Some(Outcome::Delivered));
        assert_eq!(outcomes[1], Some(Outcome::Refused("Invalid timestamp".into())));
        assert!(matches!(outcomes[2], Some(Outcome::Bystander(_))));
        assert_eq!(outcomes[3], bad(), "no record named on its partition: which one is bad is unknown");
    }
}
