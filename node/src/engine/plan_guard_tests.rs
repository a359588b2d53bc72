//! Table-driven tests of the plan's guards, ordering and naming rules, and
//! property tests of its safety invariants.

use super::plan::*;
use super::plan_tests::*;
use super::types::*;

#[test]
fn marker_and_empty_root_halt_everything() {
    let base = || World::one(None, Some(at(a(), S1(), 5)), Some(rec("f", c(), 7)));
    for (marker, root_empty) in [
        (Marker::Missing, false),
        (Marker::Found("other".into()), false),
        (Marker::Unreadable("EIO".into()), false),
        (Marker::Found("c1".into()), true),
    ] {
        let mut w = if root_empty { many(12, 12) } else { base() };
        w.marker = Some(marker.clone());
        w.root_empty = root_empty;
        let p = w.plan();
        assert!(matches!(p.verdict, Verdict::Halt(_)), "{marker:?}");
        assert!(p.actions.is_empty());
    }
    // A small folder emptied under its marker is an ordinary delete.
    let mut w = base();
    w.root_empty = true;
    assert_eq!(w.plan().verdict, Verdict::Proceed);
    // An empty root is fine when nothing is known, or when confirmed.
    let mut w = World::one(None, None, Some(rec("f", c(), 7)));
    w.root_empty = true;
    assert_eq!(w.plan().verdict, Verdict::Proceed);
    let mut w = base();
    w.root_empty = true;
    let cfg = PlanConfig {
        deletes_confirmed: true,
        ..PlanConfig::new("c1", 9)
    };
    assert_eq!(w.plan_with(&cfg).verdict, Verdict::Proceed);
}

fn why(v: &Verdict) -> String {
    match v {
        Verdict::Pause(r) => r.to_string(),
        other => format!("{other:?}"),
    }
}

fn many(known: usize, vanished: usize) -> World {
    let mut w = World::default();
    for i in 0..known {
        let p = format!("f{i:03}");
        let d = (i >= vanished).then(|| on_disk(S1(), a()));
        w.put(&p, d, Some(at(a(), S1(), 5)), Some(rec(&p, a(), 5)));
    }
    w.put("new", None, None, Some(rec("new", c(), 9)));
    w
}

#[test]
fn mass_delete_pauses_local_deletes_only() {
    let p = many(20, 15).plan();
    assert_eq!(
        p.verdict,
        Verdict::Pause(PauseReason::MassDelete {
            vanished: 15,
            known: 20
        })
    );
    assert_eq!(
        summary(&p),
        vec!["write new v9 absent"],
        "other actions go on"
    );
    for (known, vanished) in [(20, 10), (4, 4)] {
        let p = many(known, vanished).plan();
        assert_eq!(p.verdict, Verdict::Proceed, "{known}/{vanished}");
        assert_eq!(summary(&p).len(), vanished + 1);
    }
    let cfg = PlanConfig {
        deletes_confirmed: true,
        ..PlanConfig::new("c1", 9)
    };
    let p = many(20, 15).plan_with(&cfg);
    assert_eq!(p.verdict, Verdict::Proceed);
    assert_eq!(summary(&p).len(), 16);
}

