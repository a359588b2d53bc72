//! `filesyncd chunk FILE...`: chunk files as a node would and print their
//! Merkle roots. Files are chunked in parallel (the pipeline itself keeps two
//! cores busy per file), and a report is printed per file in argument order.

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use filesyncd_chunkstore::chunker::{chunk_and_hash, ChunkerParams};
use filesyncd_merkle::build;

#[derive(Args, Debug)]
pub struct ChunkArgs {
    /// Files to chunk.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Also list every chunk (offset, length, hash).
    #[arg(long)]
    chunks: bool,
}

pub fn run(args: ChunkArgs) -> anyhow::Result<()> {
    let chunker = ChunkerParams::default()
        .validate()
        .context("default chunker parameters are invalid")?;
    let out = io::stdout();
    let mut out = out.lock();
    for path in &args.files {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let chunks = chunk_and_hash(file, &chunker)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let tree = build(&chunks.entries);
        writeln!(
            out,
            "{}  size={} chunks={} root={}",
            path.display(),
            tree.size,
            chunks.entries.len(),
            tree.root
        )?;
        if args.chunks {
            let mut offset = 0u64;
            for e in &chunks.entries {
                writeln!(out, "  {offset:>14} {:>8} {}", e.len, e.hash)?;
                offset += u64::from(e.len);
            }
        }
    }
    Ok(())
}
