//! The `chunk` subcommand as a user runs it: a real process.

use std::path::Path;
use std::process::Command;

fn filesyncd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_filesyncd"))
}

fn root_of(path: &Path) -> String {
    let out = filesyncd().arg("chunk").arg(path).output().expect("spawn");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let root = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("root="))
        .expect("a root= field");
    assert_eq!(root.len(), 64);
    root.to_string()
}

#[test]
fn root_is_stable_and_changes_with_content() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.bin");
    let b = dir.path().join("b.bin");
    let data: Vec<u8> = (0..300_000u32)
        .flat_map(|i| (i.wrapping_mul(2654435761)).to_le_bytes())
        .collect();
    std::fs::write(&a, &data).unwrap();
    std::fs::write(&b, &data).unwrap();
    assert_eq!(root_of(&a), root_of(&b), "same bytes, same root");
    let mut edited = data.clone();
    edited.insert(data.len() / 2, 0x5a);
    std::fs::write(&b, &edited).unwrap();
    assert_ne!(
        root_of(&a),
        root_of(&b),
        "one inserted byte changes the root"
    );
}

#[test]
fn missing_file_is_a_runtime_error_with_the_path() {
    let out = filesyncd()
        .args(["chunk", "/nonexistent/filesyncd-test"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/filesyncd-test"), "{err}");
}

#[test]
fn bad_usage_exits_2() {
    let out = filesyncd().arg("--no-such-flag").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = filesyncd().arg("chunk").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "chunk needs at least one file");
}
