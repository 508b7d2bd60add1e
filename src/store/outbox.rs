//! Every statement that touches pg_kafka's tables: `kafka.outbox` (packs of messages waiting for
//! Kafka), `kafka.outbox_commit` (the commit order of their transactions), `kafka.dead_letter`
//! (messages Kafka refused for good), `kafka.broker` and `kafka.config`.
//!
//! Backends only append (through [`insert`] and [`insert_commit`], as the outbox's owner); the
//! worker reads [`Round`]s of committed transactions in commit order and removes what Kafka
//! acknowledged or refused ([`finish`]) in one transaction, so a message leaves the outbox only
//! once its fate is recorded.

use crate::error::KafkaError;
use crate::store::kept::{self, Access};
use crate::store::rights::{as_role, kafka_namespace};
use kafka_core::message::Headers;
use kafka_core::message::Message;
use kafka_core::pack::Pack;
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

/// pg_kafka's relations and the role that owns them, for appends made on a caller's behalf.
#[derive(Debug, Clone, Copy)]
pub struct Store {
    id_seq: pg_sys::Oid,
    commit_seq: pg_sys::Oid,
    owner: pg_sys::Oid,
    outbox: pg_sys::Oid,
    commits: pg_sys::Oid,
}

impl Store {
    /// The role that owns pg_kafka's tables (the extension's owner).
    pub fn owner(&self) -> pg_sys::Oid {
        self.owner
    }

    /// `kafka.outbox` and `kafka.outbox_commit`.
    pub fn queue_tables(&self) -> (pg_sys::Oid, pg_sys::Oid) {
        (self.outbox, self.commits)
    }
}

/// Looks up the outbox's relations and owner in the catalog caches (no SQL, so cheap enough for
/// every transaction; a re-created extension is found by name).
pub fn store() -> Result<Store, KafkaError> {
    let nsp = kafka_namespace()?;
    // SAFETY: catalog cache lookups, run inside a transaction (an SQL function, a trigger, the
    // utility hook or a worker transaction), with NUL-terminated literal names; a missing schema
    // is InvalidOid, and then every relation is too.
    let found = unsafe {
        let rel = |name: &std::ffi::CStr| pg_sys::get_relname_relid(name.as_ptr(), nsp);
        let (id_seq, commit_seq) = (rel(c"outbox_id_seq"), rel(c"commit_seq"));
        let (outbox, commits) = (rel(c"outbox"), rel(c"outbox_commit"));
        let all = [nsp, id_seq, commit_seq, outbox, commits].iter().all(|o| *o != pg_sys::InvalidOid);
        all.then(|| relation_owner(outbox)).flatten().map(|owner| Store {
            id_seq,
            commit_seq,
            owner,
            outbox,
            commits,
        })
    };
    found.ok_or(KafkaError::OutboxMissing)
}

/// The owner of a relation, from the catalog cache.
unsafe fn relation_owner(relid: pg_sys::Oid) -> Option<pg_sys::Oid> {
    // SAFETY: inside the caller's transaction (this function's contract); RELOID is keyed by an oid
    // Datum.
    let tuple =
        unsafe { pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::RELOID as _, relid.into_datum()?) };
    if tuple.is_null() {
        return None;
    }
    // SAFETY: `tuple` is a valid pg_class tuple from the RELOID cache, whose data is a
    // FormData_pg_class.
    let owner = unsafe { (*pg_sys::GETSTRUCT(tuple).cast::<pg_sys::FormData_pg_class>()).relowner };
    // SAFETY: releases the reference SearchSysCache1 took above; `tuple` is not used after.
    unsafe { pg_sys::ReleaseSysCache(tuple) };
    Some(owner)
}

/// Runs `f` as the owner of the outbox with `search_path = pg_catalog, pg_temp`, like a SECURITY
/// DEFINER function with a pinned path would: SQL that `f` runs cannot reach the caller's own
/// functions or operators (a role that may create an operator in a schema on its path would
/// otherwise have it run as the owner).
pub fn as_owner<R>(store: Store, f: impl FnOnce() -> R) -> R {
    as_role(store.owner, false, f)
}

