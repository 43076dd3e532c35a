//! The modules of this crate import each other without circles: shared tables and rules live
//! in leaf modules (`names`, `rules`) that parse, normalize and validate all import, so none
//! of those three needs another.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module name -> the modules of this crate its code refers to (`use crate::m`, `crate::m::`;
/// comments, such as doc links, are not imports).
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut sources = BTreeMap::new();
    for entry in std::fs::read_dir(&src).expect("read src/") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            if name != "lib" {
                sources.insert(name, std::fs::read_to_string(&path).expect("read source"));
            }
        }
    }
    let modules: BTreeSet<String> = sources.keys().cloned().collect();
    sources
        .iter()
        .map(|(name, text)| {
            let code: String = text
                .lines()
                .filter(|line| !line.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            let uses = code
                .match_indices("crate::")
                .filter_map(|(at, _)| {
                    let rest = &code[at + "crate::".len()..];
                    let end = rest
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(rest.len());
                    let target = &rest[..end];
                    (modules.contains(target) && target != name).then(|| target.to_string())
                })
                .collect();
            (name.clone(), uses)
        })
        .collect()
}

/// A circle through `start`, if there is one (as the list of modules along it).
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

#[test]
fn no_module_imports_itself_through_others() {
    let graph = module_graph();
    for module in ["parse", "normalize", "validate", "names", "rules"] {
        assert!(graph.contains_key(module), "no module {module}: {graph:?}");
    }
    for module in graph.keys() {
        let mut path = vec![module.clone()];
        if let Some(circle) = circle_from(&graph, module, &mut path) {
            panic!("modules import each other: {}", circle.join(" -> "));
        }
    }
    // The leaves stay leaves.
    assert_eq!(graph["names"], BTreeSet::from(["model".to_string()]));
    assert!(graph["rules"].iter().all(|m| m == "error"), "{graph:?}");
}
