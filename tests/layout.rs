//! The source layout is a map of the pipeline (src/lib.rs): no top-level module imports from
//! a later one, and no two files of one folder import each other, directly or round a
//! circle. Read from the sources' `crate::` and `super::` paths (comments and test modules
//! left out), as a reviewer would.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// src/lib.rs's order; `rng`, `fsio` and `sysmem` serve all.
const PIPELINE: [&str; 11] = [
    "assets", "spec", "data", "model", "eval", "lrp", "prune", "results", "runner", "report",
    "bench",
];

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Module path of a source file: `src/model/conv/mod.rs` → `model::conv`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// The code of a file without comments and without its `#[cfg(test)]` module.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path following `prefix` in `text`, as segments (`crate::model::conv::x` → …).
fn paths_after<'a>(text: &'a str, prefix: &str) -> Vec<Vec<&'a str>> {
    text.match_indices(prefix)
        .filter(|(i, _)| {
            let before = text[..*i].chars().last();
            !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
        })
        .map(|(i, _)| {
            let rest = &text[i + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            rest[..end].split("::").filter(|s| !s.is_empty()).collect()
        })
        .collect()
}

/// module → the modules its code names.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    let modules: BTreeMap<String, PathBuf> = files
        .into_iter()
        .map(|f| (module_of(&src, &f), f))
        .filter(|(m, _)| m != "lib" && m != "main")
        .collect();
    let longest = |segments: &[&str], base: &str| -> Option<String> {
        (1..=segments.len()).rev().find_map(|k| {
            let tail = segments[..k].join("::");
            let m = if base.is_empty() {
                tail
            } else {
                format!("{base}::{tail}")
            };
            modules.contains_key(&m).then_some(m)
        })
    };
    let mut out = BTreeMap::new();
    for (m, file) in &modules {
        let text = code(&std::fs::read_to_string(file).unwrap());
        // `super` of a folder's mod.rs is the folder's parent, as for its siblings' files.
        let parent = m.rsplit_once("::").map_or("", |(p, _)| p);
        let mut deps = BTreeSet::new();
        for p in paths_after(&text, "crate::") {
            deps.extend(longest(&p, ""));
        }
        for p in paths_after(&text, "super::") {
            deps.extend(longest(&p, parent));
        }
        deps.remove(m);
        out.insert(m.clone(), deps);
    }
    out
}

#[test]
fn no_module_imports_from_a_later_stage_of_the_pipeline() {
    let stage = |m: &str| {
        PIPELINE
            .iter()
            .position(|s| m.split("::").next() == Some(*s))
    };
    let mut wrong = Vec::new();
    for (m, deps) in imports() {
        for d in deps {
            if let (Some(a), Some(b)) = (stage(&m), stage(&d)) {
                if b > a {
                    wrong.push(format!("{m} imports {d}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "against the pipeline order: {wrong:?}");
}

#[test]
fn no_import_circle_inside_a_folder() {
    let graph = imports();
    let folder = |m: &str| m.rsplit_once("::").map_or("", |(p, _)| p).to_string();
    // A circle shows as a sibling reachable from itself through siblings.
    let mut circles = Vec::new();
    for start in graph.keys() {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&String> = graph[start].iter().collect();
        while let Some(m) = todo.pop() {
            if folder(m) != folder(start) || !seen.insert(m.clone()) {
                continue;
            }
            if m == start {
                circles.push(start.clone());
                break;
            }
            todo.extend(graph.get(m).into_iter().flatten());
        }
    }
    assert!(
        circles.is_empty(),
        "modules on an import circle: {circles:?}"
    );
    // The check sees real imports (a broken parser would pass anything).
    assert!(graph["runner"].contains("results"), "{:?}", graph["runner"]);
    assert!(graph["model::layer"].contains("model::geometry"));
}
