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
//!   root directory's own metadata is not archived: the restore target belongs to its creator.
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
use crate::error::{Error, Result};

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
    let top = Dir::open(root).map_err(|e| Error::io(root, e))?;
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
                    Err(e) => return Err(Error::io(abs, e)),
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
                    Err(e) => return Err(Error::io(abs, e)),
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
                Some(cause) => Error::Other(format!("{path}: reading source: {cause}")),
                None => write_err(path, e),
            })?;
            if src.padded > 0 {
                return Err(Error::Other(format!(
                    "{path}: source ended {} bytes short of its declared size {}",
                    src.padded, entry.size
                )));
            }
            if src.has_more() {
                return Err(Error::Other(format!(
                    "{path}: source is longer than its declared size {}",
                    entry.size
                )));
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
    fs::create_dir_all(target).map_err(|e| Error::io(target, e))?;
    let top = Dir::open(target).map_err(|e| Error::io(target, e))?;
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

// ---------------------------------------------------------------------------------------------
// Writing

/// Runs `body` on a tar builder over a buffered `out`. On failure the buffered tail, including
/// the end-of-archive marker the builder writes when dropped, is discarded, so a failed stream
/// never ends like a complete one.
fn with_builder<W: Write>(
    out: W,
    body: impl FnOnce(&mut Builder<&mut BufWriter<W>>) -> Result<()>,
) -> Result<()> {
    let mut buffered = BufWriter::with_capacity(IO_BUF, out);
    let result = {
        let mut builder = Builder::new(&mut buffered);
        body(&mut builder).and_then(|()| {
            builder
                .into_inner()
                .map(drop)
                .map_err(|e| write_err("end of archive", e))
        })
    };
    match result {
        Ok(()) => buffered.flush().map_err(|e| write_err("end of archive", e)),
        Err(e) => {
            drop(buffered.into_parts());
            Err(e)
        }
    }
}

/// The control entry of an incremental stream.
fn append_deletions<W: Write>(builder: &mut Builder<W>, deleted: &[String]) -> Result<()> {
    let list = serde_json::to_vec(deleted)
        .map_err(|e| Error::Other(format!("encoding {DELETED_ENTRY}: {e}")))?;
    let meta = EntryMeta {
        mode: 0o600,
        mtime: 0,
        nsec: 0,
        uid: 0,
        gid: 0,
    };
    let size = list.len() as u64;
    append(
        builder,
        &meta,
        EntryType::Regular,
        DELETED_ENTRY.as_bytes(),
        size,
        None,
        list.as_slice(),
    )
    .map_err(|e| write_err(DELETED_ENTRY, e))
}

/// One walked entry, before anything is written.
struct Planned {
    /// Index key of the path (see [`path_key`]).
    rel: String,
    /// The path relative to the root, as bytes: the entry's name in the stream.
    path: Vec<u8>,
    /// Where the last component of `path` starts.
    name_at: usize,
    stamp: FileStamp,
    meta: EntryMeta,
    /// `(dev, ino)` as the walk saw it.
    id: (u64, u64),
    /// `(dev, ino)` of a regular file with more than one name.
    inode: Option<(u64, u64)>,
    /// For a hard link: the plan index of the inode's first name.
    link_to: Option<usize>,
}

impl Planned {
    fn name(&self) -> &OsStr {
        OsStr::from_bytes(&self.path[self.name_at..])
    }

    /// The path of the directory holding this entry (empty for the root).
    fn parent(&self) -> &[u8] {
        &self.path[..self.name_at.saturating_sub(1)]
    }
}

/// One directory of the walk in progress: its handle and its names not yet visited.
struct Level {
    dir: Dir,
    path: Vec<u8>,
    names: std::vec::IntoIter<OsString>,
}

/// Sorted depth-first walk that records metadata only (no file is opened for reading). Every
/// directory is opened beneath its parent's handle and listed through its own, so the walk
/// needs no path longer than one name and never passes through a symlink; the depth of the tree
/// is bounded only by the number of open files allowed (one per level).
fn walk(root: &Path, top: &Dir, skipped: &mut Vec<String>) -> Result<Vec<Planned>> {
    let names = top.names().map_err(|e| Error::io(root, e))?;
    let mut stack = vec![Level {
        dir: top.try_clone().map_err(|e| Error::io(root, e))?,
        path: Vec::new(),
        names: names.into_iter(),
    }];
    let mut plan = Vec::new();
    while let Some(level) = stack.last_mut() {
        let Some(name) = level.names.next() else {
            stack.pop();
            continue;
        };
        let mut path = level.path.clone();
        if !path.is_empty() {
            path.push(b'/');
        }
        let name_at = path.len();
        path.extend_from_slice(name.as_bytes());
        let rel = path_key(&path);
        let abs = || root.join(OsStr::from_bytes(&path));
        let meta = match level.dir.stat(&name) {
            Ok(meta) => meta,
            Err(e) if is_gone(&e) => {
                skipped.push(format!("{}: vanished during the backup", shown(&rel)));
                continue;
            }
            Err(e) => return Err(Error::io(abs(), e)),
        };
        let file_type = meta.file_type();
        let kind = if file_type.is_dir() {
            EntryKind::Dir
        } else if file_type.is_file() {
            EntryKind::File
        } else if file_type.is_symlink() {
            EntryKind::Symlink
        } else {
            skipped.push(format!(
                "{}: {} not archived",
                shown(&rel),
                special_name(&meta)
            ));
            continue;
        };
        let id = (meta.dev(), meta.ino());
        let mut child = None;
        if kind == EntryKind::Dir {
            let opened = level
                .dir
                .open_same_dir(&name, id)
                .and_then(|dir| dir.map(|dir| Ok((dir.names()?, dir))).transpose());
            match opened.map_err(|e| Error::io(abs(), e))? {
                Some((names, dir)) => {
                    child = Some(Level {
                        dir,
                        path: path.clone(),
                        names: names.into_iter(),
                    });
                }
                None => {
                    skipped.push(format!("{}: {REPLACED_DIR}", shown(&rel)));
                    continue;
                }
            }
        }
        plan.push(Planned {
            stamp: FileStamp::of(&meta, kind),
            meta: EntryMeta::of(&meta),
            rel,
            path,
            name_at,
            id,
            inode: (kind == EntryKind::File && meta.nlink() > 1).then_some(id),
            link_to: None,
        });
        stack.extend(child);
    }
    link_hard_links(&mut plan);
    Ok(plan)
}

/// The directories open while the plan is streamed: the chain from the root to the directory
/// of the current entry, each opened beneath its parent and checked to be the one the walk saw.
struct OpenDirs {
    /// Plan index of each open directory (`None` for the root) and its handle.
    chain: Vec<(Option<usize>, Dir)>,
}

impl OpenDirs {
    fn new(root: Dir) -> Self {
        OpenDirs {
            chain: vec![(None, root)],
        }
    }

    /// The open directory holding `entry`; `None` when that directory could not be opened.
    /// Entries come in walk order, so directories left behind are closed on the way.
    fn parent_of(&mut self, plan: &[Planned], entry: &Planned) -> Option<&Dir> {
        let parent = entry.parent();
        let path_of = |at: &Option<usize>| at.map_or(&[][..], |i| plan[i].path.as_slice());
        while let Some((at, _)) = self.chain.last() {
            let dir = path_of(at);
            let above = dir.is_empty()
                || parent == dir
                || (parent.starts_with(dir) && parent.get(dir.len()) == Some(&b'/'));
            if above {
                break;
            }
            self.chain.pop();
        }
        let (at, dir) = self.chain.last()?;
        (path_of(at) == parent).then_some(dir)
    }
}

fn special_name(meta: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_socket() {
        "socket"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_char_device() || t.is_block_device() {
        "device"
    } else {
        "special file"
    }
}

/// Turns the second and later names of each multiply-linked inode into hard links to the first.
fn link_hard_links(plan: &mut [Planned]) {
    let mut first: HashMap<(u64, u64), usize> = HashMap::new();
    for (i, planned) in plan.iter_mut().enumerate() {
        let Some(inode) = planned.inode else { continue };
        let leader = *first.entry(inode).or_insert(i);
        if leader != i {
            planned.stamp.kind = EntryKind::HardLink;
            planned.link_to = Some(leader);
        }
    }
}

/// Which planned entries go into the stream.
fn select(plan: &[Planned], previous: Option<&FileIndex>) -> Vec<bool> {
    let Some(previous) = previous else {
        return vec![true; plan.len()];
    };
    let changed = |p: &Planned| previous.entries.get(&p.rel) != Some(&p.stamp);
    // A group is written whole so that a restored inode never mixes old and new names.
    let mut group_changed: HashMap<(u64, u64), bool> = HashMap::new();
    for p in plan {
        if let Some(inode) = p.inode {
            *group_changed.entry(inode).or_default() |= changed(p);
        }
    }
    plan.iter()
        .map(|p| match p.inode {
            _ if p.stamp.kind == EntryKind::Dir => true,
            Some(inode) => group_changed[&inode],
            None => changed(p),
        })
        .collect()
}

/// Paths of `previous` missing from `current`, without those under an already-listed directory.
fn vanished(previous: &FileIndex, current: &FileIndex) -> Vec<String> {
    let gone =
        |path: &str| previous.entries.contains_key(path) && !current.entries.contains_key(path);
    previous
        .entries
        .keys()
        .filter(|path| gone(path))
        .filter(|path| !path.match_indices('/').any(|(i, _)| gone(&path[..i])))
        .cloned()
        .collect()
}

/// Appends a data-less entry (directory, symlink, hard link); true means it was written.
fn append_bare<W: Write>(
    builder: &mut Builder<W>,
    planned: &Planned,
    kind: EntryType,
    name: &[u8],
    link: Option<&[u8]>,
) -> Result<bool> {
    append(builder, &planned.meta, kind, name, 0, link, io::empty())
        .map_err(|e| write_err(&planned.rel, e))?;
    Ok(true)
}

/// Streams one regular file; returns false when it vanished before it could be opened.
///
/// A file that changes while it is read is archived as read and reported in
/// [`ArchiveSummary::warnings`], as GNU tar reports "file changed as we read it". One that
/// shrank cannot be re-read into the stream (its header, with the size found at open, is already
/// out), and the stream must stay in step, so its entry is padded with zeros and followed by a
/// truncation marker (see [`append_truncation`]) that cuts the restored file back to the bytes
/// actually read: restored, it is exactly what the backup saw, never zeros that no one wrote.
fn append_file<W: Write>(
    builder: &mut Builder<W>,
    dir: &Dir,
    planned: &Planned,
    abs: &Path,
    summary: &mut ArchiveSummary,
) -> Result<bool> {
    let rel = planned.rel.as_str();
    let file = match dir.open_file(planned.name()) {
        Ok(file) => file,
        Err(e) if is_gone(&e) => {
            unsettle(summary, rel, "vanished during the backup");
            return Ok(false);
        }
        Err(e) => return Err(Error::io(abs, e)),
    };
    let stat = file.metadata().map_err(|e| Error::io(abs, e))?;
    if !stat.is_file() {
        unsettle(
            summary,
            rel,
            "replaced by another kind of file during the backup",
        );
        return Ok(false);
    }
    // Describe what is actually read, not what the walk saw.
    if let Some(stamp) = summary.index.entries.get_mut(rel) {
        *stamp = FileStamp::of(&stat, stamp.kind);
    }
    let size = stat.len();
    let sparse = data_extents(&file, &stat).map_err(|e| Error::io(abs, e))?;
    let extents = sparse.clone().unwrap_or_else(|| vec![(0, size)]);
    let stored: u64 = extents.iter().map(|(_, len)| len).sum();
    let capacity = usize::try_from(stored)
        .unwrap_or(IO_BUF)
        .clamp(8 * 1024, IO_BUF);
    let reader = Extents::new(file, &extents);
    let mut src = Exact::new(BufReader::with_capacity(capacity, reader), stored);
    let meta = EntryMeta::of(&stat);
    match &sparse {
        Some(map) => append_sparse(builder, &meta, &planned.path, size, map, &mut src),
        None => append(
            builder,
            &meta,
            EntryType::Regular,
            &planned.path,
            size,
            None,
            &mut src,
        ),
    }
    .map_err(|e| match src.failed.take() {
        Some(cause) => Error::io(abs, cause),
        None => write_err(rel, e),
    })?;
    summary.file_bytes += size;
    let reader = src.inner.get_ref();
    let after = reader.file.metadata().map_err(|e| Error::io(abs, e))?;
    let change = if let Some(read) = reader.stopped_at {
        append_truncation(builder, &planned.path, read).map_err(|e| write_err(rel, e))?;
        Some(format!(
            "shrank by {} bytes while being read; restores get the {read} bytes read",
            size - read
        ))
    } else if after.len() > size {
        Some(format!(
            "grew while being read; its first {size} bytes were archived"
        ))
    } else {
        changed_since(&stat, &after).then(|| "changed while being read".to_owned())
    };
    if let Some(change) = change {
        summary.warnings.push(format!("{}: {change}", shown(rel)));
        mark_unsettled(summary, rel);
    }
    Ok(true)
}

/// The data of a file with holes as `(offset, length)` extents, found with `SEEK_DATA` and
/// `SEEK_HOLE`; `None` for a file without holes or on a filesystem that cannot tell. Extents
/// are widened to 512-byte boundaries (every extent of a GNU sparse entry but the last must
/// fill whole tar blocks).
fn data_extents(file: &File, meta: &Metadata) -> io::Result<Option<Vec<(u64, u64)>>> {
    let size = meta.len();
    if meta.blocks().saturating_mul(512) >= size {
        return Ok(None); // allocated throughout: no hole worth a map
    }
    let mut extents: Vec<(u64, u64)> = Vec::new();
    let mut pos = 0;
    while pos < size {
        let start = match seek_data(file, pos, libc::SEEK_DATA) {
            Ok(start) => start,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break, // only a hole is left
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
            Err(e) => return Err(e),
        };
        let end = seek_data(file, start, libc::SEEK_HOLE)?.min(size);
        let start = start / 512 * 512;
        let end = end.div_ceil(512).saturating_mul(512).min(size);
        match extents.last_mut() {
            Some((off, len)) if *off + *len >= start => *len = end.max(*off + *len) - *off,
            _ => extents.push((start, end - start)),
        }
        pos = end.max(pos + 1);
    }
    Ok(Some(extents))
}

/// `lseek(2)` with `SEEK_DATA` or `SEEK_HOLE`.
fn seek_data(file: &File, from: u64, whence: libc::c_int) -> io::Result<u64> {
    let from = libc::off_t::try_from(from).map_err(io::Error::other)?;
    // SAFETY: lseek on an open descriptor has no memory-safety preconditions.
    let at = unsafe { libc::lseek(file.as_raw_fd(), from, whence) };
    u64::try_from(at).map_err(|_| io::Error::last_os_error())
}

/// Reads a file's extents one after the other with `pread`: the data of a sparse entry, or
/// the whole file as one extent.
struct Extents<'a> {
    file: File,
    extents: &'a [(u64, u64)],
    /// Bytes of `extents[0]` already read.
    done: u64,
    /// Where the file turned out to end, when it ended before its last extent did.
    stopped_at: Option<u64>,
}

impl<'a> Extents<'a> {
    fn new(file: File, extents: &'a [(u64, u64)]) -> Self {
        Extents {
            file,
            extents,
            done: 0,
            stopped_at: None,
        }
    }
}

impl Read for Extents<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        while let Some(&(offset, len)) = self.extents.first() {
            if self.done == len {
                self.extents = &self.extents[1..];
                self.done = 0;
                continue;
            }
            let want = buf
                .len()
                .min(usize::try_from(len - self.done).unwrap_or(usize::MAX));
            let n = self.file.read_at(&mut buf[..want], offset + self.done)?;
            if n == 0 {
                self.stopped_at = Some(offset + self.done);
                self.extents = &[];
                return Ok(0);
            }
            self.done += n as u64;
            return Ok(n);
        }
        Ok(0)
    }
}

