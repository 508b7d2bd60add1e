//! The worker's decoding context: the slot held, the WAL read from where decoding must restart,
//! records decoded one after the other up to the flush point, kept open across passes (so the
//! WAL is read once, not from the slot's restart point at every call as
//! `pg_logical_slot_peek_changes` would, and nothing is materialised as rows).
//!
//! What must stay true: the context and its reader live in `TopMemoryContext` (they outlive
//! every transaction); records are read only below the flush point (the local page reader would
//! otherwise wait for WAL); the slot is confirmed only up to a point the caller says is staged.

use super::{plugin, slot};
use crate::error::KafkaError;
use pgrx::pg_sys;
use pgrx::PgMemoryContexts;

unsafe extern "C-unwind" {
    /// Decodes one record just read by the context's reader (replication/decode.h; not in
    /// pgrx's bindings).
    fn LogicalDecodingProcessRecord(
        ctx: *mut pg_sys::LogicalDecodingContext,
        record: *mut pg_sys::XLogReaderState,
    );
    // The local WAL page reader (access/xlogutils.h), as a C function pointer for the reader's
    // routine (pgrx binds them as Rust wrappers).
    fn read_local_xlog_page(
        state: *mut pg_sys::XLogReaderState,
        target_page: pg_sys::XLogRecPtr,
        req_len: i32,
        target_rec: pg_sys::XLogRecPtr,
        cur_page: *mut std::ffi::c_char,
    ) -> i32;
    fn wal_segment_open(
        state: *mut pg_sys::XLogReaderState,
        next: pg_sys::XLogSegNo,
        tli: *mut pg_sys::TimeLineID,
    );
    fn wal_segment_close(state: *mut pg_sys::XLogReaderState);
}

/// The end of the last record before the insert position `insert`: the insert position itself,
/// unless it is just past the header of a page nothing was written to yet (the last record ended
/// at the page's start; the header is not written, and neither flushed nor read, until a record
/// follows).
fn record_boundary(insert: u64, segment_size: u64) -> u64 {
    const PAGE: u64 = pg_sys::XLOG_BLCKSZ as u64;
    const SHORT_HEADER: u64 = 24; // SizeOfXLogShortPHD
    const LONG_HEADER: u64 = 40; // SizeOfXLogLongPHD, at the start of a segment
    match (insert % PAGE, insert % segment_size) {
        (SHORT_HEADER, _) => insert - SHORT_HEADER,
        (_, LONG_HEADER) => insert - LONG_HEADER,
        _ => insert,
    }
}

/// While the worker decodes, a transaction is streamed to it once the reorder buffer holds more
/// than this (kB), or `logical_decoding_work_mem` if that is less. A bulk transaction's changes
/// are then encoded while it writes, and its COMMIT leaves at most this much to encode (64 MB,
/// the setting's default, took a quarter of a second here).
pub const STREAM_FROM_KB: i32 = 4096;

/// Lowers `logical_decoding_work_mem` to [`STREAM_FROM_KB`] for as long as it lives (PostgreSQL
/// reads the variable at each change it queues; a reload in between sets it again).
struct StreamFrom(i32);

impl StreamFrom {
    fn set() -> StreamFrom {
        // SAFETY: a plain int setting of this process, read by the reorder buffer in this thread.
        unsafe {
            let configured = pg_sys::logical_decoding_work_mem;
            pg_sys::logical_decoding_work_mem = configured.min(STREAM_FROM_KB);
            StreamFrom(configured)
        }
    }
}

impl Drop for StreamFrom {
    fn drop(&mut self) {
        // SAFETY: as in `set`.
        unsafe { pg_sys::logical_decoding_work_mem = self.0 };
    }
}

/// The worker's open decoding context on pg_kafka's slot.
pub struct Reader {
    ctx: *mut pg_sys::LogicalDecodingContext,
}

/// Reads a WAL page as `read_local_xlog_page` does, first flushing the WAL the reader needs if it
/// is not on disk yet. The local reader waits (in 1 ms sleeps) until what it needs is flushed; a
/// record's tail in a page nothing else flushes (the WAL writer flushes whole pages, commits
/// their own records) would keep it waiting for ever. Flushing on demand, only then, costs the
/// sessions nothing in the usual case, where their commits flushed what is read.
unsafe extern "C-unwind" fn read_page_flushed(
    state: *mut pg_sys::XLogReaderState,
    target_page: pg_sys::XLogRecPtr,
    req_len: i32,
    target_rec: pg_sys::XLogRecPtr,
    cur_page: *mut std::ffi::c_char,
) -> i32 {
    let needed = target_page + req_len as u64;
    // SAFETY: called by the reader in the worker, inside a transaction; the bytes it asks for
    // belong to a record that starts below the flush point, so they are inserted (XLogFlush waits
    // for insertions in progress) and flushing them is allowed; then the local reader reads them.
    unsafe {
        if pg_sys::GetFlushRecPtr(std::ptr::null_mut()) < needed {
            let inserted = record_boundary(pg_sys::GetXLogInsertRecPtr(), pg_sys::wal_segment_size as u64);
            pg_sys::XLogFlush(needed.min(inserted));
        }
        read_local_xlog_page(state, target_page, req_len, target_rec, cur_page)
    }
}

/// How WAL pages are read: from this server's WAL files.
pub fn routine() -> pg_sys::XLogReaderRoutine {
    pg_sys::XLogReaderRoutine {
        page_read: Some(read_page_flushed),
        segment_open: Some(wal_segment_open),
        segment_close: Some(wal_segment_close),
    }
}

