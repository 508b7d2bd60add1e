//! The SQL functions of pg_kafka. Each one validates its arguments and hands over to the module
//! that owns the work; no SQL strings and no Kafka calls here.

use crate::backend::cluster::{current_database, served_here, timestamp};
use crate::backend::immediate::{self, Failure};
use crate::backend::input::{check_key, check_partition, kafka_timestamp_ms, parse_headers};
use crate::error::{KafkaError, SqlResult};
use crate::store::{dead_letter, home, read};
use crate::{backend::pending, gucs, settings, shared};
use kafka_core::message::Message;
use kafka_core::pack::Parts;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::JsonB;
use std::time::Duration;

/// Queues `message` for `topic`. It reaches Kafka if and only if the calling transaction commits.
/// A NULL message is a record with a null value (a tombstone). Returns true once queued.
#[pg_extern(volatile, parallel_unsafe)]
fn produce(topic: Option<&str>, message: Option<&str>) -> SqlResult<bool> {
    let topic = crate::backend::input::check_topic(topic)?;
    ensure_deliverable()?;
    crate::backend::topics::check_writable(topic, crate::backend::topics::Writer::Producer)?;
    pending::push(&Parts { topic, payload: message.map(str::as_bytes), ..Default::default() })?;
    Ok(true)
}

/// Queues a full Kafka record (text value); sent if and only if the transaction commits.
/// Returns the message's id in `kafka.outbox`.
#[pg_extern(volatile, parallel_unsafe, name = "publish")]
fn publish_text(
    topic: Option<&str>,
    value: Option<&str>,
    key: default!(Option<&str>, "NULL"),
    key_bytes: default!(Option<&[u8]>, "NULL"),
    headers: default!(Option<JsonB>, "NULL"),
    partition: default!(Option<i32>, "NULL"),
    ts: default!(Option<TimestampWithTimeZone>, "NULL"),
) -> SqlResult<i64> {
    let value = value.map(|v| v.as_bytes().to_vec());
    Ok(pending::push(&record(topic, value, key, key_bytes, headers, partition, ts)?.parts())?)
}

/// Queues a full Kafka record whose value is bytes, exactly as given.
#[pg_extern(volatile, parallel_unsafe, name = "publish")]
fn publish_bytea(
    topic: Option<&str>,
    value: Option<&[u8]>,
    key: default!(Option<&str>, "NULL"),
    key_bytes: default!(Option<&[u8]>, "NULL"),
    headers: default!(Option<JsonB>, "NULL"),
    partition: default!(Option<i32>, "NULL"),
    ts: default!(Option<TimestampWithTimeZone>, "NULL"),
) -> SqlResult<i64> {
    let msg = record(topic, value.map(<[u8]>::to_vec), key, key_bytes, headers, partition, ts)?;
    Ok(pending::push(&msg.parts())?)
}

/// Sends a record now, outside the transaction (it stays sent if the caller rolls back), and
/// waits up to `timeout` for Kafka's acknowledgement. Returns where Kafka stored it.
#[pg_extern(volatile, parallel_unsafe, name = "autonomous_publish")]
#[allow(clippy::too_many_arguments)]
fn autonomous_publish_text(
    topic: Option<&str>,
    value: Option<&str>,
    key: default!(Option<&str>, "NULL"),
    key_bytes: default!(Option<&[u8]>, "NULL"),
    headers: default!(Option<JsonB>, "NULL"),
    partition: default!(Option<i32>, "NULL"),
    ts: default!(Option<TimestampWithTimeZone>, "NULL"),
    timeout: default!(Option<Interval>, "'10 seconds'"),
) -> Result<TableIterator<'static, (name!(partition, i32), name!(offset, i64))>, ErrorReport> {
    let value = value.map(|v| v.as_bytes().to_vec());
    send_now(record(topic, value, key, key_bytes, headers, partition, ts)?, timeout)
}

