//! pg_kafka's tables, and every statement on them: the outbox and its commit order (`outbox`),
//! the rights that statements run with and the schema they trust (`rights`), the queue's disk
//! (`size`), the fast append of packs (`append`), taking waiting messages out to the dead letters
//! (`set_aside`), per-topic figures (`topic_stats`), listing waiting messages (`waiting`), librdkafka's statistics (`statistics`) and
//! the worker's statements kept prepared (`kept`).
//! Used by the backend side and the worker alike; uses neither.

pub mod append;
pub mod kept;
pub mod outbox;
pub mod rights;
pub mod set_aside;
pub mod size;
pub mod statistics;
pub mod topic_stats;
pub mod waiting;
