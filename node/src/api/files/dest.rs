//! Where `restore` writes: the request's destination checked without
//! touching the disk ([`parse_dest`]), then resolved against the synced
//! directory ([`resolve`]): an absolute destination that lies inside the
//! synced directory (as given, or once its parent directory is resolved)
//! becomes the relative path there, so that it is written beneath the root
//! without following symlinks like every in-root write.

use std::path::{Path, PathBuf};

use super::bad_request;
use super::listing::check_path;
use crate::api::ApiError;
use crate::engine::names;

/// Where the request asks to write, before the file system is consulted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dest {
    /// The version's own path, in place.
    InPlace(String),
    /// A path inside the synced directory (never replaced).
    InRoot(String),
    /// An absolute path (never replaced).
    Absolute(PathBuf),
}

/// Checks the request's paths (no file-system access).
pub fn parse_dest(path: &str, to: Option<&str>) -> Result<Dest, String> {
    check_path(path)?;
    match to {
        None => Ok(Dest::InPlace(path.to_owned())),
        Some(to) => parse_to(to),
    }
}

/// Checks a `--to` destination (no file-system access): [`Dest::InRoot`]
/// or [`Dest::Absolute`].
pub fn parse_to(to: &str) -> Result<Dest, String> {
    if !to.starts_with('/') {
        check_path(to).map_err(|e| format!("--to: {e}"))?;
        return Ok(Dest::InRoot(to.to_owned()));
    }
    let comps: Vec<&str> = to.split('/').skip(1).collect();
    if comps.iter().any(|c| *c == "." || *c == "..") {
        return Err(format!("--to {to:?}: `.` and `..` are not allowed"));
    }
    let name = comps.last().copied().unwrap_or("");
    if let Some(reason) = names::invalid_reason(name) {
        return Err(format!(
            "--to {to:?}: the file name is not usable: {reason}"
        ));
    }
    if to.contains('\0') {
        return Err(format!("--to {to:?}: NUL character"));
    }
    Ok(Dest::Absolute(PathBuf::from(to)))
}

/// Where the write lands after resolving an absolute destination.
pub(super) enum Target {
    /// Inside the synced directory: `rel` beneath the root.
    Root { rel: String, in_place: bool },
    /// Outside: `name` in the (resolved) directory `dir`.
    Outside { dir: PathBuf, name: String },
}

fn rel_string(p: &Path) -> Option<String> {
    let s = p.to_str()?;
    Some(s.trim_end_matches('/').to_owned())
}

/// Resolves `dest` against the synced directory `root` (canonical).
pub(super) fn resolve(dest: Dest, root: &Path) -> Result<Target, ApiError> {
    let abs = match dest {
        Dest::InPlace(rel) => {
            return Ok(Target::Root {
                rel,
                in_place: true,
            })
        }
        Dest::InRoot(rel) => {
            return Ok(Target::Root {
                rel,
                in_place: false,
            })
        }
        Dest::Absolute(p) => p,
    };
    let inside = |p: &Path| -> Result<Option<String>, ApiError> {
        match p.strip_prefix(root) {
            Ok(rest) => {
                let rel =
                    rel_string(rest).ok_or_else(|| bad_request("--to: the path is not UTF-8"))?;
                check_path(&rel).map_err(|e| bad_request(format!("--to: {e}")))?;
                Ok(Some(rel))
            }
            Err(_) => Ok(None),
        }
    };
    if let Some(rel) = inside(&abs)? {
        return Ok(Target::Root {
            rel,
            in_place: false,
        });
    }
    let (Some(parent), Some(name)) = (abs.parent(), abs.file_name().and_then(|n| n.to_str()))
    else {
        return Err(bad_request("--to: no file name"));
    };
    let dir = parent.canonicalize().map_err(|e| {
        bad_request(format!(
            "--to: the directory {} is not usable: {e}",
            parent.display()
        ))
    })?;
    if let Some(rel_dir) = inside(&dir.join(name))? {
        return Ok(Target::Root {
            rel: rel_dir,
            in_place: false,
        });
    }
    Ok(Target::Outside {
        dir,
        name: name.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        assert_eq!(parse_dest("a/b", None), Ok(Dest::InPlace("a/b".into())));
        assert_eq!(
            parse_dest("a/b", Some("c/d")),
            Ok(Dest::InRoot("c/d".into()))
        );
        assert_eq!(
            parse_dest("a/b", Some("/tmp/x")),
            Ok(Dest::Absolute("/tmp/x".into()))
        );
        for (path, to) in [
            ("../a", None),
            ("/abs", None),
            (".filesyncd-marker", None),
            ("", None),
            ("a", Some("../x")),
            ("a", Some("x/../../y")),
            ("a", Some("d/.filesyncd-tmp-1")),
            ("a", Some("/tmp/../etc/x")),
            ("a", Some("/tmp/./x")),
            ("a", Some("/tmp/")),
            ("a", Some("/")),
            ("a", Some("/tmp/.filesyncd-marker")),
        ] {
            assert!(parse_dest(path, to).is_err(), "{path:?} {to:?}");
        }
    }
}