/// Appends a file with holes as a GNU sparse entry (old GNU format, which the `tar` crate and
/// GNU tar read): the header holds the real size and the first extents, extension blocks the
/// rest, and only the extents' data is stored. The map ends with an empty extent at the real
/// size, as GNU tar writes it, so that a trailing hole is part of the file.
fn append_sparse<W: Write>(
    builder: &mut Builder<W>,
    meta: &EntryMeta,
    name: &[u8],
    size: u64,
    extents: &[(u64, u64)],
    data: impl Read,
) -> io::Result<()> {
    let stored = extents.iter().map(|(_, len)| len).sum();
    let mut header = entry_header(builder, meta, EntryType::GNUSparse, stored)?;
    let map: Vec<(u64, u64)> = extents.iter().copied().chain([(size, 0)]).collect();
    let gnu = header
        .as_gnu_mut()
        .ok_or_else(|| io::Error::other("not a GNU header"))?;
    gnu.set_real_size(size);
    let (first, rest) = map.split_at(map.len().min(gnu.sparse.len()));
    for (slot, (offset, len)) in gnu.sparse.iter_mut().zip(first) {
        slot.set_offset(*offset);
        slot.set_length(*len);
    }
    gnu.set_is_extended(!rest.is_empty());
    let mut blocks = Vec::new();
    let mut chunks = rest
        .chunks(tar::GnuExtSparseHeader::new().sparse.len())
        .peekable();
    while let Some(chunk) = chunks.next() {
        let mut ext = tar::GnuExtSparseHeader::new();
        for (slot, (offset, len)) in ext.sparse.iter_mut().zip(chunk) {
            slot.set_offset(*offset);
            slot.set_length(*len);
        }
        ext.set_is_extended(chunks.peek().is_some());
        blocks.extend_from_slice(ext.as_bytes());
    }
    let name = Path::new(OsStr::from_bytes(name));
    builder.append_data(&mut header, name, blocks.as_slice().chain(data))
}

