//! The sessions' appends to the queue: a pack's id ([`next_pack_id`]), the packs of a
//! transaction ([`insert`] into `kafka.outbox`) and, last before it commits, its place in commit
//! order ([`insert_commit`] into `kafka.outbox_commit`). Made on the caller's behalf as the tables'
//! owner ([`owner::as_owner`](crate::store::owner::as_owner) for the sequences; the rows are written directly, which checks no
//! privilege). Called by [`backend::pending`](crate::backend::pending) only.
//!
//! No SQL: each row is formed and written with `heap_insert` (which compresses and TOASTs large
//! payloads) and entered in the table's indexes, the way COPY does, with no executor, no
//! parameter arrays and no copies beyond the tuple itself. Only the tables' own columns and
//! plain-column indexes are supported; anything else (an altered outbox) is refused with a clear
//! error rather than written wrongly.
//!
//! Packed payloads are lz4-compressed here (by [`compressed`]) even when small, which PostgreSQL
//! only does for rows over ~2 kB: a one-row statement's pack shrinks to about half, and with it
//! the WAL every transaction writes. Readers see plain bytea (PostgreSQL decompresses on access).

use crate::error::KafkaError;
use crate::relation::Open;
use crate::store::owner::{as_owner, Store};
use kafka_core::commit_marks::Commit;
use kafka_core::pack::Pack;
use kafka_core::stored::COMPRESS_FROM;
use pgrx::pg_sys::{self, Datum};
use pgrx::{IntoDatum, PgMemoryContexts};
use std::ffi::CStr;

/// `TOAST_LZ4_COMPRESSION` (access/toast_compression.h).
const LZ4: std::ffi::c_char = b'l' as std::ffi::c_char;

unsafe extern "C-unwind" {
    /// PostgreSQL's inline compression of a plain varlena (access/toast_internals.h); a null
    /// Datum when it does not make it smaller. Not in pgrx's bindings; called through
    /// `pg_guard_ffi_boundary` like they are.
    fn toast_compress_datum(value: Datum, cmethod: std::ffi::c_char) -> Datum;
}

fn nextval(store: Store, seq: pg_sys::Oid) -> Result<i64, KafkaError> {
    // SAFETY: nextval_oid takes one regclass (oid) argument and returns a non-null int8; `seq` is
    // the oid of one of pg_kafka's sequences, from `store`. Errors are raised as Rust panics by the
    // guard.
    as_owner(store, || unsafe { pgrx::direct_function_call::<i64>(pg_sys::nextval_oid, &[seq.into_datum()]) })
        .ok_or_else(|| KafkaError::Internal("nextval returned NULL".into()))
}

/// The id of a new pack: ids grow in the order a session asks for them.
pub fn next_pack_id(store: Store) -> Result<i64, KafkaError> {
    nextval(store, store.id_seq)
}

/// The current transaction's full id as an `xid8` Datum (assigns one if it has none yet).
fn xid_datum() -> Datum {
    // SAFETY: inside the transaction that writes to the outbox (it needs an xid anyway); PostgreSQL
    // raises where one cannot be assigned (recovery, parallel mode), turned into a Rust panic.
    let xid = unsafe { pg_sys::GetTopFullTransactionId() };
    Datum::from(xid.value)
}

const OUTBOX_COLUMNS: [(&str, pg_sys::Oid); 8] = [
    ("id", pg_sys::INT8OID),
    ("xid", pg_sys::XID8OID),
    ("messages", pg_sys::INT4OID),
    ("topics", pg_sys::TEXTARRAYOID),
    ("payload", pg_sys::BYTEAOID),
    ("produced_at", pg_sys::TIMESTAMPTZOID),
    ("first_attempt_at", pg_sys::TIMESTAMPTZOID),
    ("commit_marks", pg_sys::INT8ARRAYOID),
];
const COMMIT_COLUMNS: [(&str, pg_sys::Oid); 2] = [("csn", pg_sys::INT8OID), ("xid", pg_sys::XID8OID)];

