//! The layout rules of the source tree, checked on the files themselves so that they stay true:
//! no two top-level modules import each other (directly or through others), the leaf modules
//! import (almost) nothing of the crate, and the storage engine (rusqlite, SQL text) appears only
//! under `src/store/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The file's text without its `#[cfg(test)] mod tests` block (tests may reach anywhere).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    match text.find("#[cfg(test)]\nmod ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// The top-level module a file belongs to (`src/store/sqlite.rs` → `store`); `None` for the
/// crate roots.
fn module_of(path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src()).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    let name = first.trim_end_matches(".rs").to_owned();
    (name != "lib" && name != "main").then_some(name)
}

/// The top-level modules a text names as `crate::NAME`.
fn imports(text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if modules.contains(&name) {
            out.insert(name);
        }
        // `use crate::{a, b::c}` names several.
        if rest.starts_with('{') {
            let group = &rest[1..rest.find('}').unwrap_or(rest.len())];
            for part in group.split(',') {
                let name = part.trim().split("::").next().unwrap_or("").trim();
                if modules.contains(name) {
                    out.insert(name.to_owned());
                }
            }
        }
    }
    out
}

/// A path in `graph` that leads from a node back to itself (depth-first from every node), as
/// the nodes it passes, the first one again at its end.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    for start in graph.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((m, path)) = stack.pop() {
            for d in graph.get(&m).into_iter().flatten() {
                if d == start {
                    let mut cycle = path;
                    cycle.push(start.clone());
                    return Some(cycle);
                }
                if seen.insert(d.clone()) {
                    let mut p = path.clone();
                    p.push(d.clone());
                    stack.push((d.clone(), p));
                }
            }
        }
    }
    None
}

#[test]
fn no_two_modules_import_each_other() {
    let mut files = Vec::new();
    sources(&src(), &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let Some(m) = module_of(f) else { continue };
        let deps = imports(&code(f), &modules);
        graph
            .entry(m.clone())
            .or_default()
            .extend(deps.into_iter().filter(|d| *d != m));
    }
    assert!(
        graph.len() > 10,
        "the walk found too few modules: {graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle: {}", cycle.join(" -> "));
    }
}

/// Modules every other may lean on, kept small by importing (almost) nothing of the crate: what
/// of a URL may be printed (`mask`), an exchange's record (`record`: the diff's types only), the
/// memory budget, the shadow leg's breaker (a state machine reporting to the metrics), the
/// listeners' TLS (no proxy, shadow or store in it), paging across vendors (the window walk,
/// pure but for the query parser), the id crosswalk (pure, but for the store it follows:
/// never the proxy, the shadow leg or the config), and the body decoders (`encoding`: they ask
/// for memory through a closure, not the budget).
#[test]
fn the_leaf_modules_stay_leaves() {
    let mut files = Vec::new();
    sources(&src(), &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(f)).collect();
    let allowed: &[(&str, &[&str])] = &[
        ("mask", &[]),
        ("record", &["diff"]),
        ("budget", &[]),
        ("breaker", &["quota", "telemetry"]),
        ("tls", &[]),
        ("paging", &["translate"]),
        ("ids", &["diff", "record", "store"]),
        ("triage", &["record"]),
        ("encoding", &[]),
    ];
    for (leaf, may) in allowed {
        assert!(modules.contains(*leaf), "no module {leaf}");
        for f in files
            .iter()
            .filter(|f| module_of(f).as_deref() == Some(*leaf))
        {
            for d in imports(&code(f), &modules) {
                assert!(
                    d == *leaf || may.contains(&d.as_str()),
                    "{leaf} imports {d} ({})",
                    f.display()
                );
            }
        }
    }
}

#[test]
fn the_storage_engine_is_known_only_to_the_store() {
    let mut files = Vec::new();
    sources(&src(), &mut files);
    let store = src().join("store");
    let words = [
        "rusqlite",
        "postgres::",
        "use postgres",
        "SELECT ",
        "INSERT ",
        "DELETE FROM",
        "CREATE TABLE",
        "CREATE INDEX",
        "UPDATE ",
        "PRAGMA",
    ];
    let mut found = Vec::new();
    for f in files.iter().filter(|f| !f.starts_with(&store)) {
        // The whole file, tests included: a test that writes SQL belongs with the store.
        let text = std::fs::read_to_string(f).unwrap();
        for w in words {
            if text.contains(w) {
                found.push(format!("{} contains {w:?}", f.display()));
            }
        }
    }
    assert!(found.is_empty(), "{found:#?}");
}

/// The store's files: (path under `src/store/` with `/` separators, full path).
fn store_files() -> Vec<(String, PathBuf)> {
    let store = src().join("store");
    let mut files = Vec::new();
    sources(&store, &mut files);
    let mut out: Vec<(String, PathBuf)> = files
        .into_iter()
        .map(|f| {
            let rel = f
                .strip_prefix(&store)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            (rel, f)
        })
        .collect();
    out.sort();
    assert!(
        out.len() > 30,
        "the walk found too few store files: {out:?}"
    );
    out
}

