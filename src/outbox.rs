//! Every statement that touches pg_kafka's tables: `kafka.outbox` (messages waiting for Kafka),
//! `kafka.dead_letter` (messages Kafka refused for good) and `kafka.broker`.
//!
//! Backends only append (through [`insert`], as the outbox's owner); the worker reads batches in
//! id order and removes what Kafka acknowledged or refused ([`finish`]) in one transaction, so a
//! message leaves the outbox only once its fate is recorded.

use crate::record::Headers;
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;

/// One message as stored in the outbox.
#[derive(Debug, Clone, Default)]
pub struct OutboxMessage {
    pub id: i64,
    /// The outbox row it was read from (the worker's side).
    pub row: i64,
    /// A pack of this many messages, `payload` in `pack`'s format (the backends' side).
    pub packed: Option<i32>,
    /// Read out of a packed row: shares the row's id (the worker's side).
    pub unpacked: bool,
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Option<Headers>,
    pub partition: Option<i32>,
    pub timestamp_ms: Option<i64>,
}

impl OutboxMessage {
    pub fn size(&self) -> usize {
        let headers = self.headers.iter().flatten();
        self.topic.len()
            + self.key.as_ref().map_or(0, Vec::len)
            + self.payload.as_ref().map_or(0, Vec::len)
            + headers.map(|(n, v)| n.len() + v.as_ref().map_or(0, String::len)).sum::<usize>()
    }
}

fn headers_to_json(h: &Headers) -> pgrx::JsonB {
    pgrx::JsonB(serde_json::Value::Array(h.iter().map(|(n, v)| serde_json::json!([n, v])).collect()))
}

fn headers_from_json(j: pgrx::JsonB) -> Headers {
    let pairs = j.0.as_array().cloned().unwrap_or_default();
    pairs
        .iter()
        .filter_map(|p| {
            let name = p.get(0)?.as_str()?.to_owned();
            Some((name, p.get(1).and_then(|v| v.as_str()).map(str::to_owned)))
        })
        .collect()
}

/// The outbox id sequence and the role that owns the outbox, for appends made on a caller's behalf.
#[derive(Debug, Clone, Copy)]
pub struct Sequence {
    oid: pg_sys::Oid,
    owner: pg_sys::Oid,
    outbox: pg_sys::Oid,
}

/// Looks up the outbox sequence and the outbox's owner in the catalog caches (no SQL, so cheap
/// enough for every transaction; a re-created extension is found by name).
pub fn sequence() -> Sequence {
    let found = unsafe {
        let nsp = pg_sys::get_namespace_oid(c"kafka".as_ptr(), true);
        let seq = pg_sys::get_relname_relid(c"outbox_id_seq".as_ptr(), nsp);
        let outbox = pg_sys::get_relname_relid(c"outbox".as_ptr(), nsp);
        (nsp != pg_sys::InvalidOid && seq != pg_sys::InvalidOid)
            .then(|| relation_owner(outbox))
            .flatten()
            .map(|owner| Sequence { oid: seq, owner, outbox })
    };
    found.unwrap_or_else(|| panic!("pg_kafka's outbox is missing; recreate the extension"))
}

/// The owner of a relation, from the catalog cache.
unsafe fn relation_owner(relid: pg_sys::Oid) -> Option<pg_sys::Oid> {
    let tuple =
        unsafe { pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::RELOID as _, relid.into_datum()?) };
    if tuple.is_null() {
        return None;
    }
    let owner = unsafe { (*pg_sys::GETSTRUCT(tuple).cast::<pg_sys::FormData_pg_class>()).relowner };
    unsafe { pg_sys::ReleaseSysCache(tuple) };
    Some(owner)
}

/// Runs `f` as the owner of the outbox, like a SECURITY DEFINER function would.
fn as_owner<R>(seq: Sequence, f: impl FnOnce() -> R) -> R {
    let (mut user, mut sec) = (pg_sys::Oid::INVALID, 0);
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut sec);
        pg_sys::SetUserIdAndSecContext(seq.owner, sec | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32);
    }
    let r = f();
    // On error the transaction's abort restores the user; on success we do.
    unsafe { pg_sys::SetUserIdAndSecContext(user, sec) };
    r
}

/// The next outbox id: ids grow in the order a session produces.
pub fn next_id(seq: Sequence) -> i64 {
    as_owner(seq, || unsafe {
        pgrx::direct_function_call::<i64>(pg_sys::nextval_oid, &[seq.oid.into_datum()])
    })
    .expect("nextval returned NULL")
}

