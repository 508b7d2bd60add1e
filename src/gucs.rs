//! Settings (GUCs) of pg_kafka: the statics, their registration in [`init`], and typed getters.
//!
//! Every setting is documented in docs/settings.md's table; keep the two in step. All of them
//! are `SIGHUP` settings: the worker re-reads them on `pg_reload_conf()`.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::PostgresGucEnum;
use std::ffi::CString;
use std::time::Duration;

/// The databases whose `kafka.outbox` a worker drains: one name, a comma-separated list, or `*`
/// (see [`Databases`]).
static DATABASE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"postgres"));
/// Most messages the worker reads and sends in one batch.
static BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(20_000);
/// Most payload bytes the worker reads in one batch (the first message is always taken).
static BATCH_BYTES: GucSetting<i32> = GucSetting::<i32>::new(64 * 1024 * 1024);
/// How long an idle worker sleeps when no commit wakes it (milliseconds).
static POLL_INTERVAL_MS: GucSetting<i32> = GucSetting::<i32>::new(1_000);
/// How long the worker waits after a small batch so that a steady stream of commits makes fewer,
/// larger batches (milliseconds; like librdkafka's linger.ms).
static LINGER_MS: GucSetting<i32> = GucSetting::<i32>::new(20);
/// How long the worker waits between passes while a busy stream of transactions is decoded
/// from the WAL (milliseconds).
static WAL_LINGER_MS: GucSetting<i32> = GucSetting::<i32>::new(60);
/// Upper bound of the worker's exponential back-off after Kafka errors (milliseconds).
static RETRY_BACKOFF_MAX_MS: GucSetting<i32> = GucSetting::<i32>::new(10_000);
/// librdkafka `message.timeout.ms` for one delivery attempt; undelivered messages stay queued.
static MESSAGE_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(30_000);
/// After how many failed attempts (while other messages were delivered) a message is
/// dead-lettered; 0: never.
static DEAD_LETTER_AFTER: GucSetting<i32> = GucSetting::<i32>::new(0);
static WAL_RETAINED_WARNING_MB: GucSetting<i32> = GucSetting::<i32>::new(1024);
/// Size of kafka.outbox above which a session may not queue more (kB); 0: no limit.
static MAX_BACKLOG_KB: GucSetting<i32> = GucSetting::<i32>::new(0);
/// Topic of Debezium's transaction metadata (BEGIN/END records); empty: none.
static TRANSACTION_TOPIC: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c""));
/// At least once (the default) or exactly once (Kafka transactions).
static DELIVERY: GucSetting<Delivery> = GucSetting::<Delivery>::new(Delivery::AtLeastOnce);
/// The topic of position records in exactly-once mode.
static POSITION_TOPIC: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"pg_kafka_positions"));

/// Fixed limits, not settings: how many immediate sends (`kafka.autonomous_publish`) may wait at
/// once (slots in shared memory, sized at server start)...
pub const IMMEDIATE_SLOTS: usize = 16;
/// ...and how many of them one role may hold, so that one role cannot starve the others.
pub const IMMEDIATE_SLOTS_PER_ROLE: usize = 4;

/// `kafka.delivery`: how the worker delivers.
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum Delivery {
    /// Idempotent producer; a crash between Kafka's acknowledgement and the worker's recording
    /// sends a batch again.
    #[name = c"at_least_once"]
    AtLeastOnce,
    /// Each batch is a Kafka transaction that also carries the worker's position.
    #[name = c"exactly_once"]
    ExactlyOnce,
}

