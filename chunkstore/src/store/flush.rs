//! Whether one `syncfs` makes a file system's dirty files durable.
//!
//! `syncfs(fd)` writes back every dirty file of the file system holding
//! `fd` and, on the file systems listed in [`SYNCFS_DURABLE`], commits their
//! journal with a cache flush, as `fsync` of each would. One call instead of
//! one `fsync` per file: 5,000 freshly written 4 KiB files took 44-66 ms
//! against 418-653 ms for `fsync`s on 8 threads (ext4, this project's 2-core
//! VM; see `node/src/engine/fs_real.rs`). Elsewhere (FUSE, whose `syncfs` is
//! a silent no-op unless the server implements it; CIFS, which sends no
//! flush; NFS) callers must `fsync` each file.

use std::os::fd::AsFd;
use std::path::Path;

use rustix::fs::{self as rfs, Mode, OFlags};

/// `statfs` magic numbers of the file systems whose `syncfs` writes every
/// dirty file and commits (with a cache flush) like `fsync` would: ext2/3/4,
/// xfs, btrfs, zfs, f2fs, bcachefs, and tmpfs (nothing to flush).
pub const SYNCFS_DURABLE: [u64; 7] = [
    0xEF53,
    0x5846_5342,
    0x9123_683E,
    0x2FC1_2FC1,
    0xF2F5_2010,
    0xCA45_1A4E,
    0x0102_1994,
];

/// The file system type (`statfs` magic) of the one holding `fd`.
pub fn fs_type(fd: impl AsFd) -> std::io::Result<u64> {
    // The magic is 32 bits; `f_type` is signed and wider on some targets.
    #[allow(clippy::unnecessary_cast)]
    Ok(rfs::fstatfs(fd)?.f_type as u64 & 0xFFFF_FFFF)
}

/// Whether one `syncfs` on `fd` is known to make its file system durable.
pub fn syncfs_is_durable(fd: impl AsFd) -> std::io::Result<bool> {
    Ok(SYNCFS_DURABLE.contains(&fs_type(fd)?))
}

/// A directory whose file system flushes with one `syncfs`, or `None` when
/// its files must be fsynced one by one (or it cannot be opened).
pub fn syncfs_handle(dir: &Path) -> Option<std::os::fd::OwnedFd> {
    let fd = rfs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    syncfs_is_durable(&fd).ok()?.then_some(fd)
}

/// `syncfs` on the file system of `fd`.
pub fn syncfs(fd: impl AsFd) -> std::io::Result<()> {
    rfs::syncfs(fd).map_err(std::io::Error::from)
}
