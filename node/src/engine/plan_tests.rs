//! Table-driven tests of every rule of `plan.rs`.

use std::collections::{BTreeMap, HashMap, HashSet};

use filesyncd_merkle::{ChunkEntry, Hash};

use super::plan::*;
use super::types::*;

pub(super) const NOW: u64 = 1_735_689_599_000; // 2024-12-31 23:59:59 UTC
pub(super) const CONFLICT: &str = "f.sync-conflict-20241231-235959-9";

pub(super) fn h(b: u8) -> Hash {
    Hash([b; 32])
}

/// File contents: A and C have known trees whose chunks are held, B's
/// chunk is missing, U's tree is unknown.
pub(super) fn a() -> Meta {
    Meta::file(h(1), 10, 0o644)
}
pub(super) fn b() -> Meta {
    Meta::file(h(2), 10, 0o644)
}
pub(super) fn c() -> Meta {
    Meta::file(h(4), 10, 0o644)
}
pub(super) fn u() -> Meta {
    Meta::file(h(3), 10, 0o644)
}

/// `staged`: roots whose whole version is staged here.
pub(super) struct Chunks<'a> {
    staged: &'a HashSet<Hash>,
}
impl ChunkView for Chunks<'_> {
    fn is_staged(&self, root: &Hash, _size: u64) -> bool {
        self.staged.contains(root)
    }
    fn has_chunk(&self, x: &Hash) -> bool {
        *x != h(12)
    }
    fn chunk_list(&self, root: &Hash, _size: u64) -> Option<Vec<ChunkEntry>> {
        let m: HashMap<Hash, Hash> = [(h(1), h(11)), (h(2), h(12)), (h(4), h(14))].into();
        m.get(root).map(|c| vec![ChunkEntry { hash: *c, len: 10 }])
    }
}

pub(super) fn st(ino: u64, mtime: i64) -> Stat {
    Stat {
        kind: FileKind::File,
        size: 10,
        mtime_ns: mtime,
        ctime_ns: mtime,
        ino,
        mode: 0o644,
    }
}
pub(super) fn dir_st(ino: u64, mode: u32) -> Stat {
    Stat {
        kind: FileKind::Dir,
        size: 4096,
        mtime_ns: 1,
        ctime_ns: 1,
        ino,
        mode,
    }
}
pub(super) const S1: fn() -> Stat = || st(1, 100);
pub(super) const S2: fn() -> Stat = || st(1, 200);

pub(super) fn rec(path: &str, meta: Meta, v: u64) -> VersionRecord {
    VersionRecord {
        path: path.into(),
        meta,
        mtime_ns: 5,
        version: VersionId::new(v, 0),
        origin: 2,
        holders: vec![2],
        deleted: false,
    }
}
pub(super) fn tomb(path: &str, v: u64) -> VersionRecord {
    VersionRecord {
        deleted: true,
        ..rec(path, a(), v)
    }
}
pub(super) fn at(meta: Meta, stat: Stat, v: u64) -> LocalEntry {
    LocalEntry::committed(meta, stat, VersionId::new(v, 0))
}
pub(super) fn pending(meta: Meta, stat: Stat, base: Option<u64>) -> LocalEntry {
    LocalEntry {
        meta,
        stat,
        version: None,
        base: base.map(|b| VersionId::new(b, 0)),
    }
}
pub(super) fn on_disk(stat: Stat, meta: Meta) -> DiskEntry {
    DiskEntry {
        stat,
        meta: Some(meta),
    }
}

/// A world of several paths.
#[derive(Default)]
pub(super) struct World {
    pub(super) disk: BTreeMap<String, DiskEntry>,
    pub(super) local: BTreeMap<String, LocalEntry>,
    pub(super) committed: BTreeMap<String, VersionRecord>,
    pub(super) scope: Option<Scope>,
    pub(super) marker: Option<Marker>,
    pub(super) root_empty: bool,
    /// The index the committed view reflects (0, the default: everything).
    pub(super) applied: u64,
    pub(super) unreadable: Vec<String>,
    pub(super) ignored: HashSet<String>,
    /// [`PlanInput::only`].
    pub(super) only: Option<std::collections::BTreeSet<String>>,
    /// Roots staged whole here ([`ChunkView::is_staged`]).
    pub(super) staged: HashSet<Hash>,
    /// [`PlanInput::guard`].
    pub(super) guard: GuardMemory,
}

