//! State shared between sessions, the launcher and the workers, in PostgreSQL shared memory.
//!
//! pg_kafka serves up to [`MAX_DATABASES`] databases of a cluster, one worker each; entry `i` of
//! every table here is one served database's. Three pieces: [`SIGNALS`], lock-free atomics a
//! committing session may touch (nothing in a commit callback may fail or block): which database
//! an entry is for, its worker's latch, its close and stop requests; and the launcher's latch and
//! the count of `CREATE EXTENSION` statements committed; [`state::STATE`], each entry's worker
//! counters and failures behind an LWLock; and [`slots`], the immediate sends.
//!
//! A session or worker finds its database's entry by its database oid ([`here`]); only the
//! launcher assigns and frees entries (`worker::launcher`).

pub mod slots;
pub mod state;

pub use state::{WorkerState, STATE};

use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgAtomic};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// How many databases one cluster's pg_kafka serves at most (an entry each, sized at start).
pub const MAX_DATABASES: usize = 64;

/// What sessions signal to one database's worker without taking a lock.
pub struct Signals {
    /// The database oid this entry is for, 0 when free (set by the launcher).
    database: AtomicU32,
    /// The worker's latch (`*mut Latch`), 0 when no worker runs.
    latch: AtomicUsize,
    /// Bumped by kafka.close() and by re-queued dead letters: the worker makes a new producer.
    close_requests: AtomicU64,
    /// False while the worker lingers or backs off: it reads the outbox when that ends anyway,
    /// so committing backends need not wake it (a wake-up per commit would cost both sides a
    /// context switch for nothing).
    wants_commits: AtomicBool,
    /// The worker decodes the WAL for a capture: every commit that wrote wakes it.
    wal_capture: AtomicBool,
    /// The worker must exit (the launcher no longer serves the database, or a session is about to
    /// drop, rename or copy it).
    stop: AtomicBool,
    /// Until when (TimestampTz) no worker may start for the database: a session drops, renames or
    /// copies it, which needs it free of connections.
    held_until: AtomicI64,
}

impl Signals {
    fn free() -> Signals {
        Signals {
            database: AtomicU32::new(0),
            latch: AtomicUsize::new(0),
            close_requests: AtomicU64::new(0),
            wants_commits: AtomicBool::new(true),
            wal_capture: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            held_until: AtomicI64::new(0),
        }
    }
}

/// Every entry's signals, and the launcher's.
pub struct AllSignals {
    databases: [Signals; MAX_DATABASES],
    /// The launcher's latch, 0 when it does not run.
    launcher_latch: AtomicUsize,
    /// How many `CREATE EXTENSION` statements committed since the server started.
    extensions_created: AtomicU64,
}

// SAFETY: AllSignals holds only atomics (lock-free, so usable across processes) and, as integers,
// addresses of PGPROC latches, which are in shared memory mapped at the same address in every
// process.
unsafe impl PGRXSharedMemory for AllSignals {}

// SAFETY: "pg_kafka_signals" names no other shared memory object of this library, and its pg_kafka_
// prefix keeps it apart from other extensions' names.
pub static SIGNALS: PgAtomic<AllSignals> = unsafe { PgAtomic::new(c"pg_kafka_signals") };

static PRELOADED: AtomicBool = AtomicBool::new(false);

/// Whether this library was loaded through `shared_preload_libraries` (so the worker exists).
pub fn preloaded() -> bool {
    PRELOADED.load(Ordering::Relaxed)
}

/// Requests the shared memory; only possible while the library is preloaded.
pub fn init() {
    PRELOADED.store(true, Ordering::Relaxed);
    state::init_shmem();
    slots::init_shmem();
    pg_shmem_init!(
        SIGNALS = AllSignals {
            databases: std::array::from_fn(|_| Signals::free()),
            launcher_latch: AtomicUsize::new(0),
            extensions_created: AtomicU64::new(0),
        }
    );
}

thread_local! {
    /// The entry this process found for its database last time.
    static HERE: Cell<usize> = const { Cell::new(0) };
}

/// The entry of `database`, if it is served. Lock-free: safe in a commit callback.
pub fn entry_of(database: pg_sys::Oid) -> Option<usize> {
    let all = &SIGNALS.get().databases;
    let wanted = database.to_u32();
    if wanted == 0 {
        return None;
    }
    let cached = HERE.with(Cell::get);
    if all[cached].database.load(Ordering::Acquire) == wanted {
        return Some(cached);
    }
    let found = all.iter().position(|s| s.database.load(Ordering::Acquire) == wanted)?;
    HERE.with(|h| h.set(found));
    Some(found)
}

/// The entry of this process's database, if it is served (and pg_kafka preloaded).
pub fn here() -> Option<usize> {
    if !preloaded() {
        return None;
    }
    // SAFETY: plain read of the process-local id of the database this process connected to (0
    // before it connects, which has no entry).
    entry_of(unsafe { pg_sys::MyDatabaseId })
}

fn signals() -> Option<&'static Signals> {
    here().map(|i| &SIGNALS.get().databases[i])
}

