//! Directory trees for integration tests: build a rich sample, copy a real one, and compare two
//! trees precisely (paths, kinds, contents, modes, mtimes, symlink targets, hard-link groups).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, Metadata};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use filetime::{FileTime, set_symlink_file_times};

/// Deterministic pseudo-random bytes (xorshift), so content bugs cannot hide in repetition.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn write_file(path: &Path, data: &[u8], mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Sets the mtime (and atime) of `path` itself, without following a symlink.
fn set_time(path: &Path, sec: i64, nsec: u32) {
    let t = FileTime::from_unix_time(sec, nsec);
    set_symlink_file_times(path, t, t).unwrap();
}

/// A small but rich tree: nested and empty directories, relative and dangling symlinks, a hard
/// link pair, modes 0600/0755, set mtimes (some with nanoseconds), a 3 MiB file of pseudo-random
/// bytes, a zero-length file, a sparse file and names longer than 100 bytes. `root` is created.
pub fn make_sample_tree(root: &Path) {
    fs::create_dir_all(root).unwrap();
    write_file(
        &root.join("README"),
        b"a sample tree for Mimeo tests\n",
        0o644,
    );
    write_file(&root.join("etc/app.conf"), b"level = 3\n", 0o644);
    write_file(&root.join("etc/secret.key"), b"not really a key\n", 0o600);
    write_file(&root.join("bin/run.sh"), b"#!/bin/sh\nexec true\n", 0o755);
    write_file(&root.join("data/nested/deeper/leaf.txt"), b"leaf\n", 0o644);
    write_file(&root.join("data/zero-length"), b"", 0o644);
    write_file(
        &root.join("data/random.bin"),
        &pseudo_random_bytes(3 << 20, 0x5eed),
        0o644,
    );
    fs::create_dir_all(root.join("data/empty-dir")).unwrap();

    let mut sparse = File::create(root.join("data/sparse.img")).unwrap();
    sparse.set_len(8 << 20).unwrap();
    sparse.seek(SeekFrom::Start(3 << 20)).unwrap();
    sparse.write_all(b"data in the middle of a hole").unwrap();
    drop(sparse);

    symlink("../etc/app.conf", root.join("data/config-link")).unwrap();
    symlink("no/such/target", root.join("data/dangling-link")).unwrap();
    write_file(
        &root.join("links/original"),
        b"two names, one inode\n",
        0o640,
    );
    fs::hard_link(root.join("links/original"), root.join("links/second-name")).unwrap();

    let long_dir = format!("long-{}", "d".repeat(110));
    let long_file = format!("file-{}", "n".repeat(150));
    write_file(
        &root.join(&long_dir).join(&long_file),
        b"long name\n",
        0o644,
    );

    set_time(&root.join("README"), 1_500_000_000, 0);
    set_time(&root.join("etc/app.conf"), 1_600_000_000, 123_456_789);
    set_time(&root.join("etc/secret.key"), 1_234_567_890, 0);
    set_time(&root.join("data/config-link"), 1_400_000_000, 500_000_000);
    set_time(&root.join("links/original"), 1_300_000_000, 1);
    for dir in [
        "data/nested/deeper",
        "data/nested",
        "data/empty-dir",
        "data",
        "etc",
        "bin",
        "links",
        long_dir.as_str(),
    ] {
        set_time(&root.join(dir), 1_111_111_111, 222_222_222);
    }
}

/// Copies a real directory tree (e.g. /usr/share/doc) to `dst` with `cp -a`, preserving symlinks,
/// hard links, modes and times. `dst` must not exist yet.
pub fn copy_system_tree(src: &Path, dst: &Path) {
    assert!(!dst.exists(), "{} already exists", dst.display());
    let status = Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(dst)
        .status()
        .expect("cp runs");
    assert!(
        status.success(),
        "cp -a {} {} failed: {status}",
        src.display(),
        dst.display()
    );
}

