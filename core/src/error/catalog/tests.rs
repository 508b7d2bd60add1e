//! The list of errors against PostgreSQL's condition names, the docs' table and pg_kafka's SQL.

use super::{find, ErrorInfo, ERRORS};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The docs' page of errors; its table must list every error of the list, and no other.
const DOCS: &str = include_str!("../../../../docs/errors.md");

/// PostgreSQL's condition names of the SQLSTATEs pg_kafka uses (its `errcodes.txt`). An error with
/// another SQLSTATE needs its line here first.
const POSTGRES_CONDITIONS: &[(&str, &str)] = &[
    ("08000", "connection_exception"),
    ("0A000", "feature_not_supported"),
    ("22004", "null_value_not_allowed"),
    ("25001", "active_sql_transaction"),
    ("22008", "datetime_field_overflow"),
    ("22023", "invalid_parameter_value"),
    ("2BP01", "dependent_objects_still_exist"),
    ("39P01", "trigger_protocol_violated"),
    ("42501", "insufficient_privilege"),
    ("42703", "undefined_column"),
    ("42710", "duplicate_object"),
    ("42804", "datatype_mismatch"),
    ("42809", "wrong_object_type"),
    ("53400", "configuration_limit_exceeded"),
    ("55000", "object_not_in_prerequisite_state"),
    ("55006", "object_in_use"),
    ("XX000", "internal_error"),
];

#[test]
fn every_error_is_named_once_with_postgres_own_sqlstate_and_condition() {
    let mut seen = BTreeMap::new();
    for e in ERRORS {
        assert!(seen.insert(e.name, ()).is_none(), "{} is in the list twice", e.name);
        assert!(
            e.sqlstate.len() == 5 && e.sqlstate.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()),
            "{}: SQLSTATE {:?}",
            e.name,
            e.sqlstate
        );
        let condition = POSTGRES_CONDITIONS.iter().find(|(code, _)| *code == e.sqlstate).map(|(_, c)| *c);
        assert_eq!(
            condition,
            Some(e.condition),
            "{}: {} is not PostgreSQL's {}",
            e.name,
            e.condition,
            e.sqlstate
        );
        assert!(!e.doc.is_empty(), "{}: say when it happens (///)", e.name);
        assert!(e.hint.is_none_or(|h| !h.trim().is_empty()), "{}: an empty hint", e.name);
    }
    assert!(find("Internal").is_some_and(|e| e.fields == ["why"]));
    assert!(find("TopicBadChar").is_some_and(|e| e.fields == ["topic", "ch"]));
    assert!(find("NullTopic").is_some_and(|e| e.fields.is_empty()));
    assert!(find("NoSuchError").is_none());
}

/// The rows of the docs' error tables: (SQLSTATE, condition, error name).
fn docs_rows() -> Vec<(String, String, String)> {
    DOCS.lines()
        .filter(|l| l.starts_with('|'))
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            let name = cells.get(2)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((cells[0].to_owned(), cells[1].to_owned(), name.to_owned()))
        })
        .collect()
}

/// The row the docs need for an error (its doc's first line for "when").
fn docs_row(e: &ErrorInfo) -> String {
    format!("| {} | {} | `{}` | {} |", e.sqlstate, e.condition, e.name, e.doc[0].trim())
}

#[test]
fn the_docs_list_every_error_with_its_sqlstate() {
    let rows = docs_rows();
    assert!(rows.len() > 10, "docs/errors.md: no table of errors found");
    let mut problems = Vec::new();
    for e in ERRORS {
        match rows.iter().filter(|(_, _, n)| n == e.name).collect::<Vec<_>>()[..] {
            [] => problems.push(format!("missing: {}", docs_row(e))),
            [(code, cond, _)] if code == e.sqlstate && cond == e.condition => {}
            [(code, cond, _)] => problems.push(format!(
                "{}: the docs say {code} {cond}, the list {} {}",
                e.name, e.sqlstate, e.condition
            )),
            _ => problems.push(format!("{} is in the docs more than once", e.name)),
        }
    }
    for (_, _, name) in &rows {
        if find(name).is_none() {
            problems.push(format!("the docs list {name}, which is no error of the list"));
        }
    }
    assert!(problems.is_empty(), "docs/errors.md and core/src/error/mod.rs differ:\n{}", problems.join("\n"));
}

/// pg_kafka's SQL: every file under sql/ but the generated upgrade scripts (`kafka--A--B.sql`,
/// made from these) and the frozen scripts of released versions.
fn sql_files() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, into: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("sql/ is readable") {
            let path = entry.expect("sql/ is readable").path();
            if path.is_dir() && !path.ends_with("released") {
                walk(&path, into);
            } else if path.extension().is_some_and(|x| x == "sql")
                && !path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("kafka--"))
            {
                into.push(path);
            }
        }
    }
    let mut paths = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql"), &mut paths);
    paths.sort();
    assert!(paths.iter().any(|p| p.ends_with("capture.sql")), "no SQL found");
    paths.into_iter().map(|p| (p.clone(), std::fs::read_to_string(&p).expect("readable"))).collect()
}

