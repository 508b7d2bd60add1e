//! The one error type of pg_kafka. Every error a user can meet in SQL is a variant here, with its
//! SQLSTATE and a hint saying what to do; [`KafkaError::raise`] reports it as a PostgreSQL ERROR.

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
    /// The library was loaded without `shared_preload_libraries`: no worker would deliver.
    NotPreloaded,
    /// `produce()` ran in a database the worker does not serve.
    WrongDatabase { current: String, served: String },
}

impl KafkaError {
    pub fn sqlstate(&self) -> PgSqlErrorCode {
        use KafkaError::*;
        match self {
            NullTopic => PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            EmptyTopic | TopicTooLong(_) | TopicBadChar { .. } | TopicReserved(_) => {
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE
            }
            NotPreloaded | WrongDatabase { .. } => {
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
            }
        }
    }

    pub fn hint(&self) -> String {
        use KafkaError::*;
        let topic_rule = "Kafka topic names use only ASCII letters, digits, '.', '_' and '-', \
                          at most 249 characters, and are not '.' or '..'.";
        match self {
            NullTopic | EmptyTopic => "Pass the name of the Kafka topic to produce to.".into(),
            TopicTooLong(_) | TopicBadChar { .. } | TopicReserved(_) => topic_rule.into(),
            NotPreloaded => "Add 'pg_kafka' to shared_preload_libraries in postgresql.conf and restart \
                             PostgreSQL; the background worker that delivers messages starts only then."
                .into(),
            WrongDatabase { current, .. } => format!(
                "The pg_kafka worker serves the database named by kafka.database; set \
                 kafka.database = '{current}' and reload, or produce from that database."
            ),
        }
    }

    /// Reports this error as a PostgreSQL ERROR; does not return.
    pub fn raise(self) -> ! {
        ErrorReport::new(self.sqlstate(), self.to_string(), "pg_kafka")
            .set_hint(self.hint())
            .report(PgLogLevel::ERROR);
        unreachable!("ereport(ERROR) returned")
    }
}

impl fmt::Display for KafkaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use KafkaError::*;
        match self {
            NullTopic => write!(f, "topic must not be NULL"),
            EmptyTopic => write!(f, "topic must not be empty"),
            TopicTooLong(n) => write!(f, "topic name is {n} characters long, longer than Kafka's {MAX_TOPIC_LEN}"),
            TopicBadChar { topic, ch } => write!(f, "topic name \"{topic}\" contains {ch:?}, which Kafka rejects"),
            TopicReserved(t) => write!(f, "topic name \"{t}\" is not allowed by Kafka"),
            NotPreloaded => write!(f, "pg_kafka is not loaded through shared_preload_libraries"),
            WrongDatabase { current, served } => write!(
                f,
                "the pg_kafka worker delivers messages from database \"{served}\", not \"{current}\""
            ),
        }
    }
}

/// Checks a topic name the way the Kafka broker does, before anything is queued.
pub fn check_topic(topic: Option<&str>) -> Result<&str, KafkaError> {
    let topic = topic.ok_or(KafkaError::NullTopic)?;
    if topic.is_empty() {
        return Err(KafkaError::EmptyTopic);
    }
    if topic == "." || topic == ".." {
        return Err(KafkaError::TopicReserved(topic.into()));
    }
    if let Some(ch) = topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(KafkaError::TopicBadChar {
            topic: topic.into(),
            ch,
        });
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(KafkaError::TopicTooLong(topic.len()));
    }
    Ok(topic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_kafka_accepts() {
        for t in ["test_topic", "a", "A.b-c_9", &"x".repeat(249), "..."] {
            assert_eq!(check_topic(Some(t)), Ok(t));
        }
    }

    #[test]
    fn rejects_what_kafka_rejects() {
        assert_eq!(check_topic(None), Err(KafkaError::NullTopic));
        assert_eq!(check_topic(Some("")), Err(KafkaError::EmptyTopic));
        assert_eq!(
            check_topic(Some(".")),
            Err(KafkaError::TopicReserved(".".into()))
        );
        assert_eq!(
            check_topic(Some("..")),
            Err(KafkaError::TopicReserved("..".into()))
        );
        assert_eq!(
            check_topic(Some(&"x".repeat(250))),
            Err(KafkaError::TopicTooLong(250))
        );
        assert_eq!(
            check_topic(Some("a b")),
            Err(KafkaError::TopicBadChar {
                topic: "a b".into(),
                ch: ' '
            })
        );
        assert!(matches!(
            check_topic(Some("tópico")),
            Err(KafkaError::TopicBadChar { ch: 'ó', .. })
        ));
    }

    #[test]
    fn every_error_has_a_hint() {
        let all = [
            KafkaError::NullTopic,
            KafkaError::EmptyTopic,
            KafkaError::TopicTooLong(300),
            KafkaError::TopicReserved(".".into()),
            KafkaError::NotPreloaded,
            KafkaError::WrongDatabase {
                current: "a".into(),
                served: "b".into(),
            },
        ];
        for e in all {
            assert!(!e.hint().is_empty(), "{e}");
        }
    }
}