impl World {
    pub(super) fn one(
        d: Option<DiskEntry>,
        l: Option<LocalEntry>,
        t: Option<VersionRecord>,
    ) -> World {
        let mut w = World::default();
        w.put("f", d, l, t);
        w
    }

    pub(super) fn put(
        &mut self,
        p: &str,
        d: Option<DiskEntry>,
        l: Option<LocalEntry>,
        t: Option<VersionRecord>,
    ) {
        if let Some(d) = d {
            self.disk.insert(p.into(), d);
        }
        if let Some(l) = l {
            self.local.insert(p.into(), l);
        }
        if let Some(mut t) = t {
            t.path = p.into();
            self.committed.insert(p.into(), t);
        }
    }

    pub(super) fn plan_with(&self, cfg: &PlanConfig) -> Plan {
        let view = DiskView {
            entries: self.disk.clone(),
            scope: self.scope.clone().unwrap_or(Scope::Full),
            marker: self.marker.clone().unwrap_or(Marker::Found("c1".into())),
            root_empty: self.root_empty,
            unreadable: self.unreadable.clone(),
        };
        let ignored = |p: &str, _dir: bool| self.ignored.contains(p);
        plan(
            cfg,
            &PlanInput {
                disk: &view,
                committed: &self.committed,
                local: &self.local,
                chunks: &Chunks {
                    staged: &self.staged,
                },
                ignored: &ignored,
                now_ms: NOW,
                applied: if self.applied == 0 {
                    u64::MAX
                } else {
                    self.applied
                },
                only: self.only.as_ref(),
                guard: &self.guard,
            },
        )
    }

    pub(super) fn plan(&self) -> Plan {
        self.plan_with(&PlanConfig::new("c1", 9))
    }
}

pub(super) fn expect_str(e: &Expect) -> String {
    match e {
        Expect::Absent => "absent".into(),
        Expect::Entry(s) => format!("mtime{}", s.mtime_ns),
    }
}

/// One line per action, compact enough for tables.
pub(super) fn summary(p: &Plan) -> Vec<String> {
    p.actions
        .iter()
        .map(|a| match a {
            Action::Fetch { path, missing, .. } => match missing {
                Missing::Tree => format!("fetch-tree {path}"),
                Missing::Chunks(c) => format!("fetch {path} {}", c.len()),
            },
            Action::Write {
                path,
                record,
                expect,
            } => {
                format!(
                    "write {path} v{} {}",
                    record.version.index,
                    expect_str(expect)
                )
            }
            Action::Mkdir {
                path,
                record,
                expect,
            } => format!("mkdir {path} {:o} {}", record.meta.mode, expect_str(expect)),
            Action::Symlink { path, .. } => format!("symlink {path}"),
            Action::Delete {
                path,
                version,
                expect,
            } => format!(
                "delete {path} v{} mtime{}",
                version.map_or(0, |v| v.index),
                expect.mtime_ns
            ),
            Action::Propose(Proposal::Put { path, base, .. }) => {
                format!("put {path} base{}", base.map_or(0, |v| v.index))
            }
            Action::Propose(Proposal::Delete { path, base }) => {
                format!("propose-delete {path} base{}", base.index)
            }
            Action::MakeConflictCopy {
                path,
                conflict_path,
                ..
            } => {
                format!("conflict {path} -> {conflict_path}")
            }
            Action::Record { path, entry } => format!(
                "record {path} v{} mtime{}",
                entry.version.map_or(0, |v| v.index),
                entry.stat.mtime_ns
            ),
            Action::Forget { path } => format!("forget {path}"),
            Action::Skip { path, reason } => format!("skip {path} {reason:?}"),
        })
        .collect()
}

