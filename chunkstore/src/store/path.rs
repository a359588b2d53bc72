//! Validation of the relative paths the index records.
//!
//! The index keys live files by their path relative to the synced root, so a
//! path must name exactly one place inside that root and have exactly one
//! spelling: `/`-separated, non-empty components, none of them `.` or `..`,
//! no leading `/`, no trailing `/`, no empty component (`a//b`), no NUL byte.

use super::error::StoreError;

/// Longest relative path accepted (Linux `PATH_MAX`).
pub const MAX_REL_PATH: usize = 4096;

/// Checks that `rel` is a canonical relative path (see the module doc).
pub fn validate_rel_path(rel: &str) -> Result<(), StoreError> {
    let bad = |reason: &'static str| {
        Err(StoreError::InvalidPath {
            path: rel.to_owned(),
            reason,
        })
    };
    if rel.is_empty() {
        return bad("empty path");
    }
    if rel.len() > MAX_REL_PATH {
        return bad("longer than 4096 bytes");
    }
    if rel.contains('\0') {
        return bad("contains a NUL byte");
    }
    if rel.starts_with('/') {
        return bad("absolute path");
    }
    for comp in rel.split('/') {
        match comp {
            "" => return bad("empty component (`//` or trailing `/`)"),
            "." => return bad("`.` component"),
            ".." => return bad("`..` component"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_canonical_relative_paths() {
        for p in [
            "a",
            "a/b",
            "dir/sub/file.txt",
            ".hidden",
            "a/..b",
            "a/b..",
            "x y/ü",
        ] {
            assert!(validate_rel_path(p).is_ok(), "{p}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        let long = "a/".repeat(2100) + "b";
        for p in [
            "", "/a", "/", "a/", "a//b", "./a", "a/./b", "..", "../a", "a/../b", "a/..", "a\0b",
            &long,
        ] {
            match validate_rel_path(p) {
                Err(StoreError::InvalidPath { path, .. }) => assert_eq!(path, p),
                other => panic!("{p:?} gave {other:?}"),
            }
        }
    }
}
