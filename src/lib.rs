//! pg_kafka: produce to Apache Kafka from PostgreSQL, transactionally and durably.
//!
//! # Map
//!
//! Layers, from the bottom; a module uses only lower layers or its own folder, checked by
//! `tests/e2e/tests/architecture.rs`:
//!
//! | layer | module | owns |
//! |---|---|---|
//! | — | `core/` (crate `kafka_core`, no pgrx) | the message, the pack format, librdkafka (producer, transactions), exactly-once positions |
//! | 0 | [`gucs`] | every `kafka.*` setting and fixed limit |
//! | 0 | [`relation`] | relations held open for a scope (closed on every return path) |
//! | 1 | [`mod@error`] | `KafkaError`: every failure a user can meet, its SQLSTATE and hint |
//! | 2 | [`settings`] | the rules of `kafka.config` (who may set what, secrets, `${file:…}`) |
//! | 3 | [`shared`] | shared memory: each served database's entry (its worker's state, wake-ups), the immediate-send slots |
//! | 4 | [`store`] | pg_kafka's tables and every statement on them; the fast append |
//! | 5 | [`backend`] | what runs in a user's session: SQL functions, the transaction's buffer, capture, which databases are served |
//! | 6 | [`decoding`] | WAL capture: the output plugin and its capture lookups, the decoding context the worker keeps, transactions streamed before they commit, the spool of sealed packs (compressed on a thread of its own), staging decoded events into the outbox |
//! | 7 | [`worker`] | the background workers: the launcher (one worker per served database), the delivery loop, both delivery modes, immediate sends, the WAL capture step |
//!
//! A message's way: `backend::api::produce` → [`backend::pending`] (buffered in packs, written to
//! `kafka.outbox` and given its commit number as the transaction commits) → `worker::log` (reads
//! committed transactions in commit order) → `worker::deliver` or `worker::exactly_once`
//! (librdkafka through [`kafka_core::producer`]) → [`store::outcome::finish`] (removed once Kafka
//! acknowledged or refused it).
//!
//! # Glossary
//!
//! - **message**: one Kafka record to be (a topic, key, value, headers, partition, timestamp).
//! - **record**: always a Kafka record (a message as librdkafka sends it, a BEGIN/END record,
//!   a position record); what the worker writes to PostgreSQL about an outcome is *recording*.
//! - **pack**: one `kafka.outbox` row: up to 512 messages of one transaction, in order.
//! - **commit number** (`csn`): a transaction's place in commit order (`kafka.outbox_commit`).
//! - **round**: the committed transactions the worker reads in one pass, in commit order.
//! - **chunk**: the part of a round sent to Kafka as one batch.
//! - **immediate send**: `kafka.autonomous_publish()`, sent now, outside the caller's
//!   transaction, through the worker ([`shared::slots`]).
//! - **position record**: the record that ends each Kafka transaction in exactly-once mode,
//!   naming the packs it carried.
//! - **dead letter**: a message Kafka refused for good, kept in `kafka.dead_letter`.
//! - **capture**: row changes of a table turned into Debezium-shaped events ([`backend::capture`]).
//! - **the original extension**: the C `pg_kafka` whose SQL interface this one keeps.

#![deny(unsafe_op_in_unsafe_fn)]
// The crate documentation is for its developers (cargo doc --document-private-items): its map
// links the private modules.
#![allow(rustdoc::private_intra_doc_links)]

use pgrx::prelude::*;

mod backend;
mod decoding;
mod error;
mod gucs;
mod relation;
mod settings;
mod shared;
mod store;
mod worker;

::pgrx::pg_module_magic!(name, version);

extension_sql_file!("../sql/tables.sql", name = "tables", bootstrap);

/// The schema of pg_kafka's internal helpers (`schema = "kafka_internal"` functions); created by
/// sql/tables.sql, declared here for pgrx.
#[pg_schema]
mod kafka_internal {}
extension_sql_file!(
    "../sql/capture.sql",
    name = "capture",
    requires = [backend::api::check_topic, backend::capture::backfill_events]
);
extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
    backend::init();
    // SAFETY: plain read of a process-local flag PostgreSQL sets while it loads
    // shared_preload_libraries; _PG_init runs on the backend's only thread.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        shared::init();
        worker::register();
    }
}

#[cfg(any(test, feature = "pg_test"))]
mod tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        // Deliberately not preloaded: the tests check that produce() refuses to queue then.
        vec![]
    }
}
