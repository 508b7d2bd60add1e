//! Recording what became of a chunk, in both delivery modes: its outcomes settle
//! ([`kafka_core::settle`]: what is done, what becomes a dead letter, what stays to be sent
//! again), the settlement is written in one transaction of the worker's own with the per-topic
//! figures, then counted in shared memory, and what must be retried is reported.
//!
//! What must stay true: a message Kafka acknowledged for good is recorded as delivered and
//! never sent again (a pack keeps only its messages to retry: [`outcome::finish`]); after an
//! aborted Kafka transaction only its dead letters leave the queue
//! ([`set_aside::refused_by_kafka`]); nothing is counted or logged as done unless its recording
//! committed.

use super::log::Log;
use super::process::{now, record_error, with_state};
use crate::error::KafkaError;
use crate::store::{outcome, set_aside, topic_stats};
use kafka_core::message::Message;
use kafka_core::producer::Outcome;
use kafka_core::settle::{settle, Ending, Settlement};
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;

/// Records the outcomes of `batch` (one per message, in order), which Kafka's side ended as
/// `ending`. The messages of a record batch Kafka refused as a whole are sent alone next time
/// ([`Log::suspect`]); with [`Ending::Kept`], a message to send again holds its topic back
/// ([`Log::held`]). Returns false if some messages must be retried or the outcome could not be
/// recorded.
pub(super) fn record(batch: &[Message], outcomes: Vec<Outcome>, ending: Ending, log: &mut Log) -> bool {
    log.suspect(batch, &outcomes);
    let settled = settle(batch, outcomes, &mut log.held, ending);
    let dead = match write(&settled, ending) {
        Ok(dead) => dead,
        Err(e) => {
            record_error(&e.to_string());
            return false;
        }
    };
    count(&settled, dead);
    report_retry(&settled, ending)
}

/// Writes the settlement in one transaction, with the per-topic figures; returns how many
/// messages became dead letters.
fn write(settled: &Settlement, ending: Ending) -> Result<i64, KafkaError> {
    let mut per_topic = topic_stats::Chunk::default();
    for m in &settled.delivered {
        per_topic.delivered(&m.topic, m.payload.as_ref().map_or(0, Vec::len));
    }
    for (m, _) in &settled.refused {
        per_topic.dead_lettered(&m.topic);
    }
    match ending {
        Ending::Kept => {
            let partly: Vec<outcome::Partly> = settled
                .partly
                .iter()
                .map(|p| outcome::Partly { row: p.row, xid: p.xid, count: p.count, left: p.left.clone() })
                .collect();
            BackgroundWorker::transaction(|| {
                let dead = outcome::finish(
                    &settled.done,
                    &settled.refused,
                    &settled.retried,
                    &partly,
                    &settled.csns,
                )?;
                per_topic.add()?;
                Ok(dead)
            })
        }
        Ending::Aborted if settled.refused.is_empty() => Ok(0),
        Ending::Aborted => {
            let ids: Vec<(i64, String)> = settled.refused.iter().map(|(m, e)| (m.id, e.clone())).collect();
            BackgroundWorker::transaction(|| {
                let moved = set_aside::refused_by_kafka(&ids)?;
                per_topic.add()?;
                Ok(moved)
            })
        }
    }
}

/// Counts what was recorded in shared memory, and logs each dead letter.
fn count(settled: &Settlement, dead: i64) {
    with_state(|s| {
        s.delivered += settled.delivered.len() as i64;
        s.dead_lettered += dead;
        if !settled.delivered.is_empty() {
            s.last_delivery_at = now();
        }
    });
    for (m, e) in &settled.refused {
        warning!("pg_kafka: message {} moved to kafka.dead_letter: {e}", m.id);
    }
}

/// Reports what must be sent again as the current failure; true if nothing must. (Without a
/// retry, refusals are in `kafka.dead_letter` and the log: delivery itself works.)
fn report_retry(settled: &Settlement, ending: Ending) -> bool {
    let Some(e) = &settled.retry else { return true };
    let detail = match ending {
        Ending::Kept => {
            let last = with_state(|s| s.last_error()).flatten().unwrap_or_default();
            if last.is_empty() || last.starts_with(e.as_str()) {
                String::new()
            } else {
                format!(" (last: {last})")
            }
        }
        Ending::Aborted => " (the Kafka transaction was aborted; it is sent again)".to_owned(),
    };
    with_state(|s| s.waited_at_least(settled.waiting as i64));
    record_error(&format!("{e}{detail}"));
    false
}
