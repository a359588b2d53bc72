//! Joining a cluster with a token: the member side, the joiner side, and the
//! promotion of learners to voters.
//!
//! The handshake itself (nonces, proofs, the token never on the wire) is
//! `p2p`'s (`/filesyncd/join/1`, see `docs/PROTOCOL.md`); this module is
//! what filesyncd plugs into it and does around it.
//!
//! # Goals
//! * A new node started with `--join ADDR --token T` ends up a caught-up
//!   Raft learner of the cluster, and a voter while the cluster has fewer
//!   voters than `max_voters`.
//! * A bad, expired or reused token changes nothing (no learner, no spent
//!   token) and gets a clear error naming the problem (exit 2).
//! * Only the Raft leader admits, so the joiner's first Raft messages come
//!   from a peer it already trusts.
//!
//! # Non-goals
//! * Remembering removed members across restarts (the p2p allow-list does
//!   that in memory only).
//! * NAT traversal here: the joiner dials the member; the record the member
//!   writes is corrected later by the joiner itself (`daemon::addr`: what
//!   members observe, or a relay circuit behind NAT).
//!
//! # Flow
//! ```text
//! joiner (no Raft state)                     member M              leader L
//!   dial ADDR → PeerId M; allow-list += M
//!   Hello / Challenge / Proof{info: node id} ─▶ token_hash(id) from Raft state
//!                                              not leader: Rejected{NotLeader, hint = L's addr}
//!   (start over at L: dial, allow-list += L, Hello ...)                    ─▶
//!                                                             ConsumeToken{hash, node id} (Raft)
//!                                                             add_learner(node id, addr)
//!                              ◀─ Accepted{payload: cluster id, leader, members, index}
//!   check the cluster key proof (and the --cluster-fingerprint pin)
//!   allow-list += members; serve Raft; wait until applied ≥ index
//!                                                             promoter: learner caught up and
//!                                                             voters < max_voters → voter
//! ```
//!
//! * [`admit::Admission`] is the `p2p::JoinVerifier` of every member. It
//!   holds the Raft node once it is open (before that it answers
//!   `Unavailable`). A token's hash is found by its id
//!   (`SmReader::token_by_id`); the token is spent with `ConsumeToken`
//!   through Raft; a spent token whose spender is this same joiner node id
//!   admits again within `admit::SPENT_RETRY_WINDOW_MS` (the joiner retried
//!   after a lost `Accepted`), then nobody.
//! * [`joiner::join`] is the new node's side: retries unreachable or
//!   undecided members with backoff until `--join-timeout`, follows
//!   proven leader redirects, and stops at once on a token or identity problem.
//! * [`promote::promote_learners`] runs on every member; it acts only while
//!   this node leads.
//!
//! Messages that are filesyncd's (inside p2p's opaque fields) are JSON:
//! [`JoinInfo`] (joiner → member, `Proof.info`) and [`JoinPayload`]
//! (member → joiner, `Accepted.payload`, covered by the member's proof).
//! A rejection's `hint` is UTF-8: the leader's address for `NotLeader`, a
//! short explanation otherwise.

pub mod admit;
pub mod joiner;
pub mod promote;

use filesyncd_p2p::{Multiaddr, RejectReason, Rejection};
use filesyncd_raft::NodeId;
use serde::{Deserialize, Serialize};

pub use admit::Admission;
pub use joiner::{join, start, wait_caught_up, JoinFailure};
pub use promote::promote_learners;

/// Most members listed in a [`JoinPayload`] (the join message cap is 64 KiB).
pub const MAX_PAYLOAD_MEMBERS: usize = 128;

/// What the joiner presents with its proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinInfo {
    /// The joiner's Raft node id, 16 hex digits.
    pub node_id: String,
    /// The joiner's `--advertise` address (multiaddr text): recorded as its
    /// member address instead of one picked from its listen addresses.
    /// Absent from older joiners (and skipped when unset, so older members
    /// read it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
}

/// A member as listed in a [`JoinPayload`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadMember {
    /// 16 hex digits.
    pub id: String,
    pub peer_id: String,
    pub addr: String,
}

