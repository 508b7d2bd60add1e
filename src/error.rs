//! The one error type of pg_kafka. Every error a user can meet in SQL is a variant here, with its
//! SQLSTATE and a hint saying what to do.
//!
//! Failures travel up as `Result<_, KafkaError>`; SQL functions return [`SqlResult`], which pgrx
//! reports as the error's own SQLSTATE, message and hint. Only where PostgreSQL gives no way to
//! return an error — trigger functions (pgrx turns a trigger's `Err` into an internal error),
//! transaction callbacks and hooks — does the entry point call [`KafkaError::raise`], once, on
//! its outermost line.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};
use std::fmt;

/// Kafka's own limit on topic names.
pub const MAX_TOPIC_LEN: usize = 249;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KafkaError {
    /// The topic argument is NULL.
    NullTopic,
    /// The topic argument is the empty string.
    EmptyTopic,
    /// The topic name is longer than Kafka allows.
    TopicTooLong(usize),
    /// The topic name holds a character Kafka rejects.
    TopicBadChar { topic: String, ch: char },
    /// The topic is `.` or `..`.
    TopicReserved(String),
    /// Headers that are neither an object nor an array of name/value pairs of strings.
    BadHeaders(String),
    /// A negative partition.
    NegativePartition(i32),
    /// A timestamp Kafka cannot carry (before 1970, or infinite).
    BadTimestamp(String),
    /// Neither value nor key: a record that says nothing.
    NoValueNoKey,
    /// Both `key` and `key_bytes` given.
    TwoKeys,
    /// A kafka.config name pg_kafka sets itself.
    ReservedSetting(String),
    /// A kafka.config setting outside the allow-list, written (or removed) by a non-superuser.
    SuperuserSetting(String),
    /// A kafka.broker change by a non-superuser while a secret is stored.
    BrokerWithSecrets,
    /// A timeout that is zero or negative.
    BadTimeout,
    /// Every immediate-send slot is busy.
    ImmediateBusy,
    /// The calling role holds its share of the immediate-send slots.
    ImmediateRoleBusy,
    /// Kafka refused an immediate send (its reason).
    ImmediateRefused(String),
    /// No acknowledgement within the caller's timeout.
    ImmediateTimeout(String),
    /// librdkafka refused a kafka.config setting (its message).
    BadSetting { name: String, why: String },
    /// The library was loaded without `shared_preload_libraries`: no worker would deliver.
    NotPreloaded,
    /// `produce()` ran in a database the worker does not serve.
    WrongDatabase { current: String, served: String },
    /// pg_kafka's tables are missing...
    OutboxMissing,
    /// ...or were altered (what was found).
    OutboxAltered(String),
    /// Schema `kafka` is owned by a role that is not a superuser: refused by code that runs with
    /// more rights than its owner's.
    UntrustedSchema,
    /// A trigger function called the wrong way (not as the statement-level AFTER trigger it is).
    BadTrigger(String),
    /// A failure inside pg_kafka that no input explains (a database call failed).
    Internal(String),
    /// Capturing or backfilling a table without the privileges its owner would need (the table).
    CaptureDenied(String),
    /// pg_kafka's queue (its tables on disk, with what the transaction holds unwritten) is larger
    /// than the session's `kafka.max_backlog` (bytes).
    BacklogFull { size: i64, limit: i64 },
    /// `kafka.release()` in the database that is its queue's home (not a copy whose delivery is
    /// held).
    NotACopy,
    /// `DROP EXTENSION kafka` while committed messages wait (how many).
    MessagesWaiting(i64),
    /// A table that is not captured where a captured one is needed (the table).
    NotCaptured(String),
    /// An array whose elements are not rows of the captured table (the type found).
    NotTableRows(String),
    /// A role other than capture writing to a capture's topic (the topic).
    CaptureTopic(String),
    /// A topic outside the calling role's grants in `kafka.topic_grants` (the topic).
    TopicDenied(String),
    /// A message queued (by a relayed outbox) by a role that may not produce (the topic).
    NotProducer(String),
    /// pg_kafka's own topic (`kafka.position_topic`, `kafka.transaction_topic`), written by the
    /// worker only (the topic).
    WorkerTopic(String),
    /// A captured value that Debezium's encoding cannot carry, where Debezium would write a wrong
    /// value or stop: refused, never sent wrong (the column, the type and value, why).
    OutOfDebeziumRange { column: String, value: String, why: String },
}

