//! Immediate sends (`kafka.autonomous_publish`), the backend's half: a record sent now, outside
//! the caller's transaction, with Kafka's answer (partition and offset, or the error) returned
//! to the caller.
//!
//! librdkafka still lives only in the worker. The backend encodes the record into a dynamic
//! shared memory segment, claims one of the slots ([`shared::slots`]), sets the worker's latch and
//! waits on its own latch; the worker (`worker::immediate`) sends the record and answers in the
//! slot. A backend that stops waiting (timeout, cancel) gives the slot up; the record may still
//! be delivered, as with any producer whose caller gave up waiting.

use crate::shared::{self, slots};
use kafka_core::message::Message;
use pgrx::prelude::*;
use std::time::{Duration, Instant};

/// Why an immediate send did not return an offset.
pub enum Failure {
    NoSlot,
    RoleBusy,
    Kafka(String),
    TimedOut,
}

/// Sends `msg` through the worker and waits up to `timeout` for Kafka's answer.
pub fn send(msg: &Message, timeout: Duration) -> Result<(i32, i64), Failure> {
    let bytes = slots::encode(msg);
    // SAFETY: in a backend inside a transaction (an SQL function): flags 0 make a failure raise
    // instead of returning NULL; the segment is tied to the current resource owner and detached
    // below on every path that returns (and by the resource owner if an error unwinds).
    let seg = unsafe { pg_sys::dsm_create(bytes.len(), 0) };
    // SAFETY: the segment was just created with `bytes.len()` bytes mapped, and no other process
    // knows its handle yet.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), pg_sys::dsm_segment_address(seg).cast(), bytes.len());
    }
    // A role's share is counted by the role that logged in: SET ROLE to another role (each with a
    // share of its own) does not give a session a second share.
    // SAFETY: plain reads of the session's authenticated user id, of the process-local MyLatch (in
    // a backend, its PGPROC latch in shared memory, which the worker may set) and of the handle of
    // the live segment created above.
    let (role, latch, handle) = unsafe {
        (pg_sys::GetAuthenticatedUserId().to_u32(), pg_sys::MyLatch, pg_sys::dsm_segment_handle(seg))
    };
    let claim = match slots::claim(role, latch, handle, bytes.len()) {
        Ok(c) => c,
        Err(busy) => {
            // SAFETY: `seg` is the segment created above; no slot names it, so nothing else will
            // attach to it.
            unsafe { pg_sys::dsm_detach(seg) };
            return Err(match busy {
                slots::Busy::All => Failure::NoSlot,
                slots::Busy::Role => Failure::RoleBusy,
            });
        }
    };
    shared::wake_worker();
    // Whatever ends the wait (answer, timeout, cancel), the slot must not stay ours.
    let result = PgTryBuilder::new(|| wait(claim, timeout)).finally(|| slots::release(claim)).execute();
    // SAFETY: `seg` is the segment created above. The slot is no longer ours (see `finally`); a
    // worker that still attaches by its handle gets NULL once it is gone, which it handles.
    unsafe { pg_sys::dsm_detach(seg) };
    result
}

fn wait(claim: slots::Claim, timeout: Duration) -> Result<(i32, i64), Failure> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(answer) = slots::answer(claim) {
            return answer.map_err(Failure::Kafka);
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
