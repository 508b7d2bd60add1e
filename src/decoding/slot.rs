//! pg_kafka's logical replication slot: one per database, `pg_kafka_<database oid>`, of plugin
//! `pg_kafka`. Made by the first `kafka.capture(…, method => 'wal')` (in that session, before the
//! capture is written, so every change committed after the capture is in the slot's reach),
//! dropped by the worker once no wal capture is left and everything before is staged.
//!
//! What must stay true: the requirements (`wal_level = logical`, the plugin trusted by
//! `output_plugin_libraries` where the server has it, a free slot) are checked before anything
//! is made, with a 55000 that says which is missing.

use crate::error::{KafkaError, SqlResult};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::{CStr, CString};

/// The plugin's name: the library's name under `shared_preload_libraries`.
pub const PLUGIN: &CStr = c"pg_kafka";

/// The slot's name in this database.
pub fn name() -> CString {
    CString::new(crate::store::wal::slot_name()).unwrap_or_default()
}

/// The slot's entry in shared memory, if it exists (slots live there for the server's life).
fn entry() -> Option<*mut pg_sys::ReplicationSlot> {
    let name = name();
    // SAFETY: `name` is NUL-terminated; with need_lock, the lookup takes the slots' lock itself.
    let slot = unsafe { pg_sys::SearchNamedReplicationSlot(name.as_ptr(), true) };
    (!slot.is_null()).then_some(slot)
}

/// Whether the slot exists.
pub fn exists() -> bool {
    entry().is_some()
}

/// Whether another process holds the slot: a session making it (it holds it until the slot's
/// start point is found, which waits for the transactions running then to end), or someone
/// reading it by hand. The worker then leaves it alone until it is free (acquiring it would
/// raise, and the worker exit).
pub fn held_elsewhere() -> bool {
    let Some(slot) = entry() else { return false };
    // SAFETY: `slot` is a live entry; `active_pid` is read without the slot's spinlock (a 4-byte
    // read is never torn): at worst the worker looks again at its next pass. MyProcPid is this
    // process's id.
    let (pid, mine) = unsafe { (std::ptr::read_volatile(&raw const (*slot).active_pid), pg_sys::MyProcPid) };
    pid != 0 && pid != mine
}

/// Whether PostgreSQL invalidated the slot: it kept more WAL than `max_slot_wal_keep_size`
/// allows (or, from PostgreSQL 18, sat idle past `idle_replication_slot_timeout`). It cannot be
/// read any more.
pub fn invalidated() -> bool {
    let Some(slot) = entry() else { return false };
    // SAFETY: as in `held_elsewhere`; the fields are set once, under the slot's lock, by the
    // invalidation, and read here by a process that does not hold the slot.
    unsafe {
        let data = &raw const (*slot).data;
        #[cfg(any(feature = "pg14", feature = "pg15"))]
        let invalid = std::ptr::read_volatile(&raw const (*data).invalidated_at) != 0;
        #[cfg(not(any(feature = "pg14", feature = "pg15")))]
        let invalid = std::ptr::read_volatile(&raw const (*data).invalidated)
            != pg_sys::ReplicationSlotInvalidationCause::RS_INVAL_NONE;
        invalid
    }
}

/// Refuses WAL capture where the server cannot decode for pg_kafka.
pub fn check_requirements() -> Result<(), KafkaError> {
    // SAFETY: plain reads of settings' variables.
    let (level, slots) = unsafe { (pg_sys::wal_level, pg_sys::max_replication_slots) };
    if level < pg_sys::WalLevel::WAL_LEVEL_LOGICAL as i32 {
        return Err(KafkaError::WalUnavailable(format!(
            "wal_level is {}, not logical",
            setting(c"wal_level")
        )));
    }
    if slots == 0 {
        return Err(KafkaError::WalUnavailable("max_replication_slots is 0".into()));
    }
    if let Some(list) = option(c"output_plugin_libraries") {
        let trusted = list.split(',').map(|l| l.trim().trim_matches('"')).any(|l| l == "pg_kafka");
        if !trusted {
            return Err(KafkaError::WalUnavailable(format!(
                "output_plugin_libraries ('{list}') does not name pg_kafka"
            )));
        }
    }
    Ok(())
}

/// A setting's value, if the server has it.
fn option(name: &CStr) -> Option<String> {
    // SAFETY: `name` is NUL-terminated; with missing_ok, null comes back for an unknown setting;
    // the value is a NUL-terminated string owned by the GUC machinery, copied at once.
    let v = unsafe { pg_sys::GetConfigOption(name.as_ptr(), true, false) };
    // SAFETY: non-null values are NUL-terminated.
    (!v.is_null()).then(|| unsafe { CStr::from_ptr(v) }.to_string_lossy().into_owned())
}

fn setting(name: &CStr) -> String {
    option(name).unwrap_or_default()
}

