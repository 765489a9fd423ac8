//! Trails of volumes: a writer that turns instance streams into blocks, fills volumes up to
//! their capacity, seals them and goes on to the next; a scanner that derives a trail's volumes
//! from the media alone; and a reader that streams one instance back, checking every block.
//!
//! Object keys under a media class root:
//! `TRAIL/VOLUME/label.json`, `TRAIL/VOLUME/NNNNN.seg`, `TRAIL/VOLUME/sealed`,
//! `TRAIL/manifests/SESSION.json`, `TRAIL/indexes/INSTANCE.json`.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::crypt::{BlockKey, OVERHEAD, OpenError};
use super::digest::StreamHasher;
use super::format::*;
use super::manifest::{Extent, ManifestEntry};
use super::store::ObjectStore;
use crate::base::failure::Stopped;
use crate::base::hash::name_hash;
use crate::media::error::{MediaError, Result};

/// A resolved media class: its store and geometry.
#[derive(Clone, Debug)]
pub struct Media {
    /// MediaClass name.
    pub name: String,
    /// Where its objects live.
    pub store: Arc<dyn ObjectStore>,
    /// Block size in bytes, header included.
    pub block_size: u64,
    /// Volume capacity in bytes.
    pub capacity: u64,
    /// The class's encryption key: data blocks are sealed with it, and a class with a key
    /// reads no plaintext data block.
    pub key: Option<Arc<BlockKey>>,
}

/// Key of a segment object.
pub fn segment_key(trail: &str, volume: &str, segment: u32) -> String {
    format!("{trail}/{volume}/{segment:05}.seg")
}

fn label_key(trail: &str, volume: &str) -> String {
    format!("{trail}/{volume}/label.json")
}

fn sealed_key(trail: &str, volume: &str) -> String {
    format!("{trail}/{volume}/sealed")
}

/// A volume as found on the media.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VolumeInfo {
    /// Volume name.
    pub name: String,
    /// `(segment number, size)` of each segment object.
    pub segments: Vec<(u32, u64)>,
    /// Sealed (full).
    pub sealed: bool,
}

impl VolumeInfo {
    /// Bytes of all segments.
    pub fn bytes_used(&self) -> u64 {
        self.segments.iter().map(|s| s.1).sum()
    }

    /// Filling, Full or Scratch.
    pub fn fill(&self) -> VolumeFill {
        if self.sealed {
            VolumeFill::Full
        } else if self.segments.is_empty() {
            VolumeFill::Scratch
        } else {
            VolumeFill::Filling
        }
    }
}

/// How far a volume is written, as the media show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VolumeFill {
    /// Open for writing.
    Filling,
    /// Sealed: reached its capacity.
    Full,
    /// Holds no segment: never written, or freed by expiry.
    Scratch,
}

/// Lists a trail's volumes from the media, sorted by name. The media are the truth: no state
/// outside them is needed to continue writing a trail after a crash.
pub async fn scan_trail(store: &dyn ObjectStore, trail: &str) -> Result<Vec<VolumeInfo>> {
    let mut vols: BTreeMap<String, VolumeInfo> = BTreeMap::new();
    for obj in store.list(&format!("{trail}/")).await? {
        let rest = &obj.key[trail.len() + 1..];
        let Some((volume, file)) = rest.split_once('/') else {
            continue;
        };
        if volume == "manifests" || volume == "indexes" {
            continue;
        }
        let v = vols
            .entry(volume.to_string())
            .or_insert_with(|| VolumeInfo {
                name: volume.to_string(),
                ..Default::default()
            });
        if file == "sealed" {
            v.sealed = true;
        } else if let Some(n) = file.strip_suffix(".seg").and_then(|n| n.parse().ok()) {
            v.segments.push((n, obj.size));
        }
    }
    Ok(vols.into_values().collect())
}

/// Key of the file index an incremental backup compares against.
pub fn index_key(trail: &str, instance_id: &str) -> String {
    format!("{trail}/indexes/{instance_id}.json")
}

/// Frees a volume whose entries have all expired: its segments and seal are removed, the label
/// stays, and the volume becomes Scratch (reusable).
pub async fn scratch_volume(
    store: &dyn ObjectStore,
    trail: &str,
    volume: &VolumeInfo,
) -> Result<()> {
    for (seg, _) in &volume.segments {
        store
            .delete(&segment_key(trail, &volume.name, *seg))
            .await?;
    }
    store.delete(&sealed_key(trail, &volume.name)).await
}

/// One instance written by a [`TrailWriter`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenInstance {
    /// Instance id.
    pub instance_id: String,
    /// Work item.
    pub work_item: String,
    /// Length of the logical stream.
    pub bytes: u64,
    /// Digest of the logical stream, `<algorithm>:<hex>` ([`StreamHasher`]).
    pub digest: String,
    /// Where its blocks are.
    pub extents: Vec<Extent>,
    /// For a copy begun with [`TrailWriter::begin_copy`]: CRC32C of the stream as written, for
    /// the caller to compare with what it sent.
    pub stream_crc32c: Option<u32>,
}

