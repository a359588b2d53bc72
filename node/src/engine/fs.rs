//! The file-system seam: every access of the engine to the synced directory.
//!
//! Paths are relative to the synced root ('/'-separated, `""` = the root
//! itself). Implementations must resolve every path *beneath the root
//! without following any symlink*, in any component: a symlink where a
//! directory is expected is an error (`ENOTDIR`/`ELOOP`), never followed, so
//! the engine can never read or write outside the root through a symlinked
//! parent, even if a user swaps a directory for a link mid-operation.
//!
//! - [`RootFs`](super::fs_real::RootFs): the real one (`openat` walking with
//!   `O_NOFOLLOW | O_DIRECTORY` from a root directory fd, then `*at` calls).
//! - [`FakeFs`](super::fs_fake::FakeFs): in memory, with injected errors and
//!   simulated crashes (un-fsynced data and directory entries are lost).

use std::ffi::OsString;
use std::io::{self, Read};

use filesyncd_chunkstore::chunker::{
    chunk_and_hash_with, chunk_open_file_with, Chunker, FileChunks, PipelineError,
};
use filesyncd_chunkstore::ChunkEntry;

use super::types::{FileKind, Stat};

/// An open file being read.
pub trait FileRead: Read + Send {
    /// `fstat` of the open handle.
    fn stat(&self) -> io::Result<Stat>;
    /// The OS file behind the handle, if there is one (`copy_file_range`
    /// between two real files; fakes copy through memory).
    fn as_file(&self) -> Option<&std::fs::File> {
        None
    }
}

/// Chunks and hashes an open file, calling `sink(offset, &entry, bytes)` in
/// stream order: a real file is cut on every core when it is large
/// ([`chunk_open_file_with`]: positional reads, the same chunks as a serial
/// run), anything else streams through the two-thread pipeline.
pub fn chunk_read<E, F>(
    file: Box<dyn FileRead>,
    chunker: &Chunker,
    sink: F,
) -> Result<FileChunks, PipelineError<E>>
where
    F: FnMut(u64, &ChunkEntry, &[u8]) -> Result<(), E>,
{
    match file.as_file() {
        Some(f) => chunk_open_file_with(f, chunker, sink),
        None => chunk_and_hash_with(file, chunker, sink),
    }
}

/// A new file being written (a temp file of the materializer).
pub trait FileWrite: Send {
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Truncates or extends (with a hole) to `len`.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// Sets the permission bits (`fchmod`).
    fn set_mode(&mut self, mode: u32) -> io::Result<()>;
    /// Sets the modification time (and the access time) in ns since the epoch.
    fn set_mtime(&mut self, mtime_ns: i64) -> io::Result<()>;
    /// `fsync`: data and metadata durable.
    fn sync(&mut self) -> io::Result<()>;
    fn stat(&self) -> io::Result<Stat>;
    /// The OS file behind the handle, if there is one (see
    /// [`FileRead::as_file`]).
    fn as_file(&self) -> Option<&std::fs::File> {
        None
    }
}

