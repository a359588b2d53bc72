//! The pure parts of `ls` and `history`: request path checks, listing the
//! children of a directory from the live index without walking its
//! subtrees, and how a history record is shown (including whether it is a
//! conflict copy).

use filesyncd_raft::command::PutKind;
use filesyncd_raft::history::PathRecord;
use filesyncd_raft::state_machine::{SmError, SmReader};

use super::types::{HistoryEntry, LsEntry, STATE_COMMITTED, STATE_CONFLICT, STATE_DELETED};
use crate::api::types::node_hex;
use crate::engine::names;

/// Why a path in a request is refused.
pub fn check_path(path: &str) -> Result<(), String> {
    match names::invalid_reason(path) {
        None => Ok(()),
        Some(reason) => Err(format!(
            "path {path:?}: {reason} (paths are relative to the synced directory, \
             without `.` or `..`, outside the daemon's `.filesyncd*` names)"
        )),
    }
}

/// Like [`check_path`], but `""` (the synced directory itself) is allowed.
pub fn check_dir(path: &str) -> Result<(), String> {
    if path.is_empty() {
        Ok(())
    } else {
        check_path(path)
    }
}

/// The live index, as `ls` reads it (the state machine, or a map in tests).
pub trait LiveIndex {
    /// Live paths under `dir` (recursively, `""` = all), in path order,
    /// strictly after `after`, at most `limit`.
    fn list(
        &self,
        dir: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, PathRecord)>, SmError>;
    /// The live record of `path`.
    fn get(&self, path: &str) -> Result<Option<PathRecord>, SmError>;
}

impl LiveIndex for SmReader {
    fn list(
        &self,
        dir: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, PathRecord)>, SmError> {
        SmReader::list(self, dir, after, limit)
    }

    fn get(&self, path: &str) -> Result<Option<PathRecord>, SmError> {
        SmReader::get(self, path)
    }
}

/// Entries read from the index per round trip.
const PAGE: usize = 256;

/// A listing position: continue strictly after `key`; a key ending in `/`
/// means "after everything below that directory" (no valid path ends in
/// `/`, so the two cannot be confused).
fn past_subtree(dir: &str) -> String {
    format!("{dir}/")
}

/// The smallest key after every key below `dir` (`'0'` follows `'/'`).
fn after_subtree(dir: &str) -> String {
    format!("{dir}0")
}

