//! Kafka transactions, for `kafka.delivery = exactly_once`: a producer made with a
//! `transactional.id` calls [`Producer::init_transactions`] once, then for each chunk
//! [`Producer::begin`], its sends ([`Producer::send_batch`], [`Producer::wait`]), and
//! [`Producer::commit`] or [`Producer::abort`].
//!
//! What must stay true: errors are librdkafka's text; after any of them but an abort that
//! succeeded, the worker replaces the producer (a new one's
//! [`init_transactions`](Producer::init_transactions) settles what the old one left open, and
//! fences it). [`Producer::commit`] is called only once every message sent in the transaction
//! has its delivery report.

use super::Producer;
use rdkafka::producer::Producer as _;
use std::time::Duration;

/// Kafka transactions (`kafka.delivery = exactly_once`). Errors are librdkafka's text; after any
/// of them but an abort that succeeded, the worker replaces the producer (a new one's
/// [`init_transactions`](Producer::init_transactions) settles what the old one left open, and
/// fences it).
impl Producer {
    /// Registers the `transactional.id` with its transaction coordinator, completing or aborting
    /// what a previous producer with the same id left open, and fencing that producer.
    pub fn init_transactions(&self, timeout: Duration) -> Result<(), String> {
        self.inner.init_transactions(timeout).map_err(|e| e.to_string())
    }

    /// Opens a transaction: what is sent from now on is committed or aborted together.
    pub fn begin(&self) -> Result<(), String> {
        self.inner.begin_transaction().map_err(|e| e.to_string())
    }

    /// Commits the open transaction: every message sent in it must have its report already.
    pub fn commit(&self, timeout: Duration) -> Result<(), String> {
        self.inner.commit_transaction(timeout).map_err(|e| e.to_string())
    }

    /// Aborts the open transaction: consumers reading committed records never see its messages.
    pub fn abort(&self, timeout: Duration) -> Result<(), String> {
        self.inner.abort_transaction(timeout).map_err(|e| e.to_string())
    }
}
