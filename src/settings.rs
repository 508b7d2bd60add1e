//! `kafka.config`: librdkafka producer settings kept in a table. This module decides which
//! names a role may set, which values are secrets, and checks each row with librdkafka before it
//! is written. The worker applies the table when it (re)creates its producer.

use crate::error::KafkaError;
use crate::producer;

/// Names pg_kafka sets itself.
const RESERVED: &[&str] = &["bootstrap.servers"];

/// Settings that librdkafka acts on as soon as they are set (it loads the named code).
const LOADS_CODE: &[&str] = &["plugin.library.paths", "ssl.engine.location"];

/// Settings that run commands, load files or code, or turn off TLS verification.
pub fn superuser_only(name: &str, value: &str) -> bool {
    let v = value.trim().to_ascii_lowercase();
    matches!(name, "sasl.kerberos.kinit.cmd" | "plugin.library.paths" | "ssl.engine.location")
        || name.ends_with(".location")
        || (name == "enable.ssl.certificate.verification" && matches!(v.as_str(), "false" | "0" | "off"))
        || (name == "ssl.endpoint.identification.algorithm" && v == "none")
}

/// Settings whose values only a superuser may read back.
pub fn is_secret(name: &str) -> bool {
    name.contains("password")
        || name.contains("secret")
        || name == "ssl.key.pem"
        || name == "ssl_key"
        || name == "sasl.oauthbearer.config"
}

/// Checks one row of kafka.config for a role (`superuser` says whether it is one).
pub fn check(name: &str, value: &str, superuser: bool) -> Result<(), KafkaError> {
    if RESERVED.contains(&name) {
        return Err(KafkaError::ReservedSetting(name.into()));
    }
    if superuser_only(name, value) && !superuser {
        return Err(KafkaError::SuperuserSetting(name.into()));
    }
    if LOADS_CODE.contains(&name) {
        // librdkafka would load the code right here, in this backend: leave that to the worker,
        // which reports a failure in kafka.status.
        return Ok(());
    }
    producer::check_setting(name, value).map_err(|why| {
        let why = if is_secret(name) { "librdkafka refused the value".into() } else { why };
        KafkaError::BadSetting { name: name.into(), why }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dangerous_settings_need_a_superuser() {
        for (n, v) in [
            ("sasl.kerberos.kinit.cmd", "kinit"),
            ("plugin.library.paths", "x.so"),
            ("ssl.ca.location", "/etc/ssl/ca.pem"),
            ("ssl.engine.location", "/x"),
            ("enable.ssl.certificate.verification", "false"),
            ("ssl.endpoint.identification.algorithm", "none"),
        ] {
            assert_eq!(check(n, v, false), Err(KafkaError::SuperuserSetting(n.into())), "{n}");
            assert_eq!(check(n, v, true), Ok(()), "{n}");
        }
        assert_eq!(check("enable.ssl.certificate.verification", "true", false), Ok(()));
        assert_eq!(check("ssl.endpoint.identification.algorithm", "https", false), Ok(()));
    }

    #[test]
    fn reserved_unknown_and_invalid_settings_are_refused() {
        assert!(matches!(check("bootstrap.servers", "x:1", true), Err(KafkaError::ReservedSetting(_))));
        assert!(matches!(check("no.such", "1", true), Err(KafkaError::BadSetting { .. })));
        assert!(matches!(check("compression.type", "best", true), Err(KafkaError::BadSetting { .. })));
        assert_eq!(check("compression.type", "lz4", false), Ok(()));
    }

    #[test]
    fn secrets() {
        for s in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.oauthbearer.client.secret",
            "ssl.key.pem",
        ] {
            assert!(is_secret(s), "{s}");
        }
        assert!(!is_secret("sasl.username"));
    }
}
