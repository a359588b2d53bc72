//! `filesyncd`: the binary. Without a subcommand (or with `run`) it runs the
//! daemon; the other subcommands are offline tools (`chunk`) or clients of a
//! running daemon's control API (`status`, `members`, `token create`,
//! `remove`, `ls`, `history`, `restore`, `diff`, `verify`, `adopt`).
//!
//! Exit codes: 0 ok, 1 runtime failure, 2 bad usage or configuration
//! (including a data directory locked by another daemon).

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use filesyncd::config::RunArgs;

#[derive(Parser, Debug)]
#[command(
    name = "filesyncd",
    version,
    about = "Peer-to-peer directory sync with Raft-consistent metadata",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// `filesyncd --dir D ...` is `filesyncd run --dir D ...`.
    #[command(flatten)]
    run: RunArgs,
}

// Parsed once at start: the size of the `run` flags does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon (the default subcommand).
    Run(RunArgs),
    /// Show this node's Raft state, the members and the sync progress.
    Status(cmd::status::StatusArgs),
    /// List the cluster members.
    Members(cmd::ctl::StatusArgs),
    /// Manage join tokens.
    Token(cmd::ctl::TokenArgs),
    /// Remove a member (voter or learner) from the cluster.
    Remove(cmd::members::RemoveArgs),
    /// List the committed entries under a path.
    Ls(cmd::files::LsArgs),
    /// Show every retained version of a path.
    History(cmd::files::HistoryArgs),
    /// Write a retained version of a path, in place or elsewhere (--to);
    /// with --tree, a whole subtree as of a log index or time.
    Restore(cmd::files::RestoreArgs),
    /// List what changed under a path since a log index or time (--as-of).
    Diff(cmd::asof::DiffArgs),
    /// Rehash the synced directory against the committed tree; exit 1 on differences.
    Verify(cmd::files::PlainArgs),
    /// Re-create the folder marker on purpose (resumes a halted sync,
    /// confirms withheld deletes).
    Adopt(cmd::files::PlainArgs),
    /// Let out the local changes sync withholds until confirmed: a mass
    /// delete, or a folder's mass replace/delete (see `status`).
    Confirm(cmd::files::PlainArgs),
    /// Exit 0 when the daemon is up and Raft runs (a healthcheck), else 1.
    Health(cmd::ctl::ApiArgs),
    /// Chunk files with the cluster's default chunker and print each file's
    /// Merkle root (the identity of a file version is root + size).
    Chunk(cmd::chunk::ChunkArgs),
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("filesyncd: {err:#}");
            ExitCode::from(1)
        }
    }
}

/// CLI subcommands die quietly on a closed pipe (`filesyncd ls | head`)
/// like other Unix tools instead of panicking in `println!`; the daemon
/// keeps Rust's default (SIGPIPE ignored, EPIPE returned).
fn restore_sigpipe() {
    // SAFETY: called once at start-up before any thread exists; SIG_DFL is a
    // valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Malloc arenas of glibc for the daemon (unless `MALLOC_ARENA_MAX` is
/// set). glibc's default is 8 per core: the tokio workers, the blocking
/// pool and the sync thread each allocate in their own arena, and a 3-node
/// bench of 100,000 files peaked at 320 MiB per daemon with the default, 281
/// with 4 and 254 with 2, at the same CPU within the run-to-run noise
/// (`deploy/bench/scale.sh --files 100000`, `MALLOC_ARENA_MAX` set around
/// it; docs/ARCHITECTURE.md, memory at a million files).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_ARENAS: libc::c_int = 2;

fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called at start-up before any thread exists; M_ARENA_MAX
        // takes a count and only bounds future arenas.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        }
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    if matches!(cli.command, Some(ref c) if !matches!(c, Command::Run(_))) {
        restore_sigpipe();
    }
    match cli.command {
        None => cmd::run::run(cli.run),
        Some(Command::Run(args)) => cmd::run::run(args),
        Some(Command::Status(args)) => report(cmd::status::run(args)),
        Some(Command::Members(args)) => report(cmd::ctl::members(args)),
        Some(Command::Token(args)) => report(cmd::ctl::token(args)),
        Some(Command::Remove(args)) => report(cmd::members::remove(args)),
        Some(Command::Ls(args)) => cmd::files::finish(cmd::files::ls(args)),
        Some(Command::History(args)) => cmd::files::finish(cmd::files::history(args)),
        Some(Command::Restore(args)) => cmd::files::finish(cmd::files::restore(args)),
        Some(Command::Diff(args)) => cmd::files::finish(cmd::asof::diff(args)),
        Some(Command::Verify(args)) => cmd::files::finish(cmd::files::verify(args)),
        Some(Command::Adopt(args)) => cmd::files::finish(cmd::files::adopt(args)),
        Some(Command::Confirm(args)) => cmd::files::finish(cmd::files::confirm(args)),
        Some(Command::Health(args)) => report(cmd::ctl::health(args)),
        Some(Command::Chunk(args)) => report(cmd::chunk::run(args)),
    }
}
