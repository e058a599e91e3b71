//! The balancer's top-level modules import each other without a cycle, so
//! each can be read (and changed) knowing only what it depends on. Scans
//! `use crate::...` and `crate::...` paths in code (not comments).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Top-level module of a source file (`src/proxy/attempt.rs` -> `proxy`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.trim_end_matches(".rs");
    (name != "lib" && name != "main").then(|| name.to_owned())
}

/// Top-level modules named by `crate::NAME` in the code of `text`,
/// ignoring comments and test modules.
fn imports(text: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or(text);
    let mut found = BTreeSet::new();
    let mut in_use_block = false;
    for line in code.lines() {
        let line = line.trim();
        if line.starts_with("//") {
            continue;
        }
        // `use crate::{a::X, b::Y};` over several lines.
        if line.starts_with("use crate::{") && !line.ends_with("};") {
            in_use_block = true;
            continue;
        }
        if in_use_block {
            if line.starts_with("};") {
                in_use_block = false;
                continue;
            }
            if let Some(name) = line.split(['{', ':', ',', ';']).next() {
                let name = name.trim();
                if !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                    found.insert(name.to_owned());
                }
            }
            continue;
        }
        for (i, _) in line.match_indices("crate::") {
            let rest = &line[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut c = path[at..].to_vec();
            c.push(node.to_owned());
            return Some(c);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(c) = visit(node, graph, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn top_level_modules_form_no_cycle() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let Some(module) = module_of(&src, &file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("read");
        let deps = graph.entry(module.clone()).or_default();
        deps.extend(imports(&text).into_iter().filter(|d| *d != module));
    }
    assert!(graph.len() > 10, "too few modules found: {graph:?}");
    assert!(
        graph["admin"].contains("supervisor"),
        "the scan misses imports: {graph:?}"
    );
    if let Some(c) = cycle(&graph) {
        panic!("import cycle: {}\ngraph: {graph:#?}", c.join(" -> "));
    }
}

#[test]
fn the_scan_sees_a_cycle() {
    let graph = BTreeMap::from([
        ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
        ("b".to_owned(), BTreeSet::from(["a".to_owned()])),
    ]);
    assert!(cycle(&graph).is_some());
    assert_eq!(
        imports(
            "use crate::{\n    admin::X,\n    pool::Pool,\n};\nfn f() { crate::events::y() }\n// crate::nope\n"
        ),
        BTreeSet::from(["admin".to_owned(), "events".to_owned(), "pool".to_owned()])
    );
}
