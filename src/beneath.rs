//! Directories held open. Everything in one is reached through its handle, one name at a time
//! (`openat(2)` and friends), never through a path from a root: neither PATH_MAX nor a parent
//! renamed or swapped for a symlink while Mimeo works changes what is read or where something
//! is written. No call here follows a symlink at the name it is given, so a chain of
//! [`Dir::open_dir`] calls from a root stays beneath it. The backup walk, the restore extractor
//! and the filesystem media backend all work through this.

use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};

/// An open directory.
#[derive(Debug)]
pub struct Dir(File);

/// Timestamps that set the modification time and leave the access time as it is.
fn mtime_only(sec: i64, nsec: u32) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: sec,
            tv_nsec: nsec.min(999_999_999).into(),
        },
    }
}

impl Dir {
    /// A directory named by a path, as the root of a chain. A root that is itself a symlink is
    /// followed: whoever named it meant where it leads.
    pub fn open(path: &Path) -> io::Result<Self> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rustix::fs::open(path, flags, Mode::empty())?;
        Ok(Dir(File::from(fd)))
    }

    /// The directory at `path` itself: `ELOOP` or `ENOTDIR` when a symlink or a file is there
    /// (symlinks in the components before it are followed).
    pub fn open_exact(path: &Path) -> io::Result<Self> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::open(path, flags, Mode::empty())?;
        Ok(Dir(File::from(fd)))
    }

    /// The subdirectory `name`, never through a symlink (`ELOOP` or `ENOTDIR` when it is one).
    pub fn open_dir(&self, name: &OsStr) -> io::Result<Self> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW;
        self.open_at(name, flags, Mode::empty()).map(Dir)
    }

    /// The subdirectory `name` if it is still the directory `id` (`(dev, ino)`) seen earlier;
    /// `None` when it is gone or was replaced (by a symlink, a file or another directory).
    pub fn open_same_dir(&self, name: &OsStr, id: (u64, u64)) -> io::Result<Option<Self>> {
        match self.open_dir(name) {
            Ok(dir) => {
                let meta = dir.metadata()?;
                Ok(((meta.dev(), meta.ino()) == id).then_some(dir))
            }
            Err(e) if is_gone(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Makes the subdirectory `name` with `mode` (less the umask); `AlreadyExists` if anything
    /// is there.
    pub fn create_dir(&self, name: &OsStr, mode: u32) -> io::Result<()> {
        Ok(rustix::fs::mkdirat(
            &self.0,
            single(name)?,
            Mode::from_bits_truncate(mode),
        )?)
    }

    /// The subdirectory `name`, made (owner only) when it is missing.
    pub fn open_or_create_dir(&self, name: &OsStr) -> io::Result<Self> {
        match self.create_dir(name, 0o700) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
            _ => self.open_dir(name),
        }
    }

    /// A regular file, for reading. `O_NONBLOCK`: one swapped for a FIFO does not hang the
    /// reader (no effect on regular files).
    pub fn open_file(&self, name: &OsStr) -> io::Result<File> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK;
        self.open_at(name, flags, Mode::empty())
    }

    /// A new file `name`, for writing; `AlreadyExists` if anything is there (`O_EXCL` never
    /// follows a symlink).
    pub fn create_file(&self, name: &OsStr, mode: u32) -> io::Result<File> {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
        self.open_at(name, flags, Mode::from_bits_truncate(mode))
    }

    /// The metadata of the entry itself (a symlink's own), through an `O_PATH` handle, which
    /// opens nothing (no FIFO blocks, no device wakes up).
    pub fn stat(&self, name: &OsStr) -> io::Result<Metadata> {
        let flags = OFlags::PATH | OFlags::NOFOLLOW;
        self.open_at(name, flags, Mode::empty())?.metadata()
    }

    /// The metadata of the entry `name`, `None` when there is none.
    pub fn stat_if_any(&self, name: &OsStr) -> io::Result<Option<Metadata>> {
        match self.stat(name) {
            Ok(meta) => Ok(Some(meta)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// This directory's own metadata.
    pub fn metadata(&self) -> io::Result<Metadata> {
        self.0.metadata()
    }

    /// The target of the symlink `name`, as bytes.
    pub fn read_link(&self, name: &OsStr) -> io::Result<Vec<u8>> {
        Ok(rustix::fs::readlinkat(&self.0, single(name)?, Vec::new())?.into_bytes())
    }

    /// The names in this directory (without `.` and `..`), sorted by bytes.
    pub fn names(&self) -> io::Result<Vec<OsString>> {
        let mut names = Vec::new();
        for entry in rustix::fs::Dir::read_from(&self.0)? {
            let name = entry?.file_name().to_bytes().to_vec();
            if name != b"." && name != b".." {
                names.push(OsString::from_vec(name));
            }
        }
        names.sort();
        Ok(names)
    }

    /// Removes the file (or symlink) `name`.
    pub fn remove_file(&self, name: &OsStr) -> io::Result<()> {
        Ok(rustix::fs::unlinkat(
            &self.0,
            single(name)?,
            AtFlags::empty(),
        )?)
    }

    /// Removes the empty subdirectory `name`.
    pub fn remove_dir(&self, name: &OsStr) -> io::Result<()> {
        Ok(rustix::fs::unlinkat(
            &self.0,
            single(name)?,
            AtFlags::REMOVEDIR,
        )?)
    }

    /// Removes the entry `name`, and everything in it when it is a directory. Directories
    /// made read-only (by a restore, say) are emptied too: their owner may lift the mode.
    pub fn remove_all(&self, name: &OsStr) -> io::Result<()> {
        let meta = self.stat(name)?;
        if !meta.is_dir() {
            return self.remove_file(name);
        }
        let dir = self.open_dir(name)?;
        if meta.mode() & 0o700 != 0o700 {
            dir.set_mode((meta.mode() | 0o700) & 0o7777)?;
        }
        for child in dir.names()? {
            dir.remove_all(&child)?;
        }
        self.remove_dir(name)
    }

    /// Moves the entry `from` of this directory to `to` in `to_dir`, never replacing what is
    /// there (`AlreadyExists`). On a filesystem without `RENAME_NOREPLACE` (NFS), the name is
    /// checked to be free just before a plain rename.
    pub fn rename(&self, from: &OsStr, to_dir: &Dir, to: &OsStr) -> io::Result<()> {
        let (from, to) = (single(from)?, single(to)?);
        let flags = rustix::fs::RenameFlags::NOREPLACE;
        match rustix::fs::renameat_with(&self.0, from, &to_dir.0, to, flags) {
            Err(rustix::io::Errno::INVAL) => {
                if to_dir.stat_if_any(to)?.is_some() {
                    return Err(io::ErrorKind::AlreadyExists.into());
                }
                Ok(rustix::fs::renameat(&self.0, from, &to_dir.0, to)?)
            }
            renamed => Ok(renamed?),
        }
    }

    /// Gives the file `from` of this directory the further name `to` in `to_dir`, failing with
    /// `AlreadyExists` rather than replacing anything. A symlink `from` is linked itself, never
    /// followed.
    pub fn hard_link(&self, from: &OsStr, to_dir: &Dir, to: &OsStr) -> io::Result<()> {
        Ok(rustix::fs::linkat(
            &self.0,
            single(from)?,
            &to_dir.0,
            single(to)?,
            AtFlags::empty(),
        )?)
    }

    /// Makes the symlink `name` pointing at `target`.
    pub fn symlink(&self, target: &OsStr, name: &OsStr) -> io::Result<()> {
        Ok(rustix::fs::symlinkat(target, &self.0, single(name)?)?)
    }

    /// Sets the modification time of the entry `name` itself (a symlink's own time, not its
    /// target's), leaving the access time alone.
    pub fn set_mtime(&self, name: &OsStr, sec: i64, nsec: u32) -> io::Result<()> {
        Ok(rustix::fs::utimensat(
            &self.0,
            single(name)?,
            &mtime_only(sec, nsec),
            AtFlags::SYMLINK_NOFOLLOW,
        )?)
    }

    /// Sets the owner of the entry `name` itself, never a symlink's target.
    pub fn lchown(&self, name: &OsStr, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        Ok(rustix::fs::chownat(
            &self.0,
            single(name)?,
            uid.map(rustix::fs::Uid::from_raw),
            gid.map(rustix::fs::Gid::from_raw),
            AtFlags::SYMLINK_NOFOLLOW,
        )?)
    }

    /// Sets this directory's own modification time, leaving the access time alone.
    pub fn set_own_mtime(&self, sec: i64, nsec: u32) -> io::Result<()> {
        Ok(rustix::fs::futimens(&self.0, &mtime_only(sec, nsec))?)
    }

    /// Sets this directory's own mode.
    pub fn set_mode(&self, mode: u32) -> io::Result<()> {
        Ok(rustix::fs::fchmod(&self.0, Mode::from_bits_truncate(mode))?)
    }

    /// Flushes this directory's entries (a new name linked in) to stable storage.
    pub fn sync(&self) -> io::Result<()> {
        self.0.sync_all()
    }

    pub fn try_clone(&self) -> io::Result<Self> {
        self.0.try_clone().map(Dir)
    }

    fn open_at(&self, name: &OsStr, flags: OFlags, mode: Mode) -> io::Result<File> {
        let fd = rustix::fs::openat(&self.0, single(name)?, flags | OFlags::CLOEXEC, mode)?;
        Ok(File::from(fd))
    }
}

/// Whether an error means an entry is no longer what was seen: gone, or replaced by a symlink
/// (`O_NOFOLLOW`) or by something that is not a directory.
pub fn is_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
        || matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR))
}

