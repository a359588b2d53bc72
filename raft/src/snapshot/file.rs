//! Writing and reading the snapshot file format (see the parent module doc).

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use openraft::{LogId, StoredMembership};
use redb::{Database, ReadableTable};
use serde::{Deserialize, Serialize};

use filesyncd_merkle::Hash;

use crate::command::Outcome;
use crate::history::{ClusterState, Hint, PathRecord, TokenRecord};
use crate::state_machine::error::SmError;
use crate::state_machine::tables::{self, dec, enc};
use crate::{NodeId, NodeInfo};

pub const MAGIC: &[u8; 8] = b"FSDSNAP\0";
pub const FORMAT_VERSION: u32 = 1;
/// Largest frame accepted when reading.
const MAX_FRAME: u32 = 64 << 20;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapHeader {
    pub last_log_id: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, NodeInfo>,
    pub snapshot_id: String,
    /// Cluster root at `last_log_id`.
    pub root: Hash,
    pub state: ClusterState,
}

impl SnapHeader {
    pub fn meta(&self) -> openraft::SnapshotMeta<NodeId, NodeInfo> {
        openraft::SnapshotMeta {
            last_log_id: self.last_log_id,
            last_membership: self.membership.clone(),
            snapshot_id: self.snapshot_id.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapRecord {
    History {
        path: String,
        rec: PathRecord,
    },
    Token {
        hash: Hash,
        rec: TokenRecord,
    },
    Dedup {
        origin: NodeId,
        seq: u64,
        outcomes: Vec<Outcome>,
    },
    Hint(Hint),
    End {
        records: u64,
    },
    /// A token id and the hash it names (appended variant: older files have none).
    TokenId {
        id: String,
        hash: Hash,
    },
    /// A removed member (appended variant).
    Revoked {
        node: NodeId,
        rec: crate::history::RevokedRecord,
    },
    /// The cluster key's seed (appended variant).
    ClusterKey(crate::command::ClusterSeed),
}

struct HashWriter<W: Write> {
    inner: W,
    hasher: blake3::Hasher,
}

impl<W: Write> HashWriter<W> {
    fn frame<T: Serialize>(&mut self, v: &T) -> Result<(), SmError> {
        let bytes = enc(v)?;
        let len = u32::try_from(bytes.len())
            .ok()
            .filter(|l| *l <= MAX_FRAME)
            .ok_or_else(|| SmError::BadSnapshot("record too large".into()))?;
        self.write_all(&len.to_le_bytes())?;
        self.write_all(&bytes)?;
        Ok(())
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Reads frames after the magic and version.
pub struct FrameReader<R: Read> {
    inner: R,
    buf: Vec<u8>,
}

impl<R: Read> FrameReader<R> {
    /// Checks the magic and version.
    pub fn new(mut inner: R) -> Result<Self, SmError> {
        let mut head = [0u8; 12];
        inner
            .read_exact(&mut head)
            .map_err(|_| SmError::BadSnapshot("truncated header".into()))?;
        if &head[..8] != MAGIC {
            return Err(SmError::BadSnapshot("not a filesyncd snapshot".into()));
        }
        let version = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
        if version != FORMAT_VERSION {
            return Err(SmError::BadSnapshot(format!("format version {version}")));
        }
        Ok(FrameReader {
            inner,
            buf: Vec::new(),
        })
    }

    pub fn next<T: serde::de::DeserializeOwned>(&mut self) -> Result<T, SmError> {
        let mut len = [0u8; 4];
        self.inner
            .read_exact(&mut len)
            .map_err(|_| SmError::BadSnapshot("truncated frame".into()))?;
        let len = u32::from_le_bytes(len);
        if len > MAX_FRAME {
            return Err(SmError::BadSnapshot("frame too large".into()));
        }
        self.buf.resize(len as usize, 0);
        self.inner
            .read_exact(&mut self.buf)
            .map_err(|_| SmError::BadSnapshot("truncated frame".into()))?;
        postcard::from_bytes(&self.buf).map_err(|e| SmError::BadSnapshot(e.to_string()))
    }
}

pub fn fsync_dir(dir: &Path) -> Result<(), SmError> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

fn nonce() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The file name of a snapshot at `index`.
pub fn snap_name(index: u64, nonce: &str) -> String {
    format!("snap-{index:020}-{nonce}.snap")
}

fn index_of(name: &str) -> Option<u64> {
    let rest = name.strip_prefix("snap-")?.strip_suffix(".snap")?;
    rest.get(..20)?.parse().ok()
}

/// The current snapshot file of `dir`, if any (the highest index).
pub fn current(dir: &Path) -> Result<Option<PathBuf>, SmError> {
    let mut best: Option<(u64, String)> = None;
    for e in fs::read_dir(dir)? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if let Some(i) = index_of(&name) {
            if best.as_ref().is_none_or(|(bi, bn)| (i, &name) > (*bi, bn)) {
                best = Some((i, name));
            }
        }
    }
    Ok(best.map(|(_, n)| dir.join(n)))
}

/// Makes `tmp` (complete and fsynced) the current snapshot at `index`, unless a newer one
/// exists; deletes the older ones. Returns the final path (or `None` if discarded).
pub fn promote(dir: &Path, tmp: &Path, index: u64) -> Result<Option<PathBuf>, SmError> {
    if let Some(cur) = current(dir)? {
        let cur_index = cur
            .file_name()
            .and_then(|n| index_of(&n.to_string_lossy()))
            .unwrap_or(0);
        if cur_index > index {
            fs::remove_file(tmp)?;
            return Ok(None);
        }
    }
    let dest = dir.join(snap_name(index, &nonce()));
    fs::rename(tmp, &dest)?;
    fsync_dir(dir)?;
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if p != dest && index_of(&name).is_some() {
            fs::remove_file(&p)?;
        }
    }
    Ok(Some(dest))
}

/// Builds a snapshot of `db` into `dir`, streaming from one read transaction.
pub fn build(db: &Database, dir: &Path) -> Result<(SnapHeader, PathBuf), SmError> {
    let txn = db.begin_read()?;
    let meta = txn.open_table(tables::META)?;
    let last_log_id: Option<LogId<NodeId>> = match meta.get(tables::META_APPLIED)? {
        Some(v) => dec(v.value())?,
        None => None,
    };
    let membership = match meta.get(tables::META_MEMBERSHIP)? {
        Some(v) => dec(v.value())?,
        None => StoredMembership::default(),
    };
    let root = match meta.get(tables::META_ROOT)? {
        Some(v) => dec(v.value())?,
        None => super::super::state_machine::empty_root(),
    };
    let state = tables::read_state(&txn.open_table(tables::STATE)?)?;
    let index = last_log_id.map_or(0, |l| l.index);
    let nonce = nonce();
    let header = SnapHeader {
        last_log_id,
        membership,
        snapshot_id: format!("{index}-{nonce}"),
        root,
        state,
    };

    let tmp = dir.join(format!("build-{nonce}.tmp"));
    let file = File::create(&tmp)?;
    let mut w = HashWriter {
        inner: BufWriter::with_capacity(1 << 20, file),
        hasher: blake3::Hasher::new(),
    };
    w.write_all(MAGIC)?;
    w.write_all(&FORMAT_VERSION.to_le_bytes())?;
    w.frame(&header)?;
    let mut records = 0u64;
    for item in txn.open_table(tables::HISTORY)?.iter()? {
        let (k, v) = item?;
        let path = k.value().0.to_string();
        w.frame(&SnapRecord::History {
            path,
            rec: dec(v.value())?,
        })?;
        records += 1;
    }
    for item in txn.open_table(tables::TOKENS)?.iter()? {
        let (k, v) = item?;
        w.frame(&SnapRecord::Token {
            hash: Hash(k.value()),
            rec: dec(v.value())?,
        })?;
        records += 1;
    }
    for item in txn.open_table(tables::TOKEN_IDS)?.iter()? {
        let (k, v) = item?;
        w.frame(&SnapRecord::TokenId {
            id: k.value().to_string(),
            hash: Hash(v.value()),
        })?;
        records += 1;
    }
    for item in txn.open_table(tables::DEDUP)?.iter()? {
        let (k, v) = item?;
        let (origin, seq) = k.value();
        w.frame(&SnapRecord::Dedup {
            origin,
            seq,
            outcomes: dec(v.value())?,
        })?;
        records += 1;
    }
    for item in txn.open_table(tables::HINTS)?.iter()? {
        let (k, _) = item?;
        let (at_ms, path, index, pos) = k.value();
        w.frame(&SnapRecord::Hint(Hint {
            at_ms,
            path: path.to_string(),
            version: crate::command::Version::new(index, pos),
        }))?;
        records += 1;
    }
    for item in txn.open_table(tables::REVOKED)?.iter()? {
        let (k, v) = item?;
        w.frame(&SnapRecord::Revoked {
            node: k.value(),
            rec: dec(v.value())?,
        })?;
        records += 1;
    }
    if let Some(seed) = tables::read_cluster_key(&txn.open_table(tables::STATE)?)? {
        w.frame(&SnapRecord::ClusterKey(seed))?;
        records += 1;
    }
    w.frame(&SnapRecord::End { records })?;
    let digest = w.hasher.finalize();
    let mut inner = w.inner;
    inner.write_all(digest.as_bytes())?;
    let file = inner
        .into_inner()
        .map_err(|e| SmError::Io(e.into_error()))?;
    file.sync_all()?;
    drop(file);
    let dest = promote(dir, &tmp, index)?;
    let dest = match dest {
        Some(d) => d,
        // A newer snapshot was installed meanwhile: serve that one.
        None => current(dir)?.ok_or_else(|| SmError::BadSnapshot("snapshot vanished".into()))?,
    };
    let header = read_header(&dest)?;
    Ok((header, dest))
}

/// Checks the blake3 trailer of the file at `path`, streaming.
pub fn verify(path: &Path) -> Result<(), SmError> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    if len < 12 + 32 {
        return Err(SmError::BadSnapshot("file too short".into()));
    }
    let mut hasher = blake3::Hasher::new();
    let mut body = BufReader::with_capacity(1 << 20, (&mut f).take(len - 32));
    std::io::copy(&mut body, &mut hasher)?;
    let mut trailer = [0u8; 32];
    f.seek(SeekFrom::Start(len - 32))?;
    f.read_exact(&mut trailer)?;
    if hasher.finalize().as_bytes() != &trailer {
        return Err(SmError::BadSnapshot("checksum mismatch".into()));
    }
    Ok(())
}

/// Reads the header of a snapshot file (no checksum check).
pub fn read_header(path: &Path) -> Result<SnapHeader, SmError> {
    let mut r = FrameReader::new(BufReader::new(File::open(path)?))?;
    r.next()
}

/// Opens a frame reader positioned after the header, with the header.
pub fn open_for_read(path: &Path) -> Result<(SnapHeader, FrameReader<BufReader<File>>), SmError> {
    let mut r = FrameReader::new(BufReader::with_capacity(1 << 20, File::open(path)?))?;
    let header = r.next()?;
    Ok((header, r))
}
