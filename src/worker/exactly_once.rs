//! Exactly-once delivery (`kafka.delivery = exactly_once`), the worker's side.
//!
//! Each pass's chunks travel in one Kafka transaction that ends with a position record listing
//! their outbox rows ([`kafka_core::position`]). The transaction is committed only if Kafka took
//! every message; it is then recorded in PostgreSQL ([`super::record`]), synchronously, before
//! the next one begins — so at any moment at most one committed Kafka transaction is not
//! recorded, and it is the one the last committed position record names. A new producer (at
//! start, and after any failure whose outcome is unknown) first settles what its predecessor left
//! open ([`Producer::init_transactions`]: Kafka completes or aborts it, and fences the old
//! producer), then reads that last position back and removes its rows from the outbox
//! ([`connect`]): nothing Kafka committed is sent again, nothing it aborted is lost.

use super::deliver::{records_of, send_isolated, transactions, until_stopped, IN_FLIGHT};
use super::log::Log;
use super::process::{activity, record_error};
use super::record::record;
use super::wait::SMALL_BATCH;
use crate::gucs;
use crate::store::outcome;
use kafka_core::message::Message;
use kafka_core::position;
use kafka_core::producer::ClientConfig;
use kafka_core::producer::{Outcome, Producer, Record};
use kafka_core::settle::Ending;
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
use std::time::Duration;

/// How long the worker waits for Kafka's transaction coordinator (init, commit, abort) and for
/// the position topic.
const TXN_TIMEOUT: Duration = Duration::from_secs(10);

/// A transactional producer's identity, and the producer of immediate sends.
pub(super) struct Txn {
    /// The transactional id, which is also the key of this database's position records.
    id: String,
    topic: String,
    /// `kafka.autonomous_publish()` answers its caller at once and cannot wait for a batch's
    /// transaction: a plain idempotent producer sends it (visible to read_committed consumers
    /// at once, like any non-transactional record).
    pub immediate: Producer,
}

/// What became of a pass.
pub(super) enum Sent {
    /// Committed and recorded: this many messages of this many transactions.
    Done(usize, usize),
    /// Kafka refused some messages for good: they are dead letters now; read again at once.
    Again,
    /// Kafka did not take everything; the transaction was aborted: retry after a back-off.
    Retry,
    /// The outcome is unknown (a commit or abort failed, or the recording did): a new producer
    /// must settle it and reconcile before anything is sent.
    Reconnect,
}

/// kafka.config settings that would break exactly-once delivery.
fn check_settings(settings: &[(String, String)]) -> Result<(), String> {
    for (name, value) in settings {
        let needed = match name.as_str() {
            "enable.idempotence" if value != "true" => "true",
            "acks" | "request.required.acks" if !matches!(value.as_str(), "all" | "-1") => "all",
            _ => continue,
        };
        return Err(format!(
            "kafka.delivery = exactly_once needs {name} = {needed}, and kafka.config sets {name} = {value}: \
             DELETE FROM kafka.config WHERE name = '{name}'"
        ));
    }
    Ok(())
}

/// Makes the transactional producer for `config` (and the producer of immediate sends), settles
/// what an earlier producer of this database left open, and removes from the outbox the rows of
/// the last transaction Kafka committed. The caller must read the outbox again afterwards.
pub(super) fn connect(
    config: &ClientConfig,
    settings: &[(String, String)],
) -> Result<(Producer, Txn), String> {
    check_settings(settings)?;
    let topic = gucs::position_topic();
    if topic.is_empty() {
        return Err("kafka.position_topic is empty".into());
    }
    // SAFETY: plain reads of values fixed for the life of the server and of this worker.
    let (system, database) = unsafe { (pg_sys::GetSystemIdentifier(), pg_sys::MyDatabaseId.to_u32()) };
    let id = position::transactional_id(system, database);
    position::ensure_topic(config, &topic, TXN_TIMEOUT)
        .map_err(|e| format!("could not prepare the position topic {topic}: {e}"))?;
    let mut transactional = config.clone();
    transactional.set("transactional.id", &id);
    let producer = Producer::new(&transactional)?;
    producer.init_transactions(TXN_TIMEOUT).map_err(|e| {
        format!(
            "could not start Kafka transactions ({e}): the brokers must be reachable and host Kafka's \
             transaction log (transaction.state.log.replication.factor no larger than the number of \
             brokers, transaction.state.log.min.isr of them in sync)"
        )
    })?;
    let rows = position::last_position(config, &topic, &id, TXN_TIMEOUT)?;
    if let Some(rows) = rows {
        let removed = BackgroundWorker::transaction(|| outcome::forget(&rows)).map_err(|e| e.to_string())?;
        if removed > 0 {
            log!(
                "pg_kafka: {removed} outbox rows were in Kafka already (its last transaction committed \
                 before the worker recorded it): removed, not sent again"
            );
        }
    }
    let immediate = Producer::new(config)?;
    Ok((producer, Txn { id, topic, immediate }))
}

