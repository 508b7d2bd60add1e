//! What librdkafka's callbacks leave for the producer ([`Context`]: delivery reports, errors and
//! warnings, statistics), what each delivery report is for ([`Tag`]), and how the thread that
//! polls learns that something came in ([`Wakeup`], [`Producer::poll_until`]).
//!
//! What must stay true: callbacks only push into mutex-guarded vectors (bounded where nothing
//! drains them in time), because librdkafka may call [`log`](ClientContext::log) from its own
//! threads; delivery reports themselves are served only when the thread that owns the
//! producer polls. The [`Wakeup`] pipe's queue reference is released before the client it
//! belongs to (the field order of [`Producer`]).

use super::Producer;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryResult, Producer as _, ProducerContext};
use rdkafka::{ClientContext, Message};
use std::sync::Mutex;
use std::time::Duration;

/// What librdkafka's callbacks record for a [`Producer`], until it takes them.
#[derive(Default)]
pub struct Context {
    /// Reports of batch records: ((batch number, index in the batch), report).
    pub(super) reports: Mutex<Vec<((usize, usize), BatchReport)>>,
    /// Reports of immediate sends: (the caller's tag, report).
    pub(super) immediate: Mutex<Vec<(usize, Report)>>,
    pub(super) events: Mutex<Vec<String>>,
    /// librdkafka's latest statistics (JSON), not yet taken.
    pub(super) statistics: Mutex<Option<Vec<u8>>>,
}

/// A delivery report: the partition and offset Kafka stored the record at, or the error.
pub type Report = Result<(i32, i64), KafkaError>;

/// The delivery report of a batch record: delivered, or the error and where the record was
/// going (topic, partition), which tells whose record batch it travelled in.
pub(super) type BatchReport = Result<(), (KafkaError, String, i32)>;

/// What a delivery report is for. librdkafka carries it with the record as a plain `usize`
/// ([`Tag::opaque`]), read back in the delivery callback ([`Tag::of`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Tag {
    /// Record `index` of batch number `seq` (below [`MAX_SEQ`](super::delivery::MAX_SEQ)).
    Batch { seq: usize, index: usize },
    /// A record sent by [`Producer::send_immediate`] with the caller's tag.
    Immediate(usize),
}

impl Tag {
    /// Opaque values from here on are immediate sends; below it, `seq << 32 | index`.
    const IMMEDIATE: usize = 1 << 62;
    const SEQ_SHIFT: u32 = 32;

    pub(super) fn opaque(self) -> usize {
        match self {
            Tag::Batch { seq, index } => (seq << Self::SEQ_SHIFT) | index,
            Tag::Immediate(tag) => Self::IMMEDIATE + tag,
        }
    }

    pub(super) fn of(opaque: usize) -> Tag {
        if opaque >= Self::IMMEDIATE {
            Tag::Immediate(opaque - Self::IMMEDIATE)
        } else {
            Tag::Batch { seq: opaque >> Self::SEQ_SHIFT, index: opaque & ((1 << Self::SEQ_SHIFT) - 1) }
        }
    }
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        // A transaction coordinator still loading its log after a broker start, or busy settling
        // a predecessor's transaction (GETPID): librdkafka retries by itself, and a failure that
        // lasts comes back from `init_transactions`.
        if (level as i32) <= (RDKafkaLogLevel::Warning as i32)
            && !msg.contains("load in progress")
            && fac != "GETPID"
        {
            push_bounded(&self.events, format!("{fac}: {msg}"));
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        push_bounded(&self.events, format!("{error}: {reason}"));
    }

    fn stats_raw(&self, statistics: &[u8]) {
        *self.statistics.lock().unwrap_or_else(|p| p.into_inner()) = Some(statistics.to_vec());
    }
}

fn push_bounded(v: &Mutex<Vec<String>>, s: String) {
    let mut v = v.lock().unwrap_or_else(|p| p.into_inner());
    if v.len() < 100 {
        v.push(s);
    }
}

