//! A node's Raft id: created once, kept in `<data>/node_id`, read back on every start.
//!
//! # Format
//! One line of text: `filesyncd-node-id v1 <id: 16 lowercase hex> <check: 8 lowercase hex>\n`
//! where `check` is the first 4 bytes of BLAKE3 of the id's 8 little-endian bytes. The check
//! makes a flipped digit a [`NodeIdError::Corrupt`] instead of a silently different identity.
//!
//! # Invariants
//! - The id is random and never 0.
//! - Once written, the file is never rewritten: a file that exists but does not parse is an
//!   error, never a reason to regenerate (a node that changes id behind the cluster's back
//!   would confuse membership; one that keeps an id after losing its log is worse, below).
//! - Written durably: temp file, write, fsync, rename, fsync the directory.
//!
//! # Why a wiped data directory gets a NEW id
//! Raft's safety rests on a voter never forgetting its vote and its acknowledged log. A node
//! whose data directory was wiped has forgotten both; if it came back under its old id it
//! could vote twice in one term or make the leader see a follower's log go backwards (openraft
//! treats that as a broken invariant and panics). With a fresh id it is simply a new machine
//! that must be added to the membership (and the old id removed). The log store records the
//! id it was created for and refuses to open under another one
//! ([`crate::log_store::LogStoreError::NodeIdMismatch`]), so deleting only this file is caught.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::NodeId;

/// File name of the id inside the data directory.
pub const NODE_ID_FILE: &str = "node_id";

const MAGIC: &str = "filesyncd-node-id v1";

/// Errors reading or creating the node id file.
#[derive(Debug, thiserror::Error)]
pub enum NodeIdError {
    #[error("I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file exists but is not a valid node id file. Not repaired automatically: restore
    /// it, or wipe the whole data directory to join as a new node.
    #[error("corrupt node id file {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// Whether [`load_or_create`] found an existing id or made a new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Existing,
    Created,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> NodeIdError + '_ {
    move |source| NodeIdError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn check(id: NodeId) -> u32 {
    let h = blake3::hash(&id.to_le_bytes());
    let b = h.as_bytes();
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The file's exact text for `id`.
pub fn encode(id: NodeId) -> String {
    format!("{MAGIC} {id:016x} {:08x}\n", check(id))
}

/// Parses the file's text; the reason string says what is wrong.
pub fn decode(text: &str) -> Result<NodeId, String> {
    let line = text
        .strip_suffix('\n')
        .ok_or_else(|| "missing final newline (torn write?)".to_string())?;
    let rest = line
        .strip_prefix(MAGIC)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or_else(|| format!("does not start with {MAGIC:?}"))?;
    let (id_hex, check_hex) = rest
        .split_once(' ')
        .ok_or_else(|| "expected `<id> <check>`".to_string())?;
    let lower_hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !lower_hex(id_hex, 16) || !lower_hex(check_hex, 8) {
        return Err("id or check is not fixed-width lowercase hex".into());
    }
    let id = u64::from_str_radix(id_hex, 16).map_err(|e| e.to_string())?;
    let sum = u32::from_str_radix(check_hex, 16).map_err(|e| e.to_string())?;
    if sum != check(id) {
        return Err("check value does not match the id".into());
    }
    if id == 0 {
        return Err("id 0 is reserved".into());
    }
    Ok(id)
}

/// Reads the id in `data_dir`, `Ok(None)` if the file does not exist.
pub fn load(data_dir: &Path) -> Result<Option<NodeId>, NodeIdError> {
    let path = data_dir.join(NODE_ID_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path)(e)),
    };
    let text = String::from_utf8(bytes).map_err(|_| NodeIdError::Corrupt {
        path: path.clone(),
        reason: "not UTF-8".into(),
    })?;
    decode(&text)
        .map(Some)
        .map_err(|reason| NodeIdError::Corrupt { path, reason })
}

/// Returns the id kept in `data_dir`, creating the directory and a new random id when there
/// is none. Blocking.
pub fn load_or_create(data_dir: &Path) -> Result<(NodeId, Origin), NodeIdError> {
    if let Some(id) = load(data_dir)? {
        return Ok((id, Origin::Existing));
    }
    fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    let id = loop {
        let id: NodeId = rand::random();
        if id != 0 {
            break id;
        }
    };
    write_durably(data_dir, id)?;
    tracing::info!(node_id = id, dir = %data_dir.display(), "created a new node id");
    Ok((id, Origin::Created))
}

fn write_durably(data_dir: &Path, id: NodeId) -> Result<(), NodeIdError> {
    let tmp = data_dir.join(format!("{NODE_ID_FILE}.tmp.{}", std::process::id()));
    let dst = data_dir.join(NODE_ID_FILE);
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(encode(id).as_bytes()).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    fs::rename(&tmp, &dst).map_err(io(&dst))?;
    File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(io(data_dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn roundtrip(id in 1u64..) {
            prop_assert_eq!(decode(&encode(id)), Ok(id));
        }

        #[test]
        fn any_changed_byte_is_rejected(id in 1u64.., pos in any::<prop::sample::Index>(), to in any::<u8>()) {
            let mut bytes = encode(id).into_bytes();
            let i = pos.index(bytes.len());
            prop_assume!(bytes[i] != to);
            bytes[i] = to;
            // Not UTF-8 at all: `load` rejects it before decoding.
            if let Ok(text) = String::from_utf8(bytes) {
                prop_assert!(decode(&text).is_err());
            }
        }
    }

    #[test]
    fn zero_and_truncation_are_rejected() {
        assert!(decode(&encode(0)).is_err());
        let text = encode(42);
        assert!(decode(&text[..text.len() - 1]).is_err());
        assert!(decode("").is_err());
    }
}
