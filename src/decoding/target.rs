//! Which relations are wal-captured, and how: each changed relation's [`Target`] (the encoder of
//! its captured table, or of the captured ancestor of a partition, with the conversion of its
//! columns), read from `kafka.capture_config` with the historic snapshot of the change, and kept
//! until a relcache invalidation arrives in the WAL's order.
//!
//! What must stay true: a capture is read as of the change's moment in the WAL; while a
//! transaction is streamed before its commit the read is checked for a concurrent abort of it
//! afterwards, as PostgreSQL's own catalog scans are.

use super::spool;
use crate::backend::capture::plan::{self, Options, Plan};
use crate::backend::capture::Events;
use crate::error::KafkaError;
use pgrx::pg_sys::{self, Oid};
use pgrx::prelude::*;
use pgrx::PgMemoryContexts;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

/// A wal-captured table's encoder, for changes of one relation (the table or a partition of it).
pub(super) struct Target {
    pub events: Events,
    /// From the partition's columns to the captured ancestor's (null: same columns).
    pub map: *mut pg_sys::TupleConversionMap,
    /// The descriptor tuples are deformed with after conversion (the ancestor's).
    pub desc: pg_sys::TupleDesc,
}

thread_local! {
    /// Targets by relation (None: not wal-captured), made in epoch `EPOCH`.
    static TARGETS: RefCell<HashMap<Oid, Option<Rc<Target>>>> = RefCell::new(HashMap::new());
    static EPOCH: Cell<u64> = const { Cell::new(u64::MAX) };
}

/// The target of a changed relation, if it (or an ancestor) is wal-captured.
pub(super) fn target(relation: pg_sys::Relation) -> Option<Rc<Target>> {
    let epoch = plan::epoch();
    if EPOCH.replace(epoch) != epoch {
        TARGETS.with_borrow_mut(HashMap::clear);
    }
    // SAFETY: `relation` is open for the callback.
    let relid = unsafe { (*relation).rd_id };
    if let Some(t) = TARGETS.with_borrow(|t| t.get(&relid).cloned()) {
        return t;
    }
    let made = match reading_captures(|| make_target(relation)) {
        Ok(t) => t.map(Rc::new),
        Err(e) => {
            let why = format!("pg_kafka: WAL capture could not read the capture of relation {relid:?}: {e}");
            spool::failed(why);
            None
        }
    };
    // Looking the capture up read catalogs, which may have processed invalidations.
    if plan::epoch() == epoch {
        TARGETS.with_borrow_mut(|t| t.insert(relid, made.clone()));
    }
    made
}

/// Runs `f`, which reads `kafka.capture_config` (and, with schemas, catalogs) with queries.
/// While a transaction is streamed before its commit, PostgreSQL refuses every scan but a
/// catalog scan (CheckXidAlive is set; a query's own catalog lookups even clear the flag that
/// lets one through): the check is suspended for the lookup, and what PostgreSQL's catalog
/// scans do afterwards is done once it is back: if the transaction aborted meanwhile, what was
/// read may be wrong, and the error the reorder buffer expects (ERRCODE_TRANSACTION_ROLLBACK)
/// stops its streaming; its abort then drops its events.
fn reading_captures<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: a plain process-local global of the decoding backend, put back right after `f`
    // (an error in `f` ends the worker's transaction, whose abort resets it anyway).
    let alive = unsafe {
        let alive = pg_sys::CheckXidAlive;
        pg_sys::CheckXidAlive = pg_sys::InvalidTransactionId;
        alive
    };
    let r = f();
    // SAFETY: as above.
    unsafe { pg_sys::CheckXidAlive = alive };
    check_concurrent_abort(alive);
    r
}

fn check_concurrent_abort(xid: pg_sys::TransactionId) {
    // SAFETY: plain reads of the commit log.
    let aborted = unsafe {
        xid != pg_sys::InvalidTransactionId
            && !pg_sys::TransactionIdIsInProgress(xid)
            && !pg_sys::TransactionIdDidCommit(xid)
    };
    if aborted {
        ereport!(
            PgLogLevel::ERROR,
            PgSqlErrorCode::ERRCODE_TRANSACTION_ROLLBACK,
            "transaction aborted during system catalog scan"
        );
    }
}

/// Reads the wal capture of `relation` or of its nearest captured ancestor (historic snapshot).
fn make_target(relation: pg_sys::Relation) -> Result<Option<Target>, KafkaError> {
    // SAFETY: `relation` is open for the callback.
    let (relid, desc) = unsafe { ((*relation).rd_id, (*relation).rd_att) };
    // Queries run with an active snapshot: here, the historic one of the change (the reorder
    // buffer sets it up as the catalog snapshot only).
    // SAFETY: inside the reorder buffer's replay, where GetTransactionSnapshot returns the
    // historic snapshot; it is popped right after the query, on every path but an error, which
    // ends the worker's transaction (and the worker).
    unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot()) };
    let found = Spi::connect(|c| {
        let rows = c.select(
            "SELECT c.relid::pg_catalog.oid, kafka_internal.capture_args(c)
               FROM (SELECT $1::pg_catalog.regclass, 0
                     UNION ALL -- a partition's ancestors (none for a table that is not one)
                     SELECT p.relid, p.n FROM pg_catalog.pg_partition_ancestors($1) WITH ORDINALITY AS p(relid, n)) AS a(relid, n)
               JOIN kafka.capture_config c ON c.relid::pg_catalog.oid OPERATOR(pg_catalog.=) a.relid::pg_catalog.oid
              WHERE c.kind OPERATOR(pg_catalog.=) 'table' AND c.method OPERATOR(pg_catalog.=) 'wal'
              ORDER BY a.n DESC LIMIT 1",
            None,
            &[relid.into()],
        )?;
        let Some(row) = rows.into_iter().next() else { return Ok(None) };
        Ok::<_, pgrx::spi::Error>(Some((
            row.get::<Oid>(1)?.unwrap_or_default(),
            row.get::<Vec<String>>(2)?.unwrap_or_default(),
        )))
    })
    .map_err(|e| KafkaError::Internal(format!("could not read kafka.capture_config: {e}")));
    // SAFETY: pops the snapshot pushed above.
    unsafe { pg_sys::PopActiveSnapshot() };
    let Some((captured, args)) = found? else { return Ok(None) };
    let opts = Options::from_args(&args)?;
    if captured == relid {
        let plan = Rc::new(Plan::new(opts, relation));
        return Ok(Some(Target {
            events: Events::for_wal(plan, spool::push),
            map: std::ptr::null_mut(),
            desc,
        }));
    }
    // SAFETY: RelationIdGetRelation returns the captured ancestor open with its descriptor at
    // this point of the WAL (historic snapshot), or null; it is closed once the plan and copies
    // of the descriptors are made. convert_tuples_by_name maps the partition's columns to the
    // ancestor's by name (null if they are the same).
    unsafe {
        let parent = pg_sys::RelationIdGetRelation(captured);
        if parent.is_null() {
            return Ok(None);
        }
        let plan = Rc::new(Plan::new(opts, parent));
        // Kept as long as the target (a leak of a few hundred bytes per invalidation).
        let (map, parent_desc) = PgMemoryContexts::TopMemoryContext.switch_to(|_| {
            let parent_desc = pg_sys::CreateTupleDescCopy((*parent).rd_att);
            (pg_sys::convert_tuples_by_name(pg_sys::CreateTupleDescCopy(desc), parent_desc), parent_desc)
        });
        pg_sys::RelationClose(parent);
        Ok(Some(Target { events: Events::for_wal(plan, spool::push), map, desc: parent_desc }))
    }
}
