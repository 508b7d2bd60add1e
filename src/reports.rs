//! pg_kafka's `emit_log_hook`: it edits error reports on their way out, and nothing else.
//!
//! - A "permission denied" error about one of pg_kafka's objects gets a hint naming the role to
//!   grant (PostgreSQL's own privilege errors carry none).
//! - A report whose statement writes `kafka.config` does not echo that statement to the server
//!   log, since it may carry a password; a `log_statement` line for it is replaced.
//!
//! Runs inside error reporting: it must not raise, so it only reads strings and allocates hints.

use pgrx::pg_sys;
use pgrx::prelude::*;
use std::ffi::{CStr, CString};

static mut PREVIOUS: pg_sys::emit_log_hook_type = None;

pub fn init() {
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

/// Whether a statement writes kafka.config (and so may carry a secret).
pub fn touches_config(statement: &str) -> bool {
    let s = statement.to_ascii_lowercase();
    s.contains("kafka.config") || s.contains("\"config\"")
}

#[pg_guard]
unsafe extern "C-unwind" fn on_report(edata: *mut pg_sys::ErrorData) {
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
    let message = || unsafe { e.message.as_ref().map(|m| CStr::from_ptr(m).to_string_lossy()) };
    if e.sqlerrcode == PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE as i32 && e.hint.is_null() {
        if let Some(role) = message().as_deref().and_then(role_for) {
            // No catalog lookup here (we are reporting an error): the user's name is left to them.
            let hint = format!("pg_kafka grants this through the role {role}: GRANT <role> TO <your role>;");
            if let Ok(h) = CString::new(hint) {
                e.hint = unsafe { pg_sys::pstrdup(h.as_ptr()) };
            }
        }
    }
    let statement =
        unsafe { pg_sys::debug_query_string.as_ref().map(|s| CStr::from_ptr(s).to_string_lossy()) };
    if statement.as_deref().is_some_and(touches_config) {
        e.hide_stmt = true;
        if message().is_some_and(|m| m.starts_with("statement: ") || m.starts_with("duration: ")) {
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
    fn hints_name_the_right_role() {
        assert_eq!(role_for("permission denied for function produce"), Some("kafka_producer"));
        assert!(role_for("permission denied for schema kafka").unwrap().contains("kafka_admin"));
        assert_eq!(role_for("permission denied for table broker"), Some("kafka_admin"));
        assert_eq!(role_for("permission denied for view status"), Some("pg_monitor"));
        assert_eq!(role_for("permission denied for table orders"), None);
        assert_eq!(role_for("division by zero"), None);
    }

    #[test]
    fn statements_writing_config_are_recognised() {
        assert!(touches_config("INSERT INTO kafka.config VALUES ('sasl.password', 'x')"));
        assert!(touches_config("update KAFKA.CONFIG set value = 'x'"));
        assert!(!touches_config("SELECT kafka.produce('t', 'm')"));
    }
}
