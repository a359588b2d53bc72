//! The file routes of the control API: what the cluster holds, the history
//! of a path, restoring an old version, checking the disk against the
//! committed tree, and adopting the folder.
//!
//! | route | answer |
//! |---|---|
//! | `GET /ls?path=P[&recursive=1][&after=K][&limit=N]` | [`LsAnswer`]: the live entries directly below `P` (everything below with `recursive`), from the Raft state machine; a file `P` lists itself; 404 if nothing is there. Paged: `next_after` continues. |
//! | `GET /history?path=P` | [`HistoryAnswer`]: every retained version of `P`, oldest first, each committed / conflict / deleted |
//! | `POST /restore` [`RestoreRequest`] | [`Restored`]: writes a retained version (see [`restore`]) |
//! | `POST /restore/tree` [`TreeRestoreRequest`] | newline-delimited [`TreeLine`]s: a subtree as of a log index or time, to a destination or in place, with progress (see [`tree`]) |
//! | `GET /diff?as_of=T[&path=P][&after=K][&limit=N]` | [`DiffAnswer`]: what changed under `P` since `T` (see [`diff`]) |
//! | `POST /verify` | [`VerifyAnswer`]: rehashes the synced directory against the committed tree (see [`verify`]) |
//! | `POST /adopt` | [`Adopted`]: re-creates the folder marker on purpose and confirms withheld deletes |
//!
//! Paths are index paths: relative to the synced directory, `/`-separated,
//! no `.`/`..`, nothing in the daemon's `.filesyncd*` namespace
//! ([`listing::check_path`]); anything else is a 400. `ls`, `history` and
//! `diff` read only the state machine; `restore`, `verify` and `adopt` need the
//! sync service (503 without it). Reads and hashing run on the blocking
//! pool.

pub mod asof;
pub mod dest;
pub mod diff;
mod frozen;
pub mod listing;
pub mod query;
pub mod restore;
pub mod status;
pub mod tree;
pub mod types;
pub mod verify;

#[cfg(test)]
mod tests;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::oneshot;

use super::{internal, ApiError, ApiState};
use crate::daemon::sync::{SyncCommand, SyncHandle};
use listing::{check_dir, check_path, children, descendants, entry, history_entries};
pub use types::{
    Adopted, AsOfDesc, Confirmed, DiffAnswer, DiffEntry, Difference, EntryDesc, HistoryAnswer,
    HistoryEntry, KeptAs, LsAnswer, LsEntry, PathFailure, RestoreRequest, Restored, Skipped,
    TreeLine, TreeProgress, TreeRestoreRequest, TreeRestored, VerifyAnswer,
};

/// Entries per `ls` page unless `limit` says otherwise, and the most.
pub const LS_DEFAULT_LIMIT: usize = 1000;
pub const LS_MAX_LIMIT: usize = 10_000;

/// The file routes, for [`super::router`] (behind its auth layer).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/ls", get(ls))
        .route("/history", get(history))
        .route("/restore", post(restore::restore))
        .route("/restore/tree", post(tree::restore_tree))
        .route("/diff", get(diff::diff))
        .route("/verify", post(verify::verify))
        .route("/adopt", post(adopt))
        .route("/confirm", post(confirm))
}

pub(super) fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

pub(super) fn not_found(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, msg.into())
}

pub(super) fn conflict(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::CONFLICT, msg.into())
}

/// The sync handle, or 503.
pub(super) fn sync_of(s: &ApiState) -> Result<SyncHandle, ApiError> {
    s.sync.clone().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the sync service is not running on this node".into(),
        )
    })
}

/// The parameters of `GET /ls`.
#[derive(Debug, PartialEq, Eq)]
struct LsParams {
    path: String,
    recursive: bool,
    after: Option<String>,
    limit: usize,
}

fn flag(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "" | "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(format!("{key}: expected true or false, got {v:?}")),
    }
}

