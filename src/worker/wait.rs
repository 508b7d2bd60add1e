//! How long the worker waits after a pass, and how: on its latch, which committing backends set
//! (`kafka.poll_interval` is only the fallback); a short poll while an immediate send waits for
//! its report; `kafka.linger` after a small chunk of a busy stream (`kafka.wal_linger` for a busy
//! stream decoded from the WAL); an exponential back-off up
//! to `kafka.retry_backoff_max` after a failure.
//!
//! What must stay true: lingering and backing off are cut short only by what needs the worker
//! at once (an immediate send, `kafka.close()`, a shutdown), never by commits; a sleep ends
//! early when the worker must exit.

use super::process::{activity_state, shutdown_requested};
use super::{immediate, Pass};
use crate::{gucs, shared};
use pgrx::bgworkers::BackgroundWorker;
use pgrx::pg_sys;
use std::ops::ControlFlow::{self, Break, Continue};
use std::time::{Duration, Instant};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// How often the worker polls librdkafka while an immediate send waits for its report.
const IMMEDIATE_POLL: Duration = Duration::from_millis(5);
/// After a chunk smaller than `SMALL_BATCH` whose transactions committed at [`BUSY_RATE`] or more
/// per second (counted over the time since the previous pass began, lingering included) the
/// worker waits `kafka.linger` before reading again, so that a stream of commits makes fewer,
/// larger chunks: each pass costs two transactions of the worker's own and a produce request per
/// partition, CPU taken from the sessions. Slower streams are sent at once. (A rate, not a count
/// per pass: with a count, the commits gathered while lingering would keep the worker lingering
/// for ever even at 200 commits per second.)
pub(super) const SMALL_BATCH: usize = 1000;
const BUSY_RATE: f64 = 1000.0;

/// How long to wait after `pass`, which began `since` after the previous one; keeps the
/// back-off (`backoff`) of a run of failures.
pub(super) fn after(pass: &Pass, since: Duration, backoff: &mut Duration) -> Duration {
    match *pass {
        _ if immediate::in_flight() => IMMEDIATE_POLL,
        Pass::More(sent, txns) if sent < SMALL_BATCH && busy(txns, since) => gucs::linger(),
        Pass::Decoding(sent) if sent < SMALL_BATCH => gucs::wal_linger(),
        Pass::More(..) | Pass::Decoding(_) => Duration::ZERO,
        Pass::Idle => {
            *backoff = Duration::ZERO;
            gucs::poll_interval()
        }
        Pass::Failed | Pass::Undelivered => {
            *backoff = (*backoff * 2).clamp(FIRST_BACKOFF, gucs::retry_backoff_max());
            *backoff
        }
    }
}

/// While idle with WAL capture on, the worker looks this often whether this much WAL was
/// written since it last decoded: a long transaction is then decoded (into the reorder buffer)
/// while it still writes, on a core the session does not use, and its COMMIT leaves less to do.
const READ_AHEAD_EVERY: Duration = Duration::from_millis(100);
const READ_AHEAD_BYTES: u64 = 4 << 20;

/// Waits `wait` after `pass` (idle in `pg_stat_activity` after an idle pass), or only checks
/// for interrupts if there is nothing to wait. Breaks when the worker must exit. An idle wait
/// ends early once `wal_behind()` (WAL capture: bytes flushed but not decoded yet, if it is on)
/// reaches [`READ_AHEAD_BYTES`].
pub(super) fn rest(pass: &Pass, wait: Duration, wal_behind: impl Fn() -> Option<u64>) -> ControlFlow<()> {
    if wait.is_zero() {
        pg_sys::check_for_interrupts!();
        return Continue(());
    }
    if matches!(pass, Pass::Idle) {
        activity_state("idle", pg_sys::BackendState::STATE_IDLE);
    }
    // Lingering and backing off are not cut short by commits, only by what needs the worker
    // at once.
    let hold = matches!(pass, Pass::More(..) | Pass::Decoding(_) | Pass::Failed | Pass::Undelivered)
        && !immediate::in_flight();
    if matches!(pass, Pass::Idle) && wal_behind().is_some() {
        return read_ahead_sleep(wait, wal_behind);
    }
    if sleep(wait, hold) {
        Continue(())
    } else {
        Break(())
    }
}

/// An idle wait of `wait` in slices of [`READ_AHEAD_EVERY`], ended early when WAL capture has
/// [`READ_AHEAD_BYTES`] to decode.
fn read_ahead_sleep(wait: Duration, wal_behind: impl Fn() -> Option<u64>) -> ControlFlow<()> {
    // A long pass of decoding leaves as much WAL behind it: on at once, or the worker decodes
    // less than a long transaction writes.
    if wal_behind().is_some_and(|b| b >= READ_AHEAD_BYTES) {
        pg_sys::check_for_interrupts!();
        return Continue(());
    }
    let until = Instant::now() + wait;
    loop {
        let slice = (Instant::now() + READ_AHEAD_EVERY).min(until);
        if !sleep_until(slice, false) {
            return Break(());
        }
        let now = Instant::now();
        if now < slice || now >= until || wal_behind().is_some_and(|b| b >= READ_AHEAD_BYTES) {
            return Continue(()); // woken, done, or WAL to decode
        }
    }
}

/// Whether `txns` transactions that committed within `since` make a busy stream (see
/// [`BUSY_RATE`]).
fn busy(txns: usize, since: Duration) -> bool {
    txns >= 2 && txns as f64 >= BUSY_RATE * since.as_secs_f64()
}

/// Waits `wait` on the latch; with `hold`, commits neither wake it
/// ([`crate::shared::hold_commits`]) nor end the wait, only an immediate send or a close
/// request does. Returns false when the worker must exit.
fn sleep(wait: Duration, hold: bool) -> bool {
    sleep_until(Instant::now() + wait, hold)
}

fn sleep_until(until: Instant, hold: bool) -> bool {
    shared::hold_commits(hold);
    let woken = wait_latch_until(until, hold);
    shared::hold_commits(false);
    woken
}

fn wait_latch_until(until: Instant, hold: bool) -> bool {
    let closes = shared::close_requests();
    loop {
        let left = until.saturating_duration_since(Instant::now());
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
