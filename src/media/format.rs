//! The on-media format: every segment object is a label block, data blocks, an index block and
//! a fixed trailer. Every block carries control data and a CRC32C, so any byte read back is
//! checked and a damaged one is reported with its volume, offset and work item.
//!
//! ```text
//! segment := label-block data-block* index-block trailer
//! block   := header(56 bytes) payload
//! header  := "MIMB" version:u8 kind:u8 flags:u16 volume_id:u64 segment:u32 payload_len:u32
//!            block_index:u64 instance:u64 stream_offset:u64 crc32c:u32 reserved:u32
//! trailer := "MIMEOEND" index_offset:u64
//! ```
//! Integers are little-endian. `volume_id` and `instance` are 64-bit FNV-1a hashes of the volume
//! name and the instance id; the label and index blocks map them back to names.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Format version written into every block and label.
pub const FORMAT_VERSION: u8 = 1;
/// Size of a block header.
pub const HEADER_LEN: usize = 56;
/// Size of the segment trailer.
pub const TRAILER_LEN: usize = 16;
const BLOCK_MAGIC: &[u8; 4] = b"MIMB";
const TRAILER_MAGIC: &[u8; 8] = b"MIMEOEND";

/// What a block holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum BlockKind {
    /// The segment label (JSON [`SegmentLabel`]).
    Label = 1,
    /// Payload of a work item instance's logical stream.
    Data = 2,
    /// The segment's extent index (JSON [`SegmentIndex`]).
    Index = 3,
}

/// Flag: last block of an instance's stream.
pub const FLAG_END: u16 = 1;
/// Flag: the payload is encrypted (see [`super::crypt`]).
pub const FLAG_ENCRYPTED: u16 = 2;

/// Control data of one block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockHeader {
    /// Block kind.
    pub kind: BlockKind,
    /// Flags (see [`FLAG_END`]).
    pub flags: u16,
    /// Hash of the volume name.
    pub volume_id: u64,
    /// Segment number within the volume.
    pub segment: u32,
    /// Payload bytes following the header.
    pub payload_len: u32,
    /// Index of the block within its segment.
    pub block_index: u64,
    /// Hash of the instance id (0 for label and index blocks).
    pub instance: u64,
    /// Offset of the payload in the instance's logical stream.
    pub stream_offset: u64,
}

/// Why a header or block did not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockError {
    /// Not enough bytes for a header or its payload.
    Truncated,
    /// Magic or version wrong.
    BadHeader(String),
    /// CRC mismatch.
    BadCrc {
        /// CRC stored in the header.
        stored: u32,
        /// CRC computed over the bytes read.
        computed: u32,
    },
}

impl std::fmt::Display for BlockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlockError::Truncated => write!(f, "truncated block"),
            BlockError::BadHeader(m) => write!(f, "bad block header: {m}"),
            BlockError::BadCrc { stored, computed } => write!(
                f,
                "CRC32C mismatch (stored {stored:08x}, computed {computed:08x})"
            ),
        }
    }
}

impl BlockHeader {
    /// Encodes header + payload into one buffer, computing the CRC over both.
    pub fn encode(&self, payload: &[u8]) -> Vec<u8> {
        self.encode_with(|b| b.extend_from_slice(payload))
    }

    /// Encodes the header and the payload that `fill` appends to the buffer (an encrypted
    /// payload is sealed straight into the block, not into a buffer of its own first), and
    /// computes the CRC over both.
    pub fn encode_with(&self, fill: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut b = self.frame(fill);
        let crc = crc32c::crc32c(&b);
        b[48..52].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// [`BlockHeader::encode`], and the CRC32C of the payload alone, for a caller that keeps a
    /// CRC of the whole stream: the payload is read once, and its CRC combined both into the
    /// block's and into the stream's, instead of a second pass over the bytes.
    pub fn encode_crc(&self, payload: &[u8]) -> (Vec<u8>, u32) {
        let mut b = self.frame(|b| b.extend_from_slice(payload));
        let payload_crc = crc32c::crc32c(payload);
        let crc =
            crc32c::crc32c_combine(crc32c::crc32c(&b[..HEADER_LEN]), payload_crc, payload.len());
        b[48..52].copy_from_slice(&crc.to_le_bytes());
        (b, payload_crc)
    }

    /// Header (CRC zeroed) and the payload `fill` appends, in one buffer.
    fn frame(&self, fill: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER_LEN + self.payload_len as usize);
        b.extend_from_slice(&self.control_data());
        b.extend_from_slice(&[0; 8]);
        fill(&mut b);
        debug_assert_eq!(b.len(), HEADER_LEN + self.payload_len as usize);
        b
    }

