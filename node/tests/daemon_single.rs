//! A real single-node daemon: start, status, token, lock, SIGTERM, restart.

use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Daemon {
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_filesyncd"));
    c.env_remove("FILESYNCD_API")
        .env_remove("FILESYNCD_API_TOKEN")
        .env_remove("FILESYNCD_API_TOKEN_FILE")
        .env_remove("FILESYNCD_DATA");
    c
}

fn start(dir: &Path, data: &Path, listen: u16, api: &str) -> Daemon {
    start_with(dir, data, listen, api, &[])
}

fn start_with(dir: &Path, data: &Path, listen: u16, api: &str, extra: &[&str]) -> Daemon {
    let child = bin()
        .args(extra)
        .arg("--dir")
        .arg(dir)
        .arg("--data")
        .arg(data)
        .args(["--listen", &format!("127.0.0.1:{listen}"), "--api", api])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn daemon");
    Daemon { child }
}

fn ctl(args: &[&str], api: &str) -> Output {
    bin()
        .args(args)
        .args(["--api", api])
        .output()
        .expect("spawn ctl")
}

fn status_json(api: &str) -> serde_json::Value {
    let out = ctl(&["status", "--json"], api);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

/// Waits until the daemon leads with its cluster settings committed.
fn wait_ready(d: &mut Daemon, api: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(st) = d.child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = d.child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            panic!("daemon exited early ({st}): {err}");
        }
        let out = ctl(&["status", "--json"], api);
        if out.status.success() {
            let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if s["cluster_id"].is_string() && s["state"] == "Leader" {
                return s;
            }
        }
        assert!(Instant::now() < deadline, "daemon not ready in time");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn sigterm(d: &mut Daemon) -> std::process::ExitStatus {
    let pid = d.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = d.child.try_wait().unwrap() {
            return st;
        }
        assert!(Instant::now() < deadline, "no exit within 30 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn single_node_lifecycle() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("sync");
    std::fs::create_dir(&dir).unwrap();
    let data = t.path().join("data");
    let api = format!("127.0.0.1:{}", free_tcp_port());
    let mut d = start(&dir, &data, free_udp_port(), &api);
    let s = wait_ready(&mut d, &api);

    // Leader of its own cluster, with state applied and a root.
    let me = s["node_id"].as_str().unwrap().to_string();
    assert_eq!(me.len(), 16);
    assert_eq!(s["leader"].as_str(), Some(me.as_str()));
    assert_eq!(s["state"].as_str(), Some("Leader"));
    assert!(s["applied_index"].as_u64().unwrap() > 0);
    assert_eq!(s["cluster_root"].as_str().unwrap().len(), 64);
    let members = s["members"].as_array().unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0]["id"].as_str(), Some(me.as_str()));
    assert_eq!(members[0]["role"].as_str(), Some("voter"));

    // Readable status and members.
    let out = ctl(&["status"], &api);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&me) && text.contains("Leader"), "{text}");
    let out = ctl(&["members", "--json"], &api);
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m.as_array().unwrap().len(), 1);

    // Join tokens: one line each, the documented shape, all different.
    let mut tokens = Vec::new();
    for ttl in ["24h", "10m"] {
        let out = ctl(&["token", "create", "--ttl", ttl], &api);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let token = text.strip_suffix('\n').unwrap();
        assert!(!token.contains('\n'));
        let (id, secret) = token.split_once('.').unwrap();
        let ok = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        assert!(ok(id, 6) && ok(secret, 16), "{token}");
        tokens.push(token.to_string());
    }
    assert_ne!(tokens[0], tokens[1]);
    let applied_before = s["applied_index"].as_u64().unwrap();
    let s2 = status_json(&api);
    assert!(s2["applied_index"].as_u64().unwrap() >= applied_before + 2);

    // Prometheus metrics.
    let out = bin()
        .args(["status", "--json", "--api", &api])
        .output()
        .unwrap();
    assert!(out.status.success());

    // A second daemon on the same data directory is refused.
    let api2 = format!("127.0.0.1:{}", free_tcp_port());
    let out = bin()
        .arg("--dir")
        .arg(&dir)
        .arg("--data")
        .arg(&data)
        .args([
            "--listen",
            &format!("127.0.0.1:{}", free_udp_port()),
            "--api",
            &api2,
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("data directory locked"), "{err}");

    // SIGTERM: clean exit 0.
    let st = sigterm(&mut d);
    assert_eq!(st.code(), Some(0));

    // Restart on the same data: same node, same cluster, resumed.
    let mut d = start(&dir, &data, free_udp_port(), &api);
    let s3 = wait_ready(&mut d, &api);
    assert_eq!(s3["node_id"], s["node_id"]);
    assert_eq!(s3["cluster_id"], s["cluster_id"]);
    assert!(s3["applied_index"].as_u64().unwrap() >= s2["applied_index"].as_u64().unwrap());
    assert_eq!(s3["members"], s["members"]);
    let st = sigterm(&mut d);
    assert_eq!(st.code(), Some(0));
}

