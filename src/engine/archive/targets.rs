//! Where a stream is extracted: a directory (built beneath a handle, moved into place) or a
//! sink of objects (an S3 target).

use super::*;

/// The state of a path's parent directories.
pub(super) enum Parents {
    /// All there: the directory holding the entry.
    Ready(Dir),
    /// One is missing (and was not to be created).
    Missing,
    /// One is a symlink or not a directory: why nothing may be written below it.
    Blocked(String),
}

pub(super) struct DirTarget<'a> {
    pub(super) root: &'a Path,
    /// The target, held open: every entry is reached beneath it one name at a time, so neither
    /// the depth of the tree nor a directory swapped for a symlink sends a write elsewhere.
    pub(super) top: Dir,
    /// The directories opened last beneath `top`, outermost first, with their keys: entries in
    /// stream order share them. Emptied whenever a directory is removed.
    pub(super) chain: Vec<(String, Dir)>,
    /// Root restores re-apply owners; unprivileged ones must lift read-only directory modes.
    pub(super) as_root: bool,
    /// See [`ExtractOptions::keep_setid`].
    pub(super) keep_setid: bool,
    /// Directories whose mode and time are applied once their content is in.
    pub(super) deferred: Vec<(String, EntryMeta)>,
    /// The regular file written last, still open with its directory, so a truncation marker
    /// cuts that very file.
    pub(super) last_file: Option<(String, Dir, File, EntryMeta)>,
    pub(super) buf: Vec<u8>,
}

/// The last component of the key `rel`, as a name.
pub(super) fn leaf(rel: &str) -> OsString {
    let name = rel.rsplit_once('/').map_or(rel, |(_, name)| name);
    OsString::from_vec(key_path(name))
}

