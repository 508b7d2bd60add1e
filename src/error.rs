//! The one error type of pg_kafka. Every error a user can meet in SQL is a variant here, with its
//! SQLSTATE and a hint saying what to do; each is defined once, in the list of
//! `kafka_core::kafka_errors!` (core/src/error/mod.rs: name, SQLSTATE, message and hint
//! together), which this module expands into [`KafkaError`] and maps onto PostgreSQL's errors.
//!
//! Failures travel up as `Result<_, KafkaError>`; SQL functions return [`SqlResult`], which pgrx
//! reports as the error's own SQLSTATE, message and hint. Only where PostgreSQL gives no way to
//! return an error — trigger functions (pgrx turns a trigger's `Err` into an internal error),
//! transaction callbacks and hooks — does the entry point call [`KafkaError::raise`], once, on
//! its outermost line. pg_kafka's SQL raises them through `kafka_internal.raise_error()`.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{PgLogLevel, PgSqlErrorCode};
use std::fmt;

use kafka_core::error::shown;

/// Expands the list of errors into `KafkaError`, its message (`Display`), hint and SQLSTATE, and
/// [`KafkaError::from_sql`].
macro_rules! kafka_error {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident $( ( $($tf:ident : $tt:ty),* ) )? $( { $($sf:ident : $st:ty),* } )?
            = $code:literal $cond:ident {
            message: ( $($msg:tt)* ),
            hint: $hint:expr $(,)?
        }
    )*) => {
        /// Every failure a user can meet (see core/src/error/mod.rs, and docs/errors.md).
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum KafkaError {
            $(
                $(#[doc = $doc])*
                $name $( ( $($tt),* ) )? $( { $($sf: $st),* } )?,
            )*
        }

        impl KafkaError {
            /// The variant's name, as `kafka_internal.raise_error()` takes it.
            pub fn name(&self) -> &'static str {
                match self {
                    $( Self::$name { .. } => stringify!($name), )*
                }
            }

            /// The SQLSTATE users see, as its five characters.
            pub fn code(&self) -> &'static str {
                match self {
                    $( Self::$name { .. } => $code, )*
                }
            }

            /// What to do about it.
            #[allow(unused_variables)]
            pub fn hint(&self) -> String {
                match self {
                    $( Self::$name $( ( $($tf),* ) )? $( { $($sf),* } )? => String::from($hint), )*
                }
            }

            /// The error `name` with its fields parsed from `args`, in order, as pg_kafka's SQL
            /// gives them to `kafka_internal.raise_error()`; `None` for no such error, or other
            /// arguments than its fields.
            pub fn from_sql(name: &str, args: &[String]) -> Option<Self> {
                let mut args = args.iter();
                let error = match name {
                    $(
                        stringify!($name) => Self::$name
                            $( ( $( args.next()?.parse::<$tt>().ok()? ),* ) )?
                            $( { $( $sf: args.next()?.parse::<$st>().ok()? ),* } )?,
                    )*
                    _ => return None,
                };
                args.next().is_none().then_some(error)
            }
        }

        impl fmt::Display for KafkaError {
            #[allow(unused_variables)]
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $( Self::$name $( ( $($tf),* ) )? $( { $($sf),* } )? => write!(f, $($msg)*), )*
                }
            }
        }
    };
}

kafka_core::kafka_errors!(kafka_error);

impl KafkaError {
    /// The SQLSTATE users see.
    pub fn sqlstate(&self) -> PgSqlErrorCode {
        PgSqlErrorCode::from(sqlstate_number(self.code()))
    }

    /// Reports this error as a PostgreSQL ERROR; does not return. For entry points that cannot
    /// return an error (see the module's header).
    pub fn raise(self) -> ! {
        ErrorReport::from(self).report(PgLogLevel::ERROR);
        unreachable!("ereport(ERROR) returned")
    }
}

/// PostgreSQL's number of a five-character SQLSTATE (its `MAKE_SQLSTATE`).
const fn sqlstate_number(code: &str) -> i32 {
    let code = code.as_bytes();
    let mut number = 0;
    let mut i = 0;
    while i < 5 {
        number += ((code[i] as i32 - b'0' as i32) & 0x3F) << (6 * i);
        i += 1;
    }
    number
}

/// What pg_kafka's SQL functions return: pgrx reports an `Err` with its SQLSTATE and hint.
pub type SqlResult<T> = Result<T, ErrorReport>;

impl From<KafkaError> for ErrorReport {
    fn from(e: KafkaError) -> ErrorReport {
        let hint = e.hint();
        ErrorReport::new(e.sqlstate(), e.to_string(), "pg_kafka").set_hint(hint)
    }
}

/// `kafka_internal.raise_error(name text, VARIADIC args text[] DEFAULT '{}')`: raises the error
/// `name` of the list with its fields from `args` (a NULL one reads `NULL`), so that pg_kafka's
/// SQL raises each error with the SQLSTATE, message and hint defined for it. Declared in
/// sql/tables.sql, before any SQL that calls it; EXECUTE for kafka_admin only.
#[pg_extern(sql = false)]
fn raise_error(name: Option<&str>, args: Option<Array<'_, &str>>) -> SqlResult<()> {
    let name = name.unwrap_or("NULL");
    let args: Vec<String> =
        args.iter().flat_map(|a| a.iter()).map(|a| a.unwrap_or("NULL").to_owned()).collect();
    Err(KafkaError::from_sql(name, &args)
        .unwrap_or_else(|| {
            KafkaError::Internal(format!("no error {} with {} arguments", shown(name), args.len()))
        })
        .into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_core::error::catalog::ERRORS;

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
            KafkaError::BadBrokerHost(long.clone()),
            KafkaError::NoSuchColumns { columns: long.clone(), table: "t".into() },
        ] {
            assert!(e.to_string().len() < 400, "{}", &e.to_string()[..400]);
        }
        assert_eq!(shown("abc"), "\"abc\"");
        assert!(shown(&"é".repeat(200)).ends_with("…\" (400 bytes)"), "{}", shown(&"é".repeat(200)));
    }

    #[test]
    fn every_error_of_the_list_has_its_sqlstate_and_a_hint() {
        for info in ERRORS {
            let args = vec!["1".to_owned(); info.fields.len()];
            let e = KafkaError::from_sql(info.name, &args).unwrap_or_else(|| panic!("{}", info.name));
            assert_eq!((e.name(), e.code()), (info.name, info.sqlstate));
            assert_eq!(
                e.sqlstate() as i32,
                sqlstate_number(info.sqlstate),
                "{}: not a PgSqlErrorCode",
                info.name
            );
            assert!(!e.hint().is_empty(), "{e}");
            assert!(info.hint.is_none_or(|h| h == e.hint()), "{}", info.name);
            assert_eq!(
                KafkaError::from_sql(info.name, &[args, vec!["x".into()]].concat()),
                None,
                "one too many"
            );
        }
        assert_eq!(KafkaError::from_sql("Internal", &["x".into()]), Some(KafkaError::Internal("x".into())));
        assert_eq!(KafkaError::from_sql("NegativePartition", &["x".into()]), None, "not a number");
        assert_eq!(KafkaError::from_sql("Nothing", &[]), None);
        assert_eq!(sqlstate_number("22023"), PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE as i32);
        assert_eq!(KafkaError::NullTopic.sqlstate(), PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED);
        assert!(KafkaError::ReservedSetting("bootstrap.servers".into()).hint().contains("kafka.broker"));
        assert!(KafkaError::WrongDatabase { current: "a".into(), served: "b".into() }.hint().contains("'a'"));
    }
}
