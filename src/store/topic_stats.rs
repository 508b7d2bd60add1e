//! `kafka.topics`: per-topic delivery figures (messages delivered and dead-lettered, bytes, when
//! last), which the worker adds to in the same transaction that records a chunk's outcome, so
//! they move exactly with the queue. Operational counters: not dumped, kept until reset by
//! `TRUNCATE kafka.topic_stats`.

use crate::error::KafkaError;
use crate::store::kept::{self, Access};
use pgrx::prelude::*;
use std::collections::BTreeMap;

/// What one chunk did per topic.
#[derive(Default)]
pub struct Counts {
    delivered: i64,
    dead_lettered: i64,
    bytes: i64,
}

/// Per-topic counts of one chunk, filled while its outcomes are recorded.
#[derive(Default)]
pub struct Chunk(BTreeMap<String, Counts>);

impl Chunk {
    pub fn delivered(&mut self, topic: &str, bytes: usize) {
        let c = self.entry(topic);
        c.delivered += 1;
        c.bytes += bytes as i64;
    }

    pub fn dead_lettered(&mut self, topic: &str) {
        self.entry(topic).dead_lettered += 1;
    }

    fn entry(&mut self, topic: &str) -> &mut Counts {
        if !self.0.contains_key(topic) {
            self.0.insert(topic.to_owned(), Counts::default());
        }
        self.0.get_mut(topic).expect("just inserted")
    }

    /// Adds the counts to `kafka.topic_stats` (inside the worker's recording transaction).
    pub fn add(&self) -> Result<(), KafkaError> {
        if self.0.is_empty() {
            return Ok(());
        }
        let topics: Vec<&str> = self.0.keys().map(String::as_str).collect();
        let column = |f: fn(&Counts) -> i64| self.0.values().map(f).collect::<Vec<i64>>();
        const ADD: &str = "INSERT INTO kafka.topic_stats AS s (topic, delivered, dead_lettered, bytes, last_delivery_at, last_dead_letter_at)
             SELECT t, d, x, b,
                    CASE WHEN d OPERATOR(pg_catalog.>) 0 THEN pg_catalog.now() END,
                    CASE WHEN x OPERATOR(pg_catalog.>) 0 THEN pg_catalog.now() END
               FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.int8[]),
                               pg_catalog.unnest($3::pg_catalog.int8[]), pg_catalog.unnest($4::pg_catalog.int8[]))
                    AS f(t, d, x, b)
             ON CONFLICT (topic) DO UPDATE
                SET delivered = s.delivered OPERATOR(pg_catalog.+) excluded.delivered,
                    dead_lettered = s.dead_lettered OPERATOR(pg_catalog.+) excluded.dead_lettered,
                    bytes = s.bytes OPERATOR(pg_catalog.+) excluded.bytes,
                    last_delivery_at = coalesce(excluded.last_delivery_at, s.last_delivery_at),
                    last_dead_letter_at = coalesce(excluded.last_dead_letter_at, s.last_dead_letter_at)";
        let args = [
            topics.into(),
            column(|c| c.delivered).into(),
            column(|c| c.dead_lettered).into(),
            column(|c| c.bytes).into(),
        ];
        Spi::connect_mut(|client| {
            let statement = kept::statement(client, ADD, &args, Access::Write)?;
            client.update(statement, None, &args).map(drop)
        })
        .map_err(|e| KafkaError::Internal(format!("could not count deliveries per topic: {e}")))
    }
}
