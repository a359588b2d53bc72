//! The node's long-term identity: one ed25519 keypair, created once.
//!
//! * File: `<data dir>/node.key`, libp2p's protobuf encoding of the keypair
//!   (`Keypair::to_protobuf_encoding`), mode `0600`.
//! * Created durably: a temp file opened `O_EXCL` with mode `0600`, written,
//!   fsynced, renamed over the final name, then the directory fsynced.
//! * Never regenerated silently: a file that exists but cannot be decoded, or
//!   that group/others may read or write, is a typed error and the node
//!   stops. Regenerating would give the node a new `PeerId`, i.e. make it a
//!   stranger to its own cluster.
//!
//! The `PeerId` (multihash of the public key) is what membership lists name.

use libp2p::identity::Keypair;
use libp2p::PeerId;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// File name of the key inside the data directory.
pub const KEY_FILE: &str = "node.key";

/// Largest key file we are willing to read (an ed25519 protobuf is ~70 bytes).
const MAX_KEY_FILE: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("identity key {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "identity key {path} has mode {mode:o}: group/others may access it; \
         run `chmod 600 {path}` after checking nobody copied it"
    )]
    InsecurePermissions { path: PathBuf, mode: u32 },
    #[error(
        "identity key {path} is corrupt ({reason}); refusing to create a new identity \
         (this node would become a stranger to its cluster)"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("identity key {path} is not an ed25519 key")]
    NotEd25519 { path: PathBuf },
}

/// The loaded identity and whether it was created by this call.
#[derive(Debug)]
pub struct Identity {
    pub keypair: Keypair,
    pub peer_id: PeerId,
    pub created: bool,
}

/// Loads `<dir>/node.key`, or creates it (durably, mode 0600) if it does not
/// exist. `dir` must exist.
pub fn load_or_create(dir: &Path) -> Result<Identity, IdentityError> {
    let path = dir.join(KEY_FILE);
    match fs::symlink_metadata(&path) {
        Ok(_) => {
            let keypair = load(&path)?;
            let peer_id = keypair.public().to_peer_id();
            Ok(Identity {
                keypair,
                peer_id,
                created: false,
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let keypair = Keypair::generate_ed25519();
            write_new(dir, &path, &keypair)?;
            let peer_id = keypair.public().to_peer_id();
            tracing::info!(%peer_id, path = %path.display(), "created a new node identity");
            Ok(Identity {
                keypair,
                peer_id,
                created: true,
            })
        }
        Err(source) => Err(IdentityError::Io { path, source }),
    }
}

/// Loads an existing key file, checking its permissions first.
pub fn load(path: &Path) -> Result<Keypair, IdentityError> {
    let io_err = |source| IdentityError::Io {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(IdentityError::Corrupt {
            path: path.to_owned(),
            reason: "not a regular file".into(),
        });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(IdentityError::InsecurePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    if meta.len() > MAX_KEY_FILE {
        return Err(IdentityError::Corrupt {
            path: path.to_owned(),
            reason: format!("{} bytes is too large for a key", meta.len()),
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_KEY_FILE)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    let keypair = Keypair::from_protobuf_encoding(&bytes).map_err(|e| IdentityError::Corrupt {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    if keypair.clone().try_into_ed25519().is_err() {
        return Err(IdentityError::NotEd25519 {
            path: path.to_owned(),
        });
    }
    Ok(keypair)
}

fn write_new(dir: &Path, path: &Path, keypair: &Keypair) -> Result<(), IdentityError> {
    let io_err = |source| IdentityError::Io {
        path: path.to_owned(),
        source,
    };
    let bytes = keypair
        .to_protobuf_encoding()
        .map_err(|e| IdentityError::Corrupt {
            path: path.to_owned(),
            reason: format!("cannot encode the new key: {e}"),
        })?;
    let tmp = dir.join(format!(".{KEY_FILE}.tmp-{}", std::process::id()));
    // A stale temp file from a crash is ours to replace: it never became the key.
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err)?;
    // The umask cannot widen 0600, but be explicit in case of odd defaults.
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io_err)?;
    let res = file
        .write_all(&bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&tmp, path))
        .and_then(|()| File::open(dir)?.sync_all());
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        assert!(a.created);
        let mode = fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = load_or_create(dir.path()).unwrap();
        assert!(!b.created);
        assert_eq!(a.peer_id, b.peer_id);
    }

    #[test]
    fn group_readable_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create(dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        match load_or_create(dir.path()) {
            Err(IdentityError::InsecurePermissions { mode, .. }) => assert_eq!(mode, 0o640),
            other => panic!("expected InsecurePermissions, got {other:?}"),
        }
    }

    #[test]
    fn corrupt_key_is_refused_not_regenerated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        f.write_all(b"definitely not a protobuf keypair").unwrap();
        drop(f);
        assert!(matches!(
            load_or_create(dir.path()),
            Err(IdentityError::Corrupt { .. })
        ));
        // The corrupt file is left as it was, for the operator to inspect.
        assert_eq!(
            fs::read(&path).unwrap(),
            b"definitely not a protobuf keypair"
        );
    }
}
