//! Joining with tokens, refusals, removal, voter cap, admin calls on voters only: real processes.

use filesyncd_systests::{
    random_bytes, serial, unused_p2p_addr, wait_for, Cluster, Node, DEADLINE,
};

fn voters(members: &[filesyncd_systests::Member]) -> usize {
    members.iter().filter(|m| m.role == "voter").count()
}

fn member_ids(n: &Node) -> Vec<String> {
    let mut ids: Vec<String> = n.members().unwrap().into_iter().map(|m| m.id).collect();
    ids.sort();
    ids
}

#[test]
fn three_nodes_form_a_cluster_with_tokens_and_survive_kill9() {
    let _g = serial();
    let mut c = Cluster::start(3).unwrap();
    let s = c.wait_converged(3, 3).unwrap();
    let cluster_id = s.cluster_id.clone().expect("cluster id");
    for i in 0..3 {
        let st = c.node(i).status().unwrap();
        assert_eq!(st.cluster_id.as_deref(), Some(cluster_id.as_str()));
        assert_eq!(st.members.len(), 3);
        assert_eq!(voters(&st.members), 3);
    }
    // A killed follower comes back with its state (no --join needed: it
    // ignores the one on its command line) and the cluster is whole again.
    let leader = s.leader.clone().unwrap();
    let follower = (0..3)
        .find(|i| c.node(*i).status().unwrap().node_id != leader)
        .unwrap();
    c.node_mut(follower).kill9();
    c.node_mut(follower).restart().unwrap();
    c.wait_converged(3, 3).unwrap();
    if follower > 0 {
        assert!(
            c.node(follower).log().contains("--join ignored"),
            "a restarted joiner resumes from its state"
        );
    }
}

/// Starts a node that must fail to join; returns (exit code, its log).
fn failed_join(c: &mut Cluster, addr: &str, token: &str) -> (Option<i32>, String) {
    let i = c.spawn(Some((addr, token))).unwrap();
    let st = c.node_mut(i).wait_exit().unwrap();
    (st.code(), c.node(i).log())
}

#[test]
fn bad_expired_and_reused_tokens_are_refused_and_change_nothing() {
    let _g = serial();
    let mut c = Cluster::start(2).unwrap();
    c.wait_converged(2, 2).unwrap();
    let before = member_ids(c.node(0));
    let addr = c.node(0).p2p_addr();

    // Unknown id; then a known id with a wrong secret: same answer.
    let (code, log) = failed_join(&mut c, &addr, "abcdef.0123456789abcdef");
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("not valid for this cluster"), "{log}");
    let good = c.node(0).create_token("1h").unwrap();
    let forged = format!("{}.0000000000000000", &good[..6]);
    let (code, log) = failed_join(&mut c, &addr, &forged);
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("not valid for this cluster"), "{log}");

    // Expired: a 1 s token, used once the leader's clock (this machine's)
    // has passed its expiry.
    let short = c.node(0).create_token("1s").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let (code, log) = failed_join(&mut c, &addr, &short);
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("expired"), "{log}");

    // Reused: node 1 joined with a token when the cluster formed; a fresh
    // token works once, then is refused.
    let once = c.node(0).create_token("1h").unwrap();
    let ok = c.spawn(Some((&addr, &once))).unwrap();
    c.node_mut(ok).wait_healthy().unwrap();
    let (code, log) = failed_join(&mut c, &addr, &once);
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("already used"), "{log}");

    // The refused nodes are no members; only the one good join added one.
    let after = member_ids(c.node(0));
    assert_eq!(after.len(), before.len() + 1, "{after:?}");
    assert!(before.iter().all(|id| after.contains(id)));
    // The unused good token still works (refusals spent nothing).
    let i = c.spawn(Some((&addr, &good))).unwrap();
    c.node_mut(i).wait_healthy().unwrap();
}

#[test]
fn join_to_an_unreachable_address_fails_with_a_clear_error() {
    let _g = serial();
    let mut c = Cluster::builder().join_timeout_secs(3).empty().unwrap();
    let nowhere = unused_p2p_addr().unwrap();
    let (code, log) = failed_join(&mut c, &nowhere, "abcdef.0123456789abcdef");
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains(&format!("could not join through {nowhere} within 3s")),
        "{log}"
    );
}