/// Whether a file was written to between two `fstat`s (a change of content keeps the size but
/// moves mtime and ctime).
fn changed_since(before: &Metadata, after: &Metadata) -> bool {
    let times = |m: &Metadata| {
        (
            m.len(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
        )
    };
    times(before) != times(after)
}

/// PAX keywords of a truncation marker: the path of the entry just before it, and its real size.
const TRUNCATE_PATH: &str = "MIMEO.truncate.path";
const TRUNCATE_SIZE: &str = "MIMEO.truncate.size";

/// Appends a truncation marker for the entry just written: a PAX global header ('g'), which is
/// a stand-alone entry that readers without Mimeo's keywords skip (GNU tar, the `tar` crate and
/// Mimeo before markers existed restore the padded file, as before).
fn append_truncation<W: Write>(builder: &mut Builder<W>, path: &[u8], size: u64) -> io::Result<()> {
    let size = size.to_string();
    let data = pax_records(&[(TRUNCATE_PATH, path), (TRUNCATE_SIZE, size.as_bytes())]);
    let mut header = Header::new_ustar();
    header.set_entry_type(EntryType::XGlobalHeader);
    header.set_size(data.len() as u64);
    header.set_cksum();
    builder.append(&header, data.as_slice())
}

/// PAX extended header records (`"<len> <key>=<value>\n"`, the length counting itself).
fn pax_records(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut data = Vec::new();
    for (key, value) in records {
        let rest = key.len() + value.len() + 3;
        let mut len = rest + 1;
        while rest + len.to_string().len() != len {
            len = rest + len.to_string().len();
        }
        data.extend_from_slice(format!("{len} {key}=").as_bytes());
        data.extend_from_slice(value);
        data.push(b'\n');
    }
    data
}

/// Records that `rel` is not in the stream after all, and makes the next incremental revisit it.
fn unsettle(summary: &mut ArchiveSummary, rel: &str, why: &str) {
    summary.skipped.push(format!("{}: {why}", shown(rel)));
    mark_unsettled(summary, rel);
}

fn mark_unsettled(summary: &mut ArchiveSummary, rel: &str) {
    if let Some(stamp) = summary.index.entries.get_mut(rel) {
        stamp.mtime_nsec = UNSETTLED_NSEC;
    }
}

/// Appends one entry: an optional PAX `mtime` record (sub-second or pre-1970 times), then the
/// GNU header (with GNU long-name/long-link entries when needed) and the data.
fn append<W: Write>(
    builder: &mut Builder<W>,
    meta: &EntryMeta,
    kind: EntryType,
    name: &[u8],
    size: u64,
    link: Option<&[u8]>,
    data: impl Read,
) -> io::Result<()> {
    let mut header = entry_header(builder, meta, kind, size)?;
    let name = Path::new(OsStr::from_bytes(name));
    match link {
        None => builder.append_data(&mut header, name, data),
        // Stored byte for byte: `append_link` would normalise short targets ("a/./b" → "a/b").
        Some(target) if target.len() <= header.as_old().linkname.len() => {
            header.set_link_name_literal(target)?;
            builder.append_data(&mut header, name, data)
        }
        // Too long for the header: `append_link` writes a GNU long-link entry with the raw bytes.
        Some(target) => {
            builder.append_link(&mut header, name, Path::new(OsStr::from_bytes(target)))
        }
    }
}

/// Appends the PAX `mtime` record an entry needs (sub-second or pre-1970 times) and returns its
/// GNU header, without name or checksum yet.
fn entry_header<W: Write>(
    builder: &mut Builder<W>,
    meta: &EntryMeta,
    kind: EntryType,
    size: u64,
) -> io::Result<Header> {
    if meta.nsec != 0 || meta.mtime < 0 {
        let time = format_pax_time(meta.mtime, meta.nsec);
        builder.append_pax_extensions([("mtime", time.as_bytes())])?;
    }
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(meta.mode);
    header.set_mtime(u64::try_from(meta.mtime).unwrap_or(0));
    header.set_uid(meta.uid);
    header.set_gid(meta.gid);
    header.set_size(size);
    Ok(header)
}

fn write_err(rel: &str, e: io::Error) -> Error {
    Error::Other(format!("writing archive entry {rel}: {e}"))
}

/// Yields exactly `remaining` bytes: zero padding if the source ends early (a file that shrank
/// must not desynchronise the stream), and it remembers a source error so it can be told apart
/// from an error writing the stream.
struct Exact<R> {
    inner: R,
    remaining: u64,
    padded: u64,
    failed: Option<io::Error>,
}

impl<R: Read> Exact<R> {
    fn new(inner: R, size: u64) -> Self {
        Exact {
            inner,
            remaining: size,
            padded: 0,
            failed: None,
        }
    }

    /// Whether the source holds more than the declared size.
    fn has_more(&mut self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.inner.read(&mut probe), Ok(n) if n > 0)
    }
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        if self.padded == 0 {
            match self.inner.read(&mut buf[..want]) {
                Ok(0) => {}
                Ok(n) => {
                    self.remaining -= n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
                Err(e) => {
                    let shown = io::Error::new(e.kind(), e.to_string());
                    self.failed = Some(e);
                    return Err(shown);
                }
            }
        }
        buf[..want].fill(0);
        self.padded += want as u64;
        self.remaining -= want as u64;
        Ok(want)
    }
}

