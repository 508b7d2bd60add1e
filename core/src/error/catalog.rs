//! The list of [`kafka_errors!`](crate::kafka_errors) as data: each error's name, SQLSTATE,
//! condition, fields and (where it is fixed) hint. Its tests hold the docs' error table
//! (`docs/errors.md`) and pg_kafka's SQL (`sql/*.sql`) to the list.

/// One error of pg_kafka, as the list defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorInfo {
    /// The variant's name: `KafkaError::<name>`, and the name SQL gives
    /// `kafka_internal.raise_error()`.
    pub name: &'static str,
    /// The five-character SQLSTATE users see, e.g. `22023`.
    pub sqlstate: &'static str,
    /// PostgreSQL's condition name for the SQLSTATE (what PL/pgSQL's `EXCEPTION WHEN` takes).
    pub condition: &'static str,
    /// The names of its fields, in order: the arguments `raise_error()` takes after the name.
    pub fields: &'static [&'static str],
    /// The variant's documentation, one line each.
    pub doc: &'static [&'static str],
    /// Its hint, when that does not depend on the fields (or come from a shared constant).
    pub hint: Option<&'static str>,
}

/// Expands the list into [`ERRORS`].
macro_rules! catalog {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident $( ( $($tf:ident : $tt:ty),* ) )? $( { $($sf:ident : $st:ty),* } )?
            = $code:literal $cond:ident {
            message: $msg:tt,
            hint: $hint:tt $(,)?
        }
    )*) => {
        /// Every error of pg_kafka, in the list's order.
        pub const ERRORS: &[ErrorInfo] = &[$(
            ErrorInfo {
                name: stringify!($name),
                sqlstate: $code,
                condition: stringify!($cond),
                fields: &[$($(stringify!($tf),)*)? $($(stringify!($sf),)*)?],
                doc: &[$($doc),*],
                hint: catalog!(@hint $hint),
            }
        ),*];
    };
    (@hint $hint:literal) => { Some($hint) };
    (@hint $hint:tt) => { None };
}

crate::kafka_errors!(catalog);

/// The entry of the error `name`.
pub fn find(name: &str) -> Option<&'static ErrorInfo> {
    ERRORS.iter().find(|e| e.name == name)
}

#[cfg(test)]
mod tests;
