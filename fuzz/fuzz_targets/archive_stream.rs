//! Restore of an archive stream into a directory (src/engine/archive.rs, `extract_archive`)
//! against arbitrary bytes.
//!
//! Each run extracts into `target` inside a fresh scratch directory that also holds a sibling
//! sentinel directory; a second sentinel lives at a fixed absolute path (the seeds' symlinks aim
//! at both). Besides "never panics" and "never allocates without bound" it asserts that nothing
//! was written outside `target`: both sentinels are exactly as made (only `canary`, same
//! content, mode and link count) and the scratch directory holds nothing else. Header checksums
//! are fixed up first (`fix_tar_checksums`) so mutations reach Mimeo's code.

#![no_main]

use std::fs;
use std::os::unix::fs::MetadataExt;

use libfuzzer_sys::fuzz_target;
use mimeo::engine::archive::extract_archive;
use mimeo_fuzz::{absolute_sentinel, assert_sentinel_intact, listing};

fuzz_target!(
    init: {
        mimeo_fuzz::write_seeds(mimeo_fuzz::archive_seeds);
        absolute_sentinel();
    },
    |data: &[u8]| {
        let mut stream = data.to_vec();
        mimeo_fuzz::fix_tar_checksums(&mut stream);

        let scratch = tempfile::Builder::new()
            .prefix("mimeo-fuzz-run-")
            .tempdir()
            .expect("scratch dir");
        let root = scratch.path();
        let sibling = root.join("sentinel");
        mimeo_fuzz::make_sentinel(&sibling);
        let target = root.join("target");
        let root_mode = fs::symlink_metadata(root).unwrap().mode();

        // Errors are fine (a damaged stream); writing outside `target` is not.
        let _ = extract_archive(stream.as_slice(), &target);

        assert_sentinel_intact(&sibling);
        assert_sentinel_intact(absolute_sentinel());
        assert_eq!(
            listing(root).unwrap(),
            ["sentinel", "target"],
            "written beside the target"
        );
        let meta = fs::symlink_metadata(root).unwrap();
        assert_eq!(meta.mode(), root_mode, "scratch dir mode changed");
        assert!(fs::symlink_metadata(&target).unwrap().is_dir(), "target is no directory");

        mimeo_fuzz::force_remove(root).expect("removing the scratch dir");
    }
);