/// Makes the slot if there is none. `kafka.capture(…, method => 'wal')` calls it before it writes
/// the capture; the `table` is invalidated so that decoding reads its capture anew from there.
#[pg_extern(volatile, parallel_unsafe, schema = "kafka_internal")]
fn wal_prepare(table: pg_sys::Oid) -> SqlResult<()> {
    if let Some(name) = own_table(table)? {
        return Err(KafkaError::WalOwnTable(name).into());
    }
    check_requirements()?;
    crate::store::wal::lock_captures()?;
    if !exists() {
        // SAFETY: plain read of the current transaction's id.
        if unsafe { pg_sys::GetTopTransactionIdIfAny() } != pg_sys::InvalidTransactionId {
            return Err(KafkaError::WalSlotAfterWrites.into());
        }
        create();
    }
    invalidate(table);
    Ok(())
}

/// The name of `table` if it is one of the extension's own (the worker writes those with the
/// origin WAL capture skips: [`super::mark_own_writes`]).
fn own_table(table: pg_sys::Oid) -> Result<Option<String>, KafkaError> {
    Spi::connect(|c| {
        c.select(
            "SELECT $1::pg_catalog.regclass::pg_catalog.text FROM pg_catalog.pg_depend d
               JOIN pg_catalog.pg_extension e ON e.oid OPERATOR(pg_catalog.=) d.refobjid
              WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
                AND d.objid OPERATOR(pg_catalog.=) $1
                AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
                AND d.deptype OPERATOR(pg_catalog.=) 'e' AND e.extname OPERATOR(pg_catalog.=) 'kafka'",
            Some(1),
            &[table.into()],
        )?
        .next()
        .map_or(Ok(None), |row| row.get::<String>(1))
    })
    .map_err(|e| KafkaError::Internal(format!("could not read the extension's tables: {e}")))
}

/// Makes decoding read the capture of `table` anew from this transaction's commit on (the
/// invalidation is in the WAL).
#[pg_extern(volatile, parallel_unsafe, schema = "kafka_internal")]
fn wal_invalidate(table: pg_sys::Oid) {
    invalidate(table);
}

fn invalidate(table: pg_sys::Oid) {
    // SAFETY: inside the caller's transaction; an invalidation of a relation that does not exist
    // is harmless.
    unsafe { pg_sys::CacheInvalidateRelcacheByRelid(table) };
}

/// Creates the slot, as `pg_create_logical_replication_slot` does: ephemeral until its start
/// point is found (waiting for the transactions running now to end), then persistent. In a
/// transaction without a transaction id.
pub fn create() {
    let name = name();
    let mut routine = super::reader::routine();
    // SAFETY: in a transaction that has no xid (checked by the caller), holding no slot. Each
    // call raises on failure; an ephemeral slot is dropped when an error releases it. The context
    // is freed before the slot is made persistent and released.
    unsafe {
        let ephemeral = pg_sys::ReplicationSlotPersistency::RS_EPHEMERAL;
        // From PostgreSQL 17: failover (a slot synchronized to standbys) and synced (made by
        // synchronization), both false here.
        #[cfg(any(feature = "pg14", feature = "pg15", feature = "pg16"))]
        pg_sys::ReplicationSlotCreate(name.as_ptr(), true, ephemeral, false);
        #[cfg(not(any(feature = "pg14", feature = "pg15", feature = "pg16")))]
        pg_sys::ReplicationSlotCreate(name.as_ptr(), true, ephemeral, false, false, false);
        let ctx = pg_sys::CreateInitDecodingContext(
            PLUGIN.as_ptr(),
            std::ptr::null_mut(),
            false,
            pg_sys::InvalidXLogRecPtr as u64,
            &mut routine,
            None,
            None,
            None,
        );
        // Reading up to the start point replays the invalidations of catalog changes that
        // commit meanwhile in an internal subtransaction, which leaves the resource owner and
        // memory context of the top transaction current, not the caller's (the query's): its
        // snapshot would then be released against the wrong owner ("snapshot reference … is
        // not owned by resource owner TopTransaction"). Restored as PL/pgSQL does after one.
        let (owner, context) = (pg_sys::CurrentResourceOwner, pg_sys::CurrentMemoryContext);
        pg_sys::DecodingContextFindStartpoint(ctx);
        pg_sys::FreeDecodingContext(ctx);
        pg_sys::ReplicationSlotPersist();
        pg_sys::ReplicationSlotRelease();
        pg_sys::CurrentResourceOwner = owner;
        pg_sys::CurrentMemoryContext = context;
    }
}

/// Drops the slot (the worker, holding no slot, once no wal capture is left).
pub fn drop_slot() {
    let name = name();
    // SAFETY: `name` is NUL-terminated; with nowait, a slot in use raises instead of waiting.
    unsafe { pg_sys::ReplicationSlotDrop(name.as_ptr(), true) };
}
