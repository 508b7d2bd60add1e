//! `kafka.dead_letter_waiting()`: an administrator moves given waiting messages out of the
//! queue into `kafka.dead_letter` (for a message that holds back the ones behind it and that
//! nobody wants delivered any more); the worker does the same with messages Kafka refused in
//! exactly-once mode. A message waits inside a pack ([`kafka_core::pack`]) whose ids are positional
//! (message `i` of pack `id` is `id + i`): the pack is split around the messages taken out, each
//! remaining run becoming a pack of the same transaction whose id is its first message's id, so
//! every message keeps its id and its place in the order.
//!
//! What must stay true: it runs as the tables' owner ([`owner::as_owner`](crate::store::owner::as_owner)), in the caller's
//! transaction, with the rows it splits locked; it fails closed: a row it cannot read or a pack
//! it cannot unpack raises, and the transaction's abort undoes whatever it had moved.

use super::could_not;
use crate::error::KafkaError;
use crate::store::dead_letter;
use crate::store::outcome::{forget_emptied, Transactions};
use crate::store::owner::{as_owner, store};
use kafka_core::message::Message;
use kafka_core::pack::Pack;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

/// Moves the waiting messages with the given ids to `kafka.dead_letter` with `error` (as the
/// outbox's owner); returns how many it moved (ids that are not waiting are skipped). A row it
/// cannot read or a pack it cannot unpack is an error: the caller's transaction is then aborted,
/// and nothing is half-moved.
pub fn move_out(ids: &[i64], error: &str) -> Result<i64, KafkaError> {
    as_owner(store()?, || Spi::connect_mut(|client| move_rows(client, ids, error)))
}

fn move_rows(client: &mut SpiClient<'_>, ids: &[i64], error: &str) -> Result<i64, KafkaError> {
    let failed = |e| could_not("move waiting messages to kafka.dead_letter", e);
    // Locked: the worker's recording of a delivery waits until this commits.
    let rows = client
        .update(
            "SELECT o.id, o.xid::pg_catalog.text::pg_catalog.int8, o.payload, o.commit_marks FROM kafka.outbox o
              WHERE EXISTS (SELECT FROM pg_catalog.unnest($1::pg_catalog.int8[]) i
                             WHERE i OPERATOR(pg_catalog.>=) o.id
                               AND i OPERATOR(pg_catalog.<) (o.id OPERATOR(pg_catalog.+) o.messages))
              FOR UPDATE",
            None,
            &[ids.to_vec().into()],
        )
        .map_err(failed)?;
    /// An outbox row: id, transaction, payload, commit marks.
    type Row = (i64, i64, Vec<u8>, Option<Vec<i64>>);
    let mut packs: Vec<Row> = Vec::new();
    for r in rows {
        let (row, xid, payload) = (r.get::<i64>(1), r.get::<i64>(2), r.get::<Vec<u8>>(3));
        let commit_marks = r.get::<Vec<i64>>(4).map_err(failed)?;
        match (row.map_err(failed)?, xid.map_err(failed)?, payload.map_err(failed)?) {
            (Some(row), Some(xid), Some(payload)) => packs.push((row, xid, payload, commit_marks)),
            _ => return Err(KafkaError::Internal("an outbox row has a NULL id, xid or payload".into())),
        }
    }
    let xids: Vec<i64> = packs.iter().map(|p| p.1).collect();
    let mut moved = 0;
    for (row, xid, payload, commit_marks) in packs {
        // Filled: the packs written back hold no marks.
        let messages = super::unpack_row(row, &payload, commit_marks)?;
        let (out, runs) = split(messages.into_iter().map(|m| Message { xid, ..m }).collect(), ids);
        let letters: Vec<(&Message, &str)> = out.iter().map(|m| (m, error)).collect();
        dead_letter::record(client, &letters).map_err(failed)?;
        moved += out.len() as i64;
        for run in &runs {
            let mut p = Pack::new(run[0].id);
            for m in run {
                p.push(&m.parts());
            }
            client
                .update(
                    "INSERT INTO kafka.outbox (id, xid, messages, topics, payload, produced_at, first_attempt_at)
                     SELECT $1, o.xid, $2, $6, $3, o.produced_at, o.first_attempt_at FROM kafka.outbox o
                      WHERE o.id OPERATOR(pg_catalog.=) $4
                        AND o.xid OPERATOR(pg_catalog.=) $5::pg_catalog.text::pg_catalog.xid8
                        AND $1 OPERATOR(pg_catalog.<>) $4",
                    None,
                    &[
                        p.id.into(),
                        p.count.into(),
                        p.bytes.clone().into(),
                        row.into(),
                        xid.into(),
                        p.topics.clone().into(),
                    ],
                )
                .map_err(failed)?;
        }
        // The pack itself: gone, or now its first run (same id).
        match runs.first().filter(|r| r[0].id == row) {
            Some(first) => {
                let mut p = Pack::new(row);
                for m in first {
                    p.push(&m.parts());
                }
                client.update(
                    "UPDATE kafka.outbox SET messages = $3, payload = $4, topics = $5, commit_marks = NULL
                      WHERE id OPERATOR(pg_catalog.=) $1 AND xid OPERATOR(pg_catalog.=) $2::pg_catalog.text::pg_catalog.xid8",
                    None,
                    &[row.into(), xid.into(), p.count.into(), p.bytes.clone().into(), p.topics.clone().into()],
                )
            }
            None => client.update(
                "DELETE FROM kafka.outbox
                  WHERE id OPERATOR(pg_catalog.=) $1 AND xid OPERATOR(pg_catalog.=) $2::pg_catalog.text::pg_catalog.xid8",
                None,
                &[row.into(), xid.into()],
            ),
        }
        .map_err(failed)?;
    }
    // A transaction left with no message waiting leaves the commit order too.
    forget_emptied(client, Transactions::Xids(&xids)).map_err(failed)?;
    Ok(moved)
}

/// Moves messages that Kafka refused for good out of the queue, each with Kafka's error, in the
/// worker (exactly-once mode: the Kafka transaction that carried them was aborted, and the
/// others are sent again without them). Returns how many it moved.
pub fn refused_by_kafka(messages: &[(i64, String)]) -> Result<i64, KafkaError> {
    messages.iter().try_fold(0, |moved, (id, error)| move_out(&[*id], error).map(|n| moved + n))
}

/// The messages of a pack taken out (those with one of `ids`), and the runs of those that stay.
fn split(messages: Vec<Message>, ids: &[i64]) -> (Vec<Message>, Vec<Vec<Message>>) {
    let (mut out, mut runs) = (Vec::new(), vec![Vec::new()]);
    for m in messages {
        if ids.contains(&m.id) {
            out.push(m);
            runs.push(Vec::new());
        } else {
            runs.last_mut().expect("never empty").push(m);
        }
    }
    runs.retain(|r| !r.is_empty());
    (out, runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pack_splits_around_what_is_taken_out_and_ids_stay() {
        let messages = (100..106).map(|id| Message { id, ..Default::default() }).collect();
        let (out, runs) = split(messages, &[100, 103, 104]);
        assert_eq!(out.iter().map(|m| m.id).collect::<Vec<_>>(), [100, 103, 104]);
        let runs: Vec<Vec<i64>> = runs.iter().map(|r| r.iter().map(|m| m.id).collect()).collect();
        assert_eq!(runs, [vec![101, 102], vec![105]]);
    }
}