/// What an admitted joiner is told.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinPayload {
    pub cluster_id: String,
    /// The admitting leader's node id, 16 hex digits.
    pub leader: String,
    /// The members when the joiner was added (it included).
    pub members: Vec<PayloadMember>,
    /// Log index of the membership entry that added the joiner: it has
    /// caught up once it applied this far.
    pub index: u64,
    /// The cluster key's public half, hex (absent while the cluster has no
    /// key: a cluster made before keys existed, before its first `token create`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_key: Option<String>,
    /// The admitting member's proof (`filesyncd_p2p::ClusterKey::prove`), hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_proof: Option<String>,
}

/// Parses a node id as the API prints it (16 hex digits; shorter accepted).
pub fn parse_node_id(s: &str) -> Option<NodeId> {
    if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok().filter(|id| *id != 0)
}

/// A rejection with a human-readable hint.
pub fn rejection(reason: RejectReason, hint: impl Into<String>) -> Rejection {
    Rejection {
        reason,
        hint: hint.into().into_bytes(),
    }
}

/// The IP and UDP port of a `/ip4|ip6/A/udp/P/...` address.
fn ip_port(a: &Multiaddr) -> Option<(std::net::IpAddr, Option<u16>)> {
    let text = a.to_string();
    let mut parts = text.split('/').skip(1);
    if !matches!(parts.next(), Some("ip4" | "ip6")) {
        return None;
    }
    let ip = parts.next()?.parse().ok()?;
    let port = match (parts.next(), parts.next()) {
        (Some("udp"), Some(p)) => p.parse().ok(),
        _ => None,
    };
    Some((ip, port))
}

/// The address the cluster should dial a joiner on: an announced listen
/// address on the IP its connection came from (its own view and ours
/// agree), else the first announced non-loopback one, else the first
/// announced one, else the observed address (its port may be ephemeral).
/// Unspecified addresses (0.0.0.0) never, nor one whose text does not
/// parse back to it.
pub fn pick_addr(listen: &[Multiaddr], observed: Option<&Multiaddr>) -> Option<Multiaddr> {
    let usable: Vec<(&Multiaddr, std::net::IpAddr, Option<u16>)> = listen
        .iter()
        .filter(|a| round_trips(a))
        .filter_map(|a| ip_port(a).map(|(ip, port)| (a, ip, port)))
        .filter(|(_, ip, _)| !ip.is_unspecified())
        .collect();
    if let Some((oip, oport)) = observed.and_then(ip_port) {
        let same_ip = || usable.iter().filter(|(_, ip, _)| *ip == oip);
        if let Some((a, _, _)) = same_ip()
            .find(|(_, _, p)| *p == oport)
            .or_else(|| same_ip().next())
        {
            return Some((*a).clone());
        }
    }
    if let Some((a, _, _)) = usable
        .iter()
        .find(|(_, ip, _)| !ip.is_loopback())
        .or(usable.first())
    {
        return Some((*a).clone());
    }
    observed
        .filter(|o| round_trips(o) && ip_port(o).is_some_and(|(ip, _)| !ip.is_unspecified()))
        .cloned()
}

/// A joiner's `--advertise` address, as its member record may hold it: a
/// multiaddr whose text parses back, led by an IP that is not unspecified
/// or by a DNS name, then a UDP port and QUIC (what members dial).
pub fn advertised_member_addr(text: &str) -> Option<Multiaddr> {
    use filesyncd_p2p::Protocol;
    let a: Multiaddr = text.parse().ok()?;
    if !round_trips(&a) {
        return None;
    }
    let mut parts = a.iter();
    let host_ok = match parts.next()? {
        Protocol::Ip4(ip) => !ip.is_unspecified(),
        Protocol::Ip6(ip) => !ip.is_unspecified(),
        Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_) => true,
        _ => false,
    };
    let rest_ok = matches!(parts.next(), Some(Protocol::Udp(p)) if p != 0)
        && matches!(parts.next(), Some(Protocol::QuicV1))
        && parts.next().is_none();
    (host_ok && rest_ok).then_some(a)
}

