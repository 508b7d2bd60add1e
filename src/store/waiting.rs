//! `kafka.waiting()`: the messages of committed transactions that wait in `kafka.outbox`, read
//! back out of their packs in the order the worker sends them (commit order, then id), for an
//! operator looking for the ids `kafka.dead_letter_waiting()` takes, and for tests that check
//! what a transaction queued without a broker.
//!
//! Runs with the caller's rights (SELECT on `kafka.outbox` and `kafka.outbox_commit` is needed:
//! kafka_admin has it); it reads, never changes, and never blocks the worker.

use crate::error::KafkaError;
use kafka_core::message::Message;
use pgrx::prelude::*;

/// A waiting message and its transaction's place in commit order.
pub struct Waiting {
    pub commit_order: i64,
    pub message: Message,
}

/// Up to `limit` waiting messages (of `topic` only, when given), in delivery order.
pub fn list(topic: Option<&str>, limit: i64) -> Result<Vec<Waiting>, KafkaError> {
    let failed = |e| super::could_not("read kafka.outbox", e);
    Spi::connect(|client| {
        // A pack lists its topics: packs without `topic` are not read.
        const READ: &str = "SELECT c.csn, o.id, o.payload, o.commit_marks
               FROM kafka.outbox_commit c JOIN kafka.outbox o ON o.xid OPERATOR(pg_catalog.=) c.xid
              WHERE $1::pg_catalog.text IS NULL OR $1 OPERATOR(pg_catalog.=) ANY (o.topics)
              ORDER BY c.csn, o.id";
        let mut found = Vec::new();
        if limit <= 0 {
            return Ok(found);
        }
        let mut cursor = client.open_cursor(READ, &[topic.into()]);
        loop {
            let rows = cursor.fetch(64).map_err(failed)?;
            if rows.is_empty() {
                return Ok(found);
            }
            for row in rows {
                let csn: i64 = row.get(1).map_err(failed)?.unwrap_or_default();
                let id: i64 = row.get(2).map_err(failed)?.unwrap_or_default();
                let payload: Vec<u8> = row.get(3).map_err(failed)?.unwrap_or_default();
                for message in super::unpack_row(id, &payload, row.get(4).map_err(failed)?)? {
                    if topic.is_some_and(|t| t != message.topic) {
                        continue;
                    }
                    found.push(Waiting { commit_order: csn, message });
                    if found.len() as i64 >= limit {
                        return Ok(found);
                    }
                }
            }
        }
    })
}
