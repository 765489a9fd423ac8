//! Reading a stream: normalised names, refusals, the byte budget, truncation markers and
//! deletions, driven into a [`Destination`].

use super::*;

pub(super) fn read_err(e: io::Error) -> EngineError {
    EngineError::Archive {
        entry: "archive stream".into(),
        detail: format!("reading: {e}"),
    }
}

pub(super) fn refusal(entry: &str, reason: impl Into<String>) -> EngineError {
    EngineError::Refused {
        entry: entry.to_owned(),
        reason: reason.into(),
    }
}

/// Turns an archive path into the key of a canonical relative path (`a/b`, see [`path_key`]) or
/// says why it cannot be used; `Ok(None)` is the root itself (`.` or `./`).
pub(super) fn normalize(raw: &[u8]) -> std::result::Result<Option<String>, &'static str> {
    if raw.starts_with(b"/") {
        return Err("absolute path");
    }
    if raw.contains(&0) {
        return Err("name contains a NUL byte");
    }
    let mut parts = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("path has a `..` component"),
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
pub(super) fn key_path(key: &str) -> Vec<u8> {
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
pub(super) fn shown(key: &str) -> String {
    String::from_utf8_lossy(&key_path(key)).into_owned()
}

/// Where extracted entries go: a directory, or a sink of regular files.
pub(super) trait Destination {
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
pub(super) fn drive<R: Read, D: Destination>(
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
            (Ok(None), Ok(EntryKind::Dir)) => {
                let meta = EntryMeta::read(&mut entry)?;
                report.root = Some(RootMeta {
                    mode: meta.mode,
                    mtime: meta.mtime,
                    nsec: meta.nsec,
                });
                Ok(())
            }
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
pub(super) struct Budget {
    pub(super) max: Option<u64>,
    pub(super) used: u64,
}

impl Budget {
    pub(super) fn new(max: Option<u64>) -> Self {
        Budget { max, used: 0 }
    }

    /// Counts a regular file's (real) size, or refuses it when it does not fit.
    pub(super) fn take(&mut self, rel: &str, kind: EntryKind, size: u64) -> Result<()> {
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
pub(super) fn refuse_or_fail(
    outcome: Result<()>,
    report: &mut ExtractReport,
    refused: &mut HashSet<String>,
) -> Result<()> {
    match outcome {
        Err(EngineError::Refused { entry, reason }) => {
            report.refused.push(format!("{}: {reason}", shown(&entry)));
            refused.insert(entry);
            Ok(())
        }
        other => other,
    }
}

/// The path and real size of a truncation marker (see `append_truncation`); `None` for any
/// other global header.
pub(super) fn truncation<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Option<(String, u64)>> {
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
            return Err(EngineError::Archive {
                entry: "truncation marker".into(),
                detail: "no path or no size".into(),
            });
        }
    };
    let shown = String::from_utf8_lossy(&path).into_owned();
    let rel = normalize(&path)
        .map_err(|reason| refusal(&shown, reason))
        .and_then(|rel| rel.ok_or_else(|| refusal(&shown, "truncation marker for the root")));
    let size = std::str::from_utf8(&size)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| EngineError::Archive {
            entry: format!("truncation marker for {shown}"),
            detail: "bad size".into(),
        })?;
    Ok(Some((rel?, size)))
}

/// Cuts the file the previous entry wrote back to the size the backup actually read.
pub(super) fn apply_truncation<D: Destination>(
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

pub(super) fn apply_deletions<R: Read, D: Destination>(
    entry: &mut tar::Entry<'_, R>,
    dest: &mut D,
    report: &mut ExtractReport,
) -> Result<()> {
    let mut list = Vec::new();
    entry.read_to_end(&mut list).map_err(read_err)?;
    let paths: Vec<String> = serde_json::from_slice(&list).map_err(|e| EngineError::Decode {
        what: DELETED_ENTRY.into(),
        detail: format!("not a JSON list of paths: {e}"),
    })?;
    for path in paths {
        let outcome = match normalize(&key_path(&path)) {
            Ok(Some(rel)) => dest.delete(&rel),
            Ok(None) => Err(refusal(&path, "not a path inside the restored tree")),
            Err(reason) => Err(refusal(&path, reason)),
        };
        match outcome {
            Ok(removed) => report.deleted += u64::from(removed),
            Err(EngineError::Refused { entry, reason }) => {
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