fn nextval(store: Store, seq: pg_sys::Oid) -> Result<i64, KafkaError> {
    // SAFETY: nextval_oid takes one regclass (oid) argument and returns a non-null int8; `seq` is
    // the oid of one of pg_kafka's sequences, from `store`. Errors are raised as Rust panics by the
    // guard.
    as_owner(store, || unsafe { pgrx::direct_function_call::<i64>(pg_sys::nextval_oid, &[seq.into_datum()]) })
        .ok_or_else(|| KafkaError::Internal("nextval returned NULL".into()))
}

/// The id of a new pack: ids grow in the order a session asks for them.
pub fn next_pack_id(store: Store) -> Result<i64, KafkaError> {
    nextval(store, store.id_seq)
}

/// The current transaction's full id as an `xid8` Datum (assigns one if it has none yet).
fn xid_datum() -> pg_sys::Datum {
    // SAFETY: inside the transaction that writes to the outbox (it needs an xid anyway); PostgreSQL
    // raises where one cannot be assigned (recovery, parallel mode), turned into a Rust panic.
    let xid = unsafe { pg_sys::GetTopFullTransactionId() };
    pg_sys::Datum::from(xid.value)
}

const OUTBOX_COLUMNS: [(&str, pg_sys::Oid); 7] = [
    ("id", pg_sys::INT8OID),
    ("xid", pg_sys::XID8OID),
    ("messages", pg_sys::INT4OID),
    ("topics", pg_sys::TEXTARRAYOID),
    ("payload", pg_sys::BYTEAOID),
    ("produced_at", pg_sys::TIMESTAMPTZOID),
    ("first_attempt_at", pg_sys::TIMESTAMPTZOID),
];
const COMMIT_COLUMNS: [(&str, pg_sys::Oid); 2] = [("csn", pg_sys::INT8OID), ("xid", pg_sys::XID8OID)];

/// Appends packs to the outbox in the current transaction (`append`).
pub fn insert(packs: &[Pack], store: Store) -> Result<(), KafkaError> {
    with_snapshot(|| {
        let xid = xid_datum();
        // SAFETY: plain read of the current transaction's start timestamp; a TimestampTz is a
        // by-value Datum.
        let produced_at = pg_sys::Datum::from(unsafe { pg_sys::GetCurrentTransactionStartTimestamp() });
        crate::store::append::insert(store.outbox, &OUTBOX_COLUMNS, packs.len(), |i| {
            let p = &packs[i];
            vec![
                p.id.into_datum(),
                Some(xid),
                p.count.into_datum(),
                p.topics.iter().map(String::as_str).collect::<Vec<&str>>().into_datum(),
                crate::store::append::compressed(&p.bytes),
                Some(produced_at),
                None,
            ]
        })
    })
}

/// Records the current transaction's place in commit order; called last before it commits.
pub fn insert_commit(store: Store) -> Result<(), KafkaError> {
    with_snapshot(|| {
        let csn = nextval(store, store.commit_seq)?;
        let xid = xid_datum();
        crate::store::append::insert(store.commits, &COMMIT_COLUMNS, 1, |_| vec![csn.into_datum(), Some(xid)])
    })
}

/// At COMMIT or RELEASE SAVEPOINT no statement is running: bring a snapshot of our own (TOAST
/// and unique checks may want one).
fn with_snapshot<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: reads the current transaction's active snapshot stack.
    let own_snapshot = unsafe { !pg_sys::ActiveSnapshotSet() };
    if own_snapshot {
        // SAFETY: inside a transaction (also at PRE_COMMIT, which still runs inside it); popped
        // below, or by the transaction's abort if `f` raises.
        unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot()) };
    }
    let r = f();
    if own_snapshot {
        // SAFETY: pops the snapshot pushed above: `own_snapshot` is true only when we pushed one.
        unsafe { pg_sys::PopActiveSnapshot() };
    }
    r
}

