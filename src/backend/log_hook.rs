//! pg_kafka's `emit_log_hook`: it edits reports on their way out, and nothing else.
//!
//! - A "permission denied" error about one of pg_kafka's objects gets a hint naming the role to
//!   grant (PostgreSQL's own privilege errors carry none).
//! - Secrets stay out of the server log. What a statement touches decides, never its text (so
//!   nobody can hide a statement by adding words to it):
//!   - once `kafka.config`'s trigger has seen a secret setting written, reports of that statement
//!     lose their statement text, parameters and context (however it was written: directly, in a
//!     function or DO block, by COPY, by PREPARE/EXECUTE or with bind parameters);
//!   - a `log_statement` line is logged before the statement runs (before any hook of ours could
//!     look at it): in a superuser's session (only superusers write secrets) a statement whose
//!     words may write `kafka.config` is replaced by a placeholder, failing closed
//!     ([`may_write_config`]).
//!
//! Runs inside error reporting, where an ERROR takes the server down: it reads strings and
//! process-local variables and allocates, nothing else (no parser, no catalog, no SQL).

use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::Cell;
use std::ffi::{CStr, CString};

static mut PREVIOUS: pg_sys::emit_log_hook_type = None;

thread_local! {
    /// The statement (start time, text pointer) that wrote a secret, if any.
    static SECRET_STATEMENT: Cell<Option<(i64, usize)>> = const { Cell::new(None) };
}

/// The identity of the statement running now.
fn statement_now() -> (i64, usize) {
    // SAFETY: plain reads of process-local globals; `debug_query_string` is only compared as a
    // number here, never dereferenced.
    unsafe { (pg_sys::GetCurrentStatementStartTimestamp(), pg_sys::debug_query_string as usize) }
}

/// Called by `kafka.config`'s trigger when a row holding a secret is written or removed: the
/// reports of this statement keep its text out of the log.
pub fn secret_written() {
    SECRET_STATEMENT.with(|s| s.set(Some(statement_now())));
}

pub fn init() {
    // SAFETY: called once per process from _PG_init, on the backend's only thread, before this
    // backend reports anything through the hook: saving the previous hook and installing ours
    // cannot race.
    unsafe {
        PREVIOUS = pg_sys::emit_log_hook;
        pg_sys::emit_log_hook = Some(on_report);
    }
}

/// The role that grants what a "permission denied" message is about, if it is pg_kafka's.
pub fn role_for(message: &str) -> Option<&'static str> {
    let object = message.strip_prefix("permission denied for ")?;
    Some(match object {
        "schema kafka" => {
            "kafka_producer (to produce) or kafka_admin (to manage brokers, settings and dead letters)"
        }
        "function produce" | "function publish" | "function autonomous_publish" => "kafka_producer",
        "function close"
        | "function requeue_dead_letters"
        | "function purge_dead_letters"
        | "table broker"
        | "table config"
        | "table dead_letter"
        | "table outbox"
        | "view settings" => "kafka_admin",
        "view status" | "function worker_state" => "pg_monitor",
        _ => return None,
    })
}

/// Whether a logged statement's text may write `kafka.config`, judged by its words and failing
/// closed: it names `config` (in any case: `kafka.config`, `"config"`, COPY, MERGE, a DO block,
/// PREPARE), runs a prepared statement (`execute`) or spells an identifier with Unicode escapes
/// (`U&"…"`). Nothing is parsed here: the hook runs while a report is being written, where an
/// ERROR (a lexer's, under settings a statement of the same string changed) would take the
/// server down; plain byte comparisons cannot raise.
fn may_write_config(statement: &[u8]) -> bool {
    let has = |word: &[u8]| statement.windows(word.len()).any(|w| w.eq_ignore_ascii_case(word));
    has(b"config") || has(b"execute") || has(b"u&")
}

/// Whether the session's role (its login role, or what SET ROLE / SET SESSION AUTHORIZATION made
/// it) is a superuser: the variable behind the `is_superuser` setting, a plain read with no
/// catalog lookup.
fn session_is_superuser() -> bool {
    // SAFETY: plain read of a process-local flag PostgreSQL keeps up to date when the session's
    // role changes.
    #[cfg(any(feature = "pg14", feature = "pg15"))]
    return unsafe { pg_sys::session_auth_is_superuser };
    // SAFETY: as above (renamed in PostgreSQL 16).
    #[cfg(not(any(feature = "pg14", feature = "pg15")))]
    return unsafe { pg_sys::current_role_is_superuser };
}