/// Sends `first` (and, behind a large chunk, the chunks after it) in one Kafka transaction.
pub(super) fn stream(
    producer: &Producer,
    txn: &Txn,
    first: Vec<Message>,
    close_requests: u64,
    log: &mut Log,
) -> Sent {
    let mut stop = until_stopped(producer, &txn.immediate, close_requests);
    activity(&format!("delivering {} messages in a Kafka transaction", first.len()));
    if let Err(e) = producer.begin() {
        record_error(&format!("could not begin a Kafka transaction: {e}"));
        return Sent::Reconnect;
    }
    let (batch, mut outcomes, read_failed) = if std::mem::take(&mut log.isolate) {
        // No limit on the messages sent alone: nothing of an aborted pass is recorded, so a
        // pass that stopped short of the bad record would never reach it.
        let suspects = std::mem::take(&mut log.suspects);
        let outcomes = send_isolated(producer, &first, &suspects, None, &mut stop);
        log.keep_unsettled(suspects, &first, &outcomes);
        (first, outcomes, false)
    } else {
        send_chunks(producer, first, log, &mut stop)
    };
    log.give_up_on_stuck(gucs::dead_letter_after(), &batch, &mut outcomes);
    if outcomes.iter().any(|o| *o != Outcome::Delivered) {
        // Kafka did not take everything: nothing of this transaction becomes visible to a
        // read_committed consumer, acknowledged or not.
        if let Some(failed) = abort(producer) {
            return failed;
        }
        // What Kafka refused for good becomes dead letters, the messages of a record batch it
        // refused as a whole are sent alone next time, and the rest is sent again in a new
        // transaction (at once if nothing failed for now).
        return if record(&batch, outcomes, Ending::Aborted, log) { Sent::Again } else { Sent::Retry };
    }
    if let Err(e) = commit(producer, txn, &batch, &mut stop) {
        record_error(&e);
        return abort(producer).unwrap_or(Sent::Retry);
    }
    // Recorded synchronously (see `process::apply_delivery_mode`) before anything else.
    if !record(&batch, outcomes, Ending::Kept, log) {
        return Sent::Reconnect;
    }
    if read_failed {
        log.restart();
    }
    Sent::Done(batch.len(), transactions(&batch))
}

/// Reads and sends up to [`IN_FLIGHT`] chunks (the next ones only behind a large one); returns
/// them with their outcomes, and whether reading failed.
fn send_chunks(
    producer: &Producer,
    first: Vec<Message>,
    log: &mut Log,
    stop: &mut dyn FnMut() -> bool,
) -> (Vec<Message>, Vec<Outcome>, bool) {
    let mut more = first.len() >= SMALL_BATCH;
    let sent = producer.send_batch(&records_of(&first), stop);
    let mut in_flight = vec![(first, sent)];
    let mut read_failed = false;
    while more && in_flight.len() < IN_FLIGHT {
        let next = log.read_ahead();
        match next {
            Ok(next) if !next.is_empty() => {
                more = next.len() >= SMALL_BATCH;
                let sent = producer.send_batch(&records_of(&next), stop);
                in_flight.push((next, sent));
            }
            Ok(_) => break,
            Err(e) => {
                record_error(&e.to_string());
                read_failed = true;
                break;
            }
        }
    }
    let (mut batch, mut outcomes) = (Vec::new(), Vec::new());
    for (chunk, sent) in in_flight {
        outcomes.extend(producer.wait(sent, stop));
        batch.extend(chunk);
    }
    (batch, outcomes, read_failed)
}

/// Writes the position record (the rows of `batch`) and commits the Kafka transaction.
fn commit(
    producer: &Producer,
    txn: &Txn,
    batch: &[Message],
    stop: &mut dyn FnMut() -> bool,
) -> Result<(), String> {
    let rows: Vec<(i64, i64)> = batch.iter().map(|m| (m.xid, m.row)).collect();
    let payload = position::encode(&rows);
    let marker = Record {
        topic: &txn.topic,
        key: Some(txn.id.as_bytes()),
        payload: Some(&payload),
        partition: Some(0),
        ..Default::default()
    };
    match producer.deliver(&[marker], stop).pop() {
        Some(Outcome::Delivered) => {}
        Some(Outcome::Retry(e) | Outcome::Refused(e) | Outcome::BatchRefused(e) | Outcome::Bystander(e)) => {
            return Err(format!("could not write the position record to {}: {e}", txn.topic))
        }
        None => return Err("no report for the position record".into()),
    }
    producer.commit(TXN_TIMEOUT).map_err(|e| format!("could not commit the Kafka transaction: {e}"))
}

/// Aborts the open transaction; Some(Reconnect) if even that failed.
fn abort(producer: &Producer) -> Option<Sent> {
    match producer.abort(TXN_TIMEOUT) {
        Ok(()) => None,
        Err(e) => {
            record_error(&format!("could not abort the Kafka transaction: {e}"));
            Some(Sent::Reconnect)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(name: &str, value: &str) -> (String, String) {
        (name.into(), value.into())
    }

    #[test]
    fn settings_that_break_transactions_are_named() {
        assert!(
            check_settings(&[s("linger.ms", "5"), s("acks", "all"), s("enable.idempotence", "true")]).is_ok()
        );
        assert!(check_settings(&[s("acks", "-1")]).is_ok());
        let e = check_settings(&[s("acks", "1")]).unwrap_err();
        assert!(e.contains("acks = all") && e.contains("DELETE FROM kafka.config"), "{e}");
        assert!(check_settings(&[s("enable.idempotence", "false")])
            .unwrap_err()
            .contains("enable.idempotence"));
    }
}
