//! pg_kafka's logical decoding output plugin (plugin name `pg_kafka`, this library): turns each
//! decoded change of a wal-captured table into its events, encoded from the tuple by the trigger
//! path's encoder, into [`spool`]. Only pg_kafka's worker decodes with it ([`super::reader`]):
//! it writes nothing through `OutputPluginWrite`, so a slot of it read by anything else yields
//! no data.
//!
//! Which tables, with which options: [`super::target`], as of each change's moment in the WAL.
//! A transaction is replayed at its commit (begin, changes, commit), or, once the reorder buffer
//! holds more than [`super::reader::STREAM_FROM_KB`] (or `logical_decoding_work_mem`), streamed
//! while it is written (stream callbacks: its events wait in [`stream`] with marks where the
//! commit time goes, filled in at its commit; a rolled-back savepoint or transaction drops its
//! own). The worker's own writes are filtered out before they are queued
//! ([`super::mark_own_writes`]).
//!
//! What must stay true: callbacks never raise for a value they cannot encode (the worker would
//! stop for everyone): such an event is counted, warned about and skipped ([`spool::failed`]).

use super::target::{target, Target};
use super::{spool, stream};
use crate::backend::capture::{Tuple, WalPosition};
use crate::backend::input::unix_us;
use crate::error::KafkaError;
use kafka_core::commit_marks::Commit;
use pgrx::pg_sys::{self, Datum};
use pgrx::prelude::*;
use pgrx::PgMemoryContexts;
use std::cell::{Cell, RefCell};

thread_local! {
    /// The transaction being decoded: its id, commit time, and whether it had captured events.
    static TXN: Cell<(u32, i64, bool)> = const { Cell::new((0, 0, false)) };
    /// The end LSN of the last transaction with captured events (Debezium's `sequence`).
    static LAST_COMMIT_END: Cell<u64> = const { Cell::new(0) };
    /// Transactions that ended at or before it are in the outbox already (staged before a
    /// crash that kept the slot behind)...
    static STAGED_END: Cell<u64> = const { Cell::new(0) };
    /// ...as the one being decoded is: its changes are skipped.
    static SKIPPED: Cell<bool> = const { Cell::new(false) };
    /// A memory context reset after each change.
    static CHANGE_CONTEXT: RefCell<Option<PgMemoryContexts>> = const { RefCell::new(None) };
}

/// The staged position a new decoding context starts from: transactions that ended at or
/// before `staged_end` are skipped, and the `sequence` of the next one starts at
/// `last_commit_end`.
pub fn set_position(staged_end: u64, last_commit_end: u64) {
    STAGED_END.set(staged_end);
    LAST_COMMIT_END.set(last_commit_end);
}

pub fn last_commit_end() -> u64 {
    LAST_COMMIT_END.get()
}