// ---------------------------------------------------------------------------------------------
// Metadata shared by both directions

#[derive(Clone, Copy, Debug)]
struct EntryMeta {
    mode: u32,
    mtime: i64,
    nsec: u32,
    uid: u64,
    gid: u64,
}

impl EntryMeta {
    fn of(meta: &Metadata) -> Self {
        EntryMeta {
            mode: meta.mode() & 0o7777,
            mtime: meta.mtime(),
            nsec: u32::try_from(meta.mtime_nsec()).unwrap_or(0),
            uid: meta.uid().into(),
            gid: meta.gid().into(),
        }
    }

    fn read<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Self> {
        let mut time = None;
        if let Some(extensions) = entry.pax_extensions().map_err(read_err)? {
            time = extensions
                .flatten()
                .filter(|ext| ext.key_bytes() == b"mtime")
                .find_map(|ext| ext.value().ok().and_then(parse_pax_time));
        }
        let header = entry.header();
        let (mtime, nsec) = match time {
            Some(time) => time,
            None => {
                let secs = header.mtime().map_err(read_err)?;
                (i64::try_from(secs).unwrap_or(i64::MAX), 0)
            }
        };
        Ok(EntryMeta {
            mode: header.mode().map_err(read_err)? & 0o7777,
            mtime,
            nsec,
            uid: header.uid().map_err(read_err)?,
            gid: header.gid().map_err(read_err)?,
        })
    }
}

/// PAX time: decimal seconds with a fraction, negative before 1970 (`-1.5` is sec -2, nsec 5e8).
fn format_pax_time(sec: i64, nsec: u32) -> String {
    if sec < 0 && nsec > 0 {
        format!("-{}.{:09}", -(sec + 1), 1_000_000_000 - nsec)
    } else {
        format!("{sec}.{nsec:09}")
    }
}

fn parse_pax_time(text: &str) -> Option<(i64, u32)> {
    let (negative, body) = match text.strip_prefix('-') {
        Some(body) => (true, body),
        None => (false, text),
    };
    let (whole, fraction) = body.split_once('.').unwrap_or((body, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let digits = &fraction[..fraction.len().min(9)];
    let nsec = format!("{digits:0<9}").parse::<u32>().ok()?;
    Some(match (negative, nsec) {
        (false, _) => (whole, nsec),
        (true, 0) => (-whole, 0),
        (true, _) => (-whole - 1, 1_000_000_000 - nsec),
    })
}

// ---------------------------------------------------------------------------------------------
// Reading

fn read_err(e: io::Error) -> Error {
    Error::Other(format!("reading archive stream: {e}"))
}

fn refusal(entry: &str, reason: impl Into<String>) -> Error {
    Error::Refused {
        entry: entry.to_owned(),
        reason: reason.into(),
    }
}

/// Turns an archive path into the key of a canonical relative path (`a/b`, see [`path_key`]) or
/// says why it cannot be used; `Ok(None)` is the root itself (`.` or `./`).
fn normalize(raw: &[u8]) -> std::result::Result<Option<String>, String> {
    if raw.starts_with(b"/") {
        return Err("absolute path".to_owned());
    }
    if raw.contains(&0) {
        return Err("name contains a NUL byte".to_owned());
    }
    let mut parts = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("path has a `..` component".to_owned()),
            part => parts.push(part),
        }
    }
    Ok((!parts.is_empty()).then(|| path_key(&parts.join(&b'/'))))
}

