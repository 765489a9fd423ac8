//! The logical stream of a work item instance: a tar archive (GNU headers and long names, PAX
//! `mtime` records for sub-second times), written and read strictly sequentially so that a backup
//! can pipe it straight into a volume writer and a restore can feed it straight from a volume
//! reader. Memory is bounded by one I/O buffer plus the per-entry index, never by file sizes.
//!
//! Conventions of the stream:
//! - Entries come in a sorted depth-first walk (parents before children, siblings in byte order),
//!   so the same tree always yields the same bytes. Names are bytes: a name that is not UTF-8 is
//!   archived as it is (in a [`FileIndex`] its path is keyed by [`path_key`]).
//! - The walk opens every directory beneath its parent's handle and every file beneath its
//!   directory's, never following a symlink, so depth is not bounded by PATH_MAX and a parent
//!   swapped for a symlink during the backup leads nowhere outside the tree.
//! - Regular files, directories, symbolic links (stored as links, never followed) and hard links
//!   (the second and later names of an inode point at the first) are archived. Sockets, FIFOs and
//!   devices are not: they are listed in [`ArchiveSummary::skipped`].
//! - An incremental stream starts with the control entry [`DELETED_ENTRY`] (`.mimeo/deleted`), a
//!   JSON array of the keys of the paths that vanished since the instance it builds on. Only the
//!   very first entry of a stream is read as control: a user's own `.mimeo` is archived and
//!   restored like any other directory, and its entries never come first (a directory entry
//!   precedes its content).
//! - A file that shrank while it was read is padded to the size its header announced and
//!   followed by a truncation marker (a PAX global header) that cuts the restored file back.
//! - Modification times of files, directories and symlinks survive to the nanosecond; access and
//!   change times do not. Owners are recorded and re-applied only when restoring as root. The
//!   root directory's mode and time are an entry `./` (after the deletions of an incremental),
//!   which a restore gives to its target last ([`ExtractReport::root`]); its owner is not
//!   re-applied: the target belongs to whoever made it. Streams written before have no `./`.
//! - Files with holes are archived as GNU sparse entries (only their data is stored) and
//!   extracted with holes; a sparse entry's all-zero blocks are never written, and
//!   [`ExtractOptions::max_bytes`] bounds what a stream's files may claim.
//! - Extraction clears setuid and setgid bits unless [`ExtractOptions::keep_setid`] asks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata, Permissions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tar::{Builder, EntryType, Header};

use crate::beneath::{Dir, is_gone};
use crate::engine::error::{EngineError, Result};

mod meta;
mod read;
mod targets;
mod write;

use meta::*;
pub use read::path_key;
use read::*;
use targets::*;
use write::*;

/// The name of the root directory's entry: right after the deletions of an incremental.
const ROOT_ENTRY: &[u8] = b"./";

/// The control entry listing an incremental stream's deletions; always the first entry.
pub const DELETED_ENTRY: &str = ".mimeo/deleted";

/// Buffer between the archive and its pipe, and for file data copies.
const IO_BUF: usize = 256 * 1024;
/// Granularity of the holes an extracted sparse file gets (a filesystem block; divides IO_BUF).
const HOLE_BLOCK: usize = 4096;
/// The setuid and setgid bits.
const SETID: u32 = 0o6000;
/// Never a real nanosecond count: marks an index entry whose content did not make it into the
/// stream intact, so the next incremental always looks at it again.
const UNSETTLED_NSEC: u32 = u32::MAX;

/// The kinds of entry a stream carries. A hard link is a kind of its own so that a change in link
/// structure (a file gaining or losing a name) counts as a change for incrementals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    HardLink,
}

/// What a file looked like at backup time; used to decide what an incremental backup includes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    /// Bytes (0 for directories, target length for symlinks).
    pub size: u64,
    /// Unix seconds.
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    pub kind: EntryKind,
}

impl FileStamp {
    fn of(meta: &Metadata, kind: EntryKind) -> Self {
        FileStamp {
            size: if kind == EntryKind::Dir {
                0
            } else {
                meta.len()
            },
            mtime: meta.mtime(),
            mtime_nsec: u32::try_from(meta.mtime_nsec()).unwrap_or(0),
            mode: meta.mode() & 0o7777,
            kind,
        }
    }
}

/// The state of a whole tree at one instance, keyed by relative path (`a/b`); the instance an
/// incremental builds on hands it over as `previous`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIndex {
    pub entries: BTreeMap<String, FileStamp>,
}

