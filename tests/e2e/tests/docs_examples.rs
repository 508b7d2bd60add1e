//! The documentation is checked like code.
//!
//! - Every ```` ```sql ```` block of `README.md` and `docs/*.md` runs: file by file, in the order
//!   of the file, each block in a `psql` of its own, in a fresh database that the worker serves.
//!   Unless the file creates the extension itself (the README does), the database starts as the
//!   README's quick start leaves it: the extension created and a `kafka.broker` row for the stack's
//!   broker. A block right after `<!-- expect-error SQLSTATE -->` must fail with that SQLSTATE; one
//!   after `<!-- not-run: reason -->` is skipped. Outputs (```` ```text ````) are not compared. The
//!   examples write to the topics the docs name (`test_topic`, `orders`, `audit`, …), which are
//!   shared with earlier runs: nothing here reads them back.
//! - Without servers: the markers are well formed, the relative links and anchors of the docs
//!   resolve, and `docs/architecture.md` has `src/lib.rs`'s module map.

use pg_kafka_e2e::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What a block is expected to do.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    Success,
    /// Fail with this SQLSTATE.
    Error(String),
    /// Not run, for this reason.
    NotRun(String),
}

/// One ```` ```sql ```` block of a Markdown file.
#[derive(Debug)]
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    sql: String,
    expect: Expect,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The files whose SQL examples run: `README.md`, then `docs/*.md` by name.