    /// The header up to its CRC: what an encrypted payload is bound to.
    pub fn control_data(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(48);
        b.extend_from_slice(BLOCK_MAGIC);
        b.push(FORMAT_VERSION);
        b.push(self.kind as u8);
        b.extend_from_slice(&self.flags.to_le_bytes());
        b.extend_from_slice(&self.volume_id.to_le_bytes());
        b.extend_from_slice(&self.segment.to_le_bytes());
        b.extend_from_slice(&self.payload_len.to_le_bytes());
        b.extend_from_slice(&self.block_index.to_le_bytes());
        b.extend_from_slice(&self.instance.to_le_bytes());
        b.extend_from_slice(&self.stream_offset.to_le_bytes());
        b
    }

    /// Decodes the block at the start of `buf`: returns its header and total length. The CRC
    /// covers header and payload, so the whole block must be in `buf`.
    pub fn decode(buf: &[u8]) -> Result<(BlockHeader, usize), BlockError> {
        Self::decode_crc(buf).map(|(h, n, _)| (h, n))
    }

    /// [`BlockHeader::decode`], and the CRC32C of the payload alone (as stored: of the
    /// ciphertext, if encrypted), for a reader that keeps a CRC of the whole stream: the
    /// block's CRC is checked as the payload's combined with the header's, so the payload is
    /// read once for both.
    pub fn decode_crc(buf: &[u8]) -> Result<(BlockHeader, usize, u32), BlockError> {
        if buf.len() < HEADER_LEN {
            return Err(BlockError::Truncated);
        }
        if &buf[0..4] != BLOCK_MAGIC {
            return Err(BlockError::BadHeader("no block magic".into()));
        }
        if buf[4] != FORMAT_VERSION {
            return Err(BlockError::BadHeader(format!(
                "format version {} (expected {FORMAT_VERSION})",
                buf[4]
            )));
        }
        let kind = match buf[5] {
            1 => BlockKind::Label,
            2 => BlockKind::Data,
            3 => BlockKind::Index,
            k => return Err(BlockError::BadHeader(format!("unknown block kind {k}"))),
        };
        let u16_at = |i: usize| u16::from_le_bytes(buf[i..i + 2].try_into().unwrap());
        let u32_at = |i: usize| u32::from_le_bytes(buf[i..i + 4].try_into().unwrap());
        let u64_at = |i: usize| u64::from_le_bytes(buf[i..i + 8].try_into().unwrap());
        let payload_len = u32_at(20);
        let total = HEADER_LEN + payload_len as usize;
        if buf.len() < total {
            return Err(BlockError::Truncated);
        }
        let stored = u32_at(48);
        let mut head = crc32c::crc32c(&buf[..48]);
        head = crc32c::crc32c_append(head, &[0; 4]);
        head = crc32c::crc32c_append(head, &buf[52..HEADER_LEN]);
        let payload_crc = crc32c::crc32c(&buf[HEADER_LEN..total]);
        let computed = crc32c::crc32c_combine(head, payload_crc, total - HEADER_LEN);
        if computed != stored {
            return Err(BlockError::BadCrc { stored, computed });
        }
        Ok((
            BlockHeader {
                kind,
                flags: u16_at(6),
                volume_id: u64_at(8),
                segment: u32_at(16),
                payload_len,
                block_index: u64_at(24),
                instance: u64_at(32),
                stream_offset: u64_at(40),
            },
            total,
            payload_crc,
        ))
    }
}

/// Label written as the first block of every segment (and as the volume's label object).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SegmentLabel {
    /// Format version.
    pub format_version: u8,
    /// Volume name.
    pub volume: String,
    /// Trail the volume belongs to.
    pub trail: String,
    /// Media class of the volume.
    pub media_class: String,
    /// When the segment was started.
    pub created_at: DateTime<Utc>,
    /// Block size of the media class.
    pub block_size: u64,
    /// Segment number within the volume.
    pub segment: u32,
    /// Write session that wrote the segment.
    pub session: String,
    /// Id of the key that encrypts the segment's data blocks, if the media class encrypts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

