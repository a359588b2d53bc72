//! Record framing for everything the log store keeps in redb.
//!
//! # Format (version 1)
//! ```text
//! byte 0      format version (1)
//! bytes 1..9  checksum: the first 8 bytes of
//!             BLAKE3(DOMAIN || version || len(key) as u32 LE || key || payload)
//! bytes 9..   payload: the value encoded with postcard
//! ```
//! The key is the record's redb key seen as bytes ([`RecordKey::bytes`]): binding it into the
//! checksum means a record that ends up under the wrong key (a log entry at another index, a
//! vote stored as the committed id) fails verification just like a flipped bit or a cut tail.
//! A 64-bit truncated BLAKE3 lets a random corruption pass with probability 2^-64.
//!
//! Invariant: [`encode`] followed by [`unframe`] with the same key returns the payload; any
//! change of the version byte, the checksum, the payload, its length, or the key makes
//! [`unframe`] fail with a [`CorruptReason`].

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::CorruptReason;

/// The only record format version this code reads and writes.
pub const RECORD_VERSION: u8 = 1;

/// Version byte plus checksum.
pub const HEADER_LEN: usize = 1 + CHECKSUM_LEN;

const CHECKSUM_LEN: usize = 8;
const DOMAIN: &[u8] = b"filesyncd-raft log-store record\0";

/// Where a record lives; part of its checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKey<'a> {
    /// A log entry, by index.
    Log(u64),
    /// A named value in the meta table.
    Meta(&'a str),
}

impl RecordKey<'_> {
    /// The bytes the checksum covers for this key (a tag, then the key itself).
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            RecordKey::Log(index) => {
                let mut v = Vec::with_capacity(9);
                v.push(b'L');
                v.extend_from_slice(&index.to_be_bytes());
                v
            }
            RecordKey::Meta(name) => {
                let mut v = Vec::with_capacity(1 + name.len());
                v.push(b'M');
                v.extend_from_slice(name.as_bytes());
                v
            }
        }
    }
}

impl std::fmt::Display for RecordKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordKey::Log(index) => write!(f, "log entry {index}"),
            RecordKey::Meta(name) => write!(f, "meta record {name:?}"),
        }
    }
}

fn checksum(version: u8, key: &RecordKey<'_>, payload: &[u8]) -> [u8; CHECKSUM_LEN] {
    let key = key.bytes();
    let mut h = blake3::Hasher::new();
    h.update(DOMAIN);
    h.update(&[version]);
    // A key is at most a few dozen bytes; the cast cannot truncate.
    h.update(&(key.len() as u32).to_le_bytes());
    h.update(&key);
    h.update(payload);
    let mut out = [0u8; CHECKSUM_LEN];
    out.copy_from_slice(&h.finalize().as_bytes()[..CHECKSUM_LEN]);
    out
}

/// Frames an already encoded payload (tests build raw records with it).
#[cfg(test)]
pub fn frame(key: RecordKey<'_>, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(RECORD_VERSION);
    out.extend_from_slice(&checksum(RECORD_VERSION, &key, payload));
    out.extend_from_slice(payload);
    out
}

/// Encodes `value` with postcard and frames it.
pub fn encode<T: Serialize + ?Sized>(
    key: RecordKey<'_>,
    value: &T,
) -> Result<Vec<u8>, postcard::Error> {
    let mut out = postcard::to_extend(value, vec![0u8; HEADER_LEN])?;
    out[0] = RECORD_VERSION;
    let sum = checksum(RECORD_VERSION, &key, &out[HEADER_LEN..]);
    out[1..HEADER_LEN].copy_from_slice(&sum);
    Ok(out)
}

/// Verifies a framed record and returns its payload.
pub fn unframe<'b>(key: RecordKey<'_>, bytes: &'b [u8]) -> Result<&'b [u8], CorruptReason> {
    if bytes.len() < HEADER_LEN {
        return Err(CorruptReason::TooShort { len: bytes.len() });
    }
    let version = bytes[0];
    if version != RECORD_VERSION {
        return Err(CorruptReason::UnknownVersion(version));
    }
    let payload = &bytes[HEADER_LEN..];
    if checksum(version, &key, payload)[..] != bytes[1..HEADER_LEN] {
        return Err(CorruptReason::ChecksumMismatch);
    }
    Ok(payload)
}

/// Verifies a framed record and decodes its payload; trailing bytes are corruption too.
pub fn decode<T: DeserializeOwned>(key: RecordKey<'_>, bytes: &[u8]) -> Result<T, CorruptReason> {
    let payload = unframe(key, bytes)?;
    let (value, rest) = postcard::take_from_bytes(payload).map_err(CorruptReason::Decode)?;
    if !rest.is_empty() {
        return Err(CorruptReason::TrailingBytes { len: rest.len() });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn roundtrip_value() {
        let v: (u64, String) = (7, "seven".into());
        let rec = encode(RecordKey::Log(3), &v).expect("encode");
        let back: (u64, String) = decode(RecordKey::Log(3), &rec).expect("decode");
        assert_eq!(back, v);
    }

    #[test]
    fn wrong_key_is_detected() {
        let rec = encode(RecordKey::Meta("vote"), &5u64).expect("encode");
        assert!(matches!(
            decode::<u64>(RecordKey::Meta("committed"), &rec),
            Err(CorruptReason::ChecksumMismatch)
        ));
        let rec = encode(RecordKey::Log(1), &5u64).expect("encode");
        assert!(matches!(
            decode::<u64>(RecordKey::Log(2), &rec),
            Err(CorruptReason::ChecksumMismatch)
        ));
    }

    #[test]
    fn unknown_version_and_short_record() {
        let mut rec = encode(RecordKey::Log(1), &5u64).expect("encode");
        rec[0] = 2;
        assert!(matches!(
            unframe(RecordKey::Log(1), &rec),
            Err(CorruptReason::UnknownVersion(2))
        ));
        assert!(matches!(
            unframe(RecordKey::Log(1), &rec[..4]),
            Err(CorruptReason::TooShort { len: 4 })
        ));
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        // A valid frame whose payload has junk after the value.
        let mut payload = postcard::to_allocvec(&5u64).expect("encode");
        payload.push(0);
        let rec = frame(RecordKey::Log(1), &payload);
        assert!(matches!(
            decode::<u64>(RecordKey::Log(1), &rec),
            Err(CorruptReason::TrailingBytes { len: 1 })
        ));
    }

    proptest! {
        #[test]
        fn frame_roundtrips(index in any::<u64>(), payload in proptest::collection::vec(any::<u8>(), 0..512)) {
            let rec = frame(RecordKey::Log(index), &payload);
            prop_assert_eq!(unframe(RecordKey::Log(index), &rec).expect("valid"), &payload[..]);
        }

        #[test]
        fn any_bit_flip_is_detected(payload in proptest::collection::vec(any::<u8>(), 0..256), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut rec = frame(RecordKey::Log(9), &payload);
            let i = pos.index(rec.len());
            rec[i] ^= 1 << bit;
            prop_assert!(unframe(RecordKey::Log(9), &rec).is_err());
        }

        #[test]
        fn any_truncation_is_detected(payload in proptest::collection::vec(any::<u8>(), 1..256), cut in any::<prop::sample::Index>()) {
            let rec = frame(RecordKey::Meta("vote"), &payload);
            let keep = cut.index(rec.len());
            prop_assert!(unframe(RecordKey::Meta("vote"), &rec[..keep]).is_err());
        }
    }
}
