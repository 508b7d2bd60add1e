//! The background worker: the only process that talks to Kafka.
//!
//! One loop, one pass at a time: read a chunk of committed transactions from the outbox in commit
//! order (one short transaction; `outbox::Round` says how late commits are never skipped), hand
//! it to librdkafka and wait for every delivery report (no transaction open, so vacuum is never
//! held back by the network), then record the outcome in a second transaction: delivered rows
//! are deleted, refused ones moved to `kafka.dead_letter`, the rest stay for the next pass.
//! While a chunk is in flight the next one is read, and it is sent before the first is recorded
//! (`deliver`); it is sent only if the first needs no retry. Where the worker is in the log of
//! commits is `log`'s; with `kafka.delivery = exactly_once`, `exactly_once` makes each pass a
//! Kafka transaction. Whatever happened to its neighbours, a message Kafka acknowledged is
//! recorded as delivered and never sent again (a pack keeps only its messages to retry). After
//! any failure the worker reads the outbox again from its start, so nothing that was not sent
//! yet overtakes a failed message. A crash between Kafka's acknowledgement and that commit
//! reaching disk (the worker commits asynchronously: within `wal_writer_delay` × 3) re-sends
//! the chunk (at least once).
//!
//! It sleeps on its latch, which committing backends set; `kafka.poll_interval` is only the
//! fallback. After a failure it backs off exponentially up to `kafka.retry_backoff_max`, and it
//! replaces a producer that has delivered nothing for twice the message timeout. It keeps
//! running when the extension does not exist (yet), reloads on SIGHUP, and exits with code 1 so
//! that the postmaster restarts it (after `RESTART_AFTER`) whatever ended it.

mod deliver;
mod exactly_once;
mod immediate;
mod log;

use crate::error::KafkaError;
use crate::gucs::Delivery;
use crate::store::{home, outcome, owner, read};
use crate::{gucs, settings, shared, store::statistics};
use deliver::stream;
use kafka_core::producer::ClientConfig;
use kafka_core::producer::{base_config, Producer};
use log::Log;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags};
use pgrx::prelude::*;
use std::ffi::CString;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