/// What a backup stream holds, for the catalog and for the next incremental.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiveSummary {
    /// Every archived path of the tree as of this instance, written or unchanged.
    pub index: FileIndex,
    /// Paths of `previous` that are gone; a vanished directory is listed once, its content implied.
    pub deleted: Vec<String>,
    /// Entries written (directories, files, links), not counting the control entry.
    pub entries: u64,
    /// Regular-file data bytes written.
    pub file_bytes: u64,
    /// `"path: reason"` for what was not archived (sockets, FIFOs, devices, files and
    /// directories that vanished or were replaced during the backup).
    pub skipped: Vec<String>,
    /// `"path: what happened"` for files that changed while being read: they are archived as read
    /// and looked at again by the next incremental.
    pub warnings: Vec<String>,
}

/// One regular file from a non-filesystem source (e.g. an S3 object).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamEntry {
    /// Canonical relative path (`a/b`, no `.`, `..`, empty or leading `/` components).
    pub path: String,
    pub size: u64,
    /// Unix seconds.
    pub mtime: i64,
    pub mode: u32,
}

/// What a restore did. Refusals are not errors: a hostile or damaged entry is skipped and named
/// here, and the rest of the stream is still restored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtractReport {
    /// Entries written (directories, files, links).
    pub entries: u64,
    /// Regular-file data bytes written.
    pub bytes: u64,
    /// Recorded deletions that removed something.
    pub deleted: u64,
    /// `"path: reason"` for entries and deletions refused because they could escape the target
    /// (or are device/FIFO entries, or malformed).
    pub refused: Vec<String>,
    /// `"path: reason"` for harmless entries a target cannot represent (links in an object store).
    pub skipped: Vec<String>,
    /// `"path: what happened"` for entries not restored exactly as stored: files that changed
    /// while the backup read them (one that shrank is cut back to the bytes read), set-id bits
    /// cleared.
    pub warnings: Vec<String>,
    /// The root directory's mode and time, from a stream that records them (streams written
    /// before it did have none): the restore gives them to its target once everything is in.
    pub root: Option<RootMeta>,
}

/// A tree's root directory as the stream recorded it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RootMeta {
    /// Mode bits as stored.
    pub mode: u32,
    /// Modification time, seconds and nanoseconds.
    pub mtime: i64,
    pub nsec: u32,
}

/// Writes a tar stream of the tree under `root` into `out`. With `previous` (the index of the
/// instance this one builds on) only new or changed entries are written (directories always, so
/// empty dirs and dir modes survive; a hard-link group whole whenever one of its names changed),
/// and paths that disappeared are recorded as deletions.
///
/// The tree is walked once up front (metadata only) because the deletions must precede the data;
/// file contents are then streamed one at a time.
pub fn write_dir_archive<W: Write>(
    root: &Path,
    previous: Option<&FileIndex>,
    out: W,
) -> Result<ArchiveSummary> {
    let mut summary = ArchiveSummary::default();
    let top = Dir::open(root).map_err(|e| EngineError::io(root, e))?;
    let plan = walk(root, &top, &mut summary.skipped)?;
    let include = select(&plan, previous);
    summary.index.entries = plan
        .iter()
        .map(|p| (p.rel.clone(), p.stamp.clone()))
        .collect();

    if let Some(previous) = previous {
        summary.deleted = vanished(previous, &summary.index);
    }
    with_builder(out, |builder| {
        if previous.is_some() {
            append_deletions(builder, &summary.deleted)?;
        }
        // The root's own mode and time, as `./`: read back by a restore, which gives them to
        // its target; readers before this skip a name with no component.
        let root_meta = top.metadata().map_err(|e| EngineError::io(root, e))?;
        append(
            builder,
            &EntryMeta::of(&root_meta),
            EntryType::Directory,
            ROOT_ENTRY,
            0,
            None,
            io::empty(),
        )
        .map_err(|e| write_err(".", e))?;
        let mut open = OpenDirs::new(top);
        for (i, (planned, include)) in plan.iter().zip(include).enumerate() {
            let Some(dir) = open.parent_of(&plan, planned) else {
                // Below a directory that vanished or was replaced: not in this stream.
                mark_unsettled(&mut summary, &planned.rel);
                continue;
            };
            if !include {
                continue;
            }
            let abs = root.join(OsStr::from_bytes(&planned.path));
            let written = match planned.stamp.kind {
                EntryKind::File => append_file(builder, dir, planned, &abs, &mut summary)?,
                EntryKind::Dir => match dir.open_same_dir(planned.name(), planned.id) {
                    Ok(Some(sub)) => {
                        let mut name = planned.path.clone();
                        name.push(b'/');
                        append_bare(builder, planned, EntryType::Directory, &name, None)?;
                        open.chain.push((Some(i), sub));
                        true
                    }
                    Ok(None) => {
                        unsettle(&mut summary, &planned.rel, REPLACED_DIR);
                        false
                    }
                    Err(e) => return Err(EngineError::io(abs, e)),
                },
                EntryKind::Symlink => match dir.read_link(planned.name()) {
                    Ok(target) => {
                        let target = Some(target.as_slice());
                        append_bare(builder, planned, EntryType::Symlink, &planned.path, target)?
                    }
                    Err(e) if is_gone(&e) => {
                        unsettle(&mut summary, &planned.rel, "vanished during the backup");
                        false
                    }
                    Err(e) => return Err(EngineError::io(abs, e)),
                },
                EntryKind::HardLink => {
                    let first = planned.link_to.map_or(&planned.path, |i| &plan[i].path);
                    append_bare(
                        builder,
                        planned,
                        EntryType::Link,
                        &planned.path,
                        Some(first),
                    )?
                }
            };
            if written {
                summary.entries += 1;
            }
        }
        Ok(())
    })?;
    Ok(summary)
}

