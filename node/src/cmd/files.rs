//! File subcommands, clients of a running daemon's control API:
//! `ls [PATH]`, `history <PATH>`, `restore <PATH> [--version I] [--to D]`,
//! `verify`, `adopt` (and, in [`super::asof`], `restore --tree` and
//! `diff`). PATHs are relative to the synced directory.
//!
//! Output: a table on stdout, or with `--json` the API's JSON body (one
//! document; `ls` merges its pages into one answer). Exit codes: 0 ok;
//! 1 on a runtime failure (daemon unreachable, refused, failed) and for
//! `verify` when the disk differs from the committed tree; 2 on bad
//! arguments (rejected by the parser, or answered 400 by the daemon).

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use filesyncd::api::client::{self, ClientError};
use filesyncd::api::files::query::encode;
use filesyncd::api::files::{
    Adopted, Confirmed, Difference, EntryDesc, HistoryAnswer, LsAnswer, LsEntry, RestoreRequest,
    Restored, VerifyAnswer,
};

use super::ctl::ApiArgs;
use super::format::{bytes, index_path, short, utc_ms, utc_ns};

/// `--api`, `--api-token` and `--json`.
#[derive(Args, Debug, Clone)]
pub struct Output {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Print the API's JSON answer.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// A directory or file, relative to the synced directory (default: all of it).
    #[arg(value_name = "PATH")]
    pub path: Option<String>,
    /// Everything below PATH, not only its direct entries.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    #[command(flatten)]
    pub out: Output,
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// A path relative to the synced directory.
    #[arg(value_name = "PATH")]
    pub path: String,
    #[command(flatten)]
    pub out: Output,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// A path relative to the synced directory (with --tree: the subtree,
    /// default all of it).
    #[arg(value_name = "PATH", required_unless_present = "tree")]
    pub path: Option<String>,
    /// The version's log index as `history` prints it (`INDEX` or
    /// `INDEX.POS`); default: the newest version that is not a deletion.
    #[arg(long, value_name = "INDEX", value_parser = parse_version, conflicts_with = "tree")]
    pub version: Option<(u64, Option<u32>)>,
    /// Restore the whole tree under PATH as it was committed at --as-of,
    /// with --to DEST or --in-place (progress on stderr).
    #[arg(long, requires = "as_of")]
    pub tree: bool,
    /// With --tree: a log index (`1234`) or an RFC 3339 time
    /// (`2026-12-06T01:02:03Z`, `2026-12-06T02:02:03+01:00`).
    #[arg(long, value_name = "WHEN", requires = "tree", value_parser = super::asof::check_as_of)]
    pub as_of: Option<String>,
    /// With --tree: make the tree in the synced directory what it was then
    /// (the engine commits the changes as new versions; local content not
    /// committed is kept as a conflict copy).
    #[arg(long, requires = "tree", conflicts_with = "to")]
    pub in_place: bool,
    /// Write the version here instead of in place and never replace
    /// anything: a relative DEST is inside the synced directory, an absolute
    /// one anywhere the daemon may write.
    #[arg(long, value_name = "DEST")]
    pub to: Option<String>,
    /// Allow an absolute --to outside the synced directory (the daemon
    /// writes it with its own rights).
    #[arg(long, requires = "to")]
    pub allow_outside: bool,
    #[command(flatten)]
    pub out: Output,
}

#[derive(Args, Debug)]
pub struct PlainArgs {
    #[command(flatten)]
    pub out: Output,
}

/// `12` or `12.1` (log index, position in the entry).
pub fn parse_version(s: &str) -> Result<(u64, Option<u32>), String> {
    let bad = || format!("`{s}`: expected a log index as `history` prints it (e.g. 42 or 42.1)");
    match s.split_once('.') {
        None => Ok((s.parse().map_err(|_| bad())?, None)),
        Some((i, p)) => Ok((
            i.parse().map_err(|_| bad())?,
            Some(p.parse().map_err(|_| bad())?),
        )),
    }
}

