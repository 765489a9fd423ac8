//! The layers of DESIGN §4 hold: data flows main → {operator, local} → reconcile → worker →
//! engine → media, with api (and the error types) at the bottom beside media, and no module
//! imports one above it or beside it. Every `crate::MODULE` path in `src/` is checked, not
//! only `use` lines.

use std::path::{Path, PathBuf};

/// Each top-level module and its layer: a module may name only modules of a lower layer.
const LAYERS: [(&str, u32); 14] = [
    ("beneath", 0),
    ("base", 0),
    // Side by side, so neither names the other: the on-media format (media's own manifest
    // and volume types) does not follow the CRDs, and the CRDs know nothing of the media.
    ("api", 1),
    ("media", 1),
    ("engine", 3),
    // The drivers' error wraps the engine's (which wraps the spec's and the media's), so no
    // layer beneath the drivers can name it: each raises its own.
    ("error", 4),
    // `crate::Error` and `crate::Result`: the crate root's names for error's.
    ("Error", 4),
    ("Result", 4),
    ("worker", 5),
    ("reconcile", 5),
    ("local", 6),
    ("operator", 6),
    ("demo", 7),
    ("lib", 8),
];

fn layer(module: &str) -> Option<u32> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules a file names as `crate::MODULE` (also inside `crate::{a, b}`).
fn named_modules(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        let names: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => group[..group.find('}').unwrap_or(group.len())]
                .split(',')
                .map(str::trim)
                .collect(),
            None => vec![rest],
        };
        for name in names {
            let module: String = name
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !module.is_empty() {
                out.push(module);
            }
        }
    }
    out
}

#[test]
fn no_module_imports_one_above_or_beside_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut broken = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = top.trim_end_matches(".rs");
        if module == "main" {
            continue; // the binary, above everything
        }
        let own = layer(module).unwrap_or_else(|| panic!("src/{module}: add it to LAYERS"));
        let text = std::fs::read_to_string(file).unwrap();
        for named in named_modules(&text) {
            if named == module {
                continue;
            }
            let theirs = layer(&named)
                .unwrap_or_else(|| panic!("{}: crate::{named} is in no layer", rel.display()));
            if theirs >= own {
                broken.push(format!("{} names crate::{named}", rel.display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "imports against the layers:\n{}",
        broken.join("\n")
    );
    assert!(files.len() > 40, "only {} files found", files.len());
}

#[test]
fn the_check_sees_grouped_and_inline_paths() {
    assert_eq!(
        named_modules("use crate::{api::X, engine::y};\nlet a = crate::media::f();"),
        ["api", "engine", "media"]
    );
}
