//! Whose rights pg_kafka's own SQL runs with, and which schema it trusts. Code that runs with more
//! rights than its caller's reaches pg_kafka's tables by the name `kafka`, so that name must lead
//! to a schema only a superuser controls ([`kafka_namespace`]); and it runs as another role only
//! the way a SECURITY DEFINER function with a pinned `search_path` would (an [`AsRole`] guard, or
//! [`as_role`]; as the extension's owner: [`owner::as_owner`](crate::store::owner::as_owner)), so that no function, cast or
//! operator of the caller's (or, security-restricted, of a table owner's) runs with more rights
//! than its creator's. What must stay true: the caller's user id, security context and
//! `search_path` are back when the guard goes, whether what ran under it returned or raised.

use crate::error::KafkaError;
use pgrx::prelude::*;
use std::marker::PhantomData;

/// The schema named `kafka` (InvalidOid if there is none), refused unless a superuser owns it.
/// Code running with more rights than a user's (the extension owner's, the worker's) reaches
/// pg_kafka's tables by the name `kafka`: a schema another role owns (created before the
/// extension, or put in place of the extension's after renaming it) could hold look-alike tables
/// whose triggers would run with those rights. `CREATE EXTENSION` refuses such a schema
/// (sql/tables.sql); this refuses one made afterwards. Catalog caches only.
pub fn kafka_namespace() -> Result<pg_sys::Oid, KafkaError> {
    // SAFETY: catalog cache lookups inside the caller's transaction (every caller runs in one),
    // with a NUL-terminated literal name; NAMESPACEOID is keyed by an oid Datum and its tuple's
    // data is a FormData_pg_namespace; the reference is released before the tuple is dropped.
    unsafe {
        let nsp = pg_sys::get_namespace_oid(c"kafka".as_ptr(), true);
        if nsp == pg_sys::InvalidOid {
            return Ok(nsp);
        }
        let tuple = pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::NAMESPACEOID as _, nsp.into());
        if tuple.is_null() {
            return Ok(pg_sys::InvalidOid);
        }
        let owner = (*pg_sys::GETSTRUCT(tuple).cast::<pg_sys::FormData_pg_namespace>()).nspowner;
        pg_sys::ReleaseSysCache(tuple);
        if pg_sys::superuser_arg(owner) {
            Ok(nsp)
        } else {
            Err(KafkaError::UntrustedSchema)
        }
    }
}

/// The rights of another role, held for as long as the guard lives: [`AsRole::enter`] switches
/// the user id and pins `search_path = pg_catalog, pg_temp` at a new GUC nest level, as a
/// SECURITY DEFINER function with `SET search_path` does (`fmgr_security_definer`); dropping it
/// puts both back. With `restricted`, a security-restricted operation, as PostgreSQL runs a table
/// owner's code in VACUUM or REFRESH MATERIALIZED VIEW: SQL run meanwhile may run `role`'s
/// functions, casts and operators with `role`'s rights only, and nothing it runs can change the
/// session (SET ROLE, temporary objects, prepared statements).
///
/// On an error the guard restores too: a PostgreSQL error inside becomes a Rust panic at pgrx's
/// FFI boundary (which copies and flushes PostgreSQL's error state first), and the guard's `Drop`
/// runs as that panic unwinds. Then the GUC level is popped as a rollback (what the abort of the
/// transaction would do to it), and the user id and security context are the ones saved at
/// [`AsRole::enter`], exactly as on success. The (sub)transaction's abort that follows restores
/// them again, to what they were when it began: the same state, since guards nest and drop in
/// reverse order. Code that caught the panic and went on in the same transaction would thus run
/// with its own rights, not the role's.
#[must_use = "the role's rights last only as long as the guard"]
pub struct AsRole {
    user: pg_sys::Oid,
    sec: i32,
    nest: i32,
    /// Taken while a panic was already unwinding (then dropping it is no rollback).
    entered_unwinding: bool,
    /// PostgreSQL's user id is the process's: the guard must stay on the thread that took it.
    _not_send: PhantomData<*const ()>,
}

impl AsRole {
    /// Takes `role`'s rights (see [`AsRole`]) until the guard is dropped.
    pub fn enter(role: pg_sys::Oid, restricted: bool) -> AsRole {
        let (mut user, mut sec) = (pg_sys::Oid::INVALID, 0);
        let flags = pg_sys::SECURITY_LOCAL_USERID_CHANGE
            | if restricted { pg_sys::SECURITY_RESTRICTED_OPERATION } else { 0 };
        // SAFETY: the out-parameters are locals; switching the user id and entering a new GUC
        // nest level is what a SECURITY DEFINER function with a SET clause does
        // (fmgr_security_definer), inside the caller's transaction; the guard made right after
        // restores both when dropped.
        let nest = unsafe {
            pg_sys::GetUserIdAndSecContext(&mut user, &mut sec);
            pg_sys::SetUserIdAndSecContext(role, sec | flags as i32);
            pg_sys::NewGUCNestLevel()
        };
        let guard =
            AsRole { user, sec, nest, entered_unwinding: std::thread::panicking(), _not_send: PhantomData };
        // SAFETY: sets search_path at the nest level entered above (GUC_ACTION_SAVE: popping the
        // level restores it); the option name and value are NUL-terminated literals. Should it
        // raise, `guard` is dropped as the panic unwinds.
        unsafe {
            pg_sys::set_config_option(
                c"search_path".as_ptr(),
                c"pg_catalog, pg_temp".as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_SAVE,
                true,
                0,
                false,
            );
        }
        guard
    }
}

impl Drop for AsRole {
    fn drop(&mut self) {
        // Unwinding from an error: what was set inside is rolled back, as the abort would.
        let committed = self.entered_unwinding || !std::thread::panicking();
        // SAFETY: pops the GUC nest level pushed by `enter` (restoring search_path, and with it
        // any setting changed inside) and restores the user and security context saved there, in
        // the order fmgr_security_definer does. Neither raises: AtEOXact_GUC is what the
        // transaction's abort itself calls, and SetUserIdAndSecContext only assigns two globals.
        unsafe {
            pg_sys::AtEOXact_GUC(committed, self.nest);
            pg_sys::SetUserIdAndSecContext(self.user, self.sec);
        }
    }
}

/// Runs `f` with `role`'s rights (an [`AsRole`] held while it runs).
pub fn as_role<R>(role: pg_sys::Oid, restricted: bool, f: impl FnOnce() -> R) -> R {
    let _rights = AsRole::enter(role, restricted);
    f()
}
