//! `kafka.producer_statistics`: librdkafka's own statistics (`statistics.interval.ms`: brokers,
//! round-trip times, queue depths, per-partition counts...), the latest JSON document of each of
//! the worker's producers, written by the worker when librdkafka emits one.

use crate::error::KafkaError;
use pgrx::prelude::*;

/// Stores the latest statistics of producer `name` (`delivery`, or `immediate` in exactly-once
/// mode). Runs in the worker, inside a transaction.
pub fn save(name: &str, json: &[u8]) -> Result<(), KafkaError> {
    let json = String::from_utf8_lossy(json);
    Spi::run_with_args(
        "INSERT INTO kafka.producer_statistics AS s (producer, updated_at, stats)
         VALUES ($1, pg_catalog.now(), $2::pg_catalog.text::pg_catalog.jsonb)
         ON CONFLICT (producer) DO UPDATE SET updated_at = excluded.updated_at, stats = excluded.stats",
        &[name.into(), json.as_ref().into()],
    )
    .map_err(|e| KafkaError::Internal(format!("could not save librdkafka's statistics: {e}")))
}