/// The plugin's entry point, found by name when a slot of plugin `pg_kafka` is decoded.
///
/// # Safety
/// Called by PostgreSQL's LoadOutputPlugin with a callbacks struct to fill.
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn _PG_output_plugin_init(cb: *mut pg_sys::OutputPluginCallbacks) {
    // SAFETY: `cb` points to the decoding context's zeroed callbacks struct (this function's
    // contract); the callbacks are 'static functions of the expected signatures.
    unsafe {
        (*cb).startup_cb = Some(startup);
        (*cb).begin_cb = Some(begin);
        (*cb).change_cb = Some(change);
        (*cb).truncate_cb = Some(truncate);
        (*cb).commit_cb = Some(commit);
        (*cb).filter_by_origin_cb = Some(filter_by_origin);
        (*cb).stream_start_cb = Some(stream_start);
        (*cb).stream_stop_cb = Some(stream_stop);
        (*cb).stream_change_cb = Some(stream_change);
        (*cb).stream_truncate_cb = Some(stream_truncate);
        (*cb).stream_abort_cb = Some(stream_abort);
        (*cb).stream_commit_cb = Some(stream_commit);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn startup(
    _ctx: *mut pg_sys::LogicalDecodingContext,
    options: *mut pg_sys::OutputPluginOptions,
    _is_init: bool,
) {
    // SAFETY: `options` is the context's options struct, for the plugin to fill.
    unsafe { (*options).output_type = pg_sys::OutputPluginOutputType::OUTPUT_PLUGIN_BINARY_OUTPUT };
}

/// Changes of origin `DoNotReplicateId` (the worker's own writes: [`super::mark_own_writes`])
/// are not decoded at all.
#[pg_guard]
unsafe extern "C-unwind" fn filter_by_origin(
    _ctx: *mut pg_sys::LogicalDecodingContext,
    origin_id: pg_sys::RepOriginId,
) -> bool {
    origin_id == super::DO_NOT_REPLICATE
}

#[pg_guard]
unsafe extern "C-unwind" fn begin(
    _ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
) {
    // SAFETY: `txn` is the transaction being replayed, valid for the call; at commit replay its
    // commit time is set.
    let (xid, commit, end) = unsafe { ((*txn).xid, (*txn).xact_time.commit_time, (*txn).end_lsn) };
    TXN.set((xid.into_inner(), unix_us(commit), false));
    SKIPPED.set(end <= STAGED_END.get());
    spool::begin();
}

#[pg_guard]
unsafe extern "C-unwind" fn commit(
    _ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
    _commit_lsn: pg_sys::XLogRecPtr,
) {
    // SAFETY: `txn` is the transaction being replayed, valid for the call.
    let end = unsafe { (*txn).end_lsn };
    if SKIPPED.get() {
        return;
    }
    if TXN.get().2 {
        LAST_COMMIT_END.set(end);
    }
    spool::commit(end);
}

#[pg_guard]
unsafe extern "C-unwind" fn change(
    _ctx: *mut pg_sys::LogicalDecodingContext,
    _txn: *mut pg_sys::ReorderBufferTXN,
    relation: pg_sys::Relation,
    change: *mut pg_sys::ReorderBufferChange,
) {
    if !SKIPPED.get() {
        // SAFETY: the reorder buffer's relation and change, valid for the call.
        unsafe { decode_change(relation, change, None) };
    }
}

/// Encodes a row change of `relation` (of transaction `streamed` if it is streamed before its
/// commit, else of the one being replayed).
///
/// # Safety
/// `relation` and `change` are the reorder buffer's, valid for the call.
unsafe fn decode_change(
    relation: pg_sys::Relation,
    change: *mut pg_sys::ReorderBufferChange,
    streamed: Option<u32>,
) {
    // SAFETY: `relation` is the changed relation, opened by the reorder buffer with the historic
    // snapshot for the call.
    let Some(target) = target(relation) else { return };
    // SAFETY: `change` is valid for the call; for a row change its `tp` member is the live one.
    let (lsn, action, tp) = unsafe { ((*change).lsn, (*change).action, (*change).data.tp) };
    at_change(&target, lsn, streamed);
    let events = &target.events;
    // SAFETY: the tuples are the change's, of `relation`'s descriptor; each is used within the
    // per-change memory context before it is reset.
    let done = per_change(|| unsafe {
        let desc = (*relation).rd_att;
        let (old, new) = (tuple(tp.oldtuple), tuple(tp.newtuple));
        use pg_sys::ReorderBufferChangeType::*;
        match action {
            REORDER_BUFFER_CHANGE_INSERT => with_tuple(&target, desc, new, |new| events.inserted(new, 'c')),
            REORDER_BUFFER_CHANGE_UPDATE if old.is_none() => {
                with_tuple(&target, desc, new, |new| events.updated_new_only(new))
            }
            REORDER_BUFFER_CHANGE_UPDATE => with_tuple(&target, desc, new, |new| {
                with_tuple(&target, desc, old, |old| events.updated(old, new))
            }),
            REORDER_BUFFER_CHANGE_DELETE => with_tuple(&target, desc, old, |old| events.deleted(old)),
            _ => Ok(()),
        }
    });
    note(done, &target, lsn);
}

#[pg_guard]
unsafe extern "C-unwind" fn truncate(
    _ctx: *mut pg_sys::LogicalDecodingContext,
    _txn: *mut pg_sys::ReorderBufferTXN,
    nrelations: i32,
    relations: *mut pg_sys::Relation,
    change: *mut pg_sys::ReorderBufferChange,
) {
    if !SKIPPED.get() {
        // SAFETY: the reorder buffer's relations and change, valid for the call.
        unsafe { decode_truncate(nrelations, relations, change, None) };
    }
}

/// Encodes a TRUNCATE (of transaction `streamed` if it is streamed before its commit).
///
/// # Safety
/// `relations` holds `nrelations` relations open for the call; `change` is valid.
unsafe fn decode_truncate(
    nrelations: i32,
    relations: *mut pg_sys::Relation,
    change: *mut pg_sys::ReorderBufferChange,
    streamed: Option<u32>,
) {
    // SAFETY: this function's contract.
    let (rels, lsn) = unsafe { (std::slice::from_raw_parts(relations, nrelations as usize), (*change).lsn) };
    for &rel in rels {
        if let Some(target) = target(rel) {
            at_change(&target, lsn, streamed);
            note(target.events.truncated(), &target, lsn);
        }
    }
}

/// Sets the `source` block of the change at `lsn` and marks the transaction as captured (a
/// streamed transaction's commit time and last commit's end are filled in at its commit).
fn at_change(target: &Target, lsn: u64, streamed: Option<u32>) {
    let at = match streamed {
        Some(xid) => WalPosition { lsn, last_commit_end: 0, commit_us: None, xid },
        None => {
            let (xid, commit_us, _) = TXN.get();
            TXN.set((xid, commit_us, true));
            WalPosition { lsn, last_commit_end: LAST_COMMIT_END.get(), commit_us: Some(commit_us), xid }
        }
    };
    target.events.at_change(&at);
}

#[pg_guard]
unsafe extern "C-unwind" fn stream_start(
    _ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
) {
    // SAFETY: `txn` is the top-level transaction being streamed, valid for the call.
    stream::set_current(Some(unsafe { (*txn).xid }.into_inner()));
}

#[pg_guard]
unsafe extern "C-unwind" fn stream_stop(
    _ctx: *mut pg_sys::LogicalDecodingContext,
    _txn: *mut pg_sys::ReorderBufferTXN,
) {
    stream::set_current(None);
}

#[pg_guard]
unsafe extern "C-unwind" fn stream_change(
    _ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
    relation: pg_sys::Relation,
    change: *mut pg_sys::ReorderBufferChange,
) {
    // SAFETY: `txn` is the top-level transaction being streamed and `change` one of its
    // changes, whose `txn` is the (sub)transaction it belongs to; all valid for the call.
    unsafe {
        stream::note_subxact((*(*change).txn).xid.into_inner());
        decode_change(relation, change, Some((*txn).xid.into_inner()));
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn stream_truncate(
    _ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
    nrelations: i32,
    relations: *mut pg_sys::Relation,
    change: *mut pg_sys::ReorderBufferChange,
) {
    // SAFETY: as `stream_change`'s, with the relations open for the call.
    unsafe {
        stream::note_subxact((*(*change).txn).xid.into_inner());
        decode_truncate(nrelations, relations, change, Some((*txn).xid.into_inner()));
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn stream_abort(
    _ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
    _abort_lsn: pg_sys::XLogRecPtr,
) {
    // SAFETY: `txn` is the aborted (sub)transaction, valid for the call, and so is its top-level
    // transaction if it is a subtransaction.
    let (top, xid) = unsafe {
        let top = if (*txn).toptxn.is_null() { txn } else { (*txn).toptxn };
        ((*top).xid.into_inner(), (*txn).xid.into_inner())
    };
    if let Err(e) = stream::abort(top, xid) {
        let why = format!("pg_kafka: WAL capture could not drop the events of an aborted transaction: {e}");
        spool::failed(why);
    }
}

/// A streamed transaction committed: its events, sealed as they are, join the decoded ones in
/// commit order (unless staged before), with their commit time and last commit's end, which
/// fill their commit marks when the outbox is read.
#[pg_guard]
unsafe extern "C-unwind" fn stream_commit(
    _ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
    _commit_lsn: pg_sys::XLogRecPtr,
) {
    // SAFETY: `txn` is the committed transaction, valid for the call; its commit time and end
    // are set before its streaming ends.
    let (xid, commit, end) =
        unsafe { ((*txn).xid.into_inner(), (*txn).xact_time.commit_time, (*txn).end_lsn) };
    stream::set_current(None);
    let Some(events) = stream::take(xid) else { return };
    if end <= STAGED_END.get() || events.events() == 0 {
        events.discard();
        return;
    }
    let commit = Commit { commit_us: unix_us(commit), last_commit_end: LAST_COMMIT_END.get() };
    spool::begin();
    let done = events.into_sealed(commit).and_then(|(file, packs)| spool::push_streamed(file, packs, commit));
    if let Err(e) = done {
        let why = format!(
            "pg_kafka: WAL capture lost the events of transaction {xid} (committed at {}): {e}",
            super::lsn_text(end)
        );
        spool::failed(why);
    }
    LAST_COMMIT_END.set(end);
    spool::commit(end);
}

/// A change that could not be encoded is skipped, counted and warned about, never raised.
fn note(done: Result<(), KafkaError>, target: &Target, lsn: u64) {
    if let Err(e) = done {
        let plan = target.events.plan();
        let why = format!(
            "pg_kafka: WAL capture skipped the change at LSN {} of table {}.{}: {e}",
            super::lsn_text(lsn),
            plan.schema,
            plan.table
        );
        spool::failed(why);
    }
}

/// The tuple of a change, if it has one.
///
/// # Safety
/// `buf` is null or a tuple buffer of the change being decoded.
#[cfg(any(feature = "pg14", feature = "pg15", feature = "pg16"))]
unsafe fn tuple(buf: *mut pg_sys::ReorderBufferTupleBuf) -> Option<pg_sys::HeapTuple> {
    // SAFETY: `buf` is null or valid (this function's contract).
    (!buf.is_null()).then(|| unsafe { &mut (*buf).tuple as *mut pg_sys::HeapTupleData })
}

/// The tuple of a change, if it has one (from PostgreSQL 17 a change holds the tuple itself).
///
/// # Safety
/// `tuple` is null or a tuple of the change being decoded.
#[cfg(not(any(feature = "pg14", feature = "pg15", feature = "pg16")))]
unsafe fn tuple(tuple: pg_sys::HeapTuple) -> Option<pg_sys::HeapTuple> {
    (!tuple.is_null()).then_some(tuple)
}

/// Deforms `tuple` (of `desc`), converted to the target's columns, and calls `f` with it. A
/// change without the row it needs (a DELETE of a table with REPLICA IDENTITY NOTHING) is an
/// error: the event cannot be made.
///
/// # Safety
/// `tuple` is None or a tuple of `desc`.
unsafe fn with_tuple(
    target: &Target,
    desc: pg_sys::TupleDesc,
    tuple: Option<pg_sys::HeapTuple>,
    f: impl FnOnce(Tuple) -> Result<(), KafkaError>,
) -> Result<(), KafkaError> {
    let Some(mut tuple) = tuple else {
        return Err(KafkaError::Internal(
            "the WAL holds no old row for this change (REPLICA IDENTITY NOTHING); set REPLICA IDENTITY DEFAULT or FULL"
                .into(),
        ));
    };
    // SAFETY: `tuple` is a tuple of `desc` (this function's contract); execute_attr_map_tuple
    // returns a palloc'd tuple of the target's descriptor, freed with the change's context.
    // heap_deform_tuple fills `natts` values and nulls of `target.desc`.
    unsafe {
        let mut out_desc = desc;
        if !target.map.is_null() {
            tuple = pg_sys::execute_attr_map_tuple(tuple, target.map);
            out_desc = target.desc;
        }
        let natts = (*out_desc).natts as usize;
        let (mut values, mut nulls) = (vec![Datum::from(0); natts], vec![true; natts]);
        pg_sys::heap_deform_tuple(tuple, out_desc, values.as_mut_ptr(), nulls.as_mut_ptr());
        f(Tuple(&values, &nulls))
    }
}

/// Runs `step` in the per-change memory context, reset afterwards.
fn per_change<R>(step: impl FnOnce() -> R) -> R {
    CHANGE_CONTEXT.with_borrow_mut(|c| {
        // SAFETY: the context is made once under TopMemoryContext and is this module's own;
        // nothing allocated in it outlives the step (events are copied into Rust-owned spool
        // buffers).
        unsafe {
            let ctx = c.get_or_insert_with(|| {
                PgMemoryContexts::TopMemoryContext.switch_to(|_| PgMemoryContexts::new("pg_kafka WAL change"))
            });
            let r = ctx.switch_to(|_| step());
            ctx.reset();
            r
        }
    })
}
