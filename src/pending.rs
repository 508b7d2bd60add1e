//! Messages a backend produced in its open transaction, and the transaction callbacks that write
//! them to the outbox.
//!
//! `produce()` gives each message its outbox id at once (`nextval`, so ids follow the order the
//! session produced them in) and keeps it in backend memory; capture events are appended to an
//! open pack that took one id (`pack`). They are written to `kafka.outbox` (`append`): when the
//! current (sub)transaction has buffered enough, before a subtransaction commits
//! (`PRE_COMMIT_SUB`), and before the transaction commits or prepares. So:
//! - what an aborted subtransaction produced is dropped with it (buffered entries are tagged with
//!   their subtransaction; written rows roll back with the subtransaction);
//! - memory is bounded by the flush threshold times the subtransaction nesting depth;
//! - at COMMIT only the worker's latch is set, which cannot fail.

use crate::outbox::{self, OutboxMessage, Sequence};
use crate::{pack, shared};
use pgrx::pg_sys::{self, SubTransactionId};
use pgrx::prelude::*;
use std::cell::RefCell;
use std::ffi::c_void;

/// PostgreSQL's `TopSubTransactionId`: the subtransaction id of the top-level transaction.
const TOP_SUBXACT: SubTransactionId = 1;
/// Flush the current subtransaction's messages once it has buffered this many...
const FLUSH_MESSAGES: usize = 10_000;
/// ...or this many payload bytes.
const FLUSH_BYTES: usize = 8 * 1024 * 1024;

struct Entry {
    subxact: SubTransactionId,
    msg: OutboxMessage,
}

#[derive(Default)]
struct Txn {
    entries: Vec<Entry>,
    /// Entries and bytes at the end of `entries` that belong to the current subtransaction.
    tail_len: usize,
    tail_bytes: usize,
    /// The outbox sequence, looked up once per transaction.
    sequence: Option<Sequence>,
    /// Set the worker's latch when this transaction commits.
    wake_at_commit: bool,
    /// Have the worker make a new producer when this transaction commits.
    reload_at_commit: bool,
}

thread_local! {
    static TXN: RefCell<Txn> = RefCell::new(Txn::default());
}

/// Registers the transaction callbacks; called once from `_PG_init`.
pub fn init() {
    unsafe {
        pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subxact), std::ptr::null_mut());
    }
}

/// Queues one message in the current transaction; gives it its outbox id and returns that.
pub fn push(mut msg: OutboxMessage) -> i64 {
    let seq = TXN.with_borrow(|t| t.sequence).unwrap_or_else(|| {
        let s = outbox::sequence();
        TXN.with_borrow_mut(|t| t.sequence = Some(s));
        s
    });
    let id = outbox::next_id(seq);
    msg.id = id;
    let subxact = unsafe { pg_sys::GetCurrentSubTransactionId() };
    let size = msg.size();
    let full = TXN.with_borrow_mut(|t| {
        if t.entries.last().is_some_and(|e| e.subxact == subxact) {
            t.tail_len += 1;
            t.tail_bytes += size;
        } else {
            t.tail_len = 1;
            t.tail_bytes = size;
        }
        t.entries.push(Entry { subxact, msg });
        t.wake_at_commit = true;
        t.tail_len >= FLUSH_MESSAGES || t.tail_bytes >= FLUSH_BYTES
    });
    if full {
        flush_tail(subxact);
    }
    id
}

/// Queues one captured change event. Events are packed (`pack`): appended to the current
/// subtransaction's open pack, or to a new one (with a new outbox id) when there is none or it
/// is full. A `produce()` in between closes the pack, so order holds.
pub fn push_event(topic: &str, key: Option<&[u8]>, value: Option<&[u8]>) {
    let subxact = unsafe { pg_sys::GetCurrentSubTransactionId() };
    let appended = TXN.with_borrow_mut(|t| {
        let size = match t.entries.last_mut() {
            Some(e) if e.subxact == subxact && pack::has_room(&e.msg) => {
                let payload = e.msg.payload.as_mut().expect("a pack has a payload");
                let before = payload.len();
                pack::append(payload, topic, key, value);
                e.msg.packed = e.msg.packed.map(|n| n + 1);
                payload.len() - before
            }
            _ => return None,
        };
        t.tail_len += 1;
        t.tail_bytes += size;
        Some(t.tail_len >= FLUSH_MESSAGES || t.tail_bytes >= FLUSH_BYTES)
    });
    match appended {
        Some(true) => flush_tail(subxact),
        Some(false) => {}
        None => {
            let mut payload = Vec::with_capacity(1024);
            pack::append(&mut payload, topic, key, value);
            push(OutboxMessage {
                topic: topic.to_owned(),
                payload: Some(payload),
                packed: Some(1),
                ..Default::default()
            });
        }
    }
}

/// Wakes the worker when the current transaction commits (for rows written to the outbox by SQL).
pub fn wake_at_commit() {
    TXN.with_borrow_mut(|t| t.wake_at_commit = true);
}

/// Makes the worker start a new producer (fresh metadata) when the current transaction commits.
pub fn reload_at_commit() {
    TXN.with_borrow_mut(|t| t.reload_at_commit = true);
}

/// Writes the buffered messages of subtransaction `subxact` (the current one) to the outbox.
fn flush_tail(subxact: SubTransactionId) {
    let (batch, seq) = TXN.with_borrow_mut(|t| {
        let keep = t.entries.iter().rposition(|e| e.subxact != subxact).map_or(0, |i| i + 1);
        let batch: Vec<OutboxMessage> = t.entries.drain(keep..).map(|e| e.msg).collect();
        recount_tail(t);
        (batch, t.sequence)
    });
    if let (false, Some(seq)) = (batch.is_empty(), seq) {
        outbox::insert(&batch, seq);
    }
}

/// After the tail changed hands, count the entries of the (now) current subtransaction.
fn recount_tail(t: &mut Txn) {
    let last = t.entries.last().map(|e| e.subxact);
    let tail = t.entries.iter().rev().take_while(|e| Some(e.subxact) == last);
    (t.tail_len, t.tail_bytes) =
        tail.fold((0, 0), |(n, b), e| (n + e.msg.packed.unwrap_or(1) as usize, b + e.msg.size()));
}

fn reset() {
    TXN.with_borrow_mut(|t| *t = Txn::default());
}

#[pg_guard]
unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut c_void) {
    use pg_sys::XactEvent::*;
    match event {
        // Still inside the transaction: an error here aborts it cleanly.
        XACT_EVENT_PRE_COMMIT | XACT_EVENT_PRE_PREPARE => flush_tail(TOP_SUBXACT),
        // Committed: nothing here may fail. Setting a latch cannot.
        XACT_EVENT_COMMIT => {
            let (wake, reload) = TXN.with_borrow(|t| (t.wake_at_commit, t.reload_at_commit));
            if reload {
                shared::request_close();
            } else if wake {
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
        SUBXACT_EVENT_PRE_COMMIT_SUB => flush_tail(my_subid),
        SUBXACT_EVENT_ABORT_SUB => TXN.with_borrow_mut(|t| {
            t.entries.retain(|e| e.subxact < my_subid);
            recount_tail(t);
        }),
        _ => {}
    }
}
