//! The layer rule: a module of `src/` imports only modules of a lower layer (or itself). The
//! layers are declared once, in the table of `src/lib.rs`'s documentation; this test reads that
//! table and every source file, and fails on an import that points up or sideways, on a module
//! missing from the table, and on a source file past 600 lines.
//!
//! Test code (`#[cfg(test)]` modules at the bottom of a file, `tests.rs` files) is left out:
//! tests may wire fakes from anywhere.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

const LONGEST_FILE: usize = 600;

/// Layer of each top-level module, from the `| N | [`a`], [`b`] | ... |` rows of `src/lib.rs`.
fn layer_table() -> HashMap<String, usize> {
    let lib = fs::read_to_string(root().join("src/lib.rs")).expect("read src/lib.rs");
    let mut table = HashMap::new();
    for line in lib.lines().filter_map(|l| l.strip_prefix("//! |")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Some(Ok(layer)) = cells.first().map(|c| c.parse::<usize>()) else { continue };
        for name in cells[1].split(',') {
            let name = name.trim().trim_start_matches("[`").trim_end_matches("`]");
            table.insert(name.to_string(), layer);
        }
    }
    assert!(table.len() > 10, "the layer table in src/lib.rs was not found: {table:?}");
    table
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `src/` (`src/chat/session.rs` → `["chat", "session"]`).
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" && stem != "main" {
        parts.push(stem.to_string());
    }
    parts
}

/// The source without its trailing `#[cfg(test)]` module(s) and without comments.
fn code_of(src: &str) -> String {
    let body = match src.find("#[cfg(test)]") {
        Some(i) => &src[..i],
        None => src,
    };
    body.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// Every top-level module a file refers to through `crate::` or `super::` paths.
fn imports(code: &str, here: &[String]) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < code.len() {
        let rest = &code[i..];
        let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if boundary && rest.starts_with("crate::") {
            collect_after(&rest["crate::".len()..], &mut found);
            i += "crate::".len();
        } else if boundary && rest.starts_with("super::") {
            let mut up = 0;
            let mut tail = rest;
            while let Some(t) = tail.strip_prefix("super::") {
                up += 1;
                tail = t;
            }
            // `super` of a top-level module's own file is the crate root.
            if up >= here.len() {
                collect_after(tail, &mut found);
            }
            i += rest.len() - tail.len();
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    found
}

/// The first path segment after `crate::`, or each one of a `crate::{a, b::c}` group.
fn collect_after(tail: &str, found: &mut BTreeSet<String>) {
    if let Some(group) = tail.strip_prefix('{') {
        let mut depth = 0usize;
        let mut start = true;
        for (k, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => start = true,
                c if start && (c.is_alphanumeric() || c == '_') => {
                    found.insert(ident(&group[k..]));
                    start = false;
                }
                _ => {}
            }
        }
    } else {
        found.insert(ident(tail));
    }
}

fn ident(s: &str) -> String {
    s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
}

#[test]
fn every_import_points_down_the_layers() {
    let table = layer_table();
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        if rel.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let here = module_path(rel);
        let Some(top) = here.first() else { continue }; // lib.rs, main.rs
        let Some(&my_layer) = table.get(top) else {
            violations.push(format!("{}: module `{top}` is not in the layer table of src/lib.rs", rel.display()));
            continue;
        };
        let code = code_of(&fs::read_to_string(file).expect("read source"));
        for target in imports(&code, &here) {
            if &target == top || target == "self" {
                continue;
            }
            match table.get(&target) {
                Some(&layer) if layer < my_layer => {}
                Some(&layer) => violations
                    .push(format!("{}: `{top}` (layer {my_layer}) imports `{target}` (layer {layer})", rel.display())),
                None => violations.push(format!("{}: imports `{target}`, not in the layer table", rel.display())),
            }
        }
    }
    assert!(violations.is_empty(), "imports against the layer rule:\n{}", violations.join("\n"));
}

#[test]
fn the_import_scanner_sees_every_form() {
    let code = "use crate::{bus::Bus, conn::{Out, ConnState}, model};\nfn f() { crate::wire::frame::x(); }\n\
                use super::super::store::Store;\nlet supercrate::x = 1;";
    let here = vec!["chat".to_string(), "session".to_string()];
    let got: Vec<String> = imports(code, &here).into_iter().collect();
    assert_eq!(got, vec!["bus", "conn", "model", "store", "wire"]);
    assert!(imports("use super::rate::TokenBucket;", &here).is_empty(), "inside the module");
    assert!(code_of("use crate::a;\n// crate::b\n#[cfg(test)]\nuse crate::c;").contains("crate::a"));
    assert!(!code_of("use crate::a;\n// crate::b\n#[cfg(test)]\nuse crate::c;").contains("crate::b"));
}

#[test]
fn no_source_file_is_past_600_lines() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    rust_files(&root().join("loadtest/src"), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = fs::read_to_string(f).ok()?.lines().count();
            (n > LONGEST_FILE).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these along their own seams: {long:?}");
}