/// Where `text` names the `postgres` crate (`postgres::…`, `use postgres`), not a module of the
/// store called `postgres` (`super::postgres::…`, `store::postgres::…`).
fn names_postgres_crate(text: &str) -> bool {
    if text.contains("use postgres") {
        return true;
    }
    text.match_indices("postgres::").any(|(i, _)| {
        let before = &text[..i];
        !(before.ends_with("::")
            || before.ends_with('_')
            || before
                .chars()
                .last()
                .is_some_and(|c| c.is_ascii_alphanumeric()))
    })
}

/// Each engine's crate is named only in its folder of the store: `rusqlite` in `store/sqlite/`,
/// `postgres` in `store/postgres/`. The rest of the store (the writer thread, the roll-ups'
/// arithmetic, each concept's model, the query API, the error) is engine-neutral, so no caller
/// can come to depend on an engine (each converts its own errors into `StoreError`); and the
/// two engines never name each other.
#[test]
fn each_engine_is_named_only_in_its_own_folder() {
    let mut found = Vec::new();
    for (rel, path) in store_files() {
        let text = code(&path);
        let in_sqlite = rel.starts_with("sqlite/");
        let in_postgres = rel.starts_with("postgres/");
        if text.contains("rusqlite") && !in_sqlite {
            found.push(format!("store/{rel} names rusqlite"));
        }
        if names_postgres_crate(&text) && !in_postgres {
            found.push(format!("store/{rel} names the postgres crate"));
        }
        if in_sqlite && (text.contains("store::postgres") || text.contains("super::postgres")) {
            found.push(format!("store/{rel} (SQLite) names the PostgreSQL folder"));
        }
        if in_postgres && (text.contains("store::sqlite") || text.contains("super::sqlite")) {
            found.push(format!("store/{rel} (PostgreSQL) names the SQLite folder"));
        }
    }
    assert!(found.is_empty(), "{found:#?}");
    // The check itself can fail: the PostgreSQL reader does name its crate.
    let reader = code(&src().join("store/postgres/reader.rs"));
    assert!(names_postgres_crate(&reader));
    assert!(!names_postgres_crate("use super::postgres::open;"));
}

/// The engine is chosen in one place: of the store's files only `open.rs` matches on a
/// `Location` (and `location.rs`, which defines it and tells a URL from a path).
#[test]
fn the_engine_is_chosen_in_one_place() {
    let mut found = Vec::new();
    for (rel, path) in store_files() {
        if rel == "open.rs" || rel == "location.rs" {
            continue;
        }
        let text = code(&path);
        for w in ["Location::Sqlite", "Location::Postgres"] {
            if text.contains(w) {
                found.push(format!("store/{rel} matches on {w}"));
            }
        }
    }
    assert!(found.is_empty(), "{found:#?}");
    let open = code(&src().join("store/open.rs"));
    assert!(open.contains("Location::Sqlite") && open.contains("Location::Postgres"));
}

/// The store files a file names, by following each `super::…` and `crate::store::…` path from
/// the folder it starts in: a segment that is a file is an edge to it; a folder is entered; any
/// other name is an item of the folder's `mod.rs` (a re-export: no edge is followed through it).
fn store_edges(rel: &str, text: &str, store: &Path) -> BTreeSet<String> {
    let dir = rel.rsplit_once('/').map_or("", |(d, _)| d);
    let parent = dir.rsplit_once('/').map_or("", |(d, _)| d);
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let resolve = |mut folder: String, path: &str, out: &mut BTreeSet<String>| {
        let mut rest = path;
        loop {
            let seg = ident(rest);
            if seg.is_empty() {
                return;
            }
            let sub = if folder.is_empty() {
                seg.clone()
            } else {
                format!("{folder}/{seg}")
            };
            if store.join(format!("{sub}.rs")).is_file() {
                out.insert(format!("{sub}.rs"));
                return;
            }
            if !store.join(&sub).is_dir() {
                return;
            }
            folder = sub;
            rest = &rest[seg.len()..];
            match rest.strip_prefix("::") {
                Some(r) => rest = r,
                None => return,
            }
        }
    };
    let starts = [
        ("crate::store::", String::new()),
        ("super::super::", parent.to_owned()),
        ("super::", dir.to_owned()),
    ];
    let mut i = 0;
    while i < text.len() {
        let here = &text[i..];
        let at_word = i == 0 || {
            let b = text.as_bytes()[i - 1];
            !(b.is_ascii_alphanumeric() || b == b'_' || b == b':')
        };
        let found = starts.iter().find(|(p, _)| at_word && here.starts_with(p));
        let Some((prefix, folder)) = found else {
            i += here.chars().next().map_or(1, char::len_utf8);
            continue;
        };
        let path = &here[prefix.len()..];
        if let Some(group) = path.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for part in group.split(',') {
                resolve(folder.clone(), part.trim(), &mut out);
            }
        } else {
            resolve(folder.clone(), path, &mut out);
        }
        i += prefix.len();
    }
    out.remove(rel);
    out
}