/// A value from the user as shown in a message: at most 100 characters, quoted.
pub fn shown(value: &str) -> String {
    const MAX: usize = 100;
    match value.char_indices().nth(MAX) {
        None => format!("\"{value}\""),
        Some((cut, _)) => format!("\"{}…\" ({} bytes)", &value[..cut], value.len()),
    }
}

impl KafkaError {
    pub fn sqlstate(&self) -> PgSqlErrorCode {
        use KafkaError::*;
        match self {
            NullTopic => PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            EmptyTopic
            | TopicTooLong(_)
            | TopicBadChar { .. }
            | TopicReserved(_)
            | BadHeaders(_)
            | NegativePartition(_)
            | TwoKeys => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            BadTimestamp(_) => PgSqlErrorCode::ERRCODE_DATETIME_FIELD_OVERFLOW,
            ReservedSetting(_) | BadSetting { .. } => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            SuperuserSetting(_) | BrokerWithSecrets | UntrustedSchema => {
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE
            }
            ImmediateBusy | ImmediateRoleBusy | BacklogFull { .. } => {
                PgSqlErrorCode::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED
            }
            BadTimeout => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            ImmediateRefused(_) | ImmediateTimeout(_) => PgSqlErrorCode::ERRCODE_CONNECTION_EXCEPTION,
            NoValueNoKey => PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            NotPreloaded | WrongDatabase { .. } | OutboxMissing | OutboxAltered(_) | NotCaptured(_) => {
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
            }
            BadTrigger(_) => PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
            Internal(_) => PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            MessagesWaiting(_) => PgSqlErrorCode::ERRCODE_OBJECT_IN_USE,
            CaptureDenied(_) | CaptureTopic(_) | TopicDenied(_) | NotProducer(_) | WorkerTopic(_) => {
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE
            }
            NotTableRows(_) => PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
            OutOfDebeziumRange { .. } => PgSqlErrorCode::ERRCODE_DATETIME_FIELD_OVERFLOW,
            NotACopy => PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        }
    }

