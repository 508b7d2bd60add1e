//! pg_kafka: produce to Apache Kafka from PostgreSQL, transactionally and durably.
//!
//! Backends queue messages in `kafka.outbox` as part of their transaction (`api`, `pending`,
//! `outbox`); one background worker delivers them with librdkafka (`worker`, `producer`).

#![deny(unsafe_op_in_unsafe_fn)]

use pgrx::prelude::*;

mod api;
mod append;
mod capture;
mod capture_plan;
mod connect_schema;
mod debezium;
mod error;
mod guard;
mod gucs;
mod immediate;
mod outbox;
mod pending;
mod record;
mod relay;
mod reports;
mod set_aside;
mod settings;
mod shared;
mod statistics;
mod topic_stats;
mod topics;
mod txn_metadata;
mod upgrade;
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
    requires = [api::check_topic, capture::backfill_events]
);
extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
    pending::init();
    txn_metadata::init();
    capture_plan::init();
    reports::init();
    topics::init();
    guard::init();
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
