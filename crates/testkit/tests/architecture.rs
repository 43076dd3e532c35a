//! The shape of the workspace, as `docs/architecture.md` draws it, checked so it stays so:
//! - no two modules of one crate import each other (not even through others);
//! - a crate depends only on crates of a lower layer of the diagram;
//! - the architecture page names every crate, and every crate, folder and file it names exists.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers of the diagram in `docs/architecture.md`, bottom (0) to top. A crate may depend on
/// crates of lower layers only.
const LAYERS: &[(&str, u32)] = &[
    ("xml", 0),
    ("host", 0),
    ("logfile", 0),
    ("images", 0),
    ("api", 0),
    ("testkit", 0),
    ("domain", 1),
    ("net", 1),
    ("virtio", 1),
    ("cluster", 1),
    ("qemu", 2),
    ("vmm", 2),
    ("native", 3),
    ("daemon", 4),
    ("cli", 4),
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/testkit is two levels below the workspace")
        .to_path_buf()
}

fn crates() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(workspace().join("crates"))
        .expect("read crates/")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Every `.rs` file of `src/` (binaries under `src/bin/` aside), as its module path:
/// `src/a.rs` and `src/a/mod.rs` are `a`, `src/a/b.rs` is `a::b`, the crate root is ``.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)
            .expect("read a source folder")
            .flatten()
        {
            let path = entry.path();
            let relative = path.strip_prefix(src).expect("below src").to_path_buf();
            if path.is_dir() {
                if relative != Path::new("bin") {
                    stack.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let mut parts: Vec<String> = relative
                .iter()
                .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            out.insert(parts.join("::"), path);
        }
    }
    out
}

/// The code of a file without comments and without its trailing test module (whose `super::`
/// means the file itself).
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read a source file");
    let text = match text.find("\n#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => &text,
    };
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The longest known module that `path` (segments) starts with.
fn longest_module(known: &BTreeMap<String, PathBuf>, segments: &[&str]) -> Option<String> {
    (1..=segments.len())
        .rev()
        .map(|n| segments[..n].join("::"))
        .find(|candidate| known.contains_key(candidate))
}

/// Module -> the modules of the same crate its code refers to (`crate::m`, `super::m`).
fn import_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let known = modules(src);
    let mut graph = BTreeMap::new();
    for (module, path) in &known {
        let code = code_of(path);
        let own: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
        let mut uses = BTreeSet::new();
        for prefix in ["crate::", "super::"] {
            for (at, _) in code.match_indices(prefix) {
                // `pub(super)` and `pub(crate)` are visibilities, not paths.
                let before = code[..at].chars().next_back();
                if before == Some('(') {
                    continue;
                }
                let rest = &code[at + prefix.len()..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                    .unwrap_or(rest.len());
                let mut segments: Vec<&str> = if prefix == "crate::" {
                    Vec::new()
                } else {
                    own[..own.len().saturating_sub(1)].to_vec()
                };
                segments.extend(rest[..end].split("::").filter(|s| !s.is_empty()));
                let target = longest_module(&known, &segments).unwrap_or_default();
                if target != *module {
                    uses.insert(target);
                }
            }
        }
        graph.insert(module.clone(), uses);
    }
    graph
}

/// A circle through `start`, as the modules along it.
fn circle_from(
    graph: &BTreeMap<String, BTreeSet<String>>,
    start: &str,
    path: &mut Vec<String>,
) -> Option<Vec<String>> {
    let current = path.last().cloned().unwrap_or_else(|| start.to_string());
    for next in graph.get(&current).into_iter().flatten() {
        if next == start {
            let mut circle = path.clone();
            circle.push(start.to_string());
            return Some(circle);
        }
        if !path.contains(next) {
            path.push(next.clone());
            if let Some(circle) = circle_from(graph, start, path) {
                return Some(circle);
            }
            path.pop();
        }
    }
    None
}

fn show(module: &str) -> &str {
    if module.is_empty() {
        "(crate root)"
    } else {
        module
    }
}

#[test]
fn no_two_modules_of_a_crate_import_each_other() {
    let mut circles = Vec::new();
    for name in crates() {
        let graph = import_graph(&workspace().join("crates").join(&name).join("src"));
        for module in graph.keys() {
            let mut path = vec![module.clone()];
            if let Some(circle) = circle_from(&graph, module, &mut path) {
                let shown: Vec<&str> = circle.iter().map(|m| show(m)).collect();
                circles.push(format!("{name}: {}", shown.join(" -> ")));
                break;
            }
        }
    }
    assert!(
        circles.is_empty(),
        "modules that import each other:\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_graph_sees_imports_and_circles() {
    // The checker itself: a known import through `super::` and one through `crate::`.
    let daemon = import_graph(&workspace().join("crates/daemon/src"));
    assert!(
        daemon["services::domains"].contains("services::guests"),
        "{daemon:?}"
    );
    assert!(
        daemon["services::supervisor"].contains("store"),
        "{daemon:?}"
    );
    let mut graph = BTreeMap::new();
    graph.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    graph.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    assert!(circle_from(&graph, "a", &mut vec!["a".to_string()]).is_some());
}

/// The `oxvirt-*` crates `crate` depends on (normal dependencies, not dev- or build-).
fn dependencies(name: &str) -> Vec<String> {
    let manifest =
        std::fs::read_to_string(workspace().join("crates").join(name).join("Cargo.toml"))
            .expect("read Cargo.toml");
    let mut section = String::new();
    let mut out = Vec::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line.to_string();
        } else if section == "[dependencies]" {
            if let Some(dep) = line.strip_prefix("oxvirt-") {
                let dep: String = dep
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                out.push(dep);
            }
        }
    }
    out
}

#[test]
fn crates_depend_only_on_lower_layers() {
    let layer: BTreeMap<&str, u32> = LAYERS.iter().copied().collect();
    let mut wrong = Vec::new();
    for name in crates() {
        let Some(&own) = layer.get(name.as_str()) else {
            wrong.push(format!(
                "crate {name} has no layer in this test (and the diagram)"
            ));
            continue;
        };
        for dep in dependencies(&name) {
            match layer.get(dep.as_str()) {
                Some(&below) if below < own => {}
                Some(&other) => wrong.push(format!(
                    "{name} (layer {own}) depends on {dep} (layer {other})"
                )),
                None => wrong.push(format!("{name} depends on unknown crate {dep}")),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_architecture_page_names_what_exists() {
    let root = workspace();
    let page = std::fs::read_to_string(root.join("docs/architecture.md"))
        .expect("read docs/architecture.md");
    let mut missing = Vec::new();
    for name in crates() {
        if !page.contains(&format!("crates/{name}")) {
            missing.push(format!("crate crates/{name} is not named"));
        }
    }
    // Every `crates/...` path the page writes, up to the first character that cannot be part
    // of a path.
    for (at, _) in page.match_indices("crates/") {
        let rest = &page[at..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || "/_.-".contains(c)))
            .unwrap_or(rest.len());
        let named = rest[..end].trim_end_matches(['.', '/']);
        if !root.join(named).exists() {
            missing.push(format!("{named} is named but does not exist"));
        }
    }
    missing.sort();
    missing.dedup();
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}
