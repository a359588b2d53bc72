//! The index's value formats: where a chunk lives ([`Loc`]) and which live
//! file a file id names ([`FileRec`]).
//!
//! A chunk's index value is the concatenation of its [`Loc`]s, each as
//! postcard varints: `file_id, offset, len` for a live-file location (file
//! ids start at 1), `0, len` for a blob, `0, 2^63 + len` for an inline value
//! (format 2; a blob is shorter than 2^63 bytes, so format-1 values decode
//! unchanged). No tag byte, no list length (the value's end ends the list),
//! so the common single-location entry costs three varints (~8-11 bytes);
//! an inline location costs 11. The format version lives once in the `meta`
//! table, not in every value.

use super::error::StoreError;
use super::inline::INLINE_LIMIT;
use super::FileStamp;
use serde::{Deserialize, Serialize};

/// Most live-file locations kept per chunk. A chunk duplicated in more files
/// than this is still found through any of the last `MAX_FILE_LOCS` files
/// indexed with it; older ones are forgotten (the chunk is not lost, the
/// index just stops pointing at that copy).
pub const MAX_FILE_LOCS: usize = 4;

/// One place a chunk's bytes can be read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loc {
    /// `<store>/blobs/ab/<hex>`, `len` bytes.
    Blob { len: u64 },
    /// The value of the chunk in the index's `inline` table, `len` bytes
    /// (at most [`INLINE_LIMIT`]).
    Inline { len: u32 },
    /// `len` bytes at `offset` in the live file whose record is `file`.
    File { file: u64, offset: u64, len: u32 },
}

/// What a file id stands for: the path (relative to the synced root) and the
/// stamp the file had when its chunks were indexed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRec {
    pub path: String,
    pub stamp: FileStamp,
}

/// Set in the second varint of an own-copy location: the copy is inline.
const INLINE_BIT: u64 = 1 << 63;

pub fn encode_locs(locs: &[Loc]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 * locs.len());
    for loc in locs {
        match *loc {
            Loc::Blob { len } => {
                debug_assert!(len < INLINE_BIT, "no blob reaches 2^63 bytes");
                out = varint(out, 0);
                out = varint(out, len);
            }
            Loc::Inline { len } => {
                out = varint(out, 0);
                out = varint(out, INLINE_BIT | u64::from(len));
            }
            Loc::File { file, offset, len } => {
                debug_assert!(file != 0, "file ids start at 1");
                out = varint(out, file);
                out = varint(out, offset);
                out = varint(out, u64::from(len));
            }
        }
    }
    out
}

fn varint(out: Vec<u8>, v: u64) -> Vec<u8> {
    postcard::to_extend(&v, out).expect("postcard: a varint into a Vec cannot fail")
}

fn take_varint(bytes: &mut &[u8]) -> Result<u64, StoreError> {
    let (v, rest) = postcard::take_from_bytes::<u64>(bytes)
        .map_err(|e| StoreError::CorruptIndex(format!("chunk location: {e}")))?;
    *bytes = rest;
    Ok(v)
}

pub fn decode_locs(mut bytes: &[u8]) -> Result<Vec<Loc>, StoreError> {
    let mut out = Vec::with_capacity(1);
    while !bytes.is_empty() {
        let loc = match take_varint(&mut bytes)? {
            0 => match take_varint(&mut bytes)? {
                len if len & INLINE_BIT == 0 => Loc::Blob { len },
                tagged => {
                    let len = tagged & !INLINE_BIT;
                    if len > INLINE_LIMIT as u64 {
                        return Err(StoreError::CorruptIndex(format!(
                            "inline location of {len} bytes, over the {INLINE_LIMIT}-byte limit"
                        )));
                    }
                    // (`len` <= INLINE_LIMIT, so the cast is exact.)
                    Loc::Inline { len: len as u32 }
                }
            },
            file => Loc::File {
                file,
                offset: take_varint(&mut bytes)?,
                len: u32::try_from(take_varint(&mut bytes)?)
                    .map_err(|_| StoreError::CorruptIndex("chunk length over 4 GiB".into()))?,
            },
        };
        out.push(loc);
    }
    if out.is_empty() {
        return Err(StoreError::CorruptIndex(
            "chunk entry with no location".into(),
        ));
    }
    Ok(out)
}

