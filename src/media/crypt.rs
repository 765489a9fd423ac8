//! Encryption at rest of data blocks (ChaCha20-Poly1305 from `ring`).
//!
//! An encrypted block's payload is `key_id(8) nonce(12) ciphertext tag(16)`. The nonce is
//! random per block, because volumes are scratched and rewritten under the same names, so
//! no position-derived nonce is unique under one key. The block's control data (kind, flags,
//! volume, segment, block index, instance, stream offset) is the associated data: a block
//! moved to another place fails authentication like a modified one. The key id says *which*
//! key sealed a block, so a wrong key is reported as such instead of as damage.

use std::fmt;

use base64::Engine;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

/// Key of the Secret entry that holds a media class's encryption key.
pub const KEY_SECRET_ENTRY: &str = "MIMEO_ENCRYPTION_KEY";

const KEY_ID_LEN: usize = 8;
const TAG_LEN: usize = 16;

/// Bytes an encrypted payload has beyond its plaintext.
pub const OVERHEAD: usize = KEY_ID_LEN + NONCE_LEN + TAG_LEN;

/// Why an encrypted payload did not open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpenError {
    /// Shorter than the overhead alone.
    Truncated,
    /// Sealed with another key.
    OtherKey {
        /// Id of the key that sealed the block.
        block: String,
        /// Id of the key we hold.
        ours: String,
    },
    /// Right key, but the tag does not match: the block or its control data was changed.
    Forged,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Truncated => write!(f, "encrypted payload is shorter than its overhead"),
            OpenError::OtherKey { block, ours } => write!(
                f,
                "block was encrypted with key {block}, the media class key is {ours}"
            ),
            OpenError::Forged => write!(
                f,
                "authentication failed: the block or its control data was modified"
            ),
        }
    }
}

/// A media class's data key. `Debug` shows only its id.
pub struct BlockKey {
    key: LessSafeKey,
    id: [u8; KEY_ID_LEN],
}

impl fmt::Debug for BlockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlockKey({})", self.id())
    }
}

/// Text that is not a key; it tells the length only, never the value.
#[derive(Debug, thiserror::Error)]
#[error("must be 32 random bytes as 64 hex characters or base64 (got {chars} characters)")]
pub struct KeyFormatError {
    chars: usize,
}

impl BlockKey {
    /// Parses a key given as text (Secret values travel as text through environment
    /// variables): 32 bytes as 64 hex characters (`openssl rand -hex 32`) or as base64
    /// (`openssl rand -base64 32`). The error never contains the value.
    pub fn parse(text: &str) -> Result<BlockKey, KeyFormatError> {
        let text = text.trim();
        let bytes = hex::decode(text)
            .ok()
            .or_else(|| base64::engine::general_purpose::STANDARD.decode(text).ok())
            .filter(|b| b.len() == 32)
            .ok_or(KeyFormatError { chars: text.len() })?;
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(
            &Sha256::new_with_prefix(b"mimeo key id\0")
                .chain_update(&bytes)
                .finalize()[..KEY_ID_LEN],
        );
        let key = UnboundKey::new(&CHACHA20_POLY1305, &bytes).expect("32-byte key");
        Ok(BlockKey {
            key: LessSafeKey::new(key),
            id,
        })
    }

    /// The key's public id: a hash of the key, recorded in labels and blocks.
    pub fn id(&self) -> String {
        hex::encode(self.id)
    }

