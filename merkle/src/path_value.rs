//! Values and keys of the path tree: what one path of the synced directory is.
//!
//! A key is a clean relative path: UTF-8, 1..=[`MAX_PATH_BYTES`] bytes, `/` as
//! separator, no NUL, no leading or trailing `/`, no empty, `.` or `..`
//! component. Keys sort by their bytes, so all paths under `dir/` are one
//! contiguous range. These rules are checked on every update and on every
//! decoded node (a peer cannot smuggle `../x` into the tree).

use crate::error::MerkleError;
use crate::hash::Hash;
use serde::{Deserialize, Serialize};

/// Longest path key accepted, in bytes (Linux `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// Largest `mode` accepted: permission bits only (`0o7777`), no file-type bits.
pub const MAX_MODE: u32 = 0o7777;

/// What a path is. Encoded as one byte: File 0, Dir 1, Symlink 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

impl EntryKind {
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            EntryKind::File => 0,
            EntryKind::Dir => 1,
            EntryKind::Symlink => 2,
        }
    }

    pub(crate) fn from_byte(b: u8) -> Result<Self, MerkleError> {
        match b {
            0 => Ok(EntryKind::File),
            1 => Ok(EntryKind::Dir),
            2 => Ok(EntryKind::Symlink),
            _ => Err(MerkleError::Corrupt("unknown entry kind")),
        }
    }
}

/// The value stored for one path.
///
/// * `File`: `root` is the file tree root, `size` the file size.
/// * `Symlink`: `root` is `Hash::of_chunk(target bytes)`, `size` the target length.
/// * `Dir`: `root` must be [`Hash::ZERO`] and `size` 0.
///
/// `mode` holds permission bits only (at most [`MAX_MODE`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PathValue {
    pub kind: EntryKind,
    pub root: Hash,
    pub size: u64,
    pub mode: u32,
}

impl PathValue {
    pub fn file(root: Hash, size: u64, mode: u32) -> Self {
        PathValue {
            kind: EntryKind::File,
            root,
            size,
            mode,
        }
    }

    pub fn dir(mode: u32) -> Self {
        PathValue {
            kind: EntryKind::Dir,
            root: Hash::ZERO,
            size: 0,
            mode,
        }
    }

    pub fn symlink(target: &[u8], mode: u32) -> Self {
        PathValue {
            kind: EntryKind::Symlink,
            root: Hash::of_chunk(target),
            size: target.len() as u64,
            mode,
        }
    }

    /// Checks the rules above.
    pub fn validate(&self) -> Result<(), MerkleError> {
        if self.mode > MAX_MODE {
            return Err(MerkleError::InvalidValue("mode has bits above 0o7777"));
        }
        if self.kind == EntryKind::Dir && (self.root != Hash::ZERO || self.size != 0) {
            return Err(MerkleError::InvalidValue(
                "a directory has a zero root and size",
            ));
        }
        Ok(())
    }
}

/// Checks that `path` is a clean relative path key (rules in the module doc).
pub fn validate_path(path: &str) -> Result<(), MerkleError> {
    let bad = |reason| {
        Err(MerkleError::InvalidPath {
            path: path.chars().take(256).collect(),
            reason,
        })
    };
    if path.is_empty() {
        return bad("empty");
    }
    if path.len() > MAX_PATH_BYTES {
        return bad("longer than 4096 bytes");
    }
    if path.as_bytes().contains(&0) {
        return bad("contains NUL");
    }
    for comp in path.split('/') {
        match comp {
            "" => return bad("empty component (leading, trailing or double '/')"),
            "." | ".." => return bad("'.' or '..' component"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        for ok in ["a", "a/b", "a b/.c", "é/ü", "..a", "a.."] {
            assert!(validate_path(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(MAX_PATH_BYTES + 1);
        for bad in [
            "", "/a", "a/", "a//b", ".", "..", "a/../b", "./a", "a\0b", &long,
        ] {
            assert!(validate_path(bad).is_err(), "{bad:?}");
        }
        assert!(validate_path(&"a".repeat(MAX_PATH_BYTES)).is_ok());
    }

    #[test]
    fn values() {
        assert!(PathValue::dir(0o755).validate().is_ok());
        assert!(PathValue::file(Hash([1; 32]), 3, 0o644).validate().is_ok());
        assert!(PathValue::file(Hash([1; 32]), 3, 0o100644)
            .validate()
            .is_err());
        let mut d = PathValue::dir(0o755);
        d.size = 1;
        assert!(d.validate().is_err());
        d.size = 0;
        d.root = Hash([1; 32]);
        assert!(d.validate().is_err());
        assert_eq!(PathValue::symlink(b"x", 0o777).size, 1);
    }
}