/// A pack to append, with its payload as the outbox stores it if that was made ahead
/// ([`kafka_core::stored::stored_form`]), and what fills its events' commit marks if they hold
/// any ([`kafka_core::commit_marks`]).
pub struct Row {
    pub pack: Pack,
    pub stored: Option<Vec<u8>>,
    pub commit: Option<Commit>,
}

/// Appends packs to the outbox in the current transaction.
pub fn insert(rows: &[Row], store: Store) -> Result<(), KafkaError> {
    with_snapshot(|| {
        let xid = xid_datum();
        // SAFETY: plain read of the current transaction's start timestamp; a TimestampTz is a
        // by-value Datum.
        let produced_at = Datum::from(unsafe { pg_sys::GetCurrentTransactionStartTimestamp() });
        // The last column is 0.3.0's: the 0.1.0 -> 0.2.0 upgrade script queues its messages
        // (which hold no commit marks) into 0.2.0's outbox.
        write_rows(store.outbox, &OUTBOX_COLUMNS, 1, rows.len(), |i| {
            let Row { pack: p, stored, commit } = &rows[i];
            vec![
                p.id.into_datum(),
                Some(xid),
                p.count.into_datum(),
                p.topics.iter().map(String::as_str).collect::<Vec<&str>>().into_datum(),
                match stored {
                    Some(stored) => Some(stored_datum(stored)),
                    None => compressed(&p.bytes),
                },
                Some(produced_at),
                None,
                commit.and_then(|c| c.to_column().into_datum()),
            ]
        })
    })
}

/// Records the current transaction's place in commit order; called last before it commits.
pub fn insert_commit(store: Store) -> Result<(), KafkaError> {
    with_snapshot(|| {
        let csn = nextval(store, store.commit_seq)?;
        let xid = xid_datum();
        write_rows(store.commits, &COMMIT_COLUMNS, 0, 1, |_| vec![csn.into_datum(), Some(xid)])
    })
}

/// At COMMIT or RELEASE SAVEPOINT no statement is running: bring a snapshot of our own (TOAST
/// and unique checks may want one).
fn with_snapshot<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: reads the current transaction's active snapshot stack.
    let own_snapshot = unsafe { !pg_sys::ActiveSnapshotSet() };
    if own_snapshot {
        // SAFETY: inside a transaction (also at PRE_COMMIT, which still runs inside it); popped
        // below, or by the transaction's abort if `f` raises.
        unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot()) };
    }
    let r = f();
    if own_snapshot {
        // SAFETY: pops the snapshot pushed above: `own_snapshot` is true only when we pushed one.
        unsafe { pg_sys::PopActiveSnapshot() };
    }
    r
}

/// A bytea Datum of `bytes`, lz4-compressed when that makes it smaller. Allocated in the
/// current memory context.
fn compressed(bytes: &[u8]) -> Option<Datum> {
    let datum = bytes.into_datum()?;
    if bytes.len() < COMPRESS_FROM {
        return Some(datum);
    }
    // SAFETY: `datum` is a freshly built plain (uncompressed, untoasted) bytea varlena, which is
    // what toast_compress_datum expects; errors are turned into Rust panics by the guard.
    let packed =
        unsafe { pg_sys::submodules::ffi::pg_guard_ffi_boundary(|| toast_compress_datum(datum, LZ4)) };
    Some(if packed.is_null() { datum } else { packed })
}

/// A Datum of a varlena made ahead ([`kafka_core::stored::stored_form`]: WAL capture seals its
/// spooled packs so), copied into the current memory context.
fn stored_datum(stored: &[u8]) -> Datum {
    // SAFETY: palloc returns `stored.len()` writable bytes (it raises rather than return null);
    // `stored` is a whole varlena (header included), so the copy is one too.
    unsafe {
        let ptr = pg_sys::palloc(stored.len()) as *mut u8;
        std::ptr::copy_nonoverlapping(stored.as_ptr(), ptr, stored.len());
        Datum::from(ptr)
    }
}