/// Sends a record whose value is bytes now, outside the transaction; see the text variant.
#[pg_extern(volatile, parallel_unsafe, name = "autonomous_publish")]
#[allow(clippy::too_many_arguments)]
fn autonomous_publish_bytea(
    topic: Option<&str>,
    value: Option<&[u8]>,
    key: default!(Option<&str>, "NULL"),
    key_bytes: default!(Option<&[u8]>, "NULL"),
    headers: default!(Option<JsonB>, "NULL"),
    partition: default!(Option<i32>, "NULL"),
    ts: default!(Option<TimestampWithTimeZone>, "NULL"),
    timeout: default!(Option<Interval>, "'10 seconds'"),
) -> Result<TableIterator<'static, (name!(partition, i32), name!(offset, i64))>, ErrorReport> {
    send_now(record(topic, value.map(<[u8]>::to_vec), key, key_bytes, headers, partition, ts)?, timeout)
}

fn send_now(
    msg: Message,
    timeout: Option<Interval>,
) -> Result<TableIterator<'static, (name!(partition, i32), name!(offset, i64))>, ErrorReport> {
    let wait = match timeout.map(|t| t.as_micros()) {
        None => Duration::from_secs(10),
        Some(us) if us > 0 => Duration::from_micros(us as u64),
        Some(_) => return Err(KafkaError::BadTimeout.into()),
    };
    let sent = immediate::send(&msg, wait).map_err(|f| match f {
        Failure::NoSlot => KafkaError::ImmediateBusy,
        Failure::RoleBusy => KafkaError::ImmediateRoleBusy,
        Failure::Kafka(why) => KafkaError::ImmediateRefused(why),
        Failure::TimedOut => KafkaError::ImmediateTimeout(format!("{wait:?}")),
    })?;
    Ok(TableIterator::once(sent))
}

/// Moves dead letters back to the outbox (all, or those with the given ids and/or topic), in id
/// order; they are sent again, with new ids, once this transaction commits. Returns how many.
#[pg_extern(volatile, parallel_unsafe)]
fn requeue_dead_letters(
    ids: default!(Option<Vec<i64>>, "NULL"),
    topic: default!(Option<&str>, "NULL"),
) -> SqlResult<i64> {
    let letters = dead_letter::take(ids, topic)?;
    for m in &letters {
        pending::push(&m.parts())?;
    }
    // A fix (new partitions, a new ACL) is often what made them deliverable: fresh metadata.
    pending::reload_at_commit();
    Ok(letters.len() as i64)
}

/// Deletes dead letters (all, or those with the given ids and/or topic). Returns how many.
#[pg_extern(volatile, parallel_unsafe)]
fn purge_dead_letters(
    ids: default!(Option<Vec<i64>>, "NULL"),
    topic: default!(Option<&str>, "NULL"),
) -> SqlResult<i64> {
    Ok(dead_letter::purge(ids, topic)?)
}

/// Moves the waiting messages with the given ids to `kafka.dead_letter` with `reason`; returns
/// how many it moved (ids that are not waiting, e.g. delivered already, are skipped). A message
/// the worker is sending at this very moment may still reach Kafka.
#[pg_extern(volatile, parallel_unsafe)]
fn dead_letter_waiting(
    ids: Vec<i64>,
    reason: default!(&str, "'moved by an administrator'"),
) -> SqlResult<i64> {
    // SAFETY: an SQL function inside a transaction: GetUserId is the session's current role, and
    // with noerr false GetUserNameFromId raises instead of returning NULL, so the pointer is a
    // palloc'd NUL-terminated name, copied at once.
    let who = unsafe { std::ffi::CStr::from_ptr(pg_sys::GetUserNameFromId(pg_sys::GetUserId(), false)) }
        .to_string_lossy()
        .into_owned();
    Ok(crate::store::set_aside::move_out(&ids, &format!("{reason} (kafka.dead_letter_waiting by {who})"))?)
}

