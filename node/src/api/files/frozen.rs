//! [`FrozenIndex`]: a chunk store seen through a window that reads and
//! stores chunks but never records or forgets live files.
//!
//! The engine's scanner and materializer index every file they hash or
//! write as a live file of the synced directory. `verify` hashes files only
//! to compare them, and `restore --to /elsewhere` writes outside the synced
//! directory: neither may touch the live-file index (a path outside the
//! root would be recorded as if it were inside it).

use filesyncd_chunkstore::store::{ChunkStore, FileStamp, GcStats, Location, Result};
use filesyncd_merkle::{ChunkEntry, Hash};

pub struct FrozenIndex<'a> {
    pub inner: &'a dyn ChunkStore,
}

impl ChunkStore for FrozenIndex<'_> {
    fn put(&self, hash: Hash, data: &[u8]) -> Result<()> {
        self.inner.put(hash, data)
    }

    fn has(&self, hash: &Hash) -> Result<bool> {
        self.inner.has(hash)
    }

    fn get(&self, hash: &Hash) -> Result<Option<Vec<u8>>> {
        self.inner.get(hash)
    }

    fn locate(&self, hash: &Hash) -> Result<Option<Location>> {
        self.inner.locate(hash)
    }

    fn file_stamp(&self, p: &str) -> Result<Option<FileStamp>> {
        self.inner.file_stamp(p)
    }

    fn index_file(&self, _: &str, _: FileStamp, _: &[(u64, ChunkEntry)]) -> Result<()> {
        Ok(())
    }

    fn forget_file(&self, _: &str) -> Result<()> {
        Ok(())
    }

    /// Never collects through the window.
    fn gc(&self, _keep: &dyn Fn(&Hash) -> bool) -> Result<GcStats> {
        Ok(GcStats::default())
    }
}

#[cfg(test)]
mod tests {
    use filesyncd_chunkstore::store::MemChunkStore;

    use super::*;

    #[test]
    fn reads_through_and_leaves_the_file_index_alone() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("f"), b"abc").unwrap();
        let store = MemChunkStore::new(t.path());
        let e = ChunkEntry {
            hash: Hash::of_chunk(b"abc"),
            len: 3,
        };
        let stamp = FileStamp::of_path(&t.path().join("f")).unwrap();
        let frozen = FrozenIndex { inner: &store };
        frozen.index_file("f", stamp, &[(0, e)]).unwrap();
        assert!(
            !store.has(&e.hash).unwrap(),
            "not indexed through the window"
        );
        store.index_file("f", stamp, &[(0, e)]).unwrap();
        frozen.forget_file("f").unwrap();
        assert_eq!(frozen.get(&e.hash).unwrap().as_deref(), Some(&b"abc"[..]));
        let blob = Hash::of_chunk(b"xyz");
        frozen.put(blob, b"xyz").unwrap();
        assert!(store.has(&blob).unwrap());
    }
}