/// Relative path → lstat metadata for everything below `root` (not `root` itself), sorted.
fn walk(root: &Path) -> BTreeMap<String, Metadata> {
    fn visit(root: &Path, dir: &Path, out: &mut BTreeMap<String, Metadata>) {
        for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let is_dir = meta.is_dir();
            out.insert(rel, meta);
            if is_dir {
                visit(root, &path, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    visit(root, root, &mut out);
    out
}

fn kind(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "directory"
    } else if t.is_file() {
        "regular file"
    } else if t.is_symlink() {
        "symlink"
    } else {
        "special file"
    }
}

/// Compares two files chunk by chunk; returns the first differing offset.
fn first_difference(a: &Path, b: &Path) -> Option<u64> {
    let mut fa = File::open(a).unwrap();
    let mut fb = File::open(b).unwrap();
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    let mut offset = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        if let Some(i) = ba[..na].iter().zip(&bb[..nb]).position(|(x, y)| x != y) {
            return Some(offset + i as u64);
        }
        if na != nb {
            return Some(offset + na.min(nb) as u64);
        }
        if na == 0 {
            return None;
        }
        offset += na as u64;
    }
}

fn read_full(file: &mut File, buf: &mut [u8]) -> usize {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]).unwrap() {
            0 => break,
            n => filled += n,
        }
    }
    filled
}

/// Groups of paths sharing an inode (regular files with more than one name inside the tree).
fn link_groups(tree: &BTreeMap<String, Metadata>) -> BTreeSet<Vec<String>> {
    let mut by_inode: HashMap<(u64, u64), Vec<String>> = HashMap::new();
    for (rel, meta) in tree {
        if meta.is_file() && meta.nlink() > 1 {
            by_inode
                .entry((meta.dev(), meta.ino()))
                .or_default()
                .push(rel.clone());
        }
    }
    by_inode
        .into_values()
        .filter(|names| names.len() > 1)
        .collect()
}

/// Panics with a precise message at the first difference between the trees under `a` and `b`:
/// the set of relative paths, kinds, file contents, permission bits, mtime seconds of files and
/// symlinks, symlink targets, and hard-link grouping (in both directions).
pub fn assert_same_tree(a: &Path, b: &Path) {
    let ta = walk(a);
    let tb = walk(b);
    if let Some(path) = ta.keys().find(|p| !tb.contains_key(*p)) {
        panic!(
            "{path}: present in {} but missing from {}",
            a.display(),
            b.display()
        );
    }
    if let Some(path) = tb.keys().find(|p| !ta.contains_key(*p)) {
        panic!(
            "{path}: present in {} but not in {}",
            b.display(),
            a.display()
        );
    }
    for (rel, ma) in &ta {
        let mb = &tb[rel];
        let (ka, kb) = (kind(ma), kind(mb));
        assert_eq!(ka, kb, "{rel}: kind differs");
        let (pa, pb) = (ma.mode() & 0o7777, mb.mode() & 0o7777);
        if ka != "symlink" {
            assert_eq!(pa, pb, "{rel}: permission bits differ ({pa:o} vs {pb:o})");
        }
        if ka == "regular file" || ka == "symlink" {
            assert_eq!(ma.mtime(), mb.mtime(), "{rel}: mtime seconds differ");
        }
        match ka {
            "regular file" => {
                assert_eq!(ma.len(), mb.len(), "{rel}: size differs");
                if let Some(offset) = first_difference(&a.join(rel), &b.join(rel)) {
                    panic!("{rel}: contents differ at byte {offset}");
                }
            }
            "symlink" => {
                let (la, lb) = (
                    fs::read_link(a.join(rel)).unwrap(),
                    fs::read_link(b.join(rel)).unwrap(),
                );
                assert_eq!(la, lb, "{rel}: symlink target differs");
            }
            _ => {}
        }
    }
    let (ga, gb) = (link_groups(&ta), link_groups(&tb));
    if let Some(group) = ga.iter().find(|g| !gb.contains(*g)) {
        panic!(
            "hard links {group:?} share an inode in {} but not in {}",
            a.display(),
            b.display()
        );
    }
    if let Some(group) = gb.iter().find(|g| !ga.contains(*g)) {
        panic!(
            "hard links {group:?} share an inode in {} but not in {}",
            b.display(),
            a.display()
        );
    }
}

/// `(files, dirs, symlinks, bytes)` below `root`, for test messages.
pub fn tree_stats(root: &Path) -> (u64, u64, u64, u64) {
    let mut stats = (0, 0, 0, 0);
    for meta in walk(root).values() {
        match kind(meta) {
            "regular file" => {
                stats.0 += 1;
                stats.3 += meta.len();
            }
            "directory" => stats.1 += 1,
            "symlink" => stats.2 += 1,
            _ => {}
        }
    }
    stats
}
