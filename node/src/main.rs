//! `filesyncd`: the binary. Today it offers the offline tools built on the
//! foundation libraries; the daemon and its control API arrive with the sync
//! engine (see docs/ARCHITECTURE.md).
//!
//! Exit codes: 0 ok, 1 runtime failure, 2 bad usage or configuration.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "filesyncd",
    version,
    about = "Peer-to-peer directory sync with Raft-consistent metadata"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Chunk files with the cluster's default chunker and print each file's
    /// Merkle root (the identity of a file version is root + size).
    Chunk(cmd::chunk::ChunkArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Chunk(args) => cmd::chunk::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("filesyncd: {err:#}");
            ExitCode::from(1)
        }
    }
}
