//! Messages a backend produced in its open transaction, and the transaction callbacks that write
//! them to the outbox.
//!
//! `produce()`, `publish()` and the capture triggers append each message to the current
//! subtransaction's open pack (`pack`), which took its id from the outbox sequence when it was
//! opened; so ids follow the order the session produced them in. Packs are written to
//! `kafka.outbox` (`append`): when the current (sub)transaction has buffered enough, before a
//! subtransaction commits (`PRE_COMMIT_SUB`), and before the transaction commits or prepares,
//! when the transaction also takes its place in commit order (`kafka.outbox_commit`). So:
//! - what an aborted subtransaction produced is dropped with it (buffered packs are tagged with
//!   their subtransaction; written rows roll back with the subtransaction);
//! - memory is bounded by the flush threshold times the subtransaction nesting depth;
//! - the commit-order number is taken after every lock the transaction waited for;
//! - `kafka.max_backlog` is checked as each message is buffered (`check_backlog`), so one large
//!   transaction is stopped as it grows, before it writes what passes the limit;
//! - at COMMIT only the worker's latch is set, which cannot fail.

use crate::error::KafkaError;
use crate::shared;
use crate::store::append;
use crate::store::owner::{self, Store};
use kafka_core::commit_marks::Commit;
use kafka_core::pack::{Pack, Parts};
use pgrx::pg_sys::{self, SubTransactionId};
use pgrx::prelude::*;
use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::time::{Duration, Instant};

/// PostgreSQL's `TopSubTransactionId`: the subtransaction id of the top-level transaction.
const TOP_SUBXACT: SubTransactionId = 1;
/// Flush the current subtransaction's messages once it has buffered this many...
const FLUSH_MESSAGES: usize = 10_000;
/// ...or this many payload bytes.
const FLUSH_BYTES: usize = 8 * 1024 * 1024;

struct Entry {
    subxact: SubTransactionId,
    pack: Pack,
    /// The payload as stored, made ahead (WAL capture's sealed packs; `pack.bytes` is empty).
    stored: Option<Vec<u8>>,
    /// What fills its events' commit marks (a streamed transaction's, decoded from the WAL).
    commit: Option<Commit>,
}

#[derive(Default)]
struct Txn {
    entries: Vec<Entry>,
    /// Messages and bytes at the end of `entries` that belong to the current subtransaction.
    tail_len: usize,
    tail_bytes: usize,
    /// pg_kafka's relations, looked up once per transaction.
    store: Option<Store>,
    /// Subtransactions that wrote packs to the outbox (while none of them aborted, the
    /// transaction must take its place in commit order).
    written: Vec<SubTransactionId>,
    /// The id of the pack opened last: only it may take more messages (a pack opened earlier
    /// and still buffered, e.g. the top level's while a savepoint's was written, would put a
    /// later message before the savepoint's in id order).
    last_pack: i64,
    /// Set the worker's latch when this transaction commits.
    wake_at_commit: bool,
    /// Have the worker make a new producer when this transaction commits.
    reload_at_commit: bool,
}

/// How many buffers of written packs a session keeps for its next packs: a bulk statement fills
/// thousands of packs of up to 256 kB, and reusing their memory saves the copies of growing
/// them and the page faults of fresh memory (at most 8 × 512 kB kept).
const SPARE_BUFFERS: usize = 8;

/// What `kafka.max_backlog` is checked against: the disk pg_kafka's queue tables took at the last
/// measure ([`store::size::size_bytes`](crate::store::size::size_bytes)) plus what the transaction held unwritten then, and the bytes
/// this session queued since. Kept across transactions: what a committed transaction wrote counts
/// until the next measure sees it on disk.
#[derive(Clone, Copy)]
struct Backlog {
    measured: i64,
    since: i64,
    at: Option<Instant>,
}

/// A pack opened later than this after the last measure measures again: what other sessions
/// wrote meanwhile is not seen for longer (this session's own bytes always count, in `since`).
/// At most about 100 measures a second per session, of some microseconds each.
const MEASURE_EVERY: Duration = Duration::from_millis(10);

thread_local! {
    static TXN: RefCell<Txn> = RefCell::new(Txn::default());
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static BACKLOG: Cell<Backlog> = const { Cell::new(Backlog { measured: 0, since: 0, at: None }) };
}

/// A new pack, in the memory of one already written if there is one.
fn new_pack(id: i64) -> Pack {
    match SPARE.with_borrow_mut(Vec::pop) {
        Some(buffer) => Pack::with_buffer(id, buffer),
        None => Pack::new(id),
    }
}

/// Keeps the memory of written packs for the next ones (not that of a pack a huge message grew).
fn recycle(packs: Vec<Pack>) {
    SPARE.with_borrow_mut(|spare| {
        let fit =
            packs.into_iter().map(|p| p.bytes).filter(|b| b.capacity() <= 2 * kafka_core::pack::MAX_BYTES);
        spare.extend(fit.take(SPARE_BUFFERS.saturating_sub(spare.len())));
    });
}