impl DirTarget<'_> {
    /// Where the entry with key `rel` goes (for messages: nothing is opened by this path).
    pub(super) fn path_of(&self, rel: &str) -> PathBuf {
        self.root.join(OsStr::from_bytes(&key_path(rel)))
    }

    /// The directory holding `rel`, opened beneath the target one name at a time, never
    /// through a symlink; missing ones are made when `create` is set.
    pub(super) fn parents(&mut self, rel: &str, create: bool) -> Result<Parents> {
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
                                return Err(EngineError::io(self.path_of(key), e));
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
                    Err(e) => return Err(EngineError::io(self.path_of(key), e)),
                };
                self.chain.push((key.to_owned(), opened));
            }
        }
        let dir = self.chain.last().map_or(&self.top, |(_, dir)| dir);
        let dir = dir
            .try_clone()
            .map_err(|e| EngineError::io(self.path_of(parent), e))?;
        Ok(Parents::Ready(dir))
    }

    /// The mode that lets an unprivileged restore write into a directory an earlier link of
    /// the chain restored read-only (that directory's own entry re-applies its real mode at
    /// the end); `None` when nothing needs lifting.
    pub(super) fn lifted(&self, meta: &Metadata) -> Option<u32> {
        (!self.as_root && meta.mode() & 0o700 != 0o700).then(|| (meta.mode() | 0o700) & 0o7777)
    }

    pub(super) fn make_parent_writable(&self, rel: &str, parent: &Dir) -> Result<()> {
        if !rel.contains('/') {
            return Ok(()); // the target root is left as its owner made it
        }
        let at = || self.path_of(rel.rsplit_once('/').map_or("", |(p, _)| p));
        let meta = parent.metadata().map_err(|e| EngineError::io(at(), e))?;
        match self.lifted(&meta) {
            Some(mode) => parent.set_mode(mode).map_err(|e| EngineError::io(at(), e)),
            None => Ok(()),
        }
    }

    /// Removes whatever is at `name` (never following a symlink), so that a new entry replaces
    /// it instead of writing into it (and into any other name of its inode).
    pub(super) fn clear(&mut self, parent: &Dir, name: &OsStr, path: &Path) -> Result<()> {
        match parent
            .stat_if_any(name)
            .map_err(|e| EngineError::io(path, e))?
        {
            Some(meta) if meta.is_dir() => {
                self.chain.clear();
                parent
                    .remove_all(name)
                    .map_err(|e| EngineError::io(path, e))
            }
            Some(_) => parent
                .remove_file(name)
                .map_err(|e| EngineError::io(path, e)),
            None => Ok(()),
        }
    }

    pub(super) fn put_dir(
        &mut self,
        rel: &str,
        parent: &Dir,
        path: &Path,
        meta: EntryMeta,
    ) -> Result<()> {
        let name = leaf(rel);
        let io_err = |e| EngineError::io(path, e);
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

    pub(super) fn put_file<R: Read>(
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
            .map_err(|e| EngineError::io(path, e))?;
        let sparse = entry.header().entry_type() == EntryType::GNUSparse;
        let written = self.copy_data(entry, &file, sparse, path)?;
        if self.as_root {
            let (uid, gid) = (u32::try_from(meta.uid).ok(), u32::try_from(meta.gid).ok());
            std::os::unix::fs::fchown(&file, uid, gid).map_err(|e| EngineError::io(path, e))?;
        }
        let mut mode = meta.mode;
        if !self.keep_setid && mode & SETID != 0 {
            mode &= !SETID;
            let note = "setuid/setgid bits not restored (the restore did not ask for them)";
            report.warnings.push(format!("{}: {note}", shown(rel)));
        }
        // After chown, which clears set-id bits.
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(|e| EngineError::io(path, e))?;
        parent
            .set_mtime(&name, meta.mtime, meta.nsec)
            .map_err(|e| EngineError::io(path, e))?;
        self.last_file = Some((rel.to_owned(), parent, file, *meta));
        Ok(written)
    }

    /// Copies an entry's data into `file`. The all-zero blocks of a sparse entry are left as
    /// holes, never written, so neither a real sparse file nor a forged entry claiming a vast
    /// size takes more room than its data.
    pub(super) fn copy_data<R: Read>(
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
                        .map_err(|e| EngineError::io(path, e))?;
                }
            }
            written += n as u64;
        }
        if sparse {
            file.set_len(written)
                .map_err(|e| EngineError::io(path, e))?;
        }
        Ok(written)
    }

    pub(super) fn put_symlink(
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
        let io_err = |e| EngineError::io(path, e);
        parent
            .symlink(OsStr::from_bytes(target), &name)
            .map_err(io_err)?;
        self.chown_nofollow(parent, &name, meta).map_err(io_err)?;
        parent
            .set_mtime(&name, meta.mtime, meta.nsec)
            .map_err(io_err)
    }

    pub(super) fn put_hard_link(
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
            .map_err(|e| EngineError::io(self.path_of(&target), e))?;
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
            .map_err(|e| EngineError::io(path, e))
    }

    pub(super) fn chown_nofollow(
        &self,
        parent: &Dir,
        name: &OsStr,
        meta: &EntryMeta,
    ) -> io::Result<()> {
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
        match parent
            .stat_if_any(&name)
            .map_err(|e| EngineError::io(&path, e))?
        {
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
        file.set_len(size).map_err(|e| EngineError::io(&path, e))?;
        dir.set_mtime(&leaf(&last), meta.mtime, meta.nsec)
            .map_err(|e| EngineError::io(&path, e))?;
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
                Err(e) => return Err(EngineError::io(path, e)),
            };
            let io_err = |e| EngineError::io(&path, e);
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
pub(super) fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
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

pub(super) struct SinkTarget<'s> {
    pub(super) sink: &'s mut dyn FnMut(&str, u64, &mut dyn Read) -> Result<()>,
    pub(super) delete: &'s mut dyn FnMut(&str) -> Result<()>,
}

/// Whether a key names a path that is not UTF-8, which object keys cannot hold.
pub(super) fn is_escaped(rel: &str) -> bool {
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
                    return Err(EngineError::Archive {
                        entry: rel.to_string(),
                        detail: format!(
                            "restore target consumed {} of {size} bytes",
                            counted.count
                        ),
                    });
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

pub(super) struct Counted<R> {
    pub(super) inner: R,
    pub(super) count: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}