const REPLACED_DIR: &str =
    "vanished or was replaced during the backup; its content is not archived";

/// Writes a tar stream of regular files from a non-filesystem source, in the order given (sort
/// it for determinism). Each reader must yield exactly its entry's `size` bytes: a short or long
/// source is an error, since the stream cannot be corrected afterwards. Paths that are not
/// canonical or repeated are skipped and listed.
pub fn write_stream_archive<W: Write, I>(entries: I, out: W) -> Result<ArchiveSummary>
where
    I: Iterator<Item = Result<(StreamEntry, Box<dyn Read + Send>)>>,
{
    let mut summary = ArchiveSummary::default();
    with_builder(out, |builder| {
        for item in entries {
            let (entry, reader) = item?;
            let path = entry.path.as_str();
            let problem = match normalize(path.as_bytes()) {
                Ok(Some(canonical)) if canonical != path => Some("not a canonical relative path"),
                Ok(Some(_)) if summary.index.entries.contains_key(path) => Some("duplicate path"),
                Ok(Some(_)) => None,
                Ok(None) | Err(_) => Some("not a canonical relative path"),
            };
            if let Some(problem) = problem {
                summary.skipped.push(format!("{path}: {problem}"));
                continue;
            }
            let meta = EntryMeta {
                mode: entry.mode & 0o7777,
                mtime: entry.mtime,
                nsec: 0,
                uid: 0,
                gid: 0,
            };
            let mut src = Exact::new(reader, entry.size);
            if summary.entries == 0 && path == DELETED_ENTRY {
                // Never first in the stream, where it would be read as the control entry.
                let dir = EntryMeta {
                    mode: 0o755,
                    ..meta
                };
                append(
                    builder,
                    &dir,
                    EntryType::Directory,
                    b".mimeo/",
                    0,
                    None,
                    io::empty(),
                )
                .map_err(|e| write_err(path, e))?;
            }
            append(
                builder,
                &meta,
                EntryType::Regular,
                path.as_bytes(),
                entry.size,
                None,
                &mut src,
            )
            .map_err(|e| match src.failed.take() {
                Some(cause) => EngineError::Archive {
                    entry: path.to_string(),
                    detail: format!("reading source: {cause}"),
                },
                None => write_err(path, e),
            })?;
            if src.padded > 0 {
                return Err(EngineError::Archive {
                    entry: path.to_string(),
                    detail: format!(
                        "source ended {} bytes short of its declared size {}",
                        src.padded, entry.size
                    ),
                });
            }
            if src.has_more() {
                return Err(EngineError::Archive {
                    entry: path.to_string(),
                    detail: format!("source is longer than its declared size {}", entry.size),
                });
            }
            summary.index.entries.insert(
                entry.path.clone(),
                FileStamp {
                    size: entry.size,
                    mtime: entry.mtime,
                    mtime_nsec: 0,
                    mode: meta.mode,
                    kind: EntryKind::File,
                },
            );
            summary.entries += 1;
            summary.file_bytes += entry.size;
        }
        Ok(())
    })?;
    Ok(summary)
}

/// Extracts into `target` (created if missing), applying the stream's recorded deletions first.
/// Never writes outside `target`: every entry is reached beneath the target's handle one name
/// at a time, never through a symlink (see [`crate::beneath`]), so neither a symlink planted
/// in the target, before or during the restore, nor a tree deeper than PATH_MAX sends a write
/// elsewhere. Entries with `..` or absolute paths, entries whose parent path crosses a symlink,
/// hard links to such or to refused paths, and device/FIFO entries are refused and reported.
/// Existing entries at a path are replaced (never written into), so an incremental chain
/// restores link after link over one target. Directory modes and times are applied after their
/// content. The input is read to its end so a writer on the other side of a pipe finishes
/// cleanly.
///
/// Uses the default [`ExtractOptions`]: set-id bits are cleared, sizes are not bounded.
pub fn extract_archive<R: Read>(input: R, target: &Path) -> Result<ExtractReport> {
    extract_archive_with(input, target, ExtractOptions::default())
}