/// Registers the transaction callbacks; called once from `_PG_init`.
pub fn init() {
    // SAFETY: called once per process from _PG_init; the callbacks are 'static functions of the
    // expected signature (the library is never unloaded) and take no argument.
    unsafe {
        pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subxact), std::ptr::null_mut());
    }
}

/// The outbox, looked up at the transaction's first message.
fn store() -> Result<Store, KafkaError> {
    if let Some(s) = TXN.with_borrow(|t| t.store) {
        return Ok(s);
    }
    let s = owner::store()?;
    TXN.with_borrow_mut(|t| t.store = Some(s));
    Ok(s)
}

/// Checks the session's `kafka.max_backlog` once a message of `added` bytes is buffered (in a
/// pack it opened if `opened`), before anything of it is written: the queue's disk plus what
/// the transaction holds unwritten may not pass it. Per message only arithmetic: the estimate
/// is the last measure plus what this session queued since; it is measured again when a pack
/// opens and the last measure is older than `MEASURE_EVERY`, and whenever the estimate passes the
/// limit, so a refusal always rests on a measure taken just now. The error aborts the
/// (sub)transaction, with the message and what it buffered.
fn check_backlog(added: usize, opened: bool) -> Result<(), KafkaError> {
    let Some(limit) = crate::gucs::max_backlog_bytes() else {
        return Ok(());
    };
    let mut b = BACKLOG.get();
    b.since += added as i64;
    let stale = opened && b.at.is_none_or(|at| at.elapsed() >= MEASURE_EVERY);
    if stale || b.measured + b.since > limit {
        let disk = crate::store::size::size_bytes(store()?);
        let unwritten: i64 = TXN.with_borrow(|t| t.entries.iter().map(|e| e.pack.bytes.len() as i64).sum());
        b = Backlog { measured: disk + unwritten, since: 0, at: Some(Instant::now()) };
    }
    BACKLOG.set(b);
    let size = b.measured + b.since;
    if size > limit {
        return Err(KafkaError::BacklogFull { size, limit });
    }
    Ok(())
}

/// The current transaction took over packs already in the outbox (`kafka.release()` gives a
/// restored copy's packs its own transaction id): at PRE-COMMIT it takes their place in commit
/// order, as for packs it wrote itself.
pub fn adopt_packs() -> Result<(), KafkaError> {
    // SAFETY: plain read of the current transaction state; called by an SQL function, inside a
    // transaction.
    let subxact = unsafe { pg_sys::GetCurrentSubTransactionId() };
    store()?;
    TXN.with_borrow_mut(|t| {
        if t.written.last() != Some(&subxact) {
            t.written.push(subxact);
        }
    });
    Ok(())
}

/// Queues a whole pack of a transaction decoded from the WAL, in the worker's staging
/// transaction, sealed (`stored`: its payload as the outbox stores it, already compressed; it
/// holds `count` messages of `topics`; `commit` fills their commit marks, if any): it becomes
/// one outbox row as it is.
/// `kafka.max_backlog` does not apply (its transaction committed already; refusing it would
/// only stop WAL capture).
pub fn push_staged_pack(
    count: i32,
    topics: Vec<String>,
    stored: Vec<u8>,
    commit: Option<Commit>,
) -> Result<(), KafkaError> {
    // SAFETY: plain read of the current transaction state; called inside the worker's transaction.
    let subxact = unsafe { pg_sys::GetCurrentSubTransactionId() };
    let id = append::next_pack_id(store()?)?;
    let size = stored.len();
    let pack = Pack { id, count, bytes: Vec::new(), topics };
    let full = TXN.with_borrow_mut(|t| {
        t.last_pack = pack.id;
        if t.entries.last().is_none_or(|e| e.subxact != subxact) {
            t.tail_len = 0;
            t.tail_bytes = 0;
        }
        t.tail_len += count as usize;
        t.tail_bytes += size;
        t.wake_at_commit = true;
        t.entries.push(Entry { subxact, pack, stored: Some(stored), commit });
        t.tail_len >= FLUSH_MESSAGES || t.tail_bytes >= FLUSH_BYTES
    });
    if full {
        flush_tail(subxact)?;
    }
    Ok(())
}