/// Registers every setting; called once from `_PG_init`.
pub fn init() {
    GucRegistry::define_string_guc(
        c"kafka.database",
        c"Databases whose kafka.outbox pg_kafka delivers: a name, a comma-separated list, or * for every database with the extension.",
        c"produce() refuses to queue messages in any other database. A name with a comma or a space is written in double quotes.",
        &DATABASE,
        GucContext::Sighup,
        GucFlags::default(),
    );
    int(
        c"kafka.batch_size",
        c"Most messages the worker sends per batch.",
        &BATCH_SIZE,
        1,
        1_000_000,
        GucFlags::default(),
    );
    int(
        c"kafka.batch_bytes",
        c"Most payload bytes the worker reads per batch.",
        &BATCH_BYTES,
        1024,
        i32::MAX,
        GucFlags::UNIT_BYTE,
    );
    int(
        c"kafka.poll_interval",
        c"How long the idle worker sleeps when no commit wakes it.",
        &POLL_INTERVAL_MS,
        10,
        3_600_000,
        GucFlags::UNIT_MS,
    );
    int(
        c"kafka.linger",
        c"How long the worker waits after a small batch for more commits to gather.",
        &LINGER_MS,
        0,
        10_000,
        GucFlags::UNIT_MS,
    );
    int(
        c"kafka.wal_linger",
        c"How long the worker waits between passes while transactions decoded from the WAL arrive at 330 a second or more.",
        &WAL_LINGER_MS,
        0,
        10_000,
        GucFlags::UNIT_MS,
    );
    int(
        c"kafka.retry_backoff_max",
        c"Longest wait between delivery attempts while Kafka fails.",
        &RETRY_BACKOFF_MAX_MS,
        10,
        3_600_000,
        GucFlags::UNIT_MS,
    );
    int(
        c"kafka.message_timeout",
        c"librdkafka message.timeout.ms of one delivery attempt; failed messages stay queued.",
        &MESSAGE_TIMEOUT_MS,
        100,
        3_600_000,
        GucFlags::UNIT_MS,
    );
    // Superuser-set, and settable per role (ALTER ROLE ... SET kafka.max_backlog): a fair share.
    GucRegistry::define_int_guc(
        c"kafka.max_backlog",
        c"Disk taken by pg_kafka's queue (kafka.outbox, kafka.outbox_commit and kafka.dead_letter, with their TOAST tables and indexes) plus the transaction's unwritten messages, above which a transaction may not queue more messages (0: no limit).",
        c"Set it per role to keep one application from filling the disk for everyone; checked as messages are queued.",
        &MAX_BACKLOG_KB,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_KB,
    );
    GucRegistry::define_enum_guc(
        c"kafka.delivery",
        c"at_least_once, or exactly_once: each batch is a Kafka transaction (read_committed consumers see no duplicates).",
        c"exactly_once needs brokers that host Kafka's transaction log; see docs/guarantees.md.",
        &DELIVERY,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"kafka.transaction_topic",
        c"Topic of transaction metadata (Debezium's BEGIN/END records); capture events then carry a transaction block.",
        c"Empty (the default): no transaction metadata, and the events' transaction block is null.",
        &TRANSACTION_TOPIC,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"kafka.position_topic",
        c"Compacted topic where the worker keeps its position in exactly_once mode.",
        c"Created on first use (one partition, replicated like Kafka's transaction log).",
        &POSITION_TOPIC,
        GucContext::Sighup,
        GucFlags::default(),
    );
    int(
        c"kafka.dead_letter_after",
        c"Failed attempts after which a message is dead-lettered while others are delivered (0: never).",
        &DEAD_LETTER_AFTER,
        0,
        1_000_000,
        GucFlags::default(),
    );
    int(
        c"kafka.wal_retained_warning",
        c"WAL that pg_kafka's replication slot keeps on disk above which the worker logs a WARNING (0: never).",
        &WAL_RETAINED_WARNING_MB,
        0,
        i32::MAX,
        GucFlags::UNIT_MB,
    );
}

/// `kafka.wal_retained_warning` in bytes; None: never warn.
pub fn wal_retained_warning() -> Option<u64> {
    (WAL_RETAINED_WARNING_MB.get() > 0).then(|| WAL_RETAINED_WARNING_MB.get() as u64 * 1024 * 1024)
}

fn int(
    name: &'static std::ffi::CStr,
    desc: &'static std::ffi::CStr,
    setting: &'static GucSetting<i32>,
    min: i32,
    max: i32,
    flags: GucFlags,
) {
    GucRegistry::define_int_guc(name, desc, c"", setting, min, max, GucContext::Sighup, flags);
}