/// The messages of committed transactions that wait for Kafka, in the order the worker sends
/// them (commit order, then id): up to `max_rows`, of `topic` only when given. `value` and `key`
/// are the bytes as queued (`convert_from(value, 'UTF8')` shows text). Needs SELECT on
/// `kafka.outbox` (kafka_admin has it).
#[pg_extern(stable, parallel_safe)]
#[allow(clippy::type_complexity)]
fn waiting(
    topic: default!(Option<&str>, "NULL"),
    max_rows: default!(i64, 1000),
) -> Result<
    TableIterator<
        'static,
        (
            name!(id, i64),
            name!(commit_order, i64),
            name!(topic, String),
            name!(key, Option<Vec<u8>>),
            name!(value, Option<Vec<u8>>),
            name!(headers, Option<JsonB>),
            name!(partition, Option<i32>),
            name!(timestamp, Option<TimestampWithTimeZone>),
        ),
    >,
    ErrorReport,
> {
    if max_rows < 0 {
        return Err(KafkaError::BadMaxRows(max_rows).into());
    }
    let found = crate::store::waiting::list(topic, max_rows)?;
    // SAFETY: a timestamptz Datum is by value: microseconds since 2000-01-01, computed here from
    // a Kafka timestamp (milliseconds since 1970, checked non-negative when it was queued).
    let ts = |ms: i64| unsafe {
        TimestampWithTimeZone::from_datum(pg_sys::Datum::from(ms * 1000 - 946_684_800_000_000), false)
    };
    Ok(TableIterator::new(found.into_iter().map(move |w| {
        let m = w.message;
        let headers = m.headers.as_ref().map(|h| JsonB(dead_letter::headers_json(h)));
        (m.id, w.commit_order, m.topic, m.key, m.payload, headers, m.partition, m.timestamp_ms.and_then(ts))
    })))
}

/// Checks every argument of publish() and builds the message.
pub(crate) fn record(
    topic: Option<&str>,
    value: Option<Vec<u8>>,
    key: Option<&str>,
    key_bytes: Option<&[u8]>,
    headers: Option<JsonB>,
    partition: Option<i32>,
    ts: Option<TimestampWithTimeZone>,
) -> Result<Message, KafkaError> {
    let check = || -> Result<Message, KafkaError> {
        let topic = crate::backend::input::check_topic(topic)?.to_owned();
        let key = check_key(key.map(str::as_bytes), key_bytes, value.is_some())?.map(<[u8]>::to_vec);
        let headers = headers.map(|h| parse_headers(&h.0)).transpose()?;
        let partition = check_partition(partition)?;
        let timestamp_ms = ts
            .map(|t| {
                let micros: i64 = t.into_datum().map_or(0, |d| d.value() as i64);
                kafka_timestamp_ms(micros, || t.to_string())
            })
            .transpose()?;
        Ok(Message { topic, key, payload: value, headers, partition, timestamp_ms, ..Default::default() })
    };
    let msg = check()?;
    ensure_deliverable()?;
    crate::backend::topics::check_writable(&msg.topic, crate::backend::topics::Writer::Producer)?;
    Ok(msg)
}

/// Lets a restored copy of a database deliver the messages it was restored with (the worker
/// holds them so that a copy does not send its original's messages again). Returns true.
/// Refused (55000) in the database that is its queue's home: there it would renumber messages the
/// worker is sending ([`home::release`]).
#[pg_extern(volatile, parallel_unsafe)]
fn release() -> SqlResult<bool> {
    ensure_deliverable()?;
    home::release()?;
    pending::adopt_packs()?;
    pending::reload_at_commit();
    Ok(true)
}

/// Makes the worker drop its Kafka producer and re-read `kafka.broker`. Returns whether a worker
/// is running to do so.
#[pg_extern(volatile, parallel_unsafe)]
fn close() -> SqlResult<bool> {
    ensure_deliverable()?;
    Ok(shared::request_close())
}

