//! The engine's watcher on a real temp directory.

use std::collections::BTreeSet;
use std::time::Duration;

use filesyncd::engine::watch::{watch, Dirty, WatchConfig};
use tokio::sync::mpsc::Receiver;

/// Collects dirty paths until `done` holds or 10 s pass; fails on a timeout.
async fn until(
    rx: &mut Receiver<Dirty>,
    seen: &mut BTreeSet<String>,
    done: impl Fn(&BTreeSet<String>) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done(seen) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Dirty::Paths(ps))) => seen.extend(ps),
            Ok(Some(Dirty::Rescan)) => {}
            Ok(None) => panic!("watcher channel closed"),
            Err(_) => panic!("timed out; seen {seen:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_writes_and_new_directories_but_not_the_daemon_namespace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().canonicalize().expect("canonical");
    let cfg = WatchConfig {
        debounce: Duration::from_millis(30),
        rescan_every: Duration::from_secs(3600),
        capacity: 8,
    };
    let (_w, mut rx) = watch(&root, &cfg).expect("watch");
    let mut seen = BTreeSet::new();

    std::fs::write(root.join("a.txt"), b"1").expect("write");
    until(&mut rx, &mut seen, |s| s.contains("a.txt")).await;

    // A new directory with a file written at once: reported as the directory
    // (scanned whole) or the file.
    std::fs::create_dir(root.join("d")).expect("mkdir");
    std::fs::write(root.join("d/x"), b"2").expect("write");
    until(&mut rx, &mut seen, |s| s.contains("d") || s.contains("d/x")).await;

    // The daemon's own temp files and marker are never reported.
    std::fs::write(root.join(".filesyncd-tmp-1"), b"t").expect("write");
    std::fs::write(root.join(".filesyncd-marker"), b"c").expect("write");
    std::fs::write(root.join("b.txt"), b"3").expect("write");
    until(&mut rx, &mut seen, |s| s.contains("b.txt")).await;
    assert!(
        !seen.iter().any(|p| p.contains(".filesyncd")),
        "daemon names reported: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_periodic_full_rescan_is_the_backstop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = WatchConfig {
        rescan_every: Duration::from_millis(50),
        ..WatchConfig::default()
    };
    let (w, mut rx) = watch(dir.path(), &cfg).expect("watch");
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a rescan in time");
    assert_eq!(got, Some(Dirty::Rescan));
    drop(w);
    // Once the watcher is gone the channel closes.
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        while rx.recv().await.is_some() {}
    })
    .await;
    assert!(end.is_ok(), "channel closes after drop");
}
