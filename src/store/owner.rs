//! Where pg_kafka's tables are and who owns them: the [`Store`] handle (the outbox's relations,
//! found in the catalog caches, no SQL) and acting as the tables' owner ([`as_owner`]), which
//! backends need to append to the outbox and to read the rules producers may not read
//! ([`backend::topics`](crate::backend::topics), [`backend::capture`](crate::backend::capture), [`backend::guard`](crate::backend::guard), `set_aside`, `home`, `append`).
//!
//! What must stay true: the owner is the outbox's own `relowner`, found under the trusted
//! `kafka` schema only ([`rights::kafka_namespace`](crate::store::rights::kafka_namespace)); code run as the owner runs with a pinned
//! `search_path` and gives the caller's rights back however it ends ([`rights::AsRole`](crate::store::rights::AsRole)).

use crate::error::KafkaError;
use crate::store::rights::{as_role, kafka_namespace};
use pgrx::prelude::*;

/// pg_kafka's relations and the role that owns them, for appends made on a caller's behalf.
#[derive(Debug, Clone, Copy)]
pub struct Store {
    pub(super) id_seq: pg_sys::Oid,
    pub(super) commit_seq: pg_sys::Oid,
    owner: pg_sys::Oid,
    pub(super) outbox: pg_sys::Oid,
    pub(super) commits: pg_sys::Oid,
}

impl Store {
    /// The role that owns pg_kafka's tables (the extension's owner).
    pub fn owner(&self) -> pg_sys::Oid {
        self.owner
    }

    /// `kafka.outbox` and `kafka.outbox_commit`.
    pub fn queue_tables(&self) -> (pg_sys::Oid, pg_sys::Oid) {
        (self.outbox, self.commits)
    }
}

/// Looks up the outbox's relations and owner in the catalog caches (no SQL, so cheap enough for
/// every transaction; a re-created extension is found by name).
pub fn store() -> Result<Store, KafkaError> {
    let nsp = kafka_namespace()?;
    // SAFETY: catalog cache lookups, run inside a transaction (an SQL function, a trigger, the
    // utility hook or a worker transaction), with NUL-terminated literal names; a missing schema
    // is InvalidOid, and then every relation is too.
    let found = unsafe {
        let rel = |name: &std::ffi::CStr| pg_sys::get_relname_relid(name.as_ptr(), nsp);
        let (id_seq, commit_seq) = (rel(c"outbox_id_seq"), rel(c"commit_seq"));
        let (outbox, commits) = (rel(c"outbox"), rel(c"outbox_commit"));
        let all = [nsp, id_seq, commit_seq, outbox, commits].iter().all(|o| *o != pg_sys::InvalidOid);
        all.then(|| relation_owner(outbox)).flatten().map(|owner| Store {
            id_seq,
            commit_seq,
            owner,
            outbox,
            commits,
        })
    };
    found.ok_or(KafkaError::OutboxMissing)
}

/// The owner of a relation, from the catalog cache.
unsafe fn relation_owner(relid: pg_sys::Oid) -> Option<pg_sys::Oid> {
    // SAFETY: inside the caller's transaction (this function's contract); RELOID is keyed by an oid
    // Datum.
    let tuple =
        unsafe { pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::RELOID as _, relid.into_datum()?) };
    if tuple.is_null() {
        return None;
    }
    // SAFETY: `tuple` is a valid pg_class tuple from the RELOID cache, whose data is a
    // FormData_pg_class.
    let owner = unsafe { (*pg_sys::GETSTRUCT(tuple).cast::<pg_sys::FormData_pg_class>()).relowner };
    // SAFETY: releases the reference SearchSysCache1 took above; `tuple` is not used after.
    unsafe { pg_sys::ReleaseSysCache(tuple) };
    Some(owner)
}

/// Runs `f` as the owner of the outbox with `search_path = pg_catalog, pg_temp`, like a SECURITY
/// DEFINER function with a pinned path would: SQL that `f` runs cannot reach the caller's own
/// functions or operators (a role that may create an operator in a schema on its path would
/// otherwise have it run as the owner). The caller's rights are back when `f` returns or raises
/// (a [`rights::AsRole`](crate::store::rights::AsRole) guard held while it runs).
pub fn as_owner<R>(store: Store, f: impl FnOnce() -> R) -> R {
    as_role(store.owner, false, f)
}

/// Whether the extension is installed in the worker's database (catalog caches, no SQL).
pub fn installed() -> bool {
    let Ok(nsp) = kafka_namespace() else { return false };
    // SAFETY: catalog cache lookups with NUL-terminated literal names; every caller runs inside a
    // transaction (a worker transaction, or the utility hook).
    unsafe {
        nsp != pg_sys::InvalidOid
            && pg_sys::get_relname_relid(c"outbox".as_ptr(), nsp) != pg_sys::InvalidOid
            && pg_sys::get_relname_relid(c"dead_letter".as_ptr(), nsp) != pg_sys::InvalidOid
            // this version's tables: with an older version's SQL, wait for ALTER EXTENSION UPDATE
            && pg_sys::get_relname_relid(c"outbox_commit".as_ptr(), nsp) != pg_sys::InvalidOid
            && pg_sys::get_relname_relid(c"home".as_ptr(), nsp) != pg_sys::InvalidOid
            && pg_sys::get_relname_relid(c"producer_statistics".as_ptr(), nsp) != pg_sys::InvalidOid
            && pg_sys::get_relname_relid(c"wal_position".as_ptr(), nsp) != pg_sys::InvalidOid
    }
}