/// No circle inside the store: its files, followed through the paths they name, never lead
/// back to themselves (a folder's `mod.rs` only declares and re-exports: it holds no function,
/// and its re-exports are not followed). The model of each concept, the writer thread and the
/// roll-ups' arithmetic are below the engines; `open.rs` is above them.
#[test]
fn no_circle_inside_the_store() {
    let store = src().join("store");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut logic_in_roots = Vec::new();
    for (rel, path) in store_files() {
        let text = code(&path);
        if rel == "mod.rs" || rel.ends_with("/mod.rs") {
            if text
                .lines()
                .any(|l| l.trim_start().starts_with("fn ") || l.contains(" fn "))
            {
                logic_in_roots.push(rel);
            }
            continue;
        }
        graph.insert(rel.clone(), store_edges(&rel, &text, &store));
    }
    assert!(
        logic_in_roots.is_empty(),
        "functions in a mod.rs: {logic_in_roots:?}"
    );
    assert!(
        graph["open.rs"].contains("sqlite/open.rs")
            && graph["sqlite/conn.rs"].contains("sqlite/open.rs"),
        "the walk misses edges: {graph:#?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!("a circle in the store: {}", cycle.join(" -> "));
    }
}

/// The comparison's scanner (`diff/scan.rs`, the one-pass parser into the compact tree) is used by
/// one file: `diff/doc.rs` parses a body into a document of either kind, and everything else
/// reads it through `diff::doc::Node` or takes serde_json's `Value`. (The parse floor can then
/// change parser without touching the diff, the proxy or the store.)
#[test]
fn the_fast_parser_is_known_only_to_the_documents() {
    let mut files = Vec::new();
    sources(&src(), &mut files);
    let diff = src().join("diff");
    let mut found = Vec::new();
    for f in &files {
        let text = code(f);
        let allowed = *f == diff.join("doc.rs") || *f == diff.join("scan.rs");
        if !allowed && text.contains("scan::") {
            found.push(format!("{} names the scanner", f.display()));
        }
        // The parser it replaced, and the stack its recursion needed.
        for w in ["sonic_rs", "stacker::"] {
            if text.contains(w) {
                found.push(format!("{} names {w:?}", f.display()));
            }
        }
    }
    assert!(found.is_empty(), "{found:#?}");
    assert!(code(&diff.join("doc.rs")).contains("scan::scan("));
}

/// `reports/` is the documented home of generated reports: its README is committed, what lands
/// there is ignored.
#[test]
fn the_reports_folder_is_documented_and_its_output_ignored() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("reports/README.md")).unwrap();
    assert!(
        readme.contains("demo.html") && readme.contains("parity-"),
        "{readme}"
    );
    let ignore = std::fs::read_to_string(root.join("reports/.gitignore")).unwrap();
    let lines: Vec<&str> = ignore.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines, ["*", "!.gitignore", "!README.md"]);
}

/// The README starts with the two commands a fresh machine runs; CI runs exactly the second
/// (the test command), and it is the script that installs what the tests need.
#[test]
fn ci_runs_the_readmes_test_command() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let block: Vec<&str> = readme
        .split("```bash\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap()
        .lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .collect();
    assert_eq!(block[0], "cargo run --release -- demo");
    let test = block[1];
    assert_eq!(test, "bash scripts/test.sh");
    let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
    let last = ci
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap()
        .trim();
    assert_eq!(
        last, test,
        ".ci/run must end with the README's test command"
    );
    let script = std::fs::read_to_string(root.join("scripts/test.sh")).unwrap();
    for installs in [
        "chromium",
        "nodejs",
        "postgresql",
        "jsonata@2",
        "cargo test --locked",
    ] {
        assert!(script.contains(installs), "scripts/test.sh: {installs}");
    }
}

/// Every candidate call goes through `Shadow::call` (`src/shadow/candidate.rs`), where its answer
/// feeds the account's quota and breaker and a 429 pauses the account: a fan-out's calls
/// included. Outside it, the shadow side sends only legacy's second call (`noise.rs`).
#[test]
fn the_candidate_is_called_in_one_place() {
    let mut files = Vec::new();
    sources(&src().join("shadow"), &mut files);
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        let calls = code(f).matches(".request(").count();
        let allowed = match name {
            "candidate.rs" | "noise.rs" => 1,
            _ => 0,
        };
        assert_eq!(
            calls,
            allowed,
            "{} sends {calls} HTTP request(s)",
            f.display()
        );
    }
}

/// A clone alone builds, tests and benchmarks: no test, benchmark, script, config or document
/// names a path outside the repository (a sibling folder, this machine's checkout). The public
/// suites the tests use live in `tests/data/`, the load harness in `bench/harness/`.
#[test]
fn the_repository_is_self_contained() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let needles = [format!("..{}", "/shared"), format!("/{}/", "work")];
    let mut files = Vec::new();
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                if !matches!(name.as_str(), "target" | ".git" | "data" | "node_modules") {
                    walk(&p, out);
                }
            } else {
                out.push(p);
            }
        }
    }
    walk(root, &mut files);
    let mut found = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        for n in &needles {
            if text.contains(n.as_str()) {
                found.push(format!(
                    "{} names {n}",
                    f.strip_prefix(root).unwrap().display()
                ));
            }
        }
    }
    assert!(found.is_empty(), "{found:#?}");
}
