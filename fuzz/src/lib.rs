//! Helpers shared by the fuzz targets: seed inputs made with Mimeo's own writers, the tar
//! checksum fix-up that lets the fuzzer past the header checksum, and the sentinels that
//! tell whether an extraction wrote outside its target.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use mimeo::engine::archive::{self, DELETED_ENTRY, FileIndex};
use mimeo::base::hash::name_hash;
use mimeo::media::format::{self, BlockHeader, BlockKind, FLAG_END};
use tar::{Builder, EntryType, Header};

/// Environment variable naming a directory: when set, a target writes its seed inputs there at
/// start-up (scripts/fuzz.sh points it at the target's corpus).
pub const SEEDS_ENV: &str = "MIMEO_FUZZ_SEEDS";

/// Writes `seeds` as `seed-<name>` files into the directory named by [`SEEDS_ENV`], if set.
pub fn write_seeds(seeds: impl FnOnce() -> Vec<(&'static str, Vec<u8>)>) {
    let Some(dir) = std::env::var_os(SEEDS_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    fs::create_dir_all(&dir).expect("creating the seed directory");
    for (name, bytes) in seeds() {
        fs::write(dir.join(format!("seed-{name}")), bytes).expect("writing a seed");
    }
}

// ---------------------------------------------------------------------------------------------
// Volume blocks

fn block(kind: BlockKind, flags: u16, index: u64, offset: u64, payload: &[u8]) -> Vec<u8> {
    BlockHeader {
        kind,
        flags,
        volume_id: name_hash("vol-000001"),
        segment: 0,
        payload_len: payload.len() as u32,
        block_index: index,
        instance: if kind == BlockKind::Data {
            name_hash("instance-1")
        } else {
            0
        },
        stream_offset: offset,
    }
    .encode(payload)
}

/// A whole sealed segment (label, two data blocks, index, trailer) and a few single blocks.
pub fn block_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let label = br#"{"formatVersion":1,"volume":"vol-000001","trail":"t","mediaClass":"m","createdAt":"2024-01-01T00:00:00Z","blockSize":4096,"segment":0,"session":"s"}"#;
    let index = br#"{"instances":[{"instanceId":"instance-1","workItem":"w","runs":[[0,200]]}]}"#;
    let mut segment = block(BlockKind::Label, 0, 0, 0, label);
    segment.extend(block(BlockKind::Data, 0, 1, 0, b"first part of the stream"));
    segment.extend(block(BlockKind::Data, FLAG_END, 2, 24, b"and its end"));
    let index_offset = segment.len() as u64;
    segment.extend(block(BlockKind::Index, 0, 3, 0, index));
    segment.extend(format::encode_trailer(index_offset));
    let data = block(BlockKind::Data, FLAG_END, 0, 1 << 40, &[0xa5; 64]);
    vec![
        ("segment", segment),
        ("data-block", data.clone()),
        ("empty-block", block(BlockKind::Data, FLAG_END, 0, 0, b"")),
        ("truncated-block", data[..data.len() - 1].to_vec()),
    ]
}

// ---------------------------------------------------------------------------------------------
// Tar streams

/// Rewrites the checksum of every tar header found by walking `buf` header by header (the size
/// field says how far the next one is), so mutated archives still reach Mimeo's code instead of
/// stopping at the tar crate's checksum check. The walk ignores PAX size overrides and GNU
/// sparse extension blocks: headers after such an entry may stay unfixed.
pub fn fix_tar_checksums(buf: &mut [u8]) {
    let mut at = 0usize;
    while let Some(header) = at.checked_add(512).and_then(|end| buf.get_mut(at..end)) {
        if header.iter().all(|&b| b == 0) {
            at += 512; // end-of-archive marker (or padding); the next header may follow
            continue;
        }
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let size = tar_size(&header[124..136]);
        let Some(next) = size
            .checked_add(511)
            .and_then(|s| (s / 512 * 512).checked_add(512))
            .and_then(|s| usize::try_from(s).ok())
            .and_then(|s| at.checked_add(s))
        else {
            return;
        };
        at = next;
    }
}

/// A tar numeric field: octal text, or base-256 when the top bit of the first byte is set.
fn tar_size(field: &[u8]) -> u64 {
    if field[0] & 0x80 != 0 {
        return field[field.len() - 8..]
            .iter()
            .fold(0u64, |n, &b| (n << 8) | u64::from(b));
    }
    let text = std::str::from_utf8(field).unwrap_or("");
    let text = text.trim_matches(|c: char| c == ' ' || c == '\0');
    u64::from_str_radix(text, 8).unwrap_or(0)
}

/// A header with raw name and link bytes, bypassing the builder's own path checks.
fn raw_entry(ar: &mut Builder<Vec<u8>>, name: &str, kind: EntryType, link: &str, data: &[u8]) {
    let mut header = Header::new_gnu();
    let name = &name.as_bytes()[..name.len().min(100)];
    let link = &link.as_bytes()[..link.len().min(100)];
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_mtime(1);
    header.set_uid(0);
    header.set_gid(0);
    header.set_size(data.len() as u64);
    header.set_cksum();
    ar.append(&header, data).expect("appending to a Vec");
}

/// Streams written by Mimeo's own writer (a full and an incremental backup of a small tree with
/// a long name, a symlink and a hard link) and hostile hand-made ones that aim at the sentinels.
pub fn archive_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let tree = tempfile::tempdir().expect("temp dir");
    let root = tree.path();
    fs::create_dir_all(root.join("dir/sub")).unwrap();
    fs::write(root.join("dir/file.txt"), b"hello").unwrap();
    fs::write(root.join("dir/sub").join("n".repeat(120)), b"long name").unwrap();
    fs::write(root.join("gone.txt"), b"about to vanish").unwrap();
    symlink("dir/file.txt", root.join("link")).unwrap();
    fs::hard_link(root.join("dir/file.txt"), root.join("hard")).unwrap();
    let mut full = Vec::new();
    let summary = archive::write_dir_archive(root, None, &mut full).expect("full archive");
    fs::remove_file(root.join("gone.txt")).unwrap();
    fs::write(root.join("new.txt"), b"new").unwrap();
    let mut incremental = Vec::new();
    archive::write_dir_archive(root, Some(&summary.index), &mut incremental)
        .expect("incremental archive");
    let mut empty = Vec::new();
    archive::write_dir_archive(root, Some(&FileIndex::default()), &mut empty).unwrap();

    let abs = absolute_sentinel()
        .to_str()
        .expect("UTF-8 temp dir")
        .to_owned();
    let mut hostile = Builder::new(Vec::new());
    let deletions = format!(r#"["../sentinel/canary", "up/canary", "{abs}/canary", "ok"]"#);
    raw_entry(
        &mut hostile,
        DELETED_ENTRY,
        EntryType::Regular,
        "",
        deletions.as_bytes(),
    );
    raw_entry(&mut hostile, "up", EntryType::Symlink, "../sentinel", b"");
    raw_entry(&mut hostile, "up/new", EntryType::Regular, "", b"x");
    raw_entry(&mut hostile, "abs", EntryType::Symlink, &abs, b"");
    raw_entry(&mut hostile, "abs/new", EntryType::Regular, "", b"x");
    raw_entry(&mut hostile, "hl", EntryType::Link, "up/canary", b"");
    raw_entry(
        &mut hostile,
        "hl2",
        EntryType::Link,
        "../sentinel/canary",
        b"",
    );
    raw_entry(
        &mut hostile,
        "../sentinel/new",
        EntryType::Regular,
        "",
        b"x",
    );
    raw_entry(&mut hostile, "d/", EntryType::Directory, "", b"");
    raw_entry(&mut hostile, "d/f", EntryType::Regular, "", b"data");
    raw_entry(&mut hostile, "ok", EntryType::Regular, "", b"fine");
    let hostile = hostile.into_inner().unwrap();

    vec![
        ("full", full),
        ("incremental", incremental),
        ("incremental-empty", empty),
        ("hostile", hostile),
    ]
}

// ---------------------------------------------------------------------------------------------
// Sentinels

const CANARY: &[u8] = b"precious";

/// A directory outside every extraction target, known by an absolute path (which the hostile
/// seed's symlinks point at); created once per process and checked after every run.
pub fn absolute_sentinel() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join("mimeo-fuzz-sentinel");
        // Kept between runs (the corpus names this path); remade if a crashed run left it odd.
        if check_sentinel(&dir).is_err() {
            let _ = force_remove(&dir);
            make_sentinel(&dir);
        }
        dir
    })
}

