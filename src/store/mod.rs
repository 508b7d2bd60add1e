//! pg_kafka's tables and the statements on them, by who runs them. The queue is `kafka.outbox`
//! (packs of messages waiting for Kafka), `kafka.outbox_commit` (the commit order of their
//! transactions) and `kafka.dead_letter` (messages Kafka refused for good).
//!
//! - Operators and tests: `waiting` (`kafka.waiting()`: the waiting messages in commit order).
//! - `owner`: where the tables are (the `Store` handle) and acting as their owner; `rights`: the
//!   rights SQL runs with (the `AsRole` guard) and the schema it trusts.
//! - The sessions: `append` (pack ids, packs and the commit order entry, written without SQL),
//!   `home` (`kafka.home`: claimed by the worker, `kafka.release()`), `size` (the queue's disk,
//!   for `kafka.max_backlog`), `dead_letter` (requeue and purge; also where the others' dead
//!   letters are recorded) and `set_aside` (`kafka.dead_letter_waiting()`, also the worker's
//!   refused messages in exactly-once mode).
//! - The worker: `read` (rounds of the outbox in commit order, brokers and producer settings),
//!   `outcome` (what a chunk's delivery did to the outbox), `topic_stats` (per-topic figures),
//!   `statistics` (librdkafka's) and `kept` (its statements kept prepared).
//!
//! Other statements on pg_kafka's own tables live with their feature: [`backend::topics`](crate::backend::topics) (topic
//! rules), [`backend::guard`](crate::backend::guard) (what waits, before a DROP) and [`backend::capture`](crate::backend::capture) (captures and
//! backfills). Used by the backend side and the worker alike; uses neither.

pub mod append;
pub mod dead_letter;
pub mod home;
pub mod kept;
pub mod outcome;
pub mod owner;
pub mod read;
pub mod rights;
pub mod set_aside;
pub mod size;
pub mod statistics;
pub mod topic_stats;
pub mod waiting;
pub mod wal;

use crate::error::KafkaError;
use kafka_core::commit_marks::Commit;

/// The error of a statement on pg_kafka's tables: `could not <what>: <SPI's error>`.
fn could_not(what: &str, e: pgrx::spi::Error) -> KafkaError {
    KafkaError::Internal(format!("could not {what}: {e}"))
}

/// The messages of outbox row `id` (a pack, `payload`), in order, their commit marks filled
/// with the row's `commit_marks` ([`kafka_core::commit_marks`]); a row that does not unpack is
/// an error, never skipped.
fn unpack_row(
    id: i64,
    payload: &[u8],
    commit_marks: Option<Vec<i64>>,
) -> Result<Vec<kafka_core::message::Message>, KafkaError> {
    let malformed = || KafkaError::Internal(format!("outbox row {id} is malformed"));
    let commit = match commit_marks {
        Some(column) => Some(Commit::from_column(&column).ok_or_else(malformed)?),
        None => None,
    };
    kafka_core::commit_marks::unpack(id, payload, commit).ok_or_else(malformed)
}