/// `name` if it is one name, never a path: a `/` would walk past the checks of the
/// directories in between, and `..` would leave the chain. Every call here that takes a name
/// goes through this.
fn single(name: &OsStr) -> io::Result<&OsStr> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.contains(&b'/') || bytes == b".." {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a single name", name.to_string_lossy()),
        ));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn nothing_is_reached_through_a_symlink_or_a_path() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.path().join("file"))
            .unwrap();
        let dir = Dir::open(root.path()).unwrap();
        assert!(is_gone(&dir.open_dir(OsStr::new("link")).unwrap_err()));
        assert!(dir.open_file(OsStr::new("file")).is_err());
        let e = dir.create_file(OsStr::new("file"), 0o600).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        for bad in ["..", "link/secret", ""] {
            let e = dir.open_file(OsStr::new(bad)).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad}");
            let e = dir.remove_file(OsStr::new(bad)).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad}");
        }
        let is_symlink = |name: &str| dir.stat(OsStr::new(name)).unwrap().file_type().is_symlink();
        assert!(is_symlink("link"));
        assert_eq!(
            dir.read_link(OsStr::new("link")).unwrap(),
            outside.path().as_os_str().as_bytes()
        );
        // A hard link of a symlink links the symlink, not its target.
        dir.hard_link(OsStr::new("file"), &dir, OsStr::new("file2"))
            .unwrap();
        assert!(is_symlink("file2"));
        assert_eq!(
            dir.names().unwrap(),
            ["file", "file2", "link"].map(OsString::from)
        );
        assert_eq!(std::fs::read(outside.path().join("secret")).unwrap(), b"s");
    }

    #[test]
    fn a_chain_of_handles_goes_deeper_than_path_max() {
        let root = tempfile::tempdir().unwrap();
        let name = OsStr::new(std::str::from_utf8(&[b'd'; 200]).unwrap());
        let mut dir = Dir::open(root.path()).unwrap();
        for _ in 0..30 {
            dir = dir.open_or_create_dir(name).unwrap();
        }
        let mut f = dir.create_file(OsStr::new("deep"), 0o600).unwrap();
        f.write_all(b"deep").unwrap();
        let mut back = String::new();
        dir.open_file(OsStr::new("deep"))
            .unwrap()
            .read_to_string(&mut back)
            .unwrap();
        assert_eq!(back, "deep");
    }
}