/// How [`extract_archive_with`] treats what a stream claims.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExtractOptions {
    /// Restore setuid and setgid bits of regular files. Off by default: a stream must not plant
    /// set-id programs unless the restore asks for them (cleared bits are listed in
    /// [`ExtractReport::warnings`]).
    pub keep_setid: bool,
    /// The most bytes the stream's regular files may add up to, holes of sparse files included
    /// (for a restore, what the catalog recorded). A file that would go past it is refused and
    /// not written.
    pub max_bytes: Option<u64>,
}

/// [`extract_archive`] with options.
pub fn extract_archive_with<R: Read>(
    input: R,
    target: &Path,
    options: ExtractOptions,
) -> Result<ExtractReport> {
    fs::create_dir_all(target).map_err(|e| EngineError::io(target, e))?;
    let top = Dir::open(target).map_err(|e| EngineError::io(target, e))?;
    extract_archive_into(input, top, target, options)
}

/// [`extract_archive_with`] into a directory already open (`shown` names it in messages), for
/// a caller that opened it without following a symlink.
pub fn extract_archive_into<R: Read>(
    input: R,
    top: Dir,
    shown: &Path,
    options: ExtractOptions,
) -> Result<ExtractReport> {
    let mut dest = DirTarget {
        root: shown,
        top,
        chain: Vec::new(),
        // SAFETY: geteuid has no preconditions and cannot fail.
        as_root: unsafe { libc::geteuid() } == 0,
        keep_setid: options.keep_setid,
        deferred: Vec::new(),
        last_file: None,
        buf: vec![0; IO_BUF],
    };
    drive(input, &mut dest, options.max_bytes)
}

