//! Path rules of the index, and conflict-copy names.
//!
//! # Valid paths
//! An index path is relative to the synced directory and '/'-separated:
//! - 1..=[`MAX_PATH_BYTES`] bytes, each component 1..=[`MAX_COMPONENT_BYTES`] bytes;
//! - no leading '/', no empty component (so no trailing '/' and no "//"), no `.` or `..`;
//! - no NUL and no control character (C0, DEL, C1);
//! - nothing in the daemon's own namespace: no component starting with `.filesyncd`
//!   (covers `.filesyncd/`, `.filesyncd-marker`, ...) and none containing `.filesyncd-tmp`.
//!
//! Apply checks every path it is given ([`validate`]); a bad op is rejected, never indexed.
//!
//! # Conflict copies
//! A stale put is committed at `<stem>.sync-conflict-<YYYYMMDD-HHMMSS>-<origin>.<ext>` in the
//! same directory ([`conflict_name`]). `<ext>` is what follows the LAST dot of the file name,
//! unless that dot is the first character (dotfile: `.bashrc` has no extension) or the last
//! one (`name.` has none); without an extension there is no trailing dot. The time is the
//! entry's `time_ms` in UTC, the origin the op's node id in decimal, so every node derives the
//! same name. If the name is taken, candidates `n = 2, 3, ...` insert `-<n>` after the origin.
//! A stem too long for [`MAX_COMPONENT_BYTES`] is cut at a char boundary.

use thiserror::Error;

/// Longest path accepted, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest path component accepted, in bytes.
pub const MAX_COMPONENT_BYTES: usize = 255;
/// Longest symlink target accepted, in bytes.
pub const MAX_TARGET_BYTES: usize = 4096;

/// Why a path is not a valid index path.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PathError {
    #[error("empty path")]
    Empty,
    #[error("path longer than {MAX_PATH_BYTES} bytes")]
    TooLong,
    #[error("absolute path")]
    Absolute,
    #[error("empty component")]
    EmptyComponent,
    #[error("component longer than {MAX_COMPONENT_BYTES} bytes")]
    ComponentTooLong,
    #[error("`.` or `..` component")]
    DotComponent,
    #[error("NUL or control character")]
    ControlChar,
    #[error("inside the daemon's namespace")]
    Reserved,
}

/// Checks `path` against the rules above.
pub fn validate(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    if path.starts_with('/') {
        return Err(PathError::Absolute);
    }
    if path.chars().any(char::is_control) {
        return Err(PathError::ControlChar);
    }
    for c in path.split('/') {
        if c.is_empty() {
            return Err(PathError::EmptyComponent);
        }
        if c.len() > MAX_COMPONENT_BYTES {
            return Err(PathError::ComponentTooLong);
        }
        if c == "." || c == ".." {
            return Err(PathError::DotComponent);
        }
        if c.starts_with(".filesyncd") || c.contains(".filesyncd-tmp") {
            return Err(PathError::Reserved);
        }
    }
    Ok(())
}

/// A symlink target is kept verbatim but must be 1..=[`MAX_TARGET_BYTES`] bytes without NUL.
pub fn valid_target(target: &str) -> bool {
    !target.is_empty() && target.len() <= MAX_TARGET_BYTES && !target.contains('\0')
}

/// The proper ancestors of `path`, shortest first: `a/b/c` → `a`, `a/b`.
pub fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// The conflict-copy path for `path` (see the module doc). `n` = 1 is the plain name,
/// `n` ≥ 2 the disambiguated ones.
pub fn conflict_name(path: &str, time_ms: u64, origin: u64, n: u32) -> String {
    let (dir, name) = match path.rfind('/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => ("", path),
    };
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 && i + 1 < name.len() => (&name[..i], Some(&name[i + 1..])),
        _ => (name, None),
    };
    let mut suffix = format!(".sync-conflict-{}-{origin}", utc_stamp(time_ms));
    if n >= 2 {
        suffix.push_str(&format!("-{n}"));
    }
    if let Some(ext) = ext {
        suffix.push('.');
        suffix.push_str(ext);
    }
    let room = MAX_COMPONENT_BYTES.saturating_sub(suffix.len());
    let mut cut = stem.len().min(room);
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{dir}{}{suffix}", &stem[..cut])
}

