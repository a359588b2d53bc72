//! Crash points at the durable boundaries of filesyncd, for the crash suite
//! (`tests/tests/crash.rs`).
//!
//! Every crate above this one (the Raft state machine and log, the node's
//! materializer, offers and local index) marks its boundaries with
//! [`hit`]`("name")`. Built without the `failpoints` feature, [`hit`] is an
//! empty inline function. Built with it, the names are [fail] points
//! configured from the `FAILPOINTS` environment variable at start-up
//! ([`setup_from_env`]), in the fail crate's syntax:
//! `FAILPOINTS='materialize::renamed=3*off->return'` lets three passes go
//! by and then takes the action `return` at the fourth, which here means
//! **crash**: the process aborts on the spot, as a power cut or a `kill -9`
//! would leave it (nothing is flushed, no destructor runs). Other actions
//! (`sleep(ms)`, `pause`, `panic`, `print`) behave as the fail crate
//! documents.
//!
//! [`NAMES`] lists every point; a test asks for each of them.
//!
//! [fail]: https://docs.rs/fail

/// Every crash point, in the order data passes them on a peer.
pub const NAMES: &[&str] = &[
    // chunkstore: received content, before its one commit.
    "chunkstore::put_before_commit",
    // node: a peer's stored copy is durable, its ack not yet sent.
    "offer::stored_before_ack",
    // raft: the log append is written, its callback not yet called.
    "raft::log_appended",
    // raft: the state machine's commit of applied entries, before and after.
    "raft::apply_before_commit",
    "raft::applied",
    // raft: an installed snapshot is committed, not yet reported.
    "raft::snapshot_installed",
    // node: a batch of files staged, flushed, renamed, dirs flushed, indexed.
    "materialize::staged",
    "materialize::flushed",
    "materialize::renamed",
    "materialize::dirs_synced",
    "materialize::indexed",
    // node: the local index's commit after a step placed files.
    "local_index::committed",
];

/// Passes the crash point `name` (see the module doc).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &'static str) {}

/// Passes the crash point `name` (see the module doc).
#[cfg(feature = "failpoints")]
pub fn hit(name: &'static str) {
    debug_assert!(NAMES.contains(&name), "unlisted crash point {name}");
    if fail::eval(name, |_| ()).is_some() {
        tracing::error!(failpoint = name, "crash point reached: aborting");
        std::process::abort();
    }
}

/// Whether this build has crash points.
pub fn enabled() -> bool {
    cfg!(feature = "failpoints")
}

/// Configures the points named in `FAILPOINTS` (`name=actions;...`).
/// Without the feature, a non-empty `FAILPOINTS` is an error: a crash test
/// against a build without points would otherwise pass without crashing.
pub fn setup_from_env() -> Result<usize, String> {
    let Ok(spec) = std::env::var("FAILPOINTS") else {
        return Ok(0);
    };
    let points = parse(&spec)?;
    for (name, actions) in &points {
        configure(name, actions)?;
    }
    Ok(points.len())
}

/// `name=actions;...` as (name, actions) pairs; every name must be listed.
fn parse(spec: &str) -> Result<Vec<(&str, &str)>, String> {
    let mut out = Vec::new();
    for item in spec.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, actions) = item
            .split_once('=')
            .ok_or_else(|| format!("FAILPOINTS: `{item}` is not name=actions"))?;
        let name = name.trim();
        if !NAMES.contains(&name) {
            return Err(format!(
                "FAILPOINTS: unknown point `{name}` (known: {})",
                NAMES.join(", ")
            ));
        }
        out.push((name, actions.trim()));
    }
    Ok(out)
}

#[cfg(feature = "failpoints")]
fn configure(name: &str, actions: &str) -> Result<(), String> {
    fail::cfg(name, actions).map_err(|e| format!("FAILPOINTS: {name}: {e}"))
}

#[cfg(not(feature = "failpoints"))]
fn configure(name: &str, _actions: &str) -> Result<(), String> {
    Err(format!(
        "FAILPOINTS names {name}, but this build has no crash points (build with --features failpoints)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_takes_listed_names_and_refuses_others() {
        assert_eq!(
            parse(" materialize::renamed=2*off->return ; raft::applied=return;").unwrap(),
            vec![
                ("materialize::renamed", "2*off->return"),
                ("raft::applied", "return")
            ]
        );
        assert!(parse("").unwrap().is_empty());
        assert!(parse("materialize::renamd=return")
            .unwrap_err()
            .contains("unknown point"));
        assert!(parse("raft::applied").unwrap_err().contains("name=actions"));
    }
}