fn example_files() -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/ exists")
        .map(|e| e.expect("a readable docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    let mut files = vec![repo().join("README.md")];
    files.extend(docs);
    files
}

/// The Markdown files whose links must resolve.
fn linked_files() -> Vec<PathBuf> {
    let mut files = example_files();
    for f in ["bench/README.md", "CONTRIBUTING.md", "CHANGELOG.md"] {
        files.push(repo().join(f));
    }
    files
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A marker line (`<!-- expect-error 22023 -->`, `<!-- not-run: reason -->`), or None for any
/// other line; an HTML comment that starts like a marker but is not one is an error.
fn marker(line: &str) -> Result<Option<Expect>, String> {
    let Some(inner) = line.trim().strip_prefix("<!--").and_then(|l| l.strip_suffix("-->")) else {
        return Ok(None);
    };
    let inner = inner.trim();
    if let Some(code) = inner.strip_prefix("expect-error") {
        let code = code.trim();
        if code.len() == 5 && code.chars().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()) {
            return Ok(Some(Expect::Error(code.to_owned())));
        }
        return Err(format!("expect-error needs a SQLSTATE of 5 characters, got {code:?}"));
    }
    if let Some(reason) = inner.strip_prefix("not-run:") {
        if reason.trim().is_empty() {
            return Err("not-run needs a reason".to_owned());
        }
        return Ok(Some(Expect::NotRun(reason.trim().to_owned())));
    }
    if inner.starts_with("expect") || inner.starts_with("not-run") {
        return Err(format!("unknown marker {inner:?}"));
    }
    Ok(None)
}

/// The ```` ```sql ```` blocks of `text` with what each is expected to do. A marker applies to
/// the block whose fence is the next non-blank line; a marker anywhere else is an error.
fn sql_blocks(text: &str) -> Result<Vec<Block>, String> {
    let mut blocks = Vec::new();
    let mut pending: Option<(usize, Expect)> = None;
    let mut fence: Option<(usize, bool, String)> = None; // (line, is sql, text)
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if let Some((start, is_sql, body)) = &mut fence {
            if line.trim_end() == "```" {
                if *is_sql {
                    let expect = pending.take().map_or(Expect::Success, |(_, e)| e);
                    blocks.push(Block { line: *start, sql: std::mem::take(body), expect });
                }
                fence = None;
            } else {
                body.push_str(line);
                body.push('\n');
            }
            continue;
        }
        if let Some(info) = line.strip_prefix("```") {
            let is_sql = info.trim() == "sql";
            if let Some((at, _)) = &pending {
                if !is_sql {
                    return Err(format!("line {at}: a marker before a block that is not ```sql"));
                }
            }
            fence = Some((n, is_sql, String::new()));
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        if let Some((at, _)) = &pending {
            return Err(format!("line {at}: a marker not followed by a ```sql block"));
        }
        if let Some(expect) = marker(line).map_err(|e| format!("line {n}: {e}"))? {
            pending = Some((n, expect));
        }
    }
    if let Some((start, _, _)) = fence {
        return Err(format!("line {start}: a code block that is never closed"));
    }
    if let Some((at, _)) = pending {
        return Err(format!("line {at}: a marker at the end of the file"));
    }
    Ok(blocks)
}

/// Runs `sql` with psql in `database`, as a user would paste it: statement by statement,
/// stopping at the first error. Returns (succeeded, stderr).
fn psql(database: &str, sql: &str) -> (bool, String) {
    let mut child = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=verbose", "-d", database, "-f", "-"])
        .env("PGOPTIONS", "-c statement_timeout=120s") // an example that hangs fails instead
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run psql");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("psql's stdin is piped");
        stdin.write_all(sql.as_bytes()).expect("cannot write to psql");
    }
    let out = child.wait_with_output().expect("psql did not finish");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Points the worker at `database` and waits until new sessions there see it. (`serve` also
/// waits for the worker to run there, which it does only once the extension exists.)
fn point_worker_at(database: &str) {
    let mut c = connect_to("postgres");
    c.batch_execute(&format!("ALTER SYSTEM SET kafka.database = '{database}'")).unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait_until(&format!("kafka.database = {database} in new sessions"), || {
        let r = connect_to(database).query_one("SELECT current_setting('kafka.database')", &[]).unwrap();
        r.get::<_, String>(0) == database
    });
}

/// Runs the examples of one file in a fresh database; returns a line per failed block.
fn run_file(path: &Path, blocks: &[Block]) -> Vec<String> {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("doc").to_lowercase();
    let name = format!("e2e_docs_{}", stem.replace(|c: char| !c.is_ascii_alphanumeric(), "_"));
    let shown = path.strip_prefix(repo()).unwrap_or(path).display().to_string();
    let _default = ServeDefault;
    let (_db, mut c) = OtherDb::empty(&name);
    let creates = blocks.iter().any(|b| b.sql.to_lowercase().contains("create extension kafka"));
    if creates {
        point_worker_at(&name);
    } else {
        c.batch_execute("CREATE EXTENSION kafka; INSERT INTO kafka.broker VALUES ('localhost', 9092)")
            .unwrap();
        serve(&name);
    }
    let mut failures = Vec::new();
    for b in blocks {
        let at = format!("{shown}:{}", b.line);
        let (ok, stderr) = match &b.expect {
            Expect::NotRun(reason) => {
                println!("{at}: not run ({reason})");
                continue;
            }
            _ => psql(&name, &b.sql),
        };
        match &b.expect {
            Expect::Success if !ok || stderr.contains("ERROR:") => {
                failures.push(format!("{at}: failed:\n{}\n{stderr}", b.sql.trim_end()))
            }
            Expect::Error(code) if ok || !stderr.contains(&format!("ERROR:  {code}:")) => {
                failures.push(format!("{at}: expected SQLSTATE {code}, got:\n{}\n{stderr}", b.sql.trim_end()))
            }
            _ => println!("{at}: ok"),
        }
    }
    failures
}

#[test]
fn sql_examples_run() {
    let mut failures = Vec::new();
    let mut ran = 0;
    for path in example_files() {
        let blocks = sql_blocks(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if blocks.iter().all(|b| matches!(b.expect, Expect::NotRun(_))) {
            continue;
        }
        ran += blocks.iter().filter(|b| !matches!(b.expect, Expect::NotRun(_))).count();
        failures.extend(run_file(&path, &blocks));
    }
    assert!(ran >= 10, "only {ran} SQL examples found: is the extraction broken?");
    assert!(failures.is_empty(), "{} SQL examples failed:\n\n{}", failures.len(), failures.join("\n\n"));
}

#[test]
fn markers_are_well_formed() {
    let mut marked = 0;
    let mut all = 0;
    for path in example_files() {
        let blocks = sql_blocks(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        all += blocks.len();
        marked += blocks.iter().filter(|b| b.expect != Expect::Success).count();
    }
    // Markers are for the few examples that show an error or cannot run here.
    assert!(marked * 3 <= all, "{marked} of {all} SQL examples carry a marker: keep them rare");
}

#[test]
fn markers_parse() {
    let text = "a\n\n<!-- expect-error 22023 -->\n```sql\nselect 1/0;\n```\n\n```text\nout\n```\n\
                <!-- not-run: needs a copy -->\n\n```sql\nselect 2;\n```\n```sql\nselect 3;\n```\n";
    let b = sql_blocks(text).unwrap();
    let got: Vec<_> = b.iter().map(|b| (b.line, b.sql.as_str(), b.expect.clone())).collect();
    assert_eq!(
        got,
        [
            (4, "select 1/0;\n", Expect::Error("22023".into())),
            (13, "select 2;\n", Expect::NotRun("needs a copy".into())),
            (16, "select 3;\n", Expect::Success),
        ]
    );
    assert!(sql_blocks("<!-- expect-error 22023 -->\ntext\n").is_err(), "a marker before prose");
    assert!(sql_blocks("<!-- expect-error 22023 -->\n```text\nx\n```\n").is_err(), "a marker before text");
    assert!(sql_blocks("<!-- expect-error 2202 -->\n```sql\nx\n```\n").is_err(), "a short SQLSTATE");
    assert!(sql_blocks("<!-- expect-eror 22023 -->\n```sql\nx\n```\n").is_err(), "a misspelt marker");
    assert!(sql_blocks("```sql\nx\n").is_err(), "an unclosed block");
    assert!(sql_blocks("<!-- any comment -->\n```sql\nx\n```\n").unwrap()[0].expect == Expect::Success);
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The lines of `text` outside fenced code blocks, with their numbers.
fn prose(text: &str) -> Vec<(usize, &str)> {
    let mut in_fence = false;
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("```") {
            in_fence = !in_fence;
        } else if !in_fence {
            lines.push((i + 1, line));
        }
    }
    lines
}

/// The anchors of the headings of a Markdown file (a repeated heading gets `-1`, `-2`, …).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for (_, line) in prose(text) {
        let Some(h) = line.strip_prefix('#') else { continue };
        let base = slug(h.trim_start_matches('#'));
        let mut s = base.clone();
        let mut n = 0;
        while seen.contains(&s) {
            n += 1;
            s = format!("{base}-{n}");
        }
        seen.insert(s);
    }
    seen
}

/// The link targets of a line (`[text](target)`), outside inline code.
fn links(line: &str) -> Vec<String> {
    let outside: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
    let mut found = Vec::new();
    let mut rest = outside.as_str();
    while let Some(at) = rest.find("](") {
        let tail = &rest[at + 2..];
        let Some(end) = tail.find(')') else { break };
        found.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    found
}

#[test]
fn links_resolve() {
    assert_eq!(slug(" `kafka.publish`: keys, headers"), "kafkapublish-keys-headers");
    assert_eq!(slug(" Limits (not yet)"), "limits-not-yet");
    let mut broken = Vec::new();
    for path in linked_files() {
        let text = read(&path);
        let dir = path.parent().expect("a file has a folder");
        for (n, line) in prose(&text) {
            for target in links(line) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                let (file, anchor) =
                    target.split_once('#').map_or((target.as_str(), None), |(f, a)| (f, Some(a)));
                let linked = if file.is_empty() { path.clone() } else { dir.join(file) };
                let at = format!("{}:{n}: {target}", path.strip_prefix(repo()).unwrap_or(&path).display());
                if !linked.exists() {
                    broken.push(format!("{at}: no such file"));
                } else if let Some(anchor) = anchor {
                    if linked.extension().is_some_and(|x| x == "md")
                        && !anchors(&read(&linked)).contains(anchor)
                    {
                        broken.push(format!("{at}: no such heading"));
                    }
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn module_map_matches_lib_rs() {
    let lib = read(&repo().join("src/lib.rs"));
    let doc = read(&repo().join("docs/architecture.md"));
    let doc_lines: BTreeSet<&str> = doc.lines().collect();
    let rows: Vec<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//! |"))
        .map(|row| format!("|{}", row.replace("[`", "`").replace("`]", "`").replace("mod@", "")))
        .collect();
    assert!(rows.len() >= 5, "src/lib.rs has no module map");
    let missing: Vec<&String> = rows.iter().filter(|r| !doc_lines.contains(r.as_str())).collect();
    assert!(missing.is_empty(), "docs/architecture.md lacks these rows of src/lib.rs's map: {missing:#?}");
}

/// A documented default as `pg_settings` shows `boot_val`: in the setting's `unit` (`1s` with unit
/// `ms` is `1000`, `64MB` with unit `B` is `67108864`), `(empty)` as ``.
fn as_boot_val(documented: &str, unit: Option<&str>) -> String {
    let d = documented.trim_matches('`');
    if d == "(empty)" {
        return String::new();
    }
    let factor = |u: &str| -> Option<i64> {
        Some(match u {
            "B" => 1,
            "kB" => 1024,
            "MB" => 1024 * 1024,
            "GB" => 1024 * 1024 * 1024,
            "ms" => 1,
            "s" => 1000,
            "min" => 60_000,
            _ => return None,
        })
    };
    let Some(per_unit) = unit.and_then(factor) else { return d.to_owned() };
    let digits = d.find(|c: char| !c.is_ascii_digit()).unwrap_or(d.len());
    let (n, suffix) = d.split_at(digits);
    match (n.parse::<i64>(), if suffix.is_empty() { Some(per_unit) } else { factor(suffix) }) {
        (Ok(n), Some(f)) => (n * f / per_unit).to_string(),
        _ => d.to_owned(),
    }
}

#[test]
fn settings_table_matches_the_server() {
    // docs/settings.md: every setting the server registers, no other, each with its default; and
    // what its first line says of how they change (all reloadable but kafka.max_backlog, which a
    // superuser sets per role).
    let doc = read(&repo().join("docs/settings.md"));
    let documented: Vec<(String, String)> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `kafka."))
        .map(|row| {
            let cells: Vec<&str> = row.split(" | ").collect();
            (format!("kafka.{}", cells[0].trim_end_matches('`')), cells[1].to_owned())
        })
        .collect();
    let mut c = pg();
    let registered: Vec<(String, String, String, Option<String>)> = c
        .query(
            "SELECT name, boot_val, context, unit FROM pg_settings WHERE name LIKE 'kafka.%' ORDER BY name",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let names = |v: Vec<&String>| v.into_iter().cloned().collect::<BTreeSet<String>>();
    assert_eq!(
        names(documented.iter().map(|(n, _)| n).collect()),
        names(registered.iter().map(|(n, _, _, _)| n).collect()),
        "docs/settings.md lists exactly the settings the server registers"
    );
    for (name, boot, context, unit) in &registered {
        let (_, default) = documented.iter().find(|(n, _)| n == name).unwrap();
        assert_eq!(
            &as_boot_val(default, unit.as_deref()),
            boot,
            "{name}: the documented default is the server's"
        );
        let expected = if name == "kafka.max_backlog" { "superuser" } else { "sighup" };
        assert_eq!(context, expected, "{name}: changed as docs/settings.md says");
    }
}
