//! pg_kafka's code that has nothing to do with PostgreSQL, in a crate that does not depend on
//! pgrx: nothing here can call into PostgreSQL, which is what makes it safe to run on
//! librdkafka's threads (its callbacks) and to use from the benchmarks, and what lets plain
//! `cargo test -p pg_kafka_core` test it.
//!
//! - [`error`]: every error a user can meet, defined once (the extension's `KafkaError` is made
//!   from its list);
//! - [`input`]: what a Kafka record may hold (topic names, headers, partitions, timestamps, keys);
//! - [`settings`]: the rules of `kafka.config` (who may set what, secrets, `${file:…}`);
//! - [`message`]: one Kafka message as the worker reads it back;
//! - [`pack`]: the format of an outbox row (a pack of up to 512 messages of one transaction);
//! - [`commit_marks`]: the commit fields WAL capture fills into a streamed transaction's events
//!   when they are read back;
//! - [`producer`]: librdkafka — the producer, batches in flight, delivery reports, transactions;
//! - [`position`]: exactly-once positions (what a committed Kafka transaction carried);
//! - [`settle`]: how a chunk's delivery outcomes settle (done, dead letters, kept to resend).

#![deny(unsafe_op_in_unsafe_fn)]

pub mod commit_marks;
pub mod error;
pub mod input;
pub mod message;
pub mod pack;
pub mod position;
pub mod producer;
pub mod settings;
pub mod settle;
pub mod stored;