/// How an open instance's digest is obtained.
enum StreamDigest {
    /// Hashed while written (a new instance).
    Hashing(StreamHasher),
    /// A copy of a stream whose reader verified this digest: not hashed a second time, only a
    /// CRC32C is kept so the caller can check that what arrived is what it sent.
    Known { digest: String, crc: u32 },
}

struct OpenInstance {
    id: String,
    work_item: String,
    hash: u64,
    offset: u64,
    pending: Vec<u8>,
    digest: StreamDigest,
    extents: Vec<Extent>,
}

struct OpenSegment {
    volume: String,
    volume_id: u64,
    segment: u32,
    writer: Box<dyn super::store::ObjectWriter>,
    offset: u64,
    block_index: u64,
    /// Bytes the volume held before this segment.
    base: u64,
    index: BTreeMap<String, super::format::IndexedInstance>,
}

/// A segment whose blocks, index and trailer are written, to be made durable and visible.
struct Sealing {
    writer: Box<dyn super::store::ObjectWriter>,
    /// The bytes written, as recorded on the volume.
    size: u64,
    key: String,
    store: String,
}

impl Sealing {
    /// Finishes the object, which must hold the bytes recorded for it.
    async fn finish(self) -> Result<()> {
        let got = self.writer.finish().await?;
        if got != self.size {
            return Err(MediaError::Store {
                store: self.store,
                key: self.key,
                message: format!("{got} bytes stored, {} written", self.size),
                transient: false,
            });
        }
        Ok(())
    }
}

/// Writes instance streams as blocks onto a trail's volumes. Several instances may be open at
/// once: their blocks interleave in the order data arrives.
pub struct TrailWriter {
    media: Media,
    trail: String,
    session: String,
    volumes: Vec<VolumeInfo>,
    open: Option<OpenSegment>,
    /// The full segment whose object is being made durable while the next one is written:
    /// completing a multipart upload can take the server seconds (s3s-fs copies every part),
    /// and the writer had waited for it. One at a time, so memory stays bounded.
    sealing: Option<tokio::task::JoinHandle<Result<()>>>,
    instances: BTreeMap<usize, OpenInstance>,
    next_slot: usize,
}