/// The value of the SQL string constants at the start of `text` (adjacent constants separated by
/// a newline are one, as in SQL), and what follows them.
fn sql_string(text: &str) -> Option<(String, &str)> {
    let mut rest = text.trim_start();
    let mut value = String::new();
    let mut any = false;
    while let Some(body) = rest.strip_prefix('\'') {
        let mut chars = body.char_indices().peekable();
        let end = loop {
            let (i, c) = chars.next()?;
            if c == '\'' {
                if chars.peek().is_some_and(|(_, c)| *c == '\'') {
                    chars.next();
                    value.push('\'');
                } else {
                    break i;
                }
            } else {
                value.push(c);
            }
        };
        any = true;
        let after = &body[end + 1..];
        let trimmed = after.trim_start();
        if !after[..after.len() - trimmed.len()].contains('\n') || !trimmed.starts_with('\'') {
            return Some((value, after));
        }
        rest = trimmed;
    }
    any.then_some((value, rest))
}

/// The arguments of a call whose opening parenthesis `text` follows, split at top-level commas.
fn call_args(text: &str) -> Vec<String> {
    let (mut depth, mut quoted, mut args, mut arg) = (0, false, Vec::new(), String::new());
    for c in text.chars() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth == 0 => break,
            ')' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                args.push(std::mem::take(&mut arg).trim().to_owned());
                continue;
            }
            _ => {}
        }
        arg.push(c);
    }
    if !arg.trim().is_empty() {
        args.push(arg.trim().to_owned());
    }
    args
}

#[test]
fn sql_raises_the_errors_of_the_list() {
    let mut calls = 0;
    for (path, sql) in sql_files() {
        let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        for (at, _) in sql.match_indices("kafka_internal.raise_error(") {
            let line = sql[..at].lines().count();
            if sql[..at].rsplit('\n').next().is_some_and(|before| before.contains("--")) {
                continue; // a comment
            }
            let args = call_args(&sql[at + "kafka_internal.raise_error(".len()..]);
            let Some(name) =
                args.first().and_then(|a| a.strip_prefix('\'')).and_then(|a| a.strip_suffix('\''))
            else {
                // its declaration and its grant
                assert!(
                    matches!(&args[..], [a, b] if a.ends_with("text") && b.contains("text[]")),
                    "{file}:{line}"
                );
                continue;
            };
            let e = find(name).unwrap_or_else(|| panic!("{file}:{line}: no error {name} in the list"));
            assert_eq!(args.len() - 1, e.fields.len(), "{file}:{line}: {name} takes {:?}", e.fields);
            calls += 1;
        }
    }
    assert!(calls > 10, "only {calls} calls of raise_error() found");
}

#[test]
fn sql_raise_statements_are_errors_of_the_list() {
    let mut raises = 0;
    for (path, sql) in sql_files() {
        let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        for (at, _) in sql.match_indices("RAISE EXCEPTION") {
            let line = sql[..at].lines().count();
            let statement = &sql[at..];
            let statement = &statement[..statement.find(";\n").unwrap_or(statement.len())];
            let field = |key: &str| {
                let after = statement.find(key).map(|i| statement[i + key.len()..].trim_start())?;
                sql_string(after.strip_prefix('=')?).map(|(value, _)| value)
            };
            let (Some(code), Some(hint)) = (field("ERRCODE"), field("HINT")) else {
                panic!("{file}:{line}: a RAISE EXCEPTION without ERRCODE and HINT: use kafka_internal.raise_error()");
            };
            let same = ERRORS.iter().find(|e| e.sqlstate == code && e.hint == Some(hint.as_str()));
            assert!(
                same.is_some(),
                "{file}:{line}: RAISE with {code} and hint {hint:?}, which no error of the list has; \
                 raise one through kafka_internal.raise_error() where that function exists"
            );
            raises += 1;
        }
    }
    assert_eq!(raises, 1, "only the first check of CREATE EXTENSION (sql/tables.sql) raises by itself");
}

#[test]
fn sql_strings_and_calls_are_read_as_sql_reads_them() {
    assert_eq!(sql_string("'a''b' x"), Some(("a'b".to_owned(), " x")));
    assert_eq!(sql_string("'a'\n   'b';"), Some(("ab".to_owned(), ";")));
    assert_eq!(sql_string("'a' 'b'"), Some(("a".to_owned(), " 'b'")), "no newline: not one constant");
    assert_eq!(sql_string("x"), None);
    assert_eq!(call_args("'A', f(x, y), 'a,b''c') rest"), ["'A'", "f(x, y)", "'a,b''c'"]);
    assert_eq!(call_args("'A')"), ["'A'"]);
}
