//! A backup source that does not hold still or was arranged to trick the walk: files that change,
//! shrink, grow or vanish while they are read, names that are not UTF-8, a user's own `.mimeo`,
//! trees deeper than PATH_MAX, sparse files, and parent directories swapped for symlinks during
//! the backup. Changes are made deterministically in the middle of a running backup: the test's
//! archive output runs them once a given number of bytes has gone out, while the backup is
//! reading the file that produced those bytes.
mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::Path;

use common::cli::{Env, backup_trail, media_class};
use common::tree::{assert_same_tree, pseudo_random_bytes};
use mimeo::beneath::Dir;
use mimeo::engine::archive::{
    ArchiveSummary, ExtractOptions, ExtractReport, extract_archive, extract_archive_with,
    write_dir_archive,
};

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

/// A temp dir holding an empty source tree `src`.
fn source_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    (tmp, src)
}

#[test]
fn a_file_that_shrinks_while_read_is_restored_as_read_and_reported() {
    let (tmp, src) = source_dir();
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
    let (_tmp, src) = source_dir();
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
    let (tmp, src) = source_dir();
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

/// Names of `dir`'s entries, as bytes, sorted.
fn names(dir: &Path) -> Vec<Vec<u8>> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_vec())
        .collect();
    names.sort();
    names
}

fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

/// Everything below `root` keyed by the raw bytes of its relative path: kind and mode, mtime,
/// and content (a file's bytes, a symlink's target). `common::tree` compares by UTF-8 names.
fn byte_tree(root: &Path) -> BTreeMap<Vec<u8>, (u32, i64, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let content = if meta.is_file() {
                fs::read(&path).unwrap()
            } else if meta.is_symlink() {
                fs::read_link(&path).unwrap().into_os_string().into_vec()
            } else {
                pending.push(path.clone());
                Vec::new()
            };
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            out.insert(rel, (meta.mode(), meta.mtime(), content));
        }
    }
    out
}

#[test]
fn names_that_are_not_utf8_round_trip_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let odd_dir = src.join(os(b"caf\xe9"));
    fs::create_dir_all(odd_dir.join("sub")).unwrap();
    for (i, name) in [&b"a.txt"[..], b"b\xff.txt", b"c.txt", b"d"]
        .iter()
        .enumerate()
    {
        fs::write(odd_dir.join(os(name)), format!("file {i}")).unwrap();
    }
    fs::write(odd_dir.join("sub").join(os(b"\xfe\xfd")), b"deep").unwrap();
    fs::write(src.join("plain.txt"), b"plain").unwrap();
    symlink(os(b"caf\xe9/b\xff.txt"), src.join("link")).unwrap();
    fs::hard_link(odd_dir.join("c.txt"), src.join(os(b"hard\x80"))).unwrap();

    let mut full = Vec::new();
    let first = write_dir_archive(&src, None, &mut full).unwrap();
    assert!(first.skipped.is_empty(), "{:?}", first.skipped);
    let dst = tmp.path().join("dst");
    let report = restore(&full, &dst);
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    assert_eq!(byte_tree(&src), byte_tree(&dst));
    assert_eq!(names(&dst.join(os(b"caf\xe9"))), names(&odd_dir));
    assert_eq!(
        fs::read(dst.join(os(b"caf\xe9/sub/\xfe\xfd"))).unwrap(),
        b"deep"
    );
    assert_eq!(
        fs::read_link(dst.join("link")).unwrap().as_os_str(),
        os(b"caf\xe9/b\xff.txt")
    );

    // An incremental deletes what vanished, by its exact bytes.
    fs::remove_file(odd_dir.join(os(b"b\xff.txt"))).unwrap();
    fs::remove_dir_all(odd_dir.join("sub")).unwrap();
    let mut inc = Vec::new();
    let second = write_dir_archive(&src, Some(&first.index), &mut inc).unwrap();
    assert_eq!(second.deleted.len(), 2, "{:?}", second.deleted);
    let report = restore(&inc, &dst);
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    assert_eq!(report.deleted, 2);
    assert_eq!(byte_tree(&src), byte_tree(&dst));
}