/// Writes `rows` rows to relation `relid` (whose columns must be exactly `columns`, or all but
/// the last `newer` of them: an older version's table, while it is upgraded) in the current
/// transaction; `row(i)` gives the values of row `i` (None: NULL; a table without a column takes
/// only NULLs there), built in a memory context reset after each row.
fn write_rows(
    relid: pg_sys::Oid,
    columns: &[(&str, pg_sys::Oid)],
    newer: usize,
    rows: usize,
    mut row: impl FnMut(usize) -> Vec<Option<Datum>>,
) -> Result<(), KafkaError> {
    let lock = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
    // Closed when they go out of scope, with NoLock: like any INSERT, the transaction keeps its
    // lock until it ends, so the worker's TRUNCATE of an emptied outbox (which only tries the
    // lock) can never take rows of a transaction still open.
    // SAFETY: inside the caller's transaction.
    let table = unsafe { Open::relation(relid, lock) };
    let rel = table.get();
    // SAFETY: `rel` is open (held by `table`), so its descriptor is valid.
    let desc = unsafe { (*rel).rd_att };
    // SAFETY: `desc` is the descriptor of the open relation `rel`.
    let natts = unsafe { (*desc).natts } as usize;
    let (columns, absent) = match columns.len().checked_sub(natts) {
        Some(missing) if missing <= newer => columns.split_at(natts),
        _ => (columns, &[][..]),
    };
    // SAFETY: `desc` is the descriptor of the open relation `rel`.
    unsafe { check_columns(desc, columns) }.map_err(KafkaError::OutboxAltered)?;
    // SAFETY: `rel` is open, inside the caller's transaction, locked with `lock`.
    let indexes = unsafe { open_indexes(rel, lock) }.map_err(KafkaError::OutboxAltered)?;
    // SAFETY: inside a transaction.
    let cid = unsafe { pg_sys::GetCurrentCommandId(true) };
    let mut row_context = PgMemoryContexts::new("pg_kafka outbox row");
    for i in 0..rows {
        // SAFETY: check_columns made sure the table has exactly `columns`, and `row(i)` gives one
        // Datum per column, of that column's type (the caller's obligation: `insert` and
        // `insert_commit` build them for the outbox's column types), so `datums`/`nulls` hold
        // `natts` entries for heap_form_tuple. heap_insert sets `(*tuple).t_self`, which
        // index_insert needs; index keys are plain columns (open_indexes refuses expressions), so
        // their attribute numbers are 1..=natts and at most INDEX_MAX_KEYS (32). Everything
        // allocated per row lives in `row_context`, reset only after the row's heap and index
        // inserts are done.
        unsafe {
            row_context.switch_to(|_| -> Result<(), KafkaError> {
                let mut values = row(i);
                if values[columns.len()..].iter().any(Option::is_some) {
                    let absent: Vec<_> = absent.iter().map(|(c, _)| *c).collect();
                    return Err(KafkaError::OutboxAltered(format!("the columns {absent:?} are missing")));
                }
                values.truncate(columns.len());
                let mut datums: Vec<Datum> = values.iter().map(|v| v.unwrap_or(Datum::from(0))).collect();
                let mut nulls: Vec<bool> = values.iter().map(Option::is_none).collect();
                let tuple = pg_sys::heap_form_tuple(desc, datums.as_mut_ptr(), nulls.as_mut_ptr());
                pg_sys::heap_insert(rel, tuple, cid, 0, std::ptr::null_mut());
                for (index, info) in &indexes {
                    let (index, info) = (index.get(), *info);
                    let keys = (*info).ii_NumIndexKeyAttrs as usize;
                    let mut key_datums = [Datum::from(0); 32];
                    let mut key_nulls = [false; 32];
                    for k in 0..keys {
                        let column = (*info).ii_IndexAttrNumbers[k] as usize - 1;
                        key_datums[k] = datums[column];
                        key_nulls[k] = nulls[column];
                    }
                    let unique = if (*(*index).rd_index).indisunique {
                        pg_sys::IndexUniqueCheck::UNIQUE_CHECK_YES
                    } else {
                        pg_sys::IndexUniqueCheck::UNIQUE_CHECK_NO
                    };
                    pg_sys::index_insert(
                        index,
                        key_datums.as_mut_ptr(),
                        key_nulls.as_mut_ptr(),
                        &mut (*tuple).t_self,
                        rel,
                        unique,
                        false,
                        info,
                    );
                }
                Ok(())
            })?;
            row_context.reset();
        }
    }
    Ok(())
}

