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
