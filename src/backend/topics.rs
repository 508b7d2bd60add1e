//! Who may write which topic. A captured table's topic carries its change events, written by the
//! capture only; and once `kafka.topic_grants` has rows, a role other than a superuser may produce
//! only to the topics granted to it (or to a role it belongs to). `produce()`, `publish()`,
//! `autonomous_publish()` and the outbox relay ask here before they queue. Nobody produces to the
//! worker's own topics (`kafka.position_topic`, `kafka.transaction_topic`).
//!
//! The answers are cached per session and topic, and thrown away when `kafka.capture_config` or
//! `kafka.topic_grants` change (their trigger sends a relcache invalidation, delivered to every
//! session when the change commits) or role memberships change.

use crate::error::KafkaError;
use crate::store::outbox;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;

/// Per session: role → topic → the refusal, if any; and the relations whose change clears it.
/// (Looked up by `&str`: a hit allocates nothing, on the path of every message.)
struct Cache {
    answers: HashMap<u32, HashMap<String, Option<KafkaError>>>,
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

/// Refuses unless the current role may produce to `topic`. pg_kafka's own topics are refused to
/// every role, superusers included.
pub fn check_writable(topic: &str) -> Result<(), KafkaError> {
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
    let refusal = match cached {
        Some(answer) => answer,
        None => {
            let (answer, watched) = ask(role, topic)?;
            CACHE.with(|c| {
                let mut c = c.borrow_mut();
                c.watched = watched;
                c.answers.entry(role.to_u32()).or_default().insert(topic.to_owned(), answer.clone());
            });
            answer
        }
    };
    refusal.map_or(Ok(()), Err)
}

/// Reads the rules (as the extension's owner: producers cannot read these tables).
fn ask(role: pg_sys::Oid, topic: &str) -> Result<(Option<KafkaError>, [pg_sys::Oid; 2]), KafkaError> {
    let sql = "SELECT EXISTS (SELECT FROM kafka.capture_config c
                               WHERE c.kind OPERATOR(pg_catalog.=) 'table' AND c.topic OPERATOR(pg_catalog.=) $1),
                      NOT EXISTS (SELECT FROM kafka.topic_grants)
                      OR EXISTS (SELECT FROM kafka.topic_grants g
                                   JOIN pg_catalog.pg_roles r ON r.rolname OPERATOR(pg_catalog.=) g.grantee
                                  WHERE pg_catalog.pg_has_role($2, r.oid, 'MEMBER')
                                    AND (g.topic OPERATOR(pg_catalog.=) $1
                                         OR (pg_catalog.right(g.topic, 1) OPERATOR(pg_catalog.=) '*'
                                             AND pg_catalog.starts_with($1, pg_catalog.left(g.topic, -1))))),
                      'kafka.capture_config'::pg_catalog.regclass::pg_catalog.oid,
                      'kafka.topic_grants'::pg_catalog.regclass::pg_catalog.oid";
    let row = outbox::as_owner(outbox::store()?, || {
        Spi::connect(|client| {
            let t = client.select(sql, Some(1), &[topic.into(), role.into()])?.first();
            Ok::<_, pgrx::spi::SpiError>((
                t.get::<bool>(1)?.unwrap_or(false),
                t.get::<bool>(2)?.unwrap_or(false),
                [t.get::<pg_sys::Oid>(3)?.unwrap_or_default(), t.get::<pg_sys::Oid>(4)?.unwrap_or_default()],
            ))
        })
    });
    let (captured, granted, watched) =
        row.map_err(|e| KafkaError::Internal(format!("could not read the topic rules: {e}")))?;
    let refusal = if captured {
        Some(KafkaError::CaptureTopic(topic.to_owned()))
    } else if !granted {
        Some(KafkaError::TopicDenied(topic.to_owned()))
    } else {
        None
    };
    Ok((refusal, watched))
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
