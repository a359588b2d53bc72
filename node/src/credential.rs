//! The control API's credential: a bearer secret that every route but
//! `/healthz` requires, so that only a local user who can read it (the
//! daemon's own user, or root) controls the node.
//!
//! Where the secret comes from, in the daemon:
//! - `--api-token` / `--api-token-file` (flag, env or TOML) when given: the
//!   operator manages it and passes it to the CLI the same way;
//! - else a secret the daemon draws once and keeps in `<data>/api-token`
//!   (mode 0600), so it survives restarts. The daemon also *publishes* that
//!   secret in its user's runtime directory, one file per API address
//!   ([`runtime_file`]), so `filesyncd status --api ADDR` works for the
//!   daemon's user with no other flag, as it did before the API required a
//!   credential. The runtime directory is `$XDG_RUNTIME_DIR/filesyncd`, else
//!   (unset, or not usable) `/tmp/filesyncd-<uid>`; it must be a directory owned by the user with
//!   no group or other permission, else it is not used (another user could
//!   have planted it to read or choose the secret).
//!
//! Where the CLI looks ([`lookup`]), first match wins: `--api-token`,
//! `--api-token-file`, `<--data or FILESYNCD_DATA>/api-token`, the runtime
//! file of `--api`, the default data directory's `api-token`.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The generated secret's file in the data directory.
pub const DATA_FILE: &str = "api-token";
/// Longest secret file read (a secret is one line).
const MAX_SECRET: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: empty (a secret file holds one line with the secret)")]
    Empty(PathBuf),
    #[error("{0}: longer than {MAX_SECRET} bytes or not UTF-8: not a secret file")]
    Malformed(PathBuf),
    #[error("{path}: not used: {why} (it must be a directory owned by uid {uid} with mode 0700)")]
    UnsafeDir {
        path: PathBuf,
        why: String,
        uid: u32,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CredentialError + '_ {
    move |source| CredentialError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A fresh secret: 32 random bytes from the OS, hex.
pub fn generate() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Reads a secret file: its first line, trimmed, non-empty.
pub fn read_secret(path: &Path) -> Result<String, CredentialError> {
    let mut text = String::new();
    File::open(path)
        .map_err(io(path))?
        .take(MAX_SECRET + 1)
        .read_to_string(&mut text)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => CredentialError::Malformed(path.to_path_buf()),
            _ => CredentialError::Io {
                path: path.to_path_buf(),
                source: e,
            },
        })?;
    if text.len() as u64 > MAX_SECRET {
        return Err(CredentialError::Malformed(path.to_path_buf()));
    }
    let secret = text.lines().next().unwrap_or("").trim();
    if secret.is_empty() {
        return Err(CredentialError::Empty(path.to_path_buf()));
    }
    Ok(secret.to_owned())
}

/// Writes `contents` to `path` whole or not at all, readable by its owner
/// only: a 0600 temp file beside it, fsync, rename, fsync of the directory.
fn write_private(path: &Path, contents: &str) -> Result<(), CredentialError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("secret");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(contents.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io(path)(e)
    })
}

/// The daemon's own secret in `data`: read when present, else drawn and
/// written (0600) once.
pub fn load_or_create(data: &Path) -> Result<String, CredentialError> {
    let path = data.join(DATA_FILE);
    match read_secret(&path) {
        Ok(s) => {
            // A secret left readable by others (restored from a backup,
            // copied by hand) is made private again.
            let meta = fs::metadata(&path).map_err(io(&path))?;
            if meta.permissions().mode() & 0o077 != 0 {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(io(&path))?;
            }
            Ok(s)
        }
        Err(CredentialError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            let s = generate();
            write_private(&path, &s)?;
            Ok(s)
        }
        Err(e) => Err(e),
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The runtime directories of this user's daemons, in order of preference
/// (see the module doc): `$XDG_RUNTIME_DIR/filesyncd` when that variable is
/// set, then `/tmp/filesyncd-<uid>` (used when the first is missing or not
/// this user's: an `XDG_RUNTIME_DIR` inherited through `sudo -u`, say).
/// Not created or checked here.
pub fn runtime_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::with_capacity(2);
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        dirs.push(PathBuf::from(x).join("filesyncd"));
    }
    dirs.push(std::env::temp_dir().join(format!("filesyncd-{}", euid())));
    dirs
}

