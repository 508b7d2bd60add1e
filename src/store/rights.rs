//! Whose rights pg_kafka's own SQL runs with, and which schema it trusts. Code that runs with more
//! rights than its caller's reaches pg_kafka's tables by the name `kafka`, so that name must lead
//! to a schema only a superuser controls ([`kafka_namespace`]); and it runs as another role only
//! the way a SECURITY DEFINER function with a pinned `search_path` would ([`as_role`]; as the
//! extension's owner: `outbox::as_owner`), so that no function, cast or operator of the
//! caller's (or, security-restricted, of a table owner's) runs with more rights than its
//! creator's.

use crate::error::KafkaError;
use pgrx::prelude::*;

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

/// Runs `f` as `role` with `search_path = pg_catalog, pg_temp` at a new GUC nest level. With
/// `restricted`, as a security-restricted operation, as PostgreSQL runs a table owner's code in
/// VACUUM or REFRESH MATERIALIZED VIEW: `f` may run `role`'s functions, casts and operators
/// with `role`'s rights only, and nothing it runs can change the session (SET ROLE, temporary
/// objects, prepared statements).
pub fn as_role<R>(role: pg_sys::Oid, restricted: bool, f: impl FnOnce() -> R) -> R {
    let (mut user, mut sec) = (pg_sys::Oid::INVALID, 0);
    let flags = pg_sys::SECURITY_LOCAL_USERID_CHANGE
        | if restricted { pg_sys::SECURITY_RESTRICTED_OPERATION } else { 0 };
    // SAFETY: the out-parameters are locals; switching the user id and pinning search_path at a
    // new GUC nest level for `f` is what a SECURITY DEFINER function with a SET clause does
    // (fmgr_security_definer), inside the caller's transaction; both are restored below, or by
    // the (sub)transaction's abort if `f` raises. The option name and value are NUL-terminated
    // literals.
    let nest = unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut sec);
        pg_sys::SetUserIdAndSecContext(role, sec | flags as i32);
        let nest = pg_sys::NewGUCNestLevel();
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
        nest
    };
    let r = f();
    // On error the transaction's abort restores both; on success we do.
    // SAFETY: pops the nest level pushed above (restoring search_path) and restores the user and
    // security context saved above.
    unsafe {
        pg_sys::AtEOXact_GUC(true, nest);
        pg_sys::SetUserIdAndSecContext(user, sec);
    }
    r
}
