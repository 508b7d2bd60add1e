//! The worker's Kafka producer and what it is made from: the [`Source`] (brokers, `kafka.config`,
//! whether this database may deliver), read from pg_kafka's tables, and the [`Connected`]
//! producer of the mode `kafka.delivery` asks for, with librdkafka's settings and their secrets
//! (`${file:…}`, [`crate::settings::resolve`]) resolved when it is made.
//!
//! What must stay true: a producer is made from one [`Source`] and replaced when any of it
//! changes (the worker compares them each pass); secrets are read only when a producer is made,
//! and a secret that cannot be read makes no producer.

use super::exactly_once;
use crate::error::KafkaError;
use crate::gucs::{self, Delivery};
use crate::settings;
use crate::store::{home, read, statistics};
use kafka_core::producer::{base_config, ClientConfig, Producer};
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;

/// What the producer was made from: a change in any of it makes a new producer. Read again when
/// `kafka.close()` or a change to `kafka.broker` or `kafka.config` bumped `close_requests`, and
/// at least every [`super::SOURCE_MAX_AGE`] (for changes made with triggers disabled).
#[derive(PartialEq, Clone, Default)]
pub(super) struct Source {
    pub servers: String,
    pub settings: Vec<(String, String)>,
    /// The count of close requests ([`crate::shared::close_requests`]) it was read at.
    pub close_requests: u64,
    /// Whether this database is where pg_kafka was installed and claimed (not a restored copy).
    pub home: bool,
}

impl Source {
    /// Reads the source, inside the worker's transaction, at `close_requests`.
    pub(super) fn read(close_requests: u64) -> Result<Source, KafkaError> {
        Ok(Source {
            servers: read::bootstrap_servers()?,
            settings: read::producer_settings()?,
            close_requests,
            home: home::at_home()?,
        })
    }
}

/// A producer, and what it was made from.
pub(super) struct Connected {
    pub producer: Producer,
    pub source: Source,
    /// With `kafka.delivery = exactly_once`: `producer` is transactional.
    pub txn: Option<exactly_once::Txn>,
}

impl Connected {
    /// Makes the producer `kafka.delivery` asks for from `source` (exactly once: also reconciles
    /// the outbox with Kafka, so the caller must read the outbox again).
    pub(super) fn new(source: &Source) -> Result<Connected, String> {
        let config = config(source)?;
        let (producer, txn) = match gucs::delivery() {
            Delivery::AtLeastOnce => (Producer::new(&config)?, None),
            Delivery::ExactlyOnce => {
                let (producer, txn) = exactly_once::connect(&config, &source.settings)?;
                (producer, Some(txn))
            }
        };
        Ok(Connected { producer, source: source.clone(), txn })
    }

    /// The producer of immediate sends.
    pub(super) fn immediate(&self) -> &Producer {
        self.txn.as_ref().map_or(&self.producer, |t| &t.immediate)
    }

    /// Keeps librdkafka's latest statistics of each producer in `kafka.producer_statistics`.
    pub(super) fn save_statistics(&self) {
        let immediate = self.txn.as_ref().map(|t| ("immediate", &t.immediate));
        for (name, producer) in std::iter::once(("delivery", &self.producer)).chain(immediate) {
            let Some(json) = producer.take_statistics() else { continue };
            if let Err(e) = BackgroundWorker::transaction(|| statistics::save(name, &json)) {
                warning!("pg_kafka: {e}");
            }
        }
    }
}

/// librdkafka's settings for `source`: pg_kafka's own, then `kafka.config`'s with their secrets
/// read. Every setting is resolved; if some cannot be, the error is the last one's.
fn config(source: &Source) -> Result<ClientConfig, String> {
    let mut config = base_config(&source.servers, gucs::message_timeout_ms());
    let mut unreadable = None;
    for (name, value) in &source.settings {
        match settings::resolve(name, value) {
            Ok(value) => {
                config.set(name, value);
            }
            Err(e) => unreadable = Some(e),
        }
    }
    unreadable.map_or(Ok(config), Err)
}
