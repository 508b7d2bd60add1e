//! `kafka.dead_letter`: messages Kafka refused for good, or that an administrator took out of the
//! queue. Messages enter it from the outbox ([`record`]: the worker's [`outcome::finish`](crate::store::outcome::finish) and
//! `set_aside`, both in the transaction that removes them from the outbox), and leave it when an
//! administrator queues them again ([`take`], `kafka.requeue_dead_letters()`) or deletes them
//! ([`purge`], `kafka.purge_dead_letters()`).
//!
//! What must stay true: a dead letter keeps its message's id, content, and when it was produced
//! and first tried (read from its outbox row, which must still be there when it is recorded);
//! every operator is qualified (`record` runs as the worker or as the tables' owner).

use super::could_not;
use crate::error::KafkaError;
use kafka_core::message::{Headers, Message};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

/// Copies `letters` (message, error), read from outbox rows that are still there (`Message::row`
/// and `Message::xid` name the row), to `kafka.dead_letter`, with their row's `produced_at` and
/// first attempt (now, if none failed before). A message already there (same id) is left as it
/// is. Returns how many rows it inserted.
pub fn record(client: &mut SpiClient<'_>, letters: &[(&Message, &str)]) -> Result<i64, pgrx::spi::Error> {
    let column = |f: fn(&Message) -> Option<&[u8]>| -> Vec<Option<&[u8]>> {
        letters.iter().map(|(m, _)| f(m)).collect()
    };
    let headers: Vec<Option<String>> =
        letters.iter().map(|(m, _)| m.headers.as_ref().map(|h| headers_json(h).to_string())).collect();
    let args: Vec<DatumWithOid> = vec![
        letters.iter().map(|(m, _)| m.id).collect::<Vec<_>>().into(),
        letters.iter().map(|(m, _)| m.row).collect::<Vec<_>>().into(),
        letters.iter().map(|(m, _)| m.topic.as_str()).collect::<Vec<_>>().into(),
        column(|m| m.key.as_deref()).into(),
        column(|m| m.payload.as_deref()).into(),
        headers.into(),
        letters.iter().map(|(m, _)| m.partition).collect::<Vec<_>>().into(),
        letters.iter().map(|(m, _)| m.timestamp_ms).collect::<Vec<_>>().into(),
        letters.iter().map(|(_, e)| *e).collect::<Vec<_>>().into(),
        letters.iter().map(|(m, _)| m.xid).collect::<Vec<_>>().into(),
    ];
    client
        .update(
            "INSERT INTO kafka.dead_letter (id, topic, key, payload, headers, partition, timestamp_ms,
                                            produced_at, first_attempt_at, error)
             SELECT f.id, f.topic, f.key, f.payload, f.headers::pg_catalog.jsonb, f.partition, f.ts,
                    o.produced_at, coalesce(o.first_attempt_at, pg_catalog.now()), f.error
             FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[]), pg_catalog.unnest($2::pg_catalog.int8[]),
                             pg_catalog.unnest($3::pg_catalog.text[]), pg_catalog.unnest($4::pg_catalog.bytea[]),
                             pg_catalog.unnest($5::pg_catalog.bytea[]), pg_catalog.unnest($6::pg_catalog.text[]),
                             pg_catalog.unnest($7::pg_catalog.int4[]), pg_catalog.unnest($8::pg_catalog.int8[]),
                             pg_catalog.unnest($9::pg_catalog.text[]), pg_catalog.unnest($10::pg_catalog.int8[]))
                  AS f(id, row_id, topic, key, payload, headers, partition, ts, error, xid)
             JOIN kafka.outbox o ON o.xid OPERATOR(pg_catalog.=) f.xid::pg_catalog.text::pg_catalog.xid8
                                AND o.id OPERATOR(pg_catalog.=) f.row_id
             ON CONFLICT (id) DO NOTHING",
            None,
            &args,
        )
        .map(|t| t.len() as i64)
}

/// Takes dead letters out of `kafka.dead_letter` (`ids` and `topic` narrow the choice; both NULL
/// means all), in id order, for the caller to queue again in its transaction.
pub fn take(ids: Option<Vec<i64>>, topic: Option<&str>) -> Result<Vec<Message>, KafkaError> {
    let failed = |e| could_not("requeue dead letters", e);
    Spi::connect_mut(|client| {
        let rows = client
            .update(
                "WITH back AS (
                   DELETE FROM kafka.dead_letter
                    WHERE ($1::pg_catalog.int8[] IS NULL OR id OPERATOR(pg_catalog.=) ANY($1))
                      AND ($2::pg_catalog.text IS NULL OR topic OPERATOR(pg_catalog.=) $2)
                   RETURNING id, topic, key, payload, headers, partition, timestamp_ms)
                 SELECT * FROM back ORDER BY id",
                None,
                &[ids.into(), topic.into()],
            )
            .map_err(failed)?;
        rows.map(|r| {
            Ok(Message {
                id: r.get(1).map_err(failed)?.unwrap_or_default(),
                topic: r.get(2).map_err(failed)?.unwrap_or_default(),
                key: r.get(3).map_err(failed)?,
                payload: r.get(4).map_err(failed)?,
                headers: r.get::<pgrx::JsonB>(5).map_err(failed)?.map(|j| headers_from_json(&j.0)),
                partition: r.get(6).map_err(failed)?,
                timestamp_ms: r.get(7).map_err(failed)?,
                ..Default::default()
            })
        })
        .collect()
    })
}

/// Deletes dead letters (`ids` and `topic` narrow the choice; both NULL means all).
pub fn purge(ids: Option<Vec<i64>>, topic: Option<&str>) -> Result<i64, KafkaError> {
    Spi::connect_mut(|client| {
        client
            .update(
                "DELETE FROM kafka.dead_letter
                  WHERE ($1::pg_catalog.int8[] IS NULL OR id OPERATOR(pg_catalog.=) ANY($1))
                    AND ($2::pg_catalog.text IS NULL OR topic OPERATOR(pg_catalog.=) $2)",
                None,
                &[ids.into(), topic.into()],
            )
            .map(|t| t.len() as i64)
            .map_err(|e| could_not("purge dead letters", e))
    })
}

/// Headers as pg_kafka shows them in SQL (`kafka.dead_letter`, `kafka.waiting()`): `[["name", "value" or null], ...]`.
pub fn headers_json(h: &Headers) -> serde_json::Value {
    serde_json::Value::Array(h.iter().map(|(n, v)| serde_json::json!([n, v])).collect())
}

/// Headers back from `kafka.dead_letter`'s form.
fn headers_from_json(j: &serde_json::Value) -> Headers {
    let pairs = j.as_array().cloned().unwrap_or_default();
    pairs
        .iter()
        .filter_map(|p| {
            Some((p.get(0)?.as_str()?.to_owned(), p.get(1).and_then(|v| v.as_str()).map(str::to_owned)))
        })
        .collect()
}
