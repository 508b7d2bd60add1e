//! The immediate-send slots (`kafka.autonomous_publish`) in shared memory: the table both halves
//! use — a backend claims a slot and waits ([`backend::immediate`](crate::backend::immediate)), the worker of its
//! database takes the request, sends it and answers (`worker::immediate`) — and the format of the record that crosses in a
//! dynamic shared memory segment.
//!
//! A slot goes FREE → READY (claimed by a backend) → TAKEN (by the worker) → DONE (answered), or
//! ABANDONED when the backend stopped waiting first (the worker then frees it).

use kafka_core::message::Message;
use kafka_core::pack::{self, Pack};
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgLwLock};

use crate::gucs::{IMMEDIATE_SLOTS as SLOTS, IMMEDIATE_SLOTS_PER_ROLE as SLOTS_PER_ROLE};

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
    /// The database it was claimed in: only that database's worker takes it.
    database: u32,
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
    database: 0,
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

/// Why no slot was claimed.
pub enum Busy {
    /// Every slot is in use.
    All,
    /// The role holds its share.
    Role,
}

/// A claimed slot: its index and the generation that makes it ours.
#[derive(Clone, Copy)]
pub struct Claim {
    pub index: usize,
    generation: u64,
}

// ---- the backend's side -------------------------------------------------------------------

/// Claims a slot for a record of `len` bytes in segment `dsm`, answered by setting `latch`.
pub fn claim(role: u32, latch: *mut pg_sys::Latch, dsm: u32, len: usize) -> Result<Claim, Busy> {
    let mut table = TABLE.exclusive();
    if table.iter().filter(|s| s.state != State::Free && s.role == role).count() >= SLOTS_PER_ROLE {
        return Err(Busy::Role);
    }
    let i = table.iter().position(|s| s.state == State::Free).ok_or(Busy::All)?;
    let s = &mut table[i];
    let generation = s.generation + 1;
    let database = here();
    *s = Slot {
        state: State::Ready,
        latch: latch as usize,
        dsm,
        len,
        role,
        database,
        generation,
        ..FREE_SLOT
    };
    Ok(Claim { index: i, generation })
}

/// The answer, once the worker gave it: where Kafka stored the record, or why not.
pub fn answer(c: Claim) -> Option<Result<(i32, i64), String>> {
    let table = TABLE.share();
    let s = &table[c.index];
    (s.generation == c.generation && s.state == State::Done).then(|| {
        if s.error_len == 0 {
            Ok((s.partition, s.offset))
        } else {
            Err(String::from_utf8_lossy(&s.error[..s.error_len]).into_owned())
        }
    })
}

/// Gives the slot up, answered or not (a request the worker holds is left to it to free).
pub fn release(c: Claim) {
    let mut table = TABLE.exclusive();
    let s = &mut table[c.index];
    if s.generation == c.generation {
        s.state = match s.state {
            State::Taken => State::Abandoned,
            _ => State::Free,
        };
    }
}

// ---- the worker's side --------------------------------------------------------------------

/// The oid of this process's database.
fn here() -> u32 {
    // SAFETY: plain read of the process-local id of the database this process connected to.
    unsafe { pg_sys::MyDatabaseId }.to_u32()
}

/// Whether a request of this worker's database waits to be taken.
pub fn requested() -> bool {
    TABLE.share().iter().any(|s| s.state == State::Ready && s.database == here())
}

/// Whether a request this worker took still waits for its delivery report.
pub fn in_flight() -> bool {
    TABLE.share().iter().any(|s| matches!(s.state, State::Taken | State::Abandoned) && s.database == here())
}

/// Takes this worker's database's waiting requests: (slot, segment handle, record length) of each.
pub fn take_ready() -> Vec<(usize, u32, usize)> {
    let mut table = TABLE.exclusive();
    table
        .iter_mut()
        .enumerate()
        .filter(|(_, s)| s.state == State::Ready && s.database == here())
        .map(|(i, s)| {
            s.state = State::Taken;
            (i, s.dsm, s.len)
        })
        .collect()
}

/// Answers the request in slot `i` and wakes its backend (or frees the slot if it gave up).
pub fn finish(i: usize, result: Result<(i32, i64), String>) {
    let mut table = TABLE.exclusive();
    let s = &mut table[i];
    match s.state {
        State::Taken => {
            match result {
                Ok((p, o)) => (s.partition, s.offset, s.error_len) = (p, o, 0),
                Err(e) => {
                    let n = e.floor_char_boundary(ERROR_LEN);
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

// ---- the record in the segment ------------------------------------------------------------

/// A record crosses the segment in the outbox's pack format (a pack of one).
pub fn encode(m: &Message) -> Vec<u8> {
    let mut pack = Pack::new(0);
    pack.push(&m.parts());
    pack.bytes
}

pub fn decode(b: &[u8]) -> Option<Message> {
    let mut msgs = pack::unpack(0, b)?;
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
