//! The YAML and validation layer (src/api/resource.rs, `parse_documents`, the input of
//! `mimeo local apply`) against arbitrary text.
//!
//! Beside "never panics": whatever it accepts passes every field check with a name that can
//! be a file name (a DNS name: no `/`, no `..`), and parses the same when given again.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mimeo::api::parse_documents;

fuzz_target!(
    init: mimeo_fuzz::write_seeds(mimeo_fuzz::yaml_seeds),
    |data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let Ok(resources) = parse_documents(text, "fuzz.yaml") else {
            return;
        };
        for r in &resources {
            assert!(r.validate().is_empty(), "accepted an invalid {}", r.kind());
            let name = r.name();
            assert!(
                !name.is_empty() && !name.contains('/') && name != "." && name != "..",
                "accepted the name {name:?}"
            );
        }
        let again = parse_documents(text, "fuzz.yaml").expect("parses the same twice");
        assert_eq!(again.len(), resources.len());
    }
);