#[test]
fn a_users_own_mimeo_directory_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join(".mimeo")).unwrap();
    fs::write(src.join(".mimeo/deleted"), b"[\"precious\"]").unwrap();
    fs::write(src.join(".mimeo/config"), b"mine").unwrap();
    fs::write(src.join("precious"), b"keep me").unwrap();

    let mut full = Vec::new();
    let first = write_dir_archive(&src, None, &mut full).unwrap();
    assert!(first.skipped.is_empty(), "{:?}", first.skipped);
    let dst = tmp.path().join("dst");
    let report = restore(&full, &dst);
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    assert_same_tree(&src, &dst);

    fs::remove_file(src.join(".mimeo/config")).unwrap();
    fs::write(src.join("new"), b"new").unwrap();
    let mut inc = Vec::new();
    let second = write_dir_archive(&src, Some(&first.index), &mut inc).unwrap();
    assert_eq!(second.deleted, [".mimeo/config"]);
    let report = restore(&inc, &dst);
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    assert_same_tree(&src, &dst);
}

/// Creates `levels` nested directories named `name` below `root` through directory handles (a
/// path from the root would exceed PATH_MAX), with `leaf` in the deepest; returns the depth of
/// `leaf`'s path in bytes.
fn deep_tree(root: &Path, name: &str, levels: usize, leaf: &[u8]) -> usize {
    let mut dir = Dir::open(root).unwrap();
    for _ in 0..levels {
        dir = dir.open_or_create_dir(OsStr::new(name)).unwrap();
    }
    let mut file = dir.create_file(OsStr::new("leaf"), 0o644).unwrap();
    file.write_all(leaf).unwrap();
    (name.len() + 1) * levels + "leaf".len()
}

/// The content of the `leaf` that [`deep_tree`] made below `root`.
fn deep_leaf(root: &Path, name: &str, levels: usize) -> Vec<u8> {
    let mut dir = Dir::open(root).unwrap();
    for _ in 0..levels {
        dir = dir.open_dir(OsStr::new(name)).unwrap();
    }
    let mut data = Vec::new();
    let mut file = dir.open_file(OsStr::new("leaf")).unwrap();
    io::Read::read_to_end(&mut file, &mut data).unwrap();
    data
}

fn listing(stream: &[u8]) -> Vec<Vec<u8>> {
    let mut archive = tar::Archive::new(stream);
    archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path_bytes().into_owned())
        .collect()
}

#[test]
fn a_tree_deeper_than_path_max_is_backed_up_and_restored() {
    let (_tmp, src) = source_dir();
    fs::write(src.join("a.txt"), b"shallow").unwrap();
    let name = "d".repeat(200);
    let depth = deep_tree(&src, &name, 25, b"deep down");
    assert!(depth > libc::PATH_MAX as usize, "{depth}");
    fs::write(src.join("z.txt"), b"after the deep tree").unwrap();

    let mut stream = Vec::new();
    let summary = write_dir_archive(&src, None, &mut stream).unwrap();
    assert!(summary.skipped.is_empty(), "{:?}", summary.skipped);
    assert_eq!(summary.entries, 2 + 25 + 1);
    let leaf = format!("{}leaf", format!("{name}/").repeat(25));
    let entries = listing(&stream);
    assert!(
        entries.contains(&leaf.into_bytes()),
        "deep leaf not in the stream"
    );
    assert!(entries.contains(&b"z.txt".to_vec()));

    // And restored: the extractor creates each directory beneath its parent's handle too.
    let dst = src.parent().unwrap().join("dst");
    let report = restore(&stream, &dst);
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    assert_eq!(deep_leaf(&dst, &name, 25), b"deep down");
    assert_eq!(fs::read(dst.join("z.txt")).unwrap(), b"after the deep tree");
}

