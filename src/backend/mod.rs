//! What runs in a user's session: the SQL functions (`api`), the transaction's message buffer
//! written at commit (`pending`, `txn_metadata`), input checks (`input`), who may write which
//! topic (`topics`), immediate sends' backend half (`immediate`), row-change capture
//! (`capture/`), the DROP EXTENSION guard (`guard`), which databases are served and what the
//! launcher must hear of them (`cluster`), the upgrade from 0.1.0 (`upgrade`) and the
//! log hook that keeps secrets out of the server log (`log_hook`). Nothing here touches
//! librdkafka's producer: messages go to the store, and the worker sends them.

pub mod api;
pub mod capture;
pub mod cluster;
pub mod guard;
pub mod immediate;
pub mod input;
pub mod log_hook;
pub mod pending;
pub mod topics;
pub mod txn_metadata;
pub mod upgrade;

/// Registers the session's callbacks and hooks (from `_PG_init`, once per process).
pub fn init() {
    pending::init();
    txn_metadata::init();
    capture::plan::init();
    log_hook::init();
    topics::init();
    guard::init();
    cluster::init();
}
