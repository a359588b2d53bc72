//! Byte layout of `/filesyncd/chunks/1`, and the per-chunk compression choice.
//!
//! # Request (fetcher → server), then the fetcher half-closes
//! ```text
//! u8 version (=1) | u8 flags (bit 0: fetcher accepts zstd) | u16 LE count | count × 32-byte hash
//! ```
//! `count` is 1..=`max_chunks_per_request`; the server refuses more before
//! reading the hashes.
//!
//! # Response (server → fetcher): `count` frames, in request order
//! ```text
//! 32-byte hash | u8 kind | u32 LE raw_len | u32 LE wire_len | wire_len bytes of body
//! ```
//! * kind 0 = absent (both lengths 0). Sent for a chunk the server does not
//!   hold *or* may not serve: the two are indistinguishable (no oracle).
//! * kind 1 = raw: `wire_len == raw_len`.
//! * kind 2 = zstd (one zstd frame): `0 < wire_len < raw_len`; zstd is only
//!   sent when it saves bytes.
//! * `raw_len <= max_chunk_len` (16 MiB by default). A header breaking any of
//!   these rules is refused before a buffer is allocated, the stream is
//!   dropped (reset) and the server is charged a fault.
//!
//! # When to compress
//! Per chunk and per peer, by the serving side
//! ([`super::compressor::Compressor`]): chunks under 512 bytes and chunks
//! whose sampled byte entropy ([`sample_entropy`]) is above 7.2 bits/byte
//! (already compressed, encrypted, random) go raw; others go compressed at
//! level 1 only when that is faster than raw over the link to that peer
//! ([`super::decide`]), and only if the frame saves at least 1/32.
//! [`Frame::encode`] is the choice without a link: compressed whenever
//! the frame saves 1/32 (tests and tools).

use bytes::Bytes;
use filesyncd_merkle::{Hash, Verified};
use std::io;

pub const WIRE_VERSION: u8 = 1;
pub const FLAG_ACCEPT_ZSTD: u8 = 1;
pub const HEADER_LEN: usize = 32 + 1 + 4 + 4;
pub const REQUEST_HEAD_LEN: usize = 4;

/// Chunks shorter than this always go raw.
pub const MIN_COMPRESS: usize = 512;
const SAMPLE_SLICES: usize = 8;
const SAMPLE_SLICE_LEN: usize = 512;
/// Sampled entropy (bits/byte) above which a chunk is not tried.
pub const ENTROPY_LIMIT_BITS: f64 = 7.2;
/// The one zstd level frames are made at.
pub const ZSTD_LEVEL: i32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Absent = 0,
    Raw = 1,
    Zstd = 2,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("unknown wire version {0}")]
    Version(u8),
    #[error("request of {count} hashes (allowed 1..={max})")]
    Count { count: usize, max: usize },
    #[error("unknown frame kind {0}")]
    Kind(u8),
    #[error("frame lengths raw={raw} wire={wire} break the rules for {kind:?} (max {max})")]
    Lengths {
        kind: Kind,
        raw: u32,
        wire: u32,
        max: usize,
    },
    #[error("frame for {got:?} where {want:?} was expected")]
    WrongHash { want: Hash, got: Hash },
    #[error("body does not hash to {0:?}")]
    Mismatch(Hash),
    #[error("zstd body does not decode to {0} bytes")]
    BadZstd(u32),
}

impl From<WireError> for io::Error {
    fn from(e: WireError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// Encodes a request.
pub fn encode_request(hashes: &[Hash], accept_zstd: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(REQUEST_HEAD_LEN + 32 * hashes.len());
    out.push(WIRE_VERSION);
    out.push(if accept_zstd { FLAG_ACCEPT_ZSTD } else { 0 });
    out.extend_from_slice(&(hashes.len() as u16).to_le_bytes());
    for h in hashes {
        out.extend_from_slice(h.as_bytes());
    }
    out
}

/// Parses the 4-byte request head: (accept_zstd, count). Checked before the
/// hashes are read.
pub fn decode_request_head(head: [u8; 4], max: usize) -> Result<(bool, usize), WireError> {
    if head[0] != WIRE_VERSION {
        return Err(WireError::Version(head[0]));
    }
    let count = usize::from(u16::from_le_bytes([head[2], head[3]]));
    if count == 0 || count > max {
        return Err(WireError::Count { count, max });
    }
    Ok((head[1] & FLAG_ACCEPT_ZSTD != 0, count))
}

/// Splits the hash list of a request.
pub fn decode_hashes(bytes: &[u8]) -> Vec<Hash> {
    bytes
        .chunks_exact(32)
        .map(|c| {
            let mut h = [0u8; 32];
            h.copy_from_slice(c);
            Hash(h)
        })
        .collect()
}

/// A validated frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub hash: Hash,
    pub kind: Kind,
    pub raw_len: u32,
    pub wire_len: u32,
}

impl FrameHeader {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..32].copy_from_slice(self.hash.as_bytes());
        out[32] = self.kind as u8;
        out[33..37].copy_from_slice(&self.raw_len.to_le_bytes());
        out[37..41].copy_from_slice(&self.wire_len.to_le_bytes());
        out
    }

    /// Decodes and checks the length rules against `max_chunk_len`.
    pub fn decode(bytes: &[u8; HEADER_LEN], max_chunk_len: usize) -> Result<Self, WireError> {
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&bytes[..32]);
        let kind = match bytes[32] {
            0 => Kind::Absent,
            1 => Kind::Raw,
            2 => Kind::Zstd,
            k => return Err(WireError::Kind(k)),
        };
        let raw_len = u32::from_le_bytes([bytes[33], bytes[34], bytes[35], bytes[36]]);
        let wire_len = u32::from_le_bytes([bytes[37], bytes[38], bytes[39], bytes[40]]);
        let ok = match kind {
            Kind::Absent => raw_len == 0 && wire_len == 0,
            Kind::Raw => wire_len == raw_len && raw_len as usize <= max_chunk_len,
            Kind::Zstd => wire_len > 0 && wire_len < raw_len && raw_len as usize <= max_chunk_len,
        };
        if !ok {
            return Err(WireError::Lengths {
                kind,
                raw: raw_len,
                wire: wire_len,
                max: max_chunk_len,
            });
        }
        Ok(FrameHeader {
            hash: Hash(hash),
            kind,
            raw_len,
            wire_len,
        })
    }
}

