//! Delivery: batches handed to librdkafka ([`Producer::send_batch`]) and the collection of their
//! reports ([`Producer::wait`]), up to several batches in flight, and immediate sends outside any
//! batch ([`Producer::send_immediate`], [`Producer::take_immediate`]).
//!
//! What must stay true: each record of a batch gets exactly one [`Outcome`], from its own
//! delivery report (or from librdkafka refusing to take it), or [`Outcome::Retry`] when no
//! report came (stopped, timed out) — never from the queue being empty alone;
//! batches are waited for in the order sent, and a report of a batch still in flight is kept
//! (the stash) until that batch is waited for, however the reports interleave; reports of a
//! batch already waited for are dropped.

use super::context::{BatchReport, Tag};
use super::outcome::{classify, name_refused, Outcome};
use super::record::{base_record, Record};
use super::Producer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::Producer as _;
use std::time::Duration;

/// Where Kafka stored an immediate record (partition, offset), or why not.
pub type Answer = Result<(i32, i64), String>;

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
pub(super) const MAX_SEQ: usize = 1 << 28;

/// Whether batch `a` was sent before batch `b` (allowing for the counter wrapping).
fn before(a: usize, b: usize) -> bool {
    a != b && (b + MAX_SEQ - a) % MAX_SEQ < MAX_SEQ / 2
}

impl Producer {
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
    /// and librdkafka reports the others as
    /// [`InvalidDifferentRecord`](RDKafkaErrorCode::InvalidDifferentRecord): then the named ones
    /// are [`Outcome::Refused`] and the others [`Outcome::Bystander`], with no need to send them
    /// one at a time; otherwise (an older broker) every record of the batch is
    /// [`Outcome::BatchRefused`].
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
        let oldest = (b.seq + 1) % MAX_SEQ;
        self.oldest_seq.set(oldest);
        // Reports of batches given up on are not wanted any more.
        self.stash.borrow_mut().retain(|&seq, _| !before(seq, oldest));
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
        let reports =
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
        // Each report is looked at once: those of another batch go to its entry in the stash
        // (a batch's reports may all arrive while the next one is being sent).
        let mut stash = self.stash.borrow_mut();
        let stashed = stash.remove(&b.seq).unwrap_or_default();
        let oldest = self.oldest_seq.get();
        for ((seq, index), r) in reports {
            if seq == b.seq {
                b.record(index, r);
            } else if !before(seq, oldest) {
                stash.entry(seq).or_default().push((index, r)); // another batch still in flight
            }
        }
        for (index, r) in stashed {
            b.record(index, r);
        }
    }
}

impl InFlight {
    /// The outcome of record `index`, from its report.
    fn record(&mut self, index: usize, r: BatchReport) {
        self.outcomes[index] = Some(match r {
            Ok(()) => Outcome::Delivered,
            Err((e, topic, partition)) => {
                let outcome = classify(&e);
                if matches!(outcome, Outcome::BatchRefused(_)) {
                    self.batch_refused.push((index, topic, partition));
                }
                outcome
            }
        });
        self.pending -= 1;
    }
}

/// Against librdkafka's mock cluster (in-process brokers, no Kafka needed).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer::base_config;
    use rdkafka::mocking::MockCluster;

    fn records<'a>(topic: &'a str, payloads: &'a [Vec<u8>]) -> Vec<Record<'a>> {
        payloads.iter().map(|p| Record { topic, payload: Some(p), ..Default::default() }).collect()
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
}