/// The worker's state from shared memory; `kafka.status` presents it with the backlog. In a
/// database the worker does not serve, it says so instead of showing another database's state.
#[pg_extern(volatile, parallel_safe, schema = "kafka_internal")]
#[allow(clippy::type_complexity)]
fn worker_state() -> TableIterator<
    'static,
    (
        name!(running, bool),
        name!(pid, Option<i32>),
        name!(started_at, Option<TimestampWithTimeZone>),
        name!(delivery, Option<&'static str>),
        name!(delivered, i64),
        name!(dead_lettered, i64),
        name!(last_delivery_at, Option<TimestampWithTimeZone>),
        name!(last_error, Option<String>),
        name!(last_error_at, Option<TimestampWithTimeZone>),
        name!(failing_since, Option<TimestampWithTimeZone>),
        name!(previous_error, Option<String>),
        name!(previous_error_at, Option<TimestampWithTimeZone>),
    ),
> {
    let idle = |why: Option<String>| {
        TableIterator::once((false, None, None, None, 0, 0, None, why, None, None, None, None))
    };
    if !shared::preloaded() {
        return idle(None);
    }
    if !served_here() {
        let why = KafkaError::WrongDatabase { current: current_database(), served: gucs::database() };
        return idle(Some(format!("{why}: this database's messages are not delivered")));
    }
    let Some(s) = shared::here().map(|i| shared::STATE.share()[i]) else {
        return idle(Some("the pg_kafka launcher has not started this database's worker yet".into()));
    };
    let ts = timestamp;
    TableIterator::once((
        s.pid != 0,
        (s.pid != 0).then_some(s.pid),
        ts(s.started_at),
        (s.pid != 0).then_some(if s.exactly_once { "exactly_once" } else { "at_least_once" }),
        s.delivered,
        s.dead_lettered,
        ts(s.last_delivery_at),
        s.last_error().or_else(|| s.note()),
        ts(s.last_error_at),
        ts(s.failing_since),
        s.previous_error(),
        ts(s.previous_error_at),
    ))
}

/// The worker's recent distinct failures, newest first (kept across worker restarts, not server
/// restarts); `kafka.recent_errors` shows them. Nothing in a database the worker does not serve.
#[pg_extern(volatile, parallel_safe, schema = "kafka_internal")]
fn worker_errors() -> TableIterator<
    'static,
    (
        name!(first_at, Option<TimestampWithTimeZone>),
        name!(last_at, Option<TimestampWithTimeZone>),
        name!(attempts, i64),
        name!(error, String),
    ),
> {
    let Some(i) = shared::here().filter(|_| served_here()) else {
        return TableIterator::new(Vec::new());
    };
    let recent = shared::STATE.share()[i].recent_errors();
    let ts = timestamp;
    TableIterator::new(recent.into_iter().map(move |e| (ts(e.first_at), ts(e.last_at), e.count, e.text())))
}

/// Raises unless messages queued in this database would be delivered (pg_kafka preloaded, and
/// this the database the worker serves). Used by `kafka.capture()` and `capture_outbox()`.
#[pg_extern(stable, parallel_safe, schema = "kafka_internal")]
fn check_served() -> SqlResult<()> {
    Ok(ensure_deliverable()?)
}

/// Whether a setting's value is a secret (only superusers read it back; `kafka.settings` masks it).
#[pg_extern(immutable, parallel_safe, schema = "kafka_internal")]
fn is_secret(name: &str) -> bool {
    settings::is_secret(name)
}

/// Raises the error produce() would raise for this topic name; used by kafka.capture().
#[pg_extern(immutable, parallel_safe, schema = "kafka_internal")]
fn check_topic(topic: Option<&str>) -> SqlResult<()> {
    crate::backend::input::check_topic(topic)?;
    Ok(())
}

/// Raises unless the current role may capture a table into `topic` (the rule of
/// [`backend::topics`](crate::backend::topics): a granted topic once `kafka.topic_grants` has rows, never the worker's own);
/// used when a capture is recorded.
#[pg_extern(stable, parallel_safe, schema = "kafka_internal")]
fn check_capture_topic(topic: &str) -> SqlResult<()> {
    crate::backend::topics::check_writable(topic, crate::backend::topics::Writer::Capture)?;
    Ok(())
}

/// Trigger on `kafka.broker` and `kafka.config`: when the change commits, the worker stops what
/// it is waiting for and makes a new producer from the new brokers and settings.
#[pg_trigger(sql = false)] // declared in sql/tables.sql, in schema kafka_internal
fn broker_changed<'a>(
    _trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, PgHeapTupleError> {
    if served_here() {
        pending::reload_at_commit(); // another database's tables are not the worker's
    }
    Ok(None)
}

/// Trigger on `kafka.config`: each row is checked by librdkafka before it is written, and a role
/// other than a superuser may write, rename or remove only settings of the allow-list (so it
/// can neither set a dangerous one nor move a secret's value into a readable row).
#[pg_trigger(sql = false)] // declared in sql/tables.sql, in schema kafka_internal
fn config_check<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, PgHeapTupleError> {
    Ok(check_config_row(trigger).unwrap_or_else(|e| e.raise()))
}

fn check_config_row<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, KafkaError> {
    // SAFETY: superuser() looks the current role up in the catalog cache; a trigger runs inside a
    // transaction, so the cache is valid. Errors are raised as Rust panics by pgrx's guard.
    let superuser = unsafe { pg_sys::superuser() };
    // A row that cannot be read is refused, not let through (fail closed).
    fn unreadable(e: impl std::fmt::Display) -> KafkaError {
        KafkaError::Internal(format!("could not read a kafka.config row: {e}"))
    }
    let name_of =
        |t: &PgHeapTuple<'_, AllocatedByPostgres>| t.get_by_name::<String>("name").map_err(unreadable);
    let (old, new) = (trigger.old(), trigger.new());
    let (old_name, new_name) =
        (old.as_ref().map(name_of).transpose()?.flatten(), new.as_ref().map(name_of).transpose()?.flatten());
    // Before any check can fail, so that its report hides the statement: a secret row, and any
    // row a superuser writes (a later row of the same statement may hold a secret, and an earlier
    // invalid row would otherwise report the statement before that row is seen).
    if superuser || [&old_name, &new_name].into_iter().flatten().any(|n| settings::is_secret(n)) {
        crate::backend::log_hook::secret_written();
    }
    if let Some(name) = old_name.filter(|n| !superuser && !settings::admin_may_set(n)) {
        return Err(KafkaError::SuperuserSetting(name));
    }
    let Some(new) = new else {
        return Ok(old); // DELETE
    };
    let value: Option<String> = new.get_by_name("value").map_err(unreadable)?;
    match (new_name, value) {
        (Some(name), Some(value)) => settings::check(&name, &value, superuser)?,
        // NOT NULL refuses it after this trigger; a non-superuser's gets no further than here.
        (None, _) if !superuser => return Err(KafkaError::SuperuserSetting(String::new())),
        _ => {}
    }
    Ok(Some(new))
}

/// Trigger on `kafka.broker`: while `kafka.config` holds a secret, only a superuser may change
/// where it is sent.
#[pg_trigger(sql = false)] // declared in sql/tables.sql, in schema kafka_internal
fn broker_guard<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, PgHeapTupleError> {
    check_broker_change().unwrap_or_else(|e| e.raise());
    Ok(trigger.new().or_else(|| trigger.old()))
}

fn check_broker_change() -> Result<(), KafkaError> {
    // SAFETY: superuser() looks the current role up in the catalog cache; a trigger runs inside a
    // transaction, so the cache is valid.
    if !unsafe { pg_sys::superuser() } && read::secret_stored()? {
        return Err(KafkaError::BrokerWithSecrets);
    }
    Ok(())
}

/// Refuses to queue a message that no worker would ever deliver.
pub(crate) fn ensure_deliverable() -> Result<(), KafkaError> {
    if !shared::preloaded() {
        return Err(KafkaError::NotPreloaded);
    }
    if !served_here() {
        return Err(KafkaError::WrongDatabase { current: current_database(), served: gucs::database() });
    }
    Ok(())
}
