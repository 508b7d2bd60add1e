//! Delivery of chunks at least once: sending them with librdkafka, several in flight, and
//! recording each one's outcome in order (delivered rows deleted, refused messages
//! dead-lettered, the rest left for the next pass). `exactly_once` wraps the same pieces in a
//! Kafka transaction.

use super::immediate;
use super::log::Log;
use super::{activity, now, record_error, shutdown_requested, SMALL_BATCH};
use crate::error::KafkaError;
use crate::store::outbox;
use crate::{gucs, shared, store::topic_stats};
use kafka_core::message::Message;
use kafka_core::producer::{Outcome, Producer, Record};
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;

/// Most chunks handed to librdkafka whose reports are not all in: the next chunks are read and
/// sent while the first ones are acknowledged, so the connection never idles between chunks.
pub(super) const IN_FLIGHT: usize = 4;

/// Sends `first` and the chunks after it, up to [`IN_FLIGHT`] at a time, and records each one
/// in order once all its reports are in. librdkafka's idempotent producer keeps every partition
/// in order across chunks; if a message must be retried, it and everything sent after it stay
/// in the outbox and are sent again after it, so nothing overtakes a message that failed.
/// Returns the size of the last chunk (messages, transactions), or None if some messages must
/// be retried (the caller then restarts the log).
pub(super) fn stream(
    producer: &Producer,
    first: Vec<Message>,
    close_requests: u64,
    log: &mut Log,
) -> Option<(usize, usize)> {
    // Every poll also serves immediate sends, so they never wait behind a batch.
    let mut stop = || {
        immediate::serve(Some(producer), "");
        // Show what librdkafka says (refused connection, failed authentication) while we wait.
        if let Some(event) = producer.take_events().pop() {
            record_error(&event);
        }
        shutdown_requested() || shared::close_requests() != close_requests
    };
    activity(&format!("delivering {} messages", first.len()));
    if std::mem::take(&mut log.isolate) {
        let outcomes = send_isolated(producer, &first, &mut stop);
        let recorded = record(&first, &outcomes, false, log);
        return recorded.then_some((first.len(), transactions(&first)));
    }
    let mut in_flight = std::collections::VecDeque::new();
    let sent = producer.send_batch(&records_of(&first), &mut stop);
    in_flight.push_back((first, sent));
    let mut failed = false;
    let mut last = (0, 0);
    while let Some((chunk, sent)) = in_flight.pop_front() {
        // Read ahead only behind a large chunk: after a small one there is rarely more, and
        // each read is a transaction of the worker's own.
        while !failed && chunk.len() >= SMALL_BATCH && in_flight.len() + 1 < IN_FLIGHT {
            let next = log.read_ahead();
            match next {
                Ok(next) if next.is_empty() => break,
                Ok(next) => {
                    let sent = producer.send_batch(&records_of(&next), &mut stop);
                    in_flight.push_back((next, sent));
                }
                Err(e) => {
                    record_error(&e.to_string());
                    failed = true;
                }
            }
        }
        let outcomes = producer.wait(sent, &mut stop);
        last = (chunk.len(), transactions(&chunk));
        failed = !record(&chunk, &outcomes, failed, log) || failed;
    }
    (!failed).then_some(last)
}

/// After Kafka refused a whole record batch: sends the chunk's messages one at a time, in
/// order, until the pack row holding the first one refused on its own (or [`ISOLATE_MAX`]
/// messages) is done; what follows waits for the next pass. Each message is then delivered or
/// refused for good by itself, so one bad record never holds back or drags down the others.
pub(super) fn send_isolated(
    producer: &Producer,
    chunk: &[Message],
    stop: &mut dyn FnMut() -> bool,
) -> Vec<Outcome> {
    const ISOLATE_MAX: usize = 1000;
    let records = records_of(chunk);
    let mut outcomes = Vec::with_capacity(chunk.len());
    let mut enough = false;
    for (i, r) in records.iter().enumerate() {
        if enough && chunk[i].row != chunk[i - 1].row {
            outcomes.resize(chunk.len(), Outcome::Retry("sent after a refused record batch".into()));
            break;
        }
        let outcome = match producer.deliver(std::slice::from_ref(r), stop).pop() {
            Some(Outcome::BatchRefused(e)) => Outcome::Refused(e),
            Some(o) => o,
            None => Outcome::Retry("no delivery report".into()),
        };
        enough |= matches!(outcome, Outcome::Refused(_)) || i + 1 >= ISOLATE_MAX;
        outcomes.push(outcome);
    }
    outcomes
}

