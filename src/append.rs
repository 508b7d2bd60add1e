//! Appends rows to `kafka.outbox` without SQL: each row is formed and written with `heap_insert`
//! (which compresses and TOASTs large payloads) and entered in the outbox's indexes, the way
//! COPY does, with no executor, no parameter arrays and no copies beyond the tuple itself.
//! Only the outbox's own columns and plain-column indexes are supported; anything else (an
//! altered outbox) is refused with a clear error rather than written wrongly.
//!
//! Packed payloads (capture events: JSON, very compressible) are lz4-compressed here even when
//! small, which PostgreSQL only does for rows over ~2 kB: a one-row statement's pack shrinks to
//! about half, and with it the WAL every transaction writes. Readers see plain bytea (PostgreSQL
//! decompresses on access).

use crate::outbox::OutboxMessage;
use pgrx::pg_sys::{self, Datum};
use pgrx::{IntoDatum, PgMemoryContexts};
use std::ffi::CStr;

/// kafka.outbox's columns, in table order (sql/tables.sql).
const COLUMNS: [&str; 10] = [
    "id",
    "topic",
    "key",
    "payload",
    "headers",
    "partition",
    "timestamp_ms",
    "produced_at",
    "first_attempt_at",
    "packed",
];

/// Packed payloads from this size on are compressed before they are written.
const COMPRESS_FROM: usize = 256;
/// `TOAST_LZ4_COMPRESSION` (access/toast_compression.h).
const LZ4: std::ffi::c_char = b'l' as std::ffi::c_char;

unsafe extern "C-unwind" {
    /// PostgreSQL's inline compression of a plain varlena (access/toast_internals.h); a null
    /// Datum when it does not make it smaller. Not in pgrx's bindings; called through
    /// `pg_guard_ffi_boundary` like they are.
    fn toast_compress_datum(value: Datum, cmethod: std::ffi::c_char) -> Datum;
}

/// The payload Datum of `m`, compressed if it is a pack worth compressing.
unsafe fn payload_datum(m: &OutboxMessage) -> Option<Datum> {
    let payload = m.payload.as_deref()?;
    let datum = payload.into_datum()?;
    if m.packed.is_none() || payload.len() < COMPRESS_FROM {
        return Some(datum);
    }
    let compressed =
        unsafe { pg_sys::submodules::ffi::pg_guard_ffi_boundary(|| toast_compress_datum(datum, LZ4)) };
    Some(if compressed.is_null() { datum } else { compressed })
}

/// Writes `batch` to the outbox (relation `outbox`) in the current transaction.
pub fn insert(
    outbox: pg_sys::Oid,
    batch: &[OutboxMessage],
    headers: impl Fn(&OutboxMessage) -> Option<pgrx::JsonB>,
) {
    unsafe {
        let lock = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
        let rel = pg_sys::table_open(outbox, lock);
        let desc = (*rel).rd_att;
        check_columns(desc);
        let indexes = open_indexes(rel, lock);
        let produced_at = Datum::from(pg_sys::GetCurrentTransactionStartTimestamp());
        let cid = pg_sys::GetCurrentCommandId(true);
        let mut row_context = PgMemoryContexts::new("pg_kafka outbox row");
        for m in batch {
            row_context.switch_to(|_| {
                let values: [Option<Datum>; 10] = [
                    m.id.into_datum(),
                    m.topic.as_str().into_datum(),
                    m.key.as_deref().into_datum(),
                    payload_datum(m),
                    headers(m).into_datum(),
                    m.partition.into_datum(),
                    m.timestamp_ms.into_datum(),
                    Some(produced_at),
                    None,
                    m.packed.into_datum(),
                ];
                let mut datums = values.map(|v| v.unwrap_or(Datum::from(0)));
                let mut nulls = values.map(|v| v.is_none());
                let tuple = pg_sys::heap_form_tuple(desc, datums.as_mut_ptr(), nulls.as_mut_ptr());
                pg_sys::heap_insert(rel, tuple, cid, 0, std::ptr::null_mut());
                for &(index, info) in &indexes {
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
            });
            row_context.reset();
        }
        for (index, _) in indexes {
            pg_sys::index_close(index, lock);
        }
        pg_sys::table_close(rel, lock);
    }
}

/// Refuses an outbox whose columns are not the ones this version writes.
unsafe fn check_columns(desc: pg_sys::TupleDesc) {
    let natts = unsafe { (*desc).natts } as usize;
    let attrs = unsafe { (*desc).attrs.as_slice(natts) };
    let name = |a: &pg_sys::FormData_pg_attribute| unsafe { CStr::from_ptr(a.attname.data.as_ptr()) };
    let expected = natts == COLUMNS.len()
        && attrs.iter().zip(COLUMNS).all(|(a, c)| !a.attisdropped && name(a).to_bytes() == c.as_bytes());
    if !expected {
        let names: Vec<_> =
            attrs.iter().filter(|a| !a.attisdropped).map(|a| name(a).to_string_lossy()).collect();
        panic!("kafka.outbox does not have the columns pg_kafka writes ({names:?}); recreate the extension");
    }
}

/// The outbox's indexes with their IndexInfo; only plain-column, non-partial indexes.
unsafe fn open_indexes(
    rel: pg_sys::Relation,
    lock: pg_sys::LOCKMODE,
) -> Vec<(pg_sys::Relation, *mut pg_sys::IndexInfo)> {
    let list = unsafe { pg_sys::RelationGetIndexList(rel) };
    let oids: Vec<pg_sys::Oid> = if list.is_null() {
        Vec::new()
    } else {
        let cells = unsafe { std::slice::from_raw_parts((*list).elements, (*list).length as usize) };
        cells.iter().map(|c| unsafe { c.oid_value }).collect()
    };
    oids.into_iter()
        .map(|oid| unsafe {
            let index = pg_sys::index_open(oid, lock);
            let info = pg_sys::BuildIndexInfo(index);
            if !(*info).ii_Expressions.is_null() || !(*info).ii_Predicate.is_null() {
                panic!("kafka.outbox has an index pg_kafka cannot maintain; recreate the extension");
            }
            (index, info)
        })
        .collect()
}
