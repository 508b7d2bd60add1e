//! The worker's WAL capture step ([`Capture::pass`]): decode what was flushed since the last
//! pass, write each decoded transaction's events to the outbox (through `backend::pending`, as
//! any transaction's messages: packs, then the commit-order entry) with the new position, in
//! one worker transaction; confirm the slot once that commit is on disk.
//!
//! What must stay true: a decoded transaction at or before the recorded position is skipped
//! (it was staged before a crash that kept the slot behind); the slot is confirmed past staged
//! transactions only once the staging commit is flushed (the worker commits asynchronously); a
//! slot with no wal capture left is dropped only after everything before it was read.

use super::reader::Reader;
use super::{plugin, slot, spool};
use crate::backend::pending;
use crate::error::KafkaError;
use crate::shared;
use crate::store::{owner, wal};
use pgrx::bgworkers::BackgroundWorker;
use pgrx::pg_sys;
use std::panic::AssertUnwindSafe;

/// Bytes of decoded events staged per pass at most (a pass is one worker transaction; a larger
/// transaction is staged whole, spilled to disk while decoded).
const BUDGET: usize = 16 << 20;

/// WAL capture's state in the worker.
#[derive(Default)]
pub struct Capture {
    reader: Option<Reader>,
    /// Confirm the slot up to `.1` once the WAL is flushed up to `.0` (the staging commit).
    confirm: Option<(u64, u64)>,
}

/// What a pass did.
pub struct Staged {
    /// Transactions whose events went to the outbox.
    pub transactions: usize,
    /// Whether it stopped at its budget with more WAL to read.
    pub more: bool,
    /// Events that could not be made (each was skipped): why.
    pub failed: Vec<String>,
}

impl Capture {
    /// One pass, between the worker's transactions: nothing to do while the database has no
    /// slot of pg_kafka's.
    pub fn pass(&mut self) -> Result<Staged, KafkaError> {
        let mut staged = Staged { transactions: 0, more: false, failed: Vec::new() };
        self.confirm_flushed();
        let has_slot = slot::exists();
        shared::set_wal_capture(has_slot);
        if !has_slot {
            if let Some(r) = self.reader.take() {
                r.close();
            }
            return Ok(staged);
        }
        let reader = &mut self.reader;
        let done = BackgroundWorker::transaction(AssertUnwindSafe(|| -> Result<_, KafkaError> {
            if !owner::installed() {
                return Ok(None);
            }
            let name = slot_name();
            let (position, last_commit_end) = wal::position(&name)?;
            if reader.is_none() {
                *reader = Some(Reader::open(last_commit_end)?);
            }
            let Some(r) = reader.as_mut() else { return Ok(None) };
            let (read_to, more) = r.read(BUDGET)?;
            let (txns, failed) = spool::take();
            staged.failed = failed;
            staged.more = more;
            let mut last = position;
            for txn in txns {
                let end = txn.end_lsn;
                if end <= position {
                    continue; // staged before: the slot was behind the position
                }
                txn.each_pack(stage_pack)?;
                last = end;
                staged.transactions += 1;
            }
            if last != position {
                wal::set_position(&name, last, plugin::last_commit_end())?;
            }
            let drop = !staged.more && !wal::any_wal_capture()?;
            if drop {
                wal::forget(&name)?;
            }
            Ok(Some((read_to, drop)))
        }))?;
        let Some((read_to, drop)) = done else { return Ok(staged) };
        if drop {
            if let Some(r) = self.reader.take() {
                r.close();
            }
            slot::drop_slot();
            shared::set_wal_capture(false);
            self.confirm = None;
            pgrx::log!(
                "pg_kafka worker: no table is captured from the WAL any more; replication slot dropped"
            );
        } else if staged.transactions > 0 {
            // SAFETY: plain read of the end of this process's last commit record.
            self.confirm = Some((unsafe { pg_sys::XactLastCommitEnd }, read_to));
        } else {
            self.confirm = Some((0, read_to));
        }
        self.confirm_flushed();
        Ok(staged)
    }

    /// Confirms the slot if the staging commit it waits for is flushed.
    fn confirm_flushed(&mut self) {
        let Some((after, lsn)) = self.confirm else { return };
        // SAFETY: GetFlushRecPtr reads shared memory under its spinlock.
        if unsafe { pg_sys::GetFlushRecPtr(std::ptr::null_mut()) } >= after {
            if let Some(r) = &self.reader {
                r.confirm(lsn);
            }
            self.confirm = None;
        }
    }
}

fn slot_name() -> String {
    slot::name().to_string_lossy().into_owned()
}

/// Queues the messages of one spooled pack in the worker's transaction.
fn stage_pack(bytes: &[u8]) -> Result<(), KafkaError> {
    let messages = kafka_core::pack::unpack(0, bytes)
        .ok_or_else(|| KafkaError::Internal("a spooled pack of decoded events is malformed".into()))?;
    for m in &messages {
        pending::push_staged(&m.parts())?;
    }
    Ok(())
}