/// Checks that `dir` is a real directory of this user with no group or
/// other permission.
fn check_private_dir(dir: &Path) -> Result<(), CredentialError> {
    let uid = euid();
    let bad = |why: String| CredentialError::UnsafeDir {
        path: dir.to_path_buf(),
        why,
        uid,
    };
    let meta = fs::symlink_metadata(dir).map_err(io(dir))?;
    if !meta.is_dir() {
        return Err(bad("not a directory".into()));
    }
    if meta.uid() != uid {
        return Err(bad(format!("owned by uid {}", meta.uid())));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(bad(format!("mode {:o}", meta.mode() & 0o7777)));
    }
    Ok(())
}

/// The file that holds the secret of the API at `api` in `dir`.
pub fn runtime_file_in(dir: &Path, api: &SocketAddr) -> PathBuf {
    let host = api.ip().to_string().replace(':', "_");
    dir.join(format!("api-{host}-{}", api.port()))
}

/// Where [`publish`] puts the secret of `api`: in the first of the
/// [`runtime_dirs`] that is usable (or would be once created).
pub fn runtime_file(api: &SocketAddr) -> PathBuf {
    let dirs = runtime_dirs();
    let dir = dirs
        .iter()
        .find(|d| check_private_dir(d).is_ok())
        .unwrap_or(&dirs[dirs.len() - 1]);
    runtime_file_in(dir, api)
}

/// Creates `dir` 0700 if missing, then checks it is private to this user.
fn private_dir(dir: &Path) -> Result<(), CredentialError> {
    if let Err(e) = fs::DirBuilder::new().mode(0o700).create(dir) {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(io(dir)(e));
        }
    }
    check_private_dir(dir)
}

/// Publishes the daemon's generated secret for the CLI of the same user in
/// the first usable runtime directory (created 0700 if missing). Returns the
/// file, or the last directory's error.
pub fn publish(api: &SocketAddr, secret: &str) -> Result<PathBuf, CredentialError> {
    publish_in(&runtime_dirs(), api, secret)
}

