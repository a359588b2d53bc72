//! The CLI of the history "as of" a point: `restore --tree [PATH] --as-of
//! WHEN (--to DEST | --in-place)` and `diff --as-of WHEN [PATH]`. WHEN is a
//! log index or an RFC 3339 time, checked here first (exit 2) with the
//! daemon's own parser.
//!
//! `restore --tree` reads the daemon's newline-delimited answer as it
//! comes: progress (files and bytes done of the totals) on stderr, one
//! line per batch; the summary on stdout (with `--json`, the final
//! [`TreeRestored`] as one JSON document). Exit 0 when every path was
//! restored; 1 when some failed (listed), or the restore stopped (what was
//! done stays done: run it again to finish), or the daemon refused; 2 on
//! bad arguments.
//!
//! `diff` prints one line per changed path (`added`, `modified`,
//! `deleted`), or with `--json` one [`DiffAnswer`] with every page
//! merged; exit 0 whether or not something changed.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use filesyncd::api::client;
use filesyncd::api::files::asof::parse_as_of;
use filesyncd::api::files::query::encode;
use filesyncd::api::files::{
    AsOfDesc, DiffAnswer, DiffEntry, TreeLine, TreeProgress, TreeRestoreRequest, TreeRestored,
};

use super::files::{call, Output, RestoreArgs, Usage};
use super::format::{bytes, index_path, short, utc_ms};

/// `--as-of` as clap checks it: parsed, kept as given.
pub fn check_as_of(s: &str) -> Result<String, String> {
    parse_as_of(s).map(|_| s.to_owned())
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// A log index (`1234`) or an RFC 3339 time (`2026-12-06T01:02:03Z`).
    #[arg(long, value_name = "WHEN", value_parser = check_as_of)]
    pub as_of: String,
    /// A directory or file relative to the synced directory (default: all of it).
    #[arg(value_name = "PATH")]
    pub path: Option<String>,
    #[command(flatten)]
    pub out: Output,
}

/// How the point read is shown: `index 42` or the time (UTC).
pub fn as_of_text(a: &AsOfDesc) -> String {
    match (a.index, a.time_ms) {
        (Some(i), _) => format!("log index {i}"),
        (None, Some(t)) => format!("{} UTC", utc_ms(t)),
        (None, None) => a.given.clone(),
    }
}

/// `1,000/10,000 files, 1.0 MiB/9.8 MiB`.
pub fn progress_text(p: &TreeProgress) -> String {
    format!(
        "{}/{} paths, {}/{}",
        p.files_done,
        p.files_total,
        bytes(p.bytes_done),
        bytes(p.bytes_total)
    )
}

/// What `restore --tree` prints on stdout, and whether it all went well.
pub fn tree_text(r: &TreeRestored) -> (Vec<String>, bool) {
    let when = r.as_of.as_ref().map_or_else(String::new, as_of_text);
    let what = if r.path.is_empty() { "." } else { &r.path };
    let mut lines = vec![if r.in_place {
        format!("restored {what} in place as of {when}")
    } else {
        format!("restored {what} as of {when} to {}", r.written)
    }];
    let mut counts = format!(
        "{} written, {} deleted, {} already as then",
        r.written_paths, r.deleted, r.unchanged
    );
    if r.dirs_kept > 0 {
        counts.push_str(&format!(", {} directories kept (not empty)", r.dirs_kept));
    }
    if r.chunks_fetched > 0 {
        counts.push_str(&format!(", {} chunks fetched from peers", r.chunks_fetched));
    }
    lines.push(counts);
    for k in &r.kept {
        lines.push(format!("kept local content of {} as {}", k.path, k.kept_as));
    }
    if r.kept_count > r.kept.len() as u64 {
        lines.push(format!(
            "... {} more kept as conflict copies",
            r.kept_count - r.kept.len() as u64
        ));
    }
    for f in &r.failures {
        lines.push(format!("failed: {}: {}", f.path, f.error));
    }
    if r.failed > r.failures.len() as u64 {
        lines.push(format!(
            "... {} more failed",
            r.failed - r.failures.len() as u64
        ));
    }
    if r.in_root && (r.written_paths > 0 || r.deleted > 0) {
        lines.push("the sync engine commits the changes as new versions".into());
    }
    (lines, r.failed == 0)
}

