//! `kafka.home`: which database the queue belongs to. The worker delivers only from the queue's
//! home ([`at_home`], run by the worker, which claims an empty table); a restored dump or a
//! template copy holds the original's messages and must not send them, until an administrator
//! makes it a home of its own (`kafka.release()`: [`release`]).
//!
//! What must stay true: `release` works only in a held copy (`held_copy`), as the tables' owner;
//! it renumbers the copy's packs into the calling transaction, keeping their order.

use crate::error::KafkaError;
use crate::store::owner::{as_owner, store};
use kafka_core::pack::MAX_MESSAGES;
use pgrx::prelude::*;

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
/// order they would have been sent (commit order, then id) after the highest id, a pack apart
/// ([`MAX_MESSAGES`], the outbox's id sequence's increment), and
/// the caller takes one place in commit order for all of them ([`pending::adopt_packs`](crate::backend::pending::adopt_packs)).
pub fn release() -> Result<(), KafkaError> {
    let sql = [
        "DELETE FROM kafka.home",
        "DELETE FROM kafka.outbox o WHERE NOT EXISTS (SELECT FROM kafka.outbox_commit c WHERE c.xid OPERATOR(pg_catalog.=) o.xid)",
        // OPERATOR() has no precedence: the parentheses make it b + (n * $1).
        "WITH ordered AS (
             SELECT o.xid, o.id, pg_catalog.row_number() OVER (ORDER BY c.csn, o.id) AS n
               FROM kafka.outbox o JOIN kafka.outbox_commit c ON c.xid OPERATOR(pg_catalog.=) o.xid),
         base AS (SELECT pg_catalog.max(o.id) AS b FROM kafka.outbox o)
         UPDATE kafka.outbox o SET xid = pg_catalog.pg_current_xact_id(),
                id = base.b OPERATOR(pg_catalog.+) (ordered.n OPERATOR(pg_catalog.*) $1)
           FROM ordered, base
          WHERE o.xid OPERATOR(pg_catalog.=) ordered.xid AND o.id OPERATOR(pg_catalog.=) ordered.id",
        "DELETE FROM kafka.outbox_commit",
        "SELECT pg_catalog.setval('kafka.outbox_id_seq', pg_catalog.max(o.id) OPERATOR(pg_catalog.+) $1)
           FROM kafka.outbox o HAVING pg_catalog.count(*) OPERATOR(pg_catalog.>) 0",
    ];
    let store = store()?;
    if !as_owner(store, held_copy)? {
        return Err(KafkaError::NotACopy);
    }
    let pack = [i64::from(MAX_MESSAGES).into()];
    as_owner(store, || {
        sql.iter().try_for_each(|q| {
            // only the statements that use it take the pack size
            if q.contains("$1") {
                Spi::run_with_args(q, &pack)
            } else {
                Spi::run(q)
            }
        })
    })
    .map_err(|e| KafkaError::Internal(format!("could not release the queue: {e}")))
}