/// Appends messages (and packs of messages) to the outbox (`append`).
pub fn insert(batch: &[OutboxMessage], seq: Sequence) {
    // At COMMIT or RELEASE SAVEPOINT no statement is running: bring a snapshot of our own (TOAST
    // and unique checks may want one).
    let own_snapshot = unsafe { !pg_sys::ActiveSnapshotSet() };
    if own_snapshot {
        unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot()) };
    }
    crate::append::insert(seq.outbox, batch, |m| m.headers.as_ref().map(headers_to_json));
    if own_snapshot {
        unsafe { pg_sys::PopActiveSnapshot() };
    }
}

/// Whether the extension is installed in the worker's database (catalog caches, no SQL).
pub fn installed() -> bool {
    unsafe {
        let nsp = pg_sys::get_namespace_oid(c"kafka".as_ptr(), true);
        nsp != pg_sys::InvalidOid
            && pg_sys::get_relname_relid(c"outbox".as_ptr(), nsp) != pg_sys::InvalidOid
            && pg_sys::get_relname_relid(c"dead_letter".as_ptr(), nsp) != pg_sys::InvalidOid
    }
}

/// The brokers as a librdkafka `bootstrap.servers` list, in a stable order.
pub fn bootstrap_servers() -> String {
    Spi::get_one::<String>(
        "SELECT pg_catalog.string_agg(host || ':' || port, ',' ORDER BY host, port) FROM kafka.broker",
    )
    .ok()
    .flatten()
    .unwrap_or_default()
}

/// The rows of `kafka.config`, in name order.
pub fn producer_settings() -> Vec<(String, String)> {
    Spi::connect(|client| {
        let rows = client
            .select("SELECT name, value FROM kafka.config ORDER BY name", None, &[])
            .unwrap_or_else(|e| panic!("could not read kafka.config: {e}"));
        rows.filter_map(|r| Some((r.get::<String>(1).ok()??, r.get::<String>(2).ok()??))).collect()
    })
}

/// The oldest waiting messages with an id above `after`, in id order: about `limit` messages
/// and `max_bytes` bytes (the first row always comes, whatever its size; a packed row comes
/// whole). Read through a cursor in id order, so the plan follows the primary key and stops
/// as soon as the batch is full.
pub fn read_batch(after: Option<i64>, limit: usize, max_bytes: i64) -> Vec<OutboxMessage> {
    const FETCH: i64 = 1000;
    // Always the primary key in order: never a scan and sort of the whole queue, which the planner
    // may pick when the statistics are those of an empty outbox (the usual state after vacuum).
    Spi::run(
        "SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off; SET LOCAL enable_bitmapscan = off",
    )
    .unwrap_or_else(|e| panic!("could not set the outbox scan: {e}"));
    Spi::connect(|client| {
        let mut cursor = client.open_cursor(
            "SELECT id, topic, key, payload, headers, partition, timestamp_ms, packed
               FROM kafka.outbox WHERE id > $1 ORDER BY id",
            &[after.unwrap_or(i64::MIN).into()],
        );
        let (mut batch, mut bytes) = (Vec::new(), 0_i64);
        loop {
            let rows = cursor.fetch(FETCH).unwrap_or_else(|e| panic!("could not read kafka.outbox: {e}"));
            if rows.is_empty() {
                return batch;
            }
            for row in rows {
                if !batch.is_empty() && (batch.len() >= limit || bytes >= max_bytes) {
                    return batch;
                }
                let id: i64 = row.get(1).ok().flatten().expect("outbox id is NULL");
                let single = OutboxMessage {
                    id,
                    row: id,
                    topic: row.get(2).ok().flatten().expect("outbox topic is NULL"),
                    key: row.get(3).ok().flatten(),
                    payload: row.get(4).ok().flatten(),
                    headers: row.get::<pgrx::JsonB>(5).ok().flatten().map(headers_from_json),
                    partition: row.get(6).ok().flatten(),
                    timestamp_ms: row.get(7).ok().flatten(),
                    ..Default::default()
                };
                bytes += single.size() as i64;
                match row.get::<i32>(8).ok().flatten() {
                    None => batch.push(single),
                    Some(_) => batch.extend(
                        crate::pack::unpack(id, single.payload.as_deref().unwrap_or_default())
                            .unwrap_or_else(|| panic!("outbox row {id} is packed but malformed")),
                    ),
                }
            }
        }
    })
}