#[test]
fn a_parent_swapped_for_a_symlink_during_the_backup_leads_nowhere() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let outside = tmp.path().join("outside");
    fs::create_dir_all(src.join("b/c")).unwrap();
    fs::create_dir_all(outside.join("c")).unwrap();
    fs::write(outside.join("secret"), b"root only").unwrap();
    fs::write(outside.join("c/secret"), b"root only, deeper").unwrap();
    fs::write(src.join("a.bin"), pseudo_random_bytes(4 * MIB, 4)).unwrap();
    fs::write(src.join("b/secret"), b"the user's own").unwrap();
    fs::write(src.join("b/c/secret"), b"the user's own, deeper").unwrap();

    // While a.bin is read, the owner of b swaps it for a symlink to a place they cannot read.
    let (b, moved) = (src.join("b"), tmp.path().join("b.moved"));
    let (summary, stream) = backup_during(&src, &[MIB], |_| {
        fs::rename(&b, &moved).unwrap();
        symlink(&outside, &b).unwrap();
    });
    let text = String::from_utf8_lossy(&stream);
    assert!(!text.contains("root only"), "data from outside the tree");
    // What is archived is what the walk saw: the directory that was there, or nothing.
    let dst = tmp.path().join("dst");
    restore(&stream, &dst);
    for file in ["b/secret", "b/c/secret"] {
        match fs::read(dst.join(file)) {
            Ok(data) => assert!(data.starts_with(b"the user's own"), "{file}"),
            Err(_) => assert!(mentions(&summary.skipped, "b", "replaced"), "{summary:?}"),
        }
    }
}

#[test]
fn one_failing_work_item_does_not_fail_the_others() {
    let env = Env::new();
    let good = env.path("data/good");
    fs::create_dir_all(&good).unwrap();
    fs::write(good.join("f.txt"), b"backed up").unwrap();
    let gone = env.path("data/unmounted");
    let yaml = env.yaml(
        "trail.yaml",
        &[
            media_class("disk", &env.path("media"), "8Mi", "64Ki", true),
            backup_trail("nightly", "disk", 2, &[("good", &good), ("gone", &gone)]),
        ]
        .join("---\n"),
    );
    let out = env
        .command(&["apply", "-f", yaml.to_str().unwrap()])
        .env("MIMEO_LOG", "info")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let items: Vec<_> = env
        .entries()
        .iter()
        .map(|e| {
            e["spec"]["workItem"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(items, ["good"], "{text}");
    assert!(
        text.contains("gone") && text.contains("not backed up"),
        "{text}"
    );
}

/// Allocated bytes of a file (`st_blocks` is in 512-byte units).
fn allocated(path: &Path) -> u64 {
    fs::metadata(path).unwrap().blocks() * 512
}

/// Whether the filesystem holding `dir` keeps holes; says why not when it does not.
fn keeps_holes(dir: &Path) -> bool {
    let probe = dir.join("hole-probe");
    let f = fs::File::create(&probe).unwrap();
    f.set_len(64 * MIB as u64).unwrap();
    drop(f);
    let kept = allocated(&probe) < MIB as u64;
    fs::remove_file(&probe).unwrap();
    if !kept {
        eprintln!(
            "{}: the filesystem fills holes; hole checks skipped",
            dir.display()
        );
    }
    kept
}

/// A file of `size` bytes, all hole except `islands` of data at the given offsets.
fn sparse_file(path: &Path, size: u64, islands: &[(u64, &[u8])]) {
    let mut f = fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    for (at, data) in islands {
        f.seek(SeekFrom::Start(*at)).unwrap();
        f.write_all(data).unwrap();
    }
}

#[test]
fn sparse_files_keep_their_holes_on_the_media_and_when_restored() {
    let (tmp, src) = source_dir();
    let big = 200 * MIB as u64;
    let island = pseudo_random_bytes(64 * 1024, 5);
    // Data at the start, in the middle and at the end; more extents than one header holds.
    let islands: Vec<(u64, &[u8])> = (0..30)
        .map(|i| (i * 6 * MIB as u64, &island[..]))
        .chain([(big - 100, &b"the very end"[..])])
        .collect();
    sparse_file(&src.join("disk.img"), big, &islands);
    // Ends in a hole.
    sparse_file(
        &src.join("tail.img"),
        32 * MIB as u64,
        &[(MIB as u64, b"alone")],
    );

    let mut stream = Vec::new();
    let summary = write_dir_archive(&src, None, &mut stream).unwrap();
    assert!(summary.warnings.is_empty(), "{:?}", summary.warnings);
    if keeps_holes(tmp.path()) {
        assert!(
            stream.len() < 4 * MIB,
            "holes on the media: {} bytes",
            stream.len()
        );
    }

    let dst = tmp.path().join("dst");
    let report = restore(&stream, &dst);
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    assert_same_tree(&src, &dst);
    if keeps_holes(tmp.path()) {
        for name in ["disk.img", "tail.img"] {
            let (used, size) = (
                allocated(&dst.join(name)),
                fs::metadata(dst.join(name)).unwrap().len(),
            );
            assert!(
                used < 8 * MIB as u64,
                "{name}: {used} bytes allocated of {size}"
            );
        }
    }
}

/// A GNU sparse entry claiming `real` bytes, with `data` stored at offset `at`.
fn forged_sparse(name: &str, real: u64, at: u64, data: &[u8]) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    header.set_path(name).unwrap();
    header.set_entry_type(tar::EntryType::GNUSparse);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1);
    header.set_size(data.len() as u64);
    let gnu = header.as_gnu_mut().unwrap();
    gnu.set_real_size(real);
    gnu.sparse[0].set_offset(at);
    gnu.sparse[0].set_length(data.len() as u64);
    gnu.sparse[1].set_offset(real);
    gnu.sparse[1].set_length(0);
    header.set_cksum();
    let mut ar = tar::Builder::new(Vec::new());
    ar.append(&header, data).unwrap();
    ar.into_inner().unwrap()
}

#[test]
fn a_forged_sparse_entry_never_writes_zeros_and_can_be_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let claim = 300 * MIB as u64;
    let stream = forged_sparse("vast", claim, claim - 512, &[b'x'; 512]);
    assert!(stream.len() < 8 * 1024);

    let dst = tmp.path().join("dst");
    restore(&stream, &dst);
    let restored = dst.join("vast");
    assert_eq!(fs::metadata(&restored).unwrap().len(), claim);
    if keeps_holes(tmp.path()) {
        assert!(
            allocated(&restored) < MIB as u64,
            "{}",
            allocated(&restored)
        );
    }

    let bounded = tmp.path().join("bounded");
    let options = ExtractOptions {
        max_bytes: Some(MIB as u64),
        ..ExtractOptions::default()
    };
    let report = extract_archive_with(stream.as_slice(), &bounded, options).unwrap();
    assert!(
        mentions(&report.refused, "vast", "claims"),
        "{:?}",
        report.refused
    );
    assert!(!bounded.join("vast").exists());
}