/// The key of a canonical relative path in a [`FileIndex`] and in a stream's deletion list: its
/// components joined by `/`, each one that is not UTF-8 written as a NUL followed by its bytes
/// in hex. No real name holds a NUL, so keys are unambiguous, and UTF-8 paths are their own keys
/// (indexes written before non-UTF-8 names were archived stay valid).
pub fn path_key(path: &[u8]) -> String {
    let components: Vec<_> = path
        .split(|b| *b == b'/')
        .map(|c| match std::str::from_utf8(c) {
            Ok(text) => text.to_owned(),
            Err(_) => format!("\0{}", hex::encode(c)),
        })
        .collect();
    components.join("/")
}

/// The path bytes of a key made by [`path_key`]. A malformed escape stays as it is (with its
/// NUL, which every later check refuses).
fn key_path(key: &str) -> Vec<u8> {
    let components: Vec<Vec<u8>> = key
        .split('/')
        .map(|c| {
            c.strip_prefix('\0')
                .and_then(|hex| hex::decode(hex).ok())
                .unwrap_or_else(|| c.as_bytes().to_vec())
        })
        .collect();
    components.join(&b'/')
}

/// A key as people read it (bytes that are not UTF-8 shown as U+FFFD).
fn shown(key: &str) -> String {
    String::from_utf8_lossy(&key_path(key)).into_owned()
}

/// Where extracted entries go: a directory, or a sink of regular files.
trait Destination {
    /// Removes `rel` and everything below it; true when something was there.
    fn delete(&mut self, rel: &str) -> Result<bool>;
    /// Writes one entry; `refused` holds the paths refused so far (hard links must not reach them).
    fn put<R: Read>(
        &mut self,
        rel: &str,
        kind: EntryKind,
        entry: &mut tar::Entry<'_, R>,
        refused: &HashSet<String>,
        report: &mut ExtractReport,
    ) -> Result<()>;
    /// Cuts the regular file just written at `rel` back to `size` bytes (a truncation marker);
    /// false when this destination cannot.
    fn truncate(&mut self, rel: &str, size: u64) -> Result<bool>;
    /// Runs once all entries are in.
    fn finish(&mut self) -> Result<()>;
}

/// The extraction loop shared by both destinations: path checks, control entries, refusals.
fn drive<R: Read, D: Destination>(
    input: R,
    dest: &mut D,
    max_bytes: Option<u64>,
) -> Result<ExtractReport> {
    let mut budget = Budget::new(max_bytes);
    let mut report = ExtractReport::default();
    let mut refused = HashSet::new();
    let mut archive = tar::Archive::new(BufReader::with_capacity(IO_BUF, input));
    // The regular file written by the previous entry, and its size: what a truncation marker
    // may cut back.
    let mut last_file: Option<(String, u64)> = None;
    for (position, entry) in archive.entries().map_err(read_err)?.enumerate() {
        let mut entry = entry.map_err(read_err)?;
        let previous = last_file.take();
        let kind = match entry.header().entry_type() {
            EntryType::XGlobalHeader => {
                let outcome = match truncation(&mut entry)? {
                    Some((rel, size)) => apply_truncation(rel, size, previous, dest, &mut report),
                    None => Ok(()),
                };
                refuse_or_fail(outcome, &mut report, &mut refused)?;
                continue;
            }
            EntryType::Directory => Ok(EntryKind::Dir),
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                Ok(EntryKind::File)
            }
            EntryType::Symlink => Ok(EntryKind::Symlink),
            EntryType::Link => Ok(EntryKind::HardLink),
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                Err("device and FIFO entries are never restored".to_owned())
            }
            other => Err(format!(
                "unsupported entry type {:?}",
                other.as_byte() as char
            )),
        };
        let raw = entry.path_bytes().into_owned();
        let outcome = match (normalize(&raw), kind) {
            (Err(reason), _) => Err(refusal(&String::from_utf8_lossy(&raw), reason)),
            (Ok(Some(rel)), Err(reason)) => Err(refusal(&rel, reason)),
            (Ok(None), _) => Ok(()),
            (Ok(Some(rel)), Ok(EntryKind::File)) if rel == DELETED_ENTRY && position == 0 => {
                apply_deletions(&mut entry, dest, &mut report)
            }
            (Ok(Some(rel)), Ok(kind)) => {
                let put = budget
                    .take(&rel, kind, entry.size())
                    .and_then(|()| dest.put(&rel, kind, &mut entry, &refused, &mut report));
                if put.is_ok() && kind == EntryKind::File {
                    last_file = Some((rel, entry.size()));
                }
                put
            }
        };
        refuse_or_fail(outcome, &mut report, &mut refused)?;
    }
    dest.finish()?;
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(read_err)?;
    Ok(report)
}

/// What is left of [`ExtractOptions::max_bytes`].
struct Budget {
    max: Option<u64>,
    used: u64,
}

impl Budget {
    fn new(max: Option<u64>) -> Self {
        Budget { max, used: 0 }
    }

    /// Counts a regular file's (real) size, or refuses it when it does not fit.
    fn take(&mut self, rel: &str, kind: EntryKind, size: u64) -> Result<()> {
        if kind != EntryKind::File {
            return Ok(());
        }
        let used = self.used.saturating_add(size);
        match self.max {
            Some(max) if used > max => Err(refusal(
                rel,
                format!(
                    "claims {size} bytes, more than the {} left of the {max} this restore allows",
                    max - self.used
                ),
            )),
            _ => {
                self.used = used;
                Ok(())
            }
        }
    }
}

/// Records a refusal in the report (extraction goes on); any other error ends it.
fn refuse_or_fail(
    outcome: Result<()>,
    report: &mut ExtractReport,
    refused: &mut HashSet<String>,
) -> Result<()> {
    match outcome {
        Err(Error::Refused { entry, reason }) => {
            report.refused.push(format!("{}: {reason}", shown(&entry)));
            refused.insert(entry);
            Ok(())
        }
        other => other,
    }
}

