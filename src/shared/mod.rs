//! State shared between backends and the worker, in PostgreSQL shared memory.
//!
//! Two pieces: [`SIGNALS`], lock-free atomics a committing backend may touch (nothing in a commit
//! callback may fail or block): the worker's latch and the count of close requests; and
//! [`STATE`], the worker's counters and last error behind an LWLock, read by `kafka.status` and
//! written only by the worker.

pub mod slots;

use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgAtomic, PgLwLock};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

const ERROR_LEN: usize = 480;
/// How many distinct failures `kafka.recent_errors` keeps, and how much of each.
const RECENT: usize = 8;
const RECENT_LEN: usize = 240;

/// One failure of the recent ones: the same message reported again only counts.
#[derive(Copy, Clone)]
pub struct RecentError {
    pub first_at: i64,
    pub last_at: i64,
    pub count: i64,
    len: usize,
    text: [u8; RECENT_LEN],
}

impl RecentError {
    const EMPTY: RecentError =
        RecentError { first_at: 0, last_at: 0, count: 0, len: 0, text: [0; RECENT_LEN] };

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.text[..self.len]).into_owned()
    }
}

/// The longest prefix of `msg` of at most `max` bytes that ends on a character boundary.
fn cut(msg: &str, max: usize) -> &[u8] {
    let mut n = msg.len().min(max);
    while !msg.is_char_boundary(n) {
        n -= 1;
    }
    &msg.as_bytes()[..n]
}

#[derive(Copy, Clone)]
pub struct WorkerState {
    /// Worker process id, 0 when no worker runs.
    pub pid: i32,
    /// The database the running worker serves.
    pub database: pgrx::pg_sys::Oid,
    /// When the current worker process started (TimestampTz), 0 when none.
    pub started_at: i64,
    /// Whether the running worker delivers exactly once (`kafka.delivery`, as it applies it).
    pub exactly_once: bool,
    /// Messages acknowledged by Kafka since the worker started.
    pub delivered: i64,
    /// Messages moved to kafka.dead_letter since the worker started.
    pub dead_lettered: i64,
    /// When Kafka last acknowledged a message (TimestampTz), 0 if never.
    pub last_delivery_at: i64,
    /// When the current failure was last recorded (TimestampTz), 0 while delivery works.
    pub last_error_at: i64,
    last_error_len: usize,
    last_error: [u8; ERROR_LEN],
    /// When the current failure began (TimestampTz), 0 while delivery works.
    pub failing_since: i64,
    /// Most messages held back at once during the current failure.
    pub waited: i64,
    /// The failure before, once it has cleared (TimestampTz of its last report), 0 if none.
    pub previous_error_at: i64,
    previous_error_len: usize,
    previous_error: [u8; ERROR_LEN],
    /// The last [`RECENT`] distinct failures, a ring; `recent_count` counts every one pushed.
    pub recent: [RecentError; RECENT],
    pub recent_count: usize,
}

// SAFETY: WorkerState is plain Copy data (integers, an Oid, fixed byte arrays) with no pointer and
// no Drop, so the bytes in shared memory mean the same in every process.
unsafe impl PGRXSharedMemory for WorkerState {}

impl WorkerState {
    pub const fn new() -> Self {
        WorkerState {
            pid: 0,
            database: pgrx::pg_sys::Oid::INVALID,
            started_at: 0,
            exactly_once: false,
            delivered: 0,
            dead_lettered: 0,
            last_delivery_at: 0,
            last_error_at: 0,
            last_error_len: 0,
            last_error: [0; ERROR_LEN],
            failing_since: 0,
            waited: 0,
            previous_error_at: 0,
            previous_error_len: 0,
            previous_error: [0; ERROR_LEN],
            recent: [RecentError::EMPTY; RECENT],
            recent_count: 0,
        }
    }

    /// The recent failures, newest first.
    pub fn recent_errors(&self) -> Vec<RecentError> {
        (0..self.recent_count.min(RECENT))
            .map(|i| self.recent[(self.recent_count - 1 - i) % RECENT])
            .collect()
    }

    /// Adds a failure to the recent ones (the same as the newest only counts again).
    fn note_error(&mut self, msg: &str, at: i64) {
        let text = cut(msg, RECENT_LEN);
        if self.recent_count > 0 {
            let newest = &mut self.recent[(self.recent_count - 1) % RECENT];
            if newest.text[..newest.len] == *text {
                newest.last_at = at;
                newest.count += 1;
                return;
            }
        }
        let mut e =
            RecentError { first_at: at, last_at: at, count: 1, len: text.len(), ..RecentError::EMPTY };
        e.text[..text.len()].copy_from_slice(text);
        self.recent[self.recent_count % RECENT] = e;
        self.recent_count += 1;
    }

    pub fn waited_at_least(&mut self, n: i64) {
        self.waited = self.waited.max(n);
    }

    pub fn previous_error(&self) -> Option<String> {
        (self.previous_error_at != 0)
            .then(|| String::from_utf8_lossy(&self.previous_error[..self.previous_error_len]).into_owned())
    }

    /// Delivery works again: the failure becomes the previous one. Returns when it began and how
    /// many messages it held back, if there was one.
    pub fn recover(&mut self) -> Option<(i64, i64)> {
        if self.last_error_at == 0 {
            return None;
        }
        let ended = (self.failing_since, self.waited);
        self.previous_error = self.last_error;
        self.previous_error_len = self.last_error_len;
        self.previous_error_at = self.last_error_at;
        self.last_error_at = 0;
        self.last_error_len = 0;
        self.failing_since = 0;
        self.waited = 0;
        Some(ended)
    }