    pub fn hint(&self) -> String {
        use KafkaError::*;
        let topic_rule = "Kafka topic names use only ASCII letters, digits, '.', '_' and '-', \
                          at most 249 characters, and are not '.' or '..'.";
        match self {
            NullTopic | EmptyTopic => "Pass the name of the Kafka topic to produce to.".into(),
            TopicTooLong(_) | TopicBadChar { .. } | TopicReserved(_) => topic_rule.into(),
            BadHeaders(_) => "Pass headers as a JSON object of string or null values, \
                              e.g. '{\"source\": \"pg\"}', or as an array of [name, value] pairs \
                              when a name repeats, e.g. '[[\"tag\", \"a\"], [\"tag\", \"b\"]]'."
                .into(),
            NegativePartition(_) => "Pass a partition number from 0, or NULL to let Kafka choose.".into(),
            BadTimestamp(_) => "Kafka timestamps count milliseconds from 1970-01-01 00:00 UTC; pass a \
                                later, finite timestamp, or NULL for the time of sending."
                .into(),
            NoValueNoKey => "A record needs a value or a key; a NULL value with a key is a tombstone.".into(),
            TwoKeys => "Pass the key either as text (key) or as bytes (key_bytes), not both.".into(),
            ReservedSetting(name) if name == "bootstrap.servers" => {
                "List brokers in kafka.broker: INSERT INTO kafka.broker VALUES ('host', 9092).".into()
            }
            ReservedSetting(_) => "pg_kafka sets this itself; it cannot be changed.".into(),
            SuperuserSetting(_) => "Roles other than superusers may change only the settings in pg_kafka's \
                                    allow-list (batching, compression, sizes, timeouts, retries: see \
                                    docs/security.md); brokers, TLS, SASL, files and secrets are a \
                                    superuser's."
                .into(),
            BrokerWithSecrets => "Brokers decide where the stored credentials are sent: while kafka.config \
                                  holds a secret, only a superuser may change kafka.broker."
                .into(),
            ImmediateRoleBusy => "One role may wait on at most this many immediate sends at once, so that \
                                  others get theirs; retry, or use kafka.publish(), which queues without \
                                  limit."
                .into(),
            BadTimeout => "Pass a positive interval, e.g. timeout => '5 seconds'.".into(),
            ImmediateBusy => "Too many immediate sends wait at once; retry, or use kafka.publish(), which \
                              queues without limit."
                .into(),
            ImmediateRefused(_) => "This is Kafka's (or librdkafka's) answer; nothing was queued.".into(),
            ImmediateTimeout(_) => {
                "The message may still reach Kafka. Raise the timeout, check kafka.status, \
                                    or use kafka.publish() to queue it transactionally."
                    .into()
            }
            BadSetting { .. } => {
                "See librdkafka's CONFIGURATION.md for the producer settings and their values.".into()
            }
            NotPreloaded => "Add 'pg_kafka' to shared_preload_libraries in postgresql.conf and restart \
                             PostgreSQL; the background worker that delivers messages starts only then."
                .into(),
            WrongDatabase { current, .. } => format!(
                "The pg_kafka worker serves the database named by kafka.database; set \
                 kafka.database = '{current}' and reload, or produce from that database."
            ),
            OutboxMissing | OutboxAltered(_) => "After installing a new pg_kafka library, run ALTER EXTENSION kafka UPDATE; \
                              otherwise recreate the extension (DROP EXTENSION kafka; CREATE EXTENSION kafka)."
                .into(),
            UntrustedSchema => "A role that owns schema kafka could change what pg_kafka runs with more rights \
                                than its own. If that role is trusted, ALTER SCHEMA kafka OWNER TO a superuser; \
                                otherwise check the schema's objects, DROP EXTENSION kafka and create it again."
                .into(),
            BadTrigger(_) => "Use kafka.capture() or kafka.capture_outbox(), which create the triggers \
                              the right way."
                .into(),
            Internal(_) => "This is a bug or a damaged installation; the server log has the details.".into(),
            CaptureDenied(_) => {
                "Capturing a table takes the TRIGGER privilege on it and backfilling it also \
                                 SELECT, as for its owner; ask the table's owner to capture it."
                    .into()
            }
            MessagesWaiting(_) => "Wait until kafka.status shows a backlog of 0 (the worker delivers them), or \
                                   discard them first: TRUNCATE kafka.outbox, kafka.outbox_commit; then drop."
                .into(),
            BacklogFull { .. } => "The queue waits for Kafka (see kafka.status), and dead letters count too \
                                   (kafka.purge_dead_letters); retry once it has drained, queue less in one \
                                   transaction, or ask a superuser to raise kafka.max_backlog for your role."
                .into(),
            NotACopy => "kafka.release() is only for a restored copy (pg_dump/restore or CREATE DATABASE ... \
                         TEMPLATE) whose delivery is held: there kafka.status.last_error says \"delivery held: \
                         this database is a copy\". Here the worker delivers the queue itself."
                .into(),
            NotCaptured(_) => {
                "Call kafka.capture() first: a backfill uses its topic, key and columns.".into()
            }
            NotTableRows(_) => "Pass an array of the captured table's own rows, e.g. \
                                ARRAY(SELECT t FROM t ORDER BY id)."
                .into(),
            CaptureTopic(_) => "This topic carries a captured table's change events, which only its \
                                capture writes; produce to another topic."
                .into(),
            NotProducer(_) => "Producing takes the kafka_producer role (EXECUTE on kafka.produce), also through \
                               a relayed outbox table: GRANT kafka_producer TO <your role>;"
                .into(),
            TopicDenied(_) => "kafka.topic_grants lists the topics each role may produce to or capture into; ask an \
                               administrator to add a row for your role."
                .into(),
            OutOfDebeziumRange { .. } => "Change events carry each value as Debezium would, and pg_kafka refuses \
                                          one Debezium would send wrong: keep timestamp values up to \
                                          294247-01-10 04:00:54.775807 (timestamp(0) to timestamp(3), sent \
                                          as milliseconds, and timestamptz hold any) and intervals under \
                                          2147483648 hours, or capture the table without the column \
                                          (kafka.capture(..., exclude_columns => ARRAY['column']))."
                .into(),
            WorkerTopic(_) => "kafka.position_topic and kafka.transaction_topic are written by pg_kafka's \
                               worker only (a record there could stop delivery or skip messages); \
                               produce to another topic."
                .into(),
        }
    }