fn publish_in(
    dirs: &[PathBuf],
    api: &SocketAddr,
    secret: &str,
) -> Result<PathBuf, CredentialError> {
    let mut last = None;
    for dir in dirs {
        match private_dir(dir) {
            Ok(()) => {
                let path = runtime_file_in(dir, api);
                if !read_secret(&path).is_ok_and(|s| s == secret) {
                    write_private(&path, secret)?;
                }
                return Ok(path);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("at least one runtime directory"))
}

/// Removes the published file if it still holds `secret` (another daemon
/// may have published its own at the same address since).
pub fn unpublish(api: &SocketAddr, secret: &str) {
    for dir in runtime_dirs() {
        let path = runtime_file_in(&dir, api);
        if read_secret(&path).is_ok_and(|s| s == secret) {
            let _ = fs::remove_file(path);
        }
    }
}

/// The secret the CLI sends to the API at `api` (`HOST:PORT`) when none was
/// given explicitly: from `data` (the node's data directory, if known),
/// else the runtime file of `api`, else `default_data`'s file. Files that
/// cannot be read are skipped: the API then answers 401 with a hint.
pub fn lookup(api: &str, data: Option<&Path>, default_data: Option<&Path>) -> Option<String> {
    if let Some(d) = data {
        if let Ok(s) = read_secret(&d.join(DATA_FILE)) {
            return Some(s);
        }
    }
    if let Some(addr) = crate::config::parse_api_addr(api) {
        for dir in runtime_dirs() {
            if check_private_dir(&dir).is_ok() {
                if let Ok(s) = read_secret(&runtime_file_in(&dir, &addr)) {
                    return Some(s);
                }
            }
        }
    }
    default_data.and_then(|d| read_secret(&d.join(DATA_FILE)).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_secret_is_kept_private_and_stable() {
        let t = tempfile::tempdir().unwrap();
        let a = load_or_create(t.path()).unwrap();
        assert_eq!(a.len(), 64);
        let path = t.path().join(DATA_FILE);
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(load_or_create(t.path()).unwrap(), a);
        // Loosened by hand: tightened again, same secret.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(load_or_create(t.path()).unwrap(), a);
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_ne!(generate(), generate());
        // No temp file left behind.
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 1);
    }

    #[test]
    fn secret_files_are_one_nonempty_line() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("s");
        fs::write(&p, "  abc \nignored\n").unwrap();
        assert_eq!(read_secret(&p).unwrap(), "abc");
        fs::write(&p, "\n").unwrap();
        assert!(matches!(read_secret(&p), Err(CredentialError::Empty(_))));
        fs::write(&p, vec![b'a'; 5000]).unwrap();
        assert!(matches!(
            read_secret(&p),
            Err(CredentialError::Malformed(_))
        ));
        fs::write(&p, [0xff, 0xfe]).unwrap();
        assert!(matches!(
            read_secret(&p),
            Err(CredentialError::Malformed(_))
        ));
        assert!(matches!(
            read_secret(&t.path().join("none")),
            Err(CredentialError::Io { .. })
        ));
    }

    #[test]
    fn a_runtime_dir_open_to_others_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("rt");
        fs::DirBuilder::new().mode(0o700).create(&d).unwrap();
        check_private_dir(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(
            check_private_dir(&d),
            Err(CredentialError::UnsafeDir { .. })
        ));
        let f = t.path().join("file");
        fs::write(&f, "x").unwrap();
        assert!(check_private_dir(&f).is_err());
        let l = t.path().join("link");
        std::os::unix::fs::symlink(&d, &l).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(check_private_dir(&l).is_err(), "a symlink is not followed");
    }

    #[test]
    fn a_published_secret_is_private_and_removed_only_by_its_owner() {
        // An address no daemon listens on, unique to this process.
        let api: SocketAddr = format!("127.0.0.3:{}", 1 + std::process::id() % 60_000)
            .parse()
            .unwrap();
        let path = publish(&api, "first").unwrap();
        assert_eq!(path, runtime_file(&api));
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        check_private_dir(path.parent().unwrap()).unwrap();
        assert_eq!(
            lookup(&api.to_string(), None, None).as_deref(),
            Some("first")
        );
        // Another daemon took the address since: its file is left alone.
        publish(&api, "second").unwrap();
        unpublish(&api, "first");
        assert_eq!(read_secret(&path).unwrap(), "second");
        unpublish(&api, "second");
        assert!(!path.exists());
    }

    #[test]
    fn a_runtime_dir_that_is_not_private_is_passed_over() {
        let t = tempfile::tempdir().unwrap();
        let open = t.path().join("open");
        fs::DirBuilder::new().mode(0o755).create(&open).unwrap();
        let missing_parent = t.path().join("gone/filesyncd");
        let good = t.path().join("good");
        let api: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let dirs = [open.clone(), missing_parent, good.clone()];
        let path = publish_in(&dirs, &api, "s").unwrap();
        assert_eq!(path, runtime_file_in(&good, &api));
        assert_eq!(fs::metadata(&good).unwrap().mode() & 0o777, 0o700);
        assert_eq!(
            fs::read_dir(&open).unwrap().count(),
            0,
            "nothing in the open one"
        );
        assert!(publish_in(&dirs[..2], &api, "s").is_err());
    }

    #[test]
    fn runtime_files_are_named_by_address() {
        let d = Path::new("/r");
        assert_eq!(
            runtime_file_in(d, &"127.0.0.1:7401".parse().unwrap()),
            Path::new("/r/api-127.0.0.1-7401")
        );
        assert_eq!(
            runtime_file_in(d, &"[::1]:9".parse().unwrap()),
            Path::new("/r/api-__1-9")
        );
    }

    #[test]
    fn lookup_prefers_the_data_dir_then_the_default() {
        let t = tempfile::tempdir().unwrap();
        let data = t.path().join("data");
        let def = t.path().join("default");
        fs::create_dir_all(&data).unwrap();
        fs::create_dir_all(&def).unwrap();
        // An address no daemon of this test published.
        let api = "127.0.0.1:1";
        assert_eq!(lookup(api, Some(&data), Some(&def)), None);
        let d = load_or_create(&def).unwrap();
        assert_eq!(lookup(api, Some(&data), Some(&def)), Some(d.clone()));
        let s = load_or_create(&data).unwrap();
        assert_eq!(lookup(api, Some(&data), Some(&def)), Some(s));
        assert_eq!(lookup(api, None, Some(&def)), Some(d));
    }
}
