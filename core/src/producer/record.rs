//! One record to send, as the caller describes it ([`Record`], borrowed from a
//! [`Message`](crate::message::Message) or built by hand), and as librdkafka takes it
//! ([`base_record`]). What must stay true: a record reaches Kafka exactly as described — a
//! `None` key, payload, partition or timestamp is left to librdkafka and Kafka (no key, a null
//! value, the partitioner, the producer's clock), and headers keep their order and repeats.

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::BaseRecord;

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

/// `r` as librdkafka takes it, carrying `tag` (a [`Tag`](super::context::Tag)'s opaque value)
/// to its delivery report.
pub(super) fn base_record<'a>(r: &Record<'a>, tag: usize) -> BaseRecord<'a, [u8], [u8], usize> {
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