#[test]
fn a_removed_node_is_gone_and_cannot_come_back() {
    let _g = serial();
    let mut c = Cluster::start(3).unwrap();
    let s = c.wait_converged(3, 3).unwrap();
    // Remove a follower, through another node's API, by node id.
    let leader = s.leader.clone().unwrap();
    let victim = (0..3)
        .find(|i| c.node(*i).status().unwrap().node_id != leader)
        .unwrap();
    let via = (0..3).find(|i| *i != victim).unwrap();
    let victim_id = c.node(victim).status().unwrap().node_id;
    let victim_peer = c.node(victim).status().unwrap().peer_id;
    let r = c.node(via).cli_json(&["remove", &victim_id]).unwrap();
    assert_eq!(r["id"], victim_id.as_str());
    for i in (0..3).filter(|i| *i != victim) {
        let n = c.node(i);
        wait_for("2 members", DEADLINE, || {
            let m = n.members()?;
            Ok((m.len() == 2 && voters(&m) == 2).then_some(()))
        })
        .unwrap();
        assert!(!member_ids(n).contains(&victim_id));
    }
    // Removing it again: it is no member any more.
    let again = c.node(via).cli(&["remove", &victim_id]);
    assert_eq!(again.code, Some(1));
    assert!(again.stderr.contains("no member"), "{}", again.stderr);

    // It cannot come back under its identity, even with a valid token:
    // the members refuse its connections. (Its key stays; its Raft state
    // and node id go, as for a node that would rejoin.)
    c.node_mut(victim).kill9();
    let data = c.node(victim).data();
    std::fs::remove_dir_all(data.join("raft")).unwrap();
    std::fs::remove_file(data.join("node_id")).unwrap();
    let token = c.node(via).create_token("1h").unwrap();
    let addr = c.node(via).p2p_addr();
    let n = c.node_mut(victim);
    n.set_args(vec![
        "--join".into(),
        addr,
        "--token".into(),
        token.clone(),
        "--join-timeout".into(),
        "5".into(),
    ]);
    n.start().unwrap();
    let st = n.wait_exit().unwrap();
    assert_ne!(st.code(), Some(0), "{}", n.log());
    let survivors: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    for i in &survivors {
        assert_eq!(c.node(*i).members().unwrap().len(), 2);
        assert!(c
            .node(*i)
            .members()
            .unwrap()
            .iter()
            .all(|m| m.peer_id != victim_peer));
    }
    // The token was not spent by the refused attempt: a new node uses it.
    let via_addr = c.node(via).p2p_addr();
    let i = c.spawn(Some((&via_addr, &token))).unwrap();
    c.node_mut(i).wait_healthy().unwrap();
    for j in survivors {
        let n = c.node(j);
        wait_for("3 members", DEADLINE, || {
            Ok((n.members()?.len() == 3).then_some(()))
        })
        .unwrap();
    }
}

#[test]
fn a_join_through_a_follower_follows_its_proven_redirect_to_the_leader() {
    let _g = serial();
    let mut c = Cluster::start(2).unwrap();
    let s = c.wait_converged(2, 2).unwrap();
    let leader = s.leader.clone().unwrap();
    let follower = (0..2)
        .find(|i| c.node(*i).status().unwrap().node_id != leader)
        .unwrap();
    let token = c.node(follower).create_token("5m").unwrap();
    let addr = c.node(follower).p2p_addr();
    let i = c.spawn(Some((&addr, &token))).unwrap();
    c.node_mut(i).wait_healthy().unwrap();
    c.wait_converged(3, 3).unwrap();
    let log = c.node(i).log();
    assert!(log.contains("not the leader: trying the leader"), "{log}");
}

