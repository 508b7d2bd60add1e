//! The worker as a PostgreSQL process: how the launcher starts it (one per served database, a
//! dynamic background worker given its entry in shared memory), its entry point (connecting,
//! the session settings it overrides, the log line of its effective settings), its exit, and
//! what it tells the rest of the server: its state in `pg_stat_activity`, the current failure
//! (in shared memory and the server log), the shutdown request.
//!
//! What must stay true: the worker runs its own session settings ([`SESSION`]) over whatever
//! a database or role sets, so that nothing another role creates or configures runs as the
//! worker or stops delivery; the postmaster never restarts it, the launcher does (after
//! [`super::launcher::RESTART_AFTER`]) while its database is served; the server log gets one
//! line when delivery stops and one when it resumes, not one per attempt.

use super::Worker;
use crate::gucs::{self, Delivery};
use crate::shared;
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, DynamicBackgroundWorker,
    DynamicBackgroundWorkerLoadError, SignalWakeFlags,
};
use pgrx::prelude::*;
use std::ffi::{CStr, CString};

/// The worker's session settings (see [`pg_kafka_worker_main`]), over any a database or role sets.
const SESSION: [(&CStr, &CStr); 15] = [
    (c"search_path", c"pg_catalog"),
    (c"enable_seqscan", c"off"),
    (c"enable_sort", c"off"),
    (c"enable_bitmapscan", c"off"),
    (c"enable_hashjoin", c"off"),
    (c"enable_mergejoin", c"off"),
    // The settings above make plans look expensive enough to be JIT-compiled at every pass.
    (c"jit", c"off"),
    // Kept statements (`store::kept`) are planned with their arguments at each execution.
    (c"plan_cache_mode", c"force_custom_plan"),
    // What `ALTER DATABASE … SET` could otherwise impose on the worker to stop delivery.
    (c"default_transaction_read_only", c"off"),
    (c"default_transaction_isolation", c"read committed"),
    (c"statement_timeout", c"0"),
    (c"lock_timeout", c"0"),
    (c"idle_in_transaction_session_timeout", c"0"),
    (c"session_replication_role", c"origin"),
    // ALTER DATABASE … SET role = … would make the worker that role (and stop delivery): the
    // worker stays who it connected as.
    (c"role", c"none"),
];

