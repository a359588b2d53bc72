//! The incremental plan ([`PlanInput::only`]) against the full one: after a
//! full plan that proceeded, a plan of the next state restricted to its
//! scope, the paths the first plan acted on and the paths whose record or
//! local entry changed decides exactly what a plan of every path decides.
//! This is the contract `Engine::step` relies on to make a step cost what
//! changed.

use proptest::prelude::*;

use super::plan::*;
use super::plan_tests::*;
use super::types::*;

/// A small tree with files under directories and names that sort around
/// the `/` separator (`a-b` sorts between `a` and `a/x`).
const PATHS: [&str; 7] = ["a", "a-b", "a/x", "a/y", "a/y/z", "b", "c"];

fn meta_of(k: u8) -> Meta {
    match k % 5 {
        0 => a(),
        1 => b(),
        2 => c(),
        3 => u(),
        _ => Meta::dir(0o755),
    }
}

fn stat_of(m: &Meta, c: u8) -> Stat {
    if m.is_dir() {
        dir_st(u64::from(c % 3), 0o755)
    } else {
        st(u64::from(c % 3), 100 * i64::from(c % 2 + 1))
    }
}

/// The committed record of a path for a choice (`None`: no history).
fn committed_of(p: &str, c: u8) -> Option<VersionRecord> {
    let v = u64::from(c / 8 % 4 + 1);
    match c % 8 {
        0 | 1 => None,
        2 => Some(tomb(p, v)),
        k => Some(rec(p, meta_of(k), v)),
    }
}

fn local_of(c: u8) -> Option<LocalEntry> {
    let v = u64::from(c / 8 % 4 + 1);
    let m = meta_of(c / 2);
    let s = stat_of(&m, c / 3);
    match c % 8 {
        0..=2 => None,
        3 => Some(pending(m, s, None)),
        4 => Some(pending(m, s, Some(v))),
        _ => Some(at(m, s, v)),
    }
}

fn disk_of(c: u8) -> Option<DiskEntry> {
    let m = meta_of(c / 2);
    let s = stat_of(&m, c / 3);
    match c % 8 {
        0 | 1 => None,
        2 => Some(DiskEntry {
            stat: s,
            meta: None,
        }),
        _ => Some(on_disk(s, m)),
    }
}

fn scope_of(mask: u8) -> Option<Scope> {
    if mask == 0 {
        return None;
    }
    let mut roots: Vec<String> = PATHS
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, p)| p.to_string())
        .collect();
    // The top bit: a scope that names a path no map knows.
    if mask & 0x80 != 0 {
        roots.push("q".into());
    }
    Some(Scope::Paths(roots))
}

/// A world whose disk view is `disk` (the truth) as a scan of `scope` sees it,
/// where the scan did not look at the paths of `unread` nor under them (an
/// unreadable directory, or one the hash budget deferred; a scope root
/// among them is not looked at at all).
fn world(
    committed: &[u8],
    local: &[u8],
    disk: &[u8],
    (scope, unread): (u8, u8),
    applied: u64,
    ignored: &[bool],
) -> World {
    let mut w = World {
        scope: scope_of(scope),
        applied,
        ..World::default()
    };
    if let Some(Scope::Paths(unread)) = scope_of(unread & 0x7f) {
        w.unreadable = unread;
    }
    let unread = Scope::Paths(w.unreadable.clone());
    for (i, p) in PATHS.iter().enumerate() {
        let covered = w.scope.as_ref().is_none_or(|s| s.covers(p))
            && (w.unreadable.is_empty() || !unread.covers(p));
        w.put(
            p,
            disk_of(disk[i]).filter(|_| covered),
            local_of(local[i]),
            committed_of(p, committed[i]),
        );
        if ignored[i] {
            w.ignored.insert(p.to_string());
        }
    }
    w
}

fn choices() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), PATHS.len())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn the_plan_of_what_changed_equals_the_plan_of_everything(
        (t0, l0, d0) in (choices(), choices(), choices()),
        (t1, l1, d1) in (choices(), choices(), choices()),
        // Which paths change between the two plans.
        (t_mask, l_mask) in (any::<u8>(), any::<u8>()),
        (scope0, scope1) in (any::<u8>(), any::<u8>()),
        // Paths the scans did not look at (one time in two, none).
        (unread0, unread1) in (prop_oneof![Just(0u8), any::<u8>()], prop_oneof![Just(0u8), any::<u8>()]),
        (applied0, grows) in (prop_oneof![Just(0u64), 1u64..6], 0u64..3),
        ignored in proptest::collection::vec(prop::bool::weighted(0.15), PATHS.len()),
    ) {
        let first = world(&t0, &l0, &d0, (scope0, unread0), applied0, &ignored);
        let p0 = first.plan();
        prop_assume!(p0.verdict == Verdict::Proceed);

        // The next state: some records and local entries change, the disk
        // changes anywhere (what the new scope does not cover is not seen),
        // the view's index only grows.
        let pick = |mask: u8, new: &[u8], old: &[u8]| -> Vec<u8> {
            (0..PATHS.len())
                .map(|i| if mask & (1 << i) != 0 { new[i] } else { old[i] })
                .collect()
        };
        let t = pick(t_mask, &t1, &t0);
        let l = pick(l_mask, &l1, &l0);
        let applied1 = if applied0 == 0 { 0 } else { applied0 + grows };
        let mut next = world(&t, &l, &d1, (scope1, unread1), applied1, &ignored);
        let full = next.plan();

        let mut only = p0.acted_on();
        for (i, p) in PATHS.iter().enumerate() {
            if t[i] != t0[i] || l[i] != l0[i] {
                only.insert(p.to_string());
            }
        }
        next.only = Some(only);
        let incremental = next.plan();
        prop_assert_eq!(summary(&incremental), summary(&full));
        prop_assert_eq!(incremental, full);
    }
}