/// A frame ready to write. The body is shared (a cached zstd frame goes
/// to every peer without a copy).
pub struct Frame {
    pub header: FrameHeader,
    pub body: Bytes,
}

impl Frame {
    pub fn absent(hash: Hash) -> Frame {
        Frame {
            header: FrameHeader {
                hash,
                kind: Kind::Absent,
                raw_len: 0,
                wire_len: 0,
            },
            body: Bytes::new(),
        }
    }

    /// The chunk as it is (len ≤ u32::MAX, checked by the caller).
    pub fn raw(hash: Hash, data: Vec<u8>) -> Frame {
        let raw_len = data.len() as u32;
        Frame {
            header: FrameHeader {
                hash,
                kind: Kind::Raw,
                raw_len,
                wire_len: raw_len,
            },
            body: Bytes::from(data),
        }
    }

    /// A zstd frame of a chunk of `raw_len` bytes; the caller checked that
    /// it saves ([`super::decide::saves_enough`]).
    pub fn zstd(hash: Hash, raw_len: u32, body: Bytes) -> Frame {
        Frame {
            header: FrameHeader {
                hash,
                kind: Kind::Zstd,
                raw_len,
                wire_len: body.len() as u32,
            },
            body,
        }
    }

    /// Builds the frame for `data` (len ≤ u32::MAX, checked by the caller),
    /// compressed whenever the fetcher accepts zstd, the entropy check
    /// passes and the frame saves 1/32, whatever the link: for tests and
    /// tools. The server decides per link ([`super::compressor`]).
    pub fn encode(hash: Hash, data: Vec<u8>, accept_zstd: bool) -> Frame {
        if accept_zstd && worth_trying_zstd(&data) {
            if let Ok(z) = zstd::bulk::compress(&data, ZSTD_LEVEL) {
                if super::decide::saves_enough(data.len(), z.len()) {
                    return Frame::zstd(hash, data.len() as u32, Bytes::from(z));
                }
            }
        }
        Frame::raw(hash, data)
    }
}

/// Cheap entropy check on ≤ 4 KiB sampled from across the chunk.
pub fn worth_trying_zstd(data: &[u8]) -> bool {
    data.len() >= MIN_COMPRESS && sample_entropy(data) < ENTROPY_LIMIT_BITS
}