pub fn restore_tree(args: RestoreArgs) -> anyhow::Result<ExitCode> {
    let as_of = args.as_of.clone().context("--tree needs --as-of")?;
    if args.to.is_none() && !args.in_place {
        return Err(Usage("restore --tree needs --to DEST or --in-place".into()).into());
    }
    let req = TreeRestoreRequest {
        path: index_path(args.path.as_deref().unwrap_or("")),
        as_of,
        to: args.to.clone(),
        in_place: args.in_place,
        allow_outside: args.allow_outside,
    };
    let out = &args.out;
    let mut last: Option<TreeLine> = None;
    let mut bad: Option<String> = None;
    let mut stderr = std::io::stderr();
    client::call_lines(
        &out.api.api,
        "/restore/tree",
        &serde_json::to_string(&req)?,
        out.api.secret()?.as_deref(),
        &mut |line| match serde_json::from_str::<TreeLine>(line) {
            Ok(TreeLine::Progress(p)) => {
                let _ = writeln!(stderr, "restoring: {}", progress_text(&p));
            }
            Ok(l) => last = Some(l),
            Err(e) => bad = Some(format!("unexpected /restore/tree line: {e}: {line}")),
        },
    )?;
    if let Some(b) = bad {
        anyhow::bail!(b);
    }
    let (summary, error) = match last {
        Some(TreeLine::Done(r)) => (r, None),
        Some(TreeLine::Error { error, partial }) => (partial, Some(error)),
        _ => anyhow::bail!("the daemon ended the restore without a result (see its log)"),
    };
    if out.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        for l in tree_text(&summary).0 {
            println!("{l}");
        }
    }
    if let Some(e) = error {
        anyhow::bail!(
            "the restore stopped: {e} ({} of {} paths done; run it again to finish)",
            summary.progress.files_done,
            summary.progress.files_total
        );
    }
    if summary.failed > 0 {
        eprintln!("filesyncd: {} paths could not be restored", summary.failed);
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn desc(e: &DiffEntry) -> String {
    let d = |v: Option<(u64, u32)>, x: &Option<filesyncd::api::files::EntryDesc>| match (v, x) {
        (Some((i, p)), Some(d)) => {
            let what = if d.kind == "file" {
                format!("file {} {}", bytes(d.size), short(&d.root))
            } else {
                d.kind.clone()
            };
            if p == 0 {
                format!("{what} @{i}")
            } else {
                format!("{what} @{i}.{p}")
            }
        }
        _ => "-".into(),
    };
    format!(
        "{:<8}  {}  ({} -> {})",
        e.change,
        e.path,
        d(e.then_version, &e.then),
        d(e.now_version, &e.now)
    )
}

pub fn diff(args: DiffArgs) -> anyhow::Result<ExitCode> {
    let path = index_path(args.path.as_deref().unwrap_or(""));
    let mut all: Option<DiffAnswer> = None;
    let mut after: Option<String> = None;
    let mut shown = 0u64;
    loop {
        let mut q = format!(
            "/diff?as_of={}&path={}",
            encode(args.as_of.trim()),
            encode(&path)
        );
        if let Some(a) = &after {
            q.push_str(&format!("&after={}", encode(a)));
        }
        let body = call(&args.out, "GET", &q, None)?;
        let page: DiffAnswer = serde_json::from_str(&body).context("unexpected /diff answer")?;
        after = page.next_after.clone();
        if args.out.json {
            match &mut all {
                None => all = Some(page),
                Some(a) => a.entries.extend(page.entries),
            }
        } else {
            if shown == 0 && all.is_none() {
                println!(
                    "changes under {} since {}:",
                    if path.is_empty() { "." } else { &path },
                    as_of_text(&page.as_of)
                );
                all = Some(DiffAnswer {
                    entries: Vec::new(),
                    ..page.clone()
                });
            }
            for e in &page.entries {
                println!("{}", desc(e));
            }
            shown += page.entries.len() as u64;
        }
        if after.is_none() {
            break;
        }
    }
    if args.out.json {
        let mut all = all.context("no /diff answer")?;
        all.next_after = None;
        println!("{}", serde_json::to_string(&all)?);
    } else if shown == 0 {
        println!("(no changes)");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use filesyncd::api::files::{KeptAs, PathFailure};

    use super::*;

    #[test]
    fn summaries() {
        let mut r = TreeRestored {
            path: "docs".into(),
            as_of: Some(AsOfDesc {
                given: "2024-12-31T23:59:59Z".into(),
                index: None,
                time_ms: Some(1_735_689_599_000),
                applied: 40,
                floor: 12,
            }),
            written: "docs".into(),
            in_root: true,
            in_place: true,
            written_paths: 3,
            deleted: 1,
            kept_count: 1,
            kept: vec![KeptAs {
                path: "docs/a".into(),
                kept_as: "docs/a.sync-conflict-x".into(),
            }],
            ..TreeRestored::default()
        };
        let (t, ok) = tree_text(&r);
        assert!(ok);
        assert_eq!(t[0], "restored docs in place as of 2024-12-31 23:59:59 UTC");
        assert!(t[1].starts_with("3 written, 1 deleted"), "{}", t[1]);
        assert!(t[2].contains("docs/a.sync-conflict-x"));
        r.failed = 2;
        r.failures = vec![PathFailure {
            path: "docs/b".into(),
            error: "no".into(),
        }];
        let (t, ok) = tree_text(&r);
        assert!(!ok);
        assert!(t.iter().any(|l| l == "failed: docs/b: no"));
        assert!(t.iter().any(|l| l == "... 1 more failed"));
        let p = TreeProgress {
            files_done: 1000,
            files_total: 2000,
            bytes_done: 2048,
            bytes_total: 4096,
        };
        assert_eq!(progress_text(&p), "1000/2000 paths, 2.0 KiB/4.0 KiB");
        assert!(check_as_of("yesterday").is_err());
        assert_eq!(check_as_of("12").as_deref(), Ok("12"));
    }
}
