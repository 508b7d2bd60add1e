//! The outcomes of delivery, recorded by the worker: what Kafka acknowledged leaves the outbox,
//! what it refused for good moves to `kafka.dead_letter`, what must be retried stays and
//! remembers its first attempt ([`finish`], one transaction per chunk, so a message leaves the
//! outbox only once its fate is recorded); what Kafka turned out to hold already leaves too
//! ([`forget`], exactly-once reconciliation); a drained outbox starts its files over
//! ([`truncate_if_empty`]). A transaction with no pack left leaves the commit order
//! ([`forget_emptied`], also run by `set_aside`).
//!
//! What must stay true: a row is changed only as it was read (same transaction id, pack id and,
//! when split, message count), so a row `set_aside` changed meanwhile is left alone; every
//! operator is qualified (the worker runs these as a superuser in a database other roles may
//! own).

use super::could_not;
use crate::error::KafkaError;
use crate::store::dead_letter;
use crate::store::kept::{self, Access};
use crate::store::owner::installed;
use kafka_core::message::Message;
use kafka_core::pack::Pack;
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

/// An outbox row of which Kafka acknowledged (or refused) some messages but not all: only
/// `left`, the messages still to send (in order), stay.
pub struct Partly<'a> {
    pub row: i64,
    pub xid: i64,
    /// How many messages the row held when it was read.
    pub count: i32,
    pub left: Vec<&'a Message>,
}

