//! Finding a peer server (RFC 6120 §3.2, XEP-0368): the static map and the
//! peers file first, then DNS SRV `_xmpps-server._tcp` (direct TLS) and
//! `_xmpp-server._tcp` (STARTTLS) merged and ordered by priority and weight,
//! then the domain's A/AAAA records on port 5269.
//!
//! DNS goes through hickory-resolver, with the system's `resolv.conf` or the
//! one name server `[xmpp.s2s] resolver` names (tests run a small DNS server
//! on loopback).

use crate::config::S2sConfig;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use std::net::SocketAddr;

/// The port of server-to-server streams when no SRV record names one.
pub const DEFAULT_PORT: u16 = 5269;

/// One place to try, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The address.
    pub addr: SocketAddr,
    /// TLS from the first byte (XEP-0368), else STARTTLS.
    pub direct_tls: bool,
}

/// One SRV record, as far as ordering goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    /// Lower is tried first.
    pub priority: u16,
    /// Share among records of one priority (RFC 2782).
    pub weight: u16,
    /// The host to connect to.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// From `_xmpps-server` (direct TLS).
    pub direct_tls: bool,
}

/// Orders SRV records as RFC 2782 says: by priority, and within one priority
/// by a weighted random draw (`random(n)` returns a number in `0..n`). At
/// equal priority and weight, direct TLS comes first (XEP-0368 §3).
pub fn order_srv(mut records: Vec<Srv>, mut random: impl FnMut(u32) -> u32) -> Vec<Srv> {
    records.sort_by_key(|r| (r.priority, !r.direct_tls));
    let mut ordered = Vec::with_capacity(records.len());
    let mut rest = records.as_slice();
    while let Some(first) = rest.first() {
        let n = rest
            .iter()
            .take_while(|r| r.priority == first.priority)
            .count();
        let mut group: Vec<Srv> = rest[..n].to_vec();
        rest = &rest[n..];
        // Zero weights first, so that they get a small chance (RFC 2782).
        group.sort_by_key(|r| (r.weight != 0, !r.direct_tls));
        while !group.is_empty() {
            let total: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
            let pick = if total == 0 {
                0
            } else {
                let draw = random(total + 1);
                let mut running = 0;
                group
                    .iter()
                    .position(|r| {
                        running += u32::from(r.weight);
                        running >= draw
                    })
                    .unwrap_or(0)
            };
            ordered.push(group.remove(pick));
        }
    }
    ordered
}

/// The `host:port` the static map or the peers file gives for `domain`.
pub fn static_target(config: &S2sConfig, domain: &str) -> Option<String> {
    if let Some(t) = config.peers.get(domain) {
        return Some(t.clone());
    }
    if config.peers_file.is_empty() {
        return None;
    }
    let text = std::fs::read_to_string(&config.peers_file).ok()?;
    text.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next()) {
            (Some(d), Some(addr)) if d.eq_ignore_ascii_case(domain) => Some(addr.to_string()),
            _ => None,
        }
    })
}

/// Builds the resolver: `resolver` is `""` (the system's configuration) or
/// `ip:port` of one name server. `None` when the system has no usable
/// configuration (A/AAAA lookups then go through the OS).
pub fn build_resolver(resolver: &str) -> anyhow::Result<Option<TokioResolver>> {
    if resolver.is_empty() {
        return match TokioResolver::builder_tokio() {
            Ok(b) => Ok(b.build().ok()),
            Err(e) => {
                tracing::warn!(error = %e, "no DNS configuration: SRV lookups are off");
                Ok(None)
            }
        };
    }
    let addr: SocketAddr = resolver
        .parse()
        .map_err(|_| anyhow::anyhow!("xmpp.s2s.resolver: expected ip:port, got {resolver:?}"))?;
    let mut udp = ConnectionConfig::udp();
    udp.port = addr.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = addr.port();
    let ns = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
    let config = ResolverConfig::from_parts(None, Vec::new(), vec![ns]);
    let resolver =
        TokioResolver::builder_with_config(config, TokioRuntimeProvider::default()).build()?;
    Ok(Some(resolver))
}

/// The SRV records of `_{service}._tcp.{domain}.`; the single record with
/// target `.` ("no service here", RFC 2782) yields none.
async fn srv(resolver: &TokioResolver, service: &str, domain: &str, tls: bool) -> Vec<Srv> {
    let name = format!("_{service}._tcp.{domain}.");
    let Ok(lookup) = resolver.srv_lookup(name.as_str()).await else {
        return Vec::new();
    };
    lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) if !s.target.is_root() => Some(Srv {
                priority: s.priority,
                weight: s.weight,
                host: s.target.to_ascii(),
                port: s.port,
                direct_tls: tls,
            }),
            _ => None,
        })
        .collect()
}

