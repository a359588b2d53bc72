//! This node's member address: the one address other members dial it on,
//! kept true while the node runs.
//!
//! The record lives in the Raft membership (`NodeInfo.addr`). It is first
//! written by the founder's `initialize` or by the member that admits a
//! joiner; after that only this node changes it, through a membership entry
//! that replaces its own node info (`SetNodes`, same id and PeerId).
//!
//! What it should name, in this order (see [`desired_addr`]):
//! 1. `--advertise`, when given: the operator knows best.
//! 2. A listen address that members observe this node at (identify): they
//!    reached it there, so it is routable from them (this replaces a
//!    founder's loopback record in a container, and follows a new DHCP
//!    lease: the old address leaves the listen addresses, the new one is
//!    observed on the first new connection).
//! 3. Behind NAT (AutoNAT: private), a relay circuit this node listens on,
//!    so members on other networks dial it through a member relay.
//! 4. The address AutoNAT confirmed when it is not a listen address (a
//!    port the router forwards, or maps by UPnP).
//! 5. Otherwise a non-loopback listen address, loopback only when there is
//!    nothing else (never unspecified).
//!
//! A change is written only after two checks in a row want the same value,
//! so a moment of mixed observations does not flap the record.

use std::net::IpAddr;
use std::time::Duration;

use filesyncd_p2p::{Multiaddr, NatView, P2pClient, Protocol, Reachability};
use filesyncd_raft::NodeInfo;
use tokio::sync::watch;

use super::Node;