#[test]
fn a_fourth_node_becomes_a_voter_unless_max_voters_is_reached() {
    let _g = serial();
    // Default cap (5): the 4th node ends up a voter.
    let mut c = Cluster::start(3).unwrap();
    c.wait_converged(3, 3).unwrap();
    c.add_node().unwrap();
    c.wait_converged(4, 4).unwrap();
    drop(c);

    // Cap 3: the 4th node stays a learner, even once it is caught up and
    // the cluster has committed more since.
    let mut c = Cluster::builder().max_voters(3).start(3).unwrap();
    c.wait_converged(3, 3).unwrap();
    let i = c.add_node().unwrap();
    let s = c.wait_converged(4, 3).unwrap();
    let id = c.node(i).status().unwrap().node_id;
    let role =
        |m: &[filesyncd_systests::Member]| m.iter().find(|m| m.id == id).map(|m| m.role.clone());
    assert_eq!(role(&s.members).as_deref(), Some("learner"));
    // A later entry (a token) applied on the learner: the leader has seen it
    // caught up and still did not promote it.
    c.node(0).create_token("1m").unwrap();
    let target = c.node(0).status().unwrap().applied_index.unwrap();
    let n = c.node(i);
    wait_for("the learner to apply the latest entry", DEADLINE, || {
        Ok((n.status()?.applied_index >= Some(target)).then_some(()))
    })
    .unwrap();
    let m = c.node(0).members().unwrap();
    assert_eq!(role(&m).as_deref(), Some("learner"));
    assert_eq!(voters(&m), 3);
    // A learner's API serves no admin call: no token, no removal.
    let t = c.node(i).cli(&["token", "create"]);
    assert_eq!(t.code, Some(1), "{}", t.stdout);
    assert!(
        t.stderr.contains("403") && t.stderr.contains("not a voter"),
        "{}",
        t.stderr
    );
    let r = c
        .node(i)
        .cli(&["remove", &c.node(1).status().unwrap().node_id]);
    assert_eq!(r.code, Some(1), "{}", r.stdout);
    assert!(r.stderr.contains("not a voter"), "{}", r.stderr);
    assert_eq!(voters(&c.node(0).members().unwrap()), 3);
}

