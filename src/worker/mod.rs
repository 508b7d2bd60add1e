//! The background worker: the only process that talks to Kafka.
//!
//! One loop, one pass at a time: read a chunk of committed transactions from the outbox in commit
//! order (one short transaction; [`crate::store::read::Round`] says how late commits are never
//! skipped), hand it to librdkafka and wait for every delivery report (no transaction open, so
//! vacuum is never held back by the network), then record the outcome in a second transaction
//! ([`record`]): delivered rows are deleted, refused ones moved to `kafka.dead_letter`, the rest
//! stay for the next pass. While a large chunk is in flight the next ones are read and sent (up
//! to [`deliver::IN_FLIGHT`]) before it is recorded; none is read behind a chunk that needs a
//! retry. Where the worker is in the log of commits is [`log`](mod@log)'s; with `kafka.delivery =
//! exactly_once`, [`exactly_once`] makes each pass a Kafka transaction. Whatever happened to its
//! neighbours, a message Kafka acknowledged is recorded as delivered and never sent again (a pack
//! keeps only its messages to retry). After any failure the worker reads the outbox again from
//! its start, so nothing that was not sent yet overtakes a failed message. A crash between
//! Kafka's acknowledgement and that commit reaching disk (the worker commits asynchronously:
//! within `wal_writer_delay` × 3) re-sends the chunk (at least once).
//!
//! A pass is a list of steps ([`Worker::pass`]), each of which may end it; the loop around it
//! ([`Worker::run`]) reloads on SIGHUP, serves immediate sends, and waits ([`wait`]): on its
//! latch, which committing backends set, or after a failure with an exponential back-off up to
//! `kafka.retry_backoff_max`. It replaces a producer ([`connection`]) that has delivered nothing
//! for twice the message timeout. It exits when its database has no extension (the launcher
//! starts one again after a `CREATE EXTENSION`), and when asked to ([`process`]); the launcher
//! ([`launcher`]) starts another after anything else ended it.

mod connection;
mod deliver;
mod exactly_once;
mod immediate;
mod launcher;
mod log;
mod process;
mod record;
mod wait;

pub use launcher::register;

use crate::error::KafkaError;
use crate::store::{outcome, owner, read};
use crate::{gucs, shared};
use connection::{Connected, Source};
use kafka_core::message::Message;
use log::Log;
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
use process::{note_capture_error, record_error, recovered, shutdown_requested};
use std::ops::ControlFlow::{self, Break, Continue};
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

/// How long a [`Source`] read is trusted without a close request.
const SOURCE_MAX_AGE: Duration = Duration::from_secs(1);
/// Why a restored copy does not deliver (see [`crate::store::home::at_home`]).
const HELD: &str =
    "delivery held: this database is a copy (pg_dump/restore or CREATE DATABASE ... TEMPLATE) of \
                    the one whose messages these are; call kafka.release() to deliver them from here, or \
                    TRUNCATE kafka.outbox, kafka.outbox_commit to discard them";
/// A drained outbox is emptied with TRUNCATE (new files, a catalog change every session sees)
/// only when it takes this many bytes, and at most once in [`TRUNCATE_EVERY`]: below that, vacuum
/// reuses the space, and a trickle of commits never pays for new files.
const TRUNCATE_FROM: i64 = 1 << 20;
const TRUNCATE_EVERY: Duration = Duration::from_secs(5);

/// From how many transactions a second decoded from the WAL the worker lingers between passes
/// (`kafka.wal_linger`; a third of the rate at which produced commits make it linger: decoding
/// and staging one costs more than reading a produced one, and the sessions share the cores),
/// measured over [`WAL_RATE_WINDOW`]. 200 a second are still sent at once.
const WAL_BUSY_RATE: f64 = 330.0;
const WAL_RATE_WINDOW: Duration = Duration::from_millis(100);

/// The rate of transactions decoded from the WAL, over the last full window.
struct WalRate {
    since: Instant,
    count: usize,
    busy: bool,
}

impl Default for WalRate {
    fn default() -> WalRate {
        WalRate { since: Instant::now(), count: 0, busy: false }
    }
}

