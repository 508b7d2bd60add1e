//! pg_kafka's `emit_log_hook`: it edits reports on their way out, and nothing else.
//!
//! - A "permission denied" error about one of pg_kafka's objects gets a hint naming the role to
//!   grant (PostgreSQL's own privilege errors carry none).
//! - Secrets stay out of the server log. What a statement touches decides, never its text (so
//!   nobody can hide a statement by adding words to it):
//!   - once `kafka.config`'s trigger has seen a secret setting written, reports of that statement
//!     lose their statement text, parameters and context (however it was written: directly, in a
//!     function or DO block, by COPY, by PREPARE/EXECUTE or with bind parameters);
//!   - a `log_statement` or duration line is logged before the statement runs: in a superuser's
//!     session (only superusers write secrets) its parse tree is read, and a statement that
//!     writes `kafka.config` is replaced by a placeholder.
//!
//! Runs inside error reporting: it must not raise, so it reads strings, allocates, and parses
//! only a LOG line's statement inside a transaction (a statement the server just parsed).

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

/// Whether `statement` (SQL text the server has parsed, run by a superuser) writes
/// `kafka.config`: INSERT, UPDATE, DELETE, MERGE or COPY into a relation named `config`
/// (unqualified or in schema `kafka`: a search_path set by an earlier statement of the same
/// string is not known yet), also under PREPARE or EXPLAIN; EXECUTE of such a prepared
/// statement; a DO block that names `config`.
unsafe fn writes_config(statement: &CStr) -> bool {
    // raw_parser must not raise here: an ERROR inside error reporting resets ErrorContext, which
    // holds the report being emitted, and no catching makes that sound. The server parsed this
    // text before logging it, and raw parsing depends on settings only through backslashes
    // (standard_conforming_strings, backslash_quote, escape_string_warning's WARNING), which a
    // later statement of the same string may have changed before a duration line. So a text
    // with a backslash is judged by its words instead, failing closed: it may write kafka.config
    // if it names `config` or runs a prepared statement.
    if statement.to_bytes().contains(&b'\\') {
        let words = statement.to_string_lossy().to_ascii_lowercase();
        return words.contains("config") || words.contains("execute");
    }
    // SAFETY: the caller is inside a transaction and `statement` is a NUL-terminated query string
    // the server parsed with the same lexing (no backslash, see above), so raw_parser succeeds as
    // it did then; it returns NULL or a List of RawStmt nodes, read only at `i < length`. The
    // catch below is a last resort that should never run (see above).
    PgTryBuilder::new(|| unsafe {
        let list = pg_sys::raw_parser(statement.as_ptr(), pg_sys::RawParseMode::RAW_PARSE_DEFAULT);
        let n = if list.is_null() { 0 } else { (*list).length };
        (0..n).any(|i| writes((*pg_sys::list_nth(list, i).cast::<pg_sys::RawStmt>()).stmt))
    })
    .catch_others(|_| false)
    .execute()
}

/// Whether a raw statement writes a relation named `config` (see [`writes_config`]).
unsafe fn writes(node: *mut pg_sys::Node) -> bool {
    if node.is_null() {
        return false;
    }
    // SAFETY: `rv` is null (checked) or a RangeVar of a parse tree; its name fields are null
    // (checked) or NUL-terminated strings.
    let config = |rv: *mut pg_sys::RangeVar| unsafe {
        let name = |p: *mut std::ffi::c_char| (!p.is_null()).then(|| CStr::from_ptr(p).to_bytes());
        !rv.is_null()
            && name((*rv).relname) == Some(b"config")
            && matches!(name((*rv).schemaname), None | Some(b"kafka"))
    };
    // SAFETY: `node` is a non-null node of a raw parse tree (this function's contract), cast only
    // to the struct its tag names. FetchPreparedStatement with throwError false returns NULL for an
    // unknown name; every pointer followed from it is checked for null first.
    unsafe {
        match (*node).type_ {
            pg_sys::NodeTag::T_InsertStmt => config((*node.cast::<pg_sys::InsertStmt>()).relation),
            pg_sys::NodeTag::T_UpdateStmt => config((*node.cast::<pg_sys::UpdateStmt>()).relation),
            pg_sys::NodeTag::T_DeleteStmt => config((*node.cast::<pg_sys::DeleteStmt>()).relation),
            pg_sys::NodeTag::T_MergeStmt => config((*node.cast::<pg_sys::MergeStmt>()).relation),
            pg_sys::NodeTag::T_CopyStmt => config((*node.cast::<pg_sys::CopyStmt>()).relation),
            pg_sys::NodeTag::T_PrepareStmt => writes((*node.cast::<pg_sys::PrepareStmt>()).query),
            pg_sys::NodeTag::T_ExplainStmt => writes((*node.cast::<pg_sys::ExplainStmt>()).query),
            pg_sys::NodeTag::T_ExecuteStmt => {
                let prepared =
                    pg_sys::FetchPreparedStatement((*node.cast::<pg_sys::ExecuteStmt>()).name, false);
                !prepared.is_null()
                    && !(*prepared).plansource.is_null()
                    && !(*(*prepared).plansource).raw_parse_tree.is_null()
                    && writes((*(*(*prepared).plansource).raw_parse_tree).stmt)
            }
            pg_sys::NodeTag::T_DoStmt => {
                let args = (*node.cast::<pg_sys::DoStmt>()).args;
                let n = if args.is_null() { 0 } else { (*args).length };
                (0..n).any(|i| {
                    let arg = (*pg_sys::list_nth(args, i).cast::<pg_sys::DefElem>()).arg;
                    !arg.is_null()
                        && (*arg).type_ == pg_sys::NodeTag::T_String
                        && CStr::from_ptr((*arg.cast::<pg_sys::String>()).sval)
                            .to_string_lossy()
                            .to_ascii_lowercase()
                            .contains("config")
                })
            }
            _ => false,
        }
    }
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
    let hide = secret
        || (logged_text
            && e.elevel == pg_sys::LOG as i32
            // SAFETY: IsTransactionState only reads the transaction state; superuser() reads the
            // catalog cache, which is valid because it is only called inside a transaction (the
            // left operand).
            && unsafe { pg_sys::IsTransactionState() && pg_sys::superuser() }
            // SAFETY: plain read of the process-local pointer to the current query text (null or
            // NUL-terminated).
            && unsafe { pg_sys::debug_query_string.as_ref() }
                // SAFETY: `q` is the non-null NUL-terminated query text, and we are inside a
                // transaction (checked above), as writes_config requires.
                .is_some_and(|q| unsafe { writes_config(CStr::from_ptr(q)) }));
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
    fn hints_name_the_right_role() {
        assert_eq!(role_for("permission denied for function produce"), Some("kafka_producer"));
        assert!(role_for("permission denied for schema kafka").unwrap().contains("kafka_admin"));
        assert_eq!(role_for("permission denied for table broker"), Some("kafka_admin"));
        assert_eq!(role_for("permission denied for view status"), Some("pg_monitor"));
        assert_eq!(role_for("permission denied for table orders"), None);
        assert_eq!(role_for("division by zero"), None);
    }
}
