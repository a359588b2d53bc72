//! The store's own chunk files: `<store>/blobs/ab/<hex>`, written durably.
//!
//! A blob is created as `<store>/tmp/<hex>.<n>.tmp`, written, made durable,
//! then renamed to `blobs/<first two hex digits>/<64 hex digits>` and the
//! rename made durable. Only then may the index mention it. A batch is
//! flushed together: where one `syncfs` is durable ([`super::flush`]), one
//! `syncfs` after the writes and one after the renames; elsewhere an `fsync`
//! per temp and per destination directory, in parallel. Files
//! left in `tmp/` by a crash are garbage by definition (nothing points at
//! them) and are removed when the store opens.

use super::error::StoreError;
use crate::Hash;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The blob area of one store directory.
#[derive(Debug)]
pub struct BlobDir {
    blobs: PathBuf,
    tmp: PathBuf,
    counter: AtomicU64,
    /// The store's directory when one `syncfs` makes its file system
    /// durable ([`super::flush`]): a batch of blobs is then flushed with two
    /// `syncfs` (data, then names) instead of an `fsync` per blob and per
    /// blob directory.
    syncfs: Option<std::os::fd::OwnedFd>,
}

/// Most threads `par_map` uses.
const IO_THREADS: usize = 8;

/// Runs `f` on every item, on up to 8 threads, results in item order. For
/// batches of fsyncs: their cost is device latency, not CPU, and concurrent
/// fsyncs share journal commits.
pub fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = items.len().min(IO_THREADS);
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let mut out: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let f = &f;
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mine = items.iter().enumerate().skip(t).step_by(threads);
                    mine.map(|(i, x)| (i, f(x))).collect::<Vec<_>>()
                })
            })
            .collect();
        for w in workers {
            match w.join() {
                Ok(done) => {
                    for (i, r) in done {
                        out[i] = Some(r);
                    }
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    out.into_iter().flatten().collect()
}

/// fsyncs a directory, making the names created/renamed in it durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

/// Creates `dir` if missing; when it was created, fsyncs its parent so the new
/// name survives a crash.
fn ensure_dir(dir: &Path) -> Result<(), StoreError> {
    match fs::create_dir(dir) {
        Ok(()) => match dir.parent() {
            Some(parent) => sync_dir(parent),
            None => Ok(()),
        },
        Err(e) if e.kind() == ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(StoreError::io(dir, e)),
    }
}

impl BlobDir {
    /// Creates (durably) `store/blobs` and `store/tmp` if missing.
    pub fn open(store: &Path) -> Result<Self, StoreError> {
        let blobs = store.join("blobs");
        let tmp = store.join("tmp");
        ensure_dir(&blobs)?;
        ensure_dir(&tmp)?;
        let syncfs = super::flush::syncfs_handle(store);
        Ok(BlobDir {
            blobs,
            tmp,
            counter: AtomicU64::new(0),
            syncfs,
        })
    }

    pub fn path(&self, hash: &Hash) -> PathBuf {
        let hex = hash.to_hex();
        self.blobs.join(&hex[..2]).join(hex)
    }

    /// Writes `data` to a fresh temp file (fsynced if `sync`; else the
    /// caller flushes the batch before publishing). The caller then
    /// [`publish`](Self::publish)es it or removes it.
    fn write_temp(&self, hash: &Hash, data: &[u8], sync: bool) -> Result<PathBuf, StoreError> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let path = self.tmp.join(format!("{}.{n}.tmp", hash.to_hex()));
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut f| {
                f.write_all(data)?;
                if sync {
                    f.sync_all()?;
                }
                Ok(())
            });
        if let Err(e) = written {
            let _ = fs::remove_file(&path);
            return Err(StoreError::io(path, e));
        }
        Ok(path)
    }

    /// Writes a batch of temps, durable when it returns: with one `syncfs`
    /// where that is durable, else an `fsync` each (in parallel). One result
    /// per item.
    pub fn write_temps(&self, items: &[(Hash, &[u8])]) -> Vec<Result<PathBuf, StoreError>> {
        let batched = self.syncfs.is_some();
        let mut out = par_map(items, |(h, d)| self.write_temp(h, d, !batched));
        if batched {
            if let Err(e) = self.flush_batch() {
                for r in &mut out {
                    if let Ok(p) = r {
                        let _ = fs::remove_file(&*p);
                        *r = Err(StoreError::io(
                            &self.tmp,
                            std::io::Error::new(e.kind(), e.to_string()),
                        ));
                    }
                }
            }
        }
        out
    }

    /// Makes the renames of a batch into `dirs` durable: one `syncfs` where
    /// that is durable, else an `fsync` of each directory (in parallel).
    pub fn sync_dirs(&self, dirs: &[PathBuf]) -> Result<(), StoreError> {
        if self.syncfs.is_some() {
            return self
                .flush_batch()
                .map_err(|e| StoreError::io(&self.blobs, e));
        }
        par_map(dirs, |d| sync_dir(d))
            .into_iter()
            .collect::<Result<Vec<()>, _>>()
            .map(|_| ())
    }

    fn flush_batch(&self) -> std::io::Result<()> {
        match &self.syncfs {
            Some(fd) => super::flush::syncfs(fd),
            None => Ok(()),
        }
    }

    /// Renames a synced temp file to the blob's name. Returns the directory
    /// that must be fsynced (once per batch) before the index may point at it.
    pub fn publish(&self, tmp: &Path, hash: &Hash) -> Result<PathBuf, StoreError> {
        let dest = self.path(hash);
        let dir = dest.parent().unwrap_or(&self.blobs).to_path_buf();
        ensure_dir(&dir)?;
        fs::rename(tmp, &dest).map_err(|e| StoreError::io(&dest, e))?;
        Ok(dir)
    }

    /// The blob's bytes, unverified; `None` if there is no such blob.
    pub fn read(&self, hash: &Hash) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path(hash);
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(path, e)),
        }
    }

    /// The blob's length, `None` if there is no such blob.
    pub fn len_of(&self, hash: &Hash) -> Result<Option<u64>, StoreError> {
        let path = self.path(hash);
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(path, e)),
        }
    }

    /// Deletes the blob; returns the bytes freed (0 if it was not there).
    pub fn remove(&self, hash: &Hash) -> Result<u64, StoreError> {
        let path = self.path(hash);
        let len = self.len_of(hash)?.unwrap_or(0);
        match fs::remove_file(&path) {
            Ok(()) => Ok(len),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(0),
            Err(e) => Err(StoreError::io(path, e)),
        }
    }

    /// Removes every file in `tmp/` (called at open, before any put).
    pub fn clean_tmp(&self) -> Result<u64, StoreError> {
        let mut n = 0;
        for entry in fs::read_dir(&self.tmp).map_err(|e| StoreError::io(&self.tmp, e))? {
            let entry = entry.map_err(|e| StoreError::io(&self.tmp, e))?;
            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => n += 1,
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(path, e)),
            }
        }
        Ok(n)
    }

    /// Every well-named blob on disk (`ab/<64 hex starting with ab>`).
    /// Other names are logged and left alone.
    pub fn scan(&self) -> Result<Vec<Hash>, StoreError> {
        let mut out = Vec::new();
        let rd = |d: &Path| fs::read_dir(d).map_err(|e| StoreError::io(d, e));
        for sub in rd(&self.blobs)? {
            let sub = sub.map_err(|e| StoreError::io(&self.blobs, e))?;
            let sub_path = sub.path();
            let sub_name = sub.file_name();
            let Some(prefix) = sub_name.to_str().filter(|s| s.len() == 2) else {
                tracing::warn!(path = %sub_path.display(), "unexpected entry in blob area, left alone");
                continue;
            };
            if !sub_path.is_dir() {
                tracing::warn!(path = %sub_path.display(), "unexpected entry in blob area, left alone");
                continue;
            }
            for f in rd(&sub_path)? {
                let f = f.map_err(|e| StoreError::io(&sub_path, e))?;
                let name = f.file_name();
                match name
                    .to_str()
                    .and_then(|n| Hash::from_hex(n).ok().map(|h| (n, h)))
                {
                    Some((n, h)) if n.starts_with(prefix) && n == h.to_hex() => out.push(h),
                    _ => {
                        tracing::warn!(path = %f.path().display(), "unexpected file in blob area, left alone")
                    }
                }
            }
        }
        Ok(out)
    }
}
