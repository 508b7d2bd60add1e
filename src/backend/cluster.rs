//! The cluster as a session sees it: whether this database is served (`kafka.database`,
//! [`served_here`]), every served database's worker at a glance (`kafka.databases`), and what a
//! session tells the launcher ([`before_utility`], from the utility hook in
//! [`guard`](super::guard)):
//!
//! - `DROP DATABASE`, `ALTER DATABASE … RENAME` and `ALTER DATABASE … SET TABLESPACE` need the
//!   database free of connections, and `CREATE DATABASE … TEMPLATE` its template: a served
//!   database's worker is asked to exit, and none starts for it until the statement's transaction
//!   ends (PostgreSQL itself then waits up to 5 s for connections to go);
//! - a committed `CREATE DATABASE`, `ALTER DATABASE` or `CREATE EXTENSION kafka` (or `… CASCADE`)
//!   wakes the launcher, so that a new database (with `kafka.database = '*'`) or a new extension
//!   is served at once.
//!
//! Only a role the statement may succeed for holds a database: anyone else would only make its
//! worker restart.
//!
//! What must stay true: the commit and abort callbacks here only store atomics and set latches
//! (nothing in them can fail).

use crate::gucs;
use crate::shared;
use pgrx::prelude::*;
use std::cell::Cell;
use std::ffi::{c_void, CStr};

/// How long a database stays held for a statement at most (if its transaction outlives this,
/// the worker may start again and make the statement fail; PostgreSQL says which).
const HOLD_AT_MOST: i64 = 60_000_000;

thread_local! {
    /// The entry this session's statement holds until its transaction ends.
    static HELD: Cell<Option<usize>> = const { Cell::new(None) };
    /// What to tell the launcher when this transaction commits.
    static AT_COMMIT: Cell<AtCommit> = const { Cell::new(AtCommit::Nothing) };
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum AtCommit {
    Nothing,
    /// A database was made or changed.
    Wake,
    /// An extension was made.
    ExtensionCreated,
}

pub fn init() {
    // SAFETY: called once per process from _PG_init; `on_xact` is a 'static callback of the
    // expected signature.
    unsafe { pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut()) };
}

#[pg_guard]
unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut c_void) {
    use pg_sys::XactEvent::*;
    match event {
        XACT_EVENT_COMMIT | XACT_EVENT_PARALLEL_COMMIT => {
            match AT_COMMIT.replace(AtCommit::Nothing) {
                AtCommit::ExtensionCreated => shared::extension_created(),
                AtCommit::Wake => shared::wake_launcher(),
                AtCommit::Nothing => {}
            }
            if let Some(i) = HELD.take() {
                shared::release(i);
            }
        }
        XACT_EVENT_ABORT | XACT_EVENT_PARALLEL_ABORT => {
            AT_COMMIT.set(AtCommit::Nothing);
            if let Some(i) = HELD.take() {
                shared::release(i);
            }
        }
        _ => {}
    }
}

/// Before a utility statement runs: holds a served database the statement needs free of
/// connections, and notes what the launcher must hear at commit.
///
/// # Safety
/// `node` is null or the utility statement of a valid PlannedStmt.
pub unsafe fn before_utility(node: *mut pg_sys::Node) {
    if node.is_null() || !shared::preloaded() {
        return;
    }
    // SAFETY: `node` is a valid parse node (this function's contract); each cast follows a
    // check of its tag, and the names read are NUL-terminated strings of the parse tree.
    unsafe {
        let needs_free = match (*node).type_ {
            pg_sys::NodeTag::T_DropdbStmt => {
                note(AtCommit::Wake);
                Some((name((*node.cast::<pg_sys::DropdbStmt>()).dbname), false))
            }
            pg_sys::NodeTag::T_RenameStmt => {
                let r = &*node.cast::<pg_sys::RenameStmt>();
                (r.renameType == pg_sys::ObjectType::OBJECT_DATABASE).then(|| {
                    note(AtCommit::Wake);
                    (name(r.subname), false)
                })
            }
            pg_sys::NodeTag::T_CreatedbStmt => {
                note(AtCommit::Wake);
                let template = option((*node.cast::<pg_sys::CreatedbStmt>()).options, "template");
                Some((template.unwrap_or_else(|| "template1".to_owned()), true))
            }
            pg_sys::NodeTag::T_AlterDatabaseStmt => {
                let a = &*node.cast::<pg_sys::AlterDatabaseStmt>();
                note(AtCommit::Wake);
                option(a.options, "tablespace").map(|_| (name(a.dbname), false))
            }
            pg_sys::NodeTag::T_CreateExtensionStmt => {
                // `kafka`, or whatever may pull it in as a dependency: databases where a worker
                // found none are looked at again (not for any extension: a role could make
                // the launcher probe every database at each commit).
                let c = &*node.cast::<pg_sys::CreateExtensionStmt>();
                if name(c.extname) == "kafka" || option_present(c.options, "cascade") {
                    note(AtCommit::ExtensionCreated);
                }
                None
            }
            _ => None,
        };
        if let Some((db, copy)) = needs_free {
            hold(&db, copy);
        }
    }
}