#[test]
fn single_path_rules() {
    let unstable = DiskEntry {
        stat: S2(),
        meta: None,
    };
    let sym = Meta::symlink("t");
    let cases: Vec<(&str, World, Vec<String>)> = vec![
        (
            "in sync",
            World::one(
                Some(on_disk(S1(), a())),
                Some(at(a(), S1(), 5)),
                Some(rec("f", a(), 5)),
            ),
            vec![],
        ),
        (
            "touched, same content: refresh the stat",
            World::one(
                Some(on_disk(S2(), a())),
                Some(at(a(), S1(), 5)),
                Some(rec("f", a(), 5)),
            ),
            vec!["record f v5 mtime200".into()],
        ),
        (
            "remote update",
            World::one(
                Some(on_disk(S1(), a())),
                Some(at(a(), S1(), 5)),
                Some(rec("f", b(), 7)),
            ),
            vec!["fetch f 1".into(), "write f v7 mtime100".into()],
        ),
        (
            "remote update, its version staged here: nothing to fetch",
            {
                let mut w = World::one(
                    Some(on_disk(S1(), a())),
                    Some(at(a(), S1(), 5)),
                    Some(rec("f", b(), 7)),
                );
                w.staged.insert(b().root);
                w
            },
            vec!["write f v7 mtime100".into()],
        ),
        (
            "remote update, chunks held",
            World::one(
                Some(on_disk(S1(), a())),
                Some(at(a(), S1(), 5)),
                Some(rec("f", c(), 7)),
            ),
            vec!["write f v7 mtime100".into()],
        ),
        (
            "remote update, tree unknown",
            World::one(
                Some(on_disk(S1(), a())),
                Some(at(a(), S1(), 5)),
                Some(rec("f", u(), 7)),
            ),
            vec!["fetch-tree f".into(), "write f v7 mtime100".into()],
        ),
        (
            "remote update, same content",
            World::one(
                Some(on_disk(S1(), a())),
                Some(at(a(), S1(), 5)),
                Some(rec("f", a(), 7)),
            ),
            vec!["record f v7 mtime100".into()],
        ),
        (
            "remote delete of unchanged file",
            World::one(
                Some(on_disk(S1(), a())),
                Some(at(a(), S1(), 5)),
                Some(tomb("f", 7)),
            ),
            vec!["delete f v7 mtime100".into()],
        ),
        (
            "the view lags behind this node's own committed version",
            World {
                applied: 4,
                ..World::one(Some(on_disk(S1(), a())), Some(at(a(), S1(), 5)), None)
            },
            vec!["skip f Lagging".into()],
        ),
        (
            "history dropped",
            World::one(Some(on_disk(S1(), a())), Some(at(a(), S1(), 5)), None),
            vec!["delete f v0 mtime100".into()],
        ),
        (
            "committed view lags",
            World::one(
                Some(on_disk(S1(), a())),
                Some(at(a(), S1(), 5)),
                Some(rec("f", b(), 3)),
            ),
            vec!["skip f Lagging".into()],
        ),
        (
            "local edit",
            World::one(
                Some(on_disk(S2(), b())),
                Some(at(a(), S1(), 5)),
                Some(rec("f", a(), 5)),
            ),
            vec!["put f base5".into()],
        ),
        (
            "local edit on a lagging view",
            World::one(
                Some(on_disk(S2(), b())),
                Some(at(a(), S1(), 5)),
                Some(rec("f", a(), 3)),
            ),
            vec!["put f base5".into()],
        ),
        (
            "both edited: conflict copy",
            World::one(
                Some(on_disk(S2(), b())),
                Some(at(a(), S1(), 5)),
                Some(rec("f", c(), 7)),
            ),
            vec![
                format!("conflict f -> {CONFLICT}"),
                format!("put {CONFLICT} base0"),
                "write f v7 absent".into(),
            ],
        ),
        (
            "both edited, but the newer version is this node's own (its outcome was lost)",
            World::one(
                Some(on_disk(S2(), b())),
                Some(pending(a(), S1(), Some(5))),
                Some(VersionRecord {
                    origin: 9,
                    ..rec("f", c(), 7)
                }),
            ),
            vec!["put f base7".into()],
        ),
        (
            "new local file, committed by this node before it was recorded, then edited",
            World::one(
                Some(on_disk(S1(), b())),
                None,
                Some(VersionRecord {
                    origin: 9,
                    ..rec("f", a(), 7)
                }),
            ),
            vec!["put f base7".into()],
        ),
        (
            "local edit vs remote delete: edit wins",
            World::one(
                Some(on_disk(S2(), b())),
                Some(at(a(), S1(), 5)),
                Some(tomb("f", 7)),
            ),
            vec!["put f base7".into()],
        ),
        (
            "new local file",
            World::one(Some(on_disk(S1(), a())), None, None),
            vec!["put f base0".into()],
        ),
        (
            "new local file at a deleted path",
            World::one(Some(on_disk(S1(), a())), None, Some(tomb("f", 4))),
            vec!["put f base4".into()],
        ),
        (
            "new local file equal to committed: adopt",
            World::one(Some(on_disk(S1(), a())), None, Some(rec("f", a(), 7))),
            vec!["record f v7 mtime100".into()],
        ),
        (
            "new local file differing from committed",
            World::one(Some(on_disk(S1(), b())), None, Some(rec("f", a(), 7))),
            vec![
                format!("conflict f -> {CONFLICT}"),
                format!("put {CONFLICT} base0"),
                "write f v7 absent".into(),
            ],
        ),
        (
            "local delete",
            World::one(None, Some(at(a(), S1(), 5)), Some(rec("f", a(), 5))),
            vec!["propose-delete f base5".into()],
        ),
        (
            "local delete vs remote update: delete loses",
            World::one(None, Some(at(a(), S1(), 5)), Some(rec("f", c(), 7))),
            vec!["write f v7 absent".into()],
        ),
        (
            "local delete on a lagging view",
            World::one(None, Some(at(a(), S1(), 5)), Some(rec("f", c(), 3))),
            vec!["skip f Lagging".into()],
        ),
        (
            "deleted on both sides",
            World::one(None, Some(at(a(), S1(), 5)), Some(tomb("f", 7))),
            vec!["forget f".into()],
        ),
        (
            "remote new file",
            World::one(None, None, Some(rec("f", b(), 7))),
            vec!["fetch f 1".into(), "write f v7 absent".into()],
        ),
        (
            "tombstone of a path never seen",
            World::one(None, None, Some(tomb("f", 7))),
            vec![],
        ),
        (
            "still being written",
            World::one(
                Some(unstable.clone()),
                Some(at(a(), S1(), 5)),
                Some(rec("f", b(), 7)),
            ),
            vec!["skip f RetryLater".into()],
        ),
        (
            "pending proposal retried",
            World::one(
                Some(on_disk(S1(), b())),
                Some(pending(b(), S1(), Some(5))),
                Some(rec("f", a(), 5)),
            ),
            vec!["put f base5".into()],
        ),
        (
            "pending proposal committed",
            World::one(
                Some(on_disk(S1(), b())),
                Some(pending(b(), S1(), Some(5))),
                Some(rec("f", b(), 7)),
            ),
            vec!["record f v7 mtime100".into()],
        ),
        (
            "pending proposal overtaken",
            World::one(
                Some(on_disk(S1(), b())),
                Some(pending(b(), S1(), Some(5))),
                Some(rec("f", c(), 7)),
            ),
            vec![
                format!("conflict f -> {CONFLICT}"),
                format!("put {CONFLICT} base0"),
                "write f v7 absent".into(),
            ],
        ),
        (
            "pending proposal, file removed",
            World::one(
                None,
                Some(pending(b(), S1(), Some(5))),
                Some(rec("f", a(), 5)),
            ),
            vec!["propose-delete f base5".into()],
        ),
        (
            "remote symlink",
            World::one(None, None, Some(rec("f", sym.clone(), 7))),
            vec!["symlink f".into()],
        ),
        (
            "remote symlink with an invalid target",
            World::one(None, None, Some(rec("f", Meta::symlink(""), 7))),
            vec!["skip f Invalid".into()],
        ),
        (
            "local dir mode vs remote dir mode: remote applies",
            World::one(
                Some(on_disk(dir_st(3, 0o755), Meta::dir(0o755))),
                None,
                Some(rec("f", Meta::dir(0o700), 7)),
            ),
            vec!["mkdir f 700 mtime1".into()],
        ),
        (
            "local dir mode change",
            World::one(
                Some(on_disk(dir_st(3, 0o700), Meta::dir(0o700))),
                Some(at(Meta::dir(0o755), dir_st(3, 0o755), 5)),
                Some(rec("f", Meta::dir(0o755), 5)),
            ),
            vec!["put f base5".into()],
        ),
        (
            "file replaced by a dir remotely",
            World::one(
                Some(on_disk(S1(), a())),
                Some(at(a(), S1(), 5)),
                Some(rec("f", Meta::dir(0o755), 7)),
            ),
            vec!["mkdir f 755 mtime100".into()],
        ),
    ];
    for (name, w, want) in cases {
        assert_eq!(summary(&w.plan()), want, "case: {name}");
        assert_eq!(w.plan().verdict, Verdict::Proceed, "case: {name}");
    }
}

