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
use std::io::{self, ErrorKind};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    read_live_with(root, rec, offset, len, Some(expected), None)
}

/// Live files kept open between reads: serving a large file opens it once,
/// not once per chunk. At most [`OPEN_FILES`] handles, each reused for at
/// most [`OPEN_FOR`] (a deleted file's space is not held longer).
#[derive(Default)]
pub struct OpenFiles(Mutex<Vec<(String, Arc<File>, Instant)>>);

/// Handles an [`OpenFiles`] keeps.
pub const OPEN_FILES: usize = 16;
/// How long an [`OpenFiles`] handle is reused.
pub const OPEN_FOR: Duration = Duration::from_secs(10);

impl OpenFiles {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, Arc<File>, Instant)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cached(&self, rel: &str) -> Option<Arc<File>> {
        let mut v = self.lock();
        v.retain(|(_, _, at)| at.elapsed() < OPEN_FOR);
        v.iter()
            .find(|(p, _, _)| p == rel)
            .map(|(_, f, _)| f.clone())
    }

    fn insert(&self, rel: &str, f: Arc<File>) {
        let mut v = self.lock();
        v.retain(|(p, _, _)| p != rel);
        if v.len() >= OPEN_FILES {
            v.remove(0);
        }
        v.push((rel.to_owned(), f, Instant::now()));
    }

    fn forget(&self, rel: &str) {
        self.lock().retain(|(p, _, _)| p != rel);
    }
}

/// [`read_live`], verifying the bytes only if `expected` is given (a caller
/// that skips it relies on the stamp: the file is the one that was hashed
/// when it was indexed), through `open` if given.
pub fn read_live_with(
    root: &Path,
    rec: &FileRec,
    offset: u64,
    len: u32,
    expected: Option<&Hash>,
    open: Option<&OpenFiles>,
) -> Result<LiveRead, StoreError> {
    let path = root.join(&rec.path);
    let stamped = |f: &File| -> Result<Option<&'static str>, StoreError> {
        let meta = f.metadata().map_err(|e| StoreError::io(&path, e))?;
        if !meta.is_file() {
            return Ok(Some("not a regular file any more"));
        }
        if FileStamp::from_metadata(&meta) != rec.stamp {
            return Ok(Some("file changed since it was indexed"));
        }
        Ok(None)
    };
    let mut file = None;
    if let Some(c) = open.and_then(|o| o.cached(&rec.path)) {
        if stamped(&c)?.is_none() {
            file = Some(c);
        } else if let Some(o) = open {
            o.forget(&rec.path);
        }
    }
    let file = match file {
        Some(f) => f,
        None => {
            let f = match File::open(&path) {
                Ok(f) => f,
                Err(e) if is_gone(&e) => return Ok(LiveRead::Stale("file is gone")),
                Err(e) => return Err(StoreError::io(path, e)),
            };
            if let Some(why) = stamped(&f)? {
                return Ok(LiveRead::Stale(why));
            }
            let f = Arc::new(f);
            if let Some(o) = open {
                o.insert(&rec.path, f.clone());
            }
            f
        }
    };
    let meta = file.metadata().map_err(|e| StoreError::io(&path, e))?;
    if offset
        .checked_add(u64::from(len))
        .is_none_or(|end| end > meta.len())
    {
        // (Checked before allocating: a damaged index cannot make us
        // allocate more than the file holds.)
        return Ok(LiveRead::Stale("range past the end of the file"));
    }
    let mut buf = vec![0u8; len as usize];
    let read = file.read_exact_at(&mut buf, offset);
    match read {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
            return Ok(LiveRead::Stale("file shorter than indexed"))
        }
        Err(e) => return Err(StoreError::io(path, e)),
    }
    if expected.is_some_and(|h| Hash::of_chunk(&buf) != *h) {
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