/// Records the outcome of a batch, by outbox row: rows whose messages were all acknowledged or
/// refused leave the outbox (refused messages move to `kafka.dead_letter` with Kafka's error),
/// rows with a message to retry stay and remember their first attempt.
/// `refused` holds (message, error); `done` the finished rows; `retried` the rows that stay.
/// A refused message of a packed row gets an id of its own in `kafka.dead_letter`.
/// Returns how many messages were dead-lettered.
pub fn finish(done: &[i64], refused: &[(&OutboxMessage, String)], retried: &[i64]) -> i64 {
    Spi::connect_mut(|client| {
        if !installed() {
            return 0;
        }
        let mut run = |what: &str, sql: &str, args: &[DatumWithOid]| -> i64 {
            client
                .update(sql, None, args)
                .map(|t| t.len() as i64)
                .unwrap_or_else(|e| panic!("could not {what}: {e}"))
        };
        let mut dead = 0;
        if !refused.is_empty() {
            let column = |f: fn(&OutboxMessage) -> Option<&[u8]>| -> Vec<Option<&[u8]>> {
                refused.iter().map(|(m, _)| f(m)).collect()
            };
            let args: Vec<DatumWithOid> = vec![
                refused.iter().map(|(m, _)| (!m.unpacked).then_some(m.id)).collect::<Vec<_>>().into(),
                refused.iter().map(|(m, _)| m.row).collect::<Vec<_>>().into(),
                refused.iter().map(|(m, _)| m.topic.as_str()).collect::<Vec<_>>().into(),
                column(|m| m.key.as_deref()).into(),
                column(|m| m.payload.as_deref()).into(),
                refused.iter().map(|(_, e)| e.as_str()).collect::<Vec<_>>().into(),
            ];
            dead = run(
                "move messages to kafka.dead_letter",
                "INSERT INTO kafka.dead_letter (id, topic, key, payload, headers, partition, timestamp_ms,
                                                produced_at, first_attempt_at, error)
                 SELECT coalesce(f.id, pg_catalog.nextval('kafka.outbox_id_seq')), f.topic, f.key, f.payload,
                        o.headers, o.partition, o.timestamp_ms,
                        o.produced_at, coalesce(o.first_attempt_at, pg_catalog.now()), f.error
                 FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[]), pg_catalog.unnest($2::pg_catalog.int8[]),
                                 pg_catalog.unnest($3::pg_catalog.text[]), pg_catalog.unnest($4::pg_catalog.bytea[]),
                                 pg_catalog.unnest($5::pg_catalog.bytea[]), pg_catalog.unnest($6::pg_catalog.text[]))
                      AS f(id, row_id, topic, key, payload, error)
                 JOIN kafka.outbox o ON o.id = f.row_id",
                &args,
            );
        }
        if !done.is_empty() {
            run(
                "delete from kafka.outbox",
                // The id range keeps the plan on the primary key whatever the statistics say
                // (a batch is a narrow slice of a possibly large outbox).
                "DELETE FROM kafka.outbox WHERE id = ANY($1::pg_catalog.int8[])
                    AND id BETWEEN (SELECT pg_catalog.min(i) FROM pg_catalog.unnest($1::pg_catalog.int8[]) i)
                               AND (SELECT pg_catalog.max(i) FROM pg_catalog.unnest($1::pg_catalog.int8[]) i)",
                &[done.to_vec().into()],
            );
        }
        if !retried.is_empty() {
            run(
                "record a failed attempt",
                "UPDATE kafka.outbox SET first_attempt_at = pg_catalog.now()
                  WHERE id = ANY($1::pg_catalog.int8[]) AND first_attempt_at IS NULL",
                &[retried.to_vec().into()],
            );
        }
        dead
    })
}

/// Moves dead letters back to the outbox, keeping their ids (so their place in the order).
/// `ids` and `topic` narrow the choice; both NULL means all. Returns how many.
pub fn requeue_dead_letters(ids: Option<Vec<i64>>, topic: Option<&str>) -> i64 {
    Spi::connect_mut(|client| {
        client
            .update(
                "WITH back AS (
                   DELETE FROM kafka.dead_letter
                    WHERE ($1::pg_catalog.int8[] IS NULL OR id = ANY($1)) AND ($2::pg_catalog.text IS NULL OR topic = $2)
                   RETURNING id, topic, key, payload, headers, partition, timestamp_ms, produced_at)
                 INSERT INTO kafka.outbox (id, topic, key, payload, headers, partition, timestamp_ms, produced_at)
                 SELECT * FROM back",
                None,
                &[ids.into(), topic.into()],
            )
            .map(|t| t.len() as i64)
            .unwrap_or_else(|e| panic!("could not requeue dead letters: {e}"))
    })
}

/// Deletes dead letters (`ids` and `topic` narrow the choice; both NULL means all).
pub fn purge_dead_letters(ids: Option<Vec<i64>>, topic: Option<&str>) -> i64 {
    Spi::connect_mut(|client| {
        client
            .update(
                "DELETE FROM kafka.dead_letter
                  WHERE ($1::pg_catalog.int8[] IS NULL OR id = ANY($1)) AND ($2::pg_catalog.text IS NULL OR topic = $2)",
                None,
                &[ids.into(), topic.into()],
            )
            .map(|t| t.len() as i64)
            .unwrap_or_else(|e| panic!("could not purge dead letters: {e}"))
    })
}
