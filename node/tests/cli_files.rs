//! The file subcommands and `status` as a user runs them: argument errors
//! exit 2, an unreachable daemon exits 1 with a clear message, and against
//! a real single-node daemon `ls`, `history` and `status` show a file the
//! engine committed.

use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_filesyncd"));
    c.env_remove("FILESYNCD_API")
        .env_remove("FILESYNCD_API_TOKEN");
    c
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("spawn")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// An address where nothing listens.
fn dead_api() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap().to_string();
    drop(l);
    a
}

#[test]
fn bad_arguments_exit_2() {
    for args in [
        &["history"][..],
        &["restore"],
        &["restore", "a", "--version", "x"],
        &["restore", "a", "--version", "1.2.3"],
        &["restore", "a", "--to"],
        &["ls", "a", "b"],
        &["verify", "extra"],
        &["adopt", "--frobnicate"],
        &["status", "--interval", "1s"],
        &["status", "--watch", "--interval", "10ms"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn unreachable_daemon_exits_1() {
    let api = dead_api();
    for args in [
        &["ls"][..],
        &["ls", "docs", "--json"],
        &["history", "a.txt"],
        &["restore", "a.txt", "--version", "3"],
        &["verify"],
        &["adopt"],
        &["status"],
        &["status", "--watch"],
    ] {
        let out = bin().args(args).args(["--api", &api]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("cannot reach the control API"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn help_lists_the_file_subcommands() {
    let out = run(&["--help"]);
    let text = stdout(&out);
    for sub in ["ls", "history", "restore", "verify", "adopt", "status"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(sub)),
            "{sub} missing in\n{text}"
        );
    }
    let out = run(&["restore", "--help"]);
    let text = stdout(&out);
    for flag in ["--version <INDEX>", "--to <DEST>", "--api", "--json"] {
        assert!(text.contains(flag), "{flag} missing in\n{text}");
    }
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path, data: &Path, api: &str) -> Daemon {
    let listen = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = bin()
        .arg("--dir")
        .arg(dir)
        .arg("--data")
        .arg(data)
        .args(["--listen", &format!("127.0.0.1:{listen}"), "--api", api])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn daemon");
    Daemon(child)
}

fn ctl(args: &[&str], api: &str) -> Output {
    bin().args(args).args(["--api", api]).output().unwrap()
}

/// Polls `args` until `ok` holds for its output (generous deadline).
fn wait_for(args: &[&str], api: &str, ok: impl Fn(&Output) -> bool) -> Output {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = ctl(args, api);
        if ok(&out) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "{args:?} never got there: {} {}",
            stdout(&out),
            stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn ls_history_status_against_a_daemon() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("sync");
    std::fs::create_dir_all(dir.join("docs")).unwrap();
    let data = t.path().join("data");
    let api = dead_api();
    let _d = start(&dir, &data, &api);
    std::fs::write(dir.join("docs/a.txt"), b"hello").unwrap();

    let out = wait_for(&["ls", "docs", "--json"], &api, |o| {
        o.status.success() && stdout(o).contains("docs/a.txt")
    });
    let ls: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ls["entries"][0]["size"], 5);
    let out = ctl(&["ls"], &api);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("docs/"), "{}", stdout(&out));
    let out = ctl(&["ls", "-R", "./docs/"], &api);
    assert!(stdout(&out).contains("docs/a.txt"), "{}", stdout(&out));

    let out = ctl(&["history", "docs/a.txt"], &api);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("VERSION"), "{text}");
    assert!(text.contains("committed (current)"), "{text}");
    let out = ctl(&["history", "docs/a.txt", "--json"], &api);
    let h: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(h["versions"][0]["state"], "committed");

    let out = ctl(&["ls", "nothing-here"], &api);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no such path"), "{}", stderr(&out));
    for bad in [
        &["ls", "../x"][..],
        &["history", "/etc/passwd"],
        &["history", ".filesyncd-marker"],
    ] {
        let out = ctl(bad, &api);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("relative to the synced directory"),
            "{}",
            stderr(&out)
        );
    }

    let out = ctl(&["status"], &api);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for want in ["node ", "raft ", "members (1", "voter*", "in sync "] {
        assert!(text.contains(want), "{want:?} missing in\n{text}");
    }
}

/// The synced directory replaced under a running node (here: moved away and
/// an empty directory put in its place, as a mount over it would do): the
/// node notices within seconds, halts with the marker missing and deletes
/// nothing; the directory put back, it syncs again.
#[test]
fn a_directory_replaced_under_the_running_node_halts_it() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("sync");
    let away = t.path().join("sync.away");
    std::fs::create_dir_all(&dir).unwrap();
    let data = t.path().join("data");
    let api = dead_api();
    let _d = start(&dir, &data, &api);
    std::fs::write(dir.join("a.txt"), b"hello").unwrap();
    wait_for(&["ls", "--json"], &api, |o| stdout(o).contains("a.txt"));
    let in_sync = |o: &Output| {
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        s["in_sync"] == true
    };
    wait_for(&["status", "--json"], &api, in_sync);

    std::fs::rename(&dir, &away).unwrap();
    std::fs::create_dir(&dir).unwrap();
    let out = wait_for(&["status", "--json"], &api, |o| {
        stdout(o).contains("MarkerMissing")
    });
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["in_sync"], false, "{s}");
    // Nothing was deleted: not from the cluster, not from the old directory,
    // and nothing was written into the new one.
    std::thread::sleep(Duration::from_secs(3));
    let out = ctl(&["ls", "--json"], &api);
    assert!(stdout(&out).contains("a.txt"), "{}", stdout(&out));
    assert_eq!(std::fs::read(away.join("a.txt")).unwrap(), b"hello");
    let new: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(new.is_empty(), "{new:?}");

    std::fs::remove_dir(&dir).unwrap();
    std::fs::rename(&away, &dir).unwrap();
    wait_for(&["status", "--json"], &api, in_sync);
    std::fs::write(dir.join("b.txt"), b"back").unwrap();
    wait_for(&["ls", "--json"], &api, |o| stdout(o).contains("b.txt"));
}