/// Records the outcome of a chunk, by outbox row: rows whose messages were all acknowledged or
/// refused leave the outbox (refused messages move to `kafka.dead_letter` with Kafka's error),
/// rows with a message to retry stay and remember their first attempt; a transaction whose rows
/// are all gone leaves `kafka.outbox_commit`. A row only some of whose messages must be retried
/// (`partly`) keeps only those: what Kafka acknowledged is never sent again. It is split like
/// `set_aside` splits a pack: each run of messages left becomes a pack of the same transaction
/// whose id is its first message's id, so every message keeps its id and its place.
/// `refused` holds (message, error); `done` the finished rows; `retried` the rows that stay
/// whole; `csns` the transactions the chunk touched. Returns how many messages were
/// dead-lettered.
pub fn finish(
    done: &[(i64, i64)],
    refused: &[(&Message, String)],
    retried: &[(i64, i64)],
    partly: &[Partly<'_>],
    csns: &[i64],
) -> Result<i64, KafkaError> {
    let ids = |rows: &[(i64, i64)]| rows.iter().map(|r| r.0).collect::<Vec<_>>();
    let xids = |rows: &[(i64, i64)]| rows.iter().map(|r| r.1).collect::<Vec<_>>();
    Spi::connect_mut(|client| {
        if !installed() {
            return Ok(0);
        }
        let mut dead = 0;
        if !refused.is_empty() {
            let letters: Vec<(&Message, &str)> = refused.iter().map(|(m, e)| (*m, e.as_str())).collect();
            dead = dead_letter::record(client, &letters)
                .map_err(|e| could_not("move messages to kafka.dead_letter", e))?;
        }
        if !done.is_empty() {
            run_kept(
                client,
                "delete from kafka.outbox",
                "DELETE FROM kafka.outbox
                  WHERE xid OPERATOR(pg_catalog.=) ANY($2::pg_catalog.int8[]::pg_catalog.text[]::pg_catalog.xid8[])
                    AND id OPERATOR(pg_catalog.=) ANY($1::pg_catalog.int8[])",
                &[ids(done).into(), xids(done).into()],
            )?;
        }
        for p in partly {
            keep_only(client, p)?;
        }
        if !retried.is_empty() {
            client
                .update(
                    "UPDATE kafka.outbox SET first_attempt_at = pg_catalog.now()
                      WHERE xid OPERATOR(pg_catalog.=) ANY($2::pg_catalog.int8[]::pg_catalog.text[]::pg_catalog.xid8[])
                        AND id OPERATOR(pg_catalog.=) ANY($1::pg_catalog.int8[]) AND first_attempt_at IS NULL",
                    None,
                    &[ids(retried).into(), xids(retried).into()],
                )
                .map_err(|e| could_not("record a failed attempt", e))?;
        }
        if !csns.is_empty() {
            forget_emptied(client, Transactions::Csns(csns))
                .map_err(|e| could_not("forget delivered transactions", e))?;
        }
        Ok(dead)
    })
}

/// Rewrites row `p.row` to hold only `p.left`, as packs of its runs of consecutive ids (see
/// [`finish`]); they remember their first attempt. Only if the row still holds the
/// `p.count` messages it was read with: rows `set_aside` split meanwhile are left alone.
fn keep_only(client: &mut SpiClient, p: &Partly<'_>) -> Result<(), KafkaError> {
    let failed = |e| could_not("keep the messages to send again", e);
    let mut runs: Vec<Pack> = Vec::new();
    for m in &p.left {
        match runs.last_mut() {
            Some(run) if run.id + i64::from(run.count) == m.id => {
                run.push(&m.parts());
            }
            _ => {
                let mut run = Pack::new(m.id);
                run.push(&m.parts());
                runs.push(run);
            }
        }
    }
    // The runs after the first message (new rows), copied from the row before it changes...
    for run in runs.iter().filter(|r| r.id != p.row) {
        client
            .update(
                "INSERT INTO kafka.outbox (id, xid, messages, topics, payload, produced_at, first_attempt_at)
                 SELECT $1, o.xid, $2, $3, $4, o.produced_at, coalesce(o.first_attempt_at, pg_catalog.now())
                   FROM kafka.outbox o
                  WHERE o.xid OPERATOR(pg_catalog.=) $6::pg_catalog.text::pg_catalog.xid8
                    AND o.id OPERATOR(pg_catalog.=) $5 AND o.messages OPERATOR(pg_catalog.=) $7",
                None,
                &[
                    run.id.into(),
                    run.count.into(),
                    run.topics.clone().into(),
                    run.bytes.clone().into(),
                    p.row.into(),
                    p.xid.into(),
                    p.count.into(),
                ],
            )
            .map_err(failed)?;
    }
    // ...then the row itself: now its first run (same id), or gone.
    match runs.first().filter(|r| r.id == p.row) {
        Some(first) => client.update(
            "UPDATE kafka.outbox SET messages = $3, topics = $4, payload = $5, commit_marks = NULL,
                    first_attempt_at = coalesce(first_attempt_at, pg_catalog.now())
              WHERE xid OPERATOR(pg_catalog.=) $2::pg_catalog.text::pg_catalog.xid8
                AND id OPERATOR(pg_catalog.=) $1 AND messages OPERATOR(pg_catalog.=) $6",
            None,
            &[
                p.row.into(),
                p.xid.into(),
                first.count.into(),
                first.topics.clone().into(),
                first.bytes.clone().into(),
                p.count.into(),
            ],
        ),
        None => client.update(
            "DELETE FROM kafka.outbox
              WHERE xid OPERATOR(pg_catalog.=) $2::pg_catalog.text::pg_catalog.xid8
                AND id OPERATOR(pg_catalog.=) $1 AND messages OPERATOR(pg_catalog.=) $3",
            None,
            &[p.row.into(), p.xid.into(), p.count.into()],
        ),
    }
    .map_err(failed)?;
    Ok(())
}

/// Runs one of the statements of every pass, kept prepared (`kept`); returns how many rows it
/// changed.
fn run_kept(
    client: &mut SpiClient,
    what: &str,
    sql: &'static str,
    args: &[DatumWithOid],
) -> Result<i64, KafkaError> {
    let statement = kept::statement(client, sql, args, Access::Write).map_err(|e| could_not(what, e))?;
    client.update(statement, None, args).map(|t| t.len() as i64).map_err(|e| could_not(what, e))
}

/// Deletes outbox rows (transaction id, pack id) that Kafka already holds, and the commit
/// entries left with no row (exactly-once reconciliation, see `position`). Returns how many rows
/// it deleted: 0 when PostgreSQL had recorded the delivery already.
pub fn forget(rows: &[(i64, i64)]) -> Result<i64, KafkaError> {
    let failed = |e| could_not("remove delivered rows", e);
    let xids: Vec<i64> = rows.iter().map(|r| r.0).collect();
    let ids: Vec<i64> = rows.iter().map(|r| r.1).collect();
    Spi::connect_mut(|client| {
        let deleted = client
            .update(
                "DELETE FROM kafka.outbox o
                  USING ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[]), pg_catalog.unnest($2::pg_catalog.int8[])) AS r(xid, id)
                  WHERE o.xid OPERATOR(pg_catalog.=) r.xid::pg_catalog.text::pg_catalog.xid8
                    AND o.id OPERATOR(pg_catalog.=) r.id",
                None,
                &[xids.clone().into(), ids.into()],
            )
            .map_err(failed)?
            .len() as i64;
        forget_emptied(client, Transactions::Xids(&xids)).map_err(failed)?;
        Ok(deleted)
    })
}