/// Offers in flight while a member is removed. A slow follower (paused)
/// leaves the victim as the only other node acking the leader's offers;
/// the removal of the victim then waits for the slow one (the new voter
/// set must agree), and the writes made meanwhile are proposed with the
/// victim as their holder. None of them may commit held by the leader and
/// the removed node alone: each must name the slow follower too (the apply
/// refuses the others, the origin offers them again), and every file
/// reaches the survivors whole.
#[test]
fn a_member_removed_while_offers_wait_leaves_no_version_held_by_a_minority() {
    use std::time::Duration;
    let _g = serial();
    let mut c = Cluster::start(3).unwrap();
    let s = c.wait_converged(3, 3).unwrap();
    let leader_id = s.leader.clone().unwrap();
    let ids: Vec<String> = (0..3)
        .map(|i| c.node(i).status().unwrap().node_id)
        .collect();
    let l = ids.iter().position(|id| *id == leader_id).unwrap();
    let slow = (0..3).find(|i| *i != l).unwrap();
    let victim = (0..3).find(|i| *i != l && *i != slow).unwrap();
    let dir = c.node(l).dir();
    let write = |k: usize| {
        std::fs::write(
            dir.join(format!("f{k:02}")),
            random_bytes(200_000 + k, k as u64 + 7),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(200));
    };
    c.node(slow).signal("STOP").unwrap();
    let during = 5..15;
    std::thread::scope(|sc| {
        (0..during.start).for_each(write);
        let removal = sc.spawn(|| c.node(l).cli_json(&["remove", &ids[victim]]));
        // The removal is pending (its joint configuration needs the slow
        // follower) before these are written.
        std::thread::sleep(Duration::from_millis(700));
        during.clone().for_each(write);
        c.node(slow).signal("CONT").unwrap();
        (during.end..20).for_each(write);
        let r = removal.join().unwrap().unwrap();
        assert_eq!(r["id"], ids[victim].as_str());
    });
    let survivors = [l, slow];
    for i in survivors {
        let n = c.node(i);
        wait_for("2 voters", DEADLINE, || {
            let m = n.members()?;
            Ok((m.len() == 2 && voters(&m) == 2).then_some(()))
        })
        .unwrap();
    }
    for k in 0..20 {
        let name = format!("f{k:02}");
        let want = random_bytes(200_000 + k, k as u64 + 7);
        wait_for(&format!("{name} on the slow follower"), DEADLINE, || {
            Ok(
                (std::fs::read(c.node(slow).dir().join(&name)).ok() == Some(want.clone()))
                    .then_some(()),
            )
        })
        .unwrap();
        if !during.contains(&k) {
            continue;
        }
        let h = c.node(slow).cli_json(&["history", &name]).unwrap();
        let versions = h["versions"].as_array().unwrap();
        assert_eq!(versions.len(), 1, "{name}: {h}");
        let holders: Vec<&str> = versions[0]["holders"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        for must in survivors {
            assert!(
                holders.contains(&ids[must].as_str()),
                "{name}, written while the removal was pending, is held by {holders:?}: \
                 not a majority of the voters left {:?}",
                survivors.map(|i| &ids[i])
            );
        }
    }
}

/// Restarts node `i` with `--join addr --token token --join-timeout 5`
/// (after `prepare` edits its data dir); returns its exit code and log.
fn rejoin_as(
    c: &mut Cluster,
    i: usize,
    addr: &str,
    token: &str,
    prepare: impl FnOnce(&std::path::Path),
) -> (Option<i32>, String) {
    let n = c.node_mut(i);
    n.kill9();
    prepare(&n.data());
    n.set_args(vec![
        "--join".into(),
        addr.into(),
        "--token".into(),
        token.into(),
        "--join-timeout".into(),
        "5".into(),
    ]);
    n.start().unwrap();
    let st = n
        .wait_exit()
        .unwrap_or_else(|e| panic!("{e}; its log:\n{}", n.log()));
    (st.code(), n.log())
}

#[test]
fn removal_is_recorded_in_raft_revokes_tokens_and_holds_across_restarts() {
    let _g = serial();
    let mut c = Cluster::start(3).unwrap();
    let s = c.wait_converged(3, 3).unwrap();
    let leader = s.leader.clone().unwrap();
    let victim = (0..3)
        .find(|i| c.node(*i).status().unwrap().node_id != leader)
        .unwrap();
    let via = (0..3).find(|i| *i != victim).unwrap();
    let victim_id = c.node(victim).status().unwrap().node_id;
    // A token outstanding when the member is removed: the removed node had
    // its hash in its copy of the state.
    let outstanding = c.node(via).create_token("1h").unwrap();
    c.node(via).cli_json(&["remove", &victim_id]).unwrap();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    for i in &survivors {
        let n = c.node(*i);
        wait_for("2 members", DEADLINE, || {
            Ok((n.members()?.len() == 2).then_some(()))
        })
        .unwrap();
    }
    // Every member restarts: nothing of the refusal may live only in memory.
    c.node_mut(victim).kill9();
    for i in &survivors {
        c.node_mut(*i).restart().unwrap();
    }
    c.wait_converged(2, 2).unwrap();
    let addr = c.node(via).p2p_addr();

    // 1. Its node id with a fresh PeerId (new key, no Raft state).
    let victim_key = c.root().join("removed-node.key");
    std::fs::copy(c.node(victim).data().join("node.key"), &victim_key).unwrap();
    let token = c.node(via).create_token("1h").unwrap();
    let (code, log) = rejoin_as(&mut c, victim, &addr, &token, |data| {
        std::fs::remove_dir_all(data.join("raft")).unwrap();
        std::fs::remove_file(data.join("node.key")).unwrap();
    });
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains(&format!("node id {victim_id} was removed")),
        "{log}"
    );
    // 2. Its old PeerId under a fresh node id: refused at the connection.
    let i = c.spawn(None).unwrap();
    c.node_mut(i).wait_healthy().unwrap();
    let (code, log) = rejoin_as(&mut c, i, &addr, &token, |data| {
        // Keep this node's own fresh id; take the removed node's key.
        std::fs::remove_dir_all(data.join("raft")).unwrap();
        std::fs::copy(&victim_key, data.join("node.key")).unwrap();
    });
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("could not join"), "{log}");
    // 3. The token outstanding at the removal admits nobody.
    let (code, log) = failed_join(&mut c, &addr, &outstanding);
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("revoked"), "{log}");
    // None of them got in; the unspent token still admits a new machine.
    for i in &survivors {
        assert_eq!(c.node(*i).members().unwrap().len(), 2);
    }
    let i = c.spawn(Some((&addr, &token))).unwrap();
    c.node_mut(i).wait_healthy().unwrap();
    c.wait_converged(3, 3).unwrap();
}

