//! The engine's watcher on a real temp directory.

use std::collections::BTreeSet;
use std::time::Duration;

use filesyncd::engine::watch::{watch, Dirty, DirtyRx, WatchConfig};

/// Collects dirty paths until `done` holds or 10 s pass; fails on a timeout.
async fn until(
    rx: &mut DirtyRx,
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
        max_pending: 8,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_while_the_engine_is_busy_stays_bounded_and_covers_every_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().canonicalize().expect("canonical");
    let cfg = WatchConfig {
        debounce: Duration::from_millis(30),
        rescan_every: Duration::from_secs(3600),
        max_pending: 8,
    };
    let (_w, mut rx) = watch(&root, &cfg).expect("watch");
    // Directories first, taken, so their files are what floods in.
    for d in 0..4 {
        std::fs::create_dir_all(root.join(format!("top/d{d}"))).expect("mkdir");
    }
    let mut seen = BTreeSet::new();
    until(&mut rx, &mut seen, |s| s.contains("top")).await;
    // 2,000 files while nobody reads: the debouncer never waits for us.
    for i in 0..2000 {
        std::fs::write(root.join(format!("top/d{}/f{i}", i % 4)), b"x").expect("write");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut got = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    // Every file is covered by a path taken (a file, its directory or a
    // rescan), and no take holds more than the bound.
    let covered = |got: &BTreeSet<String>, f: &str| {
        got.iter()
            .any(|p| f == p || f.starts_with(&format!("{p}/")))
    };
    let mut rescan = false;
    while !rescan && !(0..2000).all(|i| covered(&got, &format!("top/d{}/f{i}", i % 4))) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Dirty::Paths(ps))) => {
                assert!(ps.len() <= 8, "{} paths in one take", ps.len());
                got.extend(ps);
            }
            Ok(Some(Dirty::Rescan)) => rescan = true,
            Ok(None) => panic!("closed"),
            Err(_) => panic!("not every file covered; got {got:?}"),
        }
    }
}