#[test]
fn ignored_unsyncable_and_unscanned_paths() {
    let mut w = World::one(
        Some(on_disk(S2(), b())),
        Some(at(a(), S1(), 5)),
        Some(rec("f", c(), 7)),
    );
    w.ignored.insert("f".into());
    assert_eq!(summary(&w.plan()), Vec::<String>::new(), "ignored: nothing");

    let w = World::one(None, None, Some(rec(".filesyncd-x", a(), 7)));
    let mut w2 = World::default();
    w2.committed
        .insert(".filesyncd-x".into(), w.committed["f"].clone());
    assert_eq!(summary(&w2.plan()), vec!["skip .filesyncd-x Invalid"]);

    // Outside the scan's scope the disk is assumed to be what was recorded.
    let mut w = World::one(None, Some(at(a(), S1(), 5)), Some(rec("f", c(), 7)));
    w.put("g", None, None, Some(rec("g", c(), 8)));
    w.scope = Some(Scope::Paths(vec!["other".into()]));
    assert_eq!(
        summary(&w.plan()),
        vec!["write f v7 mtime100", "write g v8 absent"]
    );
    w.scope = Some(Scope::Paths(vec!["f".into()]));
    assert_eq!(
        summary(&w.plan()),
        vec!["write f v7 absent", "write g v8 absent"]
    );
    // Under an unreadable directory nothing was looked at either.
    w.scope = None;
    w.unreadable = vec!["f".into()];
    assert_eq!(
        summary(&w.plan()),
        vec!["write f v7 mtime100", "write g v8 absent"]
    );
}

