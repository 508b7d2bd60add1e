//! Who may write which topic: one rule ([`check_writable`]) for every path that writes one. A
//! captured table's topic carries its change events, written by the capture only; once
//! `kafka.topic_grants` has rows, a role other than a superuser may write (produce to, or capture
//! a table into) only the topics granted to it or to a role it belongs to; producing takes the
//! producer's right (`kafka.produce`), whatever path queues the message. `produce()`,
//! `publish()`, `autonomous_publish()`, the outbox relay and `kafka.capture()` ask here before
//! they queue or capture. Nobody writes the worker's own topics (`kafka.position_topic`,
//! `kafka.transaction_topic`).
//!
//! The answers are cached per session and topic, and thrown away when `kafka.capture_config` or
//! `kafka.topic_grants` change (their trigger sends a relcache invalidation, delivered to every
//! session when the change commits) or role memberships change.

use crate::error::KafkaError;
use crate::store::owner;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;

/// Per session: role → topic → what the rules say; and the relations whose change clears it.
/// (Looked up by `&str`: a hit allocates nothing, on the path of every message.)
struct Cache {
    answers: HashMap<u32, HashMap<String, Rules>>,
    watched: [pg_sys::Oid; 2],
}

thread_local! {
    static CACHE: RefCell<Cache> =
        RefCell::new(Cache { answers: HashMap::new(), watched: [pg_sys::InvalidOid; 2] });
}

/// Registers the invalidation callbacks (once per process, from `_PG_init`).
pub fn init() {
    // SAFETY: called once per process from _PG_init; the callbacks are 'static functions of the
    // expected signature (the library is never unloaded); a full callback list is raised as an
    // error by PostgreSQL, not overrun.
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(Some(relation_changed), pg_sys::Datum::from(0));
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::AUTHMEMROLEMEM as _,
            Some(membership_changed),
            pg_sys::Datum::from(0),
        );
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn relation_changed(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if relid == pg_sys::InvalidOid || c.watched.contains(&relid) {
            c.answers.clear();
        }
    });
}

#[pg_guard]
unsafe extern "C-unwind" fn membership_changed(_arg: pg_sys::Datum, _cache: i32, _hash: u32) {
    CACHE.with(|c| c.borrow_mut().answers.clear());
}

/// Who asks to write a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// A message: `produce()`, `publish()`, `autonomous_publish()`, a relayed outbox row. The
    /// role must be a producer (EXECUTE on `kafka.produce`, what kafka_producer grants), and the
    /// topic must not carry a captured table's events.
    Producer,
    /// A capture being set up for a table (`kafka.capture()`): its events will go there.
    Capture,
}

/// The one rule of who may write a topic, for every path that queues a record (produce,
/// publish, autonomous_publish, the outbox relay, capture): pg_kafka's own topics are refused to
/// every role, superusers included; a superuser may write any other; anyone else needs, once
/// `kafka.topic_grants` has rows, a grant of the topic (to it or a role it belongs to). A
/// producer also needs the producer's right, and may not write a captured table's topic (only
/// its capture does).
pub fn check_writable(topic: &str, writer: Writer) -> Result<(), KafkaError> {
    if crate::gucs::worker_topic(topic) {
        return Err(KafkaError::WorkerTopic(topic.to_owned()));
    }
    // SAFETY: superuser() reads the catalog cache; only called by SQL functions and triggers,
    // inside a transaction.
    if unsafe { pg_sys::superuser() } {
        return Ok(());
    }
    // SAFETY: plain read of the session's current user id, always valid in a backend.
    let role = unsafe { pg_sys::GetUserId() };
    let cached = CACHE.with(|c| c.borrow().answers.get(&role.to_u32()).and_then(|t| t.get(topic)).cloned());
    let rules = match cached {
        Some(answer) => answer,
        None => {
            let (answer, watched) = ask(role, topic)?;
            CACHE.with(|c| {
                let mut c = c.borrow_mut();
                c.watched = watched;
                c.answers.entry(role.to_u32()).or_default().insert(topic.to_owned(), answer);
            });
            answer
        }
    };
    match writer {
        Writer::Producer if !rules.producer => Err(KafkaError::NotProducer(topic.to_owned())),
        Writer::Producer if rules.captured => Err(KafkaError::CaptureTopic(topic.to_owned())),
        _ if !rules.granted => Err(KafkaError::TopicDenied(topic.to_owned())),
        _ => Ok(()),
    }
}

/// What the rules say of one role and topic.
#[derive(Debug, Clone, Copy)]
struct Rules {
    /// The role may produce (EXECUTE on `kafka.produce`).
    producer: bool,
    /// The topic carries a captured table's events.
    captured: bool,
    /// `kafka.topic_grants` is empty or grants the topic to the role.
    granted: bool,
}

/// Reads the rules (as the extension's owner: producers cannot read these tables).
fn ask(role: pg_sys::Oid, topic: &str) -> Result<(Rules, [pg_sys::Oid; 2]), KafkaError> {
    let sql = "SELECT EXISTS (SELECT FROM kafka.capture_config c
                               WHERE c.kind OPERATOR(pg_catalog.=) 'table' AND c.topic OPERATOR(pg_catalog.=) $1),
                      NOT EXISTS (SELECT FROM kafka.topic_grants)
                      OR EXISTS (SELECT FROM kafka.topic_grants g
                                   JOIN pg_catalog.pg_roles r ON r.rolname OPERATOR(pg_catalog.=) g.grantee
                                  WHERE pg_catalog.pg_has_role($2, r.oid, 'MEMBER')
                                    AND (g.topic OPERATOR(pg_catalog.=) $1
                                         OR (pg_catalog.right(g.topic, 1) OPERATOR(pg_catalog.=) '*'
                                             AND pg_catalog.starts_with($1, pg_catalog.left(g.topic, -1))))),
                      pg_catalog.has_function_privilege($2, 'kafka.produce(pg_catalog.text, pg_catalog.text)', 'EXECUTE'),
                      'kafka.capture_config'::pg_catalog.regclass::pg_catalog.oid,
                      'kafka.topic_grants'::pg_catalog.regclass::pg_catalog.oid";
    let row = owner::as_owner(owner::store()?, || {
        Spi::connect(|client| {
            let t = client.select(sql, Some(1), &[topic.into(), role.into()])?.first();
            Ok::<_, pgrx::spi::SpiError>((
                Rules {
                    captured: t.get::<bool>(1)?.unwrap_or(false),
                    granted: t.get::<bool>(2)?.unwrap_or(false),
                    producer: t.get::<bool>(3)?.unwrap_or(false),
                },
                [t.get::<pg_sys::Oid>(4)?.unwrap_or_default(), t.get::<pg_sys::Oid>(5)?.unwrap_or_default()],
            ))
        })
    });
    row.map_err(|e| KafkaError::Internal(format!("could not read the topic rules: {e}")))
}

/// Trigger on `kafka.capture_config` and `kafka.topic_grants`: every session forgets its answers
/// when the change commits.
#[pg_trigger(sql = false)] // declared in sql/tables.sql, in schema kafka_internal
fn topic_rules_changed<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, PgHeapTupleError> {
    // SAFETY: `tg_relation` is the open relation of the firing trigger; the invalidation is queued
    // in the current transaction and sent when it commits.
    unsafe { pg_sys::CacheInvalidateRelcache(trigger.trigger_data().tg_relation) };
    Ok(None)
}