/// Queues one message in the current transaction; returns its id.
pub fn push(msg: &Parts) -> Result<i64, KafkaError> {
    // SAFETY: plain read of the current transaction state; called inside a transaction (by SQL
    // functions, triggers, and txn_metadata at PRE_COMMIT).
    let subxact = unsafe { pg_sys::GetCurrentSubTransactionId() };
    let open = TXN.with_borrow(|t| {
        t.entries
            .last()
            .is_some_and(|e| e.subxact == subxact && e.pack.id == t.last_pack && e.pack.has_room())
    });
    if !open {
        let pack = new_pack(append::next_pack_id(store()?)?);
        TXN.with_borrow_mut(|t| {
            t.last_pack = pack.id;
            if t.entries.last().is_none_or(|e| e.subxact != subxact) {
                t.tail_len = 0;
                t.tail_bytes = 0;
            }
            t.entries.push(Entry { subxact, pack, stored: None, commit: None });
        });
    }
    let (id, size, full) = TXN.with_borrow_mut(|t| {
        let (id, size) = t.entries.last_mut().expect("a pack is open").pack.push(msg);
        t.tail_len += 1;
        t.tail_bytes += size;
        t.wake_at_commit = true;
        (id, size, t.tail_len >= FLUSH_MESSAGES || t.tail_bytes >= FLUSH_BYTES)
    });
    check_backlog(size, !open)?;
    if full {
        flush_tail(subxact)?;
    }
    Ok(id)
}

/// Makes the worker start a new producer (fresh metadata) when the current transaction commits.
pub fn reload_at_commit() {
    TXN.with_borrow_mut(|t| t.reload_at_commit = true);
}

/// Writes the buffered packs of subtransaction `subxact` (the current one) to the outbox.
fn flush_tail(subxact: SubTransactionId) -> Result<(), KafkaError> {
    let (rows, store) = TXN.with_borrow_mut(|t| {
        let keep = t.entries.iter().rposition(|e| e.subxact != subxact).map_or(0, |i| i + 1);
        let rows: Vec<append::Row> = t
            .entries
            .drain(keep..)
            .map(|e| append::Row { pack: e.pack, stored: e.stored, commit: e.commit })
            .collect();
        if !rows.is_empty() && t.written.last() != Some(&subxact) {
            t.written.push(subxact);
        }
        recount_tail(t);
        (rows, t.store)
    });
    if let (false, Some(store)) = (rows.is_empty(), store) {
        append::insert(&rows, store)?;
    }
    recycle(rows.into_iter().map(|r| r.pack).collect());
    Ok(())
}

/// After the tail changed hands, count the messages of the (now) current subtransaction.
fn recount_tail(t: &mut Txn) {
    let last = t.entries.last().map(|e| e.subxact);
    let tail = t.entries.iter().rev().take_while(|e| Some(e.subxact) == last);
    (t.tail_len, t.tail_bytes) = tail.fold((0, 0), |(n, b), e| {
        (n + e.pack.count as usize, b + e.pack.bytes.len() + e.stored.as_ref().map_or(0, Vec::len))
    });
}

/// Before the transaction commits or prepares: write what is buffered and, if it wrote anything
/// that is still live, take its place in commit order.
fn pre_commit() -> Result<(), KafkaError> {
    if let Some(end) = crate::backend::txn_metadata::at_pre_commit() {
        push(&end.parts())?; // the END record goes in with the last pack
    }
    flush_tail(TOP_SUBXACT)?;
    let (written, store) = TXN.with_borrow(|t| (!t.written.is_empty(), t.store));
    match (written, store) {
        (true, Some(store)) => append::insert_commit(store),
        _ => Ok(()),
    }
}

fn reset() {
    crate::backend::txn_metadata::reset();
    TXN.with_borrow_mut(|t| *t = Txn::default());
}

#[pg_guard]
unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut c_void) {
    use pg_sys::XactEvent::*;
    match event {
        // Still inside the transaction: an error here aborts it cleanly.
        XACT_EVENT_PRE_COMMIT | XACT_EVENT_PRE_PREPARE => pre_commit().unwrap_or_else(|e| e.raise()),
        // Committed: nothing here may fail. Setting a latch cannot.
        XACT_EVENT_COMMIT => {
            let (wake, reload) = TXN.with_borrow(|t| (t.wake_at_commit, t.reload_at_commit));
            // With WAL capture on, a transaction that wrote may have changed a captured table:
            // the worker decodes it (a plain read of shared memory otherwise).
            // SAFETY: plain read of the committing transaction's id, still set during its
            // COMMIT callbacks.
            let wrote = || unsafe { pg_sys::GetTopTransactionIdIfAny() } != pg_sys::InvalidTransactionId;
            if reload {
                shared::request_close();
            } else if wake || (shared::wal_capture() && wrote()) {
                shared::wake_for_commit();
            }
            reset();
        }
        XACT_EVENT_ABORT | XACT_EVENT_PREPARE => reset(),
        _ => {}
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_subxact(
    event: pg_sys::SubXactEvent::Type,
    my_subid: SubTransactionId,
    _parent: SubTransactionId,
    _arg: *mut c_void,
) {
    use pg_sys::SubXactEvent::*;
    match event {
        SUBXACT_EVENT_PRE_COMMIT_SUB => flush_tail(my_subid).unwrap_or_else(|e| e.raise()),
        SUBXACT_EVENT_ABORT_SUB => TXN.with_borrow_mut(|t| {
            t.entries.retain(|e| e.subxact < my_subid);
            t.written.retain(|s| *s < my_subid);
            recount_tail(t);
        }),
        _ => {}
    }
}
