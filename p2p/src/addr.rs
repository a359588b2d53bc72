//! Turning what operators type into multiaddrs.
//!
//! * `/ip4/10.0.0.2/udp/7946/quic-v1` (anything starting with `/`): parsed as is.
//! * `10.0.0.2:7946` → `/ip4/10.0.0.2/udp/7946/quic-v1`
//! * `[fd00::2]:7946` → `/ip6/fd00::2/udp/7946/quic-v1`
//! * `node-b:7946` (a DNS name, e.g. a compose service) →
//!   `/dns4/node-b/udp/7946/quic-v1`, resolved by libp2p's DNS transport at
//!   dial time.

use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use std::net::{Ipv4Addr, Ipv6Addr};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddrError {
    #[error("`{0}` is neither a multiaddr nor host:port")]
    Format(String),
    #[error("`{0}`: bad port")]
    Port(String),
    #[error("`{0}`: bad host name")]
    Host(String),
}

/// Parses a multiaddr or `host:port` (QUIC v1 over UDP).
pub fn parse_addr(s: &str) -> Result<Multiaddr, AddrError> {
    let s = s.trim();
    if s.starts_with('/') {
        return s.parse().map_err(|_| AddrError::Format(s.to_owned()));
    }
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| AddrError::Format(s.to_owned()))?;
    let port: u16 = port.parse().map_err(|_| AddrError::Port(s.to_owned()))?;
    let first = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Protocol::Ip6(
            v6.parse::<Ipv6Addr>()
                .map_err(|_| AddrError::Host(s.to_owned()))?,
        )
    } else if let Ok(v4) = host.parse::<Ipv4Addr>() {
        Protocol::Ip4(v4)
    } else if is_dns_name(host) {
        Protocol::Dns4(host.to_owned().into())
    } else {
        return Err(AddrError::Host(s.to_owned()));
    };
    Ok(Multiaddr::empty()
        .with(first)
        .with(Protocol::Udp(port))
        .with(Protocol::QuicV1))
}

fn is_dns_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(
            parse_addr("127.0.0.1:4001").unwrap().to_string(),
            "/ip4/127.0.0.1/udp/4001/quic-v1"
        );
        assert_eq!(
            parse_addr("[::1]:4001").unwrap().to_string(),
            "/ip6/::1/udp/4001/quic-v1"
        );
        assert_eq!(
            parse_addr("node-b:7946").unwrap().to_string(),
            "/dns4/node-b/udp/7946/quic-v1"
        );
        assert_eq!(
            parse_addr("/ip4/1.2.3.4/udp/5/quic-v1")
                .unwrap()
                .to_string(),
            "/ip4/1.2.3.4/udp/5/quic-v1"
        );
        for bad in [
            "node-b",
            "node-b:x",
            "node-b:70000",
            "bad host:1",
            "/nope",
            "[zz]:1",
            ":1",
        ] {
            assert!(parse_addr(bad).is_err(), "{bad}");
        }
    }
}