    /// Reports this error as a PostgreSQL ERROR; does not return. For entry points that cannot
    /// return an error (see the module's header).
    pub fn raise(self) -> ! {
        ErrorReport::from(self).report(PgLogLevel::ERROR);
        unreachable!("ereport(ERROR) returned")
    }
}

/// What pg_kafka's SQL functions return: pgrx reports an `Err` with its SQLSTATE and hint.
pub type SqlResult<T> = Result<T, ErrorReport>;

impl From<KafkaError> for ErrorReport {
    fn from(e: KafkaError) -> ErrorReport {
        let hint = e.hint();
        ErrorReport::new(e.sqlstate(), e.to_string(), "pg_kafka").set_hint(hint)
    }
}

impl fmt::Display for KafkaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use KafkaError::*;
        match self {
            NullTopic => write!(f, "topic must not be NULL"),
            EmptyTopic => write!(f, "topic must not be empty"),
            TopicTooLong(n) => {
                write!(f, "topic name is {n} characters long, longer than Kafka's {MAX_TOPIC_LEN}")
            }
            TopicBadChar { topic, ch } => {
                write!(f, "topic name {} contains {ch:?}, which Kafka rejects", shown(topic))
            }
            TopicReserved(t) => write!(f, "topic name {} is not allowed by Kafka", shown(t)),
            BadHeaders(why) => write!(f, "invalid Kafka headers: {}", cut(why)),
            NegativePartition(p) => write!(f, "partition must not be negative, got {p}"),
            BadTimestamp(t) => write!(f, "timestamp {} cannot be a Kafka record timestamp", cut(t)),
            NoValueNoKey => write!(f, "value and key are both NULL"),
            TwoKeys => write!(f, "key and key_bytes are both given"),
            ReservedSetting(name) => write!(f, "{} cannot be set in kafka.config", shown(name)),
            SuperuserSetting(name) => write!(f, "only a superuser may set {}", shown(name)),
            BrokerWithSecrets => {
                write!(f, "only a superuser may change kafka.broker while kafka.config holds a secret")
            }
            BadTimeout => write!(f, "timeout must be positive"),
            ImmediateBusy => {
                write!(f, "all {} immediate-send slots are in use", crate::gucs::IMMEDIATE_SLOTS)
            }
            ImmediateRoleBusy => {
                write!(
                    f,
                    "this role already waits on {} immediate sends",
                    crate::gucs::IMMEDIATE_SLOTS_PER_ROLE
                )
            }
            ImmediateRefused(why) => write!(f, "Kafka did not take the message: {why}"),
            ImmediateTimeout(t) => write!(f, "no acknowledgement from Kafka within {t}"),
            BadSetting { name, why } => write!(f, "invalid librdkafka setting {}: {}", shown(name), cut(why)),
            NotPreloaded => write!(f, "pg_kafka is not loaded through shared_preload_libraries"),
            WrongDatabase { current, served } => write!(
                f,
                "the pg_kafka worker delivers messages from database \"{served}\", not \"{current}\""
            ),
            OutboxMissing => write!(f, "pg_kafka's outbox tables are missing or altered"),
            OutboxAltered(what) => write!(f, "pg_kafka's tables were altered: {what}"),
            UntrustedSchema => write!(f, "schema kafka is owned by a role that is not a superuser"),
            BadTrigger(why) => write!(f, "{why}"),
            Internal(why) => write!(f, "pg_kafka: {why}"),
            CaptureDenied(table) => write!(f, "permission denied to capture table {table}"),
            BacklogFull { size, limit } => write!(
                f,
                "pg_kafka's queue (kafka.outbox and kafka.dead_letter on disk, with this transaction's \
                 messages) takes {} kB, more than this session's kafka.max_backlog of {} kB",
                size / 1024,
                limit / 1024
            ),
            NotACopy => write!(
                f,
                "kafka.release() refused: this database is its queue's home, not a copy whose delivery is held"
            ),
            MessagesWaiting(n) => {
                write!(f, "cannot drop pg_kafka: {n} committed messages wait in kafka.outbox")
            }
            NotCaptured(table) => write!(f, "table {table} is not captured"),
            NotTableRows(found) => write!(f, "expected an array of rows of the captured table, got {found}"),
            CaptureTopic(t) => write!(f, "topic {} is written by a capture only", shown(t)),
            TopicDenied(t) => write!(f, "permission denied to write topic {}", shown(t)),
            NotProducer(t) => {
                write!(f, "permission denied to produce to topic {}: this role may not produce", shown(t))
            }
            WorkerTopic(t) => write!(f, "topic {} is pg_kafka's own", shown(t)),
            OutOfDebeziumRange { column, value, why } => {
                write!(f, "cannot capture column {}: {} {why}", shown(column), cut(value))
            }
        }
    }
}

