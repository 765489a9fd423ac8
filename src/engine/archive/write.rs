//! Writing a stream: the walk of a tree through directory handles, then one tar entry per
//! name (files, sparse files, links, truncation and deletion markers).

use super::*;

/// Runs `body` on a tar builder over a buffered `out`. On failure the buffered tail, including
/// the end-of-archive marker the builder writes when dropped, is discarded, so a failed stream
/// never ends like a complete one.
pub(super) fn with_builder<W: Write>(
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
pub(super) fn append_deletions<W: Write>(
    builder: &mut Builder<W>,
    deleted: &[String],
) -> Result<()> {
    let list = serde_json::to_vec(deleted).map_err(|e| EngineError::Encode {
        what: DELETED_ENTRY.into(),
        detail: e.to_string(),
    })?;
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
pub(super) struct Planned {
    /// Index key of the path (see [`path_key`]).
    pub(super) rel: String,
    /// The path relative to the root, as bytes: the entry's name in the stream.
    pub(super) path: Vec<u8>,
    /// Where the last component of `path` starts.
    pub(super) name_at: usize,
    pub(super) stamp: FileStamp,
    pub(super) meta: EntryMeta,
    /// `(dev, ino)` as the walk saw it.
    pub(super) id: (u64, u64),
    /// `(dev, ino)` of a regular file with more than one name.
    pub(super) inode: Option<(u64, u64)>,
    /// For a hard link: the plan index of the inode's first name.
    pub(super) link_to: Option<usize>,
}

impl Planned {
    pub(super) fn name(&self) -> &OsStr {
        OsStr::from_bytes(&self.path[self.name_at..])
    }

    /// The path of the directory holding this entry (empty for the root).
    pub(super) fn parent(&self) -> &[u8] {
        &self.path[..self.name_at.saturating_sub(1)]
    }
}

/// One directory of the walk in progress: its handle and its names not yet visited.
pub(super) struct Level {
    pub(super) dir: Dir,
    pub(super) path: Vec<u8>,
    pub(super) names: std::vec::IntoIter<OsString>,
}

/// Sorted depth-first walk that records metadata only (no file is opened for reading). Every
/// directory is opened beneath its parent's handle and listed through its own, so the walk
/// needs no path longer than one name and never passes through a symlink; the depth of the tree
/// is bounded only by the number of open files allowed (one per level).
pub(super) fn walk(root: &Path, top: &Dir, skipped: &mut Vec<String>) -> Result<Vec<Planned>> {
    let names = top.names().map_err(|e| EngineError::io(root, e))?;
    let mut stack = vec![Level {
        dir: top.try_clone().map_err(|e| EngineError::io(root, e))?,
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
            Err(e) => return Err(EngineError::io(abs(), e)),
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
            match opened.map_err(|e| EngineError::io(abs(), e))? {
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
pub(super) struct OpenDirs {
    /// Plan index of each open directory (`None` for the root) and its handle.
    pub(super) chain: Vec<(Option<usize>, Dir)>,
}

impl OpenDirs {
    pub(super) fn new(root: Dir) -> Self {
        OpenDirs {
            chain: vec![(None, root)],
        }
    }

    /// The open directory holding `entry`; `None` when that directory could not be opened.
    /// Entries come in walk order, so directories left behind are closed on the way.
    pub(super) fn parent_of(&mut self, plan: &[Planned], entry: &Planned) -> Option<&Dir> {
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

pub(super) fn special_name(meta: &Metadata) -> &'static str {
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
pub(super) fn link_hard_links(plan: &mut [Planned]) {
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
pub(super) fn select(plan: &[Planned], previous: Option<&FileIndex>) -> Vec<bool> {
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
pub(super) fn vanished(previous: &FileIndex, current: &FileIndex) -> Vec<String> {
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
pub(super) fn append_bare<W: Write>(
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
pub(super) fn append_file<W: Write>(
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
        Err(e) => return Err(EngineError::io(abs, e)),
    };
    let stat = file.metadata().map_err(|e| EngineError::io(abs, e))?;
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
    let sparse = data_extents(&file, &stat).map_err(|e| EngineError::io(abs, e))?;
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
        Some(cause) => EngineError::io(abs, cause),
        None => write_err(rel, e),
    })?;
    summary.file_bytes += size;
    let reader = src.inner.get_ref();
    let after = reader
        .file
        .metadata()
        .map_err(|e| EngineError::io(abs, e))?;
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
pub(super) fn data_extents(file: &File, meta: &Metadata) -> io::Result<Option<Vec<(u64, u64)>>> {
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
pub(super) fn seek_data(file: &File, from: u64, whence: libc::c_int) -> io::Result<u64> {
    let from = libc::off_t::try_from(from).map_err(io::Error::other)?;
    // SAFETY: lseek on an open descriptor has no memory-safety preconditions.
    let at = unsafe { libc::lseek(file.as_raw_fd(), from, whence) };
    u64::try_from(at).map_err(|_| io::Error::last_os_error())
}

/// Reads a file's extents one after the other with `pread`: the data of a sparse entry, or
/// the whole file as one extent.
pub(super) struct Extents<'a> {
    pub(super) file: File,
    pub(super) extents: &'a [(u64, u64)],
    /// Bytes of `extents[0]` already read.
    pub(super) done: u64,
    /// Where the file turned out to end, when it ended before its last extent did.
    pub(super) stopped_at: Option<u64>,
}

impl<'a> Extents<'a> {
    pub(super) fn new(file: File, extents: &'a [(u64, u64)]) -> Self {
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
pub(super) fn append_sparse<W: Write>(
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
pub(super) fn changed_since(before: &Metadata, after: &Metadata) -> bool {
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
pub(super) const TRUNCATE_PATH: &str = "MIMEO.truncate.path";
pub(super) const TRUNCATE_SIZE: &str = "MIMEO.truncate.size";

/// Appends a truncation marker for the entry just written: a PAX global header ('g'), which is
/// a stand-alone entry that readers without Mimeo's keywords skip (GNU tar, the `tar` crate and
/// Mimeo before markers existed restore the padded file, as before).
pub(super) fn append_truncation<W: Write>(
    builder: &mut Builder<W>,
    path: &[u8],
    size: u64,
) -> io::Result<()> {
    let size = size.to_string();
    let data = pax_records(&[(TRUNCATE_PATH, path), (TRUNCATE_SIZE, size.as_bytes())]);
    let mut header = Header::new_ustar();
    header.set_entry_type(EntryType::XGlobalHeader);
    header.set_size(data.len() as u64);
    header.set_cksum();
    builder.append(&header, data.as_slice())
}

/// PAX extended header records (`"<len> <key>=<value>\n"`, the length counting itself).
pub(super) fn pax_records(records: &[(&str, &[u8])]) -> Vec<u8> {
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
pub(super) fn unsettle(summary: &mut ArchiveSummary, rel: &str, why: &str) {
    summary.skipped.push(format!("{}: {why}", shown(rel)));
    mark_unsettled(summary, rel);
}

pub(super) fn mark_unsettled(summary: &mut ArchiveSummary, rel: &str) {
    if let Some(stamp) = summary.index.entries.get_mut(rel) {
        stamp.mtime_nsec = UNSETTLED_NSEC;
    }
}

/// Appends one entry: an optional PAX `mtime` record (sub-second or pre-1970 times), then the
/// GNU header (with GNU long-name/long-link entries when needed) and the data.
pub(super) fn append<W: Write>(
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
pub(super) fn entry_header<W: Write>(
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

pub(super) fn write_err(rel: &str, e: io::Error) -> EngineError {
    EngineError::Archive {
        entry: rel.to_owned(),
        detail: format!("writing: {e}"),
    }
}

/// Yields exactly `remaining` bytes: zero padding if the source ends early (a file that shrank
/// must not desynchronise the stream), and it remembers a source error so it can be told apart
/// from an error writing the stream.
pub(super) struct Exact<R> {
    pub(super) inner: R,
    pub(super) remaining: u64,
    pub(super) padded: u64,
    pub(super) failed: Option<io::Error>,
}

impl<R: Read> Exact<R> {
    pub(super) fn new(inner: R, size: u64) -> Self {
        Exact {
            inner,
            remaining: size,
            padded: 0,
            failed: None,
        }
    }

    /// Whether the source holds more than the declared size.
    pub(super) fn has_more(&mut self) -> bool {
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