impl Reader {
    /// Acquires the slot and opens a decoding context at its confirmed position; inside a
    /// transaction. Transactions that ended at or before `staged_end` are skipped; the
    /// `sequence` of the first events continues from `last_commit_end`.
    pub fn open(staged_end: u64, last_commit_end: u64) -> Result<Reader, KafkaError> {
        slot::check_requirements()?;
        let name = slot::name();
        super::spool::clear();
        plugin::set_position(staged_end, last_commit_end);
        // SAFETY: in a transaction of the worker, holding no slot (a Reader is the only holder and
        // is closed before another opens). ReplicationSlotAcquire raises if the slot is missing or
        // in use. The context is made in TopMemoryContext so that it outlives the transaction;
        // the routine struct is copied by the reader. Reading starts at the slot's restart_lsn, as
        // pg_logical_slot_get_changes does; the plugin's caches hold nothing of an earlier context.
        unsafe {
            #[cfg(not(feature = "pg18"))]
            pg_sys::ReplicationSlotAcquire(name.as_ptr(), true);
            // From PostgreSQL 18: error_if_invalid (an invalidated slot raises rather than being
            // acquired).
            #[cfg(feature = "pg18")]
            pg_sys::ReplicationSlotAcquire(name.as_ptr(), true, true);
            let mut routine = routine();
            let ctx = PgMemoryContexts::TopMemoryContext.switch_to(|_| {
                pg_sys::CreateDecodingContext(
                    pg_sys::InvalidXLogRecPtr as u64,
                    std::ptr::null_mut(),
                    false,
                    &mut routine,
                    None,
                    None,
                    None,
                )
            });
            pg_sys::XLogBeginRead((*ctx).reader, (*pg_sys::MyReplicationSlot).data.restart_lsn);
            Ok(Reader { ctx })
        }
    }

    /// Decodes records up to the flush point, or until the spool holds `budget` bytes; returns
    /// the end of the last record read (every transaction that committed before it is in the
    /// spool now, or had nothing captured) and whether it stopped at the budget. Inside a
    /// transaction.
    pub fn read(&mut self, budget: usize) -> Result<(u64, bool), KafkaError> {
        let _streaming = StreamFrom::set();
        // SAFETY: `ctx` is the open context (made in `open`, freed only in `close`); its reader
        // reads records that start below `end`, the flush point; the errors it returns are
        // palloc'd messages.
        // LogicalDecodingProcessRecord decodes the record just read, calling the plugin.
        unsafe {
            let reader = (*self.ctx).reader;
            // Up to the flush point: what committed transactions flushed (a record that crosses
            // it is flushed on demand by the page reader).
            let end = pg_sys::GetFlushRecPtr(std::ptr::null_mut());
            // The reader's end moves as records are read (a raw pointer clippy cannot follow).
            #[allow(clippy::while_immutable_condition)]
            while (*reader).EndRecPtr < end {
                let mut err: *mut std::ffi::c_char = std::ptr::null_mut();
                // The reader allocates its decode buffer at its first read, in the current
                // memory context: that must outlive this transaction.
                let outer = pg_sys::MemoryContextSwitchTo((*self.ctx).context);
                let record = pg_sys::XLogReadRecord(reader, &mut err);
                pg_sys::MemoryContextSwitchTo(outer);
                if !err.is_null() {
                    let why = std::ffi::CStr::from_ptr(err).to_string_lossy();
                    return Err(KafkaError::Internal(format!("could not read the WAL for capture: {why}")));
                }
                if !record.is_null() {
                    pg_sys::ffi::pg_guard_ffi_boundary(|| LogicalDecodingProcessRecord(self.ctx, reader));
                    // A transaction streamed before its commit leaves CheckXidAlive set (the
                    // walsender never reads a table afterwards; this worker does, and any scan
                    // but a catalog scan would fail): what PostgreSQL's ResetLogicalStreamingState
                    // does at a transaction's abort.
                    pg_sys::CheckXidAlive = pg_sys::InvalidTransactionId;
                    pg_sys::bsysscan = false;
                }
                pg_sys::check_for_interrupts!();
                if super::spool::bytes() >= budget {
                    return Ok(((*reader).EndRecPtr, (*reader).EndRecPtr < end));
                }
            }
            Ok(((*reader).EndRecPtr, false))
        }
    }

    /// The end of the last record decoded.
    pub fn read_to(&self) -> u64 {
        // SAFETY: `ctx` is the open context, and its reader lives as long.
        unsafe { (*(*self.ctx).reader).EndRecPtr }
    }

    /// Lets the slot forget what lies before `lsn` (every transaction that committed before it
    /// is durably staged or had nothing captured).
    pub fn confirm(&self, lsn: u64) {
        // SAFETY: this process holds the slot (acquired in `open`); a confirmation below the
        // current one is ignored by PostgreSQL.
        unsafe {
            if lsn > (*pg_sys::MyReplicationSlot).data.confirmed_flush {
                pg_sys::LogicalConfirmReceivedLocation(lsn);
            }
        }
    }

    /// Frees the context and releases the slot.
    pub fn close(self) {
        super::spool::clear();
        // SAFETY: `ctx` is the open context, freed once here; the slot is this process's.
        unsafe {
            pg_sys::FreeDecodingContext(self.ctx);
            pg_sys::ReplicationSlotRelease();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::record_boundary;

    #[test]
    fn an_insert_position_just_past_a_page_header_ends_at_the_page() {
        let seg = 16 << 20;
        assert_eq!(record_boundary(0x2_040A_A018, seg), 0x2_040A_A000, "a short header");
        assert_eq!(record_boundary(0x2_0400_0028, seg), 0x2_0400_0000, "a segment's long header");
        assert_eq!(
            record_boundary(0x2_040A_A020, seg),
            0x2_040A_A020,
            "a record ended 8 bytes into the page"
        );
        assert_eq!(record_boundary(0x2_040A_B1C0, seg), 0x2_040A_B1C0);
    }
}
