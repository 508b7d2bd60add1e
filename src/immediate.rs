//! Immediate sends (`kafka.autonomous_publish`): a record sent now, outside the caller's
//! transaction, with Kafka's answer (partition and offset, or the error) returned to the caller.
//!
//! librdkafka still lives only in the worker. The backend encodes the record into a dynamic
//! shared memory segment, claims one of [`SLOTS`] request slots (under an LWLock), sets the
//! worker's latch and waits on its own latch. The worker takes the request (READY → TAKEN),
//! copies the record out of the segment, sends it, and when the delivery report arrives writes
//! the result into the slot (DONE) and sets the backend's latch. A backend that stops waiting
//! (timeout, cancel) marks its slot ABANDONED and the worker frees it; the record may still be
//! delivered, as with any producer whose caller gave up waiting.

use kafka_core::message::Message;
use kafka_core::producer::{Producer, Record};
use crate::shared;
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgLwLock};
use std::time::{Duration, Instant};

pub const SLOTS: usize = 16;
/// How many slots one role may hold at once, so that one role cannot starve the others.
pub const SLOTS_PER_ROLE: usize = 4;
const ERROR_LEN: usize = 400;

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum State {
    Free,
    Ready,
    Taken,
    Done,
    Abandoned,
}

#[derive(Copy, Clone)]
struct Slot {
    state: State,
    /// The waiting backend's latch.
    latch: usize,
    dsm: u32,
    /// The record's length in the segment (which may be mapped larger: whole pages when it comes
    /// from `min_dynamic_shared_memory`).
    len: usize,
    /// The role that claimed it (freed slots keep it; only busy ones count).
    role: u32,
    /// Bumped each time the slot is claimed, so that a late answer cannot reach a new caller.
    generation: u64,
    partition: i32,
    offset: i64,
    error_len: usize,
    error: [u8; ERROR_LEN],
}

// SAFETY: Slot is plain Copy data (an enum, integers, a fixed byte array) with no process-local
// pointer: `latch` is the address of a PGPROC latch in shared memory, mapped at the same address in
// every process, and `dsm` a segment handle, meaningful in every process.
unsafe impl PGRXSharedMemory for Slot {}

const FREE_SLOT: Slot = Slot {
    state: State::Free,
    latch: 0,
    dsm: 0,
    len: 0,
    role: 0,
    generation: 0,
    partition: -1,
    offset: -1,
    error_len: 0,
    error: [0; ERROR_LEN],
};

// SAFETY: "pg_kafka_immediate" names no other shared memory object of this library, and its
// pg_kafka_ prefix keeps it apart from other extensions' names.
static TABLE: PgLwLock<[Slot; SLOTS]> = unsafe { PgLwLock::new(c"pg_kafka_immediate") };

pub fn init_shmem() {
    pg_shmem_init!(TABLE = [FREE_SLOT; SLOTS]);
}

/// Why an immediate send did not return an offset.
pub enum Failure {
    NoSlot,
    RoleBusy,
    Kafka(String),
    TimedOut,
}

// ---- backend side -------------------------------------------------------------------------

/// Sends `msg` through the worker and waits up to `timeout` for Kafka's answer.
pub fn send(msg: &Message, timeout: Duration) -> Result<(i32, i64), Failure> {
    let bytes = encode(msg);
    // SAFETY: in a backend inside a transaction (an SQL function): flags 0 make a failure raise
    // instead of returning NULL; the segment is tied to the current resource owner and detached
    // below on every path that returns (and by the resource owner if an error unwinds).
    let seg = unsafe { pg_sys::dsm_create(bytes.len(), 0) };
    // SAFETY: the segment was just created with `bytes.len()` bytes mapped, and no other process
    // knows its handle yet.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), pg_sys::dsm_segment_address(seg).cast(), bytes.len());
    }
    // SAFETY: plain read of the session's current user id, always valid in a backend.
    let role = unsafe { pg_sys::GetUserId() }.to_u32();
    let claimed = {
        let mut table = TABLE.exclusive();
        if table.iter().filter(|s| s.state != State::Free && s.role == role).count() >= SLOTS_PER_ROLE {
            drop(table);
            // SAFETY: `seg` is the segment created above, not used after this.
            unsafe { pg_sys::dsm_detach(seg) };
            return Err(Failure::RoleBusy);
        }
        table.iter().position(|s| s.state == State::Free).map(|i| {
            let s = &mut table[i];
            s.generation += 1;
            *s = Slot {
                state: State::Ready,
                // SAFETY: plain read of the process-local MyLatch: in a backend, its PGPROC latch
                // in shared memory, which the worker may set.
                latch: unsafe { pg_sys::MyLatch } as usize,
                // SAFETY: `seg` is the live segment created above.
                dsm: unsafe { pg_sys::dsm_segment_handle(seg) },
                len: bytes.len(),
                role,
                generation: s.generation,
                ..FREE_SLOT
            };
            (i, s.generation)
        })
    };
    let Some((i, generation)) = claimed else {
        // SAFETY: `seg` is the segment created above; no slot names it, so nothing else will attach
        // to it.
        unsafe { pg_sys::dsm_detach(seg) };
        return Err(Failure::NoSlot);
    };
    shared::wake_worker();
    // Whatever ends the wait (answer, timeout, cancel), the slot must not stay ours.
    let result = PgTryBuilder::new(|| wait(i, timeout))
        .finally(|| {
            let mut table = TABLE.exclusive();
            let s = &mut table[i];
            if s.generation == generation {
                s.state = match s.state {
                    State::Taken => State::Abandoned,
                    _ => State::Free,
                };
            }
        })
        .execute();
    // SAFETY: `seg` is the segment created above. The slot is no longer ours (see `finally`); a
    // worker that still attaches by its handle gets NULL once it is gone, which read_segment
    // handles.
    unsafe { pg_sys::dsm_detach(seg) };
    result
}