/// `YYYYMMDD-HHMMSS` of a Unix time in milliseconds, UTC.
pub fn utc_stamp(time_ms: u64) -> String {
    let secs = time_ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01: the classic
/// era-based conversion (400-year eras of 146 097 days, years starting on March 1st).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z / 146_097;
    let doe = z % 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365], from March 1st
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_paths() {
        for p in [
            "a",
            "a/b/c.txt",
            ".bashrc",
            "dir/.hidden",
            "x..y",
            "...",
            "filesyncd",
            "über/日本",
        ] {
            assert_eq!(validate(p), Ok(()), "{p}");
        }
    }

    #[test]
    fn rejects_bad_paths() {
        let long_comp = "x".repeat(256);
        let long_path = vec!["y"; 2049].join("/");
        let cases: Vec<(&str, PathError)> = vec![
            ("", PathError::Empty),
            ("/etc/passwd", PathError::Absolute),
            ("a//b", PathError::EmptyComponent),
            ("a/", PathError::EmptyComponent),
            ("./a", PathError::DotComponent),
            ("a/../b", PathError::DotComponent),
            ("..", PathError::DotComponent),
            ("a\0b", PathError::ControlChar),
            ("a\nb", PathError::ControlChar),
            ("a\u{7f}", PathError::ControlChar),
            ("a\u{85}", PathError::ControlChar),
            (&long_comp, PathError::ComponentTooLong),
            (&long_path, PathError::TooLong),
            (".filesyncd", PathError::Reserved),
            (".filesyncd/state.redb", PathError::Reserved),
            ("sub/.filesyncd-marker", PathError::Reserved),
            ("d/foo.filesyncd-tmp.123", PathError::Reserved),
            (".filesyncdX", PathError::Reserved),
        ];
        for (p, e) in cases {
            assert_eq!(validate(p), Err(e), "{p:?}");
        }
    }

    #[test]
    fn ancestors_shortest_first() {
        assert_eq!(ancestors("a/b/c").collect::<Vec<_>>(), vec!["a", "a/b"]);
        assert_eq!(ancestors("a").count(), 0);
    }

    #[test]
    fn utc_stamps_match_known_dates() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        // 2000-02-29 12:34:56 UTC = 951827696 s (leap day of a 400-year leap year).
        assert_eq!(utc_stamp(951_827_696_789), "20000229-123456");
        // 2024-12-31 23:59:59 UTC = 1735689599 s.
        assert_eq!(utc_stamp(1_735_689_599_000), "20241231-235959");
        // 2100-03-01 00:00:00 UTC = 4107542400 s (2100 is not a leap year).
        assert_eq!(utc_stamp(4_107_542_400_000), "21000301-000000");
    }

    #[test]
    fn conflict_names() {
        let t = 1_735_689_599_000; // 20241231-235959
        assert_eq!(
            conflict_name("docs/report.pdf", t, 7, 1),
            "docs/report.sync-conflict-20241231-235959-7.pdf"
        );
        assert_eq!(
            conflict_name("a.tar.gz", t, 7, 1),
            "a.tar.sync-conflict-20241231-235959-7.gz"
        );
        assert_eq!(
            conflict_name("Makefile", t, 12, 1),
            "Makefile.sync-conflict-20241231-235959-12"
        );
        assert_eq!(
            conflict_name("h/.bashrc", t, 1, 1),
            "h/.bashrc.sync-conflict-20241231-235959-1"
        );
        assert_eq!(
            conflict_name("name.", t, 1, 1),
            "name..sync-conflict-20241231-235959-1"
        );
        assert_eq!(
            conflict_name("r.pdf", t, 7, 3),
            "r.sync-conflict-20241231-235959-7-3.pdf"
        );
        let long = format!("{}.txt", "é".repeat(126)); // 252 + 4 bytes
        let c = conflict_name(&long, t, 7, 1);
        assert!(c.len() <= MAX_COMPONENT_BYTES, "{}", c.len());
        assert!(c.ends_with(".sync-conflict-20241231-235959-7.txt"));
        assert_eq!(validate(&c), Ok(()));
    }
}
