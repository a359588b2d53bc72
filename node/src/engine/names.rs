//! Names: which paths may be synced, the daemon's own namespace, conflict
//! copies.
//!
//! # Syncable paths
//! Relative, '/'-separated, UTF-8; 1..=4096 bytes, each component 1..=255
//! bytes; no empty, `.` or `..` component; no NUL or control character; and
//! nothing in the daemon's namespace. These are the Raft index's rules: a
//! path failing them is skipped with a warning by the scan, never proposed,
//! and never written by the materializer.
//!
//! # The daemon's namespace (never synced, never deleted by a plan)
//! Any component starting with `.filesyncd` (the marker
//! [`MARKER`] = `.filesyncd-marker`, state dirs) or containing
//! `.filesyncd-tmp` (temp files [`TMP_PREFIX`]`<random>` of writes in
//! flight).
//!
//! # Conflict copies
//! `<stem>.sync-conflict-<YYYYMMDD-HHMMSS>-<node>.<ext>` in the same
//! directory (Syncthing's scheme, and the same rule the Raft apply uses for
//! stale puts): `<ext>` follows the LAST dot unless that dot starts or ends
//! the name; UTC time; `-<n>` after the node for the n-th candidate (n >= 2);
//! the stem is cut (at a char boundary) so the name fits 255 bytes.

/// The marker file at the root, holding the cluster id.
pub const MARKER: &str = ".filesyncd-marker";
/// Prefix of temp files of writes in flight.
pub const TMP_PREFIX: &str = ".filesyncd-tmp-";
/// The ignore file at the root (gitignore syntax).
pub const IGNORE_FILE: &str = ".filesyncignore";

/// Longest path accepted, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest component accepted, in bytes.
pub const MAX_COMPONENT_BYTES: usize = 255;
/// Longest symlink target accepted, in bytes.
pub const MAX_TARGET_BYTES: usize = 4096;

/// Whether one path component belongs to the daemon.
pub fn is_reserved_component(c: &str) -> bool {
    c.starts_with(".filesyncd") || c.contains(".filesyncd-tmp")
}

/// Why a path cannot be synced; `None` if it can.
pub fn invalid_reason(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        return Some("empty path");
    }
    if path.len() > MAX_PATH_BYTES {
        return Some("path longer than 4096 bytes");
    }
    if path.starts_with('/') {
        return Some("absolute path");
    }
    if path.chars().any(char::is_control) {
        return Some("NUL or control character");
    }
    for c in path.split('/') {
        if c.is_empty() {
            return Some("empty component");
        }
        if c.len() > MAX_COMPONENT_BYTES {
            return Some("component longer than 255 bytes");
        }
        if c == "." || c == ".." {
            return Some("`.` or `..` component");
        }
        if is_reserved_component(c) {
            return Some("inside the daemon's namespace");
        }
    }
    None
}

/// Whether `path` may be synced (see the module doc).
pub fn is_syncable(path: &str) -> bool {
    invalid_reason(path).is_none()
}

/// Whether a symlink target may be synced: 1..=4096 bytes, no NUL.
pub fn valid_target(target: &str) -> bool {
    !target.is_empty() && target.len() <= MAX_TARGET_BYTES && !target.contains('\0')
}

/// Whether a symlink at `link` (a relative path under the root) pointing
/// to `target` can lead outside the synced root, as rsync's `--safe-links`
/// reads it: an absolute target, or one whose `..` components climb above
/// the root from the link's directory. (Where the components it names are
/// themselves links is not looked at: each link is judged on its own.)
pub fn link_escapes_root(link: &str, target: &str) -> bool {
    if target.starts_with('/') {
        return true;
    }
    let mut depth = depth(parent(link)) as i64 - i64::from(parent(link).is_empty());
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => depth += 1,
        }
    }
    false
}

/// The parent of a relative path (`""` for a top-level name).
pub fn parent(path: &str) -> &str {
    path.rfind('/').map_or("", |i| &path[..i])
}

/// The last component of a relative path.
pub fn file_name(path: &str) -> &str {
    path.rfind('/').map_or(path, |i| &path[i + 1..])
}

/// Number of components.
pub fn depth(path: &str) -> usize {
    path.split('/').count()
}

/// The conflict-copy path rule is Raft's (every node must name a conflict
/// copy the same as the committed one): one implementation, re-exported.
pub use filesyncd_raft::paths::conflict_name;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncable_paths() {
        for ok in [
            "a",
            "a/b",
            "a b/.c",
            "é/ü",
            "x.sync-conflict-1-2.txt",
            ".filesyncignore",
        ] {
            assert!(is_syncable(ok), "{ok}");
        }
        let long_comp = "a".repeat(256);
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "a/../b",
            ".",
            "a\nb",
            ".filesyncd-marker",
            "d/.filesyncd-tmp-abc",
            "x.filesyncd-tmp-1",
            ".filesyncd/state",
            &long_comp,
        ] {
            assert!(!is_syncable(bad), "{bad:?}");
        }
    }

    #[test]
    fn conflict_names_fit_the_engine_namespace() {
        let t = 1_735_689_599_000; // 2024-12-31 23:59:59 UTC
        for (path, node, n) in [("a.tar.gz", 7, 1), ("h/.bashrc", 1, 1), ("r.pdf", 7, 3)] {
            let c = conflict_name(path, t, node, n);
            assert!(is_syncable(&c), "{c} must be a syncable name");
        }
        assert_eq!(
            conflict_name("docs/report.pdf", t, 7, 1),
            "docs/report.sync-conflict-20241231-235959-7.pdf"
        );
        let long = format!("{}.txt", "é".repeat(200));
        let c = conflict_name(&long, t, 7, 1);
        assert!(
            c.len() <= MAX_COMPONENT_BYTES && c.ends_with("-7.txt"),
            "{c}"
        );
    }

    #[test]
    fn path_helpers() {
        assert_eq!(parent("a/b/c"), "a/b");
        assert_eq!(parent("a"), "");
        assert_eq!(file_name("a/b/c"), "c");
        assert_eq!(depth("a/b/c"), 3);
        assert!(valid_target("../x") && !valid_target("") && !valid_target("a\0"));
    }
}

#[cfg(test)]
mod link_tests {
    use super::link_escapes_root;

    #[test]
    fn links_that_climb_out_of_the_root_or_are_absolute_escape() {
        for (link, target, out) in [
            ("a", "b", false),
            ("a", "b/c", false),
            ("a", "x/..", false),
            ("a", ".", false),
            ("a", "..", true),
            ("a", "../x", true),
            ("a", "x/../../y", true),
            ("a", "/etc/passwd", true),
            ("a", "/", true),
            ("d/a", "../x", false),
            ("d/a", "./../x", false),
            ("d/a", "../../x", true),
            ("d/e/a", "../../x", false),
            ("d/e/a", "../../../x", true),
            ("d/e/a", "..//..//x", false),
        ] {
            assert_eq!(link_escapes_root(link, target), out, "{link} -> {target}");
        }
    }
}
