//! A backup source that does not hold still or was arranged to trick the walk: files that change,
//! shrink, grow or vanish while they are read, names that are not UTF-8, a user's own `.mimeo`,
//! trees deeper than PATH_MAX, sparse files, and parent directories swapped for symlinks during
//! the backup. Changes are made deterministically in the middle of a running backup: the test's
//! archive output runs them once a given number of bytes has gone out, while the backup is
//! reading the file that produced those bytes.
mod common;

use std::fs;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;

use common::tree::pseudo_random_bytes;
use mimeo::engine::archive::{ArchiveSummary, ExtractReport, extract_archive, write_dir_archive};

const MIB: usize = 1 << 20;

/// An archive output that runs `action(i)` once the `i`-th threshold of `at` (ascending) has
/// gone out through it.
struct Hooked<F: FnMut(usize)> {
    out: Vec<u8>,
    at: Vec<usize>,
    done: usize,
    action: F,
}

impl<F: FnMut(usize)> Write for Hooked<F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.extend_from_slice(buf);
        while self.done < self.at.len() && self.out.len() >= self.at[self.done] {
            (self.action)(self.done);
            self.done += 1;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Backs up `src`, running `action(i)` once `at[i]` bytes of stream are out; returns the summary
/// and the stream.
fn backup_during(src: &Path, at: &[usize], action: impl FnMut(usize)) -> (ArchiveSummary, Vec<u8>) {
    let mut out = Hooked {
        out: Vec::new(),
        at: at.to_vec(),
        done: 0,
        action,
    };
    let summary = write_dir_archive(src, None, &mut out).unwrap();
    assert_eq!(out.done, at.len(), "not every change ran");
    (summary, out.out)
}

fn restore(stream: &[u8], dst: &Path) -> ExtractReport {
    extract_archive(stream, dst).unwrap()
}

fn mentions(lines: &[String], path: &str, what: &str) -> bool {
    lines
        .iter()
        .any(|l| l.starts_with(&format!("{path}: ")) && l.contains(what))
}

#[test]
fn a_file_that_shrinks_while_read_is_restored_as_read_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    let original = pseudo_random_bytes(8 * MIB, 1);
    fs::write(src.join("big.bin"), &original).unwrap();
    let victim = src.join("big.bin");
    let (summary, stream) = backup_during(&src, &[2 * MIB], |_| {
        fs::File::options()
            .write(true)
            .open(&victim)
            .unwrap()
            .set_len(MIB as u64)
            .unwrap();
    });
    assert!(
        mentions(&summary.warnings, "big.bin", "shrank"),
        "{:?}",
        summary.warnings
    );

    let dst = tmp.path().join("dst");
    let report = restore(&stream, &dst);
    let restored = fs::read(dst.join("big.bin")).unwrap();
    // What was read before the cut, never the zeros that kept the stream in step.
    assert!(
        restored.len() >= 2 * MIB && restored.len() < 8 * MIB,
        "{}",
        restored.len()
    );
    assert!(restored == original[..restored.len()], "content differs");
    assert!(
        mentions(&report.warnings, "big.bin", "shrank"),
        "{:?}",
        report.warnings
    );
}

#[test]
fn a_file_that_changes_or_grows_while_read_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    let original = pseudo_random_bytes(4 * MIB, 2);
    fs::write(src.join("a-changes.bin"), &original).unwrap();
    fs::write(src.join("b-grows.bin"), &original).unwrap();
    let (changes, grows) = (src.join("a-changes.bin"), src.join("b-grows.bin"));
    // One change in the middle of each file's read.
    let (summary, _) = backup_during(&src, &[2 * MIB, 6 * MIB], |i| {
        let mut f = fs::File::options()
            .write(true)
            .open([&changes, &grows][i])
            .unwrap();
        if i == 0 {
            f.seek(SeekFrom::Start(3 * MIB as u64)).unwrap();
            f.write_all(b"changed after the read began").unwrap();
        } else {
            f.set_len(5 * MIB as u64).unwrap();
        }
    });
    assert!(
        mentions(&summary.warnings, "a-changes.bin", "changed"),
        "{:?}",
        summary.warnings
    );
    assert!(
        mentions(&summary.warnings, "b-grows.bin", "grew"),
        "{:?}",
        summary.warnings
    );
}

#[test]
fn a_file_that_vanishes_before_it_is_read_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a.bin"), pseudo_random_bytes(4 * MIB, 3)).unwrap();
    fs::write(src.join("b.txt"), b"gone before its turn").unwrap();
    let gone = src.join("b.txt");
    let (summary, stream) = backup_during(&src, &[MIB], |_| fs::remove_file(&gone).unwrap());
    assert!(
        mentions(&summary.skipped, "b.txt", "vanished"),
        "{:?}",
        summary.skipped
    );
    let dst = tmp.path().join("dst");
    restore(&stream, &dst);
    assert!(!dst.join("b.txt").exists());
}