mod join {
    use super::outer_join;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        /// The ordered outer join equals lookups in both maps over the
        /// union of their keys.
        #[test]
        fn outer_join_is_the_union_with_both_values(
            a in proptest::collection::btree_map("[a-c/.]{0,4}", any::<u8>(), 0..20),
            b in proptest::collection::btree_map("[a-c/.]{0,4}", any::<u8>(), 0..20),
        ) {
            let got: Vec<(String, Option<u8>, Option<u8>)> = outer_join(
                a.iter().map(|(k, v)| (k.as_str(), *v)),
                b.iter().map(|(k, v)| (k.as_str(), *v)),
            )
            .map(|(k, x, y)| (k.to_owned(), x, y))
            .collect();
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            let want: Vec<(String, Option<u8>, Option<u8>)> = keys
                .into_iter()
                .map(|k| (k.clone(), a.get(k).copied(), b.get(k).copied()))
                .collect();
            prop_assert_eq!(got, want);
        }
    }
}

#[test]
fn files_over_the_max_size_are_held_back_never_deleted_or_fetched() {
    // A max of 10 bytes: a(), b(), c() (10 bytes) are in bounds.
    let cfg = PlanConfig {
        max_file_size: 10,
        ..PlanConfig::new("c1", 9)
    };
    let big_st = Stat { size: 11, ..S2() };
    // The scanner never reads a file over the max: no content (`meta`).
    let big_on_disk = DiskEntry {
        stat: big_st,
        meta: None,
    };
    let big = Meta::file(h(1), 11, 0o644);
    let held_here = "skip f TooLarge { size: 11, local: true }".to_string();
    let not_fetched = "skip f TooLarge { size: 11, local: false }".to_string();
    let cases: Vec<(&str, World, Vec<String>)> = vec![
        (
            "a new file over the max: held back, not proposed",
            World::one(Some(big_on_disk.clone()), None, None),
            vec![held_here.clone()],
        ),
        (
            "a synced file grown over the max: held back, the committed version stays",
            World::one(
                Some(big_on_disk.clone()),
                Some(at(a(), S1(), 5)),
                Some(rec("f", a(), 5)),
            ),
            vec![held_here.clone()],
        ),
        (
            "grown over the max while a newer version was committed: neither written nor proposed",
            World::one(
                Some(big_on_disk.clone()),
                Some(at(a(), S1(), 5)),
                Some(rec("f", b(), 7)),
            ),
            vec![held_here.clone()],
        ),
        (
            "a committed version over the max is not fetched",
            World::one(None, None, Some(rec("f", big.clone(), 7))),
            vec![not_fetched.clone()],
        ),
        (
            "a committed version over the max does not replace the file here",
            World::one(
                Some(on_disk(S1(), a())),
                Some(at(a(), S1(), 5)),
                Some(rec("f", big.clone(), 7)),
            ),
            vec![not_fetched.clone()],
        ),
        (
            "a file at the max exactly syncs",
            World::one(None, None, Some(rec("f", b(), 7))),
            vec!["fetch f 1".into(), "write f v7 absent".into()],
        ),
    ];
    for (name, w, want) in cases {
        assert_eq!(summary(&w.plan_with(&cfg)), want, "{name}");
    }
    // With the default max, an unread file is unstable (retried), as before.
    let w = World::one(Some(big_on_disk), None, None);
    assert_eq!(summary(&w.plan()), vec!["skip f RetryLater".to_string()]);
}

