//! `/filesyncd/chunks/1` streams, both ends:
//!
//! * the server reading a request (`chunks::serve::read_request`: head
//!   checked before the hashes are read);
//! * the fetcher reading a response, the stream state machine of
//!   `chunks::fetch`: for each asked hash in order, `read_frame` (header
//!   rules before any allocation, the hash it answers, the body) and
//!   `wire::open_body` (zstd bounded by the announced length, blake3), an
//!   absent frame moving on to the next hash, a fault or I/O error ending
//!   the stream.
//!
//! The response is either raw input bytes or built by the input from
//! honest frames (raw, zstd, absent, each for the chunk asked or another),
//! then optionally corrupted at one byte and cut short. Checks: no panic;
//! every chunk handed on hashes to the hash asked at its position; an
//! honest, untouched stream delivers every chunk it holds, bit for bit.
#![no_main]

use std::time::Duration;

use filesyncd_fuzz::{runtime, Bytes};
use filesyncd_p2p::chunks::fetch::{read_frame, FrameError};
use filesyncd_p2p::chunks::serve::read_request;
use filesyncd_p2p::chunks::wire::{self, Frame};
use filesyncd_p2p::{Hash, Limits};
use futures::io::Cursor;

const T: Duration = Duration::from_secs(5);

enum Want {
    Chunk(Vec<u8>),
    Absent,
    Other,
}

/// What an honest, untouched stream must give for one asked hash.
#[derive(Clone, Debug, PartialEq)]
enum Expect {
    Chunk(Vec<u8>),
    Absent,
    /// A frame the fetcher must refuse (over the length cap, another hash).
    Fault,
    /// Raw input: anything but an unverified chunk.
    Unknown,
}

fn chunk_data(b: &mut Bytes) -> Vec<u8> {
    let pattern = b.short(16).to_vec();
    let repeat = 1 + usize::from(b.u16() % 4096);
    if pattern.is_empty() {
        vec![0u8; repeat]
    } else {
        pattern.repeat(repeat.min(65536 / pattern.len() + 1))
    }
}

/// Seeds: honest streams in the harness's format (see below), a server
/// request, and raw streams of real frames.
fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    // mode 0xC0: built frames, cap 16 MiB; 3 wants: chunk, absent, chunk (zstd).
    let mut s = vec![0xC0u8, 2];
    s.extend_from_slice(&[2, 4, b'a', b'b', b'c', b'd', 0x00, 0x01, 0]);
    s.extend_from_slice(&[0, 0]);
    s.extend_from_slice(&[7u8; 32]);
    s.extend_from_slice(&[3, 3, b'x', b'y', b'z', 0x00, 0x04, 1]);
    out.push(s);
    // The same at a 64-byte cap, with another chunk's frame.
    out.push(vec![
        0x00, 1, 2, 2, b'q', b'r', 0x40, 0x00, 1, 1, 1, b'z', 1, 0, 0,
    ]);
    // A server request.
    let hashes = [Hash::of_chunk(b"one"), Hash::of_chunk(b"two")];
    let mut req = vec![0x01u8, 8];
    req.extend(wire::encode_request(&hashes, true));
    out.push(req);
    // Raw: two wants and real frames for them (raw and zstd).
    let one = b"0123456789".repeat(100);
    let two = vec![0u8; 3000];
    let mut raw = vec![0xC2u8, 1];
    raw.extend_from_slice(Hash::of_chunk(&one).as_bytes());
    raw.extend_from_slice(Hash::of_chunk(&two).as_bytes());
    for (data, zstd) in [(one, false), (two, true)] {
        let f = Frame::encode(Hash::of_chunk(&data), data, zstd);
        raw.extend_from_slice(&f.header.encode());
        raw.extend_from_slice(&f.body);
    }
    out.push(raw);
    out
}