fn set_latch(latch: usize) {
    if latch != 0 {
        // SAFETY: `latch` is a PGPROC latch, published by its process. PGPROC latches live in
        // shared memory for the whole life of the server, so even if that process has exited
        // since, SetLatch only wakes whoever uses that PGPROC now; it cannot fail.
        unsafe { pg_sys::SetLatch(latch as *mut pg_sys::Latch) };
    }
}

/// Wakes this database's worker if it runs. Cannot fail: safe in a commit callback.
pub fn wake_worker() {
    if let Some(s) = signals() {
        set_latch(s.latch.load(Ordering::Acquire));
    }
}

/// Tells the worker that a transaction that wrote to the outbox committed, unless it is lingering
/// or backing off (it reads the outbox when that ends). Cannot fail: safe in a commit callback.
pub fn wake_for_commit() {
    // SeqCst pairs with `hold_commits(false)`: either this load sees the worker listening again,
    // or the worker's next read of the outbox (a new snapshot, after its store) sees this commit.
    if signals().is_some_and(|s| s.wants_commits.load(Ordering::SeqCst)) {
        wake_worker();
    }
}

/// Worker only: while `hold`, commits do not wake it.
pub fn hold_commits(hold: bool) {
    if let Some(s) = signals() {
        s.wants_commits.store(!hold, Ordering::SeqCst);
    }
}

/// Worker only: whether it decodes the WAL for a capture (commits that wrote wake it then).
pub fn set_wal_capture(on: bool) {
    if let Some(s) = signals() {
        s.wal_capture.store(on, Ordering::Relaxed);
    }
}

/// Whether this database's worker decodes the WAL for a capture. Cannot fail.
pub fn wal_capture() -> bool {
    signals().is_some_and(|s| s.wal_capture.load(Ordering::Relaxed))
}

/// Worker only: publishes (or, with null, withdraws) its latch.
pub fn publish_latch(latch: *mut pg_sys::Latch) {
    hold_commits(false);
    if let Some(s) = signals() {
        s.latch.store(latch as usize, Ordering::Release);
    }
}

/// Asks the worker to drop its producer and re-read its settings; returns whether a worker runs.
/// Cannot fail: safe in a commit callback.
pub fn request_close() -> bool {
    let Some(s) = signals() else { return false };
    s.close_requests.fetch_add(1, Ordering::AcqRel);
    set_latch(s.latch.load(Ordering::Acquire));
    s.latch.load(Ordering::Acquire) != 0
}

pub fn close_requests() -> u64 {
    signals().map_or(0, |s| s.close_requests.load(Ordering::Acquire))
}

/// Worker only: whether it must exit (see [`Signals::stop`]).
pub fn stop_requested() -> bool {
    signals().is_some_and(|s| s.stop.load(Ordering::Acquire))
}

/// Asks entry `i`'s worker to exit; with `hold_until`, no worker starts for it before then.
pub fn stop_worker(i: usize, hold_until: Option<i64>) {
    let s = &SIGNALS.get().databases[i];
    if let Some(until) = hold_until {
        s.held_until.store(until, Ordering::Release);
    }
    s.stop.store(true, Ordering::Release);
    set_latch(s.latch.load(Ordering::Acquire));
    // Not the launcher's latch: it hears of the worker's exit from the postmaster (and when the
    // launcher itself asks, a wake-up of its own would make it spin until then).
}

/// Ends a hold of entry `i` (the statement that needed it ended).
pub fn release(i: usize) {
    SIGNALS.get().databases[i].held_until.store(0, Ordering::Release);
    wake_launcher();
}

/// Launcher only: until when entry `i` is held (TimestampTz, 0 if it is not).
pub fn held_until(i: usize) -> i64 {
    SIGNALS.get().databases[i].held_until.load(Ordering::Acquire)
}

/// Launcher only: gives entry `i` to `database` (InvalidOid: frees it), with no stop request.
pub fn assign(i: usize, database: pg_sys::Oid) {
    let s = &SIGNALS.get().databases[i];
    s.stop.store(false, Ordering::Release);
    s.database.store(database.to_u32(), Ordering::Release);
}

/// Launcher only: publishes (or, with null, withdraws) its latch.
pub fn publish_launcher_latch(latch: *mut pg_sys::Latch) {
    SIGNALS.get().launcher_latch.store(latch as usize, Ordering::Release);
}

/// Wakes the launcher: a database or an extension may have appeared or gone. Cannot fail.
pub fn wake_launcher() {
    set_latch(SIGNALS.get().launcher_latch.load(Ordering::Acquire));
}

/// A `CREATE EXTENSION` committed: databases where a worker found none are looked at again.
/// Cannot fail: safe in a commit callback.
pub fn extension_created() {
    SIGNALS.get().extensions_created.fetch_add(1, Ordering::AcqRel);
    wake_launcher();
}

/// How many `CREATE EXTENSION` statements committed since the server started.
pub fn extensions_created() -> u64 {
    SIGNALS.get().extensions_created.load(Ordering::Acquire)
}