/// Whether the extension is installed in the worker's database (catalog caches, no SQL).
pub fn installed() -> bool {
    let Ok(nsp) = kafka_namespace() else { return false };
    // SAFETY: catalog cache lookups with NUL-terminated literal names; every caller runs inside a
    // transaction (a worker transaction, or the utility hook).
    unsafe {
        nsp != pg_sys::InvalidOid
            && pg_sys::get_relname_relid(c"outbox".as_ptr(), nsp) != pg_sys::InvalidOid
            && pg_sys::get_relname_relid(c"dead_letter".as_ptr(), nsp) != pg_sys::InvalidOid
            // this version's tables: with an older version's SQL, wait for ALTER EXTENSION UPDATE
            && pg_sys::get_relname_relid(c"outbox_commit".as_ptr(), nsp) != pg_sys::InvalidOid
            && pg_sys::get_relname_relid(c"home".as_ptr(), nsp) != pg_sys::InvalidOid
            && pg_sys::get_relname_relid(c"producer_statistics".as_ptr(), nsp) != pg_sys::InvalidOid
    }
}

/// The brokers as a librdkafka `bootstrap.servers` list, in a stable order. Every operator is
/// qualified: the worker runs this as a superuser in a database other roles may own.
pub fn bootstrap_servers() -> Result<String, KafkaError> {
    Spi::get_one::<String>(
        "SELECT pg_catalog.string_agg(pg_catalog.concat(b.host, ':', b.port), ',' ORDER BY b.host, b.port)
           FROM kafka.broker b",
    )
    .map(Option::unwrap_or_default)
    .map_err(|e| KafkaError::Internal(format!("could not read kafka.broker: {e}")))
}

/// The rows of `kafka.config`, in name order.
pub fn producer_settings() -> Result<Vec<(String, String)>, KafkaError> {
    Spi::connect(|client| {
        let rows = client
            .select("SELECT c.name, c.value FROM kafka.config c ORDER BY c.name COLLATE \"C\"", None, &[])
            .map_err(|e| KafkaError::Internal(format!("could not read kafka.config: {e}")))?;
        Ok(rows.filter_map(|r| Some((r.get::<String>(1).ok()??, r.get::<String>(2).ok()??))).collect())
    })
}

/// Whether this database is the queue's home. `kafka.home` records the database and the home
/// table's own oid when the worker first serves it; a physical replica or a `pg_upgrade` keeps
/// both, but a restored dump (which brings the original's row) or a copy made with CREATE
/// DATABASE ... TEMPLATE does not, so it must not send what the original owns. An empty table
/// (a new installation, or after `kafka.release()`) is claimed.
pub fn at_home() -> Result<bool, KafkaError> {
    Spi::get_one::<bool>(
        "WITH here AS (
             SELECT d.oid AS db, 'kafka.home'::pg_catalog.regclass::pg_catalog.oid AS tab
               FROM pg_catalog.pg_database d
              WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()),
         claimed AS (
             INSERT INTO kafka.home (database_oid, table_oid)
             SELECT here.db, here.tab FROM here WHERE NOT EXISTS (SELECT FROM kafka.home)
             RETURNING true)
         SELECT EXISTS (SELECT FROM claimed)
             OR EXISTS (SELECT FROM kafka.home h, here
                         WHERE h.database_oid OPERATOR(pg_catalog.=) here.db
                           AND h.table_oid OPERATOR(pg_catalog.=) here.tab)",
    )
    .map(|home| home.unwrap_or(false))
    .map_err(|e| KafkaError::Internal(format!("could not read kafka.home: {e}")))
}

/// Whether this database holds a copy's queue (what the worker holds: `at_home` is false): the
/// rows of `kafka.home` name another database or another home table. Empty, the worker claims
/// it: not a copy. Locks the rows it reads, so that of two `kafka.release()` at once the second
/// finds them gone, and refuses. Run as the owner (`as_owner`).
fn held_copy() -> Result<bool, KafkaError> {
    Spi::get_one::<bool>(
        "WITH here AS (
             SELECT d.oid AS db, 'kafka.home'::pg_catalog.regclass::pg_catalog.oid AS tab
               FROM pg_catalog.pg_database d
              WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()),
         home AS (SELECT h.database_oid, h.table_oid FROM kafka.home h FOR UPDATE)
         SELECT EXISTS (SELECT FROM home)
            AND NOT EXISTS (SELECT FROM home, here
                             WHERE home.database_oid OPERATOR(pg_catalog.=) here.db
                               AND home.table_oid OPERATOR(pg_catalog.=) here.tab)",
    )
    .map(|copy| copy.unwrap_or(false))
    .map_err(|e| KafkaError::Internal(format!("could not read kafka.home: {e}")))
}

