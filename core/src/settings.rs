//! The rules of `kafka.config`, the librdkafka producer settings kept in a table: which names
//! nobody may set, which a role other than a superuser may set (an allow-list), which values are
//! secrets or credentials, and how a secret may name a file (`${file:…}`). The extension's
//! `src/settings.rs` turns a [`Refused`] into its `KafkaError`; the worker applies the table
//! when it (re)creates its producer.
//!
//! What must stay true: a setting not on [`ADMIN_SETTINGS`] is a superuser's, whatever it is
//! (librdkafka has aliases, shell templates and plugins); nothing on that list runs code, loads
//! a file, names a host, touches TLS or SASL, or holds a secret.

use crate::producer;

/// Why a `kafka.config` row is refused; each is the `KafkaError` variant of the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// A name pg_kafka sets itself.
    ReservedSetting,
    /// A name outside the allow-list, for a role that is not a superuser.
    SuperuserSetting,
    /// librdkafka refused it (its message; never a secret's value).
    BadSetting(String),
}

/// Names pg_kafka sets itself (and their aliases), or that would break delivery.
/// (`transactional.id`: the worker derives it from the database, for `kafka.delivery = exactly_once`.)
const RESERVED: &[&str] =
    &["bootstrap.servers", "metadata.broker.list", "delivery.report.only.error", "transactional.id"];

/// Settings that librdkafka acts on as soon as they are set (it loads the named code).
const LOADS_CODE: &[&str] = &["plugin.library.paths", "ssl.engine.location", "ssl.providers"];

/// The settings a role other than a superuser may write: batching, compression, sizes,
/// timeouts, retries and socket tuning. None of them runs code, loads a file, names a host,
/// touches TLS or SASL, or holds a secret. Everything else (and any name not known here) is a
/// superuser's: an allow-list, because librdkafka has aliases, shell templates and plugins.
pub const ADMIN_SETTINGS: &[&str] = &[
    "batch.num.messages",
    "batch.size",
    "broker.address.family",
    "broker.address.ttl",
    "client.id",
    "client.rack",
    "compression.codec",
    "compression.level",
    "compression.type",
    "connections.max.idle.ms",
    "delivery.timeout.ms",
    "linger.ms",
    "message.copy.max.bytes",
    "message.max.bytes",
    "message.send.max.retries",
    "message.timeout.ms",
    "metadata.max.age.ms",
    "partitioner",
    "queue.buffering.max.kbytes",
    "queue.buffering.max.messages",
    "queue.buffering.max.ms",
    "receive.message.max.bytes",
    "reconnect.backoff.max.ms",
    "reconnect.backoff.ms",
    "request.timeout.ms",
    "retries",
    "retry.backoff.max.ms",
    "retry.backoff.ms",
    "socket.connection.setup.timeout.ms",
    "socket.keepalive.enable",
    "socket.nagle.disable",
    "socket.receive.buffer.bytes",
    "socket.send.buffer.bytes",
    "socket.timeout.ms",
    "statistics.interval.ms",
    "sticky.partitioning.linger.ms",
    "topic.metadata.propagation.max.ms",
    "topic.metadata.refresh.fast.interval.ms",
    "topic.metadata.refresh.interval.ms",
];

/// Whether a role that is not a superuser may write (or remove) the setting `name`.
pub fn admin_may_set(name: &str) -> bool {
    ADMIN_SETTINGS.contains(&name)
}

/// Settings whose values only a superuser may read back.
pub fn is_secret(name: &str) -> bool {
    name.contains("password")
        || name.contains("secret")
        || name.contains("passphrase")
        || name.ends_with("key.pem")
        || name == "ssl_key"
        || name == "sasl.oauthbearer.config"
}

/// Settings that hold a credential, as a value or as a file that holds one: while one is stored,
/// only a superuser may point the worker at other brokers (which would be handed it).
pub fn holds_credential(name: &str) -> bool {
    is_secret(name)
        || name.ends_with("keytab")
        || name.contains("key.location")
        || name.contains("keystore")
        || name.contains("private.key")
        || name.starts_with("sasl.oauthbearer.assertion")
}

/// The value librdkafka gets for a setting: a secret may name a file on the server instead of
/// holding its value, as Kafka's `FileConfigProvider` does — `${file:/path}` (the whole file,
/// without its final newline) or `${file:/path:key}` (a key of a Java properties file). Only
/// secrets are resolved, and only a superuser may set a secret, so nobody else can make the
/// worker read a file. Errors name the file, never its content.
pub fn resolve(name: &str, value: &str) -> Result<String, String> {
    let Some(reference) = value.strip_prefix("${file:").and_then(|r| r.strip_suffix('}')) else {
        return Ok(value.to_owned());
    };
    if !is_secret(name) {
        return Ok(value.to_owned());
    }
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .map_err(|e| format!("could not read the file of \"{name}\" ({path}): {e}"))
    };
    if std::path::Path::new(reference).is_file() {
        return read(reference).map(|v| v.strip_suffix('\n').unwrap_or(&v).to_owned());
    }
    let (path, key) = reference
        .rsplit_once(':')
        .ok_or_else(|| format!("could not read the file of \"{name}\" ({reference}): it does not exist"))?;
    let text = read(path)?;
    text.lines()
        .filter(|l| !l.trim_start().starts_with(['#', '!']))
        .find_map(|l| {
            let (k, v) = l.split_once(['=', ':'])?;
            (k.trim() == key).then(|| v.trim().to_owned())
        })
        .ok_or_else(|| format!("no key \"{key}\" in the file of \"{name}\" ({path})"))
}

/// Whether pg_kafka sets `name` itself (or it would break delivery): nobody may.
pub fn is_reserved(name: &str) -> bool {
    RESERVED.contains(&name)
}