pub fn encode_file(rec: &FileRec) -> Vec<u8> {
    postcard::to_allocvec(rec).expect("postcard: serializing a string and integers cannot fail")
}

pub fn decode_file(bytes: &[u8]) -> Result<FileRec, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::CorruptIndex(format!("file record: {e}")))
}

/// Adds a live-file location to a chunk's list. `is_current(id)` says whether
/// a file id still has a record; locations of ids that do not (re-indexed or
/// forgotten files) are pruned on the way. A second location in the same file
/// is not added (the first one serves). Past [`MAX_FILE_LOCS`], the oldest
/// file location goes.
pub fn add_file_loc<E>(
    locs: &mut Vec<Loc>,
    new: Loc,
    mut is_current: impl FnMut(u64) -> Result<bool, E>,
) -> Result<(), E> {
    let Loc::File { file: new_id, .. } = new else {
        return Ok(());
    };
    let mut kept = Vec::with_capacity(locs.len() + 1);
    for loc in locs.drain(..) {
        match loc {
            Loc::File { file, .. } if file == new_id => {
                kept.push(loc);
            }
            Loc::File { file, .. } => {
                if is_current(file)? {
                    kept.push(loc);
                }
            }
            Loc::Blob { .. } | Loc::Inline { .. } => kept.push(loc),
        }
    }
    *locs = kept;
    if locs
        .iter()
        .any(|l| matches!(l, Loc::File { file, .. } if *file == new_id))
    {
        return Ok(());
    }
    while locs
        .iter()
        .filter(|l| matches!(l, Loc::File { .. }))
        .count()
        >= MAX_FILE_LOCS
    {
        if let Some(i) = locs.iter().position(|l| matches!(l, Loc::File { .. })) {
            locs.remove(i);
        }
    }
    locs.push(new);
    Ok(())
}

/// Whether the location is one of the store's own copies (blob or inline).
pub fn is_own(loc: &Loc) -> bool {
    matches!(loc, Loc::Blob { .. } | Loc::Inline { .. })
}

/// Records the chunk's own copy (`own` is a blob or an inline location). A
/// chunk has at most one own copy: any other one is replaced (the caller
/// removes its bytes in the same transaction).
pub fn add_own_loc(locs: &mut Vec<Loc>, own: Loc) {
    debug_assert!(is_own(&own), "{own:?} is not an own copy");
    locs.retain(|l| !is_own(l));
    locs.push(own);
}

/// Removes the chunk's inline location; whether it had one (the caller
/// removes the value in the same transaction).
pub fn take_inline(locs: &mut Vec<Loc>) -> bool {
    let before = locs.len();
    locs.retain(|l| !matches!(l, Loc::Inline { .. }));
    locs.len() != before
}

/// The chunk's own copy, if it has one.
pub fn own_loc(locs: &[Loc]) -> Option<Loc> {
    locs.iter().copied().find(is_own)
}