impl TrailWriter {
    /// Opens a trail for writing; the current volumes are read from the media.
    ///
    /// A trail has one writer at a time (one worker Job per trail, or the local state lock), so
    /// whatever was half-written when this session started (temporary files, multipart
    /// uploads of a killed writer) can never complete and is removed first. A server that
    /// cannot list uploads only gets a warning: a bucket lifecycle rule cleans those up.
    pub async fn open(media: Media, trail: &str, session: &str) -> Result<TrailWriter> {
        let prefix = format!("{trail}/");
        match media
            .store
            .purge_incomplete(&prefix, chrono::Utc::now())
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                trail,
                removed = n,
                "interrupted writes of an earlier session removed"
            ),
            Err(e) => tracing::warn!(trail, error = %e, "interrupted writes not purged"),
        }
        let volumes = scan_trail(media.store.as_ref(), trail).await?;
        Ok(TrailWriter {
            media,
            trail: trail.into(),
            session: session.into(),
            volumes,
            open: None,
            sealing: None,
            instances: BTreeMap::new(),
            next_slot: 0,
        })
    }

    fn payload_max(&self) -> usize {
        let overhead = if self.media.key.is_some() {
            OVERHEAD
        } else {
            0
        };
        self.media.block_size as usize - HEADER_LEN - overhead
    }

    /// Starts an instance stream; returns the slot to write it with.
    pub fn begin(&mut self, instance_id: &str, work_item: &str) -> usize {
        self.begin_with(
            instance_id,
            work_item,
            StreamDigest::Hashing(StreamHasher::new_stream()),
        )
    }

    /// Starts the copy of an instance stream whose `digest` its reader verifies: the stream is
    /// not hashed again (hashing was half the CPU time of a logical copy); the written
    /// instance reports a CRC32C of its stream instead, and `digest` as its digest.
    pub fn begin_copy(&mut self, instance_id: &str, work_item: &str, digest: &str) -> usize {
        let known = StreamDigest::Known {
            digest: digest.into(),
            crc: 0,
        };
        self.begin_with(instance_id, work_item, known)
    }

    fn begin_with(&mut self, instance_id: &str, work_item: &str, digest: StreamDigest) -> usize {
        let slot = self.next_slot;
        self.next_slot += 1;
        self.instances.insert(
            slot,
            OpenInstance {
                id: instance_id.into(),
                work_item: work_item.into(),
                hash: name_hash(instance_id),
                offset: 0,
                pending: Vec::with_capacity(self.payload_max()),
                digest,
                extents: Vec::new(),
            },
        );
        slot
    }

    /// Appends stream bytes to an instance; full blocks are written as they fill. A whole
    /// block's worth of `data` with nothing pending is framed straight from `data`, without
    /// passing through the pending buffer (one copy of each byte less).
    pub async fn write(&mut self, slot: usize, mut data: &[u8]) -> Result<()> {
        let max = self.payload_max();
        while !data.is_empty() {
            let inst = self.instances.get_mut(&slot).expect("begin() first");
            if inst.pending.is_empty() && data.len() >= max {
                let (block, rest) = data.split_at(max);
                self.write_block(slot, block, 0).await?;
                data = rest;
                continue;
            }
            let take = (max - inst.pending.len()).min(data.len());
            inst.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if inst.pending.len() == max {
                self.flush_block(slot, 0).await?;
            }
        }
        Ok(())
    }

    /// Ends an instance stream: writes its last block and returns where it went.
    pub async fn end(&mut self, slot: usize) -> Result<WrittenInstance> {
        self.flush_block(slot, FLAG_END).await?;
        let inst = self.instances.remove(&slot).expect("begin() first");
        let (digest, stream_crc32c) = match inst.digest {
            StreamDigest::Hashing(h) => (h.finish(), None),
            StreamDigest::Known { digest, crc } => (digest, Some(crc)),
        };
        Ok(WrittenInstance {
            instance_id: inst.id,
            work_item: inst.work_item,
            bytes: inst.offset,
            digest,
            extents: inst.extents,
            stream_crc32c,
        })
    }

    /// Writes the instance's pending bytes as one block.
    async fn flush_block(&mut self, slot: usize, flags: u16) -> Result<()> {
        let inst = self.instances.get_mut(&slot).expect("begin() first");
        let pending = std::mem::take(&mut inst.pending);
        self.write_block(slot, &pending, flags).await?;
        let inst = self.instances.get_mut(&slot).expect("begin() first");
        inst.pending = pending;
        inst.pending.clear();
        Ok(())
    }

    /// Writes `payload`, the instance's next stream bytes, as one block.
    async fn write_block(&mut self, slot: usize, payload: &[u8], flags: u16) -> Result<()> {
        let block_len =
            (self.media.block_size as usize - self.payload_max()) as u64 + payload.len() as u64;
        let needs_new = match &self.open {
            None => true,
            Some(s) => s.base + s.offset + block_len > self.media.capacity,
        };
        if needs_new {
            if let Some(seg) = self.open.take() {
                // The volume is full: its segment is made durable, and the volume marked
                // sealed, in the background while the next segment is written.
                let volume = seg.volume.clone();
                let sealing = self.end_segment(seg).await?;
                if let Some(v) = self.volumes.iter_mut().find(|v| v.name == volume) {
                    v.sealed = true;
                }
                self.wait_sealed().await?;
                let store = self.media.store.clone();
                let marker = sealed_key(&self.trail, &volume);
                self.sealing = Some(tokio::spawn(async move {
                    sealing.finish().await?;
                    store.put(&marker, Bytes::new()).await
                }));
            }
            self.open = Some(self.open_segment(block_len).await?);
        }
        let seg = self.open.as_mut().expect("opened above");
        let inst = self.instances.get_mut(&slot).expect("begin() first");
        let mut header = BlockHeader {
            kind: BlockKind::Data,
            flags,
            volume_id: seg.volume_id,
            segment: seg.segment,
            payload_len: payload.len() as u32,
            block_index: seg.block_index,
            instance: inst.hash,
            stream_offset: inst.offset,
        };
        let block = match (&self.media.key, &mut inst.digest) {
            // The block's CRC is over the plaintext: its payload CRC extends the stream's.
            (None, StreamDigest::Known { crc, .. }) => {
                let (block, payload_crc) = header.encode_crc(payload);
                *crc = crc32c::crc32c_combine(*crc, payload_crc, payload.len());
                block
            }
            (None, StreamDigest::Hashing(h)) => {
                h.update(payload);
                header.encode(payload)
            }
            (Some(key), digest) => {
                match digest {
                    StreamDigest::Hashing(h) => h.update(payload),
                    StreamDigest::Known { crc, .. } => *crc = crc32c::crc32c_append(*crc, payload),
                }
                header.flags |= FLAG_ENCRYPTED;
                header.payload_len += OVERHEAD as u32;
                let context = header.control_data();
                header.encode_with(|b| key.seal_into(&context, payload, b))
            }
        };
        inst.offset += payload.len() as u64;
        let offset = seg.offset;
        let len = block.len() as u64;
        match inst.extents.last_mut() {
            Some(e)
                if e.volume == seg.volume
                    && e.segment == seg.segment
                    && e.offset + e.length == offset =>
            {
                e.length += len
            }
            _ => inst.extents.push(Extent {
                volume: seg.volume.clone(),
                segment: seg.segment,
                offset,
                length: len,
            }),
        }
        let idx = seg
            .index
            .entry(inst.id.clone())
            .or_insert_with(|| IndexedInstance {
                instance_id: inst.id.clone(),
                work_item: inst.work_item.clone(),
                runs: Vec::new(),
            });
        match idx.runs.last_mut() {
            Some(r) if r.0 + r.1 == offset => r.1 += len,
            _ => idx.runs.push((offset, len)),
        }
        seg.writer.write(Bytes::from(block)).await?;
        seg.offset += len;
        seg.block_index += 1;
        Ok(())
    }

    /// Opens a new segment on the first volume with room for a label and `first_block` bytes,
    /// or on a new volume.
    async fn open_segment(&mut self, first_block: u64) -> Result<OpenSegment> {
        let label_room = 4096 + first_block;
        let cap = self.media.capacity;
        let pos = self
            .volumes
            .iter()
            .position(|v| !v.sealed && v.bytes_used() + label_room <= cap);
        let pos = match pos {
            Some(p) => p,
            None => {
                let n = self
                    .volumes
                    .iter()
                    .filter_map(|v| v.name.rsplit('-').next()?.parse::<u32>().ok())
                    .max()
                    .map_or(1, |n| n + 1);
                let name = format!("{}-{n:05}", self.trail);
                let label = self.label(&name, 0);
                self.media
                    .store
                    .put(
                        &label_key(&self.trail, &name),
                        Bytes::from(serde_json::to_vec_pretty(&label).expect("label serializes")),
                    )
                    .await?;
                self.volumes.push(VolumeInfo {
                    name,
                    ..Default::default()
                });
                self.volumes.len() - 1
            }
        };
        let vol = &self.volumes[pos];
        let segment = vol.segments.iter().map(|s| s.0 + 1).max().unwrap_or(0);
        let volume = vol.name.clone();
        let base = vol.bytes_used();
        let key = segment_key(&self.trail, &volume, segment);
        let mut writer = self.media.store.create(&key).await?;
        let label = serde_json::to_vec(&self.label(&volume, segment)).expect("label serializes");
        let volume_id = name_hash(&volume);
        let block = BlockHeader {
            kind: BlockKind::Label,
            flags: 0,
            volume_id,
            segment,
            payload_len: label.len() as u32,
            block_index: 0,
            instance: 0,
            stream_offset: 0,
        }
        .encode(&label);
        let offset = block.len() as u64;
        writer.write(Bytes::from(block)).await?;
        Ok(OpenSegment {
            volume,
            volume_id,
            segment,
            writer,
            offset,
            block_index: 1,
            base,
            index: BTreeMap::new(),
        })
    }

    fn label(&self, volume: &str, segment: u32) -> SegmentLabel {
        SegmentLabel {
            format_version: FORMAT_VERSION,
            volume: volume.into(),
            trail: self.trail.clone(),
            media_class: self.media.name.clone(),
            created_at: Utc::now(),
            block_size: self.media.block_size,
            segment,
            session: self.session.clone(),
            key_id: self.media.key.as_ref().map(|k| k.id()),
        }
    }

    /// Waits for the segment being made durable in the background, if one is.
    async fn wait_sealed(&mut self) -> Result<()> {
        match self.sealing.take() {
            Some(task) => task
                .await
                .map_err(|e| Stopped::new("sealing a segment", e))?,
            None => Ok(()),
        }
    }

    /// Writes the index block and trailer, and records the segment's size on its volume;
    /// returns what makes it durable and visible.
    async fn end_segment(&mut self, mut seg: OpenSegment) -> Result<Sealing> {
        let index = SegmentIndex {
            instances: seg.index.into_values().collect(),
        };
        let payload = serde_json::to_vec(&index).expect("index serializes");
        let block = BlockHeader {
            kind: BlockKind::Index,
            flags: 0,
            volume_id: seg.volume_id,
            segment: seg.segment,
            payload_len: payload.len() as u32,
            block_index: seg.block_index,
            instance: 0,
            stream_offset: 0,
        }
        .encode(&payload);
        let index_offset = seg.offset;
        let size = index_offset + block.len() as u64 + TRAILER_LEN as u64;
        seg.writer.write(Bytes::from(block)).await?;
        seg.writer
            .write(Bytes::copy_from_slice(&encode_trailer(index_offset)))
            .await?;
        if let Some(v) = self.volumes.iter_mut().find(|v| v.name == seg.volume) {
            v.segments.push((seg.segment, size));
        }
        Ok(Sealing {
            writer: seg.writer,
            size,
            key: segment_key(&self.trail, &seg.volume, seg.segment),
            store: self.media.name.clone(),
        })
    }

    /// Seals the open segment. Call after every instance ended; only then is the data durable.
    pub async fn close(mut self) -> Result<Vec<VolumeInfo>> {
        if let Some(seg) = self.open.take() {
            self.end_segment(seg).await?.finish().await?;
        }
        self.wait_sealed().await?;
        Ok(self.volumes)
    }

    /// Abandons the session: the open segment is aborted and nothing of it becomes visible.
    /// A full segment being sealed is let finish, as it would have before the session failed.
    pub async fn abort(mut self) {
        let _ = self.wait_sealed().await;
        if let Some(seg) = self.open.take() {
            let _ = seg.writer.abort().await;
        }
    }
}