/// One page of `ls`: the direct children of `dir` (`""` = the root), in
/// path order, starting after the cursor `after`, at most `limit` entries;
/// returns them and the cursor to continue from (`None`: done).
///
/// A child directory with entries below it but no live record of its own
/// is listed as implicit. Subtrees are skipped, not walked: after the first
/// key below a child directory the listing jumps past that directory.
pub fn children(
    ix: &impl LiveIndex,
    dir: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<(Vec<LsEntry>, Option<String>), SmError> {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let mut out: Vec<LsEntry> = Vec::new();
    let mut cursor: Option<String> = after.map(str::to_owned);
    loop {
        // A jump past a child directory: its next sibling candidate is the
        // key right after the subtree, which `list` (strictly after) skips.
        if let Some(skipped) = cursor.as_deref().and_then(|c| c.strip_suffix('/')) {
            if out.len() >= limit {
                return Ok((out, cursor));
            }
            let next = after_subtree(skipped);
            if let Some(rec) = ix.get(&next)? {
                out.push(entry(&next, &rec));
            }
            cursor = Some(next);
        }
        if out.len() >= limit {
            return Ok((out, cursor));
        }
        let page = ix.list(dir, cursor.as_deref(), PAGE)?;
        if page.is_empty() {
            return Ok((out, None));
        }
        for (path, rec) in page {
            let Some(rest) = path.strip_prefix(prefix.as_str()) else {
                cursor = Some(path);
                continue;
            };
            match rest.find('/') {
                None => {
                    if out.len() >= limit {
                        return Ok((out, cursor));
                    }
                    out.push(entry(&path, &rec));
                    cursor = Some(path);
                }
                Some(i) => {
                    let child = format!("{prefix}{}", &rest[..i]);
                    // A live child sorts before its subtree: it was listed.
                    if ix.get(&child)?.is_none() {
                        if out.len() >= limit {
                            return Ok((out, cursor));
                        }
                        out.push(implicit_dir(&child));
                    }
                    cursor = Some(past_subtree(&child));
                    break;
                }
            }
        }
    }
}

/// One page of a recursive listing of everything below `dir`.
pub fn descendants(
    ix: &impl LiveIndex,
    dir: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<(Vec<LsEntry>, Option<String>), SmError> {
    let page = ix.list(dir, after, limit.saturating_add(1))?;
    let more = page.len() > limit;
    let out: Vec<LsEntry> = page.iter().take(limit).map(|(p, r)| entry(p, r)).collect();
    let next = if more {
        out.last().map(|e| e.path.clone())
    } else {
        None
    };
    Ok((out, next))
}

fn kind_name(k: &PutKind) -> &'static str {
    match k {
        PutKind::File => "file",
        PutKind::Dir => "dir",
        PutKind::Symlink { .. } => "symlink",
    }
}

/// How `ls` shows a live record.
pub fn entry(path: &str, rec: &PathRecord) -> LsEntry {
    let (kind, size, mode, root, target, mtime) = match &rec.state {
        Some(m) => (
            kind_name(&m.kind),
            m.size,
            m.mode,
            Some(m.root.to_hex()),
            match &m.kind {
                PutKind::Symlink { target } => Some(target.clone()),
                _ => None,
            },
            Some(m.mtime_ns),
        ),
        None => ("deleted", 0, 0, None, None, None),
    };
    LsEntry {
        path: path.to_owned(),
        kind: kind.to_owned(),
        size,
        mode,
        root,
        target,
        index: Some(rec.version.index),
        pos: Some(rec.version.pos),
        time_ms: Some(rec.time_ms),
        origin: Some(node_hex(rec.origin)),
        mtime_ns: mtime,
        implicit: false,
    }
}

fn implicit_dir(path: &str) -> LsEntry {
    LsEntry {
        path: path.to_owned(),
        kind: "dir".to_owned(),
        size: 0,
        mode: 0,
        root: None,
        target: None,
        index: None,
        pos: None,
        time_ms: None,
        origin: None,
        mtime_ns: None,
        implicit: true,
    }
}

/// Whether the file name of `path` carries a conflict-copy tag naming
/// `origin`: `.sync-conflict-YYYYMMDD-HHMMSS-<origin>` followed by the end,
/// `.` (the extension) or `-<n>` (a disambiguated candidate), as
/// [`filesyncd_raft::paths::conflict_name`] builds it (origin in decimal).
pub fn has_conflict_tag(path: &str, origin: u64) -> bool {
    const TAG: &str = ".sync-conflict-";
    let name = names::file_name(path);
    let who = origin.to_string();
    name.match_indices(TAG).any(|(i, _)| {
        let rest = &name.as_bytes()[i + TAG.len()..];
        let stamp_ok = rest.len() >= 16
            && rest[..8].iter().all(u8::is_ascii_digit)
            && rest[8] == b'-'
            && rest[9..15].iter().all(u8::is_ascii_digit)
            && rest[15] == b'-';
        if !stamp_ok {
            return false;
        }
        let Some(after) = rest[16..].strip_prefix(who.as_bytes()) else {
            return false;
        };
        match after.first() {
            None | Some(b'.') => true,
            Some(b'-') => {
                let digits = after[1..].iter().take_while(|b| b.is_ascii_digit()).count();
                digits > 0 && matches!(after.get(1 + digits), None | Some(b'.'))
            }
            Some(_) => false,
        }
    })
}

/// How `history` shows the versions of `path` (oldest first).
///
/// The state machine's records carry no conflict flag, so "conflict" is
/// derived: a put that starts the path's life (its first retained record,
/// or the first after a deletion) under a name tagged with its own origin
/// ([`has_conflict_tag`]). That is how apply commits a stale put, and how
/// the engine names local content it moved aside. Later edits of a
/// conflict copy are ordinary committed versions.
pub fn history_entries(path: &str, records: &[PathRecord]) -> Vec<HistoryEntry> {
    let last = records.len().saturating_sub(1);
    records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let starts_life = i == 0 || records[i - 1].state.is_none();
            let state = match &r.state {
                None => STATE_DELETED,
                Some(_) if starts_life && has_conflict_tag(path, r.origin) => STATE_CONFLICT,
                Some(_) => STATE_COMMITTED,
            };
            let m = r.state.as_ref();
            HistoryEntry {
                index: r.version.index,
                pos: r.version.pos,
                time_ms: r.time_ms,
                origin: node_hex(r.origin),
                kind: m.map(|m| kind_name(&m.kind).to_owned()),
                size: m.map(|m| m.size),
                root: m.map(|m| m.root.to_hex()),
                mode: m.map(|m| m.mode),
                mtime_ns: m.map(|m| m.mtime_ns),
                holders: m
                    .map(|m| m.holders.iter().map(|h| node_hex(*h)).collect())
                    .unwrap_or_default(),
                state: state.to_owned(),
                current: i == last,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use filesyncd_merkle::Hash;
    use filesyncd_raft::command::Version;
    use filesyncd_raft::history::FileMeta;
    use filesyncd_raft::paths::conflict_name;

    use super::*;

    /// The live table's semantics over a map.
    struct MapIndex(BTreeMap<String, PathRecord>);

    impl LiveIndex for MapIndex {
        fn list(
            &self,
            dir: &str,
            after: Option<&str>,
            limit: usize,
        ) -> Result<Vec<(String, PathRecord)>, SmError> {
            let prefix = if dir.is_empty() {
                String::new()
            } else {
                format!("{dir}/")
            };
            Ok(self
                .0
                .iter()
                .filter(|(k, _)| k.starts_with(&prefix))
                .filter(|(k, _)| after.is_none_or(|a| k.as_str() > a))
                .take(limit)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect())
        }

        fn get(&self, path: &str) -> Result<Option<PathRecord>, SmError> {
            Ok(self.0.get(path).cloned())
        }
    }

    fn rec(kind: PutKind, index: u64) -> PathRecord {
        PathRecord {
            version: Version::new(index, 0),
            time_ms: 1000,
            origin: 7,
            state: Some(FileMeta {
                kind,
                root: Hash([1; 32]),
                size: 3,
                mode: 0o644,
                mtime_ns: 5,
                holders: vec![7],
            }),
        }
    }

    fn index(paths: &[(&str, PutKind)]) -> MapIndex {
        MapIndex(
            paths
                .iter()
                .enumerate()
                .map(|(i, (p, k))| (p.to_string(), rec(k.clone(), i as u64 + 1)))
                .collect(),
        )
    }

    fn all_pages(ix: &MapIndex, dir: &str, limit: usize) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..1000 {
            let (page, next) = children(ix, dir, after.as_deref(), limit).unwrap();
            assert!(page.len() <= limit);
            out.extend(page.into_iter().map(|e| (e.path, e.implicit)));
            match next {
                Some(n) => after = Some(n),
                None => return out,
            }
        }
        panic!("listing does not end");
    }

    #[test]
    fn children_skip_subtrees_and_keep_siblings_that_sort_inside() {
        use PutKind::{Dir, File};
        let ix = index(&[
            ("a", Dir),
            ("a.txt", File),
            ("a/x", File),
            ("a/y/z", File),
            ("a0", File),
            ("a0/deep", File),
            ("b/c/d", File),
            ("b/c0", File),
            ("c", File),
        ]);
        let want = vec![
            ("a".to_string(), false),
            ("a.txt".to_string(), false),
            ("a0".to_string(), false),
            ("b".to_string(), true),
            ("c".to_string(), false),
        ];
        for limit in [1, 2, 3, 100] {
            assert_eq!(all_pages(&ix, "", limit), want, "limit {limit}");
        }
        let want_a = vec![("a/x".to_string(), false), ("a/y".to_string(), true)];
        assert_eq!(all_pages(&ix, "a", 1), want_a);
        let want_b = vec![("b/c".to_string(), true), ("b/c0".to_string(), false)];
        for limit in [1, 5] {
            assert_eq!(all_pages(&ix, "b", limit), want_b, "limit {limit}");
        }
        assert_eq!(all_pages(&ix, "c", 5), vec![]);
    }

    #[test]
    fn recursive_pages_cover_everything_once() {
        use PutKind::{Dir, File};
        let ix = index(&[("a", Dir), ("a/b", File), ("a/c", File), ("b", File)]);
        let (p1, n1) = descendants(&ix, "a", None, 1).unwrap();
        assert_eq!(p1.len(), 1);
        let (p2, n2) = descendants(&ix, "a", n1.as_deref(), 1).unwrap();
        assert_eq!((p1[0].path.as_str(), p2[0].path.as_str()), ("a/b", "a/c"));
        assert_eq!(n2, None);
        assert_eq!(descendants(&ix, "", None, 10).unwrap().0.len(), 4);
    }

    #[test]
    fn request_paths_are_checked() {
        for ok in ["a", "a/b.txt", "x.sync-conflict-1-2"] {
            assert_eq!(check_path(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "./a",
            "a/",
            ".filesyncd-marker",
            "d/.filesyncd-tmp-1",
            "a\nb",
        ] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
        assert_eq!(check_dir(""), Ok(()));
        assert!(check_dir("/").is_err());
        assert!(check_path("../x")
            .unwrap_err()
            .contains("relative to the synced directory"));
    }

    #[test]
    fn conflict_tags_follow_the_naming_rule() {
        let t = 1_735_689_599_000;
        for (p, n) in [
            ("docs/report.pdf", 1),
            ("a.tar.gz", 1),
            ("Makefile", 1),
            ("h/.bashrc", 1),
            ("r.pdf", 3),
        ] {
            let c = conflict_name(p, t, 42, n);
            assert!(has_conflict_tag(&c, 42), "{c}");
            assert!(!has_conflict_tag(&c, 4), "{c}: another origin");
            assert!(!has_conflict_tag(p, 42), "{p}");
        }
        for not in [
            "a.sync-conflict-2024-1.txt",
            "a.sync-conflict-20241231-235959-42x.txt",
            "a.sync-conflict-20241231-235959-42-.txt",
            "a.sync-conflict-20241231-235959-.txt",
            "dir.sync-conflict-20241231-235959-42/file",
        ] {
            assert!(!has_conflict_tag(not, 42), "{not}");
        }
    }

    #[test]
    fn history_states() {
        let put = |i, origin| PathRecord {
            origin,
            ..rec(PutKind::File, i)
        };
        let tomb = |i| PathRecord {
            version: Version::new(i, 0),
            time_ms: 1,
            origin: 7,
            state: None,
        };
        let name = conflict_name("r.txt", 1_000, 9, 1);
        let recs = vec![put(1, 9), put(2, 9), tomb(3), put(4, 9)];
        let states: Vec<String> = history_entries(&name, &recs)
            .into_iter()
            .map(|h| h.state)
            .collect();
        assert_eq!(states, ["conflict", "committed", "deleted", "conflict"]);
        let plain = history_entries("r.txt", &recs);
        assert_eq!(plain[0].state, "committed");
        assert_eq!(plain[2].kind, None);
        assert!(plain[3].current && !plain[0].current);
        assert_eq!(plain[0].origin, "0000000000000009");
        assert_eq!(plain[0].holders, vec!["0000000000000007".to_string()]);
    }
}