impl WalRate {
    /// Counts `staged` transactions; whether the stream is busy (as of the last full window).
    fn busy(&mut self, staged: usize) -> bool {
        self.count += staged;
        let window = self.since.elapsed();
        if window >= WAL_RATE_WINDOW {
            self.busy = self.count as f64 >= WAL_BUSY_RATE * window.as_secs_f64();
            (self.since, self.count) = (Instant::now(), 0);
        }
        self.busy && staged > 0
    }
}

/// What one pass found.
enum Pass {
    /// Nothing to send: sleep until woken.
    Idle,
    /// Sent chunks; the last held this many messages of this many transactions: look for more
    /// (after `kafka.linger` if it was small but busy).
    More(usize, usize),
    /// Sent chunks (the last held this many messages) while a busy stream of transactions is
    /// decoded from the WAL: look for more after `kafka.wal_linger` if it was small.
    Decoding(usize),
    /// Something failed: back off before the next try.
    Failed,
    /// Kafka did not take what the producer sent: back off, as for [`Pass::Failed`].
    Undelivered,
}

/// A step of a pass: on to the next step, or the end of the pass with what it found.
type Step<T = ()> = ControlFlow<Pass, T>;

/// The worker's state across passes.
#[derive(Default)]
struct Worker {
    /// It found the extension in its database.
    serving: bool,
    /// The database has no `kafka` extension: the worker exits (the launcher starts one again
    /// after a `CREATE EXTENSION`).
    absent: bool,
    /// Why there is no producer, for immediate sends that arrive meanwhile.
    no_producer: String,
    /// The producer (out of it while a pass sends with it: [`Worker::send`]).
    producer: Option<Connected>,
    /// The last [`Source`] read (a default one before the first read)...
    source: Source,
    /// ...and when (None: read it at the next pass).
    source_read_at: Option<Instant>,
    backoff: Duration,
    /// Where the worker is in the log of commits.
    log: Log,
    /// Whether it sent something since it last found the outbox empty.
    delivered_since_idle: bool,
    /// When it last tried to empty the outbox with TRUNCATE.
    last_truncate: Option<Instant>,
    /// Since when every pass of the current producer failed (None: the last pass did not).
    failing_since: Option<Instant>,
    /// WAL capture: the decoding context and what waits to be confirmed.
    capture: crate::decoding::Capture,
    /// Transactions WAL capture staged in the current pass.
    staged: usize,
    /// Their rate.
    wal_rate: WalRate,
}

impl Worker {
    /// Passes until the worker must exit; returns between passes, with no transaction open.
    fn run(&mut self) {
        let mut pass_began = Instant::now();
        while !shutdown_requested() && !self.absent {
            self.reload_on_sighup();
            let since = pass_began.elapsed();
            pass_began = Instant::now();
            let pass = match self.pass() {
                // A busy stream of transactions decoded from the WAL lingers (they reach the
                // outbox as one staging transaction a pass, so the pass's own count says nothing
                // of their rate).
                Pass::More(sent, _) if self.wal_rate.busy(std::mem::take(&mut self.staged)) => {
                    Pass::Decoding(sent)
                }
                pass => pass,
            };
            self.track_failures(&pass);
            immediate::serve(self.producer.as_ref().map(Connected::immediate), &self.no_producer);
            if let Some(connected) = &self.producer {
                connected.save_statistics();
            }
            let wait = wait::after(&pass, since, &mut self.backoff);
            if wait::rest(&pass, wait, || self.capture.behind()).is_break() {
                return;
            }
        }
    }

    /// Reloads the configuration after a SIGHUP: settings such as `kafka.message_timeout`
    /// apply to a new producer. (Whether the database is still served is the launcher's to say.)
    fn reload_on_sighup(&mut self) {
        if !BackgroundWorker::sighup_received() {
            return;
        }
        // SAFETY: in the worker's main loop, outside any transaction, after SIGHUP: what
        // PostgreSQL's own processes do to reload the configuration.
        unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        self.producer = None;
        process::apply_delivery_mode();
    }