/// The path and real size of a truncation marker (see `append_truncation`); `None` for any
/// other global header.
fn truncation<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Option<(String, u64)>> {
    let Some(records) = entry.pax_extensions().map_err(read_err)? else {
        return Ok(None);
    };
    let (mut path, mut size) = (None, None);
    for record in records {
        let record = record.map_err(read_err)?;
        match record.key_bytes() {
            k if k == TRUNCATE_PATH.as_bytes() => path = Some(record.value_bytes().to_vec()),
            k if k == TRUNCATE_SIZE.as_bytes() => size = Some(record.value_bytes().to_vec()),
            _ => {}
        }
    }
    let (path, size) = match (path, size) {
        (None, None) => return Ok(None),
        (Some(path), Some(size)) => (path, size),
        _ => {
            return Err(Error::Other(
                "truncation marker without a path or size".into(),
            ));
        }
    };
    let shown = String::from_utf8_lossy(&path).into_owned();
    let rel = normalize(&path)
        .map_err(|reason| refusal(&shown, reason))
        .and_then(|rel| rel.ok_or_else(|| refusal(&shown, "truncation marker for the root")));
    let size = std::str::from_utf8(&size)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Other(format!("truncation marker for {shown}: bad size")))?;
    Ok(Some((rel?, size)))
}

/// Cuts the file the previous entry wrote back to the size the backup actually read.
fn apply_truncation<D: Destination>(
    rel: String,
    size: u64,
    previous: Option<(String, u64)>,
    dest: &mut D,
    report: &mut ExtractReport,
) -> Result<()> {
    match previous {
        Some((last, written)) if last == rel && size <= written => {
            let padding = written - size;
            let note = if dest.truncate(&rel, size)? {
                format!("shrank by {padding} bytes while it was backed up; restored as read")
            } else {
                format!(
                    "shrank by {padding} bytes while it was backed up; restored with that many \
                     zero bytes at its end (this restore target cannot cut them off)"
                )
            };
            report.warnings.push(format!("{rel}: {note}"));
            Ok(())
        }
        _ => Err(refusal(
            &rel,
            "truncation marker that does not follow its own, longer file entry",
        )),
    }
}