/// Why a data block's payload cannot be returned.
enum Unreadable {
    /// The block is not what was written (forged, or plaintext where the class encrypts).
    Damaged(String),
    /// The block is intact but needs a key this media class does not have.
    Key(String),
}

/// The plaintext of a checked data block's payload (the payload itself, not a copy, when the
/// class does not encrypt).
fn plaintext(media: &Media, h: &BlockHeader, payload: Bytes) -> Result<Bytes, Unreadable> {
    let encrypted = h.flags & FLAG_ENCRYPTED != 0;
    match (&media.key, encrypted) {
        (None, false) => Ok(payload),
        (Some(_), false) => Err(Unreadable::Damaged(
            "data block is not encrypted, but its media class encrypts".into(),
        )),
        (None, true) => Err(Unreadable::Key(format!(
            "block is encrypted with key {}, but the media class has no encryption key",
            super::crypt::sealed_key_id(&payload).unwrap_or_default()
        ))),
        (Some(key), true) => match key.open(&h.control_data(), &payload) {
            Ok(p) => Ok(Bytes::from(p)),
            Err(e @ OpenError::OtherKey { .. }) => Err(Unreadable::Key(e.to_string())),
            Err(e) => Err(Unreadable::Damaged(e.to_string())),
        },
    }
}

