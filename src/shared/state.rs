//! Each served database's entry in shared memory ([`STATE`]): which database, its worker's
//! process, counters, backlog and failures (current, previous, recent), and why no worker runs
//! if none does. Written by the launcher (which entry is whose) and by the database's worker
//! (everything else); read by `kafka.status` and `kafka.databases`.

use super::MAX_DATABASES;
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgLwLock};

/// A database name's longest length (NAMEDATALEN - 1).
const NAME_LEN: usize = 63;
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

/// One served database's entry: the launcher fills in which database and why no worker runs
/// (if none does); the database's worker everything else.
#[derive(Copy, Clone)]
pub struct WorkerState {
    /// Worker process id, 0 when no worker runs.
    pub pid: i32,
    /// The database this entry is for (InvalidOid: a free entry).
    pub database: pgrx::pg_sys::Oid,
    name_len: usize,
    name: [u8; NAME_LEN],
    /// Why no worker runs, as the launcher knows it (empty while one runs).
    note_len: usize,
    note: [u8; RECENT_LEN],
    /// The worker found no `kafka` extension in the database, and exited: the number of `CREATE
    /// EXTENSION` statements the cluster had committed when it looked (see
    /// [`super::extensions_created`]).
    pub absent: Option<u64>,
    /// The worker found the extension: it serves the database (until then it only looks).
    pub serving: bool,
    /// When the last worker of this entry exited (TimestampTz), 0 if none did.
    pub stopped_at: i64,
    /// Messages waiting in the outbox as the worker last counted them, and when (TimestampTz).
    pub backlog: i64,
    pub backlog_at: i64,
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
            name_len: 0,
            name: [0; NAME_LEN],
            note_len: 0,
            note: [0; RECENT_LEN],
            absent: None,
            serving: false,
            stopped_at: 0,
            backlog: 0,
            backlog_at: 0,
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

    /// An entry for `database` (named `name`), with no worker yet.
    pub fn for_database(database: pgrx::pg_sys::Oid, name: &str) -> Self {
        let mut s = WorkerState { database, ..WorkerState::new() };
        s.set_name(name);
        s
    }

    pub fn set_name(&mut self, name: &str) {
        let name = cut(name, NAME_LEN);
        self.name[..name.len()].copy_from_slice(name);
        self.name_len = name.len();
    }

    /// A new worker of this entry starts: its counters and failures start afresh, the recent
    /// failures and what the entry is for are kept.
    pub fn start_worker(&mut self, pid: i32, at: i64) {
        let kept = *self;
        *self = WorkerState {
            pid,
            started_at: at,
            database: kept.database,
            name_len: kept.name_len,
            name: kept.name,
            serving: kept.serving,
            recent: kept.recent,
            recent_count: kept.recent_count,
            ..WorkerState::new()
        };
    }

    /// Whether `kafka.databases` shows the entry: its database was found to have the extension,
    /// or no worker could be started for it.
    pub fn serving_or_waiting(&self) -> bool {
        self.serving || self.note_len != 0
    }

    pub fn name(&self) -> String {
        String::from_utf8_lossy(&self.name[..self.name_len]).into_owned()
    }

    pub fn note(&self) -> Option<String> {
        (self.note_len != 0).then(|| String::from_utf8_lossy(&self.note[..self.note_len]).into_owned())
    }

    /// Says why no worker runs (empty: clears it).
    pub fn set_note(&mut self, why: &str) {
        let text = cut(why, RECENT_LEN);
        self.note[..text.len()].copy_from_slice(text);
        self.note_len = text.len();
    }

    /// The recent failures, newest first.
    pub fn recent_errors(&self) -> Vec<RecentError> {
        (0..self.recent_count.min(RECENT))
            .map(|i| self.recent[(self.recent_count - 1 - i) % RECENT])
            .collect()
    }

    /// Adds a failure to the recent ones (the same as the newest only counts again).
    pub fn note_error(&mut self, msg: &str, at: i64) {
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
pub static STATE: PgLwLock<[WorkerState; MAX_DATABASES]> = unsafe { PgLwLock::new(c"pg_kafka_worker_state") };

pub(super) fn init_shmem() {
    pg_shmem_init!(STATE = [WorkerState::new(); MAX_DATABASES]);
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