fn apply_deletions<R: Read, D: Destination>(
    entry: &mut tar::Entry<'_, R>,
    dest: &mut D,
    report: &mut ExtractReport,
) -> Result<()> {
    let mut list = Vec::new();
    entry.read_to_end(&mut list).map_err(read_err)?;
    let paths: Vec<String> = serde_json::from_slice(&list)
        .map_err(|e| Error::Other(format!("{DELETED_ENTRY}: not a JSON list of paths: {e}")))?;
    for path in paths {
        let outcome = match normalize(&key_path(&path)) {
            Ok(Some(rel)) => dest.delete(&rel),
            Ok(None) => Err(refusal(&path, "not a path inside the restored tree")),
            Err(reason) => Err(refusal(&path, reason)),
        };
        match outcome {
            Ok(removed) => report.deleted += u64::from(removed),
            Err(Error::Refused { entry, reason }) => {
                let entry = shown(&entry);
                report
                    .refused
                    .push(format!("deletion of {entry}: {reason}"));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The state of a path's parent directories.
enum Parents {
    /// All there: the directory holding the entry.
    Ready(Dir),
    /// One is missing (and was not to be created).
    Missing,
    /// One is a symlink or not a directory: why nothing may be written below it.
    Blocked(String),
}

struct DirTarget<'a> {
    root: &'a Path,
    /// The target, held open: every entry is reached beneath it one name at a time, so neither
    /// the depth of the tree nor a directory swapped for a symlink sends a write elsewhere.
    top: Dir,
    /// The directories opened last beneath `top`, outermost first, with their keys: entries in
    /// stream order share them. Emptied whenever a directory is removed.
    chain: Vec<(String, Dir)>,
    /// Root restores re-apply owners; unprivileged ones must lift read-only directory modes.
    as_root: bool,
    /// See [`ExtractOptions::keep_setid`].
    keep_setid: bool,
    /// Directories whose mode and time are applied once their content is in.
    deferred: Vec<(String, EntryMeta)>,
    /// The regular file written last, still open with its directory, so a truncation marker
    /// cuts that very file.
    last_file: Option<(String, Dir, File, EntryMeta)>,
    buf: Vec<u8>,
}

/// The last component of the key `rel`, as a name.
fn leaf(rel: &str) -> OsString {
    let name = rel.rsplit_once('/').map_or(rel, |(_, name)| name);
    OsString::from_vec(key_path(name))
}

impl DirTarget<'_> {
    /// Where the entry with key `rel` goes (for messages: nothing is opened by this path).
    fn path_of(&self, rel: &str) -> PathBuf {
        self.root.join(OsStr::from_bytes(&key_path(rel)))
    }

    /// The directory holding `rel`, opened beneath the target one name at a time, never
    /// through a symlink; missing ones are made when `create` is set.
    fn parents(&mut self, rel: &str, create: bool) -> Result<Parents> {
        let parent = rel.rsplit_once('/').map_or("", |(parent, _)| parent);
        let leads_to = |key: &str| {
            parent == key
                || (parent.starts_with(key) && parent.as_bytes().get(key.len()) == Some(&b'/'))
        };
        while self.chain.last().is_some_and(|(key, _)| !leads_to(key)) {
            self.chain.pop();
        }
        let done = self.chain.last().map_or(0, |(key, _)| key.len() + 1);
        if done <= parent.len() && !parent.is_empty() {
            for name in parent[done..].split('/') {
                let key_len = self.chain.last().map_or(0, |(key, _)| key.len() + 1) + name.len();
                let key = &parent[..key_len];
                let dir = self.chain.last().map_or(&self.top, |(_, dir)| dir);
                let os = OsString::from_vec(key_path(name));
                let opened = match dir.open_dir(&os) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                        match dir.create_dir(&os, 0o700) {
                            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                                return Err(Error::io(self.path_of(key), e));
                            }
                            _ => dir.open_dir(&os),
                        }
                    }
                    opened => opened,
                };
                let opened = match opened {
                    Ok(opened) => opened,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Parents::Missing),
                    Err(e) if is_gone(&e) => {
                        let symlink = dir.stat(&os).is_ok_and(|m| m.file_type().is_symlink());
                        let why = if symlink {
                            "is a symbolic link; nothing is written through one"
                        } else {
                            "is not a directory"
                        };
                        return Ok(Parents::Blocked(format!("{} {why}", shown(key))));
                    }
                    Err(e) => return Err(Error::io(self.path_of(key), e)),
                };
                self.chain.push((key.to_owned(), opened));
            }
        }
        let dir = self.chain.last().map_or(&self.top, |(_, dir)| dir);
        let dir = dir
            .try_clone()
            .map_err(|e| Error::io(self.path_of(parent), e))?;
        Ok(Parents::Ready(dir))
    }

    /// The mode that lets an unprivileged restore write into a directory an earlier link of
    /// the chain restored read-only (that directory's own entry re-applies its real mode at
    /// the end); `None` when nothing needs lifting.
    fn lifted(&self, meta: &Metadata) -> Option<u32> {
        (!self.as_root && meta.mode() & 0o700 != 0o700).then(|| (meta.mode() | 0o700) & 0o7777)
    }

    fn make_parent_writable(&self, rel: &str, parent: &Dir) -> Result<()> {
        if !rel.contains('/') {
            return Ok(()); // the target root is left as its owner made it
        }
        let at = || self.path_of(rel.rsplit_once('/').map_or("", |(p, _)| p));
        let meta = parent.metadata().map_err(|e| Error::io(at(), e))?;
        match self.lifted(&meta) {
            Some(mode) => parent.set_mode(mode).map_err(|e| Error::io(at(), e)),
            None => Ok(()),
        }
    }

    /// Removes whatever is at `name` (never following a symlink), so that a new entry replaces
    /// it instead of writing into it (and into any other name of its inode).
    fn clear(&mut self, parent: &Dir, name: &OsStr, path: &Path) -> Result<()> {
        match parent.stat_if_any(name).map_err(|e| Error::io(path, e))? {
            Some(meta) if meta.is_dir() => {
                self.chain.clear();
                parent.remove_all(name).map_err(|e| Error::io(path, e))
            }
            Some(_) => parent.remove_file(name).map_err(|e| Error::io(path, e)),
            None => Ok(()),
        }
    }

    fn put_dir(&mut self, rel: &str, parent: &Dir, path: &Path, meta: EntryMeta) -> Result<()> {
        let name = leaf(rel);
        let io_err = |e| Error::io(path, e);
        match parent.stat_if_any(&name).map_err(io_err)? {
            Some(existing) if existing.is_dir() => {
                if let Some(mode) = self.lifted(&existing) {
                    let dir = parent.open_dir(&name).map_err(io_err)?;
                    dir.set_mode(mode).map_err(io_err)?;
                }
            }
            found => {
                if found.is_some() {
                    parent.remove_file(&name).map_err(io_err)?;
                }
                parent.create_dir(&name, 0o700).map_err(io_err)?;
            }
        }
        self.deferred.push((rel.to_owned(), meta));
        Ok(())
    }

    fn put_file<R: Read>(
        &mut self,
        rel: &str,
        parent: Dir,
        path: &Path,
        entry: &mut tar::Entry<'_, R>,
        meta: &EntryMeta,
        report: &mut ExtractReport,
    ) -> Result<u64> {
        let name = leaf(rel);
        self.clear(&parent, &name, path)?;
        let file = parent
            .create_file(&name, 0o600)
            .map_err(|e| Error::io(path, e))?;
        let sparse = entry.header().entry_type() == EntryType::GNUSparse;
        let written = self.copy_data(entry, &file, sparse, path)?;
        if self.as_root {
            let (uid, gid) = (u32::try_from(meta.uid).ok(), u32::try_from(meta.gid).ok());
            std::os::unix::fs::fchown(&file, uid, gid).map_err(|e| Error::io(path, e))?;
        }
        let mut mode = meta.mode;
        if !self.keep_setid && mode & SETID != 0 {
            mode &= !SETID;
            let note = "setuid/setgid bits not restored (the restore did not ask for them)";
            report.warnings.push(format!("{}: {note}", shown(rel)));
        }
        // After chown, which clears set-id bits.
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(|e| Error::io(path, e))?;
        parent
            .set_mtime(&name, meta.mtime, meta.nsec)
            .map_err(|e| Error::io(path, e))?;
        self.last_file = Some((rel.to_owned(), parent, file, *meta));
        Ok(written)
    }

    /// Copies an entry's data into `file`. The all-zero blocks of a sparse entry are left as
    /// holes, never written, so neither a real sparse file nor a forged entry claiming a vast
    /// size takes more room than its data.
    fn copy_data<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        file: &File,
        sparse: bool,
        path: &Path,
    ) -> Result<u64> {
        use std::os::unix::fs::FileExt;
        let mut written = 0u64;
        loop {
            // Whole buffers, so that blocks stay aligned to the file's offsets.
            let n = read_full(entry, &mut self.buf).map_err(read_err)?;
            if n == 0 {
                break;
            }
            for (i, block) in self.buf[..n].chunks(HOLE_BLOCK).enumerate() {
                if !sparse || block.iter().any(|b| *b != 0) {
                    let at = written + (i * HOLE_BLOCK) as u64;
                    file.write_all_at(block, at)
                        .map_err(|e| Error::io(path, e))?;
                }
            }
            written += n as u64;
        }
        if sparse {
            file.set_len(written).map_err(|e| Error::io(path, e))?;
        }
        Ok(written)
    }

    fn put_symlink(
        &mut self,
        rel: &str,
        parent: &Dir,
        path: &Path,
        target: &[u8],
        meta: &EntryMeta,
    ) -> Result<()> {
        if target.is_empty() {
            return Err(refusal(rel, "symbolic link without a target"));
        }
        let name = leaf(rel);
        self.clear(parent, &name, path)?;
        let io_err = |e| Error::io(path, e);
        parent
            .symlink(OsStr::from_bytes(target), &name)
            .map_err(io_err)?;
        self.chown_nofollow(parent, &name, meta).map_err(io_err)?;
        parent
            .set_mtime(&name, meta.mtime, meta.nsec)
            .map_err(io_err)
    }

    fn put_hard_link(
        &mut self,
        rel: &str,
        parent: &Dir,
        path: &Path,
        raw_target: &[u8],
        refused: &HashSet<String>,
    ) -> Result<()> {
        let shown = String::from_utf8_lossy(raw_target);
        let target = match normalize(raw_target) {
            Ok(Some(target)) => target,
            Ok(None) => return Err(refusal(rel, "hard link to the restore root")),
            Err(reason) => return Err(refusal(rel, format!("hard link target {shown}: {reason}"))),
        };
        if target == rel {
            return Err(refusal(rel, "hard link to itself"));
        }
        if refused.contains(&target) {
            return Err(refusal(
                rel,
                format!("hard link target {target} was refused"),
            ));
        }
        let missing = || refusal(rel, format!("hard link target {target} does not exist"));
        let target_dir = match self.parents(&target, false)? {
            Parents::Ready(dir) => dir,
            Parents::Missing => return Err(missing()),
            Parents::Blocked(why) => {
                return Err(refusal(rel, format!("hard link target {target}: {why}")));
            }
        };
        let target_name = leaf(&target);
        let found = target_dir
            .stat_if_any(&target_name)
            .map_err(|e| Error::io(self.path_of(&target), e))?;
        match found {
            Some(meta) if meta.is_file() => {}
            Some(_) => {
                return Err(refusal(
                    rel,
                    format!("hard link target {target} is not a regular file"),
                ));
            }
            None => return Err(missing()),
        }
        let name = leaf(rel);
        self.clear(parent, &name, path)?;
        // linkat without AT_SYMLINK_FOLLOW: links the checked file itself.
        target_dir
            .hard_link(&target_name, parent, &name)
            .map_err(|e| Error::io(path, e))
    }

    fn chown_nofollow(&self, parent: &Dir, name: &OsStr, meta: &EntryMeta) -> io::Result<()> {
        if !self.as_root {
            return Ok(());
        }
        let (uid, gid) = (u32::try_from(meta.uid).ok(), u32::try_from(meta.gid).ok());
        parent.lchown(name, uid, gid)
    }
}

