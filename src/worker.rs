//! The background worker: the only process that talks to Kafka.
//!
//! One loop, one pass at a time: read a chunk of committed transactions from the outbox in commit
//! order (one short transaction; `outbox::Round` says how late commits are never skipped), hand
//! it to librdkafka and wait for every delivery report (no transaction open, so vacuum is never
//! held back by the network), then record the outcome in a second transaction: delivered rows
//! are deleted, refused ones moved to `kafka.dead_letter`, the rest stay for the next pass.
//! While a chunk is in flight the next one is read, and it is sent before the first is recorded
//! ([`stream`]); it is sent only if the first needs no retry. After any failure the worker reads
//! the outbox again from its start, so what follows a failed message is sent again after it,
//! never before it. A crash between Kafka's acknowledgement and that commit reaching disk (the
//! worker commits asynchronously: within `wal_writer_delay` × 3) re-sends the chunk (at least once).
//!
//! It sleeps on its latch, which committing backends set; `kafka.poll_interval` is only the
//! fallback. After a failure it backs off exponentially up to `kafka.retry_backoff_max`. It keeps
//! running when the extension does not exist (yet), reloads on SIGHUP, and exits with code 1 so
//! that the postmaster restarts it (after `RESTART_AFTER`) whatever ended it.

mod exactly_once;

use crate::error::KafkaError;
use crate::gucs::Delivery;
use crate::outbox::{self, OutboxMessage, Round};
use crate::producer::{base_config, Outcome, Producer, Record};
use crate::{gucs, immediate, settings, shared, statistics, topic_stats};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags};
use pgrx::prelude::*;
use rdkafka::config::ClientConfig;
use std::ffi::CString;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

