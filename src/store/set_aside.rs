//! `kafka.dead_letter_waiting()`: an administrator moves given waiting messages out of the
//! queue into `kafka.dead_letter` (for a message that holds back the ones behind it and that
//! nobody wants delivered any more). A message waits inside a pack (core/src/pack.rs) whose ids are
//! positional (message `i` of pack `id` is `id + i`): the pack is split around the messages
//! taken out, each remaining run becoming a pack of the same transaction whose id is its first
//! message's id, so every message keeps its id and its place in the order.

use crate::error::KafkaError;
use crate::store::outbox;
use kafka_core::message::Message;
use kafka_core::pack::{self, Pack};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;

/// Moves the waiting messages with the given ids to `kafka.dead_letter` with `error` (as the
/// outbox's owner); returns how many it moved (ids that are not waiting are skipped).
pub fn move_out(ids: &[i64], error: &str) -> Result<i64, KafkaError> {
    outbox::as_owner(outbox::store()?, || move_rows(ids, error))
        .map_err(|e| KafkaError::Internal(format!("could not move waiting messages: {e}")))
}

fn move_rows(ids: &[i64], error: &str) -> Result<i64, pgrx::spi::Error> {
    Spi::connect_mut(|client| {
        // Locked: the worker's recording of a delivery waits until this commits.
        let rows = client.update(
            "SELECT o.id, o.xid::pg_catalog.text::pg_catalog.int8, o.payload FROM kafka.outbox o
              WHERE EXISTS (SELECT FROM pg_catalog.unnest($1::pg_catalog.int8[]) i
                             WHERE i OPERATOR(pg_catalog.>=) o.id
                               AND i OPERATOR(pg_catalog.<) (o.id OPERATOR(pg_catalog.+) o.messages))
              FOR UPDATE",
            None,
            &[ids.to_vec().into()],
        )?;
        let packs: Vec<(i64, i64, Vec<u8>)> = rows
            .filter_map(|r| {
                Some((r.get::<i64>(1).ok()??, r.get::<i64>(2).ok()??, r.get::<Vec<u8>>(3).ok()??))
            })
            .collect();
        let xids: Vec<i64> = packs.iter().map(|p| p.1).collect();
        let mut moved = 0;
        for (row, xid, payload) in packs {
            let Some(messages) = pack::unpack(row, &payload) else { continue };
            let (out, runs) = split(messages, ids);
            let args = |m: &Message| -> Vec<DatumWithOid> {
                vec![
                    m.id.into(),
                    m.topic.as_str().into(),
                    m.key.clone().into(),
                    m.payload.clone().into(),
                    m.headers.as_ref().map(|h| outbox::headers_json(h).to_string()).into(),
                    m.partition.into(),
                    m.timestamp_ms.into(),
                    row.into(),
                    xid.into(),
                    error.into(),
                ]
            };
            for m in &out {
                client.update(
                    "INSERT INTO kafka.dead_letter (id, topic, key, payload, headers, partition, timestamp_ms,
                                                    produced_at, first_attempt_at, error)
                     SELECT $1, $2, $3, $4, $5::pg_catalog.jsonb, $6, $7, o.produced_at,
                            coalesce(o.first_attempt_at, pg_catalog.now()), $10
                       FROM kafka.outbox o
                      WHERE o.id OPERATOR(pg_catalog.=) $8
                        AND o.xid OPERATOR(pg_catalog.=) $9::pg_catalog.text::pg_catalog.xid8
                     ON CONFLICT (id) DO NOTHING",
                    None,
                    &args(m),
                )?;
            }
            moved += out.len() as i64;
            for run in &runs {
                let mut p = Pack::new(run[0].id);
                for m in run {
                    p.push(&m.parts());
                }
                client.update(
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
                )?;
            }
            // The pack itself: gone, or now its first run (same id).
            match runs.first().filter(|r| r[0].id == row) {
                Some(first) => {
                    let mut p = Pack::new(row);
                    for m in first {
                        p.push(&m.parts());
                    }
                    client.update(
                        "UPDATE kafka.outbox SET messages = $3, payload = $4, topics = $5
                          WHERE id OPERATOR(pg_catalog.=) $1 AND xid OPERATOR(pg_catalog.=) $2::pg_catalog.text::pg_catalog.xid8",
                        None,
                        &[row.into(), xid.into(), p.count.into(), p.bytes.clone().into(), p.topics.clone().into()],
                    )?;
                }
                None => {
                    client.update(
                        "DELETE FROM kafka.outbox
                          WHERE id OPERATOR(pg_catalog.=) $1 AND xid OPERATOR(pg_catalog.=) $2::pg_catalog.text::pg_catalog.xid8",
                        None,
                        &[row.into(), xid.into()],
                    )?;
                }
            }
        }
        // A transaction left with no message waiting leaves the commit order too.
        client.update(
            "DELETE FROM kafka.outbox_commit c
              WHERE c.xid OPERATOR(pg_catalog.=) ANY($1::pg_catalog.int8[]::pg_catalog.text[]::pg_catalog.xid8[])
                AND NOT EXISTS (SELECT FROM kafka.outbox o WHERE o.xid OPERATOR(pg_catalog.=) c.xid)",
            None,
            &[xids.into()],
        )?;
        Ok(moved)
    })
}

/// Moves messages that Kafka refused for good out of the queue, each with Kafka's error, in the
/// worker (exactly-once mode: the Kafka transaction that carried them was aborted, and the
/// others are sent again without them). Returns how many it moved.
pub fn refused_by_kafka(messages: &[(i64, String)]) -> Result<i64, KafkaError> {
    messages.iter().try_fold(0, |moved, (id, error)| {
        move_out(&[*id], error).map(|n| moved + n).map_err(|e| {
            KafkaError::Internal(format!("could not move refused messages to kafka.dead_letter: {e}"))
        })
    })
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
