//! Immediate sends (`kafka.autonomous_publish`), the worker's half: takes the requests backends
//! left in the slots ([`crate::shared::slots`]), copies each record out of its segment, sends it
//! with the producer, and answers each slot when its delivery report arrives.

use crate::shared::slots;
use kafka_core::message::Message;
use kafka_core::producer::{Producer, Record};
use pgrx::pg_sys;
use std::time::Duration;

pub use slots::{in_flight, requested};

/// Takes new requests and sends them, then hands out the answers that arrived. With no
/// producer (no broker, or it could not be made), requests are answered with `no_producer`.
pub fn serve(producer: Option<&Producer>, no_producer: &str) {
    for (i, handle, len) in slots::take_ready() {
        let Some(producer) = producer else {
            slots::finish(i, Err(no_producer.to_owned()));
            continue;
        };
        let Some(msg) = read_segment(handle, len) else {
            slots::finish(i, Err("the request was abandoned".into()));
            continue;
        };
        if let Err(e) = producer.send_immediate(&Record::from(&msg), i) {
            slots::finish(i, Err(e));
        }
    }
    if let Some(producer) = producer {
        for (i, r) in producer.take_immediate(Duration::ZERO) {
            slots::finish(i, r);
        }
    }
}

fn read_segment(handle: u32, len: usize) -> Option<Message> {
    // SAFETY: in the worker, which has shared memory access: dsm_attach returns NULL if the backend
    // has already detached (then we return None); otherwise the mapping is `map_length` bytes long,
    // and is copied out before dsm_detach releases it.
    unsafe {
        let seg = pg_sys::dsm_attach(handle);
        if seg.is_null() {
            return None;
        }
        let len = pg_sys::dsm_segment_map_length(seg).min(len); // the record, not the page padding
        let bytes = std::slice::from_raw_parts(pg_sys::dsm_segment_address(seg) as *const u8, len).to_vec();
        pg_sys::dsm_detach(seg);
        slots::decode(&bytes)
    }
}