/// The addresses of `host` (A and AAAA) at `port`.
async fn addresses(resolver: Option<&TokioResolver>, host: &str, port: u16) -> Vec<SocketAddr> {
    if let Some(r) = resolver
        && let Ok(ips) = r.lookup_ip(host).await
    {
        let found: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(ip, port)).collect();
        if !found.is_empty() {
            return found;
        }
    }
    let host = host.trim_end_matches('.');
    match tokio::net::lookup_host((host, port)).await {
        Ok(addrs) => addrs.collect(),
        Err(_) => Vec::new(),
    }
}

/// Where to connect for `domain`, in the order to try.
pub async fn resolve(
    config: &S2sConfig,
    resolver: Option<&TokioResolver>,
    domain: &str,
) -> Vec<Target> {
    if let Some(target) = static_target(config, domain) {
        return match tokio::net::lookup_host(target).await {
            Ok(addrs) => addrs
                .map(|addr| Target {
                    addr,
                    direct_tls: false,
                })
                .collect(),
            Err(_) => Vec::new(),
        };
    }
    let mut targets = Vec::new();
    if let Some(r) = resolver {
        let (tls, plain) = tokio::join!(
            srv(r, "xmpps-server", domain, true),
            srv(r, "xmpp-server", domain, false)
        );
        let records = order_srv(tls.into_iter().chain(plain).collect(), |n| {
            (uuid::Uuid::new_v4().as_u128() % u128::from(n.max(1))) as u32
        });
        for rec in records {
            for addr in addresses(Some(r), &rec.host, rec.port).await {
                let t = Target {
                    addr,
                    direct_tls: rec.direct_tls,
                };
                if !targets.contains(&t) {
                    targets.push(t);
                }
            }
        }
    }
    if targets.is_empty() {
        targets = addresses(resolver, domain, DEFAULT_PORT)
            .await
            .into_iter()
            .map(|addr| Target {
                addr,
                direct_tls: false,
            })
            .collect();
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(priority: u16, weight: u16, host: &str, direct_tls: bool) -> Srv {
        Srv {
            priority,
            weight,
            host: host.into(),
            port: 5269,
            direct_tls,
        }
    }

    fn hosts(v: &[Srv]) -> Vec<&str> {
        v.iter().map(|r| r.host.as_str()).collect()
    }

    #[test]
    fn priority_orders_first() {
        let got = order_srv(
            vec![
                rec(20, 0, "c", false),
                rec(10, 0, "a", false),
                rec(15, 0, "b", true),
            ],
            |_| 0,
        );
        assert_eq!(hosts(&got), ["a", "b", "c"]);
    }

    #[test]
    fn direct_tls_first_at_equal_priority_and_weight() {
        let got = order_srv(
            vec![rec(10, 0, "plain", false), rec(10, 0, "tls", true)],
            |_| 0,
        );
        assert_eq!(hosts(&got), ["tls", "plain"]);
    }

    #[test]
    fn weight_draw_picks_by_running_sum() {
        // Weights 0, 10, 30: a draw of 25 lands on the third (0+10 < 25 <= 40).
        let records = vec![
            rec(1, 10, "w10", false),
            rec(1, 30, "w30", false),
            rec(1, 0, "w0", false),
        ];
        let mut draws = vec![25u32, 0, 0].into_iter();
        let got = order_srv(records, |_| draws.next().unwrap_or(0));
        assert_eq!(hosts(&got), ["w30", "w0", "w10"]);
    }

    #[test]
    fn static_map_then_peers_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("peers");
        std::fs::write(&file, "b.test 127.0.0.1:1\nc.test 127.0.0.1:2\n").unwrap();
        let mut config = S2sConfig {
            peers_file: file.display().to_string(),
            ..S2sConfig::default()
        };
        config.peers.insert("c.test".into(), "127.0.0.1:3".into());
        assert_eq!(
            static_target(&config, "B.test").as_deref(),
            Some("127.0.0.1:1")
        );
        assert_eq!(
            static_target(&config, "c.test").as_deref(),
            Some("127.0.0.1:3")
        );
        assert_eq!(static_target(&config, "d.test"), None);
    }

    #[test]
    fn resolver_address_must_be_ip_and_port() {
        assert!(build_resolver("localhost").is_err());
    }
}
