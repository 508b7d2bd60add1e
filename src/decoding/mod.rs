//! WAL capture (`kafka.capture(…, method => 'wal')`): row changes read from the WAL by logical
//! decoding inside the worker, with pg_kafka's own output plugin, and staged into the outbox.
//!
//! The way of a change: a session commits (and only wakes the worker, from
//! `backend::pending`'s commit callback) → the worker's
//! [`reader::Reader`] decodes the WAL up to the flush point with a decoding context it keeps open
//! → [`plugin`] encodes each change of a wal-captured table with the trigger path's encoder
//! (`backend::capture::Events`), into [`spool`] (memory, spilled to a temporary file past
//! [`spool::SPILL_BYTES`]) → [`stage`] writes each decoded transaction's events to the outbox
//! through `backend::pending`, in one worker transaction with [`crate::store::wal`]'s position
//! (the end LSN of the last transaction staged) → the slot is confirmed up to what was read once
//! that commit is flushed. From the outbox on, delivery, order, dead letters and exactly-once
//! are the outbox's.
//!
//! What must stay true: the slot never passes a transaction whose events are not durably in
//! the outbox (nothing lost); a transaction at or before the recorded position is never staged
//! again (nothing twice, whatever crashed when); decoded transactions are staged in commit
//! order, each in one worker transaction (a table's events in commit order, by construction).

pub mod plugin;
pub mod reader;
pub mod slot;
pub mod spool;
pub mod stage;
pub mod stream;
mod target;

pub use stage::Capture;

use pgrx::pg_sys;

/// PostgreSQL's `DoNotReplicateId` (replication/origin.h): the replication origin of changes
/// not to be replicated.
const DO_NOT_REPLICATE: pg_sys::RepOriginId = u16::MAX;

/// Tags everything the worker writes from now on (staging, deletes of delivered rows,
/// positions) with the origin [`DO_NOT_REPLICATE`], which [`plugin`] filters out before the
/// reorder buffer queues any of it: decoding never spends time on pg_kafka's own writes, which
/// at saturation are as much WAL again as the sessions'. (No origin session is set up: this
/// origin's progress is not tracked, and a commit with it advances nothing.)
pub fn mark_own_writes() {
    // SAFETY: a plain process-local global of this backend, read when it writes WAL.
    unsafe { pg_sys::replorigin_session_origin = DO_NOT_REPLICATE };
}

/// An LSN as PostgreSQL writes it (`16/B374D848`).
fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn as u32)
}