/// Creates `dir` holding one file, `canary`.
pub fn make_sentinel(dir: &Path) {
    fs::create_dir(dir).expect("creating a sentinel dir");
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    let canary = dir.join("canary");
    fs::write(&canary, CANARY).expect("writing the canary");
    fs::set_permissions(&canary, fs::Permissions::from_mode(0o644)).unwrap();
}

/// Panics unless `dir` is exactly as [`make_sentinel`] left it (see [`check_sentinel`]).
pub fn assert_sentinel_intact(dir: &Path) {
    if let Err(what) = check_sentinel(dir) {
        panic!("written outside the extraction target: {what}");
    }
}

/// Whether `dir` is a plain directory (mode 0755) holding only `canary`, a plain file with one
/// name whose content and mode are untouched.
pub fn check_sentinel(dir: &Path) -> Result<(), String> {
    let shown = dir.display();
    let meta = fs::symlink_metadata(dir).map_err(|e| format!("{shown}: {e}"))?;
    if !meta.is_dir() || meta.mode() & 0o7777 != 0o755 {
        return Err(format!("{shown} is no longer a 0755 directory"));
    }
    let names = listing(dir).map_err(|e| format!("{shown}: {e}"))?;
    if names != ["canary"] {
        return Err(format!("{shown} holds {names:?}"));
    }
    let canary = dir.join("canary");
    let shown = canary.display();
    let meta = fs::symlink_metadata(&canary).map_err(|e| format!("{shown}: {e}"))?;
    if !meta.is_file() || meta.nlink() != 1 || meta.mode() & 0o7777 != 0o644 {
        return Err(format!("{shown} is no longer a 0644 file with one name"));
    }
    if fs::read(&canary).map_err(|e| format!("{shown}: {e}"))? != CANARY {
        return Err(format!("{shown} content changed"));
    }
    Ok(())
}

/// Sorted names in `dir`.
pub fn listing(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// Removes `path` and everything below it, lifting modes an extraction may have set (a
/// read-only or unsearchable directory) for an unprivileged run; never follows a symlink.
pub fn force_remove(path: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if !meta.is_dir() {
        return fs::remove_file(path);
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
    for child in fs::read_dir(path)? {
        force_remove(&child?.path())?;
    }
    fs::remove_dir(path)
}

// ---------------------------------------------------------------------------------------------
// Resource YAML

/// Seeds for the YAML layer: the examples users start from and the invalid-resource corpus.
pub fn yaml_seeds() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("media", include_bytes!("../../examples/local/01-media.yaml").to_vec()),
        ("trails", include_bytes!("../../examples/local/02-trails.yaml").to_vec()),
        ("policies", include_bytes!("../../examples/local/03-policies.yaml").to_vec()),
        ("restore", include_bytes!("../../examples/local/04-restore.yaml").to_vec()),
        ("invalid", include_bytes!("../../tests/invalid/resources.yaml").to_vec()),
    ]
}