/// Extracts regular files only, handing each to `sink(path, size, reader)` (for S3 restore
/// targets), which must consume exactly `size` bytes. Deletions are reported through
/// `delete(path)`, meaning the path and everything below it. Directories are implied by file
/// paths; symlinks and hard links are listed in [`ExtractReport::skipped`]. Unsafe paths are
/// refused exactly as by [`extract_archive`], and sizes bounded by `max_bytes` as by
/// [`ExtractOptions::max_bytes`].
pub fn extract_archive_to<R: Read>(
    input: R,
    sink: &mut dyn FnMut(&str, u64, &mut dyn Read) -> Result<()>,
    delete: &mut dyn FnMut(&str) -> Result<()>,
    max_bytes: Option<u64>,
) -> Result<ExtractReport> {
    drive(input, &mut SinkTarget { sink, delete }, max_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use filetime::{FileTime, set_symlink_file_times};
    use sha2::{Digest, Sha256};
    use std::ffi::CString;
    use std::fs::File;
    use std::io::{Cursor, Seek, SeekFrom};
    use std::os::unix::fs::symlink;

    fn put(path: &Path, data: &[u8], mode: u32) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
        fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
    }

    /// Sets the time of `path` itself (works for files, directories and symlinks).
    fn stamp(path: &Path, sec: i64, nsec: u32) {
        let t = FileTime::from_unix_time(sec, nsec);
        set_symlink_file_times(path, t, t).unwrap();
    }

    fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            out.extend_from_slice(&seed.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    const LONG_DIR: &str = "long-directory-name-that-keeps-going-and-going-and-going-well-past-the-classic-one-hundred-byte-limit";

    fn build_tree(root: &Path) {
        put(&root.join("docs/a.txt"), b"alpha\n", 0o644);
        put(&root.join("docs/secret"), b"hush", 0o600);
        put(&root.join("bin/tool"), b"#!/bin/sh\necho hi\n", 0o755);
        put(&root.join("zero"), b"", 0o644);
        put(&root.join("big.bin"), &pseudo_random(5 << 20, 7), 0o644);
        fs::create_dir_all(root.join("empty")).unwrap();
        fs::set_permissions(root.join("empty"), Permissions::from_mode(0o750)).unwrap();
        fs::create_dir_all(root.join("docs/nested/deep")).unwrap();
        put(&root.join("docs/nested/deep/leaf"), b"leaf", 0o444);

        let mut sparse = File::create(root.join("sparse.img")).unwrap();
        sparse.set_len(16 << 20).unwrap();
        sparse.seek(SeekFrom::Start(4 << 20)).unwrap();
        sparse.write_all(b"an island in the hole").unwrap();
        drop(sparse);

        symlink("a.txt", root.join("docs/link")).unwrap();
        symlink("../nowhere/at/all", root.join("docs/dangling")).unwrap();
        let long_target = format!("{LONG_DIR}/{}", "t".repeat(150));
        symlink(&long_target, root.join("long-link")).unwrap();

        put(&root.join("hl/one"), b"shared inode", 0o640);
        fs::hard_link(root.join("hl/one"), root.join("hl/two")).unwrap();
        fs::hard_link(
            root.join("hl/one"),
            root.join(format!("hl/{}", "h".repeat(120))),
        )
        .unwrap();

        put(
            &root.join(LONG_DIR).join("f".repeat(200)),
            b"long name",
            0o644,
        );

        stamp(&root.join("docs/a.txt"), 1_600_000_000, 123_456_789);
        stamp(&root.join("docs/secret"), -86_400 * 400, 250_000_000);
        stamp(&root.join("bin/tool"), 1_500_000_000, 0);
        stamp(&root.join("docs/link"), 1_400_000_000, 42);
        stamp(&root.join("long-link"), 1_300_000_000, 0);
        for dir in [
            "docs/nested/deep",
            "docs/nested",
            "docs",
            "bin",
            "empty",
            "hl",
            LONG_DIR,
        ] {
            stamp(&root.join(dir), 1_234_567_890, 987_654_321);
        }
    }

    /// Everything a restore must reproduce: the index (paths, kinds, sizes, modes, mtimes to the
    /// nanosecond, hard-link structure) plus file digests and symlink targets.
    fn snapshot(root: &Path) -> (FileIndex, BTreeMap<String, String>) {
        let summary = write_dir_archive(root, None, io::sink()).unwrap();
        let mut content = BTreeMap::new();
        for (rel, stamp) in &summary.index.entries {
            let path = root.join(rel);
            let value = match stamp.kind {
                EntryKind::File | EntryKind::HardLink => {
                    let meta = fs::metadata(&path).unwrap();
                    let digest = hex::encode(Sha256::digest(fs::read(&path).unwrap()));
                    format!("{digest} ino-group-size {}", meta.nlink())
                }
                EntryKind::Symlink => fs::read_link(&path).unwrap().display().to_string(),
                EntryKind::Dir => String::new(),
            };
            content.insert(rel.clone(), value);
        }
        (summary.index, content)
    }

    fn listing(stream: &[u8]) -> Vec<(String, EntryType)> {
        let mut archive = tar::Archive::new(stream);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
                (path, e.header().entry_type())
            })
            .collect()
    }

    #[test]
    fn round_trip_preserves_the_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        build_tree(&src);
        // Things that must be skipped, not archived; a user's own `.mimeo` is archived.
        let _socket = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
        let fifo = CString::new(src.join("fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        put(&src.join(".mimeo/deleted"), b"[\"docs\"]", 0o644);

        let mut stream = Vec::new();
        let summary = write_dir_archive(&src, None, &mut stream).unwrap();
        let mut skipped = summary.skipped.clone();
        skipped.sort();
        assert_eq!(
            skipped,
            ["fifo: FIFO not archived", "sock: socket not archived"]
        );
        assert!(summary.deleted.is_empty() && summary.warnings.is_empty());
        assert_eq!(
            summary.file_bytes,
            (5 << 20) + (16 << 20) + 6 + 4 + 18 + 4 + 12 + 9 + 8
        );
        let names = listing(&stream);
        assert_eq!(
            names[0],
            ("./".to_owned(), EntryType::Directory),
            "the root first"
        );
        assert_eq!(names[1], (".mimeo/".to_owned(), EntryType::Directory));
        let links: Vec<_> = names
            .iter()
            .filter(|(_, t)| *t == EntryType::Link)
            .collect();
        assert_eq!(links.len(), 2, "{links:?}");

        // Same tree, same bytes.
        let mut again = Vec::new();
        write_dir_archive(&src, None, &mut again).unwrap();
        assert!(again == stream, "stream is not deterministic");

        let dst = tmp.path().join("dst");
        let report = extract_archive(stream.as_slice(), &dst).unwrap();
        assert!(report.refused.is_empty(), "{:?}", report.refused);
        assert_eq!(report.entries, summary.entries);
        assert_eq!(report.bytes, summary.file_bytes);

        for special in ["sock", "fifo"] {
            fs::remove_file(src.join(special)).unwrap();
        }
        assert_eq!(snapshot(&src), snapshot(&dst));
        let ino = |p: &str| fs::metadata(dst.join(p)).unwrap().ino();
        assert_eq!(ino("hl/one"), ino("hl/two"));
        assert_eq!(
            fs::read(dst.join("sparse.img")).unwrap(),
            fs::read(src.join("sparse.img")).unwrap()
        );
        let secret = fs::symlink_metadata(dst.join("docs/secret")).unwrap();
        assert_eq!(
            (secret.mtime(), secret.mtime_nsec()),
            (-86_400 * 400, 250_000_000)
        );
    }

    #[test]
    fn incremental_holds_only_changes_and_restores_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        build_tree(&src);
        let mut full = Vec::new();
        let first = write_dir_archive(&src, None, &mut full).unwrap();

        put(&src.join("docs/a.txt"), b"alpha, revised\n", 0o644);
        stamp(&src.join("docs/a.txt"), 1_700_000_000, 1);
        fs::remove_file(src.join("docs/secret")).unwrap();
        fs::remove_dir_all(src.join(LONG_DIR)).unwrap();
        put(&src.join("docs/new.txt"), b"fresh", 0o600);

        let mut inc = Vec::new();
        let second = write_dir_archive(&src, Some(&first.index), &mut inc).unwrap();
        assert_eq!(second.deleted, ["docs/secret", LONG_DIR]);
        let written: Vec<_> = listing(&inc)
            .into_iter()
            .filter(|(_, t)| *t != EntryType::Directory)
            .map(|(n, _)| n)
            .collect();
        assert_eq!(written, [DELETED_ENTRY, "docs/a.txt", "docs/new.txt"]);
        assert_eq!(second.file_bytes, 15 + 5);

        let dst = tmp.path().join("dst");
        extract_archive(full.as_slice(), &dst).unwrap();
        let report = extract_archive(inc.as_slice(), &dst).unwrap();
        assert!(report.refused.is_empty(), "{:?}", report.refused);
        assert_eq!(report.deleted, 2);
        assert_eq!(snapshot(&src), snapshot(&dst));
        assert!(!dst.join(".mimeo").exists());

        // An object-store target sees the same files and deletions.
        let mut files = Vec::new();
        let mut deleted = Vec::new();
        let report = extract_archive_to(
            inc.as_slice(),
            &mut |path, size, data| {
                let mut body = Vec::new();
                data.read_to_end(&mut body).unwrap();
                assert_eq!(body.len() as u64, size);
                files.push(path.to_owned());
                Ok(())
            },
            &mut |path| {
                deleted.push(path.to_owned());
                Ok(())
            },
            None,
        )
        .unwrap();
        assert_eq!(files, ["docs/a.txt", "docs/new.txt"]);
        assert_eq!(deleted, second.deleted);
        assert_eq!(report.deleted, 2);
    }

    #[test]
    fn incremental_follows_kind_changes_and_link_groups() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        build_tree(&src);
        let mut full = Vec::new();
        let first = write_dir_archive(&src, None, &mut full).unwrap();

        // Directory → file, file → directory, symlink → directory, and a new name for an
        // unchanged inode (which must bring its whole group along).
        fs::remove_dir_all(src.join("docs/nested")).unwrap();
        put(&src.join("docs/nested"), b"now a file", 0o644);
        fs::remove_file(src.join("zero")).unwrap();
        put(&src.join("zero/inside"), b"now a dir", 0o644);
        fs::remove_file(src.join("docs/link")).unwrap();
        put(&src.join("docs/link/x"), b"x", 0o644);
        fs::hard_link(src.join("hl/one"), src.join("hl/three")).unwrap();
        fs::set_permissions(src.join("empty"), Permissions::from_mode(0o700)).unwrap();

        let mut inc = Vec::new();
        let second = write_dir_archive(&src, Some(&first.index), &mut inc).unwrap();
        assert_eq!(second.deleted, ["docs/nested/deep"]);
        let written: Vec<_> = listing(&inc)
            .into_iter()
            .filter(|(_, t)| *t != EntryType::Directory)
            .map(|(n, _)| n)
            .collect();
        let group = format!("hl/{}", "h".repeat(120));
        let expected = [
            DELETED_ENTRY,
            "docs/link/x",
            "docs/nested",
            &group,
            "hl/one",
            "hl/three",
            "hl/two",
            "zero/inside",
        ];
        assert_eq!(written, expected);

        let dst = tmp.path().join("dst");
        extract_archive(full.as_slice(), &dst).unwrap();
        let report = extract_archive(inc.as_slice(), &dst).unwrap();
        assert!(report.refused.is_empty(), "{:?}", report.refused);
        assert_eq!(snapshot(&src), snapshot(&dst));
        let ino = |p: &str| fs::metadata(dst.join(p)).unwrap().ino();
        assert_eq!(ino("hl/one"), ino("hl/three"));
        assert_eq!(ino("hl/one"), ino(&group));
    }

    /// A header with raw name and link bytes, bypassing the builder's own path checks.
    fn raw_entry(ar: &mut Builder<Vec<u8>>, name: &str, kind: EntryType, link: &str, data: &[u8]) {
        let mut header = Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_entry_type(kind);
        header.set_mode(0o644);
        header.set_mtime(1);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(data.len() as u64);
        header.set_cksum();
        ar.append(&header, data).unwrap();
    }

    #[test]
    fn hostile_archives_never_write_outside_the_target() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("target");
        let canary = tmp.path().join("canary");
        put(&canary.join("keep"), b"precious", 0o644);
        fs::create_dir_all(&target).unwrap();
        symlink(&canary, target.join("pre")).unwrap();
        let canary_str = canary.to_str().unwrap();

        let mut ar = Builder::new(Vec::new());
        let deletions = r#"["../canary/keep", "pre/keep", "/etc/passwd", ".mimeo", "absent"]"#;
        raw_entry(
            &mut ar,
            DELETED_ENTRY,
            EntryType::Regular,
            "",
            deletions.as_bytes(),
        );
        raw_entry(
            &mut ar,
            "../canary/dotdot.txt",
            EntryType::Regular,
            "",
            b"x",
        );
        raw_entry(
            &mut ar,
            "sub/../../canary/dotdot2.txt",
            EntryType::Regular,
            "",
            b"x",
        );
        raw_entry(
            &mut ar,
            &format!("{canary_str}/abs.txt"),
            EntryType::Regular,
            "",
            b"x",
        );
        raw_entry(&mut ar, "link", EntryType::Symlink, canary_str, b"");
        raw_entry(&mut ar, "link/through.txt", EntryType::Regular, "", b"x");
        raw_entry(&mut ar, "link/sub/deeper.txt", EntryType::Regular, "", b"x");
        raw_entry(&mut ar, "pre/through.txt", EntryType::Regular, "", b"x");
        raw_entry(&mut ar, "dev", EntryType::Char, "", b"");
        raw_entry(&mut ar, "fifo", EntryType::Fifo, "", b"");
        raw_entry(&mut ar, "hl-out", EntryType::Link, "../canary/keep", b"");
        raw_entry(&mut ar, "hl-via-link", EntryType::Link, "link/keep", b"");
        raw_entry(
            &mut ar,
            "hl-refused",
            EntryType::Link,
            "link/through.txt",
            b"",
        );
        raw_entry(
            &mut ar,
            "hl-abs",
            EntryType::Link,
            &format!("{canary_str}/keep"),
            b"",
        );
        raw_entry(
            &mut ar,
            ".mimeo/deleted",
            EntryType::Regular,
            "",
            b"[\"ok.txt\"]",
        );
        raw_entry(&mut ar, "ok.txt", EntryType::Regular, "", b"fine");
        let stream = ar.into_inner().unwrap();

        let report = extract_archive(stream.as_slice(), &target).unwrap();
        let canary_files: Vec<_> = fs::read_dir(&canary)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(canary_files, ["keep"]);
        assert_eq!(fs::read(canary.join("keep")).unwrap(), b"precious");
        let mut in_target: Vec<_> = fs::read_dir(&target)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        in_target.sort();
        assert_eq!(in_target, [".mimeo", "link", "ok.txt", "pre"]);
        assert_eq!(fs::read_link(target.join("link")).unwrap(), canary);
        // Not first in the stream: data, not a control entry.
        let data = fs::read(target.join(".mimeo/deleted")).unwrap();
        assert_eq!(data, b"[\"ok.txt\"]");
        assert_eq!(report.entries, 3);
        assert_eq!(report.deleted, 0);

        let expect = [
            "deletion of ../canary/keep: path has a `..` component",
            "deletion of pre/keep: pre is a symbolic link; nothing is written through one",
            "deletion of /etc/passwd: absolute path",
            "../canary/dotdot.txt: path has a `..` component",
            "sub/../../canary/dotdot2.txt: path has a `..` component",
            "abs.txt: absolute path",
            "link/through.txt: link is a symbolic link; nothing is written through one",
            "link/sub/deeper.txt: link is a symbolic link; nothing is written through one",
            "pre/through.txt: pre is a symbolic link; nothing is written through one",
            "dev: device and FIFO entries are never restored",
            "fifo: device and FIFO entries are never restored",
            "hl-out: hard link target ../canary/keep: path has a `..` component",
            "hl-via-link: hard link target link/keep: link is a symbolic link; nothing is written through one",
            "hl-refused: hard link target link/through.txt was refused",
            "hl-abs: hard link target",
        ];
        assert_eq!(report.refused.len(), expect.len(), "{:#?}", report.refused);
        for (got, want) in report.refused.iter().zip(expect) {
            let want = want.replace("abs.txt", &format!("{canary_str}/abs.txt"));
            assert!(got.contains(&want), "{got:?} does not mention {want:?}");
        }
    }

    #[test]
    fn stream_archive_round_trips_to_a_sink() {
        let big = pseudo_random(3 << 20, 3);
        let objects: Vec<(&str, Vec<u8>)> = vec![
            ("a.txt", b"hello".to_vec()),
            ("dir/big.bin", big.clone()),
            ("dir/empty", Vec::new()),
            ("../evil", b"x".to_vec()),
            ("a//b", b"x".to_vec()),
            (".mimeo/deleted", b"[]".to_vec()),
            ("a.txt", b"again".to_vec()),
        ];
        let items = objects.iter().map(|(path, data)| {
            let entry = StreamEntry {
                path: (*path).to_owned(),
                size: data.len() as u64,
                mtime: 1_650_000_000,
                mode: 0o640,
            };
            let reader: Box<dyn Read + Send> = Box::new(Cursor::new(data.clone()));
            Ok((entry, reader))
        });
        let mut stream = Vec::new();
        let summary = write_stream_archive(items, &mut stream).unwrap();
        assert_eq!(summary.entries, 4);
        assert_eq!(summary.file_bytes, 5 + (3 << 20) + 2);
        assert_eq!(
            summary.skipped,
            [
                "../evil: not a canonical relative path",
                "a//b: not a canonical relative path",
                "a.txt: duplicate path"
            ]
        );

        let mut got = BTreeMap::new();
        let report = extract_archive_to(
            stream.as_slice(),
            &mut |path, size, data| {
                let mut body = Vec::new();
                data.read_to_end(&mut body)
                    .map_err(|e| EngineError::io(path, e))?;
                assert_eq!(body.len() as u64, size);
                got.insert(path.to_owned(), body);
                Ok(())
            },
            &mut |path| panic!("unexpected deletion of {path}"),
            None,
        )
        .unwrap();
        let want: BTreeMap<String, Vec<u8>> = objects[..3]
            .iter()
            .chain(&objects[5..6])
            .map(|(p, d)| ((*p).to_owned(), d.clone()))
            .collect();
        assert_eq!(got, want);
        assert_eq!((report.entries, report.bytes), (4, 5 + (3 << 20) + 2));

        // The same stream restores to a directory, with parents created on the way.
        let tmp = tempfile::tempdir().unwrap();
        extract_archive(stream.as_slice(), tmp.path()).unwrap();
        assert_eq!(fs::read(tmp.path().join("dir/big.bin")).unwrap(), big);
        let meta = fs::metadata(tmp.path().join("a.txt")).unwrap();
        assert_eq!((meta.mtime(), meta.mode() & 0o7777), (1_650_000_000, 0o640));

        // An object that comes first and looks like the control entry is still data.
        let only = [(DELETED_ENTRY, b"[\"a.txt\"]".to_vec())];
        let items = only.iter().map(|(path, data)| {
            let entry = StreamEntry {
                path: (*path).to_owned(),
                size: data.len() as u64,
                mtime: 0,
                mode: 0o600,
            };
            let reader: Box<dyn Read + Send> = Box::new(Cursor::new(data.clone()));
            Ok((entry, reader))
        });
        let mut stream = Vec::new();
        write_stream_archive(items, &mut stream).unwrap();
        extract_archive(stream.as_slice(), tmp.path()).unwrap();
        assert!(tmp.path().join("a.txt").exists());
        assert_eq!(fs::read(tmp.path().join(DELETED_ENTRY)).unwrap(), only[0].1);
    }

    #[test]
    fn stream_archive_rejects_a_source_of_the_wrong_size() {
        let entry = |path: &str, size: usize, actual: usize| {
            let entry = StreamEntry {
                path: path.to_owned(),
                size: size as u64,
                mtime: 0,
                mode: 0o644,
            };
            let reader: Box<dyn Read + Send> = Box::new(Cursor::new(vec![1u8; actual]));
            Ok((entry, reader))
        };
        for (declared, actual) in [(10, 5), (5, 10)] {
            // A first entry larger than the buffer, so part of the stream is already out.
            let items = [
                entry("first", 1 << 20, 1 << 20),
                entry("f", declared, actual),
            ];
            let mut out = Vec::new();
            let err = write_stream_archive(items.into_iter(), &mut out).unwrap_err();
            assert!(err.to_string().contains("declared size"), "{err}");
            // What did go out must not pass for a complete stream.
            let read = extract_archive_to(
                out.as_slice(),
                &mut |_, _, data| {
                    io::copy(data, &mut io::sink())
                        .map(drop)
                        .map_err(|e| EngineError::io("f", e))
                },
                &mut |_| Ok(()),
                None,
            );
            assert!(read.is_err(), "a failed stream read back cleanly: {read:?}");
        }
    }

    #[test]
    fn pax_times_round_trip() {
        for (sec, nsec) in [
            (0, 1),
            (1_600_000_000, 123_456_789),
            (-1, 0),
            (-2, 500_000_000),
            (-1, 999_999_999),
        ] {
            let text = format_pax_time(sec, nsec);
            assert_eq!(parse_pax_time(&text), Some((sec, nsec)), "{text}");
        }
        assert_eq!(parse_pax_time("1.5"), Some((1, 500_000_000)));
        assert_eq!(parse_pax_time("-1.5"), Some((-2, 500_000_000)));
        assert_eq!(parse_pax_time("12"), Some((12, 0)));
        assert_eq!(parse_pax_time("1.1234567891"), Some((1, 123_456_789)));
        assert_eq!(parse_pax_time("x"), None);
    }
}
