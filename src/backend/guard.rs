//! What pg_kafka will not let go of silently: `DROP EXTENSION kafka`, `DROP SCHEMA kafka
//! CASCADE` or `DROP OWNED BY` the extension's owner while committed messages still wait in the
//! outbox is refused, with a hint saying how to drain or discard them. A `ProcessUtility_hook`:
//! it reads the statement's parse tree, so the decision is the command's, not its text's. Only a
//! role that could drop the extension learns whether messages wait; anyone else meets
//! PostgreSQL's own refusal.

use crate::error::KafkaError;
use crate::store::owner;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::CStr;

static mut PREVIOUS: pg_sys::ProcessUtility_hook_type = None;

pub fn init() {
    // SAFETY: called once per process from _PG_init, on the backend's only thread, before any
    // utility statement runs: saving the previous hook and installing ours cannot race with a
    // reader.
    unsafe {
        PREVIOUS = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
    }
}

#[pg_guard]
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query: *const std::ffi::c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    // SAFETY: PostgreSQL calls the hook with a valid PlannedStmt (`pstmt`, whose utilityStmt may be
    // null, which drops_kafka accepts) and the other arguments, which are passed on unchanged to
    // the previous hook or to standard_ProcessUtility, exactly as PostgreSQL would have called
    // them.
    unsafe {
        let node = (*pstmt).utilityStmt;
        super::cluster::before_utility(node);
        if drops_kafka(node) {
            refuse_if_queued(None).unwrap_or_else(|e| e.raise());
        } else if let Some(roles) = drops_owned_by(node) {
            refuse_if_queued(Some(&roles)).unwrap_or_else(|e| e.raise());
        }
        match PREVIOUS {
            Some(previous) => previous(pstmt, query, read_only_tree, context, params, env, dest, qc),
            None => {
                pg_sys::standard_ProcessUtility(pstmt, query, read_only_tree, context, params, env, dest, qc)
            }
        }
    }
}

/// Whether the statement is `DROP EXTENSION ... kafka ...` or `DROP SCHEMA ... kafka ...`.
unsafe fn drops_kafka(node: *mut pg_sys::Node) -> bool {
    // SAFETY: `node` is null or the utility statement of a valid PlannedStmt (this function's
    // contract); its tag is checked before the cast to DropStmt. For extensions and schemas
    // `objects` is a List of name nodes, each checked to be a String (whose `sval` is
    // NUL-terminated) before it is read; list_nth is only called with `i < length`.
    unsafe {
        if node.is_null() || (*node).type_ != pg_sys::NodeTag::T_DropStmt {
            return false;
        }
        let drop = &*node.cast::<pg_sys::DropStmt>();
        if drop.removeType != pg_sys::ObjectType::OBJECT_EXTENSION
            && drop.removeType != pg_sys::ObjectType::OBJECT_SCHEMA
        {
            return false;
        }
        let n = if drop.objects.is_null() { 0 } else { (*drop.objects).length };
        (0..n).any(|i| {
            let name = pg_sys::list_nth(drop.objects, i).cast::<pg_sys::Node>();
            (*name).type_ == pg_sys::NodeTag::T_String
                && CStr::from_ptr((*name.cast::<pg_sys::String>()).sval).to_bytes() == b"kafka"
        })
    }
}

/// The roles of a `DROP OWNED BY` (those that exist), if the statement is one.
unsafe fn drops_owned_by(node: *mut pg_sys::Node) -> Option<Vec<pg_sys::Oid>> {
    // SAFETY: `node` is null or the utility statement of a valid PlannedStmt (this function's
    // contract); its tag is checked before the cast to DropOwnedStmt, whose `roles` is a List of
    // RoleSpec nodes, read only at `i < length`; get_rolespec_oid with missing_ok returns
    // InvalidOid for an unknown role (PostgreSQL reports it when the statement runs).
    unsafe {
        if node.is_null() || (*node).type_ != pg_sys::NodeTag::T_DropOwnedStmt {
            return None;
        }
        let roles = (*node.cast::<pg_sys::DropOwnedStmt>()).roles;
        let n = if roles.is_null() { 0 } else { (*roles).length };
        Some((0..n).map(|i| pg_sys::get_rolespec_oid(pg_sys::list_nth(roles, i).cast(), true)).collect())
    }
}

/// Refuses while the outbox holds messages: for `DROP OWNED BY` (`owned_by`), only when it names
/// the extension's owner. An extension that is not installed holds none; a damaged one (tables
/// missing, or altered so that they cannot be read) is let go on purpose: dropping it is how it is
/// repaired.
/// With WAL capture on, waits (up to [`WAL_PATIENCE`]) until the worker has decoded the WAL
/// flushed before the DROP, so that changes committed before it are in the outbox; refuses if
/// it does not.
fn wal_decoded() -> Result<(), KafkaError> {
    let name = crate::store::wal::slot_name();
    // SAFETY: GetFlushRecPtr reads shared memory under its spinlock.
    let target = unsafe { pg_sys::GetFlushRecPtr(std::ptr::null_mut()) } as i64;
    let started = std::time::Instant::now();
    loop {
        let confirmed = Spi::get_one_with_args::<i64>(
            "SELECT (s.confirmed_flush_lsn OPERATOR(pg_catalog.-) '0/0'::pg_catalog.pg_lsn)::pg_catalog.int8
               FROM pg_catalog.pg_replication_slots s WHERE s.slot_name OPERATOR(pg_catalog.=) $1",
            &[name.as_str().into()],
        );
        match confirmed {
            Ok(Some(at)) if at < target => {}
            _ => return Ok(()), // no slot, or caught up
        }
        if started.elapsed() >= WAL_PATIENCE {
            let at = confirmed.ok().flatten().unwrap_or(target);
            return Err(KafkaError::WalNotDecoded(target - at));
        }
        // SAFETY: sleeps 10 ms, interruptible by a cancel request through CHECK_FOR_INTERRUPTS.
        unsafe { pg_sys::pg_usleep(10_000) };
        pg_sys::check_for_interrupts!();
    }
}

/// How long `DROP EXTENSION` waits for WAL capture to catch up.
const WAL_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

fn refuse_if_queued(owned_by: Option<&[pg_sys::Oid]>) -> Result<(), KafkaError> {
    let Ok(store) = owner::store() else { return Ok(()) };
    if owned_by.is_some_and(|roles| !roles.contains(&store.owner())) {
        return Ok(());
    }
    // SAFETY: plain read of the current user id and a catalog-cache check of role membership,
    // inside the utility statement's transaction.
    if !unsafe { pg_sys::has_privs_of_role(pg_sys::GetUserId(), store.owner()) } {
        return Ok(()); // PostgreSQL refuses it: it does not learn whether messages wait
    }
    if owned_by.is_none() {
        wal_decoded()?; // what it stages joins the outbox checked next
    }
    let waiting = owner::as_owner(store, || {
        Spi::get_one::<i64>("SELECT pg_catalog.sum(o.messages)::pg_catalog.int8 FROM kafka.outbox o")
    });
    match waiting {
        Ok(Some(n)) if n > 0 => Err(KafkaError::MessagesWaiting(n)),
        _ => Ok(()),
    }
}