#[test]
fn actions_come_in_execution_order() {
    let mut w = World::default();
    let d = |ino| on_disk(dir_st(ino, 0o755), Meta::dir(0o755));
    let dl = |ino| at(Meta::dir(0o755), dir_st(ino, 0o755), 5);
    // Local: dir "a" with "a/b" removed; new dir "n" with "n/x".
    w.put("a", None, Some(dl(1)), Some(rec("a", Meta::dir(0o755), 5)));
    w.put(
        "a/b",
        None,
        Some(at(a(), S1(), 5)),
        Some(rec("a/b", a(), 5)),
    );
    w.put("n/x", Some(on_disk(S1(), a())), None, None);
    w.put("n", Some(d(2)), None, None);
    // Remote: "r/s" new under new dir "r"; "q/z" deleted under deleted "q".
    w.put("r/s", None, None, Some(rec("r/s", c(), 8)));
    w.put("r", None, None, Some(rec("r", Meta::dir(0o755), 8)));
    w.put("q", Some(d(3)), Some(dl(3)), Some(tomb("q", 8)));
    w.put(
        "q/z",
        Some(on_disk(S1(), a())),
        Some(at(a(), S1(), 5)),
        Some(tomb("q/z", 8)),
    );
    assert_eq!(
        summary(&w.plan()),
        vec![
            "propose-delete a/b base5",
            "propose-delete a base5",
            "put n base0",
            "put n/x base0",
            "mkdir r 755 absent",
            "write r/s v8 absent",
            "delete q/z v8 mtime100",
            "delete q v8 mtime1",
        ]
    );
}

#[test]
fn remote_delete_of_a_dir_with_new_local_entries_keeps_the_dir() {
    let mut w = World::default();
    let dst = dir_st(3, 0o755);
    w.put(
        "q",
        Some(on_disk(dst, Meta::dir(0o755))),
        Some(at(Meta::dir(0o755), dst, 5)),
        Some(tomb("q", 8)),
    );
    w.put("q/new", Some(on_disk(S1(), a())), None, None);
    assert_eq!(summary(&w.plan()), vec!["put q base8", "put q/new base0"]);
}

#[test]
fn conflict_names_avoid_taken_names() {
    let mut w = World::one(
        Some(on_disk(S2(), b())),
        Some(at(a(), S1(), 5)),
        Some(rec("f", c(), 7)),
    );
    w.put(
        CONFLICT,
        Some(on_disk(st(7, 1), a())),
        Some(at(a(), st(7, 1), 3)),
        Some(rec(CONFLICT, a(), 3)),
    );
    let s = summary(&w.plan());
    assert_eq!(s[0], format!("conflict f -> {CONFLICT}-2"));
}