/// Whether the current role may drop, rename or move database `oid` (copy it, with `copy`), as
/// PostgreSQL will check.
fn may_free(oid: pg_sys::Oid, copy: bool) -> bool {
    // SAFETY: a syscache lookup of the database's row inside the statement's transaction; the
    // tuple (a FormData_pg_database) is read and released at once; the role checks read the
    // catalog caches.
    unsafe {
        let tuple =
            pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::DATABASEOID as _, pg_sys::Datum::from(oid));
        if tuple.is_null() {
            return false;
        }
        let form = &*pg_sys::GETSTRUCT(tuple).cast::<pg_sys::FormData_pg_database>();
        let (owner, template) = (form.datdba, form.datistemplate);
        pg_sys::ReleaseSysCache(tuple);
        let user = pg_sys::GetUserId();
        pg_sys::has_privs_of_role(user, owner) || (copy && template && may_create_databases(user))
    }
}

/// Whether `role` may create databases (PostgreSQL's own check is not exported).
///
/// # Safety
/// Inside a transaction (a syscache lookup).
unsafe fn may_create_databases(role: pg_sys::Oid) -> bool {
    // SAFETY: this function's contract; the pg_authid tuple is read and released at once.
    unsafe {
        if pg_sys::superuser_arg(role) {
            return true;
        }
        let tuple =
            pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::AUTHOID as _, pg_sys::Datum::from(role));
        if tuple.is_null() {
            return false;
        }
        let createdb = (*pg_sys::GETSTRUCT(tuple).cast::<pg_sys::FormData_pg_authid>()).rolcreatedb;
        pg_sys::ReleaseSysCache(tuple);
        createdb
    }
}

fn note(what: AtCommit) {
    AT_COMMIT.set(AT_COMMIT.get().max(what));
}

/// Asks the worker of database `db` (if it is served) to exit, and holds it; only for a role
/// the statement may succeed for (the database's owner, or a member of its role, or a superuser;
/// a template anyone may copy with CREATEDB): anyone else would only make the worker restart.
fn hold(db: &str, copy: bool) {
    let Ok(db) = std::ffi::CString::new(db) else { return };
    // SAFETY: a catalog lookup inside the statement's transaction; missing_ok gives InvalidOid.
    let oid = unsafe { pg_sys::get_database_oid(db.as_ptr(), true) };
    let Some(i) = shared::entry_of(oid) else { return };
    if !may_free(oid, copy) {
        return;
    }
    // SAFETY: GetCurrentTimestamp only reads the clock.
    let until = unsafe { pg_sys::GetCurrentTimestamp() } + HOLD_AT_MOST;
    if let Some(before) = HELD.replace(Some(i)) {
        shared::release(before);
    }
    shared::stop_worker(i, Some(until));
}

