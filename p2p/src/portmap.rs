//! NAT-PMP and PCP port mapping (RFC 6886, RFC 6887), beside libp2p-upnp's
//! UPnP IGD: many home routers speak one and not the other.
//!
//! The client is `crab_nat` (PCP first, NAT-PMP as its fallback). The node
//! asks its IPv4 default gateway to map its UDP listen port to the same
//! external port for [`LIFETIME`], renews it at half its lifetime, and
//! asks again after [`RETRY`] when the gateway does not answer or refuses.
//! A mapping only opens the port: AutoNAT then confirms the node public at
//! the address members observe (the router keeps the source port), and the
//! member record follows (`node/src/daemon/addr.rs`).

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::num::NonZeroU16;
use std::time::Duration;

use crab_nat::{InternetProtocol, PortMapping, PortMappingOptions, TimeoutConfig};

/// What the mapping asks for (the router may grant less).
const LIFETIME: Duration = Duration::from_secs(3600);
/// Wait before asking again after no answer or a refusal.
const RETRY: Duration = Duration::from_secs(600);
/// Shortest wait between renewals.
const MIN_RENEW: Duration = Duration::from_secs(30);

/// Keeps a mapping of UDP `port` on the default gateway for as long as the
/// process runs. Returns at once when there is no IPv4 default route.
pub(crate) async fn keep_mapping(port: u16) {
    let Some(port) = NonZeroU16::new(port) else {
        return;
    };
    let Some(gateway) = default_gateway_v4() else {
        tracing::debug!("NAT-PMP/PCP: no IPv4 default gateway");
        return;
    };
    let Some(client) = local_ip_towards(gateway) else {
        tracing::debug!(%gateway, "NAT-PMP/PCP: no local address towards the gateway");
        return;
    };
    let options = PortMappingOptions {
        external_port: Some(port),
        lifetime_seconds: Some(LIFETIME.as_secs() as u32),
        timeout_config: Some(TimeoutConfig {
            initial_timeout: Duration::from_millis(250),
            max_retries: 3,
            max_retry_timeout: Some(Duration::from_secs(2)),
        }),
    };
    loop {
        match PortMapping::new(gateway.into(), client, InternetProtocol::Udp, port, options).await {
            Ok(mut mapping) => {
                tracing::info!(
                    %gateway,
                    internal_port = port.get(),
                    external_port = mapping.external_port().get(),
                    lifetime_s = mapping.lifetime(),
                    kind = ?mapping.mapping_type(),
                    "NAT-PMP/PCP: the router maps the listen port"
                );
                loop {
                    let half = Duration::from_secs(u64::from(mapping.lifetime()) / 2);
                    tokio::time::sleep(half.max(MIN_RENEW)).await;
                    if let Err(e) = mapping.renew().await {
                        tracing::info!(%gateway, "NAT-PMP/PCP: renewing the mapping failed: {e}");
                        break;
                    }
                }
            }
            Err(e) => tracing::debug!(%gateway, "NAT-PMP/PCP: no mapping: {e}"),
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// The IPv4 default gateway, from `/proc/net/route`.
fn default_gateway_v4() -> Option<Ipv4Addr> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    parse_default_gateway(&table)
}

/// The gateway of the first default route (destination and mask 0) in the
/// text of `/proc/net/route` (addresses as little-endian hex).
fn parse_default_gateway(table: &str) -> Option<Ipv4Addr> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 || f[1] != "00000000" || f[7] != "00000000" {
            return None;
        }
        let gw = u32::from_str_radix(f[2], 16).ok()?;
        (gw != 0).then(|| Ipv4Addr::from(gw.swap_bytes()))
    })
}

/// The local address the kernel would use to reach `gateway` (a connected
/// UDP socket sends nothing).
fn local_ip_towards(gateway: Ipv4Addr) -> Option<IpAddr> {
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    s.connect((gateway, 5351)).ok()?;
    Some(s.local_addr().ok()?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_gateway_is_read_from_the_route_table() {
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(
            parse_default_gateway(table),
            Some(Ipv4Addr::new(10, 0, 0, 1))
        );
        let none = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
                    eth0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\n";
        assert_eq!(parse_default_gateway(none), None);
        assert_eq!(parse_default_gateway(""), None);
    }
}