/// Makes this database the queue's home (`kafka.release()`): the worker claims it again. Only in
/// a copy whose delivery is held (`held_copy`), else `NotACopy`: in the home database it would
/// renumber messages the worker is sending, which would be sent again. The packs it was restored
/// with carry the original's transaction ids, which mean nothing here (in another cluster they
/// may even lie in the future): they become packs of the calling transaction, renumbered in the
/// order they would have been sent (commit order, then id) after the highest id, 512 apart, and
/// the caller takes one place in commit order for all of them (`pending::adopt_packs`).
pub fn release() -> Result<(), KafkaError> {
    let sql = [
        "DELETE FROM kafka.home",
        "DELETE FROM kafka.outbox o WHERE NOT EXISTS (SELECT FROM kafka.outbox_commit c WHERE c.xid OPERATOR(pg_catalog.=) o.xid)",
        // OPERATOR() has no precedence: the parentheses make it b + (n * 512).
        "WITH ordered AS (
             SELECT o.xid, o.id, pg_catalog.row_number() OVER (ORDER BY c.csn, o.id) AS n
               FROM kafka.outbox o JOIN kafka.outbox_commit c ON c.xid OPERATOR(pg_catalog.=) o.xid),
         base AS (SELECT pg_catalog.max(o.id) AS b FROM kafka.outbox o)
         UPDATE kafka.outbox o SET xid = pg_catalog.pg_current_xact_id(),
                id = base.b OPERATOR(pg_catalog.+) (ordered.n OPERATOR(pg_catalog.*) 512)
           FROM ordered, base
          WHERE o.xid OPERATOR(pg_catalog.=) ordered.xid AND o.id OPERATOR(pg_catalog.=) ordered.id",
        "DELETE FROM kafka.outbox_commit",
        "SELECT pg_catalog.setval('kafka.outbox_id_seq', pg_catalog.max(o.id) OPERATOR(pg_catalog.+) 512)
           FROM kafka.outbox o HAVING pg_catalog.count(*) OPERATOR(pg_catalog.>) 0",
    ];
    let store = store()?;
    if !as_owner(store, held_copy)? {
        return Err(KafkaError::NotACopy);
    }
    as_owner(store, || sql.iter().try_for_each(|q| Spi::run(q)))
        .map_err(|e| KafkaError::Internal(format!("could not release the queue: {e}")))
}