    /// Encrypts `plain`, binding it to `context` (the block's control data), and appends the
    /// sealed payload to `out` (a block's buffer, after its header): the plaintext is copied
    /// once, then encrypted where it lies.
    pub fn seal_into(&self, context: &[u8], plain: &[u8], out: &mut Vec<u8>) {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system random generator works");
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&nonce);
        let body = out.len();
        out.extend_from_slice(plain);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context),
                &mut out[body..],
            )
            .expect("a block is far below the ChaCha20 length limit");
        out.extend_from_slice(tag.as_ref());
    }

    /// Decrypts a payload made by [`BlockKey::seal_into`] with the same `context`.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < OVERHEAD {
            return Err(OpenError::Truncated);
        }
        let (id, rest) = sealed.split_at(KEY_ID_LEN);
        if id != self.id {
            return Err(OpenError::OtherKey {
                block: hex::encode(id),
                ours: self.id(),
            });
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).expect("NONCE_LEN bytes");
        let mut buf = body.to_vec();
        let plain_len = self
            .key
            .open_in_place(nonce, Aad::from(context), &mut buf)
            .map_err(|_| OpenError::Forged)?
            .len();
        buf.truncate(plain_len);
        Ok(buf)
    }
}

/// The id of the key that sealed an encrypted payload, if it is long enough to hold one.
pub fn sealed_key_id(sealed: &[u8]) -> Option<String> {
    sealed.get(..KEY_ID_LEN).map(hex::encode)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal(k: &BlockKey, context: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        k.seal_into(context, plain, &mut out);
        out
    }

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn key() -> BlockKey {
        BlockKey::parse(HEX).unwrap()
    }

    #[test]
    fn round_trip_and_nonces_differ() {
        let k = key();
        let a = seal(&k, b"ctx", b"secret data");
        let b = seal(&k, b"ctx", b"secret data");
        assert_eq!(a.len(), 11 + OVERHEAD);
        assert_ne!(a, b, "a nonce was reused");
        assert!(!a.windows(11).any(|w| w == b"secret data"));
        assert_eq!(k.open(b"ctx", &a).unwrap(), b"secret data");
        assert_eq!(k.open(b"ctx", &seal(&k, b"ctx", b"")).unwrap(), b"");
        // Sealed after a block's header: what is already in the buffer stays as it was.
        let mut block = b"header".to_vec();
        k.seal_into(b"ctx", b"payload", &mut block);
        assert_eq!(&block[..6], b"header");
        assert_eq!(k.open(b"ctx", &block[6..]).unwrap(), b"payload");
    }

    #[test]
    fn every_modified_byte_and_other_context_are_refused() {
        let k = key();
        let sealed = seal(&k, b"ctx", b"0123456789");
        for i in KEY_ID_LEN..sealed.len() {
            let mut c = sealed.clone();
            c[i] ^= 1;
            assert_eq!(k.open(b"ctx", &c), Err(OpenError::Forged), "byte {i}");
        }
        assert_eq!(k.open(b"ctX", &sealed), Err(OpenError::Forged));
        assert_eq!(
            k.open(b"ctx", &sealed[..OVERHEAD - 1]),
            Err(OpenError::Truncated)
        );
    }

    #[test]
    fn a_wrong_key_is_named_not_called_damage() {
        let other = BlockKey::parse(&"ab".repeat(32)).unwrap();
        let sealed = seal(&key(), b"ctx", b"data");
        assert_eq!(sealed_key_id(&sealed), Some(key().id()));
        match other.open(b"ctx", &sealed) {
            Err(OpenError::OtherKey { block, ours }) => {
                assert_eq!(block, key().id());
                assert_eq!(ours, other.id());
                assert_ne!(block, ours);
            }
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn keys_parse_from_hex_or_base64_and_never_show() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(hex::decode(HEX).unwrap());
        assert_eq!(
            BlockKey::parse(&format!("{b64}\n")).unwrap().id(),
            key().id()
        );
        for bad in ["", "00", &HEX[2..], "not a key at all", &"zz".repeat(32)] {
            let e = BlockKey::parse(bad).unwrap_err().to_string();
            assert!(e.contains("32 random bytes"), "{e}");
            assert!(bad.len() < 8 || !e.contains(bad), "{e}");
        }
        assert_eq!(format!("{:?}", key()), format!("BlockKey({})", key().id()));
        assert!(!format!("{:?}", key()).contains("0001020304"));
    }
}
