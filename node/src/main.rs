//! `filesyncd`: the binary. Without a subcommand (or with `run`) it runs the
//! daemon; the other subcommands are offline tools (`chunk`) or clients of a
//! running daemon's control API (`status`, `members`, `token create`).
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

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon (the default subcommand).
    Run(RunArgs),
    /// Show this node's Raft state and the cluster members.
    Status(cmd::ctl::StatusArgs),
    /// List the cluster members.
    Members(cmd::ctl::StatusArgs),
    /// Manage join tokens.
    Token(cmd::ctl::TokenArgs),
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => cmd::run::run(cli.run),
        Some(Command::Run(args)) => cmd::run::run(args),
        Some(Command::Status(args)) => report(cmd::ctl::status(args)),
        Some(Command::Members(args)) => report(cmd::ctl::members(args)),
        Some(Command::Token(args)) => report(cmd::ctl::token(args)),
        Some(Command::Chunk(args)) => report(cmd::chunk::run(args)),
    }
}
