//! Delivery of chunks at least once: sending them with librdkafka, several in flight, and
//! recording each one's outcome in order ([`super::record`]: acknowledged messages removed,
//! refused ones dead-lettered, the rest left for the next pass). [`super::exactly_once`] wraps
//! the same pieces in a Kafka transaction.

use super::immediate;
use super::log::Log;
use super::process::{activity, record_error, shutdown_requested};
use super::record::record;
use super::wait::SMALL_BATCH;
use crate::{gucs, shared};
use kafka_core::message::Message;
use kafka_core::producer::{Outcome, Producer, Record};
use kafka_core::settle::Ending;
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
    let mut stop = until_stopped(producer, producer, close_requests);
    activity(&format!("delivering {} messages", first.len()));
    if std::mem::take(&mut log.isolate) {
        let suspects = std::mem::take(&mut log.suspects);
        let outcomes = send_isolated(producer, &first, &suspects, Some(ISOLATE_MAX), &mut stop);
        log.keep_unsettled(suspects, &first, &outcomes);
        let recorded = settle(&first, outcomes, log);
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
        failed |= !settle(&chunk, outcomes, log);
    }
    (!failed).then_some(last)
}

/// At least once, a pass sends at most this many messages alone (the rest waits for the next).
const ISOLATE_MAX: usize = 1000;

/// After Kafka refused whole record batches: sends the chunk in order, each of their messages
/// (`suspects`; every message if none is known) alone and those between them together, until
/// the pack row holding the first one refused on its own is done (or `max_alone` messages were
/// sent alone, or a stop was requested); what follows is [`Outcome::Bystander`], for the next pass. Each
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

/// The records librdkafka sends for `batch`.
pub(super) fn records_of(batch: &[Message]) -> Vec<Record<'_>> {
    batch.iter().map(Record::from).collect()
}

/// Records a chunk's outcomes at least once, after giving up on the messages that keep failing
/// while others pass (`kafka.dead_letter_after`: [`Log::give_up_on_stuck`]).
fn settle(chunk: &[Message], mut outcomes: Vec<Outcome>, log: &mut Log) -> bool {
    log.give_up_on_stuck(gucs::dead_letter_after(), chunk, &mut outcomes);
    record(chunk, outcomes, Ending::Kept, log)
}

/// What a send checks at each poll: it serves immediate sends with `serving` (so they never
/// wait behind a batch), shows what librdkafka says of `producer` (refused connection, failed
/// authentication) while it waits, and stops at a shutdown or at a close request made since
/// `close_requests`.
pub(super) fn until_stopped<'a>(
    producer: &'a Producer,
    serving: &'a Producer,
    close_requests: u64,
) -> impl FnMut() -> bool + 'a {
    move || {
        immediate::serve(Some(serving), "");
        if let Some(event) = producer.take_events().pop() {
            record_error(&event);
        }
        shutdown_requested() || shared::close_requests() != close_requests
    }
}
