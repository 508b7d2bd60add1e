//! WAL capture's position (`kafka.wal_position`): per slot, the end LSN of the last decoded
//! transaction whose events are in the outbox, written in the same transaction as those events;
//! and whether any table is still captured with method `wal`.
//!
//! What must stay true: the position moves only with the events it covers (one worker
//! transaction), so after any crash a transaction is staged again only if its events are not in
//! the outbox. Every operator is qualified (the worker runs these as a superuser).

use super::could_not;
use crate::error::KafkaError;
use pgrx::prelude::*;

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

/// Forgets the position of `slot` (its slot was dropped).
pub fn forget(slot: &str) -> Result<(), KafkaError> {
    Spi::run_with_args(
        "DELETE FROM kafka.wal_position WHERE slot_name OPERATOR(pg_catalog.=) $1",
        &[slot.into()],
    )
    .map_err(|e| could_not("forget the WAL capture position", e))
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