/// Bytes requested per ranged read: several of these are kept in flight (see [`READ_AHEAD`]),
/// which served a loopback S3 server better than fewer, larger requests.
const READ_CHUNK: u64 = 2 << 20;

/// Bytes of ranged reads kept in flight ahead of the consumer, across extents: an interleaved
/// instance is many small extents (often one block each), and reading them one request at a
/// time left a reader waiting on each round trip.
const READ_AHEAD: u64 = 16 << 20;

/// A block's payload as a reader hands it on, with its CRC32C where reading gave it for free:
/// a plain block's, checked with the block (an encrypted block's CRC is its ciphertext's).
#[derive(Debug)]
pub struct Payload {
    /// The plaintext.
    pub bytes: Bytes,
    /// Its CRC32C, if known.
    pub crc: Option<u32>,
}

/// For readers that want the bytes alone.
impl From<Payload> for Bytes {
    fn from(p: Payload) -> Bytes {
        p.bytes
    }
}

/// Streams the logical stream of one copy into `tx`, checking every block's CRC and control data
/// and, at the end, the length and digest. The first error is sent and ends the stream. Each
/// block's payload is sent as a [`Payload`] or just its bytes.
pub async fn read_instance<T: From<Payload>>(
    media: Media,
    entry: ManifestEntry,
    tx: mpsc::Sender<Result<T>>,
) {
    if let Err(e) = read_instance_inner(&media, &entry, &tx).await {
        let _ = tx.send(Err(e)).await;
    }
}

/// Whether any object of `volume` is on the media: a missing segment of a volume that is
/// there is damage; a volume that is not there at all is media that cannot be reached.
async fn volume_is_there(media: &Media, trail: &str, volume: &str) -> Result<bool> {
    let prefix = format!("{trail}/{volume}/");
    Ok(!media.store.list(&prefix).await?.is_empty())
}