#[test]
fn api_token_is_required_when_configured() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("sync");
    std::fs::create_dir(&dir).unwrap();
    let api = format!("127.0.0.1:{}", free_tcp_port());
    let mut d = start_with(
        &dir,
        &t.path().join("data"),
        free_udp_port(),
        &api,
        &["run", "--api-token", "s3cret", "--log-format", "json"],
    );
    // Health needs no token; everything else does.
    let deadline = Instant::now() + Duration::from_secs(60);
    while filesyncd::api::client::call(&api, "GET", "/healthz", None, None).is_err() {
        assert!(d.child.try_wait().unwrap().is_none(), "daemon exited");
        assert!(Instant::now() < deadline, "no /healthz in time");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = ctl(&["status"], &api);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401") && err.contains("API token"), "{err}");
    let out = ctl(&["members", "--api-token", "s3cret"], &api);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sigterm(&mut d).code(), Some(0));
}

/// One raw HTTP/1.1 request with the given `Host` and bearer secret: the
/// status code.
fn raw_status(api: &str, host: &str, secret: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(api).unwrap();
    write!(
        s,
        "GET /status HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {secret}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split(' ').nth(1).unwrap().parse().unwrap()
}

#[test]
fn the_api_answers_only_to_holders_of_the_nodes_secret() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("sync");
    std::fs::create_dir(&dir).unwrap();
    let data = t.path().join("data");
    let api = format!("127.0.0.1:{}", free_tcp_port());
    let mut d = start(&dir, &data, free_udp_port(), &api);
    wait_ready(&mut d, &api);

    // The node drew its own secret, private to its user.
    let file = data.join(filesyncd::credential::DATA_FILE);
    let secret = filesyncd::credential::read_secret(&file).unwrap();
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // Without it: 401 with a hint. The CLI of the same user finds it with no
    // flag (the published copy), and with --data.
    let e = filesyncd::api::client::call(&api, "GET", "/status", None, None).unwrap_err();
    assert!(
        e.to_string().contains("401") && e.to_string().contains("--data"),
        "{e}"
    );
    let out = ctl(&["members", "--data", data.to_str().unwrap()], &api);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let published = filesyncd::credential::runtime_file(&api.parse().unwrap());
    assert_eq!(
        filesyncd::credential::read_secret(&published).unwrap(),
        secret
    );
    // A wrong secret file is refused, not skipped.
    let wrong = t.path().join("wrong");
    std::fs::write(&wrong, "nope\n").unwrap();
    let out = ctl(
        &["status", "--api-token-file", wrong.to_str().unwrap()],
        &api,
    );
    assert_eq!(out.status.code(), Some(1));

    // DNS rebinding: the right secret under a DNS name is refused.
    assert_eq!(raw_status(&api, &api, &secret), 200);
    assert_eq!(raw_status(&api, "localhost", &secret), 200);
    assert_eq!(raw_status(&api, "attacker.example:80", &secret), 403);

    // Another local user has no way to the secret.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let out = Command::new("setpriv")
            .args([
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                "--",
            ])
            .arg("env")
            .arg("-i")
            .arg("HOME=/nonexistent")
            .arg(env!("CARGO_BIN_EXE_filesyncd"))
            .args(["status", "--api", &api])
            .output()
            .expect("setpriv");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("401"), "{err}");
        // Even pointed at the data dir it cannot read it.
        let out = Command::new("setpriv")
            .args([
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                "--",
            ])
            .arg(env!("CARGO_BIN_EXE_filesyncd"))
            .args(["status", "--api", &api, "--data", data.to_str().unwrap()])
            .env_clear()
            .output()
            .expect("setpriv");
        assert_eq!(out.status.code(), Some(1));
    } else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root: the other-user check must run"
        );
        eprintln!("not root: the check with another uid did not run");
    }

    // The same secret after a restart; the published copy goes at shutdown.
    assert_eq!(sigterm(&mut d).code(), Some(0));
    assert!(!published.exists());
    let mut d = start(&dir, &data, free_udp_port(), &api);
    wait_ready(&mut d, &api);
    assert_eq!(filesyncd::credential::read_secret(&file).unwrap(), secret);
    assert_eq!(sigterm(&mut d).code(), Some(0));
}
