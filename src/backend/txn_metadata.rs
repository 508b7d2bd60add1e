//! Debezium's transaction metadata (`provide.transaction.metadata`), on when
//! `kafka.transaction_topic` names a topic: every capture event carries a `transaction` block
//! (`id`, `total_order`, `data_collection_order`), and each transaction that captured something
//! writes a BEGIN record before its first event and an END record (event counts per table) as it
//! commits, to that topic. Counters follow savepoints: a rolled-back subtransaction takes its
//! events, its counts and, if it held the first event, the BEGIN record with it.

use kafka_core::pack::Parts;
use pgrx::pg_sys::{self, SubTransactionId};
use std::cell::RefCell;
use std::ffi::c_void;
use std::fmt::Write;

#[derive(Clone, Default)]
struct Counts {
    /// Events of the transaction so far (0: no BEGIN written yet).
    total: u64,
    /// Per table (`"schema.table"` as a JSON string), in the order first seen.
    per_table: Vec<(String, u64)>,
}

#[derive(Default)]
struct Meta {
    topic: String,
    id: String,
    counts: Counts,
    /// Counts as they were when each open subtransaction began (innermost last).
    saved: Vec<(SubTransactionId, Counts)>,
}

thread_local! {
    static META: RefCell<Meta> = RefCell::new(Meta::default());
}

/// Registers the subtransaction callback; called once from `_PG_init`.
pub fn init() {
    // SAFETY: a plain C callback with no argument, registered once per backend.
    unsafe { pg_sys::RegisterSubXactCallback(Some(on_subxact), std::ptr::null_mut()) };
}

/// A BEGIN or END record, for the caller to queue.
pub struct Record {
    topic: String,
    key: String,
    value: String,
}

impl Record {
    pub fn parts(&self) -> Parts<'_> {
        Parts {
            topic: &self.topic,
            key: Some(self.key.as_bytes()),
            payload: Some(self.value.as_bytes()),
            ..Default::default()
        }
    }
}

/// The `transaction` block of the next event on table `collection` (a JSON string,
/// `"schema.table"`), and the BEGIN record to queue on `topic` before the event if it is the
/// transaction's first.
pub fn next_event(topic: &str, collection: &str) -> (String, Option<Record>) {
    let first = META.with_borrow(|m| m.counts.total == 0);
    let mut begin = None;
    if first {
        // SAFETY: reads the current transaction's id (assigned if it has none yet).
        let xid = unsafe { pg_sys::GetTopFullTransactionId() }.value;
        let id = xid.to_string();
        let value = format!(
            "{{\"status\":\"BEGIN\",\"id\":\"{id}\",\"event_count\":null,\"data_collections\":null,\"ts_ms\":{}}}",
            now_ms()
        );
        begin = Some(record(topic, &id, value));
        META.with_borrow_mut(|m| (m.topic, m.id) = (topic.to_owned(), id));
    }
    let block = META.with_borrow_mut(|m| {
        m.counts.total += 1;
        let n = match m.counts.per_table.iter_mut().find(|(c, _)| c == collection) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                m.counts.per_table.push((collection.to_owned(), 1));
                1
            }
        };
        format!("{{\"id\":\"{}\",\"total_order\":{},\"data_collection_order\":{n}}}", m.id, m.counts.total)
    });
    (block, begin)
}

/// The END record of a transaction that captured something, to queue before it commits or
/// prepares (before its last pack is written); forgets the transaction.
pub fn at_pre_commit() -> Option<Record> {
    let (topic, id, counts) = META
        .with_borrow(|m| (m.counts.total > 0).then(|| (m.topic.clone(), m.id.clone(), m.counts.clone())))?;
    let mut value = format!(
        "{{\"status\":\"END\",\"id\":\"{id}\",\"event_count\":{},\"data_collections\":[",
        counts.total
    );
    for (i, (collection, n)) in counts.per_table.iter().enumerate() {
        let comma = if i > 0 { "," } else { "" };
        let _ = write!(value, "{comma}{{\"data_collection\":{collection},\"event_count\":{n}}}");
    }
    let _ = write!(value, "],\"ts_ms\":{}}}", now_ms());
    reset();
    Some(record(&topic, &id, value))
}

/// Forgets the transaction (at commit, abort or prepare).
pub fn reset() {
    META.with_borrow_mut(|m| *m = Meta::default());
}

fn record(topic: &str, id: &str, value: String) -> Record {
    Record { topic: topic.to_owned(), key: format!("{{\"id\":\"{id}\"}}"), value }
}

fn now_ms() -> i64 {
    // SAFETY: reads the clock.
    let ts = unsafe { pg_sys::GetCurrentTimestamp() };
    crate::backend::input::unix_us(ts).div_euclid(1000)
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_subxact(
    event: pg_sys::SubXactEvent::Type,
    my_subid: SubTransactionId,
    _parent: SubTransactionId,
    _arg: *mut c_void,
) {
    use pg_sys::SubXactEvent::*;
    META.with_borrow_mut(|m| match event {
        SUBXACT_EVENT_START_SUB => {
            let counts = m.counts.clone();
            m.saved.push((my_subid, counts));
        }
        SUBXACT_EVENT_COMMIT_SUB => {
            m.saved.retain(|(s, _)| *s < my_subid);
        }
        SUBXACT_EVENT_ABORT_SUB => {
            if let Some(i) = m.saved.iter().position(|(s, _)| *s == my_subid) {
                m.counts = m.saved[i].1.clone();
                m.saved.truncate(i);
            }
        }
        _ => {}
    });
}
