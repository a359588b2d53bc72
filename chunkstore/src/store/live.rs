//! Reading chunks out of live files in the synced tree.
//!
//! A live-file location is only a claim: the user may have edited, truncated,
//! replaced or deleted the file since it was indexed. Every read therefore
//! opens the file, compares the stamp of the *open handle* (so a rename
//! between check and read cannot fool us) with the indexed one, reads the
//! range and verifies its blake3. Any disagreement makes the location
//! [`LiveRead::Stale`]; only failures of the machine (permission, EIO) are
//! errors.

use super::error::StoreError;
use super::locs::FileRec;
use super::FileStamp;
use crate::Hash;
use std::fs::File;
use std::io::{self, ErrorKind, Read, Seek, SeekFrom};
use std::path::Path;

/// Outcome of reading one live-file location.
#[derive(Debug)]
pub enum LiveRead {
    /// The bytes, verified against the chunk's hash.
    Verified(Vec<u8>),
    /// The file is not what was indexed any more (why, for the log).
    Stale(&'static str),
}

/// Errors that mean "this path no longer leads to the file we indexed".
fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::NotFound | ErrorKind::NotADirectory | ErrorKind::IsADirectory
    )
}

/// Does the file at `root/rec.path` still carry the indexed stamp? A cheap
/// `stat`, no read. Follows symlinks, like opening does.
pub fn stamp_matches(root: &Path, rec: &FileRec) -> Result<bool, StoreError> {
    let path = root.join(&rec.path);
    match std::fs::metadata(&path) {
        Ok(m) => Ok(m.is_file() && FileStamp::from_metadata(&m) == rec.stamp),
        Err(e) if is_gone(&e) => Ok(false),
        Err(e) => Err(StoreError::io(path, e)),
    }
}

/// Whether the file `f` describes is still there with `f`'s stamp (an
/// error reads as changed).
pub fn placed_unchanged(root: &Path, f: &super::FileIndex<'_>) -> bool {
    let rec = FileRec {
        path: f.rel_path.to_owned(),
        stamp: f.stamp,
    };
    stamp_matches(root, &rec).unwrap_or(false)
}

/// Reads `len` bytes at `offset` of the live file and verifies them.
pub fn read_live(
    root: &Path,
    rec: &FileRec,
    offset: u64,
    len: u32,
    expected: &Hash,
) -> Result<LiveRead, StoreError> {
    let path = root.join(&rec.path);
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if is_gone(&e) => return Ok(LiveRead::Stale("file is gone")),
        Err(e) => return Err(StoreError::io(path, e)),
    };
    let meta = file.metadata().map_err(|e| StoreError::io(&path, e))?;
    if !meta.is_file() {
        return Ok(LiveRead::Stale("not a regular file any more"));
    }
    if FileStamp::from_metadata(&meta) != rec.stamp {
        return Ok(LiveRead::Stale("file changed since it was indexed"));
    }
    if offset
        .checked_add(u64::from(len))
        .is_none_or(|end| end > meta.len())
    {
        // (Checked before allocating: a damaged index cannot make us
        // allocate more than the file holds.)
        return Ok(LiveRead::Stale("range past the end of the file"));
    }
    let mut buf = vec![0u8; len as usize];
    let read = file
        .seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_exact(&mut buf));
    match read {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
            return Ok(LiveRead::Stale("file shorter than indexed"))
        }
        Err(e) => return Err(StoreError::io(path, e)),
    }
    if Hash::of_chunk(&buf) != *expected {
        return Ok(LiveRead::Stale(
            "bytes do not hash to the chunk (changed in place)",
        ));
    }
    Ok(LiveRead::Verified(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verified_then_stale_on_change_and_removal() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello world").unwrap();
        let rec = FileRec {
            path: "f".into(),
            stamp: FileStamp::of_path(&p).unwrap(),
        };
        let h = Hash::of_chunk(b"world");
        assert!(stamp_matches(dir.path(), &rec).unwrap());
        match read_live(dir.path(), &rec, 6, 5, &h).unwrap() {
            LiveRead::Verified(b) => assert_eq!(b, b"world"),
            other => panic!("{other:?}"),
        }
        // right stamp, wrong range: hash mismatch is stale, not an error
        assert!(matches!(
            read_live(dir.path(), &rec, 0, 5, &h).unwrap(),
            LiveRead::Stale(_)
        ));
        assert!(matches!(
            read_live(dir.path(), &rec, 8, 5, &h).unwrap(),
            LiveRead::Stale(_)
        ));
        std::fs::write(&p, b"hello WORLD!").unwrap();
        assert!(!stamp_matches(dir.path(), &rec).unwrap());
        assert!(matches!(
            read_live(dir.path(), &rec, 6, 5, &h).unwrap(),
            LiveRead::Stale(_)
        ));
        std::fs::remove_file(&p).unwrap();
        assert!(!stamp_matches(dir.path(), &rec).unwrap());
        assert!(matches!(
            read_live(dir.path(), &rec, 6, 5, &h).unwrap(),
            LiveRead::Stale(_)
        ));
    }
}