fn ls_params(query: Option<&str>) -> Result<LsParams, String> {
    let mut p = LsParams {
        path: String::new(),
        recursive: false,
        after: None,
        limit: LS_DEFAULT_LIMIT,
    };
    for (k, v) in query::parse(query)? {
        match k.as_str() {
            "path" => p.path = v,
            "recursive" => p.recursive = flag("recursive", &v)?,
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
    check_dir(&p.path)?;
    Ok(p)
}

/// The `path` parameter, required and checked.
fn path_param(query: Option<&str>) -> Result<String, String> {
    let mut path = None;
    for (k, v) in query::parse(query)? {
        match k.as_str() {
            "path" => path = Some(v),
            other => return Err(format!("unknown parameter {other:?}")),
        }
    }
    let path = path.ok_or("missing parameter `path`")?;
    check_path(&path)?;
    Ok(path)
}

async fn ls(State(s): State<ApiState>, RawQuery(q): RawQuery) -> Result<Json<LsAnswer>, ApiError> {
    let p = ls_params(q.as_deref()).map_err(bad_request)?;
    let reader = s.node.reader().clone();
    let res = tokio::task::spawn_blocking(move || {
        let own = if p.path.is_empty() {
            None
        } else {
            reader.get(&p.path)?
        };
        if let Some(rec) = &own {
            if rec.state.as_ref().is_some_and(|m| !m.is_dir()) {
                return Ok(Some(LsAnswer {
                    entries: vec![entry(&p.path, rec)],
                    path: p.path,
                    recursive: p.recursive,
                    next_after: None,
                }));
            }
        }
        let (entries, next_after) = if p.recursive {
            descendants(&reader, &p.path, p.after.as_deref(), p.limit)?
        } else {
            children(&reader, &p.path, p.after.as_deref(), p.limit)?
        };
        if entries.is_empty() && own.is_none() && !p.path.is_empty() && p.after.is_none() {
            return Ok(None);
        }
        Ok::<_, filesyncd_raft::state_machine::SmError>(Some(LsAnswer {
            path: p.path,
            recursive: p.recursive,
            entries,
            next_after,
        }))
    })
    .await
    .map_err(internal)?
    .map_err(internal)?;
    res.map(Json)
        .ok_or_else(|| not_found("no such path in the committed tree"))
}

async fn history(
    State(s): State<ApiState>,
    RawQuery(q): RawQuery,
) -> Result<Json<HistoryAnswer>, ApiError> {
    let path = path_param(q.as_deref()).map_err(bad_request)?;
    let reader = s.node.reader().clone();
    let p = path.clone();
    let records = tokio::task::spawn_blocking(move || reader.history(&p))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    if records.is_empty() {
        return Err(not_found(format!(
            "no retained history for {path:?} (never committed, or pruned by retention)"
        )));
    }
    Ok(Json(HistoryAnswer {
        versions: history_entries(&path, &records),
        path,
    }))
}

/// Sends the command `make` builds around a reply channel to the sync task
/// and waits for its answer (`what` names it in a failure).
async fn ask_sync<T>(
    sync: &SyncHandle,
    what: &str,
    make: impl FnOnce(oneshot::Sender<Result<T, String>>) -> SyncCommand,
) -> Result<T, ApiError> {
    let gone = || {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the sync service stopped".into(),
        )
    };
    let (reply, answer) = oneshot::channel();
    sync.commands.send(make(reply)).await.map_err(|_| gone())?;
    answer
        .await
        .map_err(|_| gone())?
        .map_err(|e| internal(format!("{what} failed: {e}")))
}

async fn adopt(State(s): State<ApiState>) -> Result<Json<Adopted>, ApiError> {
    let sync = sync_of(&s)?;
    ask_sync(&sync, "adopt", |reply| SyncCommand::Adopt { reply }).await?;
    Ok(Json(Adopted {
        adopted: true,
        dir: sync.root.display().to_string(),
    }))
}

/// `POST /confirm`: the withheld local changes (a mass delete, a folder's
/// mass change) go out; answers how many were withheld.
async fn confirm(State(s): State<ApiState>) -> Result<Json<Confirmed>, ApiError> {
    let sync = sync_of(&s)?;
    let withheld = ask_sync(&sync, "confirm", |reply| SyncCommand::Confirm { reply }).await?;
    Ok(Json(Confirmed { withheld }))
}

#[cfg(test)]
mod param_tests {
    use super::*;

    #[test]
    fn ls_parameters() {
        let p = ls_params(Some("path=a%2Fb&recursive=1&after=a%2Fb%2Fc&limit=5")).unwrap();
        assert_eq!(
            p,
            LsParams {
                path: "a/b".into(),
                recursive: true,
                after: Some("a/b/c".into()),
                limit: 5
            }
        );
        assert_eq!(ls_params(None).unwrap().path, "");
        assert_eq!(ls_params(None).unwrap().limit, LS_DEFAULT_LIMIT);
        for bad in [
            "path=..",
            "path=%2Fetc",
            "path=.filesyncd-marker",
            "limit=0",
            "limit=100000",
            "recursive=maybe",
            "colour=1",
        ] {
            assert!(ls_params(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn history_needs_a_valid_path() {
        assert_eq!(path_param(Some("path=a.txt")).unwrap(), "a.txt");
        for bad in [
            None,
            Some(""),
            Some("path="),
            Some("path=a%2F..%2Fb"),
            Some("p=a"),
        ] {
            assert!(path_param(bad).is_err(), "{bad:?}");
        }
    }
}