#[test]
fn with_safe_links_links_out_of_the_root_are_neither_proposed_nor_made() {
    let cfg = PlanConfig {
        safe_links: true,
        ..PlanConfig::new("c1", 9)
    };
    let link_st = Stat {
        kind: FileKind::Symlink,
        ..S1()
    };
    let out = Meta::symlink("/etc/passwd");
    let up = Meta::symlink("../outside");
    let inside = Meta::symlink("sibling");
    let skip = "skip f UnsafeLink".to_string();
    let cases: Vec<(&str, World, Vec<String>)> = vec![
        (
            "an absolute link made here is not proposed",
            World::one(Some(on_disk(link_st, out.clone())), None, None),
            vec![skip.clone()],
        ),
        (
            "a link climbing out of the root made here is not proposed",
            World::one(Some(on_disk(link_st, up.clone())), None, None),
            vec![skip.clone()],
        ),
        (
            "a link replacing a synced file is not proposed, the file is not rewritten",
            World::one(
                Some(on_disk(link_st, out.clone())),
                Some(at(a(), S1(), 5)),
                Some(rec("f", a(), 5)),
            ),
            vec![skip.clone()],
        ),
        (
            "a committed absolute link is not made here",
            World::one(None, None, Some(rec("f", out.clone(), 7))),
            vec![skip.clone()],
        ),
        (
            "a committed absolute link does not replace the file here",
            World::one(
                Some(on_disk(S1(), a())),
                Some(at(a(), S1(), 5)),
                Some(rec("f", out.clone(), 7)),
            ),
            vec![skip.clone()],
        ),
        (
            "a link inside the root syncs",
            World::one(Some(on_disk(link_st, inside.clone())), None, None),
            vec!["put f base0".into()],
        ),
    ];
    for (name, w, want) in cases {
        assert_eq!(summary(&w.plan_with(&cfg)), want, "{name}");
    }
    // Without the option, links are synced whatever their target.
    let w = World::one(None, None, Some(rec("f", out, 7)));
    assert_eq!(summary(&w.plan()), vec!["symlink f".to_string()]);
    let w = World::one(Some(on_disk(link_st, up)), None, None);
    assert_eq!(summary(&w.plan()), vec!["put f base0".to_string()]);
}