/// Checks one row of kafka.config for a role (`superuser` says whether it is one).
pub fn check(name: &str, value: &str, superuser: bool) -> Result<(), Refused> {
    if is_reserved(name) {
        return Err(Refused::ReservedSetting);
    }
    if !superuser && !admin_may_set(name) {
        return Err(Refused::SuperuserSetting);
    }
    if LOADS_CODE.contains(&name) {
        // librdkafka would load the code right here, in this backend: leave that to the worker,
        // which reports a failure in kafka.status.
        return Ok(());
    }
    producer::check_setting(name, value).map_err(|why| {
        Refused::BadSetting(if is_secret(name) { "librdkafka refused the value".into() } else { why })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_can_live_in_files() {
        let dir = std::env::temp_dir().join(format!("pg_kafka_secret_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let whole = dir.join("password");
        std::fs::write(&whole, "s3cret\n").unwrap();
        let props = dir.join("client.properties");
        std::fs::write(&props, "# comment\nsasl.password = from-props\nother=1\n").unwrap();
        let w = format!("${{file:{}}}", whole.display());
        let p = format!("${{file:{}:sasl.password}}", props.display());
        assert_eq!(resolve("sasl.password", &w).unwrap(), "s3cret");
        assert_eq!(resolve("sasl.password", &p).unwrap(), "from-props");
        assert_eq!(resolve("client.id", &w).unwrap(), w, "only secrets name files");
        assert_eq!(resolve("sasl.password", "plain").unwrap(), "plain");
        let missing = resolve("sasl.password", "${file:/nonexistent/x}").unwrap_err();
        assert!(missing.contains("/nonexistent"), "{missing}");
        let nokey = resolve("sasl.password", &format!("${{file:{}:nope}}", props.display())).unwrap_err();
        assert!(!nokey.contains("from-props"), "{nokey}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn only_the_allow_list_is_open_to_other_roles() {
        for (n, v) in [
            ("sasl.kerberos.kinit.cmd", "kinit"),
            ("sasl.kerberos.principal", "x; id > proof.txt; #"),
            ("ssl.ca.location", "/etc/ssl/ca.pem"),
            ("enable.ssl.certificate.verification", "f"),
            ("enable.ssl.certificate.verification", "FALSE"),
            ("ssl.endpoint.identification.algorithm", "none"),
            ("security.protocol", "PLAINTEXT"),
            ("sasl.mechanisms", "PLAIN"),
            ("sasl.password", "x"),
            ("debug", "all"),
        ] {
            assert_eq!(check(n, v, false), Err(Refused::SuperuserSetting), "{n}");
            assert_eq!(check(n, v, true), Ok(()), "{n}");
        }
        for n in ["plugin.library.paths", "ssl.engine.location", "ssl.providers", "no.such.setting"] {
            assert_eq!(check(n, "x", false), Err(Refused::SuperuserSetting), "{n}");
        }
        assert_eq!(check("linger.ms", "20", false), Ok(()));
        for n in ADMIN_SETTINGS {
            assert!(
                !is_secret(n) && !n.contains("location") && !n.starts_with("ssl") && !n.starts_with("sasl"),
                "{n}"
            );
        }
    }

    #[test]
    fn reserved_unknown_and_invalid_settings_are_refused() {
        for n in ["bootstrap.servers", "metadata.broker.list", "delivery.report.only.error"] {
            assert!(matches!(check(n, "x:1", true), Err(Refused::ReservedSetting)), "{n}");
        }
        assert!(matches!(check("no.such", "1", true), Err(Refused::BadSetting(_))));
        assert!(matches!(check("compression.type", "best", true), Err(Refused::BadSetting(_))));
        assert_eq!(check("compression.type", "lz4", false), Ok(()));
    }

    #[test]
    fn reserved_names_are_refused_to_everyone_first() {
        for n in RESERVED {
            assert!(is_reserved(n), "{n}");
            assert_eq!(check(n, "x", false), Err(Refused::ReservedSetting), "before the allow-list: {n}");
            assert_eq!(check(n, "x", true), Err(Refused::ReservedSetting), "even for a superuser: {n}");
        }
        assert!(is_reserved("transactional.id"), "the worker derives it for exactly-once delivery");
        for n in ADMIN_SETTINGS {
            assert!(!is_reserved(n), "{n}");
        }
    }

    #[test]
    fn the_allow_list_is_sorted_without_repeats() {
        assert!(
            ADMIN_SETTINGS.windows(2).all(|w| w[0] < w[1]),
            "keep it sorted: a repeat or a misplaced name"
        );
        assert!(admin_may_set("linger.ms") && admin_may_set("compression.type"));
        assert!(!admin_may_set("") && !admin_may_set("linger.ms ") && !admin_may_set("LINGER.MS"));
    }

    #[test]
    fn secrets() {
        for s in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.oauthbearer.client.secret",
            "ssl.key.pem",
            "sasl.oauthbearer.assertion.private.key.passphrase",
            "sasl.oauthbearer.assertion.private.key.pem",
        ] {
            assert!(is_secret(s), "{s}");
            assert!(holds_credential(s), "{s}");
        }
        for s in
            ["sasl.username", "ssl.ca.pem", "ssl.certificate.pem", "ssl.key.location", "sasl.kerberos.keytab"]
        {
            assert!(!is_secret(s), "{s}");
        }
        for s in [
            "ssl.key.location",
            "ssl.keystore.location",
            "sasl.kerberos.keytab",
            "sasl.oauthbearer.assertion.private.key.file",
            "sasl.oauthbearer.assertion.file",
        ] {
            assert!(holds_credential(s), "{s}");
        }
        assert!(!holds_credential("ssl.ca.location") && !holds_credential("sasl.username"));
    }
}