    pub fn last_error(&self) -> Option<String> {
        (self.last_error_at != 0)
            .then(|| String::from_utf8_lossy(&self.last_error[..self.last_error_len]).into_owned())
    }

    /// Records the current failure; returns whether it is a new one (delivery worked before).
    pub fn set_last_error(&mut self, msg: &str, at: i64) -> bool {
        self.note_error(msg, at);
        let text = cut(msg, ERROR_LEN);
        self.last_error[..text.len()].copy_from_slice(text);
        self.last_error_len = text.len();
        self.last_error_at = at;
        let new = self.failing_since == 0;
        if new {
            self.failing_since = at;
        }
        new
    }
}

// SAFETY: "pg_kafka_worker_state" names no other shared memory object of this library, and its
// pg_kafka_ prefix keeps it apart from other extensions' names.
pub static STATE: PgLwLock<WorkerState> = unsafe { PgLwLock::new(c"pg_kafka_worker_state") };
/// What backends signal to the worker without taking a lock.
pub struct Signals {
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
}

// SAFETY: Signals holds only atomics (lock-free, so usable across processes) and, as an integer,
// the address of the worker's PGPROC latch, which is in shared memory mapped at the same address in
// every process.
unsafe impl PGRXSharedMemory for Signals {}

// SAFETY: "pg_kafka_signals" names no other shared memory object of this library, and its pg_kafka_
// prefix keeps it apart from other extensions' names.
pub static SIGNALS: PgAtomic<Signals> = unsafe { PgAtomic::new(c"pg_kafka_signals") };

static PRELOADED: AtomicBool = AtomicBool::new(false);

/// Whether this library was loaded through `shared_preload_libraries` (so the worker exists).
pub fn preloaded() -> bool {
    PRELOADED.load(Ordering::Relaxed)
}

/// Requests the shared memory; only possible while the library is preloaded.
pub fn init() {
    PRELOADED.store(true, Ordering::Relaxed);
    pg_shmem_init!(STATE = WorkerState::new());
    slots::init_shmem();
    pg_shmem_init!(
        SIGNALS = Signals {
            latch: AtomicUsize::new(0),
            close_requests: AtomicU64::new(0),
            wants_commits: AtomicBool::new(true),
            wal_capture: AtomicBool::new(false),
        }
    );
}

/// Wakes the worker if it runs. Cannot fail: safe in a commit callback.
pub fn wake_worker() {
    let latch = SIGNALS.get().latch.load(Ordering::Acquire) as *mut pg_sys::Latch;
    if !latch.is_null() {
        // SAFETY: `latch` is the worker's PGPROC latch, published by the worker (see
        // `publish_latch`). PGPROC latches live in shared memory for the whole life of the server,
        // so even if the worker has exited since, SetLatch only wakes whoever uses that PGPROC now;
        // it cannot fail.
        unsafe { pg_sys::SetLatch(latch) };
    }
}

/// Tells the worker that a transaction that wrote to the outbox committed, unless it is lingering
/// or backing off (it reads the outbox when that ends). Cannot fail: safe in a commit callback.
pub fn wake_for_commit() {
    // SeqCst pairs with `hold_commits(false)`: either this load sees the worker listening again,
    // or the worker's next read of the outbox (a new snapshot, after its store) sees this commit.
    if SIGNALS.get().wants_commits.load(Ordering::SeqCst) {
        wake_worker();
    }
}

/// Worker only: while `hold`, commits do not wake it.
pub fn hold_commits(hold: bool) {
    SIGNALS.get().wants_commits.store(!hold, Ordering::SeqCst);
}

/// Worker only: whether it decodes the WAL for a capture (commits that wrote wake it then).
pub fn set_wal_capture(on: bool) {
    SIGNALS.get().wal_capture.store(on, Ordering::Relaxed);
}

/// Whether the worker decodes the WAL for a capture. Cannot fail.
pub fn wal_capture() -> bool {
    preloaded() && SIGNALS.get().wal_capture.load(Ordering::Relaxed)
}

/// Publishes (or, with null, withdraws) the worker's latch.
pub fn publish_latch(latch: *mut pg_sys::Latch) {
    hold_commits(false);
    SIGNALS.get().latch.store(latch as usize, Ordering::Release);
}

/// Asks the worker to drop its producer and re-read its settings; returns whether a worker runs.
/// Cannot fail: safe in a commit callback.
pub fn request_close() -> bool {
    SIGNALS.get().close_requests.fetch_add(1, Ordering::AcqRel);
    wake_worker();
    SIGNALS.get().latch.load(Ordering::Acquire) != 0
}

pub fn close_requests() -> u64 {
    SIGNALS.get().close_requests.load(Ordering::Acquire)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_errors_keep_distinct_failures_newest_first() {
        let mut s = WorkerState::new();
        s.set_last_error("broker down", 1);
        s.set_last_error("broker down", 2);
        s.set_last_error("timed out", 3);
        let r = s.recent_errors();
        assert_eq!(r.iter().map(RecentError::text).collect::<Vec<_>>(), ["timed out", "broker down"]);
        assert_eq!((r[1].first_at, r[1].last_at, r[1].count), (1, 2, 2), "a repeat only counts");
        for i in 0..20 {
            s.set_last_error(&format!("e{i}"), 10 + i);
        }
        let r = s.recent_errors();
        assert_eq!(r.len(), RECENT);
        assert_eq!((r[0].text().as_str(), r[RECENT - 1].text().as_str()), ("e19", "e12"));
        s.set_last_error(&"é".repeat(200), 99);
        let newest = s.recent_errors()[0].text();
        assert!(
            newest.len() <= RECENT_LEN && newest.chars().all(|c| c == 'é'),
            "cut on a character boundary"
        );
    }
}
