//! What the worker reads: the committed transactions of the outbox in commit order, a [`Round`]
//! at a time ([`read_chunk`]), and what it connects with, `kafka.broker`
//! ([`bootstrap_servers`]) and `kafka.config` ([`producer_settings`]); also whether
//! `kafka.config` holds a credential ([`secret_stored`], asked by a backend's trigger on
//! `kafka.broker`), and how many messages wait ([`backlog`]). Reads only.
//!
//! What must stay true: a round is fixed by its snapshots, and read in commit order (`csn`), each
//! transaction's packs in id order, so nothing that committed is skipped or sent out of order;
//! every operator is qualified (the worker runs these as a superuser in a database other roles
//! may own).

use super::could_not;
use crate::error::KafkaError;
use crate::store::kept::{self, Access};
use kafka_core::message::Message;
use pgrx::prelude::*;

/// Where the worker is in the log of commits.
///
/// A *round* is the set of transactions that committed after snapshot `after` (all of them when
/// it is None) and before snapshot `upto`: fixed once `upto` is taken, however long it takes to
/// read and whatever commits meanwhile. A round is read in commit order (`csn`), each
/// transaction's packs in id order, in chunks that resume after `pos`. A transaction that
/// commits late (with a smaller `csn` than one already sent) falls in the next round: it was not
/// ordered before anything already sent, or it would have been visible first.
#[derive(Debug, Clone)]
pub struct Round {
    pub after: Option<String>,
    pub upto: String,
    pub pos: (i64, i64),
}

impl Round {
    /// A new round: what committed after `after` and before now.
    pub fn start(after: Option<String>) -> Result<Round, KafkaError> {
        let failed = |e| could_not("take a snapshot", e);
        let upto = Spi::connect(|client| {
            let sql = "SELECT pg_catalog.pg_current_snapshot()::pg_catalog.text";
            let statement = kept::statement(client, sql, &[], Access::Read).map_err(failed)?;
            client.select(statement, Some(1), &[]).map_err(failed)?.first().get::<String>(1).map_err(failed)
        })?
        .ok_or_else(|| KafkaError::Internal("pg_current_snapshot() returned NULL".into()))?;
        Ok(Round { after, upto, pos: (i64::MIN, i64::MIN) })
    }
}

/// The next chunk of `round`, in commit order: whole packs, about `limit` messages and
/// `max_bytes` bytes (the first pack always comes, whatever its size). Advances `round.pos`.
pub fn read_chunk(round: &mut Round, limit: usize, max_bytes: i64) -> Result<Vec<Message>, KafkaError> {
    const FETCH: i64 = 64;
    let failed = |e| could_not("read kafka.outbox", e);
    // The worker's planner settings keep this on the indexes (see [`crate::worker::process::SESSION`]).
    Spi::connect(|client| {
        const READ: &str = "SELECT c.csn, o.id, o.payload, o.xid::pg_catalog.text::pg_catalog.int8, o.commit_marks
               FROM kafka.outbox_commit c JOIN kafka.outbox o ON o.xid OPERATOR(pg_catalog.=) c.xid
              WHERE c.csn OPERATOR(pg_catalog.>=) $1
                AND (c.csn OPERATOR(pg_catalog.>) $1 OR o.id OPERATOR(pg_catalog.>) $2)
                AND pg_catalog.pg_visible_in_snapshot(c.xid, $3::pg_catalog.text::pg_catalog.pg_snapshot)
                AND ($4::pg_catalog.text IS NULL
                     OR NOT pg_catalog.pg_visible_in_snapshot(c.xid, $4::pg_catalog.text::pg_catalog.pg_snapshot))
              ORDER BY c.csn, o.id";
        let args = [
            round.pos.0.into(),
            round.pos.1.into(),
            round.upto.as_str().into(),
            round.after.as_deref().into(),
        ];
        let statement = kept::statement(client, READ, &args, Access::Read).map_err(failed)?;
        let mut cursor = client.open_cursor(statement, &args);
        let (mut batch, mut bytes) = (Vec::new(), 0_i64);
        loop {
            let rows = cursor.fetch(FETCH).map_err(failed)?;
            if rows.is_empty() {
                return Ok(batch);
            }
            for row in rows {
                if !batch.is_empty() && (batch.len() >= limit || bytes >= max_bytes) {
                    return Ok(batch);
                }
                let csn: i64 = row.get(1).map_err(failed)?.unwrap_or_default();
                let id: i64 = row.get(2).map_err(failed)?.unwrap_or_default();
                let payload: Vec<u8> = row.get(3).map_err(failed)?.unwrap_or_default();
                let xid: i64 = row.get(4).map_err(failed)?.unwrap_or_default();
                bytes += payload.len() as i64;
                let msgs = super::unpack_row(id, &payload, row.get(5).map_err(failed)?)?;
                batch.extend(msgs.into_iter().map(|m| Message { csn, xid, ..m }));
                round.pos = (csn, id);
            }
        }
    })
}

/// The brokers as a librdkafka `bootstrap.servers` list, in a stable order. Every operator is
/// qualified: the worker runs this as a superuser in a database other roles may own.
pub fn bootstrap_servers() -> Result<String, KafkaError> {
    // A read-only client: pgrx's `Spi::get_one` takes a transaction id, and the worker reads
    // this every second (an empty commit in the WAL each time, and xids burnt).
    Spi::connect(|c| {
        c.select(
            "SELECT pg_catalog.string_agg(pg_catalog.concat(b.host, ':', b.port), ',' ORDER BY b.host, b.port)
               FROM kafka.broker b",
            Some(1),
            &[],
        )?
        .first()
        .get_one::<String>()
    })
    .map(Option::unwrap_or_default)
    .map_err(|e| KafkaError::Internal(format!("could not read kafka.broker: {e}")))
}

/// How many messages wait in the outbox (committed or not: the sum of its packs' counts), for
/// `kafka.databases`.
pub fn backlog() -> Result<i64, KafkaError> {
    Spi::connect(|c| {
        c.select("SELECT pg_catalog.sum(o.messages)::pg_catalog.int8 FROM kafka.outbox o", Some(1), &[])?
            .first()
            .get_one::<i64>()
    })
    .map(Option::unwrap_or_default)
    .map_err(|e| could_not("count the messages of kafka.outbox", e))
}

/// The rows of `kafka.config`, in name order.
pub fn producer_settings() -> Result<Vec<(String, String)>, KafkaError> {
    Spi::connect(|client| {
        let rows = client
            .select(
                "SELECT c.name, c.value FROM kafka.config c ORDER BY c.name COLLATE pg_catalog.\"C\"",
                None,
                &[],
            )
            .map_err(|e| KafkaError::Internal(format!("could not read kafka.config: {e}")))?;
        Ok(rows.filter_map(|r| Some((r.get::<String>(1).ok()??, r.get::<String>(2).ok()??))).collect())
    })
}

/// Whether `kafka.config` holds a credential ([`settings::holds_credential`](crate::settings::holds_credential); only names are read).
pub fn secret_stored() -> Result<bool, KafkaError> {
    let names = Spi::connect(|client| -> Result<Vec<String>, pgrx::spi::Error> {
        let rows = client.select("SELECT c.name FROM kafka.config c", None, &[])?;
        rows.map(|r| Ok(r.get::<String>(1)?.unwrap_or_default())).collect()
    })
    .map_err(|e| KafkaError::Internal(format!("could not read kafka.config: {e}")))?;
    Ok(names.iter().any(|n| crate::settings::holds_credential(n)))
}