/// Refuses a table whose columns (names and types) are not the ones this version writes: the
/// Datums `insert` forms are of those types.
unsafe fn check_columns(desc: pg_sys::TupleDesc, columns: &[(&str, pg_sys::Oid)]) -> Result<(), String> {
    // SAFETY: `desc` is the descriptor of the relation `insert` holds open (this function's
    // contract).
    let natts = unsafe { (*desc).natts } as usize;
    // SAFETY: `desc` outlives `attrs` (as above).
    let attrs = unsafe { crate::relation::attributes(desc) };
    // SAFETY: `attname` is a NameData, always NUL-terminated within its NAMEDATALEN bytes.
    let name = |a: &pg_sys::FormData_pg_attribute| unsafe { CStr::from_ptr(a.attname.data.as_ptr()) };
    let expected = natts == columns.len()
        && attrs
            .iter()
            .zip(columns)
            .all(|(a, (c, typ))| !a.attisdropped && name(a).to_bytes() == c.as_bytes() && a.atttypid == *typ);
    if expected {
        return Ok(());
    }
    let names: Vec<_> = attrs.iter().filter(|a| !a.attisdropped).map(|a| name(a).to_string_lossy()).collect();
    let wanted: Vec<_> = columns.iter().map(|(c, _)| *c).collect();
    Err(format!("a table has the columns {names:?}, not the ones this version writes ({wanted:?})"))
}

/// The outbox's indexes with their IndexInfo; only plain-column, non-partial indexes (else the
/// reason; the indexes opened so far close as they drop).
///
/// # Safety
/// `rel` is open, inside a transaction, locked with `lock`.
unsafe fn open_indexes(
    rel: pg_sys::Relation,
    lock: pg_sys::LOCKMODE,
) -> Result<Vec<(Open, *mut pg_sys::IndexInfo)>, String> {
    // SAFETY: `rel` is a relation the caller holds open, inside a transaction; the list is a fresh
    // copy in the current memory context.
    let list = unsafe { pg_sys::RelationGetIndexList(rel) };
    let oids: Vec<pg_sys::Oid> = if list.is_null() {
        Vec::new()
    } else {
        // SAFETY: `list` is a non-null List whose `elements` array holds `length` cells.
        let cells = unsafe { std::slice::from_raw_parts((*list).elements, (*list).length as usize) };
        // SAFETY: RelationGetIndexList returns an OID list, so `oid_value` is the member of each
        // cell in use.
        cells.iter().map(|c| unsafe { c.oid_value }).collect()
    };
    let mut opened = Vec::with_capacity(oids.len());
    for oid in oids {
        // SAFETY: `oid` is an index of the open relation `rel` (from its index list), opened with
        // the lock the caller holds on the table.
        let index = unsafe { Open::index(oid, lock) };
        // SAFETY: `index` is open; BuildIndexInfo returns a palloc'd IndexInfo.
        let info = unsafe { pg_sys::BuildIndexInfo(index.get()) };
        // SAFETY: `info` is the IndexInfo just built.
        if unsafe { !(*info).ii_Expressions.is_null() || !(*info).ii_Predicate.is_null() } {
            return Err("a table has an index on an expression or with a predicate".into());
        }
        opened.push((index, info));
    }
    Ok(opened)
}