/// How many transactions a chunk holds messages of.
pub(super) fn transactions(chunk: &[Message]) -> usize {
    chunk.windows(2).filter(|w| w[0].csn != w[1].csn).count() + usize::from(!chunk.is_empty())
}

pub(super) fn records_of(batch: &[Message]) -> Vec<Record<'_>> {
    batch
        .iter()
        .map(|m| Record {
            topic: &m.topic,
            key: m.key.as_deref(),
            payload: m.payload.as_deref(),
            headers: m
                .headers
                .iter()
                .flatten()
                .map(|(n, v)| (n.as_str(), v.as_deref().map(str::as_bytes)))
                .collect(),
            partition: m.partition,
            timestamp_ms: m.timestamp_ms,
        })
        .collect()
}

/// Records the outcome of one batch: removes what Kafka acknowledged, dead-letters what it
/// refused, and reports what must be retried. A packed outbox row (many messages) stays whole
/// while any of its messages must be retried (those delivered are then sent again).
/// With `after_failure`, an earlier chunk had a message to retry: every row stays. A record
/// batch Kafka refused as a whole is retried, one message at a time (`log.isolate`).
/// Returns false if some messages must be retried or the outcome could not be recorded.
pub(super) fn record(batch: &[Message], outcomes: &[Outcome], after_failure: bool, log: &mut Log) -> bool {
    let mut outcomes = outcomes.to_vec();
    log.give_up_on_stuck(gucs::dead_letter_after(), batch, &mut outcomes);
    let outcomes = &outcomes[..];
    let mut done = Vec::with_capacity(batch.len());
    let mut refused = Vec::new();
    let mut retried = Vec::new();
    let mut retry: Option<&str> = after_failure.then_some("an earlier message must be sent again first");
    let mut delivered = 0;
    let mut csns = Vec::new();
    let mut per_topic = topic_stats::Chunk::default();
    let mut start = 0;
    while start < batch.len() {
        let row = batch[start].row;
        if csns.last() != Some(&batch[start].csn) {
            csns.push(batch[start].csn);
        }
        let end = start + batch[start..].iter().take_while(|m| m.row == row).count();
        let messages = batch[start..end].iter().zip(&outcomes[start..end]);
        let must_retry = messages.clone().find_map(|(_, o)| match o {
            Outcome::Retry(e) => Some(e),
            Outcome::BatchRefused(e) => {
                log.isolate = true;
                Some(e)
            }
            _ => None,
        });
        if let Some(e) = must_retry {
            retry.get_or_insert(e.as_str());
        }
        if retry.is_some() {
            // This row, and every row after the first one that must be retried, stays: sent
            // again after it, so nothing overtakes a message that failed.
            retried.push((row, batch[start].xid));
        } else {
            done.push((row, batch[start].xid));
            for (m, o) in messages {
                match o {
                    Outcome::Refused(e) => {
                        per_topic.dead_lettered(&m.topic);
                        refused.push((m, e.clone()));
                    }
                    _ => {
                        per_topic.delivered(&m.topic, m.payload.as_ref().map_or(0, Vec::len));
                        delivered += 1;
                    }
                }
            }
        }
        start = end;
    }
    let recorded = BackgroundWorker::transaction(|| {
        let dead = outbox::finish(&done, &refused, &retried, &csns)?;
        per_topic.add()?;
        Ok::<_, KafkaError>(dead)
    });
    let dead = match recorded {
        Ok(dead) => dead,
        Err(e) => {
            record_error(&e.to_string());
            return false;
        }
    };
    {
        let mut s = shared::STATE.exclusive();
        s.delivered += delivered;
        s.dead_lettered += dead;
        if delivered > 0 {
            s.last_delivery_at = now();
        }
    }
    for (m, e) in &refused {
        warning!("pg_kafka: message {} moved to kafka.dead_letter: {e}", m.id);
    }
    match retry {
        Some(_) if after_failure => return false,
        Some(e) => {
            let last = shared::STATE.share().last_error().unwrap_or_default();
            let detail = if last.is_empty() || last.starts_with(e) {
                String::new()
            } else {
                format!(" (last: {last})")
            };
            shared::STATE.exclusive().waited_at_least(retried.len() as i64);
            record_error(&format!("{e}{detail}"));
            return false;
        }
        None => {} // refusals are in kafka.dead_letter and the log: delivery itself works
    }
    true
}
