//! Boundaries kept by a test (rust-analyzer's tidy tests): the layer table in
//! ARCHITECTURE.md says which top-level modules each one may name, and every source file
//! is read to check that it names no other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ARCHITECTURE: &str = include_str!("../ARCHITECTURE.md");

/// The rows of the `## Layers` table: layer → the layers it may call.
fn layer_table() -> BTreeMap<String, BTreeSet<String>> {
    let section = ARCHITECTURE
        .split("\n## ")
        .find(|s| s.starts_with("Layers"))
        .expect("ARCHITECTURE.md has a `## Layers` section");
    let mut table = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let [layer, calls] = cells[..] else {
            panic!("a layer row has two cells: {line}");
        };
        let names = |cell: &str| {
            cell.split(',')
                .map(|c| c.trim().trim_matches('`').to_owned())
                .filter(|c| !c.is_empty() && c != "—")
                .collect::<BTreeSet<_>>()
        };
        let layer = names(layer).pop_first().expect("a layer name");
        table.insert(layer, names(calls));
    }
    table
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module an item of a `use` group starts with (`feed` of `feed::{a, b}`).
fn top_item(item: &str) -> Option<String> {
    let name: String = item
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty() && name != "self").then_some(name)
}

/// The crate's top-level modules a source names: `crate::x`, `crate::{x, y}`, and in the
/// binary `heliosburn::x` / `heliosburn::{x, y}`.
fn named_modules(source: &str, root: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let prefix = format!("{root}::");
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in source.match_indices(&prefix) {
        // `super::crate_x::` or `my_crate::` are not this crate's root.
        let before = source[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &source[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The top-level items of the group, whatever is nested in them.
            let mut depth = 0usize;
            let mut start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.extend(top_item(&group[start..i]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.extend(top_item(&group[start..i]));
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

#[test]
fn every_layer_names_only_the_layers_it_may_call() {
    let table = layer_table();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut crossings = Vec::new();
    let mut layers_seen = BTreeSet::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let layer = first.trim_end_matches(".rs").to_owned();
        if layer == "lib" || layer == "tidy" {
            continue;
        }
        layers_seen.insert(layer.clone());
        let Some(allowed) = table.get(&layer) else {
            crossings.push(format!(
                "src/{} is in layer `{layer}`, which the Layers table of ARCHITECTURE.md does not list",
                rel.display()
            ));
            continue;
        };
        let source = std::fs::read_to_string(&file).unwrap();
        let root = if layer == "main" {
            "heliosburn"
        } else {
            "crate"
        };
        for named in named_modules(&source, root) {
            if named != layer && !allowed.contains(&named) {
                crossings.push(format!(
                    "src/{} (layer `{layer}`) names `{named}`, which its row of ARCHITECTURE.md's Layers table does not list",
                    rel.display()
                ));
            }
        }
    }
    for listed in table.keys() {
        if !layers_seen.contains(listed) {
            crossings.push(format!(
                "ARCHITECTURE.md lists a layer `{listed}` that src/ does not have"
            ));
        }
    }
    assert!(crossings.is_empty(), "\n{}", crossings.join("\n"));
}

#[test]
fn the_proxy_names_no_module_above_it() {
    // The boundary the issue that made the table asked for, said on its own.
    let proxy = &layer_table()["proxy"];
    assert!(
        !proxy.contains("modules") && !proxy.contains("resources"),
        "{proxy:?}"
    );
}

#[test]
fn the_scanner_finds_paths_and_groups() {
    let found = named_modules(
        "use crate::{feed::{x, y}, store, self, modules::Z};\nlet a = crate::window::now();\nuse other_crate::proxy;",
        "crate",
    );
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        ["feed", "modules", "store", "window"]
    );
}

#[test]
fn the_layer_table_has_no_cycles() {
    let table = layer_table();
    // Depth-first, with the path kept: a layer met again on its own path is a cycle.
    fn visit<'a>(
        layer: &'a str,
        table: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if done.contains(layer) {
            return;
        }
        assert!(
            !path.contains(&layer),
            "a cycle in ARCHITECTURE.md's layers: {path:?} -> {layer}"
        );
        path.push(layer);
        for next in table.get(layer).into_iter().flatten() {
            visit(next, table, path, done);
        }
        path.pop();
        done.insert(layer);
    }
    let mut done = BTreeSet::new();
    for layer in table.keys() {
        visit(layer, &table, &mut Vec::new(), &mut done);
    }
}