/// Whether `a`'s text form parses back to `a`: the member stores the picked
/// address as text and every member parses it to dial. Some decodable
/// multiaddrs print text that does not (fuzz finding 1, docs/FUZZING.md).
fn round_trips(a: &Multiaddr) -> bool {
    a.to_string().parse::<Multiaddr>().ok().as_ref() == Some(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ma(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn advertised_addresses_must_be_dialable() {
        for ok in [
            "/ip4/192.0.2.1/udp/7400/quic-v1",
            "/ip6/2001:db8::1/udp/7400/quic-v1",
            "/dns4/nas.example.org/udp/7400/quic-v1",
            "/dns/nas/udp/1/quic-v1",
        ] {
            assert_eq!(
                advertised_member_addr(ok).map(|a| a.to_string()).as_deref(),
                Some(ok)
            );
        }
        for bad in [
            "",
            "nas:7400",
            "/ip4/0.0.0.0/udp/7400/quic-v1",
            "/ip6/::/udp/7400/quic-v1",
            "/ip4/192.0.2.1/udp/0/quic-v1",
            "/ip4/192.0.2.1/tcp/7400",
            "/ip4/192.0.2.1/udp/7400",
            "/ip4/192.0.2.1/udp/7400/quic-v1/p2p-circuit",
            "/unix/tmp/x",
        ] {
            assert_eq!(advertised_member_addr(bad), None, "{bad}");
        }
    }

    #[test]
    fn node_ids_parse_like_the_api_prints_them() {
        assert_eq!(parse_node_id("00000000000000ff"), Some(255));
        assert_eq!(parse_node_id("ff"), Some(255));
        assert_eq!(parse_node_id("ABCDEF0123456789"), Some(0xabcdef0123456789));
        for bad in [
            "",
            "0",
            "0000000000000000",
            "g1",
            "12345678901234567",
            "12D3KooW",
        ] {
            assert_eq!(parse_node_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn picks_the_address_the_cluster_can_dial() {
        let lo = ma("/ip4/127.0.0.1/udp/7400/quic-v1");
        let lan = ma("/ip4/172.18.0.4/udp/7400/quic-v1");
        let other = ma("/ip4/10.1.0.4/udp/7400/quic-v1");
        let any = ma("/ip4/0.0.0.0/udp/7400/quic-v1");
        let lo3 = ma("/ip4/127.0.0.3/udp/4100/quic-v1");
        // The announced address on the observed IP wins.
        let seen = ma("/ip4/10.1.0.4/udp/7400/quic-v1");
        assert_eq!(
            pick_addr(&[lo.clone(), lan.clone(), other.clone()], Some(&seen)),
            Some(other.clone())
        );
        // Loopback test clusters: the node's own 127.0.0.x.
        assert_eq!(
            pick_addr(std::slice::from_ref(&lo3), Some(&lo3)),
            Some(lo3.clone())
        );
        // Observed from elsewhere (NAT): first routable announced address.
        let nat = ma("/ip4/192.0.2.9/udp/5555/quic-v1");
        assert_eq!(
            pick_addr(&[lo.clone(), lan.clone()], Some(&nat)),
            Some(lan.clone())
        );
        // Only loopback announced, observed from another loopback address
        // (no port reuse): the announced one; nothing announced: observed.
        let eph = ma("/ip4/127.0.0.1/udp/50123/quic-v1");
        assert_eq!(
            pick_addr(std::slice::from_ref(&lo3), Some(&eph)),
            Some(lo3.clone())
        );
        assert_eq!(pick_addr(&[], Some(&nat)), Some(nat.clone()));
        // Nothing observed: routable first, loopback last, unspecified never.
        assert_eq!(pick_addr(&[any.clone(), lo.clone()], None), Some(lo));
        assert_eq!(pick_addr(std::slice::from_ref(&any), None), None);
        assert_eq!(pick_addr(&[], Some(&any)), None);
    }

    #[test]
    fn an_address_whose_text_does_not_parse_back_is_never_picked() {
        use filesyncd_p2p::Multiaddr as M;
        // Fuzz finding 1: a garlic64 component prints text that does not
        // parse back to the same address. Binary form: ip4 (0x04) 192.0.2.1,
        // udp (0x0111) 7400, garlic64 (0x01be) of one byte 0xff.
        let bytes = vec![
            0x04, 192, 0, 2, 1, 0x91, 0x02, 0x1c, 0xe8, 0xbe, 0x03, 0x01, 0xff,
        ];
        let odd = M::try_from(bytes).expect("a decodable multiaddr");
        assert_ne!(
            odd.to_string().parse::<M>().ok(),
            Some(odd.clone()),
            "{odd}"
        );
        let good = ma("/ip4/192.0.2.2/udp/7400/quic-v1");
        assert_eq!(
            pick_addr(&[odd.clone(), good.clone()], Some(&odd)),
            Some(good)
        );
        assert_eq!(pick_addr(std::slice::from_ref(&odd), None), None);
        assert_eq!(pick_addr(&[], Some(&odd)), None);
    }
}
