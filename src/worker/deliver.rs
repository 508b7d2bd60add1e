//! Delivery of chunks at least once: sending them with librdkafka, several in flight, and
//! recording each one's outcome in order (acknowledged messages removed, refused ones
//! dead-lettered, the rest left for the next pass). `exactly_once` wraps the same pieces in a
//! Kafka transaction.

use super::immediate;
use super::log::Log;
use super::{activity, now, record_error, shutdown_requested, SMALL_BATCH};
use crate::error::KafkaError;
use crate::store::outcome;
use crate::{gucs, shared, store::topic_stats};
use kafka_core::message::Message;
use kafka_core::producer::{Outcome, Producer, Record};
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
use std::collections::HashSet;

/// Most chunks handed to librdkafka whose reports are not all in: the next chunks are read and
/// sent while the first ones are acknowledged, so the connection never idles between chunks.
pub(super) const IN_FLIGHT: usize = 4;

/// Sends `first` and the chunks after it, up to [`IN_FLIGHT`] at a time, and records each one
/// in order once all its reports are in. librdkafka's idempotent producer keeps every partition
/// in order across chunks. Whatever happened to its neighbours, a message Kafka acknowledged is
/// recorded as delivered and never sent again; one that must be retried stays in the outbox,
/// no chunk is read behind it, and the log restarts, so nothing that was not sent yet overtakes
/// it. (Messages Kafka took after it, on its partition, are not sent again behind it.)
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
        let suspects = std::mem::take(&mut log.suspects);
        let outcomes = send_isolated(producer, &first, &suspects, Some(ISOLATE_MAX), &mut stop);
        log.keep_unsettled(suspects, &first, &outcomes);
        let recorded = record(&first, &outcomes, log);
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
        // Each chunk's outcome is recorded, message by message, even behind one that failed.
        failed |= !record(&chunk, &outcomes, log);
    }
    (!failed).then_some(last)
}

/// At least once, a pass sends at most this many messages alone (the rest waits for the next).
const ISOLATE_MAX: usize = 1000;