/// Byte entropy, bits per byte, of 8 slices of 512 bytes spread across
/// `data` (all of it when shorter than that).
pub fn sample_entropy(data: &[u8]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    let mut hist = [0u32; 256];
    let mut n = 0u32;
    let step = data.len() / SAMPLE_SLICES;
    for i in 0..SAMPLE_SLICES {
        let start = i * step;
        let end = (start + SAMPLE_SLICE_LEN).min(data.len());
        for &b in &data[start..end] {
            hist[usize::from(b)] += 1;
            n += 1;
        }
    }
    let n = f64::from(n);
    hist.iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// Turns a received body into the chunk bytes and verifies them against
/// the header's hash: the one blake3 of a fetched chunk on this node (the
/// [`Verified`] handed on is not hashed again). `header` was validated by
/// [`FrameHeader::decode`].
pub fn open_body(header: &FrameHeader, body: Vec<u8>) -> Result<Verified, WireError> {
    let data = match header.kind {
        Kind::Absent => return Err(WireError::Kind(0)),
        Kind::Raw => body,
        Kind::Zstd => {
            // Capacity bound = announced raw length: zstd fails rather than
            // write past it, so a decompression bomb cannot allocate more.
            let out = zstd::bulk::decompress(&body, header.raw_len as usize)
                .map_err(|_| WireError::BadZstd(header.raw_len))?;
            if out.len() != header.raw_len as usize {
                return Err(WireError::BadZstd(header.raw_len));
            }
            out
        }
    };
    Verified::check(header.hash, data).map_err(|_| WireError::Mismatch(header.hash))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::RngCore;

    fn roundtrip(data: Vec<u8>, zstd: bool) -> (Kind, Vec<u8>) {
        let hash = Hash::of_chunk(&data);
        let frame = Frame::encode(hash, data, zstd);
        let header = FrameHeader::decode(&frame.header.encode(), 16 << 20).unwrap();
        let chunk = open_body(&header, frame.body.to_vec()).unwrap();
        assert_eq!(chunk.hash(), hash);
        (header.kind, chunk.into_bytes())
    }

    #[test]
    fn text_is_compressed_random_is_not() {
        let text = b"the quick brown fox jumps over the lazy dog ".repeat(2000);
        let (kind, back) = roundtrip(text.clone(), true);
        assert_eq!(kind, Kind::Zstd);
        assert_eq!(back, text);
        let mut random = vec![0u8; 65536];
        rand::thread_rng().fill_bytes(&mut random);
        assert!(!worth_trying_zstd(&random));
        let (kind, back) = roundtrip(random.clone(), true);
        assert_eq!(kind, Kind::Raw);
        assert_eq!(back, random);
        let (kind, _) = roundtrip(text, false);
        assert_eq!(kind, Kind::Raw);
    }

    #[test]
    fn oversized_and_inconsistent_headers_are_refused() {
        let h = Hash([1; 32]);
        let bad = [
            (Kind::Raw, 17 << 20, 17 << 20),
            (Kind::Raw, 10, 11),
            (Kind::Zstd, 100, 100),
            (Kind::Zstd, 100, 0),
            (Kind::Zstd, 17 << 20, 10),
            (Kind::Absent, 1, 0),
        ];
        for (kind, raw_len, wire_len) in bad {
            let fh = FrameHeader {
                hash: h,
                kind,
                raw_len,
                wire_len,
            };
            assert!(
                FrameHeader::decode(&fh.encode(), 16 << 20).is_err(),
                "{fh:?}"
            );
        }
        let mut unknown = FrameHeader {
            hash: h,
            kind: Kind::Raw,
            raw_len: 1,
            wire_len: 1,
        }
        .encode();
        unknown[32] = 9;
        assert_eq!(
            FrameHeader::decode(&unknown, 16 << 20),
            Err(WireError::Kind(9))
        );
    }

    #[test]
    fn wrong_body_is_a_mismatch() {
        let data = vec![5u8; 1000];
        let header = FrameHeader {
            hash: Hash::of_chunk(b"something else"),
            kind: Kind::Raw,
            raw_len: 1000,
            wire_len: 1000,
        };
        assert!(matches!(
            open_body(&header, data),
            Err(WireError::Mismatch(_))
        ));
    }

    #[test]
    fn zstd_bomb_is_bounded_by_raw_len() {
        let big = vec![0u8; 1 << 20];
        let z = zstd::bulk::compress(&big, 1).unwrap();
        let header = FrameHeader {
            hash: Hash::of_chunk(&big[..1000]),
            kind: Kind::Zstd,
            raw_len: 1000,
            wire_len: z.len() as u32,
        };
        assert_eq!(open_body(&header, z), Err(WireError::BadZstd(1000)));
    }

    #[test]
    fn request_head_limits() {
        let req = encode_request(&[Hash([2; 32]), Hash([3; 32])], true);
        let head = [req[0], req[1], req[2], req[3]];
        assert_eq!(decode_request_head(head, 2), Ok((true, 2)));
        assert!(decode_request_head(head, 1).is_err());
        assert!(decode_request_head([2, 0, 1, 0], 9).is_err());
        assert!(decode_request_head([1, 0, 0, 0], 9).is_err());
        assert_eq!(decode_hashes(&req[4..]), vec![Hash([2; 32]), Hash([3; 32])]);
    }

    proptest! {
        #[test]
        fn frames_roundtrip(data in proptest::collection::vec(any::<u8>(), 0..5000), rep in 1usize..8, zstd: bool) {
            let data = data.repeat(rep);
            let (_, back) = roundtrip(data.clone(), zstd);
            prop_assert_eq!(back, data);
        }

        #[test]
        fn header_decode_never_panics(bytes in proptest::array::uniform32(any::<u8>()), tail in proptest::collection::vec(any::<u8>(), 9)) {
            let mut h = [0u8; HEADER_LEN];
            h[..32].copy_from_slice(&bytes);
            h[32..].copy_from_slice(&tail);
            if let Ok(fh) = FrameHeader::decode(&h, 1 << 20) {
                prop_assert!(fh.raw_len as usize <= 1 << 20);
            }
        }
    }
}
