//! Bad invocations of the daemon exit 2 with a message that names the problem.

use std::path::Path;
use std::process::{Command, Output};

fn filesyncd(args: &[&str], data_home: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_filesyncd"))
        .args(args)
        .env("XDG_STATE_HOME", data_home)
        .env_remove("FILESYNCD_DIR")
        .env_remove("FILESYNCD_JOIN")
        .env_remove("FILESYNCD_TOKEN")
        .env_remove("FILESYNCD_CONFIG")
        .output()
        .expect("spawn")
}

fn assert_usage_error(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

#[test]
fn refused_invocations_exit_2() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("sync");
    std::fs::create_dir(&dir).unwrap();
    let file = t.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let home = t.path().join("state");
    let d = dir.to_str().unwrap();

    assert_usage_error(
        &filesyncd(&["--dir", d, "--frobnicate"], &home),
        "--frobnicate",
    );
    assert_usage_error(
        &filesyncd(&["run", "--dir", d, "--frobnicate"], &home),
        "--frobnicate",
    );
    assert_usage_error(&filesyncd(&[], &home), "--dir is required");
    assert_usage_error(&filesyncd(&["run"], &home), "--dir is required");
    let missing = t.path().join("missing");
    assert_usage_error(
        &filesyncd(&["--dir", missing.to_str().unwrap()], &home),
        "no such directory",
    );
    assert_usage_error(
        &filesyncd(&["run", "--dir", file.to_str().unwrap()], &home),
        "not a directory",
    );
    assert_usage_error(
        &filesyncd(&["--dir", d, "--join", "127.0.0.1:7400"], &home),
        "--join requires --token",
    );
    assert_usage_error(
        &filesyncd(&["--dir", d, "--api", "0.0.0.0:7401"], &home),
        "not a loopback address",
    );
    assert_usage_error(
        &filesyncd(&["--dir", d, "--log-format", "xml"], &home),
        "xml",
    );

    let bad = t.path().join("bad.toml");
    std::fs::write(&bad, "dir = \"/tmp\"\nlisten_port = 7400\n").unwrap();
    assert_usage_error(
        &filesyncd(&["--config", bad.to_str().unwrap()], &home),
        "listen_port",
    );
    std::fs::write(&bad, "dir = [\n").unwrap();
    assert_usage_error(
        &filesyncd(&["--config", bad.to_str().unwrap()], &home),
        "bad.toml",
    );
    assert_usage_error(
        &filesyncd(
            &["--config", t.path().join("none.toml").to_str().unwrap()],
            &home,
        ),
        "none.toml",
    );
}
