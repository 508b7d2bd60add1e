//! Every error a user can meet in SQL, defined once: its name, SQLSTATE (with PostgreSQL's
//! condition name), message and hint, in the list of [`kafka_errors!`](crate::kafka_errors).
//!
//! The list is a macro so that each crate can make of it what it needs without repeating it:
//! the extension (`src/error.rs`) expands it into `KafkaError` (the enum, its messages and hints,
//! its PostgreSQL SQLSTATE, and what `kafka_internal.raise_error()` raises from pg_kafka's SQL);
//! this crate expands it into [`catalog::ERRORS`], against which plain tests check the docs'
//! error table (`docs/errors.md`) and pg_kafka's SQL (`sql/*.sql`).
//!
//! What must stay true: a SQLSTATE, once users have seen it, does not change; the docs list every
//! error; and SQL raises an error of this list through `kafka_internal.raise_error('Name', …)`,
//! never with a `RAISE … USING ERRCODE` of its own — except where that function cannot exist yet
//! (the first check of `CREATE EXTENSION`), whose SQLSTATE and hint the tests compare with the
//! variant's.

pub mod catalog;

/// Kafka's own limit on topic names.
pub const MAX_TOPIC_LEN: usize = 249;

/// The hint of every error about a topic name.
pub const TOPIC_RULE: &str = "Kafka topic names use only ASCII letters, digits, '.', '_' and '-', \
                              at most 249 characters, and are not '.' or '..'.";

/// A value from the user as shown in a message: at most 100 characters, quoted.
pub fn shown(value: &str) -> String {
    const MAX: usize = 100;
    match value.char_indices().nth(MAX) {
        None => format!("\"{value}\""),
        Some((cut, _)) => format!("\"{}…\" ({} bytes)", &value[..cut], value.len()),
    }
}

/// A message that may hold user input, cut to about 100 characters.
pub fn cut(text: &str) -> String {
    match text.char_indices().nth(120) {
        None => text.to_owned(),
        Some((at, _)) => format!("{}… ({} bytes)", &text[..at], text.len()),
    }
}