impl ProducerContext for Context {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, tag: usize) {
        match Tag::of(tag) {
            Tag::Batch { seq, index } => {
                let r = result
                    .as_ref()
                    .map(|_| ())
                    .map_err(|(e, m)| (e.clone(), m.topic().to_owned(), m.partition()));
                self.reports.lock().unwrap_or_else(|p| p.into_inner()).push(((seq, index), r))
            }
            Tag::Immediate(t) => {
                let r = result.as_ref().map(|m| (m.partition(), m.offset())).map_err(|(e, _)| e.clone());
                self.immediate.lock().unwrap_or_else(|p| p.into_inner()).push((t, r))
            }
        }
    }
}

impl Producer {
    /// Polls librdkafka until `arrived` says what the caller waits for came in, or `timeout`
    /// passed. It sleeps in `poll(2)` on a pipe that librdkafka writes to when its event queue
    /// turns non-empty
    /// ([`rd_kafka_queue_io_event_enable`](rdkafka::bindings::rd_kafka_queue_io_event_enable)),
    /// and serves events without blocking: rust-rdkafka's own
    /// [`poll`](rdkafka::producer::BaseProducer::poll) serves events until its whole timeout
    /// has passed, and spins through its last millisecond, so a report would wait for the
    /// timeout, or burn CPU.
    pub(super) fn poll_until(&self, timeout: Duration, arrived: impl Fn(&Context) -> bool) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            // SAFETY: `queue` is a live reference to this client's main queue (see `Wakeup`).
            while unsafe { rdkafka::bindings::rd_kafka_queue_length(self.wakeup.queue) } > 0 {
                self.inner.poll(Duration::ZERO);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() || arrived(self.inner.context()) {
                return;
            }
            self.wakeup.wait(left);
        }
    }
}

/// The pipe librdkafka writes a byte to when its main event queue turns non-empty.
pub(super) struct Wakeup {
    queue: *mut rdkafka::bindings::rd_kafka_queue_t,
    read: libc::c_int,
    write: libc::c_int,
}

impl Wakeup {
    pub(super) fn new(client: *mut rdkafka::bindings::rd_kafka_t) -> Result<Wakeup, String> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(format!("could not create a pipe: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: `client` is a live librdkafka handle; the queue reference it returns is
        // released in Drop, after io events are disabled again.
        let queue = unsafe { rdkafka::bindings::rd_kafka_queue_get_main(client) };
        // SAFETY: librdkafka copies the payload; the write end stays open until Drop.
        unsafe { rdkafka::bindings::rd_kafka_queue_io_event_enable(queue, fds[1], c"1".as_ptr().cast(), 1) };
        Ok(Wakeup { queue, read: fds[0], write: fds[1] })
    }

    /// Sleeps until librdkafka signals an event or `timeout` passes; empties the pipe.
    fn wait(&self, timeout: Duration) {
        let mut pfd = libc::pollfd { fd: self.read, events: libc::POLLIN, revents: 0 };
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd; `buf` is a local buffer of the length given.
        unsafe {
            libc::poll(&mut pfd, 1, ms);
            let mut buf = [0u8; 64];
            while libc::read(self.read, buf.as_mut_ptr().cast(), buf.len()) > 0 {}
        }
    }
}

impl Drop for Wakeup {
    fn drop(&mut self) {
        // SAFETY: the queue reference and descriptors were created in `new` and are released once.
        unsafe {
            rdkafka::bindings::rd_kafka_queue_io_event_enable(self.queue, -1, std::ptr::null(), 0);
            rdkafka::bindings::rd_kafka_queue_destroy(self.queue);
            libc::close(self.read);
            libc::close(self.write);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::delivery::MAX_SEQ;
    use super::*;

    #[test]
    fn tags_round_trip_and_never_collide() {
        for t in [
            Tag::Batch { seq: 0, index: 0 },
            Tag::Batch { seq: MAX_SEQ - 1, index: u32::MAX as usize },
            Tag::Immediate(0),
            Tag::Immediate(15),
        ] {
            assert_eq!(Tag::of(t.opaque()), t);
        }
        assert!(
            Tag::Batch { seq: MAX_SEQ - 1, index: u32::MAX as usize }.opaque() < Tag::Immediate(0).opaque()
        );
    }
}
