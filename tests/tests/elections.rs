//! Elections between real `filesyncd` processes on loopback: a follower
//! that restarts never unseats a healthy leader (pre-vote, issue 17), and a
//! node that hears no leader does not claim to be in sync.

use std::time::Duration;

use filesyncd_systests::tree::{in_sync, status_json};
use filesyncd_systests::{serial, wait_for, Cluster, DEADLINE};

/// Longer than the leader lease plus the longest election timeout (2 s +
/// 2 s): without pre-vote, time for a node that hears no leader to campaign.
const QUIET: Duration = Duration::from_secs(6);

#[test]
fn restarting_each_follower_changes_neither_the_leader_nor_the_term() {
    let _g = serial();
    let mut c = Cluster::start(3).unwrap();
    let st = c.wait_converged(3, 3).unwrap();
    let (leader, term) = (st.leader.clone().unwrap(), st.term);
    let followers: Vec<usize> = (0..3)
        .filter(|i| c.node(*i).status().unwrap().node_id != leader)
        .collect();
    assert_eq!(followers.len(), 2);
    for i in followers {
        // Killed, down for a while, back: it has heard no leader since it
        // started, and must not campaign before the leader reaches it.
        c.node_mut(i).kill9();
        std::thread::sleep(QUIET);
        c.node_mut(i).start().unwrap();
        c.node_mut(i).wait_healthy().unwrap();
        std::thread::sleep(QUIET);
        let st = c.wait_converged(3, 3).unwrap();
        assert_eq!(
            st.leader.as_deref(),
            Some(leader.as_str()),
            "the leader changed"
        );
        assert_eq!(st.term, term, "the term moved");
    }
}

#[test]
fn a_node_that_hears_no_leader_is_not_in_sync_and_does_not_campaign() {
    let _g = serial();
    let mut c = Cluster::start(3).unwrap();
    let st = c.wait_converged(3, 3).unwrap();
    let (leader, term) = (st.leader.clone().unwrap(), st.term);
    let ids: Vec<String> = (0..3)
        .map(|i| c.node(i).status().unwrap().node_id)
        .collect();
    let lone = ids.iter().position(|id| *id != leader).unwrap();
    wait_for("node in sync", DEADLINE, || {
        Ok(status_json(c.node(lone))
            .is_some_and(|v| in_sync(&v))
            .then_some(()))
    })
    .unwrap();
    // The leader and the other follower die: the lone node reaches no
    // quorum.
    for i in (0..3).filter(|i| *i != lone) {
        c.node_mut(i).kill9();
    }
    wait_for(
        "the lone node to know no leader and say so",
        DEADLINE,
        || {
            let Some(v) = status_json(c.node(lone)) else {
                return Ok(None);
            };
            Ok((v.get("leader").is_some_and(|l| l.is_null()) && !in_sync(&v)).then_some(()))
        },
    )
    .unwrap();
    let text = c.node(lone).cli(&["status"]);
    assert!(text.stdout.contains("no leader known"), "{}", text.stdout);
    std::thread::sleep(QUIET);
    // Pre-vote: nobody granted it, so it never raised its term.
    assert_eq!(c.node(lone).status().unwrap().term, term);
    // The others come back: one leader again, everyone in sync.
    for i in (0..3).filter(|i| *i != lone) {
        c.node_mut(i).start().unwrap();
    }
    c.wait_converged(3, 3).unwrap();
    wait_for("every node in sync", DEADLINE, || {
        Ok((0..3)
            .all(|i| status_json(c.node(i)).is_some_and(|v| in_sync(&v)))
            .then_some(()))
    })
    .unwrap();
}

/// The address `n`'s member record holds, as node `via` lists it.
fn recorded_addr(c: &Cluster, via: usize, n: usize) -> Option<String> {
    let id = c.node(n).status().ok()?.node_id;
    c.node(via)
        .members()
        .ok()?
        .into_iter()
        .find(|m| m.id == id)
        .map(|m| m.addr)
}

#[test]
fn a_member_that_moves_records_its_advertised_address_and_is_found_again() {
    let _g = serial();
    let mut c = Cluster::start(3).unwrap();
    c.wait_converged(3, 3).unwrap();
    let before = recorded_addr(&c, 0, 2).unwrap();
    // Node 2 comes back on another port and says so with --advertise.
    {
        let n = c.node_mut(2);
        n.stop().unwrap();
        n.move_p2p_port().unwrap();
        let mut args = n.args().to_vec();
        args.extend(["--advertise".to_string(), n.p2p_addr()]);
        n.set_args(args);
        n.start().unwrap();
        n.wait_healthy().unwrap();
    }
    let port = c.node(2).p2p_addr().rsplit(':').next().unwrap().to_string();
    let want = format!(
        "/ip4/{}/udp/{port}/quic-v1",
        c.node(2).p2p_addr().split(':').next().unwrap()
    );
    assert_ne!(before, want);
    for via in 0..3 {
        wait_for(
            &format!("node {via} to record node 2's new address"),
            DEADLINE,
            || Ok((recorded_addr(&c, via, 2).as_deref() == Some(want.as_str())).then_some(())),
        )
        .unwrap();
    }
    // Found again: files flow both ways, and it is reachable.
    std::fs::write(c.node(0).dir().join("to-2.txt"), b"hello 2").unwrap();
    std::fs::write(c.node(2).dir().join("from-2.txt"), b"hello 0").unwrap();
    wait_for("files both ways", DEADLINE, || {
        Ok(
            (std::fs::read(c.node(2).dir().join("to-2.txt")).is_ok_and(|d| d == b"hello 2")
                && std::fs::read(c.node(0).dir().join("from-2.txt"))
                    .is_ok_and(|d| d == b"hello 0"))
            .then_some(()),
        )
    })
    .unwrap();
    c.wait_converged(3, 3).unwrap();
}
