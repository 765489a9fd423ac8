//! Restore of an archive stream to a sink of regular files (src/engine/archive.rs,
//! `extract_archive_to`, used for S3 restore targets) against arbitrary bytes.
//!
//! Beside "never panics" and "never allocates without bound": every path handed to the sink or
//! to `delete` is canonical and relative (no empty, `.` or `..` component, no leading `/`, no
//! NUL), a sink never gets more bytes than the entry's size,
//! a successful report counts exactly what the sink received, and never more than the bound a
//! restore passes (the catalog's `fileBytes`; here 1 MiB). Header checksums are fixed
//! up first (`fix_tar_checksums`) so mutations reach Mimeo's code.

#![no_main]

use std::io::{self, Read};

use libfuzzer_sys::fuzz_target;
use mimeo::engine::archive::extract_archive_to;

/// What the stream's files may add up to.
const MAX_BYTES: u64 = 1 << 20;

fuzz_target!(
    init: mimeo_fuzz::write_seeds(mimeo_fuzz::archive_seeds),
    |data: &[u8]| {
        let mut stream = data.to_vec();
        mimeo_fuzz::fix_tar_checksums(&mut stream);

        let (mut files, mut bytes) = (0u64, 0u64);
        let mut sink = |path: &str, size: u64, reader: &mut dyn Read| -> mimeo::engine::error::Result<()> {
            assert_safe(path);
            let n = io::copy(reader, &mut io::sink())
                .map_err(|e| mimeo::engine::error::EngineError::Archive {
                    entry: path.to_owned(),
                    detail: format!("reading: {e}"),
                })?;
            assert!(n <= size, "{path}: sink read {n} bytes of a {size}-byte entry");
            files += 1;
            bytes += n;
            Ok(())
        };
        let mut delete = |path: &str| -> mimeo::engine::error::Result<()> {
            assert_safe(path);
            Ok(())
        };
        let bound = Some(MAX_BYTES);
        if let Ok(report) = extract_archive_to(stream.as_slice(), &mut sink, &mut delete, bound) {
            assert_eq!(report.entries, files);
            assert_eq!(report.bytes, bytes);
            assert!(bytes <= MAX_BYTES, "{bytes} bytes written past the bound");
        }
    }
);

/// A path an object store may be given: canonical and relative.
fn assert_safe(path: &str) {
    assert!(!path.starts_with('/'), "absolute path {path:?}");
    assert!(!path.contains('\0'), "NUL in {path:?}");
    assert!(
        path.split('/').all(|c| !matches!(c, "" | "." | "..")),
        "not canonical: {path:?}"
    );
}