/// How often the record is checked against what it should be.
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// Longest wait between failed writes of the record.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Keeps this node's member record naming [`desired_addr`] (or `advertise`)
/// until `stop`. Stops early when the cluster records this node id with
/// another PeerId (not ours to change).
pub async fn keep_member_addr(
    node: Node,
    client: P2pClient,
    peer_id: String,
    advertise: Option<String>,
    configured: Multiaddr,
    mut stop: watch::Receiver<bool>,
) {
    let mut wanted_before: Option<String> = None;
    let mut backoff = CHECK_EVERY;
    loop {
        let mut wait = CHECK_EVERY;
        let recorded = node
            .metrics()
            .membership_config
            .membership()
            .get_node(&node.id())
            .cloned();
        if let Some(info) = recorded {
            if info.peer_id != peer_id {
                tracing::warn!(
                    recorded = info.peer_id,
                    "not keeping the member address: the cluster records this node with another PeerId"
                );
                return;
            }
            let wanted = match &advertise {
                Some(a) => (*a != info.addr).then(|| (a.clone(), "--advertise")),
                None => match (client.listen_addrs().await, client.nat_view().await) {
                    (Ok(listen), Ok(view)) => desired_addr(&info.addr, &listen, &configured, &view),
                    _ => return,
                },
            };
            match wanted {
                None => wanted_before = None,
                Some((addr, why))
                    if advertise.is_some() || wanted_before.as_ref() == Some(&addr) =>
                {
                    let new = NodeInfo {
                        peer_id: peer_id.clone(),
                        addr: addr.clone(),
                    };
                    match node.set_node_info(node.id(), new).await {
                        Ok(log_id) => {
                            tracing::info!(
                                old = info.addr,
                                new = addr,
                                why,
                                index = log_id.index,
                                "member address updated"
                            );
                            backoff = CHECK_EVERY;
                            wanted_before = None;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, addr, "cannot record the member address yet; retrying");
                            wait = backoff;
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                        }
                    }
                }
                Some((addr, _)) => {
                    wanted_before = Some(addr);
                    wait = Duration::from_secs(1);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// What this node's record should name instead of `recorded`, and why;
/// `None` when `recorded` is right. See the module doc for the order.
pub fn desired_addr(
    recorded: &str,
    listen: &[Multiaddr],
    configured: &Multiaddr,
    view: &NatView,
) -> Option<(String, &'static str)> {
    let change = |a: &Multiaddr, why| (a.to_string() != recorded).then(|| (a.to_string(), why));
    let direct: Vec<&Multiaddr> = listen
        .iter()
        .filter(|a| ip_of(a).is_some_and(|ip| !ip.is_unspecified()))
        .collect();
    // 3 before 2: a node members cannot dial back keeps its circuit even
    // when a member on its own LAN sees it at its private address.
    if view.reachability == Reachability::Private && !view.relayed.is_empty() {
        if view.relayed.iter().any(|a| a.to_string() == recorded) {
            return None;
        }
        return change(&view.relayed[0], "behind NAT: through a member relay");
    }
    // A circuit stays while the node is not known to be public (its
    // reservation may be renewing, or AutoNAT re-probing).
    let circuit = recorded.contains("/p2p-circuit");
    let public_seen = match &view.reachability {
        Reachability::Public(a) => view
            .observed
            .iter()
            .any(|(o, _)| without_p2p(o) == without_p2p(a)),
        _ => false,
    };
    if circuit && !public_seen {
        return None;
    }
    let seen: Vec<&Multiaddr> = view
        .observed
        .iter()
        .map(|(a, _)| a)
        .filter(|a| direct.contains(a))
        .collect();
    if let Some(first) = seen.first() {
        if seen.iter().any(|a| a.to_string() == recorded) {
            return None;
        }
        return change(first, "members observe this node there");
    }
    if let Reachability::Public(a) = &view.reachability {
        let a = without_p2p(a);
        // Only while members still observe it there: a confirmation from
        // before a move is stale.
        if public_seen && !direct.contains(&&a) && ip_of(&a).is_some() {
            return change(&a, "AutoNAT: reachable there (a forwarded or mapped port)");
        }
    }
    let is_loopback = |a: &Multiaddr| ip_of(a).is_some_and(|ip| ip.is_loopback());
    let recorded_ok = direct.iter().any(|a| a.to_string() == recorded)
        && (direct.iter().all(|a| is_loopback(a))
            || !recorded.parse().is_ok_and(|a: Multiaddr| is_loopback(&a)));
    if recorded_ok || direct.is_empty() {
        return None;
    }
    let pick = advertised_addr(listen, configured);
    (pick != recorded).then_some((pick, "a listen address of this node"))
}

/// `a` without a trailing `/p2p/PEER`.
fn without_p2p(a: &Multiaddr) -> Multiaddr {
    let mut a = a.clone();
    if matches!(a.iter().last(), Some(Protocol::P2p(_))) {
        a.pop();
    }
    a
}

/// The IP of `/ip4/A/...` or `/ip6/A/...`.
fn ip_of(a: &Multiaddr) -> Option<IpAddr> {
    match a.iter().next()? {
        Protocol::Ip4(ip) => Some(ip.into()),
        Protocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    }
}

/// The address other members should dial: the configured one unless it is
/// unspecified (`0.0.0.0`/`::`), then the first non-loopback address the
/// transport reported (loopback only when there is nothing else).
pub fn advertised_addr(reported: &[Multiaddr], configured: &Multiaddr) -> String {
    if !ip_of(configured).is_some_and(|ip| ip.is_unspecified()) {
        return configured.to_string();
    }
    reported
        .iter()
        .filter(|a| ip_of(a).is_some_and(|ip| !ip.is_unspecified()))
        .find(|a| !ip_of(a).is_some_and(|ip| ip.is_loopback()))
        .or(reported.first())
        .unwrap_or(configured)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ma(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    fn view(r: Reachability, observed: &[&str], relayed: &[&str]) -> NatView {
        NatView {
            reachability: r,
            observed: observed.iter().map(|a| (ma(a), 1)).collect(),
            relayed: relayed.iter().map(|a| ma(a)).collect(),
        }
    }

    const LO: &str = "/ip4/127.0.0.1/udp/7400/quic-v1";
    const LAN: &str = "/ip4/10.0.0.2/udp/7400/quic-v1";
    const LAN2: &str = "/ip4/10.0.0.33/udp/7400/quic-v1";
    const DOCKER: &str = "/ip4/172.17.0.1/udp/7400/quic-v1";
    const ANY: &str = "/ip4/0.0.0.0/udp/7400/quic-v1";
    const CIRCUIT: &str = "/ip4/198.51.100.10/udp/7400/quic-v1/p2p/12D3KooWRBhwfeP2Y7TCx1Q4ZfCDiJbHqmgmuN9Fz6xZ1SemPbTR/p2p-circuit";

    #[test]
    fn advertises_a_reachable_address() {
        let (lo, lan, any) = (ma(LO), ma(LAN), ma(ANY));
        assert_eq!(advertised_addr(&[lo.clone(), lan.clone()], &any), LAN);
        assert_eq!(advertised_addr(std::slice::from_ref(&lo), &any), LO);
        assert_eq!(advertised_addr(&[], &any), ANY);
        assert_eq!(advertised_addr(std::slice::from_ref(&lan), &lo), LO);
    }

    #[test]
    fn a_founders_loopback_record_moves_to_a_routable_address() {
        let listen = [ma(LO), ma(LAN)];
        let none = view(Reachability::Unknown, &[], &[]);
        // No member observed it yet: a non-loopback listen address.
        assert_eq!(
            desired_addr(LO, &listen, &ma(ANY), &none).map(|w| w.0),
            Some(LAN.to_owned())
        );
        assert_eq!(desired_addr(LAN, &listen, &ma(ANY), &none), None);
        // Only loopback to listen on: loopback is right.
        assert_eq!(desired_addr(LO, &[ma(LO)], &ma(LO), &none), None);
    }

    #[test]
    fn what_members_observe_wins_over_a_wrong_interface() {
        let listen = [ma(LO), ma(DOCKER), ma(LAN)];
        let seen = view(Reachability::Unknown, &[LAN], &[]);
        assert_eq!(
            desired_addr(DOCKER, &listen, &ma(ANY), &seen).map(|w| w.0),
            Some(LAN.to_owned())
        );
        assert_eq!(desired_addr(LAN, &listen, &ma(ANY), &seen), None);
        // Members on loopback (a test cluster) keep a loopback record.
        let lo_seen = view(Reachability::Public(ma(LO)), &[LO], &[]);
        assert_eq!(desired_addr(LO, &listen, &ma(ANY), &lo_seen), None);
        // Observations of an address that is not ours (a NAT's) do not count.
        let nat_seen = view(
            Reachability::Unknown,
            &["/ip4/198.51.100.1/udp/7400/quic-v1"],
            &[],
        );
        assert_eq!(desired_addr(LAN, &listen, &ma(ANY), &nat_seen), None);
    }

    #[test]
    fn a_new_lease_is_followed() {
        // 10.0.0.2 went away; the new address is listened on and observed.
        let listen = [ma(LO), ma(LAN2)];
        let none = view(Reachability::Unknown, &[], &[]);
        assert_eq!(
            desired_addr(LAN, &listen, &ma(ANY), &none).map(|w| w.0),
            Some(LAN2.to_owned())
        );
        let seen = view(Reachability::Public(ma(LAN2)), &[LAN2], &[]);
        assert_eq!(
            desired_addr(LAN, &listen, &ma(ANY), &seen).map(|w| w.0),
            Some(LAN2.to_owned())
        );
    }

    #[test]
    fn behind_nat_the_record_is_a_relay_circuit() {
        let listen = [ma(LO), ma(LAN)];
        let private = view(
            Reachability::Private,
            &["/ip4/198.51.100.1/udp/7400/quic-v1", LAN],
            &[CIRCUIT],
        );
        assert_eq!(
            desired_addr(LAN, &listen, &ma(ANY), &private).map(|w| w.0),
            Some(CIRCUIT.to_owned())
        );
        assert_eq!(desired_addr(CIRCUIT, &listen, &ma(ANY), &private), None);
        // Private with no circuit yet: keep what there is; a circuit
        // between two reservations, or while AutoNAT re-probes, stays.
        let waiting = view(Reachability::Private, &[], &[]);
        assert_eq!(desired_addr(LAN, &listen, &ma(ANY), &waiting), None);
        assert_eq!(desired_addr(CIRCUIT, &listen, &ma(ANY), &waiting), None);
        let lan_mate = view(Reachability::Unknown, &[LAN], &[]);
        assert_eq!(desired_addr(CIRCUIT, &listen, &ma(ANY), &lan_mate), None);
        // Public again (a port forward): the confirmed address, while
        // members observe it there (not a confirmation from before a move).
        let fwd = "/ip4/198.51.100.1/udp/7400/quic-v1";
        let stale = view(Reachability::Public(ma(fwd)), &[], &[]);
        assert_eq!(desired_addr(CIRCUIT, &listen, &ma(ANY), &stale), None);
        let moved = view(Reachability::Public(ma(LAN)), &[], &[]);
        assert_eq!(
            desired_addr(LAN2, &[ma(LO), ma(LAN2)], &ma(ANY), &moved),
            None
        );
        let public = view(Reachability::Public(ma(fwd)), &[fwd], &[]);
        assert_eq!(
            desired_addr(CIRCUIT, &listen, &ma(ANY), &public).map(|w| w.0),
            Some(fwd.to_owned())
        );
    }
}
