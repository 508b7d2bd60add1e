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
    /// Whether the retained WAL is past `kafka.wal_retained_warning` (warned once per crossing).
    retained_warned: bool,
    /// The slot was lost (why), and is made again once no long transaction would hold that up.
    lost: Option<Lost>,
}

/// Why the slot must be made again.
#[derive(Clone, Copy)]
enum Lost {
    /// It is gone: a failover, or dropped by hand.
    Missing,
    /// PostgreSQL invalidated it.
    Invalidated,
}

impl Lost {
    /// What happened to the slot, as the log says it.
    fn said(self) -> &'static str {
        match self {
            Lost::Missing => {
                "was missing (a failover to a standby, which does not have it before PostgreSQL 17, or a slot \
                 dropped by hand)"
            }
            Lost::Invalidated => {
                "was invalidated by PostgreSQL (it kept more WAL than max_slot_wal_keep_size allows, or sat idle \
                 past idle_replication_slot_timeout) and was dropped"
            }
        }
    }
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
        // SAFETY: RecoveryInProgress reads shared memory; a standby decodes nothing (its slots,
        // if any, are not this server's to advance).
        if unsafe { pg_sys::RecoveryInProgress() } {
            return Ok(staged);
        }
        self.confirm_flushed();
        let has_slot = slot::exists();
        shared::set_wal_capture(has_slot);
        if !has_slot {
            if let Some(r) = self.reader.take() {
                r.close();
            }
            let why = self.lost.unwrap_or(Lost::Missing);
            staged.failed.extend(self.slot_lost(why)?);
            return Ok(staged);
        }
        self.lost = None; // (made again by a capture meanwhile, if it was lost)
        if self.reader.is_none() && slot::held_elsewhere() {
            return Ok(staged); // being made by a capture: the next pass opens it
        }
        if self.reader.is_none() && slot::invalidated() {
            // Unreadable for ever (opening it raises): made again, as a lost one.
            BackgroundWorker::transaction(slot::drop_slot);
            staged.failed.extend(self.slot_lost(Lost::Invalidated)?);
            return Ok(staged);
        }
        let reader = &mut self.reader;
        let done = BackgroundWorker::transaction(AssertUnwindSafe(|| -> Result<_, KafkaError> {
            let name = wal::slot_name();
            if !owner::installed() {
                // the extension was dropped: so goes its slot
                if let Some(r) = reader.take() {
                    r.close();
                }
                slot::drop_slot();
                return Ok(Some((0, true)));
            }
            let (position, last_commit_end) = wal::position(&name)?;
            if reader.is_none() {
                *reader = Some(Reader::open(position, last_commit_end)?);
            }
            let Some(r) = reader.as_mut() else { return Ok(None) };
            let (read_to, more) = r.read(BUDGET)?;
            let (spooled, failed) = spool::take()?;
            staged.failed = failed;
            staged.more = more;
            // (Transactions at or before `position` were skipped by the plugin.)
            if let Some(spooled) = spooled {
                let end = spooled.end_lsn;
                staged.transactions = spooled.transactions;
                spooled.each_pack(|p| pending::push_staged_pack(p.count, p.topics, p.stored, p.commit))?;
                wal::set_position(&name, end, plugin::last_commit_end())?;
            }
            // A capture being made holds the lock from the slot's creation to its commit.
            let drop = !staged.more
                && !wal::any_wal_capture()?
                && wal::try_lock_captures()?
                && !wal::any_wal_capture_now()?;
            if drop {
                // Inside the transaction that holds the lock: a capture being made waits for it,
                // then finds no slot and makes one.
                wal::forget(&name)?;
                if let Some(r) = reader.take() {
                    r.close();
                }
                slot::drop_slot();
            }
            Ok(Some((read_to, drop)))
        }))?;
        let Some((read_to, drop)) = done else { return Ok(staged) };
        if drop {
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
        staged.failed.extend(self.check_retained());
        Ok(staged)
    }

    /// Bytes of WAL flushed but not decoded yet, while a decoding context is open.
    pub fn behind(&self) -> Option<u64> {
        let read_to = self.reader.as_ref()?.read_to();
        // SAFETY: GetFlushRecPtr reads shared memory under its spinlock.
        Some(unsafe { pg_sys::GetFlushRecPtr(std::ptr::null_mut()) }.saturating_sub(read_to))
    }

    /// Warns once when the WAL the slot keeps passes `kafka.wal_retained_warning`.
    fn check_retained(&mut self) -> Option<String> {
        let limit = crate::gucs::wal_retained_warning()?;
        self.reader.as_ref()?;
        // SAFETY: this process holds the slot (a reader is open); the insert position is read
        // under its spinlock.
        let retained = unsafe {
            pg_sys::GetXLogInsertRecPtr().saturating_sub((*pg_sys::MyReplicationSlot).data.restart_lsn)
        };
        let over = retained > limit;
        let first = over && !self.retained_warned;
        self.retained_warned = over;
        first.then(|| {
            let why = format!(
                "WAL capture: replication slot {} keeps {} MB of WAL on disk, more than kafka.wal_retained_warning \
                 ({} MB): decoding is behind or stuck (see kafka.recent_errors), and the disk fills until it \
                 catches up",
                wal::slot_name(),
                retained >> 20,
                limit >> 20
            );
            pgrx::warning!("pg_kafka: {why}");
            why
        })
    }

    /// A table is captured from the WAL but the slot is gone, or was unreadable and dropped
    /// (`why`). Changes committed since cannot be decoded any more. Said in the log (a WARNING
    /// with the way out) and in `kafka.status.wal_slot_lost_at` until the wal-captured tables
    /// are backfilled; the slot is made again so that changes from then on are captured. Making
    /// it waits for the transactions that wrote and run then: while one has run for a second or
    /// more, it is put off to a later pass, and delivery goes on meanwhile.
    fn slot_lost(&mut self, why: Lost) -> Result<Option<String>, KafkaError> {
        let first = self.lost.is_none();
        let made = BackgroundWorker::transaction(|| -> Result<Option<bool>, KafkaError> {
            if !owner::installed() || !wal::any_wal_capture()? {
                return Ok(None);
            }
            if wal::long_writer_running()? {
                return Ok(Some(false));
            }
            // In a transaction that wrote nothing (it would wait for itself).
            slot::create();
            Ok(Some(true))
        })?;
        if first && made.is_some() {
            BackgroundWorker::transaction(|| wal::note_lost(&wal::slot_name()))?;
        }
        let what = why.said();
        let why_text = match made {
            None => {
                self.lost = None;
                return Ok(None);
            }
            Some(false) if first => {
                self.lost = Some(why);
                format!(
                    "WAL capture: replication slot {} {what}; it is made again once the transactions that wrote and \
                     have run for a second or more end (delivery goes on meanwhile)",
                    wal::slot_name()
                )
            }
            Some(false) => return Ok(None),
            Some(true) => {
                self.lost = None;
                format!(
                    "WAL capture: replication slot {} {what}: changes committed before it was made again at {} are \
                     not captured; call kafka.backfill(table) for each table of kafka.captures with method 'wal' to \
                     send their current rows",
                    wal::slot_name(),
                    // SAFETY: GetFlushRecPtr reads shared memory under its spinlock.
                    super::lsn_text(unsafe { pg_sys::GetFlushRecPtr(std::ptr::null_mut()) })
                )
            }
        };
        pgrx::warning!("pg_kafka: {why_text}");
        Ok(Some(why_text))
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