impl Destination for DirTarget<'_> {
    fn delete(&mut self, rel: &str) -> Result<bool> {
        let parent = match self.parents(rel, false)? {
            Parents::Ready(dir) => dir,
            Parents::Missing => return Ok(false),
            Parents::Blocked(why) => return Err(refusal(rel, why)),
        };
        let path = self.path_of(rel);
        let name = leaf(rel);
        match parent.stat_if_any(&name).map_err(|e| Error::io(&path, e))? {
            Some(_) => {
                self.make_parent_writable(rel, &parent)?;
                self.clear(&parent, &name, &path)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn put<R: Read>(
        &mut self,
        rel: &str,
        kind: EntryKind,
        entry: &mut tar::Entry<'_, R>,
        refused: &HashSet<String>,
        report: &mut ExtractReport,
    ) -> Result<()> {
        let meta = EntryMeta::read(entry)?;
        let parent = match self.parents(rel, true)? {
            Parents::Ready(dir) => dir,
            Parents::Missing => unreachable!("missing parents are created"),
            Parents::Blocked(why) => return Err(refusal(rel, why)),
        };
        self.make_parent_writable(rel, &parent)?;
        let path = self.path_of(rel);
        match kind {
            EntryKind::Dir => self.put_dir(rel, &parent, &path, meta)?,
            EntryKind::File => {
                report.bytes += self.put_file(rel, parent, &path, entry, &meta, report)?;
            }
            EntryKind::Symlink => {
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                self.put_symlink(rel, &parent, &path, &target, &meta)?;
            }
            EntryKind::HardLink => {
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                self.put_hard_link(rel, &parent, &path, &target, refused)?;
            }
        }
        report.entries += 1;
        Ok(())
    }

    fn truncate(&mut self, rel: &str, size: u64) -> Result<bool> {
        let Some((last, dir, file, meta)) = self.last_file.take().filter(|(last, ..)| last == rel)
        else {
            return Err(refusal(
                rel,
                "truncation marker for a file not just restored",
            ));
        };
        let path = self.path_of(&last);
        file.set_len(size).map_err(|e| Error::io(&path, e))?;
        dir.set_mtime(&leaf(&last), meta.mtime, meta.nsec)
            .map_err(|e| Error::io(&path, e))?;
        Ok(true)
    }

    fn finish(&mut self) -> Result<()> {
        self.last_file = None;
        // Children before parents (the reverse of stream order), so that a parent made
        // read-only or unsearchable does not stop its children from being finished.
        for (rel, meta) in std::mem::take(&mut self.deferred).into_iter().rev() {
            let Parents::Ready(parent) = self.parents(&rel, false)? else {
                continue;
            };
            let path = self.path_of(&rel);
            let name = leaf(&rel);
            let dir = match parent.open_dir(&name) {
                Ok(dir) => dir,
                // Removed, or replaced by a later entry, which wins.
                Err(e) if is_gone(&e) => continue,
                Err(e) => return Err(Error::io(path, e)),
            };
            let io_err = |e| Error::io(&path, e);
            self.chown_nofollow(&parent, &name, &meta).map_err(io_err)?;
            dir.set_mode(meta.mode).map_err(io_err)?;
            parent
                .set_mtime(&name, meta.mtime, meta.nsec)
                .map_err(io_err)?;
        }
        Ok(())
    }
}

/// Reads until `buf` is full or the input ends; returns how much was read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

struct SinkTarget<'s> {
    sink: &'s mut dyn FnMut(&str, u64, &mut dyn Read) -> Result<()>,
    delete: &'s mut dyn FnMut(&str) -> Result<()>,
}

/// Whether a key names a path that is not UTF-8, which object keys cannot hold.
fn is_escaped(rel: &str) -> bool {
    rel.contains('\0')
}

impl Destination for SinkTarget<'_> {
    fn delete(&mut self, rel: &str) -> Result<bool> {
        if is_escaped(rel) {
            return Ok(false); // never stored here
        }
        (self.delete)(rel)?;
        Ok(true)
    }

    fn put<R: Read>(
        &mut self,
        rel: &str,
        kind: EntryKind,
        entry: &mut tar::Entry<'_, R>,
        _refused: &HashSet<String>,
        report: &mut ExtractReport,
    ) -> Result<()> {
        let what = match kind {
            EntryKind::Dir => return Ok(()), // implied by the paths of the files below it
            _ if is_escaped(rel) => "name that is not UTF-8",
            EntryKind::Symlink => "symbolic link",
            EntryKind::HardLink => "hard link",
            EntryKind::File => {
                let size = entry.size();
                let mut counted = Counted {
                    inner: entry,
                    count: 0,
                };
                (self.sink)(rel, size, &mut counted)?;
                if counted.count != size {
                    return Err(Error::Other(format!(
                        "{rel}: restore target consumed {} of {size} bytes",
                        counted.count
                    )));
                }
                report.entries += 1;
                report.bytes += size;
                return Ok(());
            }
        };
        report.skipped.push(format!(
            "{}: {what} cannot be stored by this restore target",
            shown(rel)
        ));
        Ok(())
    }

    fn truncate(&mut self, _rel: &str, _size: u64) -> Result<bool> {
        Ok(false)
    }

    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

struct Counted<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
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
        assert_eq!(names[0], (".mimeo/".to_owned(), EntryType::Directory));
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
                    .map_err(|e| Error::io(path, e))?;
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
                        .map_err(|e| Error::io("f", e))
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
