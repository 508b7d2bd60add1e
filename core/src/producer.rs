//! The Kafka side of pg_kafka: a librdkafka producer and the delivery of one batch, with no pgrx.
//!
//! This module never touches PostgreSQL, so it can be unit-tested against librdkafka's mock
//! cluster and reused by the benchmark's plain-producer baseline. Delivery works like this:
//! every record of a batch is handed to librdkafka (idempotent, `acks=all`) tagged with its index;
//! [`Producer::deliver`] then polls **on the calling thread** until each record has its delivery
//! report, and returns one [`Outcome`] per record. A record counts as delivered only when its own
//! report says so (`in_flight_count() == 0` alone says nothing about success). Callbacks only
//! push into mutex-guarded vectors, because librdkafka may call `log` from its own threads.

pub use rdkafka::config::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use rdkafka::{ClientContext, Message};
use std::cell::{Cell, RefCell};
use std::sync::Mutex;
use std::time::Duration;

/// One message to send.
#[derive(Default)]
pub struct Record<'a> {
    pub topic: &'a str,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    /// Header names and values, in order (a name may repeat).
    pub headers: Vec<(&'a str, Option<&'a [u8]>)>,
    pub partition: Option<i32>,
    /// Milliseconds since 1970-01-01 UTC.
    pub timestamp_ms: Option<i64>,
}

/// A message as the producer sends it (the worker's chunks, immediate sends).
impl<'a> From<&'a crate::message::Message> for Record<'a> {
    fn from(m: &'a crate::message::Message) -> Record<'a> {
        Record {
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
        }
    }
}

/// What became of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Kafka acknowledged it (all in-sync replicas).
    Delivered,
    /// Kafka can never take it (too large, invalid or forbidden topic...): dead-letter it.
    Refused(String),
    /// Not delivered this time (broker down, timeout, stop requested): keep it and retry.
    Retry(String),
    /// Kafka refused the whole record batch it travelled in (an invalid timestamp or record):
    /// one record of the batch is bad, not necessarily this one. Sent alone, it is either
    /// delivered or refused for good. (When the broker names the bad records, they are
    /// `Refused` and their neighbours `Bystander`: see [`Producer::wait`].)
    BatchRefused(String),
    /// Not stored, through no fault of its own: refused with its record batch because of
    /// another record the broker named as invalid, or not handed to Kafka at all (the worker
    /// stopped short after a refused record). Sent again in a later pass; not a failed attempt
    /// (`kafka.dead_letter_after` does not count it).
    Bystander(String),
}

/// The librdkafka settings every pg_kafka producer uses, before per-deployment settings.
pub fn base_config(bootstrap_servers: &str, message_timeout_ms: i32) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap_servers)
        .set("client.id", "pg_kafka")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        .set("message.timeout.ms", message_timeout_ms.to_string())
        .set("log.connection.close", "false")
        .set("statistics.interval.ms", "60000") // kafka.producer_statistics; kafka.config may change it
        .set_log_level(RDKafkaLogLevel::Warning);
    c
}

/// Checks one librdkafka setting the way librdkafka does, without creating a client (no thread
/// starts, nothing connects). The error is librdkafka's own message.
pub fn check_setting(name: &str, value: &str) -> Result<(), String> {
    let mut c = ClientConfig::new();
    c.set(name, value);
    match c.create_native_config() {
        Ok(_) => Ok(()),
        Err(KafkaError::ClientConfig(_, desc, _, _)) => Err(desc),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(Default)]
pub struct Context {
    /// Reports of batch records: ((batch number, index in the batch), report).
    reports: Mutex<Vec<((usize, usize), BatchReport)>>,
    /// Reports of immediate sends: (the caller's tag, report).
    immediate: Mutex<Vec<(usize, Report)>>,
    events: Mutex<Vec<String>>,
    /// librdkafka's latest statistics (JSON), not yet taken.
    statistics: Mutex<Option<Vec<u8>>>,
}

/// A delivery report: the partition and offset Kafka stored the record at, or the error.
pub type Report = Result<(i32, i64), KafkaError>;

/// The delivery report of a batch record: delivered, or the error and where the record was
/// going (topic, partition), which tells whose record batch it travelled in.
type BatchReport = Result<(), (KafkaError, String, i32)>;

/// Where Kafka stored an immediate record (partition, offset), or why not.
pub type Answer = Result<(i32, i64), String>;

/// What a delivery report is for. librdkafka carries it with the record as a plain `usize`
/// ([`Tag::opaque`]), read back in the delivery callback ([`Tag::of`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tag {
    /// Record `index` of batch number `seq` (below [`MAX_SEQ`]).
    Batch { seq: usize, index: usize },
    /// A record sent by [`Producer::send_immediate`] with the caller's tag.
    Immediate(usize),
}

