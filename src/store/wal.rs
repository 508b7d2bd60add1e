//! WAL capture's position (`kafka.wal_position`): per slot, the end LSN of the last decoded
//! transaction whose events are in the outbox, written in the same transaction as those events;
//! and whether any table is still captured with method `wal`.
//!
//! What must stay true: the position moves only with the events it covers (one worker
//! transaction), so after any crash a transaction is staged again only if its events are not in
//! the outbox. Every operator is qualified (the worker runs these as a superuser).

use super::could_not;
use crate::error::KafkaError;
use pgrx::pg_sys;
use pgrx::prelude::*;

/// The name of pg_kafka's logical replication slot in this database.
pub fn slot_name() -> String {
    // SAFETY: plain read of the connected database's id.
    format!("pg_kafka_{}", unsafe { pg_sys::MyDatabaseId }.to_u32())
}

/// The position of `slot`: (end LSN of the last staged transaction, end LSN of the last one
/// with captured events, for Debezium's `sequence`); zeros before the first.
pub fn position(slot: &str) -> Result<(u64, u64), KafkaError> {
    // A read-only client: no transaction id is taken for it (a pass that stages nothing must
    // write no WAL, or decoding would never catch up).
    Spi::connect(|c| {
        let rows = c.select(
            "SELECT staged_end, last_commit_end FROM kafka.wal_position WHERE slot_name OPERATOR(pg_catalog.=) $1",
            Some(1),
            &[slot.into()],
        )?;
        match rows.into_iter().next() {
            Some(row) => Ok((row.get::<i64>(1)?.unwrap_or(0) as u64, row.get::<i64>(2)?.unwrap_or(0) as u64)),
            None => Ok((0, 0)),
        }
    })
    .map_err(|e| could_not("read the WAL capture position", e))
}

/// Records the position of `slot`, in the transaction that staged the events it covers.
pub fn set_position(slot: &str, staged_end: u64, last_commit_end: u64) -> Result<(), KafkaError> {
    Spi::run_with_args(
        "INSERT INTO kafka.wal_position AS p (slot_name, staged_end, last_commit_end, updated_at)
         VALUES ($1, $2, $3, pg_catalog.now())
         ON CONFLICT (slot_name) DO UPDATE
            SET staged_end = excluded.staged_end, last_commit_end = excluded.last_commit_end,
                updated_at = excluded.updated_at",
        &[slot.into(), (staged_end as i64).into(), (last_commit_end as i64).into()],
    )
    .map_err(|e| could_not("record the WAL capture position", e))
}

/// Notes that `slot` was found missing under a wal capture and made again (shown by
/// `kafka.status.wal_slot_lost_at` until the wal-captured tables are backfilled).
pub fn note_lost(slot: &str) -> Result<(), KafkaError> {
    Spi::run_with_args(
        "INSERT INTO kafka.wal_position AS p (slot_name, staged_end, last_commit_end, updated_at, slot_lost_at)
         VALUES ($1, 0, 0, pg_catalog.now(), pg_catalog.now())
         ON CONFLICT (slot_name) DO UPDATE SET slot_lost_at = excluded.slot_lost_at",
        &[slot.into()],
    )
    .map_err(|e| could_not("note the lost replication slot", e))
}

/// Whether a transaction that wrote has been running for a second or more (in any database,
/// prepared ones included): making a slot would wait for it to end.
pub fn long_writer_running() -> Result<bool, KafkaError> {
    Spi::connect(|c| {
        let found = c.select(
            "SELECT 1 FROM pg_catalog.pg_stat_activity
              WHERE backend_xid IS NOT NULL AND pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
                AND xact_start OPERATOR(pg_catalog.<) (pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) '1 s'::pg_catalog.interval)
             UNION ALL
             SELECT 1 FROM pg_catalog.pg_prepared_xacts
              WHERE prepared OPERATOR(pg_catalog.<) (pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) '1 s'::pg_catalog.interval)
             LIMIT 1",
            Some(1),
            &[],
        )?;
        Ok(!found.is_empty())
    })
    .map_err(|e| could_not("read pg_stat_activity", e))
}

/// Forgets the position of `slot` (its slot was dropped).
pub fn forget(slot: &str) -> Result<(), KafkaError> {
    Spi::run_with_args(
        "DELETE FROM kafka.wal_position WHERE slot_name OPERATOR(pg_catalog.=) $1",
        &[slot.into()],
    )
    .map_err(|e| could_not("forget the WAL capture position", e))
}

/// An advisory lock key of pg_kafka's ("pgkafkaw").
const CAPTURES_LOCK: i64 = 0x70676b61666b6177;

/// Held by a session making a wal capture until it commits (from before the slot is made), so
/// the worker does not drop a slot whose first capture is not committed yet. Takes no
/// transaction id.
pub fn lock_captures() -> Result<(), KafkaError> {
    Spi::connect(|c| {
        c.select("SELECT pg_catalog.pg_advisory_xact_lock($1)", None, &[CAPTURES_LOCK.into()]).map(drop)
    })
    .map_err(|e| could_not("lock WAL captures", e))
}

/// The worker: whether no wal capture is being made (the lock is then held to its commit).
pub fn try_lock_captures() -> Result<bool, KafkaError> {
    Spi::connect(|c| {
        c.select("SELECT pg_catalog.pg_try_advisory_xact_lock($1)", Some(1), &[CAPTURES_LOCK.into()])?
            .first()
            .get_one::<bool>()
    })
    .map(|b| b.unwrap_or(false))
    .map_err(|e| could_not("lock WAL captures", e))
}

/// [`any_wal_capture`] with a snapshot taken now (after [`try_lock_captures`]): a read-write
/// statement (it takes a transaction id: only on the way to dropping the slot).
pub fn any_wal_capture_now() -> Result<bool, KafkaError> {
    Spi::connect_mut(|c| {
        let found = c.update(
            "SELECT 1 FROM kafka.capture_config WHERE method OPERATOR(pg_catalog.=) 'wal' LIMIT 1",
            Some(1),
            &[],
        )?;
        Ok(!found.is_empty())
    })
    .map_err(|e| could_not("read kafka.capture_config", e))
}

/// Whether any table is captured with method `wal`.
pub fn any_wal_capture() -> Result<bool, KafkaError> {
    Spi::connect(|c| {
        let found = c.select(
            "SELECT 1 FROM kafka.capture_config WHERE method OPERATOR(pg_catalog.=) 'wal' LIMIT 1",
            Some(1),
            &[],
        )?;
        Ok(!found.is_empty())
    })
    .map_err(|e| could_not("read kafka.capture_config", e))
}
