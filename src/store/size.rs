//! The disk pg_kafka's queue takes, which `kafka.max_backlog` bounds: measured from the relations
//! themselves (no SQL, no lock waited for), cheap enough to be taken as a transaction grows.

use crate::store::owner::Store;
use pgrx::prelude::*;

thread_local! {
    /// The size of each queue table (outbox, outbox_commit, dead_letter) at this session's last
    /// measure: what one counts for while someone else holds it locked (see `size_bytes`).
    static LAST_SIZES: std::cell::Cell<[i64; 3]> = const { std::cell::Cell::new([0; 3]) };
}

/// The disk pg_kafka's queue takes, in bytes (what `kafka.max_backlog` bounds): `kafka.outbox`,
/// `kafka.outbox_commit` and `kafka.dead_letter`, each with its TOAST table and every index. The
/// main forks are counted; the free-space and visibility maps (a few pages each, plus about
/// 1/4000 of their table) are not. No SQL, and no lock waited for: a relation is measured only if
/// it can be locked at once (a table someone holds exclusively, e.g. in VACUUM FULL, counts with
/// its size at this session's previous measure), by the end of its file (one `lseek` for a
/// relation under 1 GB). About a dozen relations: some microseconds.
pub fn size_bytes(store: Store) -> i64 {
    let (outbox, commits) = store.queue_tables();
    // SAFETY: catalog cache lookups inside the caller's transaction (every caller queues a
    // message, inside one), with NUL-terminated literal names; missing_ok gives InvalidOid.
    let dead_letter = unsafe {
        let nsp = pg_sys::get_namespace_oid(c"kafka".as_ptr(), true);
        pg_sys::get_relname_relid(c"dead_letter".as_ptr(), nsp)
    };
    LAST_SIZES.with(|last| {
        let mut sizes = last.get();
        for (size, table) in sizes.iter_mut().zip([outbox, commits, dead_letter]) {
            // SAFETY: inside the caller's transaction (see above).
            if let Some(now) = unsafe { tree_bytes(table) } {
                *size = now;
            }
        }
        last.set(sizes);
        sizes.iter().sum()
    })
}

/// The main fork of relation `oid`, its TOAST table's and their indexes', in bytes; None when one
/// of them is locked by someone else in a mode that excludes reading (not waited for). A relation
/// that no longer exists takes 0.
///
/// # Safety
/// Inside a transaction.
unsafe fn tree_bytes(oid: pg_sys::Oid) -> Option<i64> {
    if oid == pg_sys::InvalidOid {
        return Some(0);
    }
    let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
    // SAFETY: inside a transaction (this function's contract); the lock is only tried, and taken
    // back below once the relation is closed (or by the transaction's abort if anything raises).
    if !unsafe { pg_sys::ConditionalLockRelationOid(oid, lock) } {
        return None;
    }
    // SAFETY: the relation is locked above, so it cannot be dropped while open; try_relation_open
    // returns NULL rather than raise if it was dropped before.
    let rel = unsafe { pg_sys::try_relation_open(oid, pg_sys::NoLock as pg_sys::LOCKMODE) };
    let size = if rel.is_null() {
        Some(0)
    } else {
        // SAFETY: `rel` is the open, locked relation above; its `rd_rel` is its pg_class row; the
        // index list is a fresh copy in the current memory context; `rel` is closed once, after
        // its last use, keeping the lock, which is released below.
        let (main, parts) = unsafe {
            let main = pg_sys::RelationGetNumberOfBlocksInFork(rel, pg_sys::ForkNumber::MAIN_FORKNUM);
            let class = &*(*rel).rd_rel;
            let mut parts =
                if class.relhasindex { oid_list(pg_sys::RelationGetIndexList(rel)) } else { Vec::new() };
            if class.reltoastrelid != pg_sys::InvalidOid {
                parts.push(class.reltoastrelid);
            }
            pg_sys::relation_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
            (main, parts)
        };
        let main = i64::from(main) * i64::from(pg_sys::BLCKSZ);
        // SAFETY: inside a transaction (this function's contract).
        parts.into_iter().try_fold(main, |total, part| Some(total + unsafe { tree_bytes(part) }?))
    };
    // SAFETY: releases the lock taken above, once.
    unsafe { pg_sys::UnlockRelationOid(oid, lock) };
    size
}

/// The members of an OID list (NIL: none).
///
/// # Safety
/// `list` is NIL or a valid OID list.
unsafe fn oid_list(list: *mut pg_sys::List) -> Vec<pg_sys::Oid> {
    if list.is_null() {
        return Vec::new();
    }
    // SAFETY: `list` is a non-null List whose `elements` array holds `length` cells; in an OID
    // list `oid_value` is the member of each cell in use.
    unsafe {
        let cells = std::slice::from_raw_parts((*list).elements, (*list).length as usize);
        cells.iter().map(|c| c.oid_value).collect()
    }
}