async fn read_instance_inner<T: From<Payload>>(
    media: &Media,
    entry: &ManifestEntry,
    tx: &mpsc::Sender<Result<T>>,
) -> Result<()> {
    let instance = name_hash(&entry.instance_id);
    let item = format!("{} (instance {})", entry.work_item, entry.instance_id);
    let corrupt = |volume: &str, offset: u64, detail: String| MediaError::Corrupt {
        volume: volume.into(),
        offset,
        work_item: item.clone(),
        detail,
    };
    let mut expected = 0u64;
    let mut digest = StreamHasher::checking(&entry.digest).ok_or_else(|| {
        MediaError::Unsupported(format!(
            "{item}: its digest {:?} is of an algorithm this Mimeo does not know: upgrade Mimeo",
            entry.digest.split(':').next().unwrap_or_default()
        ))
    })?;
    // Every ranged read of every extent, in stream order: (extent index, start, end).
    let chunk = READ_CHUNK.max(media.block_size);
    let ranges: Vec<(usize, u64, u64)> = entry
        .extents
        .iter()
        .enumerate()
        .flat_map(|(x, ext)| {
            (0..ext.length.div_ceil(chunk)).map(move |i| {
                let start = ext.offset + i * chunk;
                (x, start, (start + chunk).min(ext.offset + ext.length))
            })
        })
        .collect();
    let mean = ranges.iter().map(|r| r.2 - r.1).sum::<u64>() / ranges.len().max(1) as u64;
    let ahead = (READ_AHEAD / mean.max(1)).clamp(2, 16) as usize;
    let keys: Vec<String> = entry
        .extents
        .iter()
        .map(|e| segment_key(&entry.trail, &e.volume, e.segment))
        .collect();
    let store = media.store.clone();
    let mut reads = futures::stream::iter(ranges)
        .map(|(x, a, b)| {
            let store = store.clone();
            let key = keys[x].clone();
            async move { (x, a, b, store.get_range(&key, a..b).await) }
        })
        .buffered(ahead);
    let mut carry: Vec<u8> = Vec::new();
    let mut carry_offset = 0;
    let mut current: Option<usize> = None;
    let ends_inside = |x: usize, at: u64| {
        corrupt(
            &entry.extents[x].volume,
            at,
            "extent ends inside a block".into(),
        )
    };
    while let Some((x, a, b, data)) = reads.next().await {
        let ext = &entry.extents[x];
        let data = match data {
            Err(MediaError::NotFound { .. }) => {
                let detail = format!("segment {} is missing ({})", ext.segment, keys[x]);
                return Err(
                    match volume_is_there(media, &entry.trail, &ext.volume).await? {
                        true => corrupt(&ext.volume, ext.offset, detail),
                        false => MediaError::Unreachable {
                            media_class: media.name.clone(),
                            volume: ext.volume.clone(),
                            work_item: item.clone(),
                            detail: format!(
                                "{detail}, and the volume has no object at all: media not mounted, emptied or replaced; the copy is not marked damaged"
                            ),
                        },
                    },
                );
            }
            other => other?,
        };
        if current != Some(x) {
            if let Some(prev) = current
                && !carry.is_empty()
            {
                return Err(ends_inside(prev, carry_offset));
            }
            current = Some(x);
            carry_offset = ext.offset;
        }
        if (data.len() as u64) < b - a {
            return Err(corrupt(
                &ext.volume,
                a + data.len() as u64,
                format!("segment {} is truncated", ext.segment),
            ));
        }
        // Blocks are parsed in place and their payloads handed on as slices of what was read;
        // only a block cut by the end of a read is copied, to be completed by the next.
        let buf = match carry.is_empty() {
            true => data,
            false => {
                carry.extend_from_slice(&data);
                Bytes::from(std::mem::take(&mut carry))
            }
        };
        let mut pos = 0usize;
        loop {
            let rest = &buf[pos..];
            match BlockHeader::decode_crc(rest) {
                Ok((h, n, stored_crc)) => {
                    let at = carry_offset + pos as u64;
                    let problem = if h.kind != BlockKind::Data {
                        Some(format!("expected a data block, found {:?}", h.kind))
                    } else if h.volume_id != name_hash(&ext.volume) {
                        Some("block belongs to another volume (wrong volume label)".into())
                    } else if h.segment != ext.segment {
                        Some(format!("block belongs to segment {}", h.segment))
                    } else if h.instance != instance {
                        Some("block belongs to another instance".into())
                    } else if h.stream_offset != expected {
                        Some(format!(
                            "stream offset {} where {expected} was expected",
                            h.stream_offset
                        ))
                    } else {
                        None
                    };
                    if let Some(p) = problem {
                        return Err(corrupt(&ext.volume, at, p));
                    }
                    let payload = plaintext(media, &h, buf.slice(pos + HEADER_LEN..pos + n))
                        .map_err(|e| match e {
                            Unreadable::Damaged(p) => corrupt(&ext.volume, at, p),
                            Unreadable::Key(detail) => MediaError::Key {
                                media_class: media.name.clone(),
                                volume: ext.volume.clone(),
                                offset: at,
                                work_item: item.clone(),
                                detail,
                            },
                        })?;
                    digest.update(&payload);
                    expected += payload.len() as u64;
                    let crc = (h.flags & FLAG_ENCRYPTED == 0).then_some(stored_crc);
                    let payload = Payload {
                        bytes: payload,
                        crc,
                    };
                    if tx.send(Ok(payload.into())).await.is_err() {
                        return Ok(()); // the consumer stopped
                    }
                    pos += n;
                }
                Err(BlockError::Truncated) => break,
                Err(e) => {
                    return Err(corrupt(
                        &ext.volume,
                        carry_offset + pos as u64,
                        e.to_string(),
                    ));
                }
            }
        }
        carry.extend_from_slice(&buf[pos..]);
        carry_offset += pos as u64;
    }
    if let Some(x) = current
        && !carry.is_empty()
    {
        return Err(ends_inside(x, carry_offset));
    }
    let got = digest.finish();
    if expected != entry.bytes || got != entry.digest {
        let last = entry.extents.last();
        return Err(corrupt(
            last.map_or("", |e| e.volume.as_str()),
            last.map_or(0, |e| e.offset + e.length),
            format!(
                "stream is {expected} bytes with digest {got}, catalog says {} bytes with {}",
                entry.bytes, entry.digest
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::fs::FsStore;
    use crate::media::manifest::CopyRole;

    /// A block size that does not divide the reads (2 MiB), so blocks are cut by the end of a
    /// read and completed by the next; writes both smaller and larger than a block, so blocks
    /// are framed from the pending buffer and straight from the stream. The stream reads back
    /// byte for byte, with its digest checked.
    #[tokio::test]
    async fn odd_block_sizes_read_back_across_reads() {
        let dir = tempfile::tempdir().unwrap();
        let media = media_in(dir.path(), 3000);
        let stream: Vec<u8> = (0..5_000_123u32)
            .map(|i| (i * 7 + i / 3001) as u8)
            .collect();
        let mut w = TrailWriter::open(media.clone(), "t", "s1").await.unwrap();
        let slot = w.begin("i-1", "w");
        let mut rest = stream.as_slice();
        for size in [1usize, 2943, 2944, 10_000, 100].into_iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (now, later) = rest.split_at(size.min(rest.len()));
            w.write(slot, now).await.unwrap();
            rest = later;
        }
        let written = w.end(slot).await.unwrap();
        w.close().await.unwrap();
        assert_eq!(written.bytes, stream.len() as u64);
        assert!(written.digest.starts_with("blake3:"), "{}", written.digest);
        let back = read_back(&media, entry_of("i-1", written)).await.unwrap();
        assert!(back == stream, "{} bytes read back", back.len());
    }

    /// A directory store whose first streamed object waits for the test to release its
    /// `finish` (and then fails it, if `fail`): what a writer does while a full volume's
    /// segment is still being made durable.
    #[derive(Debug)]
    struct SlowFirstFinish {
        inner: FsStore,
        gate: Arc<tokio::sync::Semaphore>,
        fail: bool,
        first: std::sync::atomic::AtomicBool,
    }

    struct GatedWriter {
        inner: Box<dyn super::super::store::ObjectWriter>,
        gate: Option<(Arc<tokio::sync::Semaphore>, bool)>,
    }

    #[async_trait::async_trait]
    impl super::super::store::ObjectWriter for GatedWriter {
        async fn write(&mut self, data: Bytes) -> Result<()> {
            self.inner.write(data).await
        }
        async fn finish(self: Box<Self>) -> Result<u64> {
            if let Some((gate, fail)) = &self.gate {
                let _released = gate.acquire().await.unwrap();
                if *fail {
                    let _ = self.inner.abort().await;
                    return Err(MediaError::Unsupported("injected: finish failed".into()));
                }
            }
            self.inner.finish().await
        }
        async fn abort(self: Box<Self>) -> Result<()> {
            self.inner.abort().await
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for SlowFirstFinish {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        async fn put(&self, key: &str, data: Bytes) -> Result<()> {
            self.inner.put(key, data).await
        }
        async fn create(&self, key: &str) -> Result<Box<dyn super::super::store::ObjectWriter>> {
            let first = self.first.swap(false, std::sync::atomic::Ordering::SeqCst);
            Ok(Box::new(GatedWriter {
                inner: self.inner.create(key).await?,
                gate: first.then(|| (self.gate.clone(), self.fail)),
            }))
        }
        async fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Bytes> {
            self.inner.get_range(key, range).await
        }
        async fn get(&self, key: &str) -> Result<Bytes> {
            self.inner.get(key).await
        }
        async fn head(&self, key: &str) -> Result<Option<u64>> {
            self.inner.head(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<super::super::store::ObjectInfo>> {
            self.inner.list(prefix).await
        }
        async fn delete(&self, key: &str) -> Result<()> {
            self.inner.delete(key).await
        }
        async fn probe(&self) -> Result<()> {
            self.inner.probe().await
        }
        async fn purge_incomplete(
            &self,
            prefix: &str,
            before: chrono::DateTime<Utc>,
        ) -> Result<usize> {
            self.inner.purge_incomplete(prefix, before).await
        }
    }

    /// A full volume's segment is made durable in the background: the writer goes on to the
    /// next volume while the first segment's object is not there yet, and `close` waits for
    /// it (the stream reads back whole) or reports its failure.
    #[tokio::test]
    async fn a_full_segment_is_sealed_while_the_next_is_written() {
        for fail in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let gate = Arc::new(tokio::sync::Semaphore::new(0));
            let media = Media {
                capacity: 64 << 10,
                store: Arc::new(SlowFirstFinish {
                    inner: FsStore::new(dir.path()),
                    gate: gate.clone(),
                    fail,
                    first: true.into(),
                }),
                ..media_in(dir.path(), 4096)
            };
            let stream: Vec<u8> = (0..100_000u32).map(|i| (i * 13) as u8).collect();
            let mut w = TrailWriter::open(media.clone(), "t", "s1").await.unwrap();
            let slot = w.begin("i-1", "w");
            let wrote = async {
                w.write(slot, &stream).await?;
                w.end(slot).await
            };
            let written = tokio::time::timeout(std::time::Duration::from_secs(10), wrote)
                .await
                .expect("the writer went on while the first segment waited")
                .unwrap();
            let volumes: Vec<&str> = written.extents.iter().map(|e| e.volume.as_str()).collect();
            assert_eq!(
                volumes,
                ["t-00001", "t-00002"],
                "one full volume, then the next"
            );
            let first = segment_key("t", "t-00001", 0);
            assert_eq!(
                media.store.head(&first).await.unwrap(),
                None,
                "not durable yet"
            );
            gate.add_permits(1);
            let closed = w.close().await;
            if fail {
                let e = closed.unwrap_err().to_string();
                assert!(e.contains("injected"), "{e}");
                continue;
            }
            closed.unwrap();
            assert!(media.store.head(&first).await.unwrap().is_some());
            let back = read_back(&media, entry_of("i-1", written)).await.unwrap();
            assert!(back == stream, "{} bytes read back", back.len());
        }
    }

    /// Unencrypted media in a directory, with blocks of `block_size`.
    fn media_in(dir: &std::path::Path, block_size: u64) -> Media {
        Media {
            name: "m".into(),
            store: Arc::new(FsStore::new(dir)),
            block_size,
            capacity: 64 << 20,
            key: None,
        }
    }

    fn entry_of(instance: &str, written: WrittenInstance) -> ManifestEntry {
        ManifestEntry {
            work_item: "w".into(),
            instance_id: instance.into(),
            backup_time: Utc::now(),
            backup_trail: "t".into(),
            trail: "t".into(),
            role: CopyRole::Original,
            copy_of: None,
            parent: None,
            extents: written.extents,
            replaces: Vec::new(),
            bytes: written.bytes,
            file_bytes: None,
            notes: Vec::new(),
            digest: written.digest,
            created_at: Utc::now(),
            expires_at: Utc::now(),
        }
    }

    /// The stream as read; every payload's CRC, where the reader gives one, checked against
    /// the bytes (a plain block gives its own; an encrypted one cannot).
    async fn read_back(media: &Media, entry: ManifestEntry) -> Result<Vec<u8>> {
        let (tx, mut rx) = mpsc::channel::<Result<Payload>>(4);
        tokio::spawn(read_instance(media.clone(), entry, tx));
        let mut back = Vec::new();
        while let Some(chunk) = rx.recv().await {
            let p = chunk?;
            let want = media.key.is_none().then(|| crc32c::crc32c(&p.bytes));
            assert_eq!(p.crc, want, "payload CRC at stream offset {}", back.len());
            back.extend_from_slice(&p.bytes);
        }
        Ok(back)
    }

    /// An instance recorded with a SHA-256 digest, as manifests of version 1 hold, is checked
    /// with SHA-256: it reads back, a wrong SHA-256 is damage, and an algorithm this Mimeo does
    /// not know is refused as such, not taken for damage.
    #[tokio::test]
    async fn streams_recorded_with_sha256_are_still_checked() {
        use sha2::{Digest, Sha256};
        let dir = tempfile::tempdir().unwrap();
        let media = media_in(dir.path(), 4096);
        let stream: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let sha = format!("sha256:{}", hex::encode(Sha256::digest(&stream)));
        let mut w = TrailWriter::open(media.clone(), "t", "s1").await.unwrap();
        let slot = w.begin_copy("old", "w", &sha);
        w.write(slot, &stream).await.unwrap();
        let written = w.end(slot).await.unwrap();
        w.close().await.unwrap();
        assert_eq!(written.digest, sha);
        let entry = entry_of("old", written);
        assert!(read_back(&media, entry.clone()).await.unwrap() == stream);
        let wrong = ManifestEntry {
            digest: format!("sha256:{}", hex::encode(Sha256::digest(b"other"))),
            ..entry.clone()
        };
        let err = read_back(&media, wrong).await.unwrap_err();
        assert!(
            matches!(&err, MediaError::Corrupt { detail, .. } if detail.contains("digest")),
            "{err:?}"
        );
        let unknown = ManifestEntry {
            digest: "md5:00".into(),
            ..entry
        };
        let err = read_back(&media, unknown).await.unwrap_err();
        assert!(
            matches!(&err, MediaError::Unsupported(m) if m.contains("\"md5\"")),
            "{err:?}"
        );
    }
}