/// Every operation the engine does on the synced directory.
pub trait Fs: Send + Sync {
    /// `lstat`; `Ok(None)` if nothing is there.
    fn lstat(&self, rel: &str) -> io::Result<Option<Stat>>;
    /// The names in directory `rel`, as the OS gives them (maybe not UTF-8).
    fn read_dir(&self, rel: &str) -> io::Result<Vec<OsString>>;
    /// A symlink's target, raw.
    fn read_link(&self, rel: &str) -> io::Result<OsString>;
    /// Opens a regular file for reading (fails on a symlink).
    fn open_read(&self, rel: &str) -> io::Result<Box<dyn FileRead>>;
    /// Creates a new file (`O_CREAT | O_EXCL`, mode 0600).
    fn create_new(&self, rel: &str) -> io::Result<Box<dyn FileWrite>>;
    /// Opens an existing regular file for writing (never through a symlink,
    /// never creating it): a staged version's mode and mtime are set
    /// through it (`engine::stage`).
    fn open_write(&self, rel: &str) -> io::Result<Box<dyn FileWrite>>;
    /// Renames within the root; with `noreplace`, fails with `AlreadyExists`
    /// instead of replacing an existing `to`.
    fn rename(&self, from: &str, to: &str, noreplace: bool) -> io::Result<()>;
    /// `fsync`s directory `rel`, making its entries durable.
    fn sync_dir(&self, rel: &str) -> io::Result<()>;
    /// Makes the current data of many regular files, and their names,
    /// durable, as a batch: never one serial `fsync` per file (the real one:
    /// one `syncfs`, or parallel `fsync`s, see `fs_real.rs`). One result per
    /// path, in order. `Ok` means whatever the path names now was flushed
    /// (the caller re-stats to know it is still what it hashed); a path that
    /// is absent may be `Err(NotFound)` or `Ok`.
    fn sync_files(&self, rels: &[&str]) -> Vec<io::Result<()>>;
    fn mkdir(&self, rel: &str, mode: u32) -> io::Result<()>;
    fn symlink(&self, target: &str, rel: &str) -> io::Result<()>;
    /// A second name `to` for the regular file `from` (`linkat`, never
    /// following a symlink; fails if `to` exists).
    fn hard_link(&self, from: &str, to: &str) -> io::Result<()>;
    fn remove_file(&self, rel: &str) -> io::Result<()>;
    /// Removes an empty directory.
    fn remove_dir(&self, rel: &str) -> io::Result<()>;
    /// Sets the permission bits of a directory or file (never through a symlink).
    fn set_mode(&self, rel: &str, mode: u32) -> io::Result<()>;
    /// How far apart two writes can be and still leave the same mtime and
    /// ctime (the file system's timestamp tick), in ns: what makes a file
    /// racily clean (`scan::RacySet`). Unknown: [`COARSE_TICK_NS`].
    fn timestamp_tick_ns(&self) -> i64 {
        COARSE_TICK_NS
    }
}

/// The timestamp tick of local Linux file systems with ns timestamps
/// (ext4, xfs, btrfs, ...): they stamp with the kernel's coarse clock, one
/// jiffy (at most 10 ms) apart; taken twice that.
pub const FINE_TICK_NS: i64 = 20_000_000;
/// The tick assumed elsewhere (FAT's mtime has 2 s; network and FUSE file
/// systems stamp as their server does).
pub const COARSE_TICK_NS: i64 = 2_000_000_000;

/// Joins a directory and a name into a relative path.
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// Splits `a/b/c` into (`a/b`, `c`); a top-level name has parent `""`.
pub fn split(rel: &str) -> (&str, &str) {
    match rel.rfind('/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => ("", rel),
    }
}

/// Nanoseconds since the epoch from seconds and nanoseconds.
pub fn ns(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// The [`FileKind`] of a raw `st_mode`.
pub fn kind_of_mode(mode: u32) -> FileKind {
    match mode & 0o170000 {
        0o100000 => FileKind::File,
        0o040000 => FileKind::Dir,
        0o120000 => FileKind::Symlink,
        _ => FileKind::Other,
    }
}

/// Reads an open file to its end (small files: the marker, ignore files).
pub fn read_to_end(fs: &dyn Fs, rel: &str, limit: u64) -> io::Result<Vec<u8>> {
    let f = fs.open_read(rel)?;
    let mut buf = Vec::new();
    f.take(limit).read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(join("", "a"), "a");
        assert_eq!(join("a/b", "c"), "a/b/c");
        assert_eq!(split("a/b/c"), ("a/b", "c"));
        assert_eq!(split("c"), ("", "c"));
        assert_eq!(ns(2, 5), 2_000_000_005);
        assert_eq!(kind_of_mode(0o100644), FileKind::File);
        assert_eq!(kind_of_mode(0o040755), FileKind::Dir);
        assert_eq!(kind_of_mode(0o120777), FileKind::Symlink);
        assert_eq!(kind_of_mode(0o010644), FileKind::Other);
    }
}