pub fn has_blob(locs: &[Loc]) -> bool {
    locs.iter().any(|l| matches!(l, Loc::Blob { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_loc() -> impl Strategy<Value = Loc> {
        prop_oneof![
            (0..INLINE_BIT).prop_map(|len| Loc::Blob { len }),
            (0..=INLINE_LIMIT as u32).prop_map(|len| Loc::Inline { len }),
            (1..=u64::MAX, any::<u64>(), any::<u32>()).prop_map(|(file, offset, len)| Loc::File {
                file,
                offset,
                len
            }),
        ]
    }

    proptest! {
        #[test]
        fn locs_roundtrip(locs in proptest::collection::vec(arb_loc(), 1..6)) {
            prop_assert_eq!(decode_locs(&encode_locs(&locs)).unwrap(), locs);
        }
    }

    #[test]
    fn typical_entry_is_small() {
        // file id 1000, offset 512 MiB, 40 KiB chunk: varints of 2 + 5 + 3 bytes
        let v = encode_locs(&[Loc::File {
            file: 1000,
            offset: 512 << 20,
            len: 40 << 10,
        }]);
        assert_eq!(v.len(), 10);
    }

    #[test]
    fn garbage_is_corrupt_not_panic() {
        assert!(matches!(decode_locs(&[]), Err(StoreError::CorruptIndex(_))));
        assert!(matches!(
            decode_locs(&[7, 1]),
            Err(StoreError::CorruptIndex(_))
        ));
        assert!(matches!(
            decode_locs(&[1, 0xff]),
            Err(StoreError::CorruptIndex(_))
        ));
        assert!(matches!(
            decode_locs(&[0, 0xff]),
            Err(StoreError::CorruptIndex(_))
        ));
        // a length over u32
        assert!(matches!(
            decode_locs(&[1, 0, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            Err(StoreError::CorruptIndex(_))
        ));
        assert!(matches!(
            decode_file(&[0xff; 3]),
            Err(StoreError::CorruptIndex(_))
        ));
    }

    #[test]
    fn add_file_loc_prunes_dedups_and_caps() {
        let f = |file| Loc::File {
            file,
            offset: file * 10,
            len: 5,
        };
        let mut locs = vec![Loc::Blob { len: 5 }, f(1), f(2)];
        // id 1 is gone: pruned; 3 added
        add_file_loc::<()>(&mut locs, f(3), |id| Ok(id != 1)).unwrap();
        assert_eq!(locs, vec![Loc::Blob { len: 5 }, f(2), f(3)]);
        // same file again: not added twice
        add_file_loc::<()>(
            &mut locs,
            Loc::File {
                file: 3,
                offset: 99,
                len: 5,
            },
            |_| Ok(true),
        )
        .unwrap();
        assert_eq!(locs, vec![Loc::Blob { len: 5 }, f(2), f(3)]);
        for id in 4..10 {
            add_file_loc::<()>(&mut locs, f(id), |_| Ok(true)).unwrap();
        }
        assert_eq!(locs, vec![Loc::Blob { len: 5 }, f(6), f(7), f(8), f(9)]);
        add_own_loc(&mut locs, Loc::Blob { len: 5 });
        assert_eq!(locs.iter().filter(|l| is_own(l)).count(), 1);
        // An inline copy replaces the blob (one own copy per chunk), and
        // the other way round.
        add_own_loc(&mut locs, Loc::Inline { len: 5 });
        assert_eq!(locs.iter().filter(|l| is_own(l)).count(), 1);
        assert_eq!(own_loc(&locs), Some(Loc::Inline { len: 5 }));
        add_own_loc(&mut locs, Loc::Blob { len: 5 });
        assert_eq!(own_loc(&locs), Some(Loc::Blob { len: 5 }));
        assert!(!locs.contains(&Loc::Inline { len: 5 }));
    }

    #[test]
    fn format_1_values_decode_unchanged_and_inline_is_tagged() {
        // Format 1 wrote `0, len` for a blob: still a blob.
        assert_eq!(
            decode_locs(&[0, 0x80, 0x10]).unwrap(),
            vec![Loc::Blob { len: 2048 }]
        );
        let v = encode_locs(&[
            Loc::Inline { len: 2048 },
            Loc::File {
                file: 3,
                offset: 0,
                len: 2048,
            },
        ]);
        assert_eq!(v.len(), 11 + 4, "{v:?}");
        assert_eq!(v[0], 0);
        assert_eq!(
            decode_locs(&v).unwrap()[0],
            Loc::Inline { len: 2048 },
            "the inline bit survives"
        );
        // An inline length past the limit is refused, not allocated.
        let over = encode_locs(&[Loc::Inline { len: u32::MAX }]);
        assert!(matches!(
            decode_locs(&over),
            Err(StoreError::CorruptIndex(_))
        ));
    }
}
