//! `GET /diff?as_of=T[&path=P][&after=K][&limit=N]`: what changed under
//! `P` (default: everything) since a point of the history: each path alive
//! then or now whose content (kind, root, size, mode) differs, as
//! `added` (absent or deleted then), `modified` or `deleted` (absent
//! now), in path order. Read from the state machine only
//! ([`SmReader::then_and_now`], pages of the history table under `P`),
//! never the disk. Paged like `ls`: at most `limit` entries (default
//! 1,000, at most 10,000), `next_after` continues; a page reads the paths
//! it reports and the unchanged ones between them.

use axum::extract::{RawQuery, State};
use axum::Json;
use filesyncd_raft::history::{PathRecord, ThenNow};

use super::asof::{as_of_error, describe, parse_as_of};
use super::listing::check_dir;
use super::types::{change, DiffAnswer, DiffEntry, EntryDesc};
use super::{bad_request, query, LS_DEFAULT_LIMIT, LS_MAX_LIMIT};
use crate::api::{internal, ApiError, ApiState};

/// Paths read from the state machine per page of the history.
const READ_PAGE: usize = 1000;

#[derive(Debug, PartialEq, Eq)]
struct DiffParams {
    as_of: String,
    path: String,
    after: Option<String>,
    limit: usize,
}

fn diff_params(q: Option<&str>) -> Result<DiffParams, String> {
    let mut p = DiffParams {
        as_of: String::new(),
        path: String::new(),
        after: None,
        limit: LS_DEFAULT_LIMIT,
    };
    let mut as_of = None;
    for (k, v) in query::parse(q)? {
        match k.as_str() {
            "as_of" => as_of = Some(v),
            "path" => p.path = v,
            "after" => p.after = Some(v),
            "limit" => {
                p.limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=LS_MAX_LIMIT).contains(n))
                    .ok_or_else(|| format!("limit: expected 1..={LS_MAX_LIMIT}, got {v:?}"))?;
            }
            other => return Err(format!("unknown parameter {other:?}")),
        }
    }
    p.as_of = as_of.ok_or("missing parameter `as_of`")?;
    check_dir(&p.path)?;
    Ok(p)
}

fn desc(r: Option<&PathRecord>) -> Option<EntryDesc> {
    let m = r?.state.as_ref()?;
    Some(EntryDesc {
        kind: match m.kind {
            filesyncd_raft::command::PutKind::File => "file",
            filesyncd_raft::command::PutKind::Dir => "dir",
            filesyncd_raft::command::PutKind::Symlink { .. } => "symlink",
        }
        .to_owned(),
        size: m.size,
        mode: m.mode,
        root: m.root.to_hex(),
    })
}

/// The diff entry of one path, if it changed.
pub fn diff_entry(t: &ThenNow) -> Option<DiffEntry> {
    if !t.changed() {
        return None;
    }
    let kind = match (&t.then, &t.now) {
        (None, _) => change::ADDED,
        (_, None) => change::DELETED,
        _ => change::MODIFIED,
    };
    let v = |r: &Option<PathRecord>| r.as_ref().map(|r| (r.version.index, r.version.pos));
    Some(DiffEntry {
        path: t.path.clone(),
        change: kind.to_owned(),
        then_version: v(&t.then),
        now_version: v(&t.now),
        then: desc(t.then.as_ref()),
        now: desc(t.now.as_ref()),
    })
}

pub(super) async fn diff(
    State(s): State<ApiState>,
    RawQuery(q): RawQuery,
) -> Result<Json<DiffAnswer>, ApiError> {
    let p = diff_params(q.as_deref()).map_err(bad_request)?;
    let spec = parse_as_of(&p.as_of).map_err(bad_request)?;
    let reader = s.node.reader().clone();
    let given = p.as_of.clone();
    let answer = tokio::task::spawn_blocking(move || {
        let at = reader.resolve_as_of(spec)?;
        let mut entries = Vec::new();
        let mut after = p.after.clone();
        let mut next_after = None;
        'pages: loop {
            let (page, next) = reader.then_and_now(&p.path, &at, after.as_deref(), READ_PAGE)?;
            for t in &page {
                if let Some(e) = diff_entry(t) {
                    entries.push(e);
                    if entries.len() >= p.limit {
                        next_after = Some(t.path.clone());
                        break 'pages;
                    }
                }
            }
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        Ok::<_, filesyncd_raft::state_machine::SmError>(DiffAnswer {
            as_of: describe(&p.as_of, &at),
            path: p.path,
            entries,
            next_after,
        })
    })
    .await
    .map_err(internal)?
    .map_err(|e| as_of_error(&given, e))?;
    Ok(Json(answer))
}

#[cfg(test)]
mod tests {
    use filesyncd_merkle::Hash;
    use filesyncd_raft::command::{PutKind, Version};
    use filesyncd_raft::history::FileMeta;

    use super::*;

    fn rec(index: u64, root: u8) -> PathRecord {
        PathRecord {
            version: Version::new(index, 0),
            time_ms: 1,
            origin: 1,
            state: Some(FileMeta {
                kind: PutKind::File,
                root: Hash([root; 32]),
                size: 3,
                mode: 0o644,
                mtime_ns: 0,
                holders: vec![1],
            }),
        }
    }

    #[test]
    fn changes_are_named() {
        let t = |then, now| ThenNow {
            path: "p".into(),
            then,
            now,
        };
        let kind = |t: ThenNow| diff_entry(&t).map(|e| e.change);
        assert_eq!(kind(t(None, Some(rec(2, 1)))).as_deref(), Some("added"));
        assert_eq!(kind(t(Some(rec(2, 1)), None)).as_deref(), Some("deleted"));
        assert_eq!(
            kind(t(Some(rec(2, 1)), Some(rec(5, 2)))).as_deref(),
            Some("modified")
        );
        assert_eq!(
            kind(t(Some(rec(2, 1)), Some(rec(5, 1)))),
            None,
            "same content"
        );
        let e = diff_entry(&t(Some(rec(2, 1)), Some(rec(5, 2)))).unwrap();
        assert_eq!(
            (e.then_version, e.now_version),
            (Some((2, 0)), Some((5, 0)))
        );
    }

    #[test]
    fn parameters() {
        let p = diff_params(Some("as_of=12&path=a%2Fb&limit=5")).unwrap();
        assert_eq!(
            (p.as_of.as_str(), p.path.as_str(), p.limit),
            ("12", "a/b", 5)
        );
        assert_eq!(diff_params(Some("as_of=1")).unwrap().path, "");
        for bad in [
            "",
            "path=a",
            "as_of=1&path=..",
            "as_of=1&limit=0",
            "as_of=1&x=1",
        ] {
            assert!(diff_params(Some(bad)).is_err(), "{bad}");
        }
    }
}
