//! Relations held open for a scope. [`Open`] closes its relation or index when it goes out of
//! scope — on every return path, `?` included — and keeps the lock until the transaction ends, as
//! PostgreSQL's own INSERT does. While an error unwinds, it leaves the closing to PostgreSQL's
//! resource owner, which releases whatever the aborted transaction still holds (closing from
//! inside an unwinding error could raise again).

use pgrx::pg_sys;

enum Kind {
    Relation,
    Index,
}

/// An open relation or index.
pub struct Open {
    rel: pg_sys::Relation,
    kind: Kind,
}

impl Open {
    /// Opens relation `oid` with `lock` (PostgreSQL raises if it does not exist).
    ///
    /// # Safety
    /// Inside a transaction.
    pub unsafe fn relation(oid: pg_sys::Oid, lock: pg_sys::LOCKMODE) -> Open {
        // SAFETY: inside a transaction (this function's contract); relation_open raises rather
        // than return an invalid relation.
        Open { rel: unsafe { pg_sys::relation_open(oid, lock) }, kind: Kind::Relation }
    }

    /// Opens index `oid` with `lock`.
    ///
    /// # Safety
    /// Inside a transaction, with `oid` an index.
    pub unsafe fn index(oid: pg_sys::Oid, lock: pg_sys::LOCKMODE) -> Open {
        // SAFETY: inside a transaction, `oid` an index (this function's contract); index_open
        // raises rather than return an invalid relation.
        Open { rel: unsafe { pg_sys::index_open(oid, lock) }, kind: Kind::Index }
    }

    /// The open relation, valid while `self` lives.
    pub fn get(&self) -> pg_sys::Relation {
        self.rel
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return; // an error unwinds: the transaction's abort releases it
        }
        let keep = pg_sys::NoLock as pg_sys::LOCKMODE;
        // SAFETY: `rel` was opened by this guard and is closed once, here; NoLock keeps the lock
        // until the transaction ends.
        unsafe {
            match self.kind {
                Kind::Relation => pg_sys::relation_close(self.rel, keep),
                Kind::Index => pg_sys::index_close(self.rel, keep),
            }
        }
    }
}

/// The `natts` attributes of tuple descriptor `desc`, in column order.
///
/// PostgreSQL 18 moved them behind the `CompactAttribute`s (`TupleDescAttr()`); before, they are
/// the descriptor's `attrs` array.
///
/// # Safety
/// `desc` is a valid descriptor that outlives the slice.
pub unsafe fn attributes<'a>(desc: pg_sys::TupleDesc) -> &'a [pg_sys::FormData_pg_attribute] {
    // SAFETY: `desc` is valid (this function's contract).
    let natts = unsafe { (*desc).natts } as usize;
    #[cfg(not(feature = "pg18"))]
    // SAFETY: a TupleDesc's `attrs` flexible array holds `natts` entries.
    let attrs = unsafe { (*desc).attrs.as_slice(natts) };
    #[cfg(feature = "pg18")]
    // SAFETY: from 18, `natts` FormData_pg_attribute follow the `natts` CompactAttributes
    // (TupleDescAttr in tupdesc.h).
    let attrs = unsafe {
        let first = (*desc).compact_attrs.as_ptr().add(natts).cast::<pg_sys::FormData_pg_attribute>();
        std::slice::from_raw_parts(first, natts)
    };
    attrs
}