/// After Kafka refused whole record batches: sends the chunk in order, each of their messages
/// (`suspects`; every message if none is known) alone and those between them together, until
/// the pack row holding the first one refused on its own is done (or `max_alone` messages were
/// sent alone, or a stop was requested); what follows is `Bystander`, for the next pass. Each
/// suspect is then delivered or refused for good by itself, so one bad record never holds back
/// or drags down the others.
pub(super) fn send_isolated(
    producer: &Producer,
    chunk: &[Message],
    suspects: &HashSet<i64>,
    max_alone: Option<usize>,
    stop: &mut dyn FnMut() -> bool,
) -> Vec<Outcome> {
    let records = records_of(chunk);
    let suspect = |i: usize| suspects.is_empty() || suspects.contains(&chunk[i].id);
    let mut outcomes = Vec::with_capacity(chunk.len());
    let (mut alone, mut enough) = (0, false);
    let mut i = 0;
    while i < chunk.len() {
        if (enough && chunk[i].row != chunk[i - 1].row) || stop() {
            break;
        }
        if !suspect(i) {
            // The messages up to the next suspect (once enough, up to the end of the row).
            let end = (i..chunk.len())
                .find(|&j| suspect(j) || (enough && chunk[j].row != chunk[i].row))
                .unwrap_or(chunk.len());
            outcomes.extend(producer.deliver(&records[i..end], stop));
            i = end;
            continue;
        }
        // Everything before it has its report: it travels in a record batch of its own.
        let outcome = match producer.deliver(std::slice::from_ref(&records[i]), stop).pop() {
            Some(Outcome::BatchRefused(e)) => Outcome::Refused(e),
            Some(o) => o,
            None => Outcome::Retry("no delivery report".into()),
        };
        alone += 1;
        enough |= matches!(outcome, Outcome::Refused(_)) || max_alone.is_some_and(|max| alone >= max);
        outcomes.push(outcome);
        i += 1;
    }
    outcomes.resize(chunk.len(), Outcome::Bystander("sent after a refused record batch".into()));
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

/// Records the outcome of one batch, message by message: removes what Kafka acknowledged and
/// dead-letters what it refused, whatever happened to other topics' messages (a pack row keeps
/// only its messages to retry: `outbox::finish`), and reports what must be retried: the
/// messages Kafka did not take, and the later messages of their topics (`Log::held`). The messages of
/// a record batch Kafka refused as a whole are sent again one at a time (`Log::suspect`).
/// Returns false if some messages must be retried or the outcome could not be recorded.
pub(super) fn record(batch: &[Message], outcomes: &[Outcome], log: &mut Log) -> bool {
    let mut outcomes = outcomes.to_vec();
    log.give_up_on_stuck(gucs::dead_letter_after(), batch, &mut outcomes);
    log.suspect(batch, &outcomes);
    // A message to send again holds back its topic: the topic's later messages are sent again
    // after it, even if Kafka took them (consumers end with them in order, as a CDC consumer
    // needs). Other topics' acknowledged messages are recorded: one role's refused or failing
    // record never makes another topic's messages arrive twice.
    // (Nothing to look at in the usual pass: everything delivered, no topic held.)
    if !log.held.is_empty() || outcomes.iter().any(|o| *o != Outcome::Delivered) {
        for (m, o) in batch.iter().zip(outcomes.iter_mut()) {
            match o {
                Outcome::Delivered if log.held.contains(&m.topic) => {
                    let why = "sent again after an earlier message of its topic, to keep their order";
                    *o = Outcome::Bystander(why.into());
                }
                Outcome::Retry(_) | Outcome::BatchRefused(_) | Outcome::Bystander(_) => {
                    if !log.held.contains(&m.topic) {
                        log.held.insert(m.topic.clone());
                    }
                }
                Outcome::Delivered | Outcome::Refused(_) => {}
            }
        }
    }
    let outcomes = &outcomes[..];
    let mut done = Vec::with_capacity(batch.len());
    let mut refused = Vec::new();
    let mut retried = Vec::new();
    let mut partly = Vec::new();
    let mut retry: Option<&str> = None;
    let (mut delivered, mut waiting) = (0, 0);
    let mut csns = Vec::new();
    let mut per_topic = topic_stats::Chunk::default();
    let mut start = 0;
    while start < batch.len() {
        let (row, xid) = (batch[start].row, batch[start].xid);
        if csns.last() != Some(&batch[start].csn) {
            csns.push(batch[start].csn);
        }
        let end = start + batch[start..].iter().take_while(|m| m.row == row).count();
        let mut left = Vec::new();
        for (m, o) in batch[start..end].iter().zip(&outcomes[start..end]) {
            match o {
                Outcome::Delivered => {
                    per_topic.delivered(&m.topic, m.payload.as_ref().map_or(0, Vec::len));
                    delivered += 1;
                }
                Outcome::Refused(e) => {
                    per_topic.dead_lettered(&m.topic);
                    refused.push((m, e.clone()));
                }
                Outcome::Retry(e) | Outcome::BatchRefused(e) | Outcome::Bystander(e) => {
                    retry.get_or_insert(e.as_str());
                    left.push(m);
                }
            }
        }
        waiting += left.len();
        if left.is_empty() {
            done.push((row, xid));
        } else if left.len() == end - start {
            retried.push((row, xid));
        } else {
            partly.push(outcome::Partly { row, xid, count: (end - start) as i32, left });
        }
        start = end;
    }
    let recorded = BackgroundWorker::transaction(|| {
        let dead = outcome::finish(&done, &refused, &retried, &partly, &csns)?;
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
    // Without a retry, refusals are in kafka.dead_letter and the log: delivery itself works.
    let Some(e) = retry else { return true };
    let last = shared::STATE.share().last_error().unwrap_or_default();
    let detail =
        if last.is_empty() || last.starts_with(e) { String::new() } else { format!(" (last: {last})") };
    shared::STATE.exclusive().waited_at_least(waiting as i64);
    record_error(&format!("{e}{detail}"));
    false
}
