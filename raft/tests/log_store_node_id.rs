//! The node id file: created once, read back, corruption refused, a wiped directory gets a
//! new identity.

use filesyncd_raft::node_id::{self, NodeIdError, Origin, NODE_ID_FILE};

#[test]
fn created_once_then_read_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data").join("nested");
    assert_eq!(node_id::load(&data).expect("load"), None);

    let (id, origin) = node_id::load_or_create(&data).expect("create");
    assert_eq!(origin, Origin::Created);
    assert_ne!(id, 0);
    let text = std::fs::read_to_string(data.join(NODE_ID_FILE)).expect("file");
    assert_eq!(text, node_id::encode(id));

    for _ in 0..2 {
        assert_eq!(
            node_id::load_or_create(&data).expect("reload"),
            (id, Origin::Existing)
        );
    }
    // Nothing but the id file is left behind (no temp file).
    let names: Vec<String> = std::fs::read_dir(&data)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec![NODE_ID_FILE.to_string()]);
}

#[test]
fn a_corrupt_file_is_an_error_and_is_never_regenerated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (id, _) = node_id::load_or_create(dir.path()).expect("create");
    let path = dir.path().join(NODE_ID_FILE);
    let good = node_id::encode(id);

    // One hex digit of the id changed, a torn (empty / cut) file, junk bytes.
    let digit_at = good.len() - 1 - 9 - 1; // last id digit, before " <check>\n"
    let mut changed = good.clone().into_bytes();
    changed[digit_at] = if changed[digit_at] == b'0' {
        b'1'
    } else {
        b'0'
    };
    let cases: Vec<Vec<u8>> = vec![
        changed,
        Vec::new(),
        good.as_bytes()[..good.len() / 2].to_vec(),
        vec![0xff, 0xfe, 0x00],
    ];
    for bad in cases {
        std::fs::write(&path, &bad).expect("write");
        match node_id::load_or_create(dir.path()) {
            Err(NodeIdError::Corrupt { path: p, .. }) => assert_eq!(p, path),
            Err(e) => panic!("unexpected error {e}"),
            Ok(got) => panic!("corrupt file {bad:?} accepted as {got:?}"),
        }
        assert_eq!(
            std::fs::read(&path).expect("read"),
            bad,
            "the file was rewritten"
        );
    }
}

#[test]
fn a_wiped_data_dir_gets_a_new_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (first, _) = node_id::load_or_create(&data).expect("create");
    std::fs::remove_dir_all(&data).expect("wipe");
    let (second, origin) = node_id::load_or_create(&data).expect("recreate");
    assert_eq!(origin, Origin::Created);
    // Two random nonzero u64s: equal with probability 2^-64.
    assert_ne!(first, second);
}