/// `kafka.database` as written.
pub fn database() -> String {
    DATABASE.get().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The databases `kafka.database` names.
#[derive(Debug, PartialEq, Eq)]
pub enum Databases {
    /// `*`: every database that allows connections and is not a template (a worker connected
    /// to a template would make every `CREATE DATABASE` from it fail).
    All,
    /// These, as written (a name is compared as it is, case included).
    Named(Vec<String>),
}

impl Databases {
    /// Parses `kafka.database`: names separated by commas, blanks around them ignored; a name in
    /// double quotes may hold commas and blanks (`""` is a quote in it).
    pub fn parse(spec: &str) -> Databases {
        if spec.trim() == "*" {
            return Databases::All;
        }
        let mut names = Vec::new();
        let mut chars = spec.chars().peekable();
        loop {
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            let mut name = String::new();
            if chars.next_if_eq(&'"').is_some() {
                while let Some(c) = chars.next() {
                    match c {
                        '"' if chars.next_if_eq(&'"').is_some() => name.push('"'),
                        '"' => break,
                        c => name.push(c),
                    }
                }
                while chars.next_if(|&c| c != ',').is_some() {}
            } else {
                while let Some(c) = chars.next_if(|&c| c != ',') {
                    name.push(c);
                }
                name.truncate(name.trim_end().len());
            }
            if !name.is_empty() && !names.contains(&name) {
                names.push(name);
            }
            if chars.next().is_none() {
                return Databases::Named(names);
            }
        }
    }

    /// Whether a database of this name is served.
    pub fn serves(&self, name: &str, is_template: bool) -> bool {
        match self {
            Databases::All => !is_template,
            Databases::Named(names) => names.iter().any(|n| n == name),
        }
    }
}

/// The databases `kafka.database` names, parsed.
pub fn databases() -> Databases {
    Databases::parse(&database())
}

pub fn batch_size() -> usize {
    BATCH_SIZE.get() as usize
}

pub fn batch_bytes() -> i64 {
    BATCH_BYTES.get() as i64
}

pub fn poll_interval() -> Duration {
    Duration::from_millis(POLL_INTERVAL_MS.get() as u64)
}

pub fn linger() -> Duration {
    Duration::from_millis(LINGER_MS.get() as u64)
}

pub fn wal_linger() -> Duration {
    Duration::from_millis(WAL_LINGER_MS.get() as u64)
}

pub fn retry_backoff_max() -> Duration {
    Duration::from_millis(RETRY_BACKOFF_MAX_MS.get() as u64)
}

pub fn message_timeout_ms() -> i32 {
    MESSAGE_TIMEOUT_MS.get()
}

/// The session's `kafka.max_backlog` in bytes; None: no limit.
pub fn max_backlog_bytes() -> Option<i64> {
    (MAX_BACKLOG_KB.get() > 0).then(|| i64::from(MAX_BACKLOG_KB.get()) * 1024)
}

/// None: retry for ever.
pub fn dead_letter_after() -> Option<u32> {
    (DEAD_LETTER_AFTER.get() > 0).then(|| DEAD_LETTER_AFTER.get() as u32)
}

pub fn delivery() -> Delivery {
    DELIVERY.get()
}

pub fn position_topic() -> String {
    POSITION_TOPIC.get().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Whether `topic` is one the worker writes for itself (position or transaction metadata).
/// Asked for every message queued: compares in place, without copying the settings.
pub fn worker_topic(topic: &str) -> bool {
    [&POSITION_TOPIC, &TRANSACTION_TOPIC].into_iter().any(|g| {
        // SAFETY: a string GUC's variable, which PostgreSQL keeps NULL or pointing at a
        // NUL-terminated string it owns; read in the backend's own thread, and not kept.
        let p = unsafe { *g.as_ptr() };
        // SAFETY: `p` is not NULL, so it points at that NUL-terminated string.
        !p.is_null() && unsafe { std::ffi::CStr::from_ptr(p) }.to_bytes() == topic.as_bytes()
    })
}

/// None: no transaction metadata.
pub fn transaction_topic() -> Option<String> {
    TRANSACTION_TOPIC.get().map(|s| s.to_string_lossy().into_owned()).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::Databases::{self, All, Named};

    fn named(names: &[&str]) -> Databases {
        Named(names.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn kafka_database_names_one_database_a_list_or_all() {
        assert_eq!(Databases::parse("postgres"), named(&["postgres"]));
        assert_eq!(Databases::parse(" shop , Billing,shop,, "), named(&["shop", "Billing"]));
        assert_eq!(Databases::parse(r#""a, b" , "say ""hi""",c d"#), named(&["a, b", "say \"hi\"", "c d"]));
        assert_eq!(Databases::parse(" * "), All);
        assert_eq!(Databases::parse(""), named(&[]));
        assert!(All.serves("x", false) && !All.serves("template1", true));
        assert!(named(&["Shop"]).serves("Shop", true) && !named(&["Shop"]).serves("shop", false));
    }
}