#[pg_guard]
unsafe extern "C-unwind" fn on_report(edata: *mut pg_sys::ErrorData) {
    // SAFETY: PostgreSQL calls the hook with the ErrorData being reported (null is checked); the
    // previous hook, saved in `init` before ours was installed, gets it next, as PostgreSQL would
    // have called it.
    unsafe {
        if let Some(e) = edata.as_mut() {
            edit(e);
        }
        if let Some(previous) = PREVIOUS {
            previous(edata);
        }
    }
}

unsafe fn edit(e: &mut pg_sys::ErrorData) {
    // SAFETY: `e.message` is null or the NUL-terminated message of the report, allocated in
    // ErrorContext, which outlives this hook.
    let message = || unsafe { e.message.as_ref().map(|m| CStr::from_ptr(m).to_string_lossy()) };
    if e.sqlerrcode == PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE as i32 && e.hint.is_null() {
        if let Some(role) = message().as_deref().and_then(role_for) {
            // No catalog lookup here (we are reporting an error): the user's name is left to them.
            let hint = format!("pg_kafka grants this through the role {role}: GRANT <role> TO <your role>;");
            if let Ok(h) = CString::new(hint) {
                // SAFETY: during error reporting CurrentMemoryContext is ErrorContext: the copy
                // lives there, where PostgreSQL frees the report's strings once it is emitted.
                e.hint = unsafe { pg_sys::pstrdup(h.as_ptr()) };
            }
        }
    }
    let secret = SECRET_STATEMENT.with(Cell::get).is_some_and(|s| s == statement_now());
    let logged_text = message().is_some_and(|m| {
        m.starts_with("statement: ") || m.starts_with("duration: ") || m.starts_with("execute ")
    });
    // Only superusers write secrets: in their sessions a statement line that may write
    // kafka.config is replaced (in anyone else's, nobody can hide a statement by adding a word).
    let hide = secret
        || (logged_text
            && e.elevel == pg_sys::LOG as i32
            && session_is_superuser()
            // SAFETY: plain read of the process-local pointer to the current query text (null or
            // NUL-terminated).
            && unsafe { pg_sys::debug_query_string.as_ref() }
                // SAFETY: `q` is the non-null NUL-terminated query text.
                .is_some_and(|q| may_write_config(unsafe { CStr::from_ptr(q) }.to_bytes())));
    if hide {
        e.hide_stmt = true;
        e.context = std::ptr::null_mut(); // a function's or DO block's statement, with its values

        // SAFETY: `e.detail` is null or a NUL-terminated string of the report, in ErrorContext.
        let detail = unsafe { e.detail.as_ref().map(|d| CStr::from_ptr(d).to_bytes()) };
        if detail.is_some_and(|d| d.starts_with(b"parameters: ") || d.starts_with(b"prepare: ")) {
            e.detail = std::ptr::null_mut();
        }
        if logged_text {
            // SAFETY: pstrdup copies a literal into ErrorContext (the current context), where
            // PostgreSQL frees the report's strings; the old message is left to that context.
            e.message = unsafe {
                pg_sys::pstrdup(
                    c"statement: <a statement writing kafka.config, not logged by pg_kafka>".as_ptr(),
                )
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_that_may_write_config_are_found_by_their_words() {
        for s in [
            "INSERT INTO kafka.config VALUES ('sasl.password', 'x')",
            "insert into CONFIG values ('a', 'b')",
            "EXECUTE p('sasl.password', 'x')",
            "INSERT INTO kafka.U&\"\\0063onfig\" VALUES ('a', 'b')",
            "SET standard_conforming_strings = off; SELECT U&'x' AS x",
        ] {
            assert!(may_write_config(s.as_bytes()), "{s}");
        }
        for s in ["SELECT 1", "INSERT INTO kafka.broker VALUES ('localhost', 9092)", "SELECT E'\\\\'"] {
            assert!(!may_write_config(s.as_bytes()), "{s}");
        }
    }

    #[test]
    fn hints_name_the_right_role() {
        assert_eq!(role_for("permission denied for function produce"), Some("kafka_producer"));
        assert!(role_for("permission denied for schema kafka").unwrap().contains("kafka_admin"));
        assert_eq!(role_for("permission denied for table broker"), Some("kafka_admin"));
        assert_eq!(role_for("permission denied for view status"), Some("pg_monitor"));
        assert_eq!(role_for("permission denied for table orders"), None);
        assert_eq!(role_for("division by zero"), None);
    }
}
