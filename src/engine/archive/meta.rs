//! Entry metadata both directions share: modes, owners, times to the nanosecond (PAX).

use super::*;

#[derive(Clone, Copy, Debug)]
pub(super) struct EntryMeta {
    pub(super) mode: u32,
    pub(super) mtime: i64,
    pub(super) nsec: u32,
    pub(super) uid: u64,
    pub(super) gid: u64,
}

impl EntryMeta {
    pub(super) fn of(meta: &Metadata) -> Self {
        EntryMeta {
            mode: meta.mode() & 0o7777,
            mtime: meta.mtime(),
            nsec: u32::try_from(meta.mtime_nsec()).unwrap_or(0),
            uid: meta.uid().into(),
            gid: meta.gid().into(),
        }
    }

    pub(super) fn read<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Self> {
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
pub(super) fn format_pax_time(sec: i64, nsec: u32) -> String {
    if sec < 0 && nsec > 0 {
        format!("-{}.{:09}", -(sec + 1), 1_000_000_000 - nsec)
    } else {
        format!("{sec}.{nsec:09}")
    }
}

pub(super) fn parse_pax_time(text: &str) -> Option<(i64, u32)> {
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
