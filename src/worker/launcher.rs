//! The launcher: one background worker, started with the server and connected to no database,
//! that keeps one delivery worker running for each database `kafka.database` serves.
//!
//! A round ([`Launcher::round`]) reads `pg_database` (a shared catalog) and compares it with the
//! entries in shared memory: a served database gets an entry and a worker; an entry whose
//! database is no longer served (dropped, renamed out of the list, no longer accepting
//! connections, made a template) has its worker stopped, then is freed. A worker that finds no
//! `kafka` extension in its database exits, and its database is left alone until a `CREATE
//! EXTENSION` commits somewhere in the cluster ([`crate::shared::extensions_created`]). A worker
//! that exits otherwise is started again after [`RESTART_AFTER`]; one that cannot be started
//! (every `max_worker_processes` slot taken) is said in a WARNING naming the setting and in
//! `kafka.databases`, and tried again every [`RETRY_EVERY`].
//!
//! It wakes when a worker it started starts or stops (the postmaster sets its latch), when a
//! session commits a `CREATE DATABASE` or `CREATE EXTENSION`, when a session is about to drop,
//! rename or copy a served database ([`crate::backend::cluster`]), on a configuration reload,
//! and otherwise every [`RESCAN_EVERY`].

use super::process::{self, now};
use crate::gucs;
use crate::shared::{self, WorkerState, MAX_DATABASES, STATE};
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus, BgWorkerStartTime,
    DynamicBackgroundWorker, SignalWakeFlags,
};
use pgrx::prelude::*;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// How long after a worker exited the launcher starts its database's next one.
pub const RESTART_AFTER: Duration = Duration::from_secs(5);
/// How often `pg_database` is read when nothing wakes the launcher.
const RESCAN_EVERY: Duration = Duration::from_secs(10);
/// How often a worker that could not be started is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// Registers the launcher with the postmaster; only while preloading.
pub fn register() {
    BackgroundWorkerBuilder::new("pg_kafka launcher")
        .set_type("pg_kafka launcher")
        .set_library("kafka")
        .set_function("pg_kafka_launcher_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(RESTART_AFTER))
        .load();
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pg_kafka_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(None, None);
    // SAFETY: in the launcher's main function: `on_exit` is a 'static callback of the expected
    // signature, registered once; MyLatch is this process's PGPROC latch in shared memory.
    unsafe {
        pg_sys::before_shmem_exit(Some(on_exit), pg_sys::Datum::from(0));
        shared::publish_launcher_latch(pg_sys::MyLatch);
    }
    // After a restart of the launcher alone, the workers it had started run on: their entries
    // say so (a worker clears its pid as it exits), and they are left to run.
    let mut launcher = Launcher::default();
    loop {
        if BackgroundWorker::sighup_received() {
            // SAFETY: in the launcher's main loop, outside any transaction, after SIGHUP: what
            // PostgreSQL's own processes do to reload the configuration.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        let wait = launcher.round();
        if !BackgroundWorker::wait_latch(Some(wait)) || BackgroundWorker::sigterm_received() {
            break;
        }
    }
    // SAFETY: ends the process, outside any transaction.
    unsafe { pg_sys::proc_exit(0) };
}

#[pg_guard]
unsafe extern "C-unwind" fn on_exit(_code: i32, _arg: pg_sys::Datum) {
    shared::publish_launcher_latch(std::ptr::null_mut());
}

/// A database as `pg_database` has it.
struct Database {
    oid: pg_sys::Oid,
    name: String,
    /// It accepts connections and is neither a template nor half-dropped.
    connectable: bool,
    is_template: bool,
}

/// The launcher's own memory.
#[derive(Default)]
struct Launcher {
    /// The workers it started, by entry, until they stop.
    workers: HashMap<usize, DynamicBackgroundWorker>,
    /// Databases whose worker found no extension: the `CREATE EXTENSION` count then.
    absent: HashMap<pg_sys::Oid, u64>,
    /// Entries whose worker could not be started, and whether that was said in the log.
    unstarted: HashMap<usize, bool>,
    /// Named databases already said in the log to be missing or without the extension.
    said: HashSet<String>,
    /// Whether it said that more databases are served than there are entries.
    said_full: bool,
}

impl Launcher {
    /// Whether entry `i`'s worker runs (or is starting).
    fn running(&mut self, i: usize, s: &WorkerState) -> bool {
        match self.workers.get(&i).map(DynamicBackgroundWorker::pid) {
            Some(Ok(_)) | Some(Err(BackgroundWorkerStatus::NotYetStarted)) => true,
            Some(Err(_)) => {
                self.workers.remove(&i);
                s.pid != 0
            }
            None => s.pid != 0,
        }
    }

    /// One round: every entry brought in line with what is served. Returns how long to wait
    /// before the next one (unless woken).
    fn round(&mut self) -> Duration {
        let databases = databases();
        let spec = gucs::databases();
        let created = shared::extensions_created();
        let served: Vec<&Database> =
            databases.iter().filter(|d| d.connectable && spec.serves(&d.name, d.is_template)).collect();
        self.say_missing(&spec, &databases);
        let mut wait = RESCAN_EVERY;
        let now = now();
        let mut to_start = Vec::new();
        {
            let mut state = STATE.exclusive();
            // Entries: stop or free what is not served; note what found no extension.
            for (i, s) in state.iter_mut().enumerate() {
                if s.database == pg_sys::Oid::INVALID {
                    continue;
                }
                let running = self.running(i, s);
                let database = served.iter().find(|d| d.oid == s.database);
                let absent = s.absent.filter(|&c| c == created && !running);
                if database.is_none() || absent.is_some() {
                    if running {
                        shared::stop_worker(i, None);
                        wait = wait.min(RETRY_EVERY);
                    } else {
                        if let Some(c) = absent {
                            self.absent.insert(s.database, c);
                            let name = s.name();
                            if matches!(spec, gucs::Databases::Named(_)) && self.said.insert(name.clone()) {
                                log!("pg_kafka: database \"{name}\" has no kafka extension: it is served once CREATE EXTENSION kafka runs there");
                            }
                        }
                        shared::assign(i, pg_sys::Oid::INVALID);
                        *s = WorkerState::new();
                        self.unstarted.remove(&i);
                    }
                    continue;
                }
                if let Some(d) = database.filter(|d| d.name != s.name()) {
                    s.set_name(&d.name); // renamed, and still served
                }
                if running {
                    continue;
                }
                let held = shared::held_until(i);
                // A worker that found no extension is started again at once after a CREATE
                // EXTENSION; one that exited otherwise after RESTART_AFTER.
                let restart_at = if s.stopped_at == 0 || s.absent.is_some() {
                    0
                } else {
                    s.stopped_at + micros(RESTART_AFTER)
                };
                let at = held.max(restart_at);
                if at > now {
                    wait = wait.min(Duration::from_micros((at - now) as u64));
                    continue;
                }
                to_start.push((i, s.name()));
            }
            // Served databases without an entry get one (unless their worker found no extension
            // since the last CREATE EXTENSION).
            for d in &served {
                if state.iter().any(|s| s.database == d.oid) || self.absent.get(&d.oid) == Some(&created) {
                    continue;
                }
                self.absent.remove(&d.oid);
                let Some(i) = state.iter().position(|s| s.database == pg_sys::Oid::INVALID) else {
                    if !std::mem::replace(&mut self.said_full, true) {
                        warning!(
                            "pg_kafka: kafka.database serves more than {MAX_DATABASES} databases; database \"{}\" and others are not served",
                            d.name
                        );
                    }
                    continue;
                };
                state[i] = WorkerState::for_database(d.oid, &d.name);
                shared::assign(i, d.oid);
                to_start.push((i, d.name.clone()));
            }
        }
        for (i, name) in to_start {
            if !self.start(i, &name) {
                wait = wait.min(RETRY_EVERY);
            }
        }
        wait
    }

    /// Starts entry `i`'s worker; false if no worker slot was free.
    fn start(&mut self, i: usize, name: &str) -> bool {
        shared::assign(i, STATE.share()[i].database); // clears a stop request
        match process::start(i, name) {
            Ok(handle) => {
                self.workers.insert(i, handle);
                if self.unstarted.remove(&i) == Some(true) {
                    log!("pg_kafka: a worker for database \"{name}\" could be started at last");
                }
                STATE.exclusive()[i].set_note("");
                true
            }
            Err(_) => {
                // SAFETY: plain read of a setting's variable, fixed at server start.
                let max = unsafe { pg_sys::max_worker_processes };
                let why = format!(
                    "no background worker slot is free: raise max_worker_processes (now {max}; pg_kafka takes one for its launcher and one per served database)"
                );
                STATE.exclusive()[i].set_note(&why);
                // A worker that finds no extension exits at once: while one runs, a failure is
                // only a wait.
                let probing = STATE.share().iter().any(|s| s.pid != 0 && !s.serving);
                let said = self.unstarted.entry(i).or_insert(false);
                if !*said && !probing {
                    *said = true;
                    warning!("pg_kafka: database \"{name}\" is not served: {why}");
                }
                false
            }
        }
    }

    /// Says once in the log which databases `kafka.database` names that do not exist or do not
    /// accept connections.
    fn say_missing(&mut self, spec: &gucs::Databases, databases: &[Database]) {
        let gucs::Databases::Named(names) = spec else { return };
        for name in names {
            let found = databases.iter().find(|d| &d.name == name);
            let why = match found {
                None => "does not exist",
                Some(d) if !d.connectable => "does not accept connections",
                Some(_) => {
                    self.said.remove(name);
                    continue;
                }
            };
            if self.said.insert(name.clone()) {
                log!("pg_kafka: kafka.database names database \"{name}\", which {why}: it is not served");
            }
        }
    }
}

fn micros(d: Duration) -> i64 {
    d.as_micros() as i64
}

/// Every database of the cluster, read from `pg_database` in a transaction of its own.
fn databases() -> Vec<Database> {
    BackgroundWorker::transaction(|| {
        let mut out = Vec::new();
        // SAFETY: inside a transaction; pg_database is a shared catalog, readable without a
        // database. The scan is opened and closed here, each tuple read only while the scan is
        // on it (GETSTRUCT of a pg_database heap tuple is a FormData_pg_database), and its name
        // copied at once.
        unsafe {
            let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
            let rel = pg_sys::table_open(pg_sys::DatabaseRelationId, lock);
            let scan = pg_sys::table_beginscan_catalog(rel, 0, std::ptr::null_mut());
            loop {
                let tuple = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
                if tuple.is_null() {
                    break;
                }
                let form = pg_sys::GETSTRUCT(tuple).cast::<pg_sys::FormData_pg_database>();
                let name =
                    std::ffi::CStr::from_ptr((*form).datname.data.as_ptr()).to_string_lossy().into_owned();
                let invalid = (*form).datconnlimit == pg_sys::DATCONNLIMIT_INVALID_DB;
                out.push(Database {
                    oid: (*form).oid,
                    name,
                    connectable: (*form).datallowconn && !invalid,
                    is_template: (*form).datistemplate,
                });
            }
            pg_sys::table_endscan(scan);
            pg_sys::table_close(rel, lock);
        }
        out
    })
}
