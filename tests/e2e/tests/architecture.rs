//! The extension's module layers, checked on its source (no database needed). From the bottom:
//! `gucs` and `relation`, `error`, `settings`, `shared`, `store`, `backend`, `decoding` (WAL capture,
//! which encodes with the backend's capture and stages through its pending messages), `worker`, then
//! `lib`. A module may use (`crate::…`) only modules of lower layers or of its own folder; the
//! worker uses the backend only through `decoding`; and no module reaches itself back through
//! `crate::` paths. (That nothing but `core/` touches librdkafka, and that `core/` cannot call
//! PostgreSQL, the crates' dependencies enforce.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const LAYERS: &[(&str, u8)] = &[
    ("gucs", 0),
    ("relation", 0),
    ("error", 1),
    ("settings", 2),
    ("shared", 3),
    ("store", 4),
    ("backend", 5),
    ("decoding", 6),
    ("worker", 7),
    ("lib", 8),
    ("tests", 8),
];

/// Module path ("backend::capture::plan") → its source text, without comments.
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, into: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, into);
            } else if p.extension().is_some_and(|x| x == "rs") {
                into.push(p);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files
        .into_iter()
        .map(|f| {
            let rel = f.strip_prefix(&src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            let text: String = std::fs::read_to_string(&f)
                .unwrap()
                .lines()
                .map(|l| l.split("//").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            (parts.join("::"), text)
        })
        .collect()
}

/// The `crate::` paths a source uses, including each member of `use crate::{a, b::c}`.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect::<String>()
    };
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + 7..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find("};").unwrap_or(group.len());
            for member in group[..end].split(',') {
                let p = ident(member.trim());
                if !p.is_empty() {
                    out.insert(p.trim_end_matches(':').to_owned());
                }
            }
        } else {
            out.insert(ident(rest).trim_end_matches(':').to_owned());
        }
    }
    out
}

#[test]
fn modules_use_only_lower_layers_and_no_cycle() {
    let mods = modules();
    let layer = |m: &str| {
        let top = m.split("::").next().unwrap();
        LAYERS.iter().find(|(n, _)| *n == top).unwrap_or_else(|| panic!("module {m} has no layer")).1
    };
    // Each path resolved to the longest module it names.
    let resolve = |p: &str| -> Option<String> {
        let mut segs: Vec<&str> = p.split("::").collect();
        while !segs.is_empty() {
            let k = segs.join("::");
            if mods.contains_key(&k) {
                return Some(k);
            }
            segs.pop();
        }
        None
    };
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut wrong = Vec::new();
    for (m, text) in &mods {
        let mut uses = BTreeSet::new();
        for p in crate_paths(text) {
            let Some(t) = resolve(&p) else { continue };
            if &t == m || t.starts_with(&format!("{m}::")) {
                continue; // itself, or its own submodule
            }
            let (top, ttop) = (m.split("::").next().unwrap(), t.split("::").next().unwrap());
            if top != ttop && layer(&t) >= layer(m) {
                wrong.push(format!("{m} uses {t}"));
            }
            uses.insert(t);
        }
        edges.insert(m.clone(), uses);
    }
    assert!(wrong.is_empty(), "uses that do not run down the layers: {wrong:#?}");
    // The worker reaches what runs in sessions only through WAL capture.
    let worker_backend: Vec<_> = edges
        .iter()
        .filter(|(m, _)| m.starts_with("worker"))
        .flat_map(|(m, u)| {
            u.iter().filter(|t| t.starts_with("backend")).map(move |t| format!("{m} uses {t}"))
        })
        .collect();
    assert!(worker_backend.is_empty(), "the worker uses the backend: {worker_backend:#?}");
    // No cycle: repeatedly remove modules that use nothing left.
    let mut left = edges.clone();
    while let Some(leaf) =
        left.iter().find(|(_, u)| u.iter().all(|t| !left.contains_key(t))).map(|(m, _)| m.clone())
    {
        left.remove(&leaf);
    }
    assert!(left.is_empty(), "modules in a cycle: {:?}", left.keys().collect::<Vec<_>>());
    // The check sees the real tree.
    assert!(mods.contains_key("backend::capture::plan") && mods.contains_key("worker::immediate"));
    assert!(edges["worker"].contains("shared"), "{:?}", edges["worker"]);
}