/// Starts the worker of entry `entry` (serving `database`, named `name`); the launcher (whose
/// latch the postmaster sets when it starts or stops) only.
pub(super) fn start(
    entry: usize,
    name: &str,
) -> Result<DynamicBackgroundWorker, DynamicBackgroundWorkerLoadError> {
    BackgroundWorkerBuilder::new(&format!("pg_kafka worker for database {name}"))
        .set_type("pg_kafka")
        .set_library("kafka")
        .set_function("pg_kafka_worker_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(None)
        .set_argument(Some(pg_sys::Datum::from(entry)))
        // SAFETY: plain read of this process's id, set at process start.
        .set_notify_pid(unsafe { pg_sys::MyProcPid })
        .load_dynamic()
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pg_kafka_worker_main(arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let entry = arg.value() % shared::MAX_DATABASES;
    let database = shared::STATE.share()[entry].database;
    if database == pg_sys::Oid::INVALID {
        // SAFETY: ends the process before it connected to anything: its entry was freed meanwhile.
        unsafe { pg_sys::proc_exit(0) };
    }
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(database), None);
    // SAFETY: in the worker's main function, connected: `on_exit` is a 'static callback of the
    // expected signature, registered once. MyLatch is this worker's PGPROC latch in shared memory
    // (set up by InitProcess before the entry function runs), valid for other processes to set.
    unsafe {
        pg_sys::before_shmem_exit(Some(on_exit), pg_sys::Datum::from(entry));
        shared::publish_latch(pg_sys::MyLatch);
    }
    {
        let mut s = shared::STATE.exclusive();
        // SAFETY: plain read of this process's id, set at process start.
        s[entry].start_worker(unsafe { pg_sys::MyProcPid }, now());
    }
    apply_delivery_mode();
    crate::decoding::mark_own_writes();
    // Only pg_catalog: nothing another role creates in the served database runs as the worker.
    // And the outbox is always read along its indexes, never scanned and sorted whole, which the
    // planner may pick when the statistics are those of an empty outbox (the usual state). A
    // database's owner may set defaults for it (ALTER DATABASE … SET): those that would stop
    // delivery (read-only transactions, timeouts) are overridden too.
    for (name, value) in SESSION {
        // SAFETY: both are NUL-terminated literals; the worker's own session settings.
        unsafe {
            pg_sys::SetConfigOption(
                name.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_SUSET,
                pg_sys::GucSource::PGC_S_OVERRIDE,
            )
        };
    }
    Worker::default().run();
    // SAFETY: ends the worker process and does not return; `run` returns only between passes, with
    // no transaction open.
    unsafe { pg_sys::proc_exit(0) };
}

/// Says in the log that the worker serves its database, and with which settings (once it found
/// the extension there: a worker that finds none exits without a word).
pub(super) fn log_started() {
    let name = with_state(|s| s.name()).unwrap_or_default();
    log!(
        "pg_kafka worker started: database {name}, kafka.batch_size={} kafka.batch_bytes={} \
         kafka.poll_interval={}ms kafka.retry_backoff_max={}ms kafka.message_timeout={}ms",
        gucs::batch_size(),
        gucs::batch_bytes(),
        gucs::poll_interval().as_millis(),
        gucs::retry_backoff_max().as_millis(),
        gucs::message_timeout_ms()
    );
    if gucs::delivery() == Delivery::ExactlyOnce {
        log!("pg_kafka worker: exactly-once delivery (kafka.position_topic={})", gucs::position_topic());
    }
}

/// At least once, the worker's commits only record deliveries: losing the last of them in a
/// crash re-sends those messages, so they need not wait for the WAL flush (backends do). Exactly
/// once, a Kafka transaction must be recorded durably before the next one begins (see
/// [`super::exactly_once`]).
pub(super) fn apply_delivery_mode() {
    if let Some(i) = shared::here() {
        shared::STATE.exclusive()[i].exactly_once = gucs::delivery() == Delivery::ExactlyOnce;
    }
    let value = match gucs::delivery() {
        Delivery::AtLeastOnce => c"off",
        Delivery::ExactlyOnce => c"on",
    };
    // SAFETY: NUL-terminated literals; the worker's own session setting.
    unsafe {
        pg_sys::SetConfigOption(
            c"synchronous_commit".as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_OVERRIDE,
        )
    };
}

#[pg_guard]
unsafe extern "C-unwind" fn on_exit(_code: i32, entry: pg_sys::Datum) {
    shared::publish_latch(std::ptr::null_mut());
    {
        let mut all = shared::STATE.exclusive();
        let s = &mut all[entry.value() % shared::MAX_DATABASES];
        s.pid = 0;
        s.started_at = 0;
        // Asked to stop (its database held by a statement, or no longer served): no delay
        // before the next worker.
        s.stopped_at = if shared::stop_requested() { 0 } else { now() };
    }
    shared::wake_launcher();
}

/// This worker's entry in shared memory, changed by `f` under its lock.
pub(super) fn with_state<R>(f: impl FnOnce(&mut shared::WorkerState) -> R) -> Option<R> {
    let i = shared::here()?;
    Some(f(&mut shared::STATE.exclusive()[i]))
}

/// Records the current failure; the server log gets one line when delivery stops (and one when
/// it resumes, from [`recovered`]), not one per attempt.
pub(super) fn record_error(msg: &str) {
    let began = with_state(|s| s.set_last_error(msg, now())).unwrap_or(false);
    if began {
        warning!(
            "pg_kafka: delivery stopped: {msg}; committed messages wait in kafka.outbox and are retried"
        );
    }
    activity(&format!("retrying: {msg}"));
}

/// Adds a WAL capture problem that does not stop delivery (events skipped, the slot made
/// again, WAL piling up) to `kafka.recent_errors`; its WARNING is already in the log.
pub(super) fn note_capture_error(msg: &str) {
    with_state(|s| s.note_error(msg, now()));
}

/// Delivery works: clears the current failure, and says in the log how long it lasted.
pub(super) fn recovered() {
    let ended = with_state(|s| s.recover()).flatten();
    if let Some((since, waited)) = ended {
        let secs = (now() - since) as f64 / 1e6;
        log!("pg_kafka: delivery resumed after {secs:.1} s; {waited} messages had waited");
    }
}

/// Shows what the worker does in `pg_stat_activity` (state `active`).
pub(super) fn activity(what: &str) {
    activity_state(what, pg_sys::BackendState::STATE_RUNNING);
}

/// Shows what the worker does in `pg_stat_activity`, in `state`.
pub(super) fn activity_state(what: &str, state: pg_sys::BackendState::Type) {
    let text = CString::new(what.replace('\0', " ")).unwrap_or_default();
    // SAFETY: `text` is a NUL-terminated CString alive for the call; PostgreSQL copies it into this
    // backend's status entry.
    unsafe { pg_sys::pgstat_report_activity(state, text.as_ptr()) };
}

/// Whether the worker must exit: the postmaster asked (SIGTERM), or the launcher or a session
/// about to drop, rename or copy the database did ([`shared::stop_requested`]).
pub(super) fn shutdown_requested() -> bool {
    // SAFETY: ShutdownRequestPending is a process-local sig_atomic_t set by the SIGTERM handler; it
    // is read through a raw pointer, volatile, with no reference to the `static mut`.
    let sigterm = unsafe { std::ptr::read_volatile(&raw const pg_sys::ShutdownRequestPending) != 0 };
    sigterm || shared::stop_requested()
}

/// PostgreSQL's current timestamp (microseconds since 2000-01-01).
pub(super) fn now() -> i64 {
    // SAFETY: GetCurrentTimestamp only reads the system clock; no precondition.
    unsafe { pg_sys::GetCurrentTimestamp() }
}
