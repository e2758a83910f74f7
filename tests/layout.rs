//! The source tree's import rules (README, "Layout"), read off the source: which top-level
//! module of the library may name which, and that no chain of imports loops.
//!
//! A module's imports are the `crate::NAME` paths in its files' code (comments and doc
//! comments are not code). The rules:
//! - `model` never imports `data` or `train`;
//! - `kernels` never imports `model` or `data`;
//! - `classifier`, `serve` and `run` never import `train`;
//! - `train` never imports `report`;
//! - the leaves (`geometry`, `scores`, `device`, `http`) import nothing of the crate, `settings` only
//!   the names it chooses among (`model`, `data`) and the `geometry` leaf;
//! - no import loop among the top-level modules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The code of a Rust file without its comments (line, doc and nested block comments);
/// string and character literals, raw strings among them, are kept whole, so a `//` inside
/// one is not taken for a comment.
fn code_of(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let at = |i: usize, s: &str| s.chars().enumerate().all(|(k, ch)| c.get(i + k) == Some(&ch));
    while i < c.len() {
        if at(i, "//") {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if at(i, "/*") {
            let mut depth = 0;
            while i < c.len() {
                if at(i, "/*") {
                    depth += 1;
                    i += 2;
                } else if at(i, "*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if at(i, "r#\"") || at(i, "r\"") {
            // A raw string: up to the quote followed by as many hashes as opened it.
            let hashes = c[i + 1..].iter().take_while(|&&ch| ch == '#').count();
            let close: String = std::iter::once('"').chain(std::iter::repeat_n('#', hashes)).collect();
            let start = i;
            i += 2 + hashes;
            while i < c.len() && !at(i, &close) {
                i += 1;
            }
            i = (i + close.len()).min(c.len());
            out.extend(&c[start..i]);
        } else if c[i] == '"' {
            let start = i;
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i = (i + 1).min(c.len());
            out.extend(&c[start..i]);
        } else if c[i] == '\'' && (at(i, "'\"'") || at(i, "'\\")) {
            // A character literal holding a quote or an escape, such as '"' or '\''.
            let start = i;
            i += if at(i, "'\"'") { 3 } else { 4 };
            out.extend(&c[start..i.min(c.len())]);
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// The crate's top-level modules each file names, keyed by the file's own top-level module.
fn imports(src: &Path) -> Graph {
    let mut graph = Graph::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).unwrap();
            let first = relative.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
            let module = first.trim_end_matches(".rs").to_string();
            // The binary's files name the library as `classify::`; they are not library modules.
            if ["main", "cli", "commands", "lib"].contains(&module.as_str()) {
                continue;
            }
            let code = code_of(&std::fs::read_to_string(&path).unwrap());
            let named = graph.entry(module.clone()).or_default();
            for (at, _) in code.match_indices("crate::") {
                let rest = &code[at + "crate::".len()..];
                let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if !name.is_empty() && name != module {
                    named.insert(name);
                }
            }
        }
    }
    graph
}

fn graph() -> Graph {
    imports(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

/// A loop of imports through `start`, if there is one.
fn loop_through(graph: &Graph, start: &str) -> Option<Vec<String>> {
    fn walk(graph: &Graph, at: &str, start: &str, path: &mut Vec<String>, seen: &mut BTreeSet<String>) -> bool {
        for next in graph.get(at).into_iter().flatten() {
            if next == start {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(graph, next, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    walk(graph, start, start, &mut path, &mut BTreeSet::new()).then(|| {
        path.push(start.to_string());
        path
    })
}

#[test]
fn every_library_module_is_seen() {
    let graph = graph();
    for module in ["data", "model", "kernels", "train", "run", "classifier", "report", "serve", "settings"] {
        assert!(graph.contains_key(module), "no src/{module}: {:?}", graph.keys());
    }
    // The reader sees a real import, so an empty graph cannot pass the rules below.
    assert!(graph["model"].contains("kernels"), "{:?}", graph["model"]);
}

#[test]
fn layers_import_only_what_they_may() {
    let graph = graph();
    let forbidden: &[(&str, &[&str])] = &[
        ("model", &["data", "train", "run", "report", "serve", "classifier"]),
        ("kernels", &["model", "data", "train", "run", "quantize", "classifier"]),
        ("classifier", &["train"]),
        ("serve", &["train"]),
        ("run", &["train"]),
        ("train", &["report", "serve", "classifier"]),
    ];
    let mut broken = Vec::new();
    for (module, never) in forbidden {
        for name in graph.get(*module).into_iter().flatten() {
            if never.contains(&name.as_str()) {
                broken.push(format!("{module} imports {name}"));
            }
        }
    }
    for leaf in ["geometry", "scores", "device", "http"] {
        for name in graph.get(leaf).into_iter().flatten() {
            broken.push(format!("{leaf} (a leaf) imports {name}"));
        }
    }
    for name in graph.get("settings").into_iter().flatten() {
        // `kernels` (under `model`) for the arithmetic a run's products use (`--precision`).
        if !["model", "kernels", "data", "geometry"].contains(&name.as_str()) {
            broken.push(format!("settings imports {name}"));
        }
    }
    assert!(broken.is_empty(), "import rules broken:\n{}", broken.join("\n"));
}

#[test]
fn no_import_loops() {
    let graph = graph();
    let loops: Vec<String> = graph.keys().filter_map(|m| loop_through(&graph, m)).map(|l| l.join(" -> ")).collect();
    assert!(loops.is_empty(), "import loops:\n{}", loops.join("\n"));
}

#[test]
fn the_reader_finds_loops_and_ignores_comments() {
    let code = code_of(
        "use crate::a; // crate::b\n/* crate::c /* nested */ crate::d */ let s = \"//\"; crate::e\n\
         let q = '\"'; crate::f; let r = r#\"a \"// b\"#; crate::g",
    );
    assert!(code.contains("crate::a") && code.contains("crate::e"), "{code}");
    assert!(code.contains("crate::f") && code.contains("crate::g"), "{code}");
    assert!(!code.contains("crate::b") && !code.contains("crate::c") && !code.contains("crate::d"));
    let mut graph = Graph::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    graph.entry("c".into()).or_default().insert("a".into());
    assert_eq!(loop_through(&graph, "a").unwrap(), ["a", "b", "c", "a"]);
    graph.get_mut("c").unwrap().clear();
    assert_eq!(loop_through(&graph, "a"), None);
}
