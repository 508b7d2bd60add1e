//! pg_kafka's code that has nothing to do with PostgreSQL, in a crate that does not depend on
//! pgrx: nothing here can call into PostgreSQL, which is what makes it safe to run on
//! librdkafka's threads (its callbacks) and to use from the benchmarks.
//!
//! - [`message`]: one Kafka message as the worker reads it back;
//! - [`pack`]: the format of an outbox row (a pack of up to 512 messages of one transaction);
//! - [`producer`]: librdkafka — the producer, batches in flight, delivery reports, transactions;
//! - [`position`]: exactly-once positions (what a committed Kafka transaction carried);
//! - [`settle`]: how a chunk's delivery outcomes settle (done, dead letters, kept to resend).

#![deny(unsafe_op_in_unsafe_fn)]

pub mod message;
pub mod pack;
pub mod position;
pub mod producer;
pub mod settle;
