//! One chunk of `kafka.backfill()`: the next rows of a captured table after the last key sent,
//! read **as the table's owner** and queued as snapshot (`op: "r"`) events as the caller.
//!
//! Reading a table in key order runs code its owner may define: a cast of the key to or from
//! text, a domain's CHECK, a comparison. A backfill is often called by someone with more rights
//! than the owner (a superuser, kafka_admin), so the read runs as PostgreSQL runs an owner's code
//! in VACUUM or REFRESH MATERIALIZED VIEW: as the owner, security-restricted, with a pinned
//! search_path ([`rights::as_role`]). What was read is encoded with the types' output functions
//! and queued with the caller's rights (`backfill_events`, which checks them again).

use super::{backfill_events, relation_name};
use crate::error::{KafkaError, SqlResult};
use crate::store::rights;
use pgrx::pg_sys;
use pgrx::prelude::*;

/// Queues the next `chunk_size` rows of captured table `relid` after the recorded key and
/// records the progress; returns how many rows it queued (0: the backfill is done). The caller
/// needs what a backfill needs: SELECT and TRIGGER on the table.
#[pg_extern(volatile, parallel_unsafe, schema = "kafka_internal")]
fn backfill_chunk(relid: pg_sys::Oid, chunk_size: i32) -> SqlResult<i64> {
    chunk(relid, chunk_size)
}

fn chunk(relid: pg_sys::Oid, chunk_size: i32) -> SqlResult<i64> {
    let failed = |e: pgrx::spi::Error| KafkaError::Internal(format!("could not backfill: {e}"));
    // As the caller, with every name and operator qualified (the caller's search_path is live).
    let plan = Spi::connect(|c| {
        let row = c
            .select(
                "SELECT kafka_internal.backfill_query($1, $2), p.last_key, r.relowner,
                        pg_catalog.has_table_privilege($1, 'SELECT') AND pg_catalog.has_table_privilege($1, 'TRIGGER')
                   FROM kafka.backfill_progress p, pg_catalog.pg_class r
                  WHERE p.relid OPERATOR(pg_catalog.=) $1 AND r.oid OPERATOR(pg_catalog.=) $1",
                Some(1),
                &[relid.into(), chunk_size.into()],
            )?
            .first();
        if row.is_empty() {
            return Ok(None);
        }
        Ok(Some((
            row.get::<String>(1)?.unwrap_or_default(),
            row.get::<Vec<Option<String>>>(2)?,
            row.get::<pg_sys::Oid>(3)?.unwrap_or_default(),
            row.get::<bool>(4)?.unwrap_or(false),
        )))
    })
    .map_err(failed)?;
    let Some((query, after, owner, may)) = plan else {
        return Err(KafkaError::NotCaptured(relation_name(relid)).into());
    };
    if !may {
        return Err(KafkaError::CaptureDenied(relation_name(relid)).into());
    }
    // SAFETY: plain read of the current memory context: the rows read below are copied there, so
    // that they outlive the SPI connection they are read in.
    let outer = unsafe { pg_sys::CurrentMemoryContext };
    let read = rights::as_role(owner, true, || {
        // Read-write: for a wal-captured table the read locks the chunk's rows (FOR SHARE).
        Spi::connect_mut(|c| {
            let t = c.update(&query, Some(1), &[after.into()])?.first();
            let rows = t.get_datum_by_ordinal(1)?;
            let last = t.get::<Vec<Option<String>>>(2)?;
            // SAFETY: `rows` is the non-null varlena array Datum of column 1 (the query's ARRAY()
            // is never NULL), valid until the connection ends; pg_detoast_datum_copy copies it
            // whole (detoasted) into `outer`, the caller's context, which outlives this call.
            let copied = rows.map(|d| unsafe {
                pgrx::PgMemoryContexts::For(outer)
                    .switch_to(|_| pg_sys::Datum::from(pg_sys::pg_detoast_datum_copy(d.cast_mut_ptr())))
            });
            Ok::<_, pgrx::spi::Error>((copied, last))
        })
    })
    .map_err(failed)?;
    let (Some(rows), last) = read else {
        return Err(KafkaError::Internal("a backfill read returned no rows array".into()).into());
    };
    // SAFETY: `rows` is an array Datum (copied above); backfill_events reads its element type from
    // the array itself and checks it is the table's row type.
    let rows = unsafe { pgrx::AnyArray::from_polymorphic_datum(rows, false, pg_sys::ANYARRAYOID) }
        .ok_or_else(|| KafkaError::Internal("a backfill read returned NULL".into()))?;
    let n = backfill_events(relid, rows)?;
    if n > 0 {
        Spi::run_with_args(
            "UPDATE kafka.backfill_progress p
                SET last_key = $2, rows_done = p.rows_done OPERATOR(pg_catalog.+) $3, updated_at = pg_catalog.now()
              WHERE p.relid OPERATOR(pg_catalog.=) $1",
            &[relid.into(), last.into(), n.into()],
        )
        .map_err(failed)?;
    }
    Ok(n)
}