#[test]
fn setid_bits_of_a_stream_are_cleared_unless_asked_for() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ar = tar::Builder::new(Vec::new());
    for (name, mode) in [("suid", 0o4755), ("sgid", 0o2755), ("plain", 0o755)] {
        let mut header = tar::Header::new_gnu();
        header.set_path(name).unwrap();
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1);
        header.set_size(2);
        header.set_cksum();
        ar.append(&header, &b"#!"[..]).unwrap();
    }
    let stream = ar.into_inner().unwrap();
    let mode = |dir: &Path, name: &str| fs::metadata(dir.join(name)).unwrap().mode() & 0o7777;

    let dst = tmp.path().join("dst");
    let report = restore(&stream, &dst);
    for name in ["suid", "sgid", "plain"] {
        assert_eq!(mode(&dst, name), 0o755, "{name}");
    }
    assert!(
        mentions(&report.warnings, "suid", "setuid"),
        "{:?}",
        report.warnings
    );
    assert!(
        mentions(&report.warnings, "sgid", "setuid"),
        "{:?}",
        report.warnings
    );

    let kept = tmp.path().join("kept");
    let options = ExtractOptions {
        keep_setid: true,
        ..ExtractOptions::default()
    };
    extract_archive_with(stream.as_slice(), &kept, options).unwrap();
    assert_eq!(mode(&kept, "suid"), 0o4755);
    assert_eq!(mode(&kept, "sgid"), 0o2755);
}