#[test]
fn materialized_content_is_not_proposed_again() {
    // After the engine wrote v7 it recorded the stat it left behind: the
    // next scan finds exactly that stat, and nothing is planned.
    let s = st(42, 777);
    let w = World::one(
        Some(on_disk(s, c())),
        Some(at(c(), s, 7)),
        Some(rec("f", c(), 7)),
    );
    assert!(w.plan().actions.is_empty());
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn meta_of(i: u8) -> Meta {
        match i % 5 {
            0 => a(),
            1 => b(),
            2 => c(),
            3 => Meta::dir(0o700),
            _ => Meta::dir(0o755),
        }
    }

    fn stat_of(m: &Meta, i: u8) -> Stat {
        if m.is_dir() {
            dir_st(50 + u64::from(i % 2), 0o755)
        } else {
            st(1, 100 * (1 + i64::from(i % 2)))
        }
    }

    /// (disk, local, committed) codes for one path.
    type Slot = (u8, u8, u8, u8, u8);

    fn world(slots: &[Slot], confirmed_root_empty: bool) -> World {
        let mut w = World::default();
        for (i, (d, l, t, x, y)) in slots.iter().enumerate() {
            let p = ["a", "b", "d", "d/x"][i % 4];
            let dm = meta_of(*x);
            let disk = match d % 4 {
                0 => None,
                1 => Some(DiskEntry {
                    stat: stat_of(&dm, *y),
                    meta: None,
                }),
                _ => Some(on_disk(stat_of(&dm, *y), dm.clone())),
            };
            let lm = meta_of(x / 4);
            let local = match l % 4 {
                0 => None,
                1 => Some(pending(lm.clone(), stat_of(&lm, y / 2), Some(5))),
                _ => Some(at(
                    lm.clone(),
                    stat_of(&lm, y / 2),
                    [3, 5, 7][usize::from(l / 4 % 3)],
                )),
            };
            let v = [3, 5, 7][usize::from(t / 4 % 3)];
            let committed = match t % 4 {
                0 => None,
                1 => Some(tomb(p, v)),
                _ => Some(rec(p, meta_of(y / 4), v)),
            };
            w.put(p, disk, local, committed);
        }
        w.root_empty = confirmed_root_empty;
        w
    }

    proptest! {
        #[test]
        fn never_touches_unseen_data(
            slots in proptest::collection::vec(any::<Slot>(), 1..5),
            root_empty in any::<bool>(),
            confirmed in any::<bool>(),
        ) {
            let w = world(&slots, root_empty);
            let cfg = PlanConfig { deletes_confirmed: confirmed, min_vanished: 1, max_vanished_share: 0.3, ..PlanConfig::new("c1", 9) };
            let p = w.plan_with(&cfg);
            prop_assert_eq!(&p, &w.plan_with(&cfg), "deterministic");
            if matches!(p.verdict, Verdict::Halt(_)) {
                prop_assert!(p.actions.is_empty());
            }
            let mut moved = std::collections::BTreeSet::new();
            for act in &p.actions {
                let disk = w.disk.get(act.path());
                let recorded = |path: &str, s: &Stat| {
                    let d = w.disk.get(path);
                    let l = w.local.get(path);
                    d.is_some_and(|d| d.stat == *s)
                        && (l.is_some_and(|l| d.and_then(|d| d.meta.as_ref()) == Some(&l.meta))
                            || s.kind == FileKind::Dir)
                };
                match act {
                    Action::Delete { path, expect, .. } => {
                        prop_assert!(recorded(path, expect), "delete of unseen data at {}", path);
                    }
                    Action::Write { path, expect, .. }
                    | Action::Mkdir { path, expect, .. }
                    | Action::Symlink { path, expect, .. } => match expect {
                        Expect::Entry(s) => prop_assert!(recorded(path, s), "overwrite of unseen data at {}", path),
                        Expect::Absent => prop_assert!(
                            disk.is_none() || moved.contains(path),
                            "write over a present entry at {}", path
                        ),
                    },
                    Action::MakeConflictCopy { path, expect, .. } => {
                        prop_assert_eq!(disk.map(|d| d.stat), Some(*expect));
                        moved.insert(path.clone());
                    }
                    Action::Propose(Proposal::Put { path, meta, .. }) if !path.contains("sync-conflict") => {
                        prop_assert_eq!(disk.and_then(|d| d.meta.as_ref()), Some(meta));
                    }
                    Action::Propose(Proposal::Delete { path, .. }) => {
                        prop_assert!(disk.is_none(), "delete proposed for a present {}", path);
                        prop_assert!(!matches!(p.verdict, Verdict::Pause(_)));
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The bursts of `w` waited long enough (see [`GUARD_SETTLE_MS`]).
fn settled(w: &mut World) {
    for f in ["", "big"] {
        w.guard.settling.insert(f.into(), NOW - GUARD_SETTLE_MS);
    }
}

/// 200 committed files under `big/` (the first `rewritten` replaced, the
/// next `deleted` gone from disk), 100 untouched under `other/`, one
/// rewritten `small/x` and a new `big/new`.
fn folders(rewritten: usize, deleted: usize) -> World {
    let mut w = World::default();
    for i in 0..200u64 {
        let p = format!("big/f{i:03}");
        let d = if (i as usize) < rewritten {
            Some(on_disk(st(i + 1, 6), b()))
        } else if (i as usize) < rewritten + deleted {
            None
        } else {
            Some(on_disk(st(i + 1, 5), a()))
        };
        w.put(&p, d, Some(at(a(), st(i + 1, 5), 5)), Some(rec(&p, a(), 5)));
    }
    for i in 0..100u64 {
        let p = format!("other/g{i:03}");
        let s = st(1000 + i, 5);
        w.put(
            &p,
            Some(on_disk(s, a())),
            Some(at(a(), s, 5)),
            Some(rec(&p, a(), 5)),
        );
    }
    w.put(
        "small/x",
        Some(on_disk(st(2000, 6), b())),
        Some(at(a(), st(2000, 5), 5)),
        Some(rec("small/x", a(), 5)),
    );
    w.put("big/new", Some(on_disk(st(3000, 6), b())), None, None);
    w
}

#[test]
fn a_folders_mass_change_is_held_and_the_rest_goes_on() {
    // 50 rewritten + 11 deleted = 61 > 30% of 200: big/ is held.
    let p = folders(50, 11).plan();
    assert_eq!(
        p.verdict,
        Verdict::Pause(PauseReason::MassChange {
            folder: "big".into(),
            changed: 61,
            known: 200,
            folders: 1
        })
    );
    assert_eq!(p.withheld.len(), 61);
    assert!(p.withheld.iter().all(|w| w.starts_with("big/f")));
    let s = summary(&p);
    assert!(s.contains(&"put big/new base0".to_string()), "{s:?}");
    assert!(s.contains(&"put small/x base5".to_string()), "{s:?}");
    assert!(!s.iter().any(|a| a.contains("big/f")), "{s:?}");
    // The root (301 files known, 62 changed) is not held as a whole.
    assert!(why(&p.verdict).contains("61 of the 200 files under big"));

    // 60 of 200 is not more than 30%: the burst waits a moment for the
    // rest of it (settling), then goes out.
    let mut w = folders(40, 20);
    let p = w.plan();
    assert_eq!(p.verdict, Verdict::Proceed);
    assert!(p.withheld.is_empty());
    assert_eq!(p.settling, vec![("big".to_string(), NOW)]);
    assert_eq!(p.settling_paths.len(), 60);
    assert_eq!(summary(&p), vec!["put big/new base0", "put small/x base5"]);
    settled(&mut w);
    let p = w.plan();
    assert_eq!(p.verdict, Verdict::Proceed);
    assert!(p.withheld.is_empty() && p.settling_paths.is_empty());
    assert_eq!(summary(&p).len(), 40 + 20 + 2);

    // Confirmed, or the guard off: everything goes.
    for cfg in [
        PlanConfig {
            deletes_confirmed: true,
            ..PlanConfig::new("c1", 9)
        },
        PlanConfig {
            guard: None,
            ..PlanConfig::new("c1", 9)
        },
    ] {
        let p = folders(50, 11).plan_with(&cfg);
        assert_eq!(p.verdict, Verdict::Proceed, "{cfg:?}");
        assert_eq!(summary(&p).len(), 61 + 2);
    }

    // The user asked for them (a restore): exempt, nothing held.
    let mut w = folders(50, 11);
    w.guard
        .exempt(NOW, (0..61).map(|i| format!("big/f{i:03}")).collect());
    let p = w.plan();
    assert_eq!(p.verdict, Verdict::Proceed);
    assert_eq!(summary(&p).len(), 61 + 2);
    w.guard.expire(NOW + GUARD_EXEMPT_MS + 1);
    assert!(
        matches!(w.plan().verdict, Verdict::Pause(_)),
        "exemption expired"
    );

    // A stricter guard still holds big/ alone: the root's changes are
    // explained by it but for small/x.
    let cfg = PlanConfig {
        guard: Some(MassChangeGuard {
            share: 0.1,
            min_files: 100,
        }),
        ..PlanConfig::new("c1", 9)
    };
    let p = folders(50, 11).plan_with(&cfg);
    assert_eq!(p.held.len(), 1);
    assert_eq!(p.held[0].folder, "big");
    assert!(summary(&p).contains(&"put small/x base5".to_string()));
}

#[test]
fn scattered_changes_over_small_folders_hold_their_parent() {
    // 20 folders of 10 files, 4 replaced in each: no folder reaches 100
    // files, the root (200 files, 80 replaced) trips, and with it every
    // replacement waits; the new file goes.
    let mut w = World::default();
    for k in 0..20u64 {
        for i in 0..10u64 {
            let p = format!("s{k:02}/f{i}");
            let ino = k * 100 + i + 1;
            let d = if i < 4 {
                on_disk(st(ino, 6), b())
            } else {
                on_disk(st(ino, 5), a())
            };
            w.put(
                &p,
                Some(d),
                Some(at(a(), st(ino, 5), 5)),
                Some(rec(&p, a(), 5)),
            );
        }
    }
    w.put("new", Some(on_disk(st(9999, 6), b())), None, None);
    let p = w.plan();
    assert_eq!(
        p.verdict,
        Verdict::Pause(PauseReason::MassChange {
            folder: String::new(),
            changed: 80,
            known: 200,
            folders: 1
        })
    );
    assert!(
        why(&p.verdict).contains("under the root"),
        "{:?}",
        p.verdict
    );
    assert_eq!(summary(&p), vec!["put new base0"]);
    assert_eq!(p.withheld.len(), 80);
}

/// Changes spread over several plans add up within the window; once held,
/// a folder stays held while its changes wait, and what went out before
/// the hold is not counted twice.
#[test]
fn changes_add_up_over_plans_and_stay_held() {
    let mut w = folders(20, 0);
    settled(&mut w);
    let p = w.plan();
    assert_eq!(p.verdict, Verdict::Proceed);
    assert_eq!(p.passed.len(), 21, "big/f000..019 and small/x");
    let mut mem = GuardMemory::default();
    for path in &p.passed {
        mem.record(NOW, path.clone());
    }
    // 20 more of big/ (the first 20 now committed as rewritten, so
    // unchanged): 40 in the window, not yet 30% of 200.
    let mut w = folders(40, 0);
    for i in 0..20u64 {
        let p = format!("big/f{i:03}");
        w.local.insert(p.clone(), at(b(), st(i + 1, 6), 6));
        w.committed.insert(p.clone(), rec(&p, b(), 6));
    }
    w.guard = mem.clone();
    settled(&mut w);
    let p = w.plan();
    assert_eq!(p.verdict, Verdict::Proceed, "{:?}", p.held);
    for path in &p.passed {
        mem.record(NOW, path.clone());
    }
    // 30 more: 70 > 60 in the window: held (the 30 only; the 40 went out).
    let mut w = folders(70, 0);
    for i in 0..40u64 {
        let p = format!("big/f{i:03}");
        w.local.insert(p.clone(), at(b(), st(i + 1, 6), 6));
        w.committed.insert(p.clone(), rec(&p, b(), 6));
    }
    w.guard = mem.clone();
    let p = w.plan();
    assert!(
        matches!(&p.verdict, Verdict::Pause(PauseReason::MassChange { folder, changed: 70, known: 200, .. }) if folder == "big"),
        "{:?}",
        p.verdict
    );
    assert_eq!(p.withheld.len(), 30);
    // Later, the window long past: still held while the 30 wait.
    mem.held = p.held.clone();
    mem.expire(NOW + GUARD_WINDOW_MS + 1);
    assert_eq!(mem.recent_len(), 0);
    w.guard = mem.clone();
    let p = w.plan();
    assert!(matches!(p.verdict, Verdict::Pause(_)));
    assert_eq!(p.withheld.len(), 30);
    // A file edited again and again counts once.
    let mut m = GuardMemory::default();
    for t in 0..5 {
        m.record(NOW + t, "big/f000".into());
    }
    assert_eq!(
        (m.recent_len(), m.recent_under("big"), m.recent_under("")),
        (1, 1, 1)
    );
    m.expire(NOW + 2 + GUARD_WINDOW_MS);
    assert_eq!(m.recent_len(), 1, "its latest edit is within the window");
    m.expire(NOW + 5 + GUARD_WINDOW_MS);
    assert_eq!(m.recent_len(), 0);
}

#[test]
fn a_small_folder_is_never_held_by_the_share_alone() {
    // 1 of 2 files replaced is 50%, but the folder has fewer than 100.
    let mut w = World::default();
    for (i, p) in ["s/a", "s/b"].into_iter().enumerate() {
        let i = i as u64 + 1;
        let d = if i == 1 {
            on_disk(st(i, 6), b())
        } else {
            on_disk(st(i, 5), a())
        };
        w.put(p, Some(d), Some(at(a(), st(i, 5), 5)), Some(rec(p, a(), 5)));
    }
    let p = w.plan();
    assert_eq!(p.verdict, Verdict::Proceed);
    assert_eq!(summary(&p), vec!["put s/a base5"]);
}

#[test]
fn a_burst_waits_to_settle_only_in_a_guarded_folder() {
    // 7 changes (a quarter of the trip count) in a folder of 200 wait...
    let mut w = folders(7, 0);
    let p = w.plan();
    assert_eq!(p.settling_paths.len(), 7);
    // ...until GUARD_SETTLE_MS after the burst was first seen.
    w.guard
        .settling
        .insert("big".into(), NOW - GUARD_SETTLE_MS + 1);
    assert_eq!(w.plan().settling_paths.len(), 7);
    w.guard.settling.insert("big".into(), NOW - GUARD_SETTLE_MS);
    let p = w.plan();
    assert!(p.settling_paths.is_empty());
    assert_eq!(summary(&p).len(), 7 + 2);
    // 6 changes never wait (5 in big/ and small/x).
    let p = folders(5, 0).plan();
    assert!(p.settling_paths.is_empty() && p.settling.is_empty());
    // Nor do changes in a folder smaller than the guard watches: 10
    // replaced in a folder of 10 (the root holds 10 too).
    let mut w = World::default();
    for i in 0..10u64 {
        let p = format!("s/f{i}");
        w.put(
            &p,
            Some(on_disk(st(i + 1, 6), b())),
            Some(at(a(), st(i + 1, 5), 5)),
            Some(rec(&p, a(), 5)),
        );
    }
    let p = w.plan();
    assert!(p.settling_paths.is_empty());
    assert_eq!(summary(&p).len(), 10);
}

#[test]
fn a_deleted_folder_waits_with_the_subfolders_held_below_it() {
    // `rm -rf top`: top/a and top/b (100 files each) are held; top itself
    // and top/link, neither under a held folder, but top is above them:
    // top waits too (it cannot be deleted while they stay), the link goes.
    let mut w = World::default();
    for (k, sub) in ["top/a", "top/b"].into_iter().enumerate() {
        let dl = at(Meta::dir(0o755), dir_st(900 + k as u64, 0o755), 5);
        w.put(sub, None, Some(dl), Some(rec(sub, Meta::dir(0o755), 5)));
        for i in 0..100u64 {
            let p = format!("{sub}/f{i:03}");
            let ino = k as u64 * 1000 + i + 1;
            w.put(
                &p,
                None,
                Some(at(a(), st(ino, 5), 5)),
                Some(rec(&p, a(), 5)),
            );
        }
    }
    let dl = at(Meta::dir(0o755), dir_st(999, 0o755), 5);
    w.put("top", None, Some(dl), Some(rec("top", Meta::dir(0o755), 5)));
    let ll = at(u(), st(998, 5), 5);
    w.put("top/link", None, Some(ll), Some(rec("top/link", u(), 5)));
    let p = w.plan();
    let held: Vec<&str> = p.held.iter().map(|h| h.folder.as_str()).collect();
    assert_eq!(held, vec!["top/a", "top/b"]);
    assert!(p.withheld.contains(&"top".to_string()), "{:?}", p.withheld);
    assert_eq!(p.withheld.len(), 203);
    assert_eq!(summary(&p), vec!["propose-delete top/link base5"]);
}