const RESTART_AFTER: Duration = Duration::from_secs(5);
/// The worker's session settings (see `pg_kafka_worker_main`), over any a database or role sets.
const SESSION: [(&std::ffi::CStr, &std::ffi::CStr); 15] = [
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
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// How often the worker polls librdkafka while an immediate send waits for its report.
const IMMEDIATE_POLL: Duration = Duration::from_millis(5);
/// After a chunk smaller than `SMALL_BATCH` whose transactions committed at `BUSY_RATE` or more
/// per second (counted over the time since the previous pass began, lingering included) the
/// worker waits `kafka.linger` before reading again, so that a stream of commits makes fewer,
/// larger chunks: each pass costs two transactions of the worker's own and a produce request per
/// partition, CPU taken from the sessions. Slower streams are sent at once. (A rate, not a count
/// per pass: with a count, the commits gathered while lingering would keep the worker lingering
/// for ever even at 200 commits per second.)
const SMALL_BATCH: usize = 1000;
const BUSY_RATE: f64 = 1000.0;
const SOURCE_MAX_AGE: Duration = Duration::from_secs(1);

/// Why a restored copy does not deliver (see `outbox::at_home`).
const HELD: &str =
    "delivery held: this database is a copy (pg_dump/restore or CREATE DATABASE ... TEMPLATE) of \
                    the one whose messages these are; call kafka.release() to deliver them from here, or \
                    TRUNCATE kafka.outbox, kafka.outbox_commit to discard them";
/// A drained outbox is emptied with TRUNCATE (new files, a catalog change every session sees)
/// only when it takes this many bytes, and at most once in `TRUNCATE_EVERY`: below that, vacuum
/// reuses the space, and a trickle of commits never pays for new files.
const TRUNCATE_FROM: i64 = 1 << 20;
const TRUNCATE_EVERY: Duration = Duration::from_secs(5);

/// Registers the worker with the postmaster; only while preloading.
pub fn register() {
    BackgroundWorkerBuilder::new("pg_kafka worker")
        .set_type("pg_kafka")
        .set_library("kafka")
        .set_function("pg_kafka_worker_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(RESTART_AFTER))
        .load();
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pg_kafka_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = gucs::database();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    // SAFETY: in the worker's main function, connected: `on_exit` is a 'static callback of the
    // expected signature, registered once. MyLatch is this worker's PGPROC latch in shared memory
    // (set up by InitProcess before the entry function runs), valid for other processes to set.
    unsafe {
        pg_sys::before_shmem_exit(Some(on_exit), pg_sys::Datum::from(0));
        shared::publish_latch(pg_sys::MyLatch);
    }
    {
        let mut s = shared::STATE.exclusive();
        let recent = (s.recent, s.recent_count);
        *s = shared::WorkerState::new(); // a new worker: counters and failures start afresh...
        (s.recent, s.recent_count) = recent; // ...but the recent failures are kept

        // SAFETY: plain read of this process's id, set at process start.
        s.pid = unsafe { pg_sys::MyProcPid };
        // SAFETY: plain read of the database id, set by connect_worker_to_spi above.
        s.database = unsafe { pg_sys::MyDatabaseId };
        s.started_at = now();
    }
    apply_delivery_mode();
    log!(
        "pg_kafka worker started: kafka.database={database} kafka.batch_size={} kafka.batch_bytes={} \
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
    Worker {
        database,
        no_producer: String::new(),
        producer: None,
        source: None,
        backoff: Duration::ZERO,
        log: Log::default(),
        delivered_since_idle: false,
        last_truncate: None,
        failing_since: None,
    }
    .run();
    // SAFETY: ends the worker process and does not return; `run` returns only between passes, with
    // no transaction open.
    unsafe { pg_sys::proc_exit(1) };
}

/// At least once, the worker's commits only record deliveries: losing the last of them in a
/// crash re-sends those messages, so they need not wait for the WAL flush (backends do). Exactly
/// once, a Kafka transaction must be recorded durably before the next one begins (see
/// `exactly_once`).
fn apply_delivery_mode() {
    shared::STATE.exclusive().exactly_once = gucs::delivery() == Delivery::ExactlyOnce;
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
unsafe extern "C-unwind" fn on_exit(_code: i32, _arg: pg_sys::Datum) {
    shared::publish_latch(std::ptr::null_mut());
    let mut s = shared::STATE.exclusive();
    s.pid = 0;
    s.started_at = 0;
}

/// Whether `txns` transactions that committed within `since` make a busy stream (see
/// [`BUSY_RATE`]).
fn busy(txns: usize, since: Duration) -> bool {
    txns >= 2 && txns as f64 >= BUSY_RATE * since.as_secs_f64()
}

/// What one pass found.
enum Pass {
    /// Nothing to send: sleep until woken.
    Idle,
    /// Sent chunks; the last held this many messages of this many transactions: look for more
    /// (after `kafka.linger` if it was small but busy).
    More(usize, usize),
    /// Something failed: back off before the next try.
    Failed,
    /// Kafka did not take what the producer sent: back off, as for `Failed`.
    Undelivered,
}

/// What the producer was made from: a change in any of it makes a new producer. Read again when
/// `kafka.close()` or a change to `kafka.broker` or `kafka.config` bumped `close_requests`, and
/// at least every `SOURCE_MAX_AGE` (for changes made with triggers disabled).
#[derive(PartialEq, Clone)]
struct Source {
    servers: String,
    settings: Vec<(String, String)>,
    close_requests: u64,
    /// Whether this database is where pg_kafka was installed and claimed (not a restored copy).
    home: bool,
}

struct Connected {
    producer: Producer,
    source: Source,
    /// With `kafka.delivery = exactly_once`: `producer` is transactional.
    txn: Option<exactly_once::Txn>,
}

impl Connected {
    /// Makes the producer `kafka.delivery` asks for (exactly once: also reconciles the outbox
    /// with Kafka, so the caller must read the outbox again).
    fn new(config: &ClientConfig, source: &Source) -> Result<Connected, String> {
        let (producer, txn) = match gucs::delivery() {
            Delivery::AtLeastOnce => (Producer::new(config)?, None),
            Delivery::ExactlyOnce => {
                let (producer, txn) = exactly_once::connect(config, &source.settings)?;
                (producer, Some(txn))
            }
        };
        Ok(Connected { producer, source: source.clone(), txn })
    }

    /// The producer of immediate sends.
    fn immediate(&self) -> &Producer {
        self.txn.as_ref().map_or(&self.producer, |t| &t.immediate)
    }
}

struct Worker {
    database: String,
    /// Why there is no producer, for immediate sends that arrive meanwhile.
    no_producer: String,
    producer: Option<Connected>,
    /// The last `Source` read, and when.
    source: Option<(Source, std::time::Instant)>,
    backoff: Duration,
    /// Where the worker is in the log of commits.
    log: Log,
    /// Whether it sent something since it last found the outbox empty.
    delivered_since_idle: bool,
    /// When it last tried to empty the outbox with TRUNCATE.
    last_truncate: Option<std::time::Instant>,
    /// Since when every pass of the current producer failed (None: the last pass did not).
    failing_since: Option<std::time::Instant>,
}

impl Worker {
    fn run(&mut self) {
        let mut pass_began = std::time::Instant::now();
        while !shutdown_requested() {
            if BackgroundWorker::sighup_received() {
                // SAFETY: in the worker's main loop, outside any transaction, after SIGHUP: what
                // PostgreSQL's own processes do to reload the configuration.
                unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
                if gucs::database() != self.database {
                    log!("pg_kafka worker: kafka.database changed to \"{}\", restarting", gucs::database());
                    return;
                }
                self.producer = None; // settings such as kafka.message_timeout apply to a new producer
                apply_delivery_mode();
            }
            let since = pass_began.elapsed();
            pass_began = std::time::Instant::now();
            let pass = self.pass();
            match pass {
                Pass::More(..) | Pass::Idle => {
                    recovered();
                    self.failing_since = None;
                }
                Pass::Undelivered => self.replace_stuck_producer(),
                Pass::Failed => self.failing_since = None,
            }
            immediate::serve(self.producer.as_ref().map(Connected::immediate), &self.no_producer);
            self.save_statistics();
            let wait = match pass {
                _ if immediate::in_flight() => IMMEDIATE_POLL,
                Pass::More(sent, txns) if sent < SMALL_BATCH && busy(txns, since) => gucs::linger(),
                Pass::More(..) => Duration::ZERO,
                Pass::Idle => {
                    self.backoff = Duration::ZERO;
                    gucs::poll_interval()
                }
                Pass::Failed | Pass::Undelivered => {
                    self.backoff = (self.backoff * 2).clamp(FIRST_BACKOFF, gucs::retry_backoff_max());
                    self.backoff
                }
            };
            if !wait.is_zero() {
                if matches!(pass, Pass::Idle) {
                    activity_state("idle", pg_sys::BackendState::STATE_IDLE);
                }
                // Lingering and backing off are not cut short by commits, only by what needs
                // the worker at once.
                let hold = matches!(pass, Pass::More(..) | Pass::Failed | Pass::Undelivered)
                    && !immediate::in_flight();
                if !sleep(wait, hold) {
                    return;
                }
            } else {
                pg_sys::check_for_interrupts!();
            }
        }
    }

    /// A producer whose every pass failed to deliver for twice the message timeout (and at least
    /// a minute) is replaced: librdkafka reconnects by itself after an outage, but an idempotent producer
    /// can be left in a state it does not leave (seen after a partition leader was killed, the
    /// brokers came back and nothing was delivered until a new producer was made).
    fn replace_stuck_producer(&mut self) {
        if self.producer.is_none() {
            self.failing_since = None;
            return;
        }
        let since = *self.failing_since.get_or_insert_with(std::time::Instant::now);
        let limit =
            (2 * Duration::from_millis(gucs::message_timeout_ms() as u64)).max(Duration::from_secs(60));
        if since.elapsed() >= limit {
            log!(
                "pg_kafka worker: replacing a Kafka producer that has failed for {} s",
                since.elapsed().as_secs()
            );
            self.producer = None;
            self.failing_since = None;
        }
    }

    /// Keeps librdkafka's latest statistics of each producer in `kafka.producer_statistics`.
    fn save_statistics(&self) {
        let Some(c) = &self.producer else { return };
        let immediate = c.txn.as_ref().map(|t| ("immediate", &t.immediate));
        for (name, producer) in std::iter::once(("delivery", &c.producer)).chain(immediate) {
            let Some(json) = producer.take_statistics() else { continue };
            if let Err(e) = BackgroundWorker::transaction(|| statistics::save(name, &json)) {
                warning!("pg_kafka: {e}");
            }
        }
    }

    fn pass(&mut self) -> Pass {
        // Read before the transaction's snapshot: a change that bumped it is visible to it.
        let close_requests = shared::close_requests();
        let reread = !self
            .source
            .as_ref()
            .is_some_and(|(s, at)| s.close_requests == close_requests && at.elapsed() < SOURCE_MAX_AGE);
        let log = &mut self.log;
        let read = BackgroundWorker::transaction(AssertUnwindSafe(|| -> Result<_, KafkaError> {
            if !owner::installed() {
                return Ok(None);
            }
            let source = if reread {
                Some(Source {
                    servers: read::bootstrap_servers()?,
                    settings: read::producer_settings()?,
                    close_requests,
                    home: home::at_home()?,
                })
            } else {
                None
            };
            Ok(Some((source, log.next_chunk()?)))
        }));
        let (reread, batch) = match read {
            Ok(Some(read)) => read,
            Ok(None) => {
                self.producer = None;
                self.source = None;
                self.log.restart();
                return Pass::Idle;
            }
            Err(e) => {
                self.log.restart();
                record_error(&e.to_string());
                return Pass::Failed;
            }
        };
        if let Some(source) = reread {
            self.source = Some((source, std::time::Instant::now()));
        }
        let source = &self.source.as_ref().expect("the source was just read").0;
        if self.producer.as_ref().is_some_and(|c| c.source != *source) {
            log!("pg_kafka worker: closing the Kafka producer (brokers, kafka.config or kafka.close())");
            self.producer = None;
        }
        let immediate = immediate::requested() || immediate::in_flight();
        if batch.is_empty() && !immediate {
            let due = self.last_truncate.is_none_or(|at| at.elapsed() >= TRUNCATE_EVERY);
            if due && std::mem::take(&mut self.delivered_since_idle) {
                // Drained: give the space of what was delivered back, if it is worth a new file
                // (vacuum reuses small amounts of space) and nobody is writing.
                self.last_truncate = Some(std::time::Instant::now());
                if let Err(e) = BackgroundWorker::transaction(|| outcome::truncate_if_empty(TRUNCATE_FROM)) {
                    record_error(&e.to_string());
                }
            }
            return Pass::Idle;
        }
        self.delivered_since_idle |= !batch.is_empty();
        if !source.home {
            self.log.restart();
            record_error(HELD);
            return Pass::Failed;
        }
        if source.servers.is_empty() {
            self.log.restart();
            self.no_producer =
                "no Kafka broker configured: INSERT INTO kafka.broker VALUES ('host', 9092)".into();
            record_error(&self.no_producer);
            return Pass::Failed;
        }
        if self.producer.is_none() {
            let mut config = base_config(&source.servers, gucs::message_timeout_ms());
            let mut unreadable = None;
            for (name, value) in &source.settings {
                match settings::resolve(name, value) {
                    Ok(value) => {
                        config.set(name, value);
                    }
                    Err(e) => unreadable = Some(e),
                }
            }
            match unreadable.map_or_else(|| Connected::new(&config, source), Err) {
                Ok(connected) => {
                    let reconciled = connected.txn.is_some();
                    self.producer = Some(connected);
                    if reconciled {
                        // The chunk was read before the outbox was reconciled with Kafka.
                        self.log.restart();
                        return Pass::More(0, 0);
                    }
                }
                Err(e) => {
                    self.log.restart();
                    self.no_producer = format!("could not create the Kafka producer: {e}");
                    record_error(&self.no_producer);
                    return Pass::Failed;
                }
            }
        }
        let connected = self.producer.as_ref().expect("producer was just created");
        if batch.is_empty() {
            return Pass::Idle;
        }
        if let Some(txn) = &connected.txn {
            let sent = exactly_once::stream(&connected.producer, txn, batch, close_requests, &mut self.log);
            return match sent {
                exactly_once::Sent::Done(messages, txns) => Pass::More(messages, txns),
                exactly_once::Sent::Again => {
                    self.log.restart();
                    Pass::More(0, 0)
                }
                exactly_once::Sent::Retry => {
                    self.log.restart();
                    Pass::Undelivered
                }
                exactly_once::Sent::Reconnect => {
                    self.log.restart();
                    self.producer = None;
                    Pass::Failed
                }
            };
        }
        match stream(&connected.producer, batch, close_requests, &mut self.log) {
            Some(last) => Pass::More(last.0, last.1),
            None => {
                self.log.restart();
                // An idempotent producer that raised a fatal error (e.g. with
                // `enable.gapless.guarantee` after a refused record) never delivers again.
                if let Some(e) = connected.producer.fatal_error() {
                    log!("pg_kafka worker: replacing the Kafka producer after a fatal error: {e}");
                    self.producer = None;
                }
                Pass::Undelivered
            }
        }
    }
}

/// Waits `wait` on the latch; with `hold`, commits neither wake it (`shared::hold_commits`) nor
/// end the wait, only an immediate send or a close request does. Returns false when the worker
/// must exit.
fn sleep(wait: Duration, hold: bool) -> bool {
    shared::hold_commits(hold);
    let woken = wait_latch_until(std::time::Instant::now() + wait, hold);
    shared::hold_commits(false);
    woken
}

fn wait_latch_until(until: std::time::Instant, hold: bool) -> bool {
    let closes = shared::close_requests();
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return true;
        }
        if !BackgroundWorker::wait_latch(Some(left)) {
            return false;
        }
        if !hold || shutdown_requested() || immediate::requested() || shared::close_requests() != closes {
            return true;
        }
    }
}

/// Records the current failure; the server log gets one line when delivery stops (and one when
/// it resumes, from [`recovered`]), not one per attempt.
fn record_error(msg: &str) {
    let began = shared::STATE.exclusive().set_last_error(msg, now());
    if began {
        warning!(
            "pg_kafka: delivery stopped: {msg}; committed messages wait in kafka.outbox and are retried"
        );
    }
    activity(&format!("retrying: {msg}"));
}

/// Delivery works: clears the current failure, and says in the log how long it lasted.
fn recovered() {
    let ended = shared::STATE.exclusive().recover();
    if let Some((since, waited)) = ended {
        let secs = (now() - since) as f64 / 1e6;
        log!("pg_kafka: delivery resumed after {secs:.1} s; {waited} messages had waited");
    }
}

fn activity(what: &str) {
    activity_state(what, pg_sys::BackendState::STATE_RUNNING);
}

fn activity_state(what: &str, state: pg_sys::BackendState::Type) {
    let text = CString::new(what.replace('\0', " ")).unwrap_or_default();
    // SAFETY: `text` is a NUL-terminated CString alive for the call; PostgreSQL copies it into this
    // backend's status entry.
    unsafe { pg_sys::pgstat_report_activity(state, text.as_ptr()) };
}

fn shutdown_requested() -> bool {
    // SAFETY: ShutdownRequestPending is a process-local sig_atomic_t set by the SIGTERM handler; it
    // is read through a raw pointer, volatile, with no reference to the `static mut`.
    unsafe { std::ptr::read_volatile(&raw const pg_sys::ShutdownRequestPending) != 0 }
}

fn now() -> i64 {
    // SAFETY: GetCurrentTimestamp only reads the system clock; no precondition.
    unsafe { pg_sys::GetCurrentTimestamp() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_fast_stream_of_commits_makes_the_worker_linger() {
        let ms = Duration::from_millis;
        assert!(busy(10, ms(5)), "2,000 per second");
        assert!(!busy(4, ms(20)), "200 per second, lingering included: sent at once");
        assert!(!busy(1, ms(0)), "one transaction never lingers");
        assert!(!busy(2, ms(1000)), "after an idle second");
    }
}