/// A usage error found after parsing (exit 2, like the parser's own).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// Prints an error and picks the exit code: 2 when the daemon answered 400
/// (bad arguments), 1 otherwise.
pub fn finish(res: anyhow::Result<ExitCode>) -> ExitCode {
    match res {
        Ok(code) => code,
        Err(err) => {
            eprintln!("filesyncd: {err:#}");
            let bad_args = matches!(
                err.downcast_ref::<ClientError>(),
                Some(ClientError::Status { status: 400, .. })
            ) || err.downcast_ref::<Usage>().is_some();
            ExitCode::from(if bad_args { 2 } else { 1 })
        }
    }
}

pub(super) fn call(
    out: &Output,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<String> {
    Ok(client::call(
        &out.api.api,
        method,
        path,
        body,
        out.api.secret()?.as_deref(),
    )?)
}

/// For routes that may take long (hashing, fetching): no read deadline.
fn call_long(out: &Output, path: &str, body: &str) -> anyhow::Result<String> {
    Ok(client::call_with(
        &out.api.api,
        "POST",
        path,
        Some(body),
        out.api.secret()?.as_deref(),
        None,
    )?)
}

fn kind_col(e: &LsEntry) -> String {
    match (e.kind.as_str(), e.implicit) {
        ("dir", true) => "dir*".into(),
        (k, _) => k.into(),
    }
}

/// One `ls` line: kind, mode, size, mtime, version, path (a directory ends
/// in `/`, a symlink shows its target).
pub fn ls_line(e: &LsEntry) -> String {
    let mode = if e.implicit {
        "-".to_string()
    } else {
        format!("{:04o}", e.mode)
    };
    let size = if e.kind == "dir" {
        "-".to_string()
    } else {
        e.size.to_string()
    };
    let mtime = e.mtime_ns.map_or_else(|| "-".to_string(), utc_ns);
    let version = match (e.index, e.pos) {
        (Some(i), Some(0)) => i.to_string(),
        (Some(i), Some(p)) => format!("{i}.{p}"),
        _ => "-".to_string(),
    };
    let mut name = e.path.clone();
    if e.kind == "dir" {
        name.push('/');
    }
    if let Some(t) = &e.target {
        name.push_str(" -> ");
        name.push_str(t);
    }
    format!(
        "{:<7}  {:>4}  {:>12}  {:<19}  {:>8}  {}",
        kind_col(e),
        mode,
        size,
        mtime,
        version,
        name
    )
}

pub fn ls(args: LsArgs) -> anyhow::Result<ExitCode> {
    let path = index_path(args.path.as_deref().unwrap_or(""));
    let mut all: Option<LsAnswer> = None;
    let mut after: Option<String> = None;
    loop {
        let mut q = format!("/ls?path={}", encode(&path));
        if args.recursive {
            q.push_str("&recursive=1");
        }
        if let Some(a) = &after {
            q.push_str(&format!("&after={}", encode(a)));
        }
        let body = call(&args.out, "GET", &q, None)?;
        let page: LsAnswer = serde_json::from_str(&body).context("unexpected /ls answer")?;
        after = page.next_after.clone();
        match &mut all {
            None => all = Some(page),
            Some(a) => a.entries.extend(page.entries),
        }
        if after.is_none() {
            break;
        }
    }
    let mut all = all.context("no /ls answer")?;
    all.next_after = None;
    if args.out.json {
        println!("{}", serde_json::to_string(&all)?);
        return Ok(ExitCode::SUCCESS);
    }
    if all.entries.is_empty() {
        println!("(empty)");
    }
    for e in &all.entries {
        println!("{}", ls_line(e));
    }
    Ok(ExitCode::SUCCESS)
}

/// The `history` table.
pub fn history_table(h: &HistoryAnswer) -> Vec<String> {
    let mut lines = vec![format!(
        "{:<10}  {:<19}  {:<16}  {:>12}  {:<16}  STATE",
        "VERSION", "TIME (UTC)", "ORIGIN", "SIZE", "ROOT"
    )];
    for v in &h.versions {
        let version = if v.pos == 0 {
            v.index.to_string()
        } else {
            format!("{}.{}", v.index, v.pos)
        };
        let size = match (v.kind.as_deref(), v.size) {
            (Some("dir"), _) | (None, _) => "-".to_string(),
            (_, Some(s)) => s.to_string(),
            (_, None) => "-".to_string(),
        };
        let root = match (v.kind.as_deref(), v.root.as_deref()) {
            (Some("file"), Some(r)) => short(r).to_string(),
            (Some(k), _) => k.to_string(),
            (None, _) => "-".to_string(),
        };
        let mut state = v.state.clone();
        if v.current && v.state != "deleted" {
            state.push_str(" (current)");
        }
        lines.push(format!(
            "{:<10}  {:<19}  {:<16}  {:>12}  {:<16}  {}",
            version,
            utc_ms(v.time_ms),
            v.origin,
            size,
            root,
            state
        ));
    }
    lines
}

pub fn history(args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let path = index_path(&args.path);
    let body = call(
        &args.out,
        "GET",
        &format!("/history?path={}", encode(&path)),
        None,
    )?;
    if args.out.json {
        println!("{}", body.trim());
        return Ok(ExitCode::SUCCESS);
    }
    let h: HistoryAnswer = serde_json::from_str(&body).context("unexpected /history answer")?;
    for l in history_table(&h) {
        println!("{l}");
    }
    Ok(ExitCode::SUCCESS)
}

/// What `restore` prints.
pub fn restored_text(r: &Restored) -> Vec<String> {
    let version = format!("{}.{}", r.index, r.pos);
    let mut lines = Vec::new();
    if r.unchanged {
        lines.push(format!(
            "{} already holds version {version} of {}: nothing written",
            r.written, r.path
        ));
    } else {
        let size = if r.kind == "file" {
            format!(", {}", bytes(r.size))
        } else {
            String::new()
        };
        lines.push(format!(
            "restored {} version {version} ({}{size}) to {}",
            r.path, r.kind, r.written
        ));
    }
    if let Some(k) = &r.kept_as {
        lines.push(format!("the local content that was there is kept as {k}"));
    }
    if r.chunks_fetched > 0 {
        lines.push(format!("{} chunks fetched from peers", r.chunks_fetched));
    }
    if r.in_root && !r.unchanged {
        lines.push("the sync engine commits it as a new version".into());
    }
    lines
}

pub fn restore(args: RestoreArgs) -> anyhow::Result<ExitCode> {
    if args.tree {
        return super::asof::restore_tree(args);
    }
    let req = RestoreRequest {
        path: index_path(args.path.as_deref().unwrap_or_default()),
        version: args.version.map(|v| v.0),
        pos: args.version.and_then(|v| v.1),
        to: args.to.clone(),
        allow_outside: args.allow_outside,
    };
    let body = call_long(&args.out, "/restore", &serde_json::to_string(&req)?)?;
    if args.out.json {
        println!("{}", body.trim());
        return Ok(ExitCode::SUCCESS);
    }
    let r: Restored = serde_json::from_str(&body).context("unexpected /restore answer")?;
    for l in restored_text(&r) {
        println!("{l}");
    }
    Ok(ExitCode::SUCCESS)
}

fn desc_text(d: Option<&EntryDesc>) -> String {
    match d {
        None => "-".into(),
        Some(d) if d.kind == "file" => format!(
            "file {} mode {:04o} root {}",
            bytes(d.size),
            d.mode,
            short(&d.root)
        ),
        Some(d) => format!("{} mode {:04o}", d.kind, d.mode),
    }
}

/// One difference: problem, path, committed vs disk.
pub fn difference_line(d: &Difference) -> String {
    format!(
        "{:<10}  {}  (committed: {}; disk: {})",
        d.problem,
        d.path,
        desc_text(d.committed.as_ref()),
        desc_text(d.disk.as_ref())
    )
}

/// What `verify` prints, and whether the disk matches.
pub fn verify_text(v: &VerifyAnswer) -> (Vec<String>, bool) {
    let mut lines: Vec<String> = v.differences.iter().map(difference_line).collect();
    for s in &v.skipped {
        lines.push(format!("{:<10}  {}  ({})", "skipped", s.path, s.reason));
    }
    let ok = v.differences.is_empty();
    let summary = format!(
        "{} committed entries at index {}, {} files ({}) hashed",
        v.committed,
        v.applied,
        v.files_hashed,
        bytes(v.bytes_hashed)
    );
    if ok {
        lines.push(format!("ok: the disk matches: {summary}"));
    } else {
        lines.push(format!("{} differences: {summary}", v.differences.len()));
        if v.was_in_sync == Some(false) {
            lines.push(
                "note: a sync was in flight when the check started; some differences may be changes on their way"
                    .into(),
            );
        }
    }
    (lines, ok)
}

pub fn verify(args: PlainArgs) -> anyhow::Result<ExitCode> {
    let body = call_long(&args.out, "/verify", "{}")?;
    let v: VerifyAnswer = serde_json::from_str(&body).context("unexpected /verify answer")?;
    let ok = v.differences.is_empty();
    if args.out.json {
        println!("{}", body.trim());
    } else {
        for l in verify_text(&v).0 {
            println!("{l}");
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// POSTs `{}` to `path`: with `--json` prints the answer and gives `None`,
/// else gives it parsed.
fn post_plain<T: serde::de::DeserializeOwned>(
    args: &PlainArgs,
    path: &str,
) -> anyhow::Result<Option<T>> {
    let body = call_long(&args.out, path, "{}")?;
    if args.out.json {
        println!("{}", body.trim());
        return Ok(None);
    }
    let answer =
        serde_json::from_str(&body).with_context(|| format!("unexpected {path} answer"))?;
    Ok(Some(answer))
}

pub fn adopt(args: PlainArgs) -> anyhow::Result<ExitCode> {
    if let Some(a) = post_plain::<Adopted>(&args, "/adopt")? {
        println!(
            "adopted {}: folder marker re-created, withheld deletes confirmed",
            a.dir
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn confirm(args: PlainArgs) -> anyhow::Result<ExitCode> {
    match post_plain::<Confirmed>(&args, "/confirm")? {
        Some(c) if c.withheld == 0 => println!("nothing was withheld"),
        Some(c) => println!("confirmed: {} withheld change(s) go out now", c.withheld),
        None => {}
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use filesyncd::api::files::{HistoryEntry, Skipped};

    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("42"), Ok((42, None)));
        assert_eq!(parse_version("42.1"), Ok((42, Some(1))));
        for bad in ["", "x", "1.", ".1", "1.2.3", "-1", "1.x"] {
            assert!(parse_version(bad).is_err(), "{bad}");
        }
    }

    fn entry(path: &str, kind: &str) -> LsEntry {
        LsEntry {
            path: path.into(),
            kind: kind.into(),
            size: 1234,
            mode: 0o644,
            root: Some("ab".repeat(32)),
            target: None,
            index: Some(12),
            pos: Some(0),
            time_ms: Some(0),
            origin: Some("0000000000000001".into()),
            mtime_ns: Some(1_735_689_599_000_000_000),
            implicit: false,
        }
    }

    #[test]
    fn ls_lines() {
        let f = ls_line(&entry("docs/a.txt", "file"));
        assert!(f.starts_with("file"), "{f}");
        assert!(f.contains(" 0644 ") && f.contains(" 1234 ") && f.contains("2024-12-31 23:59:59"));
        assert!(f.ends_with("  12  docs/a.txt"), "{f}");
        let d = ls_line(&LsEntry {
            implicit: true,
            mode: 0,
            index: None,
            pos: None,
            mtime_ns: None,
            ..entry("docs", "dir")
        });
        assert!(d.starts_with("dir*") && d.ends_with("docs/"), "{d}");
        let l = ls_line(&LsEntry {
            target: Some("../x".into()),
            pos: Some(2),
            ..entry("l", "symlink")
        });
        assert!(l.ends_with("12.2  l -> ../x"), "{l}");
    }

    #[test]
    fn history_rows() {
        let v = |index, kind: Option<&str>, state: &str, current| HistoryEntry {
            index,
            pos: 0,
            time_ms: 1_735_689_599_000,
            origin: "00000000000000ab".into(),
            kind: kind.map(str::to_string),
            size: kind.map(|_| 99),
            root: kind.map(|_| "cd".repeat(32)),
            mode: Some(0o644),
            mtime_ns: Some(0),
            holders: vec![],
            state: state.into(),
            current,
        };
        let h = HistoryAnswer {
            path: "a".into(),
            versions: vec![
                v(3, Some("file"), "conflict", false),
                v(5, None, "deleted", false),
                v(9, Some("file"), "committed", true),
            ],
        };
        let t = history_table(&h);
        assert_eq!(t.len(), 4);
        assert!(t[0].starts_with("VERSION"));
        assert!(
            t[1].contains("2024-12-31 23:59:59") && t[1].ends_with("conflict"),
            "{}",
            t[1]
        );
        assert!(t[1].contains(&"cd".repeat(8)) && !t[1].contains(&"cd".repeat(9)));
        assert!(t[2].ends_with("deleted"), "{}", t[2]);
        assert!(t[3].ends_with("committed (current)"), "{}", t[3]);
    }

    #[test]
    fn verify_report() {
        let mut v = VerifyAnswer {
            applied: 7,
            committed: 3,
            files_hashed: 2,
            bytes_hashed: 2048,
            differences: vec![],
            skipped: vec![Skipped {
                path: "bad\u{1}".into(),
                reason: "NUL or control character".into(),
            }],
            was_in_sync: Some(true),
        };
        let (lines, ok) = verify_text(&v);
        assert!(ok);
        assert!(lines.last().unwrap().starts_with("ok: the disk matches"));
        assert!(lines[0].starts_with("skipped"));
        v.differences.push(Difference {
            path: "a".into(),
            problem: "content".into(),
            committed: Some(EntryDesc {
                kind: "file".into(),
                size: 3,
                mode: 0o644,
                root: "ab".repeat(32),
            }),
            disk: None,
        });
        v.was_in_sync = Some(false);
        let (lines, ok) = verify_text(&v);
        assert!(!ok);
        assert!(
            lines[0].starts_with("content") && lines[0].contains("disk: -"),
            "{}",
            lines[0]
        );
        assert!(lines.iter().any(|l| l.starts_with("1 differences")));
        assert!(lines
            .iter()
            .any(|l| l.starts_with("note: a sync was in flight")));
    }

    #[test]
    fn restore_report() {
        let mut r = Restored {
            path: "a.txt".into(),
            index: 4,
            pos: 0,
            written: "a.txt".into(),
            in_root: true,
            kind: "file".into(),
            size: 2048,
            root: "ab".repeat(32),
            unchanged: false,
            kept_as: Some("a.sync-conflict-20250101-000000-1.txt".into()),
            chunks_fetched: 3,
        };
        let t = restored_text(&r);
        assert_eq!(t[0], "restored a.txt version 4.0 (file, 2.0 KiB) to a.txt");
        assert!(t[1].contains("kept as a.sync-conflict"));
        assert!(t[2].starts_with("3 chunks"));
        r.unchanged = true;
        assert!(restored_text(&r)[0].contains("nothing written"));
    }

    #[test]
    fn bad_requests_exit_2() {
        let e = anyhow::Error::new(ClientError::Status {
            status: 400,
            message: "x".into(),
        });
        assert_eq!(finish(Err(e)), ExitCode::from(2));
        let e = anyhow::Error::new(ClientError::Status {
            status: 404,
            message: "x".into(),
        });
        assert_eq!(finish(Err(e)), ExitCode::from(1));
        assert_eq!(finish(Ok(ExitCode::SUCCESS)), ExitCode::SUCCESS);
    }
}