impl Tag {
    /// Opaque values from here on are immediate sends; below it, `seq << 32 | index`.
    const IMMEDIATE: usize = 1 << 62;
    const SEQ_SHIFT: u32 = 32;

    fn opaque(self) -> usize {
        match self {
            Tag::Batch { seq, index } => (seq << Self::SEQ_SHIFT) | index,
            Tag::Immediate(tag) => Self::IMMEDIATE + tag,
        }
    }

    fn of(opaque: usize) -> Tag {
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

pub struct Producer {
    /// How librdkafka wakes a waiting `poll_until`. Declared before `inner`: fields drop in
    /// order, and its queue reference must go before the client does.
    wakeup: Wakeup,
    inner: BaseProducer<Context>,
    next_seq: Cell<usize>,
    /// The oldest batch whose reports are still wanted; reports of batches before it (waited
    /// for, or given up) are dropped.
    oldest_seq: Cell<usize>,
    /// Reports that arrived while collecting for an earlier batch.
    stash: RefCell<Vec<((usize, usize), BatchReport)>>,
    /// Partitions (topic, partition) where the broker named the bad records of a refused record
    /// batch: librdkafka reported its other records as `InvalidDifferentRecord`. A record batch
    /// may hold records of two batches of ours, and its reports all arrive in one poll, so this
    /// is kept across batches. (A broker that names bad records keeps doing so.)
    named: RefCell<Vec<(String, i32)>>,
}

/// A batch handed to librdkafka whose delivery reports are not all in yet.
pub struct InFlight {
    seq: usize,
    outcomes: Vec<Option<Outcome>>,
    pending: usize,
    stopped: bool,
    /// Records of a refused record batch: (index, topic, partition).
    batch_refused: Vec<(usize, String, i32)>,
}

/// Batch numbers wrap around here (they only need to tell the batches in flight apart).
const MAX_SEQ: usize = 1 << 28;

impl Producer {
    pub fn new(config: &ClientConfig) -> Result<Producer, String> {
        let inner: BaseProducer<Context> =
            config.create_with_context(Context::default()).map_err(|e| e.to_string())?;
        let wakeup = Wakeup::new(inner.client().native_ptr())?;
        Ok(Producer {
            wakeup,
            inner,
            next_seq: Cell::new(0),
            oldest_seq: Cell::new(0),
            stash: RefCell::new(Vec::new()),
            named: RefCell::new(Vec::new()),
        })
    }

    /// Errors and warnings librdkafka reported since the last call (connection refused, auth...).
    pub fn take_events(&self) -> Vec<String> {
        std::mem::take(&mut *self.inner.context().events.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// librdkafka's statistics emitted since the last call (the latest only).
    pub fn take_statistics(&self) -> Option<Vec<u8>> {
        self.inner.context().statistics.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// A fatal error of the idempotent producer: this producer must be replaced.
    pub fn fatal_error(&self) -> Option<String> {
        self.inner.client().fatal_error().map(|(code, msg)| format!("{code}: {msg}"))
    }

    /// Sends `records` and waits for every delivery report, or until `stop()` says to give up.
    pub fn deliver(&self, records: &[Record], stop: &mut dyn FnMut() -> bool) -> Vec<Outcome> {
        let batch = self.send_batch(records, stop);
        self.wait(batch, stop)
    }

    /// Hands a batch to librdkafka (waiting only while its queue is full) and returns at once;
    /// [`Producer::wait`] collects the reports. Batches must be waited for in the order sent.
    pub fn send_batch(&self, records: &[Record], stop: &mut dyn FnMut() -> bool) -> InFlight {
        let seq = self.next_seq.get();
        self.next_seq.set((seq + 1) % MAX_SEQ);
        let mut b = InFlight {
            seq,
            outcomes: vec![None; records.len()],
            pending: 0,
            stopped: false,
            batch_refused: Vec::new(),
        };
        'send: for (i, r) in records.iter().enumerate() {
            let mut rec = base_record(r, Tag::Batch { seq, index: i }.opaque());
            loop {
                match self.inner.send(rec) {
                    Ok(()) => {
                        b.pending += 1;
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        rec = back;
                        self.collect(&mut b, Duration::from_millis(20));
                        if stop() {
                            b.stopped = true;
                            break 'send;
                        }
                    }
                    Err((e, _)) => {
                        b.outcomes[i] = Some(classify(&e));
                        break;
                    }
                }
            }
            if i % 1024 == 1023 {
                self.collect(&mut b, Duration::ZERO);
            }
        }
        b
    }

    /// Waits for every report of a batch, or until `stop()` says to give up; one outcome per record.
    /// A broker that refuses a record batch for an invalid record names the bad records (KIP-467)
    /// and librdkafka reports the others as `InvalidDifferentRecord`: then the named ones are
    /// `Refused` and the others `Bystander`, with no need to send them one at a time; otherwise
    /// (an older broker) every record of the batch is `BatchRefused`.
    pub fn wait(&self, mut b: InFlight, stop: &mut dyn FnMut() -> bool) -> Vec<Outcome> {
        // Reports that came in while later batches were sent wait in the stash: take them
        // without blocking first.
        self.collect(&mut b, Duration::ZERO);
        while b.pending > 0 {
            self.collect(&mut b, Duration::from_millis(50));
            if b.pending > 0 && (b.stopped || stop()) {
                b.stopped = true;
                break;
            }
        }
        self.oldest_seq.set((b.seq + 1) % MAX_SEQ);
        name_refused(&mut b.outcomes, &b.batch_refused, &self.named.borrow());
        let why = if b.stopped { "delivery interrupted" } else { "no delivery report" };
        b.outcomes.into_iter().map(|o| o.unwrap_or_else(|| Outcome::Retry(why.into()))).collect()
    }

    /// Sends one record outside any batch; its report comes from [`Producer::take_immediate`].
    pub fn send_immediate(&self, r: &Record, tag: usize) -> Result<(), String> {
        let mut rec = base_record(r, Tag::Immediate(tag).opaque());
        for _ in 0..50 {
            match self.inner.send(rec) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    rec = back;
                    self.inner.poll(Duration::from_millis(20));
                }
                Err((e, _)) => return Err(e.to_string()),
            }
        }
        Err("librdkafka's queue stayed full".into())
    }

    /// Polls once (serving delivery reports) and returns the reports of immediate records.
    pub fn take_immediate(&self, timeout: Duration) -> Vec<(usize, Answer)> {
        self.poll_until(timeout, |c| !c.immediate.lock().unwrap_or_else(|p| p.into_inner()).is_empty());
        let reports =
            std::mem::take(&mut *self.inner.context().immediate.lock().unwrap_or_else(|p| p.into_inner()));
        reports.into_iter().map(|(tag, r)| (tag, r.map_err(|e| e.to_string()))).collect()
    }

    /// Polls once and records the reports of batch `b` that arrived; reports of a later batch
    /// (or an earlier one still to be waited for) wait in the stash, those of a batch already
    /// waited for or given up are dropped.
    fn collect(&self, b: &mut InFlight, timeout: Duration) {
        self.poll_until(timeout, |c| !c.reports.lock().unwrap_or_else(|p| p.into_inner()).is_empty());
        let mut reports =
            std::mem::take(&mut *self.inner.context().reports.lock().unwrap_or_else(|p| p.into_inner()));
        {
            let mut named = self.named.borrow_mut();
            for (_, r) in &reports {
                let Err((e, topic, partition)) = r else { continue };
                if e.rdkafka_error_code() == Some(RDKafkaErrorCode::InvalidDifferentRecord)
                    && !named.iter().any(|(t, p)| t == topic && p == partition)
                {
                    if named.len() >= 10_000 {
                        named.clear(); // bounded memory
                    }
                    named.push((topic.clone(), *partition));
                }
            }
        }
        let mut stash = self.stash.borrow_mut();
        reports.append(&mut stash);
        for ((seq, index), r) in reports {
            if seq == b.seq {
                b.outcomes[index] = Some(match r {
                    Ok(()) => Outcome::Delivered,
                    Err((e, topic, partition)) => {
                        let outcome = classify(&e);
                        if matches!(outcome, Outcome::BatchRefused(_)) {
                            b.batch_refused.push((index, topic, partition));
                        }
                        outcome
                    }
                });
                b.pending -= 1;
            } else if !before(seq, self.oldest_seq.get()) {
                stash.push(((seq, index), r)); // another batch still in flight
            }
        }
    }
}

/// Kafka transactions (`kafka.delivery = exactly_once`). Errors are librdkafka's text; after any
/// of them but an abort that succeeded, the worker replaces the producer (a new one's
/// `init_transactions` settles what the old one left open, and fences it).
impl Producer {
    pub fn init_transactions(&self, timeout: Duration) -> Result<(), String> {
        self.inner.init_transactions(timeout).map_err(|e| e.to_string())
    }

    pub fn begin(&self) -> Result<(), String> {
        self.inner.begin_transaction().map_err(|e| e.to_string())
    }

    /// Commits the open transaction: every message sent in it must have its report already.
    pub fn commit(&self, timeout: Duration) -> Result<(), String> {
        self.inner.commit_transaction(timeout).map_err(|e| e.to_string())
    }

    pub fn abort(&self, timeout: Duration) -> Result<(), String> {
        self.inner.abort_transaction(timeout).map_err(|e| e.to_string())
    }
}

impl Producer {
    /// Polls librdkafka until `arrived` says what the caller waits for came in, or `timeout`
    /// passed. It sleeps in `poll(2)` on a pipe that librdkafka writes to when its event queue
    /// turns non-empty (`rd_kafka_queue_io_event_enable`), and serves events without blocking:
    /// rust-rdkafka's own `poll` serves events until its whole timeout has passed, and spins
    /// through its last millisecond, so a report would wait for the timeout, or burn CPU.
    fn poll_until(&self, timeout: Duration, arrived: impl Fn(&Context) -> bool) {
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
struct Wakeup {
    queue: *mut rdkafka::bindings::rd_kafka_queue_t,
    read: libc::c_int,
    write: libc::c_int,
}

impl Wakeup {
    fn new(client: *mut rdkafka::bindings::rd_kafka_t) -> Result<Wakeup, String> {
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

/// Records of a refused record batch (`batch_refused`: index, topic, partition) whose partition
/// had records reported as `InvalidDifferentRecord` (`named`) are the ones the broker named as
/// invalid: refused for good. The others stay `BatchRefused` (the broker did not say which).
fn name_refused(
    outcomes: &mut [Option<Outcome>],
    batch_refused: &[(usize, String, i32)],
    named: &[(String, i32)],
) {
    for (index, topic, partition) in batch_refused {
        if !named.iter().any(|(t, p)| t == topic && p == partition) {
            continue;
        }
        if let Some(Some(Outcome::BatchRefused(e))) = outcomes.get(*index) {
            outcomes[*index] = Some(Outcome::Refused(e.clone()));
        }
    }
}

/// Whether batch `a` was sent before batch `b` (allowing for the counter wrapping).
fn before(a: usize, b: usize) -> bool {
    a != b && (b + MAX_SEQ - a) % MAX_SEQ < MAX_SEQ / 2
}

fn base_record<'a>(r: &Record<'a>, tag: usize) -> BaseRecord<'a, [u8], [u8], usize> {
    let mut rec = BaseRecord::<[u8], [u8], usize>::with_opaque_to(r.topic, tag);
    if let Some(p) = r.payload {
        rec = rec.payload(p);
    }
    if let Some(k) = r.key {
        rec = rec.key(k);
    }
    if let Some(p) = r.partition {
        rec = rec.partition(p);
    }
    if let Some(t) = r.timestamp_ms {
        rec = rec.timestamp(t);
    }
    if !r.headers.is_empty() {
        let headers =
            r.headers.iter().fold(OwnedHeaders::new_with_capacity(r.headers.len()), |h, (key, value)| {
                h.insert(Header { key, value: *value })
            });
        rec = rec.headers(headers);
    }
    rec
}

/// Sorts a delivery error into "never deliverable" and "try again later".
pub fn classify(e: &KafkaError) -> Outcome {
    use RDKafkaErrorCode::*;
    let code = e.rdkafka_error_code();
    let text = e.to_string();
    match code {
        Some(
            MessageSizeTooLarge
            | InvalidMessageSize
            | InvalidTopic
            | MessageBatchTooLarge
            | TopicAuthorizationFailed
            | UnknownPartition
            | UnknownTopic
            | PolicyViolation
            | InvalidRequiredAcks
            | InvalidArgument
            | InvalidPartitions
            | UnsupportedCompressionType
            | UnsupportedForMessageFormat,
        ) => Outcome::Refused(text),
        // The broker checks these per record batch and fails the whole batch.
        Some(InvalidTimestamp | InvalidRecord | InvalidMessage) => Outcome::BatchRefused(text),
        // A neighbour of a record the broker named as invalid: never stored, fine itself.
        Some(InvalidDifferentRecord) => Outcome::Bystander(text),
        _ => Outcome::Retry(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::mocking::MockCluster;

    fn records<'a>(topic: &'a str, payloads: &'a [Vec<u8>]) -> Vec<Record<'a>> {
        payloads.iter().map(|p| Record { topic, payload: Some(p), ..Default::default() }).collect()
    }

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

    #[test]
    fn delivers_every_record_and_reports_each() {
        let cluster = MockCluster::new(1).unwrap();
        let p = Producer::new(&base_config(&cluster.bootstrap_servers(), 5_000)).unwrap();
        let payloads: Vec<Vec<u8>> = (0..5_000).map(|i| format!("m{i}").into_bytes()).collect();
        let out = p.deliver(&records("t", &payloads), &mut || false);
        assert_eq!(out.len(), 5_000);
        assert!(
            out.iter().all(|o| *o == Outcome::Delivered),
            "{:?}",
            out.iter().find(|o| **o != Outcome::Delivered)
        );
    }

    #[test]
    fn oversized_record_is_refused_and_the_rest_delivered() {
        let cluster = MockCluster::new(1).unwrap();
        let p = Producer::new(&base_config(&cluster.bootstrap_servers(), 5_000)).unwrap();
        let payloads = vec![b"before".to_vec(), vec![b'x'; 2_000_000], b"after".to_vec()];
        let out = p.deliver(&records("t", &payloads), &mut || false);
        assert_eq!(out[0], Outcome::Delivered);
        assert!(matches!(&out[1], Outcome::Refused(e) if e.contains("too large")), "{:?}", out[1]);
        assert_eq!(out[2], Outcome::Delivered);
    }

    #[test]
    fn broker_down_means_retry_not_loss() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.broker_down(1).unwrap();
        let p = Producer::new(&base_config(&cluster.bootstrap_servers(), 500)).unwrap();
        let payloads = vec![b"a".to_vec(), b"b".to_vec()];
        let out = p.deliver(&records("t", &payloads), &mut || false);
        assert!(out.iter().all(|o| matches!(o, Outcome::Retry(_))), "{out:?}");
        cluster.broker_up(1).unwrap();
        // Like the worker: retry what was not delivered until the broker takes it.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let out = p.deliver(&records("t", &payloads), &mut || false);
            if out.iter().all(|o| *o == Outcome::Delivered) {
                break;
            }
            assert!(out.iter().all(|o| matches!(o, Outcome::Retry(_))), "{out:?}");
            assert!(std::time::Instant::now() < deadline, "not delivered after the broker came back");
        }
    }

    #[test]
    fn stop_request_leaves_undelivered_records_for_retry() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.broker_down(1).unwrap();
        let p = Producer::new(&base_config(&cluster.bootstrap_servers(), 60_000)).unwrap();
        let payloads = vec![b"a".to_vec()];
        let out = p.deliver(&records("t", &payloads), &mut || true);
        assert_eq!(out, vec![Outcome::Retry("delivery interrupted".into())]);
    }

    #[test]
    fn settings_are_checked_by_librdkafka() {
        assert_eq!(check_setting("linger.ms", "20"), Ok(()));
        assert_eq!(check_setting("compression.type", "zstd"), Ok(()));
        assert!(check_setting("no.such.setting", "1")
            .unwrap_err()
            .contains("No such configuration property"));
        assert!(check_setting("linger.ms", "soon").is_err());
    }

    #[test]
    fn two_batches_in_flight_get_their_own_reports() {
        let cluster = MockCluster::new(1).unwrap();
        let p = Producer::new(&base_config(&cluster.bootstrap_servers(), 5_000)).unwrap();
        let first: Vec<Vec<u8>> = (0..3000).map(|i| format!("a{i}").into_bytes()).collect();
        let second = vec![b"b".to_vec(), vec![b'x'; 2_000_000]];
        let a = p.send_batch(&records("t", &first), &mut || false);
        let b = p.send_batch(&records("t", &second), &mut || false);
        let out_a = p.wait(a, &mut || false);
        let out_b = p.wait(b, &mut || false);
        assert!(out_a.iter().all(|o| *o == Outcome::Delivered));
        assert_eq!(out_b[0], Outcome::Delivered);
        assert!(matches!(out_b[1], Outcome::Refused(_)));
    }

    #[test]
    fn batches_sent_while_the_queue_is_full_keep_the_reports_of_earlier_ones() {
        let cluster = MockCluster::new(1).unwrap();
        let mut config = base_config(&cluster.bootstrap_servers(), 5_000);
        config.set("queue.buffering.max.messages", "1000");
        let p = Producer::new(&config).unwrap();
        let payloads: Vec<Vec<u8>> = (0..2500).map(|i| format!("m{i}").into_bytes()).collect();
        // The second and third batches only fit once reports of the first came in; those must
        // still be there when the first is waited for.
        let sent: Vec<InFlight> =
            (0..3).map(|_| p.send_batch(&records("t", &payloads), &mut || false)).collect();
        for b in sent {
            let out = p.wait(b, &mut || false);
            assert!(
                out.iter().all(|o| *o == Outcome::Delivered),
                "{:?}",
                out.iter().find(|o| **o != Outcome::Delivered)
            );
        }
    }

    #[test]
    fn classification() {
        let refused = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert!(matches!(classify(&refused), Outcome::Refused(_)));
        let stuck = KafkaError::MessageProduction(RDKafkaErrorCode::InvalidTimestamp);
        assert!(
            matches!(classify(&stuck), Outcome::BatchRefused(_)),
            "no retry of the batch can fix a bad timestamp"
        );
        let later = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert!(matches!(classify(&later), Outcome::Retry(_)));
        let neighbour = KafkaError::MessageProduction(RDKafkaErrorCode::InvalidDifferentRecord);
        assert!(
            matches!(classify(&neighbour), Outcome::Bystander(_)),
            "never stored, fine itself: sent again"
        );
    }

    #[test]
    fn records_the_broker_named_in_a_refused_batch_are_refused_for_good() {
        let bad = || Some(Outcome::BatchRefused("Invalid timestamp".into()));
        let mut outcomes =
            vec![Some(Outcome::Delivered), bad(), Some(Outcome::Bystander("different record".into())), bad()];
        // Record 1 is on a partition where the broker named the bad records, record 3 is not.
        let refused = [(1, "t".to_owned(), 0), (3, "u".to_owned(), 0)];
        name_refused(&mut outcomes, &refused, &[("t".to_owned(), 0), ("u".to_owned(), 1)]);
        assert_eq!(outcomes[0], Some(Outcome::Delivered));
        assert_eq!(outcomes[1], Some(Outcome::Refused("Invalid timestamp".into())));
        assert!(matches!(outcomes[2], Some(Outcome::Bystander(_))));
        assert_eq!(outcomes[3], bad(), "no record named on its partition: which one is bad is unknown");
    }
}