/// Empties `kafka.outbox` and `kafka.outbox_commit` with TRUNCATE (their files start over, as
/// PgQ's rotated tables do, instead of waiting for vacuum) when both hold no row and no session
/// is writing to them: their locks are only tried, never waited for, so no producer waits on
/// the worker and no open or prepared transaction's rows can be lost. Only when the outbox takes
/// `from_bytes` or more. Returns whether it did.
pub fn truncate_if_empty(from_bytes: i64) -> Result<bool, KafkaError> {
    let failed = |e| could_not("empty the outbox", e);
    let size =
        Spi::get_one::<i64>("SELECT pg_catalog.pg_total_relation_size('kafka.outbox'::pg_catalog.regclass)")
            .map_err(failed)?
            .unwrap_or(0);
    if size < from_bytes {
        return Ok(false);
    }
    // SAFETY: catalog cache lookup inside the worker's transaction; missing_ok gives InvalidOid.
    let nsp = unsafe { pg_sys::get_namespace_oid(c"kafka".as_ptr(), true) };
    for name in [c"outbox", c"outbox_commit"] {
        // SAFETY: catalog cache lookup inside the worker's transaction, with a NUL-terminated
        // literal name.
        let rel = unsafe { pg_sys::get_relname_relid(name.as_ptr(), nsp) };
        let lock = pg_sys::AccessExclusiveLock as pg_sys::LOCKMODE;
        // SAFETY: inside the worker's transaction: the lock is only tried, never waited for, and is
        // released when that transaction ends.
        if rel == pg_sys::InvalidOid || !unsafe { pg_sys::ConditionalLockRelationOid(rel, lock) } {
            return Ok(false);
        }
    }
    // Locked: a new snapshot sees every row that will ever be in them until the locks go.
    let empty = Spi::get_one::<bool>(
        "SELECT NOT EXISTS (SELECT FROM kafka.outbox) AND NOT EXISTS (SELECT FROM kafka.outbox_commit)",
    )
    .map_err(failed)?
    .unwrap_or(false);
    if empty {
        Spi::run("TRUNCATE kafka.outbox, kafka.outbox_commit").map_err(failed)?;
    }
    Ok(empty)
}

/// The transactions whose commit entries [`forget_emptied`] looks at: by commit number (the
/// worker's chunks know it, and `kafka.outbox_commit` is keyed by it) or by transaction id.
pub enum Transactions<'a> {
    Csns(&'a [i64]),
    Xids(&'a [i64]),
}

/// Deletes the commit entries of `which` transactions that have no row left in the outbox: a
/// transaction leaves the commit order once all its messages are delivered or set aside. The
/// worker's by commit number runs at every pass, kept prepared (`kept`). Returns how many it
/// deleted.
pub fn forget_emptied(client: &mut SpiClient<'_>, which: Transactions<'_>) -> Result<i64, pgrx::spi::Error> {
    /// The statement, on the entries `$1` selects.
    macro_rules! forget_emptied {
        ($which:literal) => {
            concat!(
                "DELETE FROM kafka.outbox_commit c WHERE ",
                $which,
                " AND NOT EXISTS (SELECT FROM kafka.outbox o WHERE o.xid OPERATOR(pg_catalog.=) c.xid)"
            )
        };
    }
    match which {
        Transactions::Csns(csns) => {
            let args = [csns.to_vec().into()];
            let sql = forget_emptied!("c.csn OPERATOR(pg_catalog.=) ANY($1::pg_catalog.int8[])");
            let statement = kept::statement(client, sql, &args, Access::Write)?;
            client.update(statement, None, &args)
        }
        Transactions::Xids(xids) => client.update(
            forget_emptied!(
                "c.xid OPERATOR(pg_catalog.=) ANY($1::pg_catalog.int8[]::pg_catalog.text[]::pg_catalog.xid8[])"
            ),
            None,
            &[xids.to_vec().into()],
        ),
    }
    .map(|t| t.len() as i64)
}