/// The list of pg_kafka's errors, handed to the macro `$then`. Each entry:
///
/// ```text
/// /// What happened (the variant's doc).
/// Name(field: Type, …)  or  Name { field: Type, … }  or  Name
///     = "SQLSTATE" condition_name {
///     message: ("format string", args…),   // over the fields, as for format!
///     hint: "text",                          // or { an expression over the fields }
/// }
/// ```
///
/// Messages and brace hints are Rust expressions over the variant's fields; they are evaluated
/// only where the extension expands this list (`src/error.rs`): `crate::` there is the
/// extension, `$crate::` this crate. A hint given as a string literal is also in the catalog.
// `crate::` is deliberate: the immediate-send limits are the extension's (`crate::gucs`), and
// only the extension expands messages.
#[allow(clippy::crate_in_macro_def)]
#[macro_export]
macro_rules! kafka_errors {
    ($then:path) => {
        $then! {
            // ---- a record's arguments (produce, publish, autonomous_publish) ----
            /// The topic argument is NULL.
            NullTopic = "22004" null_value_not_allowed {
                message: ("topic must not be NULL"),
                hint: "Pass the name of the Kafka topic to produce to.",
            }
            /// The topic argument is the empty string.
            EmptyTopic = "22023" invalid_parameter_value {
                message: ("topic must not be empty"),
                hint: "Pass the name of the Kafka topic to produce to.",
            }
            /// The topic name is longer than Kafka allows (its length).
            TopicTooLong(len: usize) = "22023" invalid_parameter_value {
                message: ("topic name is {len} characters long, longer than Kafka's {}", $crate::error::MAX_TOPIC_LEN),
                hint: { $crate::error::TOPIC_RULE },
            }
            /// The topic name holds a character Kafka rejects.
            TopicBadChar { topic: String, ch: char } = "22023" invalid_parameter_value {
                message: ("topic name {} contains {ch:?}, which Kafka rejects", $crate::error::shown(topic)),
                hint: { $crate::error::TOPIC_RULE },
            }
            /// The topic is `.` or `..`.
            TopicReserved(topic: String) = "22023" invalid_parameter_value {
                message: ("topic name {} is not allowed by Kafka", $crate::error::shown(topic)),
                hint: { $crate::error::TOPIC_RULE },
            }
            /// Headers that are neither an object nor an array of name/value pairs of strings (why).
            BadHeaders(why: String) = "22023" invalid_parameter_value {
                message: ("invalid Kafka headers: {}", $crate::error::cut(why)),
                hint: "Pass headers as a JSON object of string or null values, \
                       e.g. '{\"source\": \"pg\"}', or as an array of [name, value] pairs \
                       when a name repeats, e.g. '[[\"tag\", \"a\"], [\"tag\", \"b\"]]'.",
            }
            /// A negative partition.
            NegativePartition(partition: i32) = "22023" invalid_parameter_value {
                message: ("partition must not be negative, got {partition}"),
                hint: "Pass a partition number from 0, or NULL to let Kafka choose.",
            }
            /// A timestamp Kafka cannot carry (before 1970, or infinite).
            BadTimestamp(ts: String) = "22008" datetime_field_overflow {
                message: ("timestamp {} cannot be a Kafka record timestamp", $crate::error::cut(ts)),
                hint: "Kafka timestamps count milliseconds from 1970-01-01 00:00 UTC; pass a \
                       later, finite timestamp, or NULL for the time of sending.",
            }
            /// Neither value nor key: a record that says nothing.
            NoValueNoKey = "22004" null_value_not_allowed {
                message: ("value and key are both NULL"),
                hint: "A record needs a value or a key; a NULL value with a key is a tombstone.",
            }
            /// Both `key` and `key_bytes` given.
            TwoKeys = "22023" invalid_parameter_value {
                message: ("key and key_bytes are both given"),
                hint: "Pass the key either as text (key) or as bytes (key_bytes), not both.",
            }
            /// A timeout that is zero or negative.
            BadTimeout = "22023" invalid_parameter_value {
                message: ("timeout must be positive"),
                hint: "Pass a positive interval, e.g. timeout => '5 seconds'.",
            }
            /// A negative row limit (`kafka.waiting(max_rows => -1)`).
            BadMaxRows(n: i64) = "22023" invalid_parameter_value {
                message: ("max_rows is {n}, below 0"),
                hint: "Pass how many waiting messages to list, e.g. max_rows => 100.",
            }

            // ---- kafka.config and kafka.broker ----
            /// A kafka.config name pg_kafka sets itself.
            ReservedSetting(name: String) = "22023" invalid_parameter_value {
                message: ("{} cannot be set in kafka.config", $crate::error::shown(name)),
                hint: {
                    if name == "bootstrap.servers" {
                        "List brokers in kafka.broker: INSERT INTO kafka.broker VALUES ('host', 9092)."
                    } else {
                        "pg_kafka sets this itself; it cannot be changed."
                    }
                },
            }
            /// A kafka.config setting outside the allow-list, written (or removed) by a non-superuser.
            SuperuserSetting(name: String) = "42501" insufficient_privilege {
                message: ("only a superuser may set {}", $crate::error::shown(name)),
                hint: "Roles other than superusers may change only the settings in pg_kafka's \
                       allow-list (batching, compression, sizes, timeouts, retries: see \
                       docs/security.md); brokers, TLS, SASL, files and secrets are a \
                       superuser's.",
            }
            /// A kafka.broker change by a non-superuser while a secret is stored.
            BrokerWithSecrets = "42501" insufficient_privilege {
                message: ("only a superuser may change kafka.broker while kafka.config holds a secret"),
                hint: "Brokers decide where the stored credentials are sent: while kafka.config \
                       holds a secret, only a superuser may change kafka.broker.",
            }
            /// librdkafka refused a kafka.config setting (its message).
            BadSetting { name: String, why: String } = "22023" invalid_parameter_value {
                message: ("invalid librdkafka setting {}: {}", $crate::error::shown(name), $crate::error::cut(why)),
                hint: "See librdkafka's CONFIGURATION.md for the producer settings and their values.",
            }
            /// A kafka.broker row whose host is NULL or not a host name or address (as given).
            BadBrokerHost(host: String) = "22023" invalid_parameter_value {
                message: ("invalid Kafka broker host: {}", $crate::error::cut(host)),
                hint: "Give a host name or IP address (letters, digits, \".\", \"-\", \":\"), e.g. 'localhost'.",
            }
            /// A kafka.broker row whose port is NULL or outside 1–65535 (as given).
            BadBrokerPort(port: String) = "22023" invalid_parameter_value {
                message: ("invalid Kafka broker port: {port}"),
                hint: "A port is a number from 1 to 65535; Kafka listens on 9092 by default.",
            }

            // ---- immediate sends (autonomous_publish) ----
            /// Every immediate-send slot is busy.
            ImmediateBusy = "53400" configuration_limit_exceeded {
                message: ("all {} immediate-send slots are in use", crate::gucs::IMMEDIATE_SLOTS),
                hint: "Too many immediate sends wait at once; retry, or use kafka.publish(), which \
                       queues without limit.",
            }
            /// The calling role holds its share of the immediate-send slots.
            ImmediateRoleBusy = "53400" configuration_limit_exceeded {
                message: ("this role already waits on {} immediate sends", crate::gucs::IMMEDIATE_SLOTS_PER_ROLE),
                hint: "One role may wait on at most this many immediate sends at once, so that \
                       others get theirs; retry, or use kafka.publish(), which queues without \
                       limit.",
            }
            /// Kafka refused an immediate send (its reason).
            ImmediateRefused(why: String) = "08000" connection_exception {
                message: ("Kafka did not take the message: {why}"),
                hint: "This is Kafka's (or librdkafka's) answer; nothing was queued.",
            }
            /// No acknowledgement within the caller's timeout (the timeout).
            ImmediateTimeout(timeout: String) = "08000" connection_exception {
                message: ("no acknowledgement from Kafka within {timeout}"),
                hint: "The message may still reach Kafka. Raise the timeout, check kafka.status, \
                       or use kafka.publish() to queue it transactionally.",
            }

            // ---- the installation and its state ----
            /// The library was loaded without `shared_preload_libraries`: no worker would deliver.
            NotPreloaded = "55000" object_not_in_prerequisite_state {
                message: ("pg_kafka is not loaded through shared_preload_libraries"),
                hint: "Add 'pg_kafka' to shared_preload_libraries in postgresql.conf and restart \
                       PostgreSQL; the background worker that delivers messages starts only then.",
            }
            /// `produce()` (or `capture()`) ran in a database pg_kafka does not serve.
            WrongDatabase { current: String, served: String } = "55000" object_not_in_prerequisite_state {
                message: ("pg_kafka does not serve database \"{current}\" (kafka.database = '{served}')"),
                hint: {
                    format!(
                        "pg_kafka serves the databases kafka.database names: add '{current}' to its \
                         comma-separated list (or set it to '*' for every database with the extension) \
                         and reload, or produce from a served database."
                    )
                },
            }
            /// pg_kafka's tables are missing...
            OutboxMissing = "55000" object_not_in_prerequisite_state {
                message: ("pg_kafka's outbox tables are missing or altered"),
                hint: "After installing a new pg_kafka library, run ALTER EXTENSION kafka UPDATE; \
                       otherwise recreate the extension (DROP EXTENSION kafka; CREATE EXTENSION kafka).",
            }
            /// ...or were altered (what was found).
            OutboxAltered(what: String) = "55000" object_not_in_prerequisite_state {
                message: ("pg_kafka's tables were altered: {what}"),
                hint: "After installing a new pg_kafka library, run ALTER EXTENSION kafka UPDATE; \
                       otherwise recreate the extension (DROP EXTENSION kafka; CREATE EXTENSION kafka).",
            }
            /// `CREATE EXTENSION kafka` in a schema `kafka` that another role owns or may create
            /// objects in (its owner). Raised by sql/tables.sql itself, before any function exists.
            SchemaTaken(owner: String) = "42501" insufficient_privilege {
                message: ("schema kafka belongs to role {owner}, or other roles may create objects in it"),
                hint: "pg_kafka runs code with a superuser's rights on the objects of schema kafka: it must be \
                       created by CREATE EXTENSION, or owned by the superuser who installs pg_kafka with no CREATE \
                       privilege for others. DROP SCHEMA kafka (after checking what it holds), then CREATE EXTENSION kafka.",
            }
            /// Schema `kafka` is owned by a role that is not a superuser: refused by code that runs
            /// with more rights than its owner's.
            UntrustedSchema = "42501" insufficient_privilege {
                message: ("schema kafka is owned by a role that is not a superuser"),
                hint: "A role that owns schema kafka could change what pg_kafka runs with more rights \
                       than its own. If that role is trusted, ALTER SCHEMA kafka OWNER TO a superuser; \
                       otherwise check the schema's objects, DROP EXTENSION kafka and create it again.",
            }
            /// pg_kafka's queue (its tables on disk, with what the transaction holds unwritten) is
            /// larger than the session's `kafka.max_backlog` (bytes).
            BacklogFull { size: i64, limit: i64 } = "53400" configuration_limit_exceeded {
                message: (
                    "pg_kafka's queue (kafka.outbox and kafka.dead_letter on disk, with this transaction's \
                     messages) takes {} kB, more than this session's kafka.max_backlog of {} kB",
                    size / 1024,
                    limit / 1024
                ),
                hint: "The queue waits for Kafka (see kafka.status), and dead letters count too \
                       (kafka.purge_dead_letters); retry once it has drained, queue less in one \
                       transaction, or ask a superuser to raise kafka.max_backlog for your role.",
            }
            /// `kafka.release()` in the database that is its queue's home (not a copy whose
            /// delivery is held).
            NotACopy = "55000" object_not_in_prerequisite_state {
                message: ("kafka.release() refused: this database is its queue's home, not a copy whose delivery is held"),
                hint: "kafka.release() is only for a restored copy (pg_dump/restore or CREATE DATABASE ... \
                       TEMPLATE) whose delivery is held: there kafka.status.last_error says \"delivery held: \
                       this database is a copy\". Here the worker delivers the queue itself.",
            }
            /// `DROP EXTENSION kafka` while committed messages wait (how many).
            MessagesWaiting(count: i64) = "55006" object_in_use {
                message: ("cannot drop pg_kafka: {count} committed messages wait in kafka.outbox"),
                hint: "Wait until kafka.status shows a backlog of 0 (the worker delivers them), or \
                       discard them first: TRUNCATE kafka.outbox, kafka.outbox_commit; then drop.",
            }
            /// `DROP EXTENSION kafka` while WAL capture has not decoded the WAL written before it
            /// (how many bytes are left).
            WalNotDecoded(bytes: i64) = "55006" object_in_use {
                message: ("cannot drop pg_kafka: WAL capture has not yet read the last {bytes} bytes of WAL, which may hold captured changes"),
                hint: "Wait until kafka.status shows wal_lag_bytes near 0 (the worker decodes them; see \
                       last_error if it does not), or stop capturing first: SELECT kafka.uncapture(table) \
                       for each table of kafka.captures with method 'wal'.",
            }
            /// A trigger function called the wrong way (not as the statement-level AFTER trigger it is).
            BadTrigger(why: String) = "39P01" trigger_protocol_violated {
                message: ("{why}"),
                hint: "Use kafka.capture() or kafka.capture_outbox(), which create the triggers \
                       the right way.",
            }
            /// A failure inside pg_kafka that no input explains (a database call failed).
            Internal(why: String) = "XX000" internal_error {
                message: ("pg_kafka: {why}"),
                hint: "This is a bug or a damaged installation; the server log has the details.",
            }

            // ---- who may write which topic ----
            /// A topic outside the calling role's grants in `kafka.topic_grants` (the topic).
            TopicDenied(topic: String) = "42501" insufficient_privilege {
                message: ("permission denied to write topic {}", $crate::error::shown(topic)),
                hint: "kafka.topic_grants lists the topics each role may produce to or capture into; ask an \
                       administrator to add a row for your role.",
            }
            /// A role other than capture writing to a capture's topic (the topic).
            CaptureTopic(topic: String) = "42501" insufficient_privilege {
                message: ("topic {} is written by a capture only", $crate::error::shown(topic)),
                hint: "This topic carries a captured table's change events, which only its \
                       capture writes; produce to another topic.",
            }
            /// A message queued (by a relayed outbox) by a role that may not produce (the topic).
            NotProducer(topic: String) = "42501" insufficient_privilege {
                message: ("permission denied to produce to topic {}: this role may not produce", $crate::error::shown(topic)),
                hint: "Producing takes the kafka_producer role (EXECUTE on kafka.produce), also through \
                       a relayed outbox table: GRANT kafka_producer TO <your role>;",
            }
            /// pg_kafka's own topic (`kafka.position_topic`, `kafka.transaction_topic`), written by
            /// the worker only (the topic).
            WorkerTopic(topic: String) = "42501" insufficient_privilege {
                message: ("topic {} is pg_kafka's own", $crate::error::shown(topic)),
                hint: "kafka.position_topic and kafka.transaction_topic are written by pg_kafka's \
                       worker only (a record there could stop delivery or skip messages); \
                       produce or capture to another topic.",
            }

            // ---- capture and backfill ----
            /// Capturing a table without the privileges its owner would need (the table).
            CaptureDenied(table: String) = "42501" insufficient_privilege {
                message: ("permission denied to capture table {table}"),
                hint: "Capturing a table takes the TRIGGER privilege on it and backfilling it also \
                       SELECT, as for its owner; ask the table's owner to capture it.",
            }
            /// Capturing a relation that is not an ordinary or partitioned table (the relation).
            NotATable(relation: String) = "42809" wrong_object_type {
                message: ("{relation} is not a table"),
                hint: "Only ordinary and partitioned tables can be captured, with kafka.capture() or \
                       kafka.capture_outbox(); capture the tables a view reads.",
            }
            /// Capturing a temporary table (the table).
            TemporaryTable(table: String) = "0A000" feature_not_supported {
                message: ("{table} is a temporary table"),
                hint: "Temporary tables live in one session only; capture a permanent table.",
            }
            /// Capturing a table that is captured already (the table).
            AlreadyCaptured(table: String) = "42710" duplicate_object {
                message: ("{table} is already captured"),
                hint: "Call kafka.uncapture() first to capture it with other options.",
            }
            /// Capturing a table without a primary key and without `key_columns` (the table).
            NoPrimaryKey(table: String) = "55000" object_not_in_prerequisite_state {
                message: ("{table} has no primary key"),
                hint: "Add a primary key, or name the key columns: kafka.capture('t', key_columns => ARRAY['id']).",
            }
            /// `key_columns` or `exclude_columns` naming columns the table does not have (the
            /// columns, the table).
            NoSuchColumns { columns: String, table: String } = "42703" undefined_column {
                message: ("no column {} in {table}", $crate::error::cut(columns)),
                hint: "Name existing columns in key_columns and exclude_columns.",
            }
            /// `capture_outbox()` of a table without an outbox table's columns (the columns
            /// missing, the table).
            NotAnOutboxTable { columns: String, table: String } = "42703" undefined_column {
                message: ("no column {} in {table}", $crate::error::cut(columns)),
                hint: "An outbox table has columns id, aggregatetype, aggregateid, type and payload.",
            }
            /// A key column in `exclude_columns`.
            KeyExcluded = "22023" invalid_parameter_value {
                message: ("key columns cannot be excluded"),
                hint: "Leave key columns out of exclude_columns.",
            }
            /// A capture restored into a copy of its table that lacks its key columns (the key
            /// columns, the table).
            KeyColumnsMissing { columns: String, table: String } = "42703" undefined_column {
                message: ("key columns {} of {table} are missing", $crate::error::cut(columns)),
                hint: "Capture the table again with kafka.capture() and the key it has now.",
            }
            /// A capture into a topic that carries another captured table's events, by a role that
            /// is not a superuser (the topic).
            TopicOfAnotherCapture(topic: String) = "42501" insufficient_privilege {
                message: ("topic {} already carries the events of another captured table", $crate::error::shown(topic)),
                hint: "Capture each table to a topic of its own; a superuser may put several tables in one topic.",
            }
            /// `ALTER TABLE … DROP COLUMN` of a captured table's key column (the table).
            KeyColumnDropped(table: String) = "2BP01" dependent_objects_still_exist {
                message: ("cannot drop a key column of captured table {table}"),
                hint: "Call kafka.uncapture() first, then kafka.capture() with the new key.",
            }
            /// A table that is not captured where a captured one is needed (the table).
            NotCaptured(table: String) = "55000" object_not_in_prerequisite_state {
                message: ("table {table} is not captured"),
                hint: "Call kafka.capture() first: a backfill uses its topic, key and columns.",
            }
            /// `capture(method => 'wal')` where the server cannot decode for pg_kafka (why).
            WalUnavailable(why: String) = "55000" object_not_in_prerequisite_state {
                message: ("capture method 'wal' is not available: {why}"),
                hint: "WAL capture needs wal_level = logical (a restart) and 'pg_kafka' among \
                       output_plugin_libraries where the server has that setting (a reload); \
                       or capture with method => 'trigger', which works on every server.",
            }
            /// The first `capture(method => 'wal')` in a transaction that already wrote: the
            /// replication slot cannot be made there.
            WalSlotAfterWrites = "25001" active_sql_transaction {
                message: ("the first WAL capture of a database creates its replication slot, which cannot be done in a transaction that has already written"),
                hint: "Call kafka.capture(..., method => 'wal') in its own transaction, or before \
                       anything else the transaction writes.",
            }
            /// `capture(method => 'wal')` of one of pg_kafka's own tables (the table): its worker
            /// writes them, and WAL capture does not decode the worker's writes.
            WalOwnTable(table: String) = "55000" object_not_in_prerequisite_state {
                message: ("{} is one of pg_kafka's own tables: WAL capture does not decode what pg_kafka's worker writes", $crate::error::shown(table)),
                hint: "Capture it with method => 'trigger'.",
            }
            /// An unknown capture method (the method given).
            BadCaptureMethod(method: String) = "22023" invalid_parameter_value {
                message: ("unknown capture method {}", $crate::error::shown(method)),
                hint: "method is 'trigger' (the default: statement triggers, in the writing session) \
                       or 'wal' (logical decoding in the worker).",
            }
            /// An array whose elements are not rows of the captured table (the type found).
            NotTableRows(found: String) = "42804" datatype_mismatch {
                message: ("expected an array of rows of the captured table, got {found}"),
                hint: "Pass an array of the captured table's own rows, e.g. \
                       ARRAY(SELECT t FROM t ORDER BY id).",
            }
            /// A captured value that Debezium's encoding cannot carry, where Debezium would write a
            /// wrong value or stop: refused, never sent wrong (the column, the type and value, why).
            OutOfDebeziumRange { column: String, value: String, why: String } = "22008" datetime_field_overflow {
                message: ("cannot capture column {}: {} {why}", $crate::error::shown(column), $crate::error::cut(value)),
                hint: "Change events carry each value as Debezium would, and pg_kafka refuses \
                       one Debezium would send wrong: keep timestamp values up to \
                       294247-01-10 04:00:54.775807 (timestamp(0) to timestamp(3), sent \
                       as milliseconds, and timestamptz hold any) and intervals under \
                       2147483648 hours, or capture the table without the column \
                       (kafka.capture(..., exclude_columns => ARRAY['column'])).",
            }
            /// `kafka.backfill()` of a table without SELECT and TRIGGER on it (the table).
            BackfillDenied(table: String) = "42501" insufficient_privilege {
                message: ("permission denied to backfill table {table}"),
                hint: "Backfilling a table takes the SELECT and TRIGGER privileges on it, as for its owner.",
            }
            /// A write to `kafka.backfill_progress` by a role that may not backfill the table (the
            /// table).
            BackfillProgressDenied(table: String) = "42501" insufficient_privilege {
                message: ("permission denied to change the backfill progress of table {table}"),
                hint: "kafka.backfill() records it for whoever may backfill the table (SELECT and TRIGGER on it).",
            }
            /// `kafka.backfill()` with a `chunk_size` below 1 or NULL.
            BadChunkSize = "22023" invalid_parameter_value {
                message: ("chunk_size must be positive"),
                hint: "Pass a positive number of rows, e.g. chunk_size => 10000.",
            }
        }
    };
}
