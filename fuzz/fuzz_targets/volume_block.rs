//! The on-media block and segment format (src/media/format.rs) against arbitrary bytes.
//!
//! The input is read as a segment twice: as it is, and with every block's magic, version,
//! length and CRC patched in so that the fuzzer also reaches the decoded-block paths. Beside
//! "never panics" (and, with -malloc_limit_mb, "never allocates without bound"), it checks the
//! properties the streaming reader in src/media/trail.rs relies on.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mimeo::media::format::{
    self, BlockError, BlockHeader, FORMAT_VERSION, HEADER_LEN, TRAILER_LEN,
};

fuzz_target!(
    init: mimeo_fuzz::write_seeds(mimeo_fuzz::block_seeds),
    |data: &[u8]| {
        walk_segment(data);
        if data.len() >= HEADER_LEN {
            let mut patched = data.to_vec();
            patch_blocks(&mut patched);
            walk_segment(&patched);
        }
    }
);

/// Reads `seg` the way a reader does: block after block from the start, and the index block
/// the trailer points at.
fn walk_segment(seg: &[u8]) {
    if seg.len() >= TRAILER_LEN {
        let trailer = &seg[seg.len() - TRAILER_LEN..];
        if let Some(index_offset) = format::decode_trailer(trailer) {
            assert_eq!(format::encode_trailer(index_offset), trailer);
            if let Some(index) = usize::try_from(index_offset)
                .ok()
                .and_then(|at| seg.get(at..))
            {
                let _ = check_block(index);
            }
        }
    }
    for len in [0, 1, TRAILER_LEN - 1, TRAILER_LEN + 1] {
        if let Some(short_or_long) = seg.get(..len) {
            assert_eq!(format::decode_trailer(short_or_long), None);
        }
    }
    let mut rest = seg;
    while let Ok(n) = check_block(rest) {
        rest = &rest[n..];
    }
}

/// Decodes the block at the start of `buf` and checks what a streaming reader relies on.
fn check_block(buf: &[u8]) -> Result<usize, BlockError> {
    let result = BlockHeader::decode(buf);
    // A verdict other than "need more bytes" never changes when more bytes arrive.
    if !matches!(result, Err(BlockError::Truncated)) {
        let mut longer = buf.to_vec();
        longer.push(0);
        assert_eq!(
            BlockHeader::decode(&longer),
            result,
            "more bytes changed the verdict"
        );
    }
    let (header, total) = result?;
    assert_eq!(total, HEADER_LEN + header.payload_len as usize);
    assert!(total <= buf.len());
    // The block alone decodes the same; any shorter prefix of it is "truncated".
    assert_eq!(
        BlockHeader::decode(&buf[..total]),
        Ok((header.clone(), total))
    );
    for cut in [0, HEADER_LEN - 1, HEADER_LEN, total - 1] {
        if cut < total {
            assert_eq!(
                BlockHeader::decode(&buf[..cut]),
                Err(BlockError::Truncated),
                "a {cut}-byte prefix of a {total}-byte block"
            );
        }
    }
    // Re-encoding gives the same block (byte for byte unless the reserved field was set).
    let payload = &buf[HEADER_LEN..total];
    let again = header.encode(payload);
    assert_eq!(BlockHeader::decode(&again), Ok((header, total)));
    if buf[52..56] == [0; 4] {
        assert_eq!(again, &buf[..total], "re-encoded block differs");
    } else {
        assert_eq!(again[..48], buf[..48], "re-encoded header differs");
        assert_eq!(again[56..], buf[56..total], "re-encoded payload differs");
    }
    Ok(total)
}

/// Makes the blocks of `seg` valid one after another: magic, version, a kind in range, a
/// payload length that fits, the CRC. What follows the last whole block is left alone.
fn patch_blocks(seg: &mut [u8]) {
    let mut at = 0;
    while seg.len() - at >= HEADER_LEN {
        let block = &mut seg[at..];
        block[..4].copy_from_slice(b"MIMB");
        block[4] = FORMAT_VERSION;
        block[5] = block[5] % 3 + 1;
        let room = (block.len() - HEADER_LEN).min(u32::MAX as usize) as u64;
        let stored = u64::from(u32::from_le_bytes(block[20..24].try_into().unwrap()));
        let len = stored % (room + 1);
        block[20..24].copy_from_slice(&(len as u32).to_le_bytes());
        let total = HEADER_LEN + len as usize;
        block[48..52].fill(0);
        let crc = crc32c(&block[..total]);
        block[48..52].copy_from_slice(&crc.to_le_bytes());
        at += total;
    }
}

/// CRC32C (Castagnoli), bitwise: the harness must not share the code under test.
fn crc32c(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |mut crc, &b| {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
        crc
    })
}