fn wait(i: usize, timeout: Duration) -> Result<(i32, i64), Failure> {
    let deadline = Instant::now() + timeout;
    loop {
        {
            let table = TABLE.share();
            let s = &table[i];
            if s.state == State::Done {
                return if s.error_len == 0 {
                    Ok((s.partition, s.offset))
                } else {
                    Err(Failure::Kafka(String::from_utf8_lossy(&s.error[..s.error_len]).into_owned()))
                };
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::TimedOut);
        }
        // SAFETY: in a backend: MyLatch is this process's own latch; WL_EXIT_ON_PM_DEATH is set, as
        // WaitLatch requires of a backend, and interrupts are checked after each wake-up.
        unsafe {
            pg_sys::WaitLatch(
                pg_sys::MyLatch,
                (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                left.as_millis().max(1) as i64,
                pg_sys::PG_WAIT_EXTENSION,
            );
            pg_sys::ResetLatch(pg_sys::MyLatch);
        }
        pg_sys::check_for_interrupts!();
    }
}

// ---- worker side --------------------------------------------------------------------------

/// Whether a request waits to be taken.
pub fn requested() -> bool {
    TABLE.share().iter().any(|s| s.state == State::Ready)
}

/// Whether a taken request still waits for its delivery report.
pub fn in_flight() -> bool {
    TABLE.share().iter().any(|s| matches!(s.state, State::Taken | State::Abandoned))
}

/// Takes new requests and sends them, then hands out the answers that arrived. With no
/// producer (no broker, or it could not be made), requests are answered with `no_producer`.
pub fn serve(producer: Option<&Producer>, no_producer: &str) {
    let taken: Vec<(usize, u32, usize)> = {
        let mut table = TABLE.exclusive();
        table
            .iter_mut()
            .enumerate()
            .filter(|(_, s)| s.state == State::Ready)
            .map(|(i, s)| {
                s.state = State::Taken;
                (i, s.dsm, s.len)
            })
            .collect()
    };
    for (i, handle, len) in taken {
        let Some(producer) = producer else {
            finish(i, Err(no_producer.to_owned()));
            continue;
        };
        let Some(msg) = read_segment(handle, len) else {
            finish(i, Err("the request was abandoned".into()));
            continue;
        };
        let headers: Vec<(&str, Option<&[u8]>)> = msg
            .headers
            .iter()
            .flatten()
            .map(|(n, v)| (n.as_str(), v.as_deref().map(str::as_bytes)))
            .collect();
        let record = Record {
            topic: &msg.topic,
            key: msg.key.as_deref(),
            payload: msg.payload.as_deref(),
            headers,
            partition: msg.partition,
            timestamp_ms: msg.timestamp_ms,
        };
        if let Err(e) = producer.send_immediate(&record, i) {
            finish(i, Err(e));
        }
    }
    if let Some(producer) = producer {
        for (i, r) in producer.take_immediate(Duration::ZERO) {
            finish(i, r);
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
        decode(&bytes)
    }
}

fn finish(i: usize, result: Result<(i32, i64), String>) {
    let mut table = TABLE.exclusive();
    let s = &mut table[i];
    match s.state {
        State::Taken => {
            match result {
                Ok((p, o)) => (s.partition, s.offset, s.error_len) = (p, o, 0),
                Err(e) => {
                    let n = floor_char_boundary(&e, ERROR_LEN);
                    s.error[..n].copy_from_slice(&e.as_bytes()[..n]);
                    s.error_len = n.max(1);
                }
            }
            s.state = State::Done;
            // SAFETY: `s.latch` is the PGPROC latch of the backend that claimed this slot (set when
            // it was Ready, so never 0). PGPROC latches live in shared memory for the whole life of
            // the server, so even if that backend has gone, SetLatch only wakes whoever uses that
            // PGPROC now; it cannot fail.
            unsafe { pg_sys::SetLatch(s.latch as *mut pg_sys::Latch) };
        }
        State::Abandoned => s.state = State::Free,
        _ => {}
    }
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    let mut n = s.len().min(max);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    n
}

// ---- the record in the segment ------------------------------------------------------------

/// A record crosses the segment in the outbox's pack format (a pack of one).
fn encode(m: &Message) -> Vec<u8> {
    let mut pack = kafka_core::pack::Pack::new(0);
    pack.push(&m.parts());
    pack.bytes
}

fn decode(b: &[u8]) -> Option<Message> {
    let mut msgs = kafka_core::pack::unpack(0, b)?;
    (msgs.len() == 1).then(|| msgs.pop()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_the_segment() {
        let m = Message {
            topic: "t".into(),
            key: Some(vec![0, 1]),
            payload: None,
            headers: Some(vec![("a".into(), Some("x".into())), ("a".into(), None)]),
            partition: Some(3),
            timestamp_ms: Some(0),
            ..Default::default()
        };
        let back = decode(&encode(&m)).unwrap();
        assert_eq!(format!("{m:?}"), format!("{back:?}"));
        let bare = Message { topic: "u".into(), payload: Some(b"p".to_vec()), ..Default::default() };
        assert_eq!(format!("{bare:?}"), format!("{:?}", decode(&encode(&bare)).unwrap()));
        assert!(decode(&encode(&m)[..5]).is_none());
        assert!(decode(&[encode(&m), encode(&bare)].concat()).is_none(), "one record per segment");
    }
}
