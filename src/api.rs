//! The SQL functions of pg_kafka. Each one validates its arguments and hands over to the module
//! that owns the work; no SQL strings and no Kafka calls here.

use crate::error::{check_topic, KafkaError};
use crate::{gucs, pending, shared};
use pgrx::prelude::*;

/// Queues `message` for `topic`. It reaches Kafka if and only if the calling transaction commits.
/// A NULL message is a record with a null value (a tombstone). Returns true once queued.
#[pg_extern(volatile, parallel_unsafe)]
fn produce(topic: Option<&str>, message: Option<&str>) -> bool {
    let topic = check_topic(topic).unwrap_or_else(|e| e.raise());
    ensure_deliverable();
    pending::push(topic, None, message.map(|m| m.as_bytes().to_vec()));
    true
}

/// Makes the worker drop its Kafka producer and re-read `kafka.broker`. Returns whether a worker
/// is running to do so.
#[pg_extern(volatile, parallel_unsafe)]
fn close() -> bool {
    if !shared::preloaded() {
        KafkaError::NotPreloaded.raise();
    }
    shared::request_close()
}

/// The worker's state from shared memory; `kafka.status` presents it with the backlog.
#[pg_extern(volatile, parallel_safe)]
#[allow(clippy::type_complexity)]
fn worker_state() -> TableIterator<
    'static,
    (
        name!(running, bool),
        name!(pid, Option<i32>),
        name!(started_at, Option<TimestampWithTimeZone>),
        name!(delivered, i64),
        name!(dead_lettered, i64),
        name!(last_delivery_at, Option<TimestampWithTimeZone>),
        name!(last_error, Option<String>),
        name!(last_error_at, Option<TimestampWithTimeZone>),
    ),
> {
    if !shared::preloaded() {
        return TableIterator::once((false, None, None, 0, 0, None, None, None));
    }
    let s = *shared::STATE.share();
    let ts = |t: i64| {
        (t != 0)
            .then(|| unsafe { TimestampWithTimeZone::from_datum(pg_sys::Datum::from(t), false) })
            .flatten()
    };
    TableIterator::once((
        s.pid != 0,
        (s.pid != 0).then_some(s.pid),
        ts(s.started_at),
        s.delivered,
        s.dead_lettered,
        ts(s.last_delivery_at),
        s.last_error(),
        ts(s.last_error_at),
    ))
}

/// Trigger on `kafka.broker`: the worker picks up the new brokers when the change commits.
#[pg_trigger]
fn broker_changed<'a>(
    _trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, PgHeapTupleError> {
    pending::wake_at_commit();
    Ok(None)
}

/// Refuses to queue a message that no worker would ever deliver.
fn ensure_deliverable() {
    if !shared::preloaded() {
        KafkaError::NotPreloaded.raise();
    }
    let served = gucs::database();
    let current = current_database();
    if served != current {
        KafkaError::WrongDatabase { current, served }.raise();
    }
}

fn current_database() -> String {
    thread_local! {
        static NAME: String = unsafe {
            let p = pg_sys::get_database_name(pg_sys::MyDatabaseId);
            std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
        };
    }
    NAME.with(|n| n.clone())
}