/// Where each instance's blocks are in one segment: lets a reader seek straight to one work
/// item without the catalog.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SegmentIndex {
    /// Instances with blocks in this segment.
    pub instances: Vec<IndexedInstance>,
}

/// One instance's runs of blocks in a segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexedInstance {
    /// Instance id.
    pub instance_id: String,
    /// Work item name.
    pub work_item: String,
    /// `(offset, length)` runs of whole blocks, in stream order.
    pub runs: Vec<(u64, u64)>,
}

/// Encodes the trailer pointing at the index block.
pub fn encode_trailer(index_offset: u64) -> [u8; TRAILER_LEN] {
    let mut t = [0u8; TRAILER_LEN];
    t[..8].copy_from_slice(TRAILER_MAGIC);
    t[8..].copy_from_slice(&index_offset.to_le_bytes());
    t
}

/// Decodes a trailer; `None` if the magic is missing (an unsealed or truncated segment).
pub fn decode_trailer(t: &[u8]) -> Option<u64> {
    (t.len() == TRAILER_LEN && &t[..8] == TRAILER_MAGIC)
        .then(|| u64::from_le_bytes(t[8..].try_into().unwrap()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::hash::name_hash;
    use proptest::prelude::*;

    fn header(len: u32) -> BlockHeader {
        BlockHeader {
            kind: BlockKind::Data,
            flags: FLAG_END,
            volume_id: name_hash("v1"),
            segment: 3,
            payload_len: len,
            block_index: 7,
            instance: name_hash("i"),
            stream_offset: 1 << 40,
        }
    }

    #[test]
    fn round_trip() {
        let payload = b"hello blocks".to_vec();
        let h = header(payload.len() as u32);
        let b = h.encode(&payload);
        let (d, n) = BlockHeader::decode(&b).unwrap();
        assert_eq!((d, n), (h, b.len()));
        assert_eq!(&b[HEADER_LEN..], &payload[..]);
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let h = header(40);
        let b = h.encode(&[7u8; 40]);
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x10;
            assert!(BlockHeader::decode(&c).is_err(), "flip at {i} not detected");
        }
    }

    #[test]
    fn truncation_is_detected() {
        let b = header(40).encode(&[1u8; 40]);
        assert_eq!(
            BlockHeader::decode(&b[..b.len() - 1]),
            Err(BlockError::Truncated)
        );
        assert_eq!(BlockHeader::decode(&b[..10]), Err(BlockError::Truncated));
    }

    #[test]
    fn trailer() {
        assert_eq!(decode_trailer(&encode_trailer(12345)), Some(12345));
        assert_eq!(decode_trailer(&[0; TRAILER_LEN]), None);
    }

    proptest! {
        /// The parser never panics and never accepts garbage as a valid block: not random
        /// bytes, and not random bytes behind a well-formed start (magic, version, kind) and a
        /// length that fits, where only the CRC stands between them and acceptance.
        #[test]
        fn parser_refuses_garbage(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            kind in 1u8..=3,
        ) {
            prop_assert!(BlockHeader::decode(&bytes).is_err());
            let mut shaped = bytes;
            shaped.resize(shaped.len().max(HEADER_LEN), 0);
            shaped[..4].copy_from_slice(BLOCK_MAGIC);
            shaped[4] = FORMAT_VERSION;
            shaped[5] = kind;
            let payload = (shaped.len() - HEADER_LEN) as u32;
            shaped[20..24].copy_from_slice(&payload.to_le_bytes());
            let refused = matches!(BlockHeader::decode(&shaped), Err(BlockError::BadCrc { .. }));
            prop_assert!(refused, "a block of garbage was not refused by its CRC");
        }

        #[test]
        fn any_payload_round_trips(payload in proptest::collection::vec(any::<u8>(), 0..2000), off in any::<u64>()) {
            let mut h = header(payload.len() as u32);
            h.stream_offset = off;
            let b = h.encode(&payload);
            prop_assert_eq!(BlockHeader::decode(&b).unwrap(), (h.clone(), b.len()));
            // The block's CRC combined from the payload's is the one computed in one pass.
            prop_assert_eq!(h.encode_crc(&payload), (b.clone(), crc32c::crc32c(&payload)));
            // And taken apart again by the reader.
            prop_assert_eq!(BlockHeader::decode_crc(&b).unwrap().2, crc32c::crc32c(&payload));
        }
    }
}