/// `token create` on node `i`: (token, cluster fingerprint from stderr).
fn token_and_fingerprint(n: &Node) -> (String, String) {
    let out = n.cli(&["token", "create", "--ttl", "1h"]);
    assert!(out.ok(), "{}", out.stderr);
    let fp = out
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("cluster fingerprint: "))
        .unwrap_or_else(|| panic!("no fingerprint in {:?}", out.stderr))
        .trim()
        .to_string();
    assert!(fp.starts_with("blake3:"), "{fp}");
    (out.stdout.trim().to_string(), fp)
}

#[test]
fn a_pinned_join_refuses_a_cluster_that_is_not_the_pinned_one() {
    let _g = serial();
    // Two clusters of one node: the one the user means (x) and another
    // that answers at the address the joiner was given (y), with a token it
    // made (as one who knows the token would).
    let mut c = Cluster::start(1).unwrap();
    let y = c.spawn(None).unwrap();
    c.node_mut(y).wait_healthy().unwrap();
    let (tx, fx) = token_and_fingerprint(c.node(0));
    let (ty, fy) = token_and_fingerprint(c.node(y));
    assert_ne!(fx, fy, "two clusters, two keys");
    let (tx2, fx2) = token_and_fingerprint(c.node(0));
    assert_eq!(fx, fx2, "one cluster, one key");
    let shown = c.node(0).status().unwrap().cluster_fingerprint;
    assert_eq!(shown.as_deref(), Some(fx.as_str()), "status shows the pin");
    let y_before = c.node(y).members().unwrap().len();

    // The joiner holds a file that must not reach y.
    let j = c.spawn(None).unwrap();
    c.node_mut(j).kill9();
    std::fs::write(c.node(j).dir().join("secret.txt"), b"for x only").unwrap();
    let y_addr = c.node(y).p2p_addr();
    let n = c.node_mut(j);
    std::fs::remove_dir_all(n.data()).unwrap();
    std::fs::create_dir_all(n.data()).unwrap();
    n.set_args(vec![
        "--join".into(),
        y_addr,
        "--token".into(),
        ty,
        "--cluster-fingerprint".into(),
        fx.clone(),
        "--join-timeout".into(),
        "10".into(),
    ]);
    n.start().unwrap();
    let st = n.wait_exit().unwrap();
    let log = n.log();
    assert_eq!(st.code(), Some(2), "{log}");
    assert!(log.contains("not the pinned"), "{log}");
    assert!(!c.node(y).dir().join("secret.txt").exists());
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(!c.node(y).dir().join("secret.txt").exists());
    // y may list the learner it admitted; it never got a byte of the file.
    assert!(c.node(y).members().unwrap().len() <= y_before + 1);

    // A malformed pin is refused at start; the right pin joins x.
    let x_addr = c.node(0).p2p_addr();
    let n = c.node_mut(j);
    std::fs::remove_dir_all(n.data()).unwrap();
    std::fs::create_dir_all(n.data()).unwrap();
    n.set_args(vec![
        "--join".into(),
        x_addr.clone(),
        "--token".into(),
        tx,
        "--cluster-fingerprint".into(),
        "blake3:1234".into(),
    ]);
    n.start().unwrap();
    assert_eq!(n.wait_exit().unwrap().code(), Some(2), "{}", n.log());
    n.set_args(vec![
        "--join".into(),
        x_addr,
        "--token".into(),
        tx2,
        "--cluster-fingerprint".into(),
        fx,
    ]);
    n.start().unwrap();
    n.wait_healthy().unwrap();
    assert!(n.log().contains("pinned=true"), "{}", n.log());
    let x = c.node(0);
    wait_for("secret.txt on x", DEADLINE, || {
        Ok(x.dir().join("secret.txt").exists().then_some(()))
    })
    .unwrap();
}
