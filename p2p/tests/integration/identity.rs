use filesyncd_p2p::{load_or_create, IdentityError};
use std::fs;
use std::os::unix::fs::PermissionsExt;

#[test]
fn identity_is_stable_private_and_never_silently_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let first = load_or_create(dir.path()).unwrap();
    let path = dir.path().join(filesyncd_p2p::identity::KEY_FILE);
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(load_or_create(dir.path()).unwrap().peer_id, first.peer_id);

    fs::set_permissions(&path, fs::Permissions::from_mode(0o604)).unwrap();
    assert!(matches!(
        load_or_create(dir.path()),
        Err(IdentityError::InsecurePermissions { .. })
    ));

    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let mut bytes = fs::read(&path).unwrap();
    bytes.truncate(bytes.len() / 2);
    fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        load_or_create(dir.path()),
        Err(IdentityError::Corrupt { .. })
    ));
    assert_eq!(
        fs::read(&path).unwrap(),
        bytes,
        "the corrupt key is left alone"
    );
}
