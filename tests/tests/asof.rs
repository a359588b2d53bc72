//! Point-in-time restore between real `filesyncd` processes (issue 16
//! item 2): a folder of 1,000 files (`FSD_ASOF_FILES` for another count;
//! about 20 s on a debug build of 2 shared cores) is synced, deleted and
//! partly rewritten, then `restore --tree folder --as-of <the time before>
//! --in-place` brings every byte back on every node; `--to` writes the
//! same tree elsewhere, `diff --as-of` lists what changed. And the
//! mass-change guard (item 3): a rewrite of 500 of the folder's 1,000
//! files waits on the node that made it until `filesyncd confirm`, while
//! an edit elsewhere still syncs. Nothing asserts on durations; deadlines
//! are generous.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use filesyncd_systests::tree::{converge_within, in_sync, snapshot, status_json, Entry};
use filesyncd_systests::{random_bytes, serial, wait_for, Cluster, Error, Value};

/// How many files the folder holds (a multiple of 100, at least 200):
/// `FSD_ASOF_FILES`, else 1,000.
fn files() -> usize {
    let n = std::env::var("FSD_ASOF_FILES")
        .ok()
        .map(|v| v.parse::<usize>().expect("FSD_ASOF_FILES: a number"))
        .unwrap_or(1000);
    assert!(
        n >= 200 && n.is_multiple_of(100),
        "FSD_ASOF_FILES: a multiple of 100, at least 200"
    );
    n
}
/// Converging the files on a debug build on a shared machine.
const LONG: Duration = Duration::from_secs(600);

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` of a time (Hinnant's `civil_from_days`).
fn rfc3339(t: SystemTime) -> String {
    let ms = t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

/// The entries of `tree` under `prefix/`, keyed relative to it.
fn under(tree: &BTreeMap<String, Entry>, prefix: &str) -> BTreeMap<String, Entry> {
    let p = format!("{prefix}/");
    tree.iter()
        .filter_map(|(k, v)| k.strip_prefix(&p).map(|r| (r.to_string(), v.clone())))
        .collect()
}

/// Waits until every node holds the same tree, in sync; confirms the
/// withheld deletes of a mass delete on `deleter` (`adopt`) when its
/// status shows them paused.
fn converge_adopting(c: &Cluster, deleter: usize) -> BTreeMap<String, Entry> {
    wait_for("the nodes to converge", LONG, || {
        let st = status_json(c.node(deleter));
        if st.as_ref().is_some_and(|v| !v["sync"]["paused"].is_null()) {
            let out = c.node(deleter).cli(&["adopt"]);
            eprintln!(
                "adopt on node {deleter}: {:?} {}",
                out.code,
                out.stderr.trim()
            );
            return Ok(None);
        }
        let snaps: Vec<_> = (0..3).map(|i| snapshot(&c.node(i).dir())).collect();
        if snaps.windows(2).any(|w| w[0] != w[1]) {
            return Err(Error("trees differ".into()));
        }
        for i in 0..3 {
            if !status_json(c.node(i)).is_some_and(|v| in_sync(&v)) {
                return Err(Error(format!("node {i} not in sync")));
            }
        }
        Ok(Some(snaps.into_iter().next().unwrap()))
    })
    .unwrap()
}

/// `folder/d<k>/f<i>.bin` under `root` for i in 0..n, 100 to a directory.
fn write_folder(root: &std::path::Path, n: usize, body: impl Fn(usize) -> Vec<u8>) {
    for i in 0..n {
        let dir = root.join(format!("folder/d{}", i / 100));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("f{i:04}.bin")), body(i)).unwrap();
    }
}

fn applied_index(c: &Cluster, i: usize) -> u64 {
    c.node(i).status().unwrap().applied_index.unwrap()
}

#[test]
fn t10_a_deleted_and_rewritten_folder_comes_back_as_of_a_time() {
    let n = files();
    let _g = serial();
    let mut c = Cluster::start(3).unwrap();
    c.wait_converged(3, 3).unwrap();
    let d0 = c.node(0).dir();

    // n small files in n / 100 directories, one executable, one symlink.
    write_folder(&d0, n, |i| random_bytes(1 + (i * 37) % 3000, i as u64));
    fs::set_permissions(
        d0.join("folder/d0/f0000.bin"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("d0/f0001.bin", d0.join("folder/link")).unwrap();
    fs::write(d0.join("outside.txt"), b"not in the folder\n").unwrap();
    let before = converge_within(&c, &[0, 1, 2], LONG);
    let folder = under(&before, "folder");
    assert_eq!(
        folder
            .values()
            .filter(|e| matches!(e, Entry::File(..)))
            .count(),
        n
    );
    std::thread::sleep(Duration::from_millis(1500));
    let then = rfc3339(SystemTime::now());
    let then_index = applied_index(&c, 0);
    std::thread::sleep(Duration::from_millis(1500));

    // Delete the folder on node 1, rewrite 100 of its files with other
    // bytes, add one file that did not exist then.
    let d1 = c.node(1).dir();
    // One rename out of the synced directory: the whole folder vanishes at
    // once (an `rm -rf` under the running daemon races its writes). The
    // delete converges first: a directory re-created at once under the same
    // name hides the vanished entries below it from the scoped scan until
    // the periodic rescan (a watcher bug, left for its own fix).
    fs::rename(d1.join("folder"), c.root().join("folder-gone")).unwrap();
    let gone = converge_adopting(&c, 1);
    assert!(
        under(&gone, "folder").is_empty() && !gone.contains_key("folder"),
        "the folder is deleted everywhere"
    );
    fs::create_dir_all(d1.join("folder/d0")).unwrap();
    for i in 0..100 {
        fs::write(
            d1.join(format!("folder/d0/f{i:04}.bin")),
            random_bytes(500, 10_000 + i),
        )
        .unwrap();
    }
    fs::write(d1.join("folder/new.txt"), b"written after\n").unwrap();
    let after = converge_adopting(&c, 1);
    let now = under(&after, "folder");
    assert_eq!(
        now.len(),
        102,
        "d0, 100 files, new.txt: {:?}",
        now.keys().take(20).collect::<Vec<_>>()
    );

    // What changed since then.
    let diff = c
        .node(2)
        .cli_json(&["diff", "--as-of", &then, "folder"])
        .unwrap();
    let changes: BTreeMap<String, String> = diff["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_string(),
                e["change"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(changes["folder/new.txt"], "added");
    assert_eq!(changes["folder/d0/f0005.bin"], "modified");
    assert_eq!(changes["folder/d1/f0100.bin"], "deleted");
    assert_eq!(changes[&format!("folder/d{}", n / 100 - 1)], "deleted");
    assert_eq!(changes["folder/link"], "deleted");
    assert!(
        !changes.contains_key("folder/d0"),
        "d0 is the same directory"
    );
    assert_eq!(
        changes.len(),
        n + 1 + (n / 100 - 1) + 1,
        "the files, the link, the directories but d0, new.txt"
    );
    let human = c.node(2).cli(&["diff", "--as-of", &then, "folder"]);
    assert!(human.ok(), "{}", human.stderr);
    assert!(
        human.stdout.contains("added     folder/new.txt"),
        "{}",
        human.stdout
    );
    // The same diff by log index.
    let by_index = c
        .node(0)
        .cli_json(&["diff", "--as-of", &then_index.to_string(), "folder"])
        .unwrap();
    assert_eq!(by_index["entries"], diff["entries"]);

    // Restore in place on node 2 (not the node that deleted).
    let out = c.node(2).cli(&[
        "restore",
        "--tree",
        "folder",
        "--as-of",
        &then,
        "--in-place",
        "--json",
    ]);
    assert!(out.ok(), "restore failed: {} {}", out.stdout, out.stderr);
    let r: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(r["failed"], 0, "{r}");
    assert_eq!(r["deleted"], 1, "new.txt: {r}");
    assert_eq!(r["progress"]["files_done"], r["progress"]["files_total"]);
    assert!(
        out.stderr.contains("restoring: "),
        "progress: {}",
        out.stderr
    );
    let restored = converge_within(&c, &[0, 1, 2], LONG);
    assert_eq!(
        under(&restored, "folder"),
        folder,
        "every byte of the folder is back on every node"
    );
    assert_eq!(restored.get("outside.txt"), before.get("outside.txt"));
    // History is not rewritten: the rewritten version is still listed.
    let h = c
        .node(0)
        .cli_json(&["history", "folder/d0/f0005.bin"])
        .unwrap();
    assert!(h["versions"].as_array().unwrap().len() >= 3, "{h}");

    // The same tree as of the index, written elsewhere in the synced dir.
    let out = c.node(0).cli(&[
        "restore",
        "--tree",
        "folder",
        "--as-of",
        &then_index.to_string(),
        "--to",
        "copy",
    ]);
    assert!(
        out.ok(),
        "restore --to failed: {} {}",
        out.stdout,
        out.stderr
    );
    assert!(out.stdout.contains("to copy"), "{}", out.stdout);
    let copied = converge_within(&c, &[0, 1, 2], LONG);
    assert_eq!(under(&copied, "copy"), folder);
    // A destination that is not empty is refused; so is one outside the
    // synced directory without --allow-outside.
    let again = c.node(0).cli(&[
        "restore", "--tree", "folder", "--as-of", &then, "--to", "copy",
    ]);
    assert_eq!(again.code, Some(1), "{}", again.stderr);
    assert!(
        again.stderr.contains("not an empty directory"),
        "{}",
        again.stderr
    );
    let outside = tempfile::tempdir().unwrap();
    let abs = outside.path().join("t");
    let abs = abs.to_str().unwrap();
    let refused = c
        .node(0)
        .cli(&["restore", "--tree", "folder", "--as-of", &then, "--to", abs]);
    assert_eq!(refused.code, Some(1), "{}", refused.stderr);
    let ok = c.node(0).cli(&[
        "restore",
        "--tree",
        "folder",
        "--as-of",
        &then,
        "--to",
        abs,
        "--allow-outside",
    ]);
    assert!(ok.ok(), "{} {}", ok.stdout, ok.stderr);
    assert_eq!(snapshot(outside.path().join("t").as_path()), folder);

    // Bad input is refused clearly.
    let bad = c.node(0).cli(&[
        "restore",
        "--tree",
        "folder",
        "--as-of",
        "yesterday",
        "--in-place",
    ]);
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);
    assert!(bad.stderr.contains("RFC 3339"), "{}", bad.stderr);
    let future = c.node(0).cli(&["diff", "--as-of", "999999999", "folder"]);
    assert_eq!(future.code, Some(1), "{}", future.stderr);
    assert!(future.stderr.contains("beyond"), "{}", future.stderr);
    let neither = c
        .node(0)
        .cli(&["restore", "--tree", "folder", "--as-of", &then]);
    assert_eq!(neither.code, Some(2), "{}", neither.stderr);
}

#[test]
fn t20_a_mass_rewrite_waits_for_confirm_while_the_rest_syncs() {
    let n = files();
    let _g = serial();
    let mut c = Cluster::start(3).unwrap();
    c.wait_converged(3, 3).unwrap();
    let d0 = c.node(0).dir();
    write_folder(&d0, n, |i| random_bytes(300, i as u64));
    fs::write(d0.join("elsewhere.txt"), b"v1\n").unwrap();
    let before = converge_within(&c, &[0, 1, 2], LONG);

    // Half the files rewritten at once: new contents made outside the
    // synced directory (same file system), then renamed over the old ones.
    let half = n / 2;
    let staging = c.root().join("rewrite");
    fs::create_dir_all(&staging).unwrap();
    let rewritten = |i: usize| random_bytes(300, 1_000_000 + i as u64);
    for i in 0..half {
        fs::write(staging.join(format!("f{i:04}.bin")), rewritten(i)).unwrap();
    }
    for i in 0..half {
        fs::rename(
            staging.join(format!("f{i:04}.bin")),
            d0.join(format!("folder/d{}/f{i:04}.bin", i / 100)),
        )
        .unwrap();
    }
    // The guard holds a burst once it sees one: the first piece the
    // watcher delivers of a folder's burst may go out before, if smaller
    // than a quarter of the trip count (7 of a folder's 31 by default).
    let may_leak = (half / 100 * 6) as u64;
    let held = wait_for("the guard to hold the rewrite", LONG, || {
        let st = status_json(c.node(0)).ok_or(Error("no status".into()))?;
        let withheld = st["sync"]["withheld"].as_u64().unwrap_or(0);
        if st["sync"]["paused"].is_null() || withheld + may_leak < half as u64 {
            return Err(Error(format!("not held yet: {}", st["sync"])));
        }
        Ok(Some(st))
    })
    .unwrap();
    let withheld = held["sync"]["withheld"].as_u64().unwrap();
    let leaked = half as u64 - withheld.min(half as u64);
    eprintln!("held {withheld} of {half}; {leaked} went out before the hold");
    let why = held["sync"]["paused"].as_str().unwrap().to_string();
    assert!(why.contains("replaced or deleted at once"), "{why}");
    let human = c.node(0).cli(&["status"]);
    assert!(
        human.stdout.contains("PAUSED") && human.stdout.contains("filesyncd confirm"),
        "{}",
        human.stdout
    );

    // Meanwhile an edit elsewhere goes out, and nothing held.
    fs::write(d0.join("elsewhere.txt"), b"v2\n").unwrap();
    for i in 1..3 {
        wait_for("the edit elsewhere to sync", LONG, || {
            let got = fs::read(c.node(i).dir().join("elsewhere.txt")).unwrap_or_default();
            Ok((got == b"v2\n").then_some(()))
        })
        .unwrap();
    }
    for i in 1..3 {
        let t = under(&snapshot(&c.node(i).dir()), "folder");
        let was = under(&before, "folder");
        let differ: Vec<&String> = was
            .iter()
            .filter(|(p, e)| t.get(*p) != Some(*e))
            .map(|(p, _)| p)
            .collect();
        assert!(
            differ.len() as u64 <= leaked,
            "node {i}: {} files of folder/ changed while {withheld} of the rewrite are held: {:?}",
            differ.len(),
            differ.iter().take(10).collect::<Vec<_>>()
        );
    }
    let st = status_json(c.node(0)).unwrap();
    assert!(!in_sync(&st), "a node holding changes is not in sync: {st}");

    // Confirmed: the rewrite goes out everywhere.
    let out = c.node(0).cli(&["confirm"]);
    assert!(out.ok(), "confirm: {} {}", out.stdout, out.stderr);
    assert!(out.stdout.contains("go out now"), "{}", out.stdout);
    let after = converge_within(&c, &[0, 1, 2], LONG);
    for i in 0..half {
        let p = format!("folder/d{}/f{i:04}.bin", i / 100);
        assert_eq!(
            after.get(&p),
            Some(&Entry::File(0o644, rewritten(i))),
            "{p}"
        );
    }
    let last = format!("folder/d{}/f{:04}.bin", (n - 1) / 100, n - 1);
    assert_eq!(
        after.get(&last),
        before.get(&last),
        "the other half is untouched"
    );
    let st = status_json(c.node(0)).unwrap();
    assert!(st["sync"]["paused"].is_null(), "{st}");
}