/// Whether `kafka.config` holds a credential (`settings::holds_credential`; only names are read).
pub fn secret_stored() -> Result<bool, KafkaError> {
    let names = Spi::connect(|client| -> Result<Vec<String>, pgrx::spi::Error> {
        let rows = client.select("SELECT c.name FROM kafka.config c", None, &[])?;
        rows.map(|r| Ok(r.get::<String>(1)?.unwrap_or_default())).collect()
    })
    .map_err(|e| KafkaError::Internal(format!("could not read kafka.config: {e}")))?;
    Ok(names.iter().any(|n| crate::settings::holds_credential(n)))
}

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
    // The worker's planner settings keep this on the indexes (see `worker::process::SESSION`).
    Spi::connect(|client| {
        const READ: &str = "SELECT c.csn, o.id, o.payload, o.xid::pg_catalog.text::pg_catalog.int8
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
                let msgs = kafka_core::pack::unpack(id, &payload)
                    .ok_or_else(|| KafkaError::Internal(format!("outbox row {id} is malformed")))?;
                batch.extend(msgs.into_iter().map(|m| Message { csn, xid, ..m }));
                round.pos = (csn, id);
            }
        }
    })
}

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
        let run = |client: &mut SpiClient, what: &str, sql: &str, args: &[DatumWithOid]| {
            client.update(sql, None, args).map(|t| t.len() as i64).map_err(|e| could_not(what, e))
        };
        let mut dead = 0;
        if !refused.is_empty() {
            let column = |f: fn(&Message) -> Option<&[u8]>| -> Vec<Option<&[u8]>> {
                refused.iter().map(|(m, _)| f(m)).collect()
            };
            let headers: Vec<Option<String>> = refused
                .iter()
                .map(|(m, _)| m.headers.as_ref().map(|h| headers_json(h).to_string()))
                .collect();
            let args: Vec<DatumWithOid> = vec![
                refused.iter().map(|(m, _)| m.id).collect::<Vec<_>>().into(),
                refused.iter().map(|(m, _)| m.row).collect::<Vec<_>>().into(),
                refused.iter().map(|(m, _)| m.topic.as_str()).collect::<Vec<_>>().into(),
                column(|m| m.key.as_deref()).into(),
                column(|m| m.payload.as_deref()).into(),
                headers.into(),
                refused.iter().map(|(m, _)| m.partition).collect::<Vec<_>>().into(),
                refused.iter().map(|(m, _)| m.timestamp_ms).collect::<Vec<_>>().into(),
                refused.iter().map(|(_, e)| e.as_str()).collect::<Vec<_>>().into(),
                refused.iter().map(|(m, _)| m.xid).collect::<Vec<_>>().into(),
            ];
            dead = run(
                client,
                "move messages to kafka.dead_letter",
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
                &args,
            )?;
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
            run(
                client,
                "record a failed attempt",
                "UPDATE kafka.outbox SET first_attempt_at = pg_catalog.now()
                  WHERE xid OPERATOR(pg_catalog.=) ANY($2::pg_catalog.int8[]::pg_catalog.text[]::pg_catalog.xid8[])
                    AND id OPERATOR(pg_catalog.=) ANY($1::pg_catalog.int8[]) AND first_attempt_at IS NULL",
                &[ids(retried).into(), xids(retried).into()],
            )?;
        }
        if !csns.is_empty() {
            run_kept(
                client,
                "forget delivered transactions",
                "DELETE FROM kafka.outbox_commit c
                  WHERE c.csn OPERATOR(pg_catalog.=) ANY($1::pg_catalog.int8[])
                    AND NOT EXISTS (SELECT FROM kafka.outbox o WHERE o.xid OPERATOR(pg_catalog.=) c.xid)",
                &[csns.to_vec().into()],
            )?;
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
            "UPDATE kafka.outbox SET messages = $3, topics = $4, payload = $5,
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

/// The error of a statement on pg_kafka's tables: "could not <what>: <SPI's error>".
fn could_not(what: &str, e: pgrx::spi::Error) -> KafkaError {
    KafkaError::Internal(format!("could not {what}: {e}"))
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
        client
            .update(
                "DELETE FROM kafka.outbox_commit c
                  WHERE c.xid OPERATOR(pg_catalog.=) ANY($1::pg_catalog.int8[]::pg_catalog.text[]::pg_catalog.xid8[])
                    AND NOT EXISTS (SELECT FROM kafka.outbox o WHERE o.xid OPERATOR(pg_catalog.=) c.xid)",
                None,
                &[xids.into()],
            )
            .map_err(failed)?;
        Ok(deleted)
    })
}

/// Headers as stored in `kafka.dead_letter`: `[["name", "value" or null], ...]`.
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

/// Takes dead letters out of `kafka.dead_letter` (`ids` and `topic` narrow the choice; both NULL
/// means all), in id order, for the caller to queue again in its transaction.
pub fn take_dead_letters(ids: Option<Vec<i64>>, topic: Option<&str>) -> Result<Vec<Message>, KafkaError> {
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
pub fn purge_dead_letters(ids: Option<Vec<i64>>, topic: Option<&str>) -> Result<i64, KafkaError> {
    Spi::connect_mut(|client| {
        client
            .update(
                "DELETE FROM kafka.dead_letter
                  WHERE ($1::pg_catalog.int8[] IS NULL OR id = ANY($1)) AND ($2::pg_catalog.text IS NULL OR topic = $2)",
                None,
                &[ids.into(), topic.into()],
            )
            .map(|t| t.len() as i64)
            .map_err(|e| KafkaError::Internal(format!("could not purge dead letters: {e}")))
    })
}