/// # Safety
/// `p` is a NUL-terminated string or null.
unsafe fn name(p: *const std::ffi::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: this function's contract.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// The value of option `wanted` in a list of DefElem, if it names something.
///
/// # Safety
/// `options` is null or a List of DefElem nodes of a valid parse tree.
unsafe fn option(options: *mut pg_sys::List, wanted: &str) -> Option<String> {
    // SAFETY: this function's contract; list_nth is called with i < length, and the argument is
    // read as a String node only after its tag is checked.
    unsafe {
        let n = if options.is_null() { 0 } else { (*options).length };
        (0..n).find_map(|i| {
            let d = &*pg_sys::list_nth(options, i).cast::<pg_sys::DefElem>();
            if name(d.defname) != wanted || d.arg.is_null() {
                return None;
            }
            ((*d.arg).type_ == pg_sys::NodeTag::T_String)
                .then(|| name((*d.arg.cast::<pg_sys::String>()).sval))
        })
    }
}

/// Whether option `wanted` is in a list of DefElem (with any value).
///
/// # Safety
/// `options` is null or a List of DefElem nodes of a valid parse tree.
unsafe fn option_present(options: *mut pg_sys::List, wanted: &str) -> bool {
    // SAFETY: this function's contract; list_nth is called with i < length.
    unsafe {
        let n = if options.is_null() { 0 } else { (*options).length };
        (0..n).any(|i| name((*pg_sys::list_nth(options, i).cast::<pg_sys::DefElem>()).defname) == wanted)
    }
}

/// Whether `kafka.database` serves this database.
pub fn served_here() -> bool {
    gucs::databases().serves(&current_database(), is_template())
}

pub fn current_database() -> String {
    thread_local! {
        // SAFETY: only SQL functions reach this, in a backend connected to MyDatabaseId inside a
        // transaction: the catalog lookup is valid, and the database cannot be dropped while we are
        // connected, so get_database_name returns a palloc'd NUL-terminated name (never NULL),
        // copied at once.
        static NAME: String = unsafe {
            let p = pg_sys::get_database_name(pg_sys::MyDatabaseId);
            std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
        };
    }
    NAME.with(|n| n.clone())
}

/// Whether this database is a template (as the session found it first).
fn is_template() -> bool {
    thread_local! {
        // SAFETY: as for NAME above: a syscache lookup of this database's row, inside a
        // transaction; the tuple (a FormData_pg_database) is read and released at once.
        static TEMPLATE: bool = unsafe {
            let tuple = pg_sys::SearchSysCache1(
                pg_sys::SysCacheIdentifier::DATABASEOID as _,
                pg_sys::Datum::from(pg_sys::MyDatabaseId),
            );
            if tuple.is_null() {
                false
            } else {
                let t = (*pg_sys::GETSTRUCT(tuple).cast::<pg_sys::FormData_pg_database>()).datistemplate;
                pg_sys::ReleaseSysCache(tuple);
                t
            }
        };
    }
    TEMPLATE.with(|t| *t)
}

/// Every served database's worker, from shared memory; `kafka.databases` presents it.
#[pg_extern(volatile, parallel_safe, schema = "kafka_internal")]
#[allow(clippy::type_complexity)]
fn databases() -> TableIterator<
    'static,
    (
        name!(database, String),
        name!(worker_running, bool),
        name!(worker_pid, Option<i32>),
        name!(worker_started_at, Option<TimestampWithTimeZone>),
        name!(delivery, Option<&'static str>),
        name!(backlog, Option<i64>),
        name!(backlog_at, Option<TimestampWithTimeZone>),
        name!(delivered, i64),
        name!(dead_lettered, i64),
        name!(last_delivery_at, Option<TimestampWithTimeZone>),
        name!(last_error, Option<String>),
        name!(last_error_at, Option<TimestampWithTimeZone>),
    ),
> {
    if !shared::preloaded() {
        return TableIterator::new(Vec::new());
    }
    let entries: Vec<shared::WorkerState> = shared::STATE
        .share()
        .iter()
        .filter(|s| s.database != pg_sys::Oid::INVALID && s.serving_or_waiting())
        .copied()
        .collect();
    let ts = timestamp;
    TableIterator::new(entries.into_iter().map(move |s| {
        let running = s.pid != 0;
        (
            s.name(),
            running,
            running.then_some(s.pid),
            ts(s.started_at),
            running.then_some(if s.exactly_once { "exactly_once" } else { "at_least_once" }),
            (s.backlog_at != 0).then_some(s.backlog),
            ts(s.backlog_at),
            s.delivered,
            s.dead_lettered,
            ts(s.last_delivery_at),
            s.last_error().or_else(|| s.note()),
            ts(s.last_error_at),
        )
    }))
}

/// A TimestampTz pg_kafka stored in shared memory (0: none).
pub fn timestamp(t: i64) -> Option<TimestampWithTimeZone> {
    (t != 0)
        // SAFETY: `t` is a TimestampTz a worker stored (from GetCurrentTimestamp), so a by-value
        // int8 Datum is a valid timestamptz; from_datum only reads the value.
        .then(|| unsafe { TimestampWithTimeZone::from_datum(pg_sys::Datum::from(t), false) })
        .flatten()
}