/// A message that may hold user input, cut to about 100 characters.
fn cut(text: &str) -> String {
    match text.char_indices().nth(120) {
        None => text.to_owned(),
        Some((at, _)) => format!("{}… ({} bytes)", &text[..at], text.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_input_is_shown_at_most_about_100_characters() {
        let long = "x".repeat(10_000_000);
        for e in [
            KafkaError::SuperuserSetting(long.clone()),
            KafkaError::ReservedSetting(long.clone()),
            KafkaError::BadSetting { name: long.clone(), why: long.clone() },
            KafkaError::BadHeaders(long.clone()),
            KafkaError::BadTimestamp(long.clone()),
            KafkaError::TopicBadChar { topic: long.clone(), ch: ' ' },
            KafkaError::TopicDenied(long.clone()),
        ] {
            assert!(e.to_string().len() < 400, "{}", &e.to_string()[..400]);
        }
        assert_eq!(shown("abc"), "\"abc\"");
        assert!(shown(&"é".repeat(200)).ends_with("…\" (400 bytes)"), "{}", shown(&"é".repeat(200)));
    }

    #[test]
    fn every_error_has_a_hint() {
        let all = [
            KafkaError::NullTopic,
            KafkaError::EmptyTopic,
            KafkaError::TopicTooLong(300),
            KafkaError::TopicReserved(".".into()),
            KafkaError::NotPreloaded,
            KafkaError::BadHeaders("x".into()),
            KafkaError::NegativePartition(-1),
            KafkaError::BadTimestamp("x".into()),
            KafkaError::NoValueNoKey,
            KafkaError::TwoKeys,
            KafkaError::ReservedSetting("x".into()),
            KafkaError::ImmediateBusy,
            KafkaError::ImmediateRoleBusy,
            KafkaError::BadTimeout,
            KafkaError::ImmediateRefused("x".into()),
            KafkaError::ImmediateTimeout("x".into()),
            KafkaError::SuperuserSetting("x".into()),
            KafkaError::BrokerWithSecrets,
            KafkaError::BadSetting { name: "x".into(), why: "y".into() },
            KafkaError::WrongDatabase { current: "a".into(), served: "b".into() },
            KafkaError::OutboxMissing,
            KafkaError::OutboxAltered("x".into()),
            KafkaError::UntrustedSchema,
            KafkaError::BadTrigger("x".into()),
            KafkaError::Internal("x".into()),
            KafkaError::CaptureDenied("x".into()),
            KafkaError::BacklogFull { size: 2048, limit: 1024 },
            KafkaError::NotACopy,
            KafkaError::NotTableRows("x".into()),
            KafkaError::CaptureTopic("x".into()),
            KafkaError::TopicDenied("x".into()),
            KafkaError::NotProducer("x".into()),
            KafkaError::WorkerTopic("x".into()),
            KafkaError::OutOfDebeziumRange { column: "x".into(), value: "y".into(), why: "z".into() },
        ];
        for e in all {
            assert!(!e.hint().is_empty(), "{e}");
        }
    }
}