const RESTART_AFTER: Duration = Duration::from_secs(5);
/// The worker's session settings (see `pg_kafka_worker_main`).
const PLANNER: [(&std::ffi::CStr, &std::ffi::CStr); 6] = [
    (c"search_path", c"pg_catalog"),
    (c"enable_seqscan", c"off"),
    (c"enable_sort", c"off"),
    (c"enable_bitmapscan", c"off"),
    (c"enable_hashjoin", c"off"),
    (c"enable_mergejoin", c"off"),
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
    unsafe {
        pg_sys::before_shmem_exit(Some(on_exit), pg_sys::Datum::from(0));
        shared::publish_latch(pg_sys::MyLatch);
    }
    {
        let mut s = shared::STATE.exclusive();
        *s = shared::WorkerState::new(); // a new worker: counters and failures start afresh
        s.pid = unsafe { pg_sys::MyProcPid };
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
    // planner may pick when the statistics are those of an empty outbox (the usual state).
    for (name, value) in PLANNER {
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
    }
    .run();
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
}

/// The worker's place in the log of commits: the round being read, and where the last one ended.
#[derive(Default)]
struct Log {
    /// Where the last finished round ended (None: read everything from the start).
    after: Option<String>,
    round: Option<Round>,
    /// Kafka refused a whole record batch: send the next messages one by one, to find the one
    /// that is bad and let the others through.
    isolate: bool,
    /// Failed attempts of messages (by id) in chunks where other messages were delivered, for
    /// `kafka.dead_letter_after`. Kept across restarts of the log, not of the worker.
    attempts: std::collections::HashMap<i64, u32>,
}

impl Log {
    /// The next chunk in commit order, or an empty one when nothing more has committed. Runs
    /// inside a transaction.
    fn next_chunk(&mut self) -> Result<Vec<OutboxMessage>, KafkaError> {
        loop {
            let fresh = self.round.is_none();
            if fresh {
                self.round = Some(Round::start(self.after.clone())?);
            }
            let round = self.round.as_mut().expect("a round was just started");
            let chunk = outbox::read_chunk(round, gucs::batch_size(), gucs::batch_bytes())?;
            if !chunk.is_empty() {
                return Ok(chunk);
            }
            self.after = self.round.take().map(|r| r.upto);
            if fresh {
                return Ok(chunk);
            }
        }
    }

    /// After a failure: read the outbox again from its start (what was sent and not recorded
    /// is sent again, in order).
    fn restart(&mut self) {
        let (isolate, attempts) = (self.isolate, std::mem::take(&mut self.attempts));
        *self = Log { isolate, attempts, ..Log::default() };
    }

    /// With `kafka.dead_letter_after`, a message that failed that many times while Kafka took
    /// other messages of the same chunk is refused for good (dead-lettered) instead of retried:
    /// the one message that Kafka keeps failing does not hold the queue back for ever. While
    /// Kafka takes nothing (an outage), nothing counts.
    fn give_up_on_stuck(&mut self, limit: Option<u32>, batch: &[OutboxMessage], outcomes: &mut [Outcome]) {
        let Some(limit) = limit else { return };
        if !outcomes.iter().any(|o| matches!(o, Outcome::Delivered)) {
            return;
        }
        if self.attempts.len() > 100_000 {
            self.attempts.clear(); // bounded memory; counts start again
        }
        for (m, o) in batch.iter().zip(outcomes.iter_mut()) {
            let Outcome::Retry(e) = o else { continue };
            let n = self.attempts.entry(m.id).or_default();
            *n += 1;
            if *n >= limit {
                *o = Outcome::Refused(format!(
                    "{e} (failed {n} times while Kafka took other messages: kafka.dead_letter_after)"
                ));
                self.attempts.remove(&m.id);
            }
        }
    }
}

impl Worker {
    fn run(&mut self) {
        let mut pass_began = std::time::Instant::now();
        while !shutdown_requested() {
            if BackgroundWorker::sighup_received() {
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
            if matches!(pass, Pass::More(..) | Pass::Idle) {
                recovered();
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
                Pass::Failed => {
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
                let hold = matches!(pass, Pass::More(..) | Pass::Failed) && !immediate::in_flight();
                if !sleep(wait, hold) {
                    return;
                }
            } else {
                pg_sys::check_for_interrupts!();
            }
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
            if !outbox::installed() {
                return Ok(None);
            }
            let source = if reread {
                Some(Source {
                    servers: outbox::bootstrap_servers()?,
                    settings: outbox::producer_settings()?,
                    close_requests,
                    home: outbox::at_home()?,
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
                if let Err(e) = BackgroundWorker::transaction(|| outbox::truncate_if_empty(TRUNCATE_FROM)) {
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
                    Pass::Failed
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
                Pass::Failed
            }
        }
    }
}

/// Most chunks handed to librdkafka whose reports are not all in: the next chunks are read and
/// sent while the first ones are acknowledged, so the connection never idles between chunks.
const IN_FLIGHT: usize = 4;

/// Sends `first` and the chunks after it, up to [`IN_FLIGHT`] at a time, and records each one
/// in order once all its reports are in. librdkafka's idempotent producer keeps every partition
/// in order across chunks; if a message must be retried, it and everything sent after it stay
/// in the outbox and are sent again after it, so nothing overtakes a message that failed.
/// Returns the size of the last chunk (messages, transactions), or None if some messages must
/// be retried (the caller then restarts the log).
fn stream(
    producer: &Producer,
    first: Vec<OutboxMessage>,
    close_requests: u64,
    log: &mut Log,
) -> Option<(usize, usize)> {
    // Every poll also serves immediate sends, so they never wait behind a batch.
    let mut stop = || {
        immediate::serve(Some(producer), "");
        // Show what librdkafka says (refused connection, failed authentication) while we wait.
        if let Some(event) = producer.take_events().pop() {
            record_error(&event);
        }
        shutdown_requested() || shared::close_requests() != close_requests
    };
    activity(&format!("delivering {} messages", first.len()));
    if std::mem::take(&mut log.isolate) {
        let outcomes = send_isolated(producer, &first, &mut stop);
        let recorded = record(&first, &outcomes, false, log);
        return recorded.then_some((first.len(), transactions(&first)));
    }
    let mut in_flight = std::collections::VecDeque::new();
    let sent = producer.send_batch(&records_of(&first), &mut stop);
    in_flight.push_back((first, sent));
    let mut failed = false;
    let mut last = (0, 0);
    while let Some((chunk, sent)) = in_flight.pop_front() {
        // Read ahead only behind a large chunk: after a small one there is rarely more, and
        // each read is a transaction of the worker's own.
        while !failed && chunk.len() >= SMALL_BATCH && in_flight.len() + 1 < IN_FLIGHT {
            let next = BackgroundWorker::transaction(AssertUnwindSafe(|| {
                if outbox::installed() {
                    log.next_chunk()
                } else {
                    Ok(Vec::new())
                }
            }));
            match next {
                Ok(next) if next.is_empty() => break,
                Ok(next) => {
                    let sent = producer.send_batch(&records_of(&next), &mut stop);
                    in_flight.push_back((next, sent));
                }
                Err(e) => {
                    record_error(&e.to_string());
                    failed = true;
                }
            }
        }
        let outcomes = producer.wait(sent, &mut stop);
        last = (chunk.len(), transactions(&chunk));
        failed = !record(&chunk, &outcomes, failed, log) || failed;
    }
    (!failed).then_some(last)
}

/// After Kafka refused a whole record batch: sends the chunk's messages one at a time, in
/// order, until the pack row holding the first one refused on its own (or [`ISOLATE_MAX`]
/// messages) is done; what follows waits for the next pass. Each message is then delivered or
/// refused for good by itself, so one bad record never holds back or drags down the others.
fn send_isolated(
    producer: &Producer,
    chunk: &[OutboxMessage],
    stop: &mut dyn FnMut() -> bool,
) -> Vec<Outcome> {
    const ISOLATE_MAX: usize = 1000;
    let records = records_of(chunk);
    let mut outcomes = Vec::with_capacity(chunk.len());
    let mut enough = false;
    for (i, r) in records.iter().enumerate() {
        if enough && chunk[i].row != chunk[i - 1].row {
            outcomes.resize(chunk.len(), Outcome::Retry("sent after a refused record batch".into()));
            break;
        }
        let outcome = match producer.deliver(std::slice::from_ref(r), stop).pop() {
            Some(Outcome::BatchRefused(e)) => Outcome::Refused(e),
            Some(o) => o,
            None => Outcome::Retry("no delivery report".into()),
        };
        enough |= matches!(outcome, Outcome::Refused(_)) || i + 1 >= ISOLATE_MAX;
        outcomes.push(outcome);
    }
    outcomes
}

/// How many transactions a chunk holds messages of.
fn transactions(chunk: &[OutboxMessage]) -> usize {
    chunk.windows(2).filter(|w| w[0].csn != w[1].csn).count() + usize::from(!chunk.is_empty())
}

fn records_of(batch: &[OutboxMessage]) -> Vec<Record<'_>> {
    batch
        .iter()
        .map(|m| Record {
            topic: &m.topic,
            key: m.key.as_deref(),
            payload: m.payload.as_deref(),
            headers: m
                .headers
                .iter()
                .flatten()
                .map(|(n, v)| (n.as_str(), v.as_deref().map(str::as_bytes)))
                .collect(),
            partition: m.partition,
            timestamp_ms: m.timestamp_ms,
        })
        .collect()
}

/// Records the outcome of one batch: removes what Kafka acknowledged, dead-letters what it
/// refused, and reports what must be retried. A packed outbox row (many messages) stays whole
/// while any of its messages must be retried (those delivered are then sent again).
/// With `after_failure`, an earlier chunk had a message to retry: every row stays. A record
/// batch Kafka refused as a whole is retried, one message at a time (`log.isolate`).
/// Returns false if some messages must be retried or the outcome could not be recorded.
fn record(batch: &[OutboxMessage], outcomes: &[Outcome], after_failure: bool, log: &mut Log) -> bool {
    let mut outcomes = outcomes.to_vec();
    log.give_up_on_stuck(gucs::dead_letter_after(), batch, &mut outcomes);
    let outcomes = &outcomes[..];
    let mut done = Vec::with_capacity(batch.len());
    let mut refused = Vec::new();
    let mut retried = Vec::new();
    let mut retry: Option<&str> = after_failure.then_some("an earlier message must be sent again first");
    let mut delivered = 0;
    let mut csns = Vec::new();
    let mut per_topic = topic_stats::Chunk::default();
    let mut start = 0;
    while start < batch.len() {
        let row = batch[start].row;
        if csns.last() != Some(&batch[start].csn) {
            csns.push(batch[start].csn);
        }
        let end = start + batch[start..].iter().take_while(|m| m.row == row).count();
        let messages = batch[start..end].iter().zip(&outcomes[start..end]);
        let must_retry = messages.clone().find_map(|(_, o)| match o {
            Outcome::Retry(e) => Some(e),
            Outcome::BatchRefused(e) => {
                log.isolate = true;
                Some(e)
            }
            _ => None,
        });
        if let Some(e) = must_retry {
            retry.get_or_insert(e.as_str());
        }
        if retry.is_some() {
            // This row, and every row after the first one that must be retried, stays: sent
            // again after it, so nothing overtakes a message that failed.
            retried.push((row, batch[start].xid));
        } else {
            done.push((row, batch[start].xid));
            for (m, o) in messages {
                match o {
                    Outcome::Refused(e) => {
                        per_topic.dead_lettered(&m.topic);
                        refused.push((m, e.clone()));
                    }
                    _ => {
                        per_topic.delivered(&m.topic, m.payload.as_ref().map_or(0, Vec::len));
                        delivered += 1;
                    }
                }
            }
        }
        start = end;
    }
    let recorded = BackgroundWorker::transaction(|| {
        let dead = outbox::finish(&done, &refused, &retried, &csns)?;
        per_topic.add()?;
        Ok::<_, KafkaError>(dead)
    });
    let dead = match recorded {
        Ok(dead) => dead,
        Err(e) => {
            record_error(&e.to_string());
            return false;
        }
    };
    {
        let mut s = shared::STATE.exclusive();
        s.delivered += delivered;
        s.dead_lettered += dead;
        if delivered > 0 {
            s.last_delivery_at = now();
        }
    }
    for (m, e) in &refused {
        warning!("pg_kafka: message {} moved to kafka.dead_letter: {e}", m.id);
    }
    match retry {
        Some(_) if after_failure => return false,
        Some(e) => {
            let last = shared::STATE.share().last_error().unwrap_or_default();
            let detail = if last.is_empty() || last.starts_with(e) {
                String::new()
            } else {
                format!(" (last: {last})")
            };
            shared::STATE.exclusive().waited_at_least(retried.len() as i64);
            record_error(&format!("{e}{detail}"));
            return false;
        }
        None => {} // refusals are in kafka.dead_letter and the log: delivery itself works
    }
    true
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
    unsafe { pg_sys::pgstat_report_activity(state, text.as_ptr()) };
}

fn shutdown_requested() -> bool {
    unsafe { std::ptr::read_volatile(&raw const pg_sys::ShutdownRequestPending) != 0 }
}

fn now() -> i64 {
    unsafe { pg_sys::GetCurrentTimestamp() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(ids: &[i64]) -> Vec<OutboxMessage> {
        ids.iter().map(|&id| OutboxMessage { id, ..Default::default() }).collect()
    }

    #[test]
    fn only_a_fast_stream_of_commits_makes_the_worker_linger() {
        let ms = Duration::from_millis;
        assert!(busy(10, ms(5)), "2,000 per second");
        assert!(!busy(4, ms(20)), "200 per second, lingering included: sent at once");
        assert!(!busy(1, ms(0)), "one transaction never lingers");
        assert!(!busy(2, ms(1000)), "after an idle second");
    }

    #[test]
    fn a_message_that_keeps_failing_while_others_pass_is_given_up_after_the_limit() {
        let mut log = Log::default();
        let batch = messages(&[1, 2]);
        let round = |log: &mut Log, limit| {
            let mut outcomes = vec![Outcome::Retry("timed out".into()), Outcome::Delivered];
            log.give_up_on_stuck(limit, &batch, &mut outcomes);
            outcomes
        };
        assert!(matches!(round(&mut log, None)[0], Outcome::Retry(_)), "0: never");
        assert!(matches!(round(&mut log, Some(3))[0], Outcome::Retry(_)));
        assert!(matches!(round(&mut log, Some(3))[0], Outcome::Retry(_)));
        log.restart();
        match &round(&mut log, Some(3))[0] {
            Outcome::Refused(e) => assert!(e.contains("timed out") && e.contains("3 times"), "{e}"),
            o => panic!("{o:?}"),
        }
        // An outage: nothing is delivered, nothing counts.
        let mut outage = Log::default();
        for _ in 0..10 {
            let mut outcomes = vec![Outcome::Retry("down".into()), Outcome::Retry("down".into())];
            outage.give_up_on_stuck(Some(2), &batch, &mut outcomes);
            assert!(outcomes.iter().all(|o| matches!(o, Outcome::Retry(_))));
        }
    }
}