    /// A pass that works ends the current failure; a producer that keeps failing is replaced.
    fn track_failures(&mut self, pass: &Pass) {
        match pass {
            Pass::More(..) | Pass::Decoding(_) | Pass::Idle => {
                recovered();
                self.failing_since = None;
            }
            Pass::Undelivered => self.replace_stuck_producer(),
            Pass::Failed => self.failing_since = None,
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
        let since = *self.failing_since.get_or_insert_with(Instant::now);
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

    /// One pass: its steps in order ([`Worker::steps`]), and what it found.
    fn pass(&mut self) -> Pass {
        let (Continue(pass) | Break(pass)) = self.steps();
        pass
    }

    /// Each step may end the pass; the last sends the chunk.
    fn steps(&mut self) -> Step<Pass> {
        let more_wal = self.decode();
        let batch = self.read()?;
        if more_wal && batch.is_empty() {
            return Break(Pass::More(0, 0));
        }
        self.close_outdated_producer();
        self.idle_unless_work(&batch)?;
        self.check_home()?;
        self.check_broker()?;
        let connected = self.connect()?;
        Continue(self.send(connected, batch))
    }

    /// Reads the next chunk, and the [`Source`] again (with the backlog, for `kafka.databases`)
    /// if it may have changed, in one transaction. With the extension gone, the worker exits.
    fn read(&mut self) -> Step<Vec<Message>> {
        // Read before the transaction's snapshot: a change that bumped it is visible to it.
        let close_requests = shared::close_requests();
        let created = shared::extensions_created();
        let reread = !self
            .source_read_at
            .is_some_and(|at| self.source.close_requests == close_requests && at.elapsed() < SOURCE_MAX_AGE);
        let log = &mut self.log;
        let read = BackgroundWorker::transaction(AssertUnwindSafe(|| -> Result<_, KafkaError> {
            if !owner::installed() {
                return Ok(None);
            }
            let source = if reread { Some((Source::read(close_requests)?, read::backlog()?)) } else { None };
            Ok(Some((source, log.next_chunk()?)))
        }));
        match read {
            Ok(Some((source, batch))) => {
                if let Some((source, backlog)) = source {
                    self.source = source;
                    self.source_read_at = Some(Instant::now());
                    process::with_state(|s| {
                        (s.backlog, s.backlog_at, s.serving) = (backlog, process::now(), true)
                    });
                }
                if !std::mem::replace(&mut self.serving, true) {
                    process::log_started();
                }
                Continue(batch)
            }
            Ok(None) => {
                debug1!("pg_kafka worker: this database has no kafka extension; exiting until CREATE EXTENSION kafka");
                process::with_state(|s| s.absent = Some(created));
                self.absent = true;
                Break(Pass::Idle)
            }
            Err(e) => self.fail(&e.to_string()),
        }
    }

    /// WAL capture: stages what was decoded since the last pass into the outbox (before it is
    /// read). Returns whether WAL is left to decode at once. A failure here is recorded and
    /// does not stop delivery of what is queued.
    fn decode(&mut self) -> bool {
        match self.capture.pass() {
            Ok(staged) => {
                for why in &staged.failed {
                    note_capture_error(why);
                }
                self.staged = staged.transactions;
                staged.more
            }
            Err(e) => {
                record_error(&format!("WAL capture: {e}"));
                false
            }
        }
    }

    /// Closes the producer if what it was made from changed.
    fn close_outdated_producer(&mut self) {
        if self.producer.as_ref().is_some_and(|c| c.source != self.source) {
            log!("pg_kafka worker: closing the Kafka producer (brokers, kafka.config or kafka.close())");
            self.producer = None;
        }
    }

    /// With nothing to send and no immediate send waiting, the pass is idle (after
    /// [`Worker::truncate_drained`]); otherwise a chunk counts as something sent.
    fn idle_unless_work(&mut self, batch: &[Message]) -> Step {
        let immediate = immediate::requested() || immediate::in_flight();
        if batch.is_empty() && !immediate {
            self.truncate_drained();
            return Break(Pass::Idle);
        }
        self.delivered_since_idle |= !batch.is_empty();
        Continue(())
    }

    /// Drained: gives the space of what was delivered back, if it is worth a new file (vacuum
    /// reuses small amounts of space) and nobody is writing.
    fn truncate_drained(&mut self) {
        let due = self.last_truncate.is_none_or(|at| at.elapsed() >= TRUNCATE_EVERY);
        if due && std::mem::take(&mut self.delivered_since_idle) {
            self.last_truncate = Some(Instant::now());
            if let Err(e) = BackgroundWorker::transaction(|| outcome::truncate_if_empty(TRUNCATE_FROM)) {
                record_error(&e.to_string());
            }
        }
    }

    /// A restored copy does not deliver (see [`crate::store::home::at_home`]).
    fn check_home(&mut self) -> Step {
        if self.source.home {
            return Continue(());
        }
        self.fail(HELD)
    }

    /// Nothing is sent without a broker to send it to.
    fn check_broker(&mut self) -> Step {
        if !self.source.servers.is_empty() {
            return Continue(());
        }
        self.no_producer("no Kafka broker configured: INSERT INTO kafka.broker VALUES ('host', 9092)".into())
    }

    /// The producer, taken out of the worker for [`Worker::send`], or made if there is none.
    /// A new exactly-once producer reconciled the outbox with Kafka after the chunk was read:
    /// the pass ends, to read the chunk again.
    fn connect(&mut self) -> Step<Connected> {
        if let Some(connected) = self.producer.take() {
            return Continue(connected);
        }
        match Connected::new(&self.source) {
            Ok(connected) if connected.txn.is_some() => {
                self.producer = Some(connected);
                self.log.restart();
                Break(Pass::More(0, 0))
            }
            Ok(connected) => Continue(connected),
            Err(e) => self.no_producer(format!("could not create the Kafka producer: {e}")),
        }
    }

    /// Sends the chunk (if any: a pass may run for immediate sends only) in the mode
    /// `connected` was made for, stopped by a close request since the pass began (the source
    /// was read at the current count), and puts the producer back unless it must be replaced.
    fn send(&mut self, connected: Connected, batch: Vec<Message>) -> Pass {
        let close_requests = self.source.close_requests;
        match &connected.txn {
            _ if batch.is_empty() => self.keep(connected, Pass::Idle),
            Some(txn) => {
                let sent =
                    exactly_once::stream(&connected.producer, txn, batch, close_requests, &mut self.log);
                self.after_transaction(connected, sent)
            }
            None => {
                let last = deliver::stream(&connected.producer, batch, close_requests, &mut self.log);
                self.after_chunks(connected, last)
            }
        }
    }

    /// Exactly once: what the Kafka transaction came to. After anything but a recorded commit
    /// the log restarts; when the outcome is unknown the producer is replaced (a new one
    /// settles it).
    fn after_transaction(&mut self, connected: Connected, sent: exactly_once::Sent) -> Pass {
        use exactly_once::Sent;
        if !matches!(sent, Sent::Done(..)) {
            self.log.restart();
        }
        match sent {
            Sent::Done(messages, txns) => self.keep(connected, Pass::More(messages, txns)),
            Sent::Again => self.keep(connected, Pass::More(0, 0)),
            Sent::Retry => self.keep(connected, Pass::Undelivered),
            Sent::Reconnect => Pass::Failed,
        }
    }

    /// At least once: what the chunks came to (the size of the last, or None if some messages
    /// must be retried: the log restarts). An idempotent producer that raised a fatal error
    /// (e.g. with `enable.gapless.guarantee` after a refused record) never delivers again: it
    /// is replaced.
    fn after_chunks(&mut self, connected: Connected, last: Option<(usize, usize)>) -> Pass {
        if let Some((messages, txns)) = last {
            return self.keep(connected, Pass::More(messages, txns));
        }
        self.log.restart();
        match connected.producer.fatal_error() {
            Some(e) => {
                log!("pg_kafka worker: replacing the Kafka producer after a fatal error: {e}");
                Pass::Undelivered
            }
            None => self.keep(connected, Pass::Undelivered),
        }
    }

    /// Puts the producer back after a send.
    fn keep(&mut self, connected: Connected, pass: Pass) -> Pass {
        self.producer = Some(connected);
        pass
    }

    /// Ends the pass failed: the log restarts, and the failure is reported.
    fn fail<T>(&mut self, why: &str) -> Step<T> {
        self.log.restart();
        record_error(why);
        Break(Pass::Failed)
    }

    /// Ends the pass failed for want of a producer, which immediate sends are told.
    fn no_producer<T>(&mut self, why: String) -> Step<T> {
        self.log.restart();
        self.no_producer = why;
        record_error(&self.no_producer);
        Break(Pass::Failed)
    }
}
