//! InstallSnapshot streams: the bytes a leader streams in InstallSnapshot
//! chunks end up in a file that the state machine installs
//! (`raft::snapshot::install`). This target writes the input as such a
//! file and drives the real code:
//!
//! * the frame reader (`FrameReader`: magic, version, length-framed postcard
//!   header and records), over the bytes in memory;
//! * `install` into an in-memory redb database, on a tmpfs scratch dir: the
//!   checksum check, the log id check, the table rebuild, the cluster root
//!   check. The harness writes the blake3 trailer itself (else nothing gets
//!   past the checksum), and when the only fault is the root it rewrites
//!   the header with the rebuilt root and installs again, so the accepting
//!   path runs too;
//! * after an accepted install, a snapshot built from the installed state
//!   must install again with the same header.
//!
//! No panic; a refused snapshot is an error.
#![no_main]

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use filesyncd_fuzz::{scratch_dir, Bytes};
use filesyncd_merkle::Hash;
use filesyncd_raft::snapshot::{self, SnapHeader, FORMAT_VERSION, MAGIC};
use filesyncd_raft::state_machine::SmError;
use redb::backends::InMemoryBackend;
use redb::Database;

const MAX_RECORDS: usize = 4096;

fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| scratch_dir("snapshot"))
}

/// One in-memory database per role, reused by every run: creating one
/// costs more than an install, and an install replaces every table in one
/// transaction, so nothing of an earlier run is read.
fn db(second: bool) -> &'static Database {
    static FIRST: OnceLock<Database> = OnceLock::new();
    static SECOND: OnceLock<Database> = OnceLock::new();
    let cell = if second { &SECOND } else { &FIRST };
    cell.get_or_init(|| {
        Database::builder()
            .create_with_backend(InMemoryBackend::new())
            .expect("an in-memory database")
    })
}

fn clear(dir: &Path) {
    for e in fs::read_dir(dir).expect("read the scratch dir").flatten() {
        let _ = fs::remove_file(e.path());
    }
}

fn frame(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
}

fn seal(mut body: Vec<u8>) -> Vec<u8> {
    let digest = blake3::hash(&body);
    body.extend_from_slice(digest.as_bytes());
    body
}

fn install(db: &Database, bytes: &[u8], header: &SnapHeader) -> Result<SnapHeader, SmError> {
    let d = dir();
    clear(d);
    let src_path = d.join("received.part");
    let mut src = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&src_path)?;
    src.write_all(bytes)?;
    let res = snapshot::install(db, d, &mut src, &header.meta()).map(|(h, _, _)| h);
    let _ = fs::remove_file(&src_path);
    res
}

/// The root named in a refusal for a root mismatch, if that was the refusal.
fn rebuilt_root(e: &SmError) -> Option<Hash> {
    let text = e.to_string();
    let hex = text.split("rebuilt root ").nth(1)?.split(' ').next()?;
    Hash::from_hex(hex).ok()
}

/// Seeds: snapshots built by a real state machine from a real log (the
/// harness adds the magic, version and trailer itself), installed and not.
fn seeds() -> Vec<Vec<u8>> {
    use filesyncd_raft::state_machine::StateMachine;
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    let tmp = scratch_dir("snapshot-seeds");
    let mut out = Vec::new();
    let all = filesyncd_fuzz::samples::entries();
    for n in [0, 2, all.len()] {
        let dir = tmp.join(format!("sm-{n}"));
        let _ = fs::remove_dir_all(&dir);
        let mut sm = StateMachine::open(&dir).expect("open a state machine");
        if n > 0 {
            sm.apply_blocking(all[..n].to_vec())
                .expect("apply the sample log");
        }
        let snap = filesyncd_fuzz::runtime()
            .block_on(async { sm.get_snapshot_builder().await.build_snapshot().await });
        let snap = snap.expect("build a snapshot");
        let mut file =
            filesyncd_fuzz::runtime().block_on(async { (*snap.snapshot).into_std().await });
        let mut bytes = Vec::new();
        std::io::Seek::rewind(&mut file).expect("rewind");
        file.read_to_end(&mut bytes).expect("read the snapshot");
        let body = &bytes[12..bytes.len() - 32];
        for flags in [4u8, 0] {
            let mut s = vec![flags];
            s.extend_from_slice(body);
            out.push(s);
        }
    }
    let _ = fs::remove_dir_all(&tmp);
    out
}

libfuzzer_sys::fuzz_target!(init: filesyncd_fuzz::write_seeds_if_asked(seeds), |data: &[u8]| {
    let mut b = Bytes::new(data);
    let flags = b.u8();
    let body = b.rest();

    // The file: magic, version, then the input's frames, unless the input
    // brings its own head (flag bit 0).
    let mut file = Vec::with_capacity(body.len() + 44);
    if flags & 1 == 0 {
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    }
    file.extend_from_slice(body);

    // 1. The frame reader over the bytes in memory.
    let Ok((header, records, _)) = snapshot::read_stream(&file[..], MAX_RECORDS) else {
        return;
    };

    // 2. Install it (sealed with a right trailer unless bit 1 says not).
    if flags & 4 == 0 {
        return;
    }
    let sealed = if flags & 2 == 0 { seal(file.clone()) } else { file.clone() };
    let first = db(false);
    let mut installed = install(first, &sealed, &header);
    if let Err(e) = &installed {
        // Only the root is wrong: name the rebuilt root and try again.
        if let (Some(root), true) = (rebuilt_root(e), flags & 1 == 0) {
            let mut fixed = header.clone();
            fixed.root = root;
            let mut again = Vec::new();
            again.extend_from_slice(MAGIC);
            again.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
            frame(&mut again, &postcard::to_allocvec(&fixed).expect("encode"));
            for r in &records {
                frame(&mut again, &postcard::to_allocvec(r).expect("encode"));
            }
            installed = install(first, &seal(again), &fixed);
            if let Err(e) = &installed {
                assert!(rebuilt_root(e).is_none(), "a second root mismatch: {e}");
            }
        }
    }

    // 3. What was installed builds a snapshot that installs the same.
    if let Ok(h) = installed {
        let d = dir();
        clear(d);
        let (built, path) = snapshot::build(first, d).expect("a snapshot of an installed state");
        assert_eq!(built.root, h.root);
        assert_eq!(built.last_log_id, h.last_log_id);
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .expect("read the built snapshot");
        let again = install(db(true), &bytes, &built).expect("a built snapshot installs");
        assert_eq!(again.root, h.root);
    }
});
