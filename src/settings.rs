//! `kafka.config`: librdkafka producer settings kept in a table. The rules — which names a role
//! may set, which values are secrets, how a secret names a file — are [`kafka_core::settings`]'s
//! (tested there); this module gives their refusals as [`KafkaError`]s. The worker applies the
//! table when it (re)creates its producer.

use crate::error::KafkaError;
use kafka_core::settings::Refused;

pub use kafka_core::settings::{admin_may_set, holds_credential, is_secret, resolve};

/// Checks one row of kafka.config for a role (`superuser` says whether it is one): not a name
/// pg_kafka sets, on the allow-list unless `superuser`, and a value librdkafka takes.
pub fn check(name: &str, value: &str, superuser: bool) -> Result<(), KafkaError> {
    kafka_core::settings::check(name, value, superuser).map_err(|refused| match refused {
        Refused::ReservedSetting => KafkaError::ReservedSetting(name.into()),
        Refused::SuperuserSetting => KafkaError::SuperuserSetting(name.into()),
        Refused::BadSetting(why) => KafkaError::BadSetting { name: name.into(), why },
    })
}