libfuzzer_sys::fuzz_target!(init: filesyncd_fuzz::write_seeds_if_asked(seeds), |data: &[u8]| {
    let mut b = Bytes::new(data);
    let mode = b.u8();
    let max_chunk_len = match mode >> 6 {
        0 => 64,
        1 => 4096,
        2 => 1 << 20,
        _ => 16 << 20,
    };

    // The server's side: a request, raw from the input.
    if mode & 1 == 1 {
        let limits = Limits {
            max_chunks_per_request: 1 + usize::from(b.u8()),
            ..Limits::default()
        };
        let mut io = Cursor::new(b.rest().to_vec());
        if let Ok((_, hashes)) = runtime().block_on(read_request(&mut io, &limits)) {
            assert!(!hashes.is_empty() && hashes.len() <= limits.max_chunks_per_request);
            let again = wire::encode_request(&hashes, true);
            assert_eq!(&again[4..], &b.rest()[4..4 + 32 * hashes.len()]);
        }
        return;
    }

    // The fetcher's side: the hashes asked, and the response stream.
    let (wants, mut stream, honest) = if mode & 2 == 2 {
        let n = 1 + usize::from(b.u8() % 8);
        let wants: Vec<(Hash, Expect)> =
            (0..n).map(|_| (Hash(b.array32()), Expect::Unknown)).collect();
        (wants, b.rest().to_vec(), false)
    } else {
        let n = 1 + usize::from(b.u8() % 6);
        let mut wants = Vec::new();
        let mut stream = Vec::new();
        for _ in 0..n {
            let kind = match b.u8() % 4 {
                0 => Want::Absent,
                1 => Want::Other,
                _ => Want::Chunk(chunk_data(&mut b)),
            };
            let zstd = b.bool();
            match kind {
                Want::Chunk(data) => {
                    let hash = Hash::of_chunk(&data);
                    let frame = Frame::encode(hash, data.clone(), zstd);
                    stream.extend_from_slice(&frame.header.encode());
                    stream.extend_from_slice(&frame.body);
                    let expect = if data.len() <= max_chunk_len {
                        Expect::Chunk(data)
                    } else {
                        Expect::Fault
                    };
                    wants.push((hash, expect));
                }
                Want::Absent => {
                    let hash = Hash(b.array32());
                    stream.extend_from_slice(&Frame::absent(hash).header.encode());
                    wants.push((hash, Expect::Absent));
                }
                Want::Other => {
                    let data = chunk_data(&mut b);
                    let frame = Frame::encode(Hash::of_chunk(&data), data, zstd);
                    stream.extend_from_slice(&frame.header.encode());
                    stream.extend_from_slice(&frame.body);
                    wants.push((Hash(b.array32()), Expect::Fault));
                }
            }
        }
        let mut honest = true;
        if mode & 4 == 4 && !stream.is_empty() {
            let at = b.u32() as usize % stream.len();
            stream[at] ^= b.u8() | 1;
            honest = false;
        }
        if mode & 8 == 8 && !stream.is_empty() {
            stream.truncate(b.u32() as usize % stream.len());
            honest = false;
        }
        (wants, stream, honest)
    };
    if stream.len() > (32 << 20) {
        stream.truncate(32 << 20);
    }

    let mut io = Cursor::new(std::mem::take(&mut stream));
    for (want, expect) in &wants {
        let frame = runtime().block_on(read_frame(&mut io, want, max_chunk_len, T));
        let got = match frame {
            Ok(Some((header, body))) => {
                assert!(header.raw_len as usize <= max_chunk_len);
                assert_eq!(header.wire_len as usize, body.len());
                match wire::open_body(&header, body) {
                    Ok(chunk) => {
                        assert_eq!(chunk.hash(), *want, "a chunk for another hash");
                        assert_eq!(
                            Hash::of_chunk(chunk.bytes()),
                            *want,
                            "an unverified chunk"
                        );
                        assert_eq!(chunk.len(), header.raw_len as usize);
                        Expect::Chunk(chunk.into_bytes())
                    }
                    Err(_) => Expect::Fault,
                }
            }
            Ok(None) => Expect::Absent,
            Err(FrameError::Fault(_)) => Expect::Fault,
            Err(FrameError::Io) => Expect::Unknown,
        };
        if honest {
            assert_eq!(&got, expect, "an honest stream was misread");
        }
        if !matches!(got, Expect::Absent | Expect::Chunk(_)) {
            break; // the fetcher drops the stream
        }
    }
});
