//! Who the client is: the TCP peer, or the address a trusted reverse proxy forwarded.

use std::{
    net::{IpAddr, Ipv4Addr},
    str::FromStr,
};

use poem::http::{header, HeaderMap};

/// An IP network (`10.0.0.0/8`, `::1/128`, or a bare address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not an IP address or CIDR network");
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s.trim(), None),
        };
        let addr = canonical(addr.parse::<IpAddr>().map_err(|_| bad())?);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|&p| p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(IpNet { addr, prefix })
    }
}

impl IpNet {
    /// True when `ip` is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses as IPv4, so one client has one key.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client address: the peer, unless the peer is a trusted proxy; then the right-most
/// forwarded address that a trusted proxy did not add for itself.
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let Some(peer) = peer.map(canonical) else {
        return IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    };
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut hops = forwarded_for(headers);
    let mut client = peer;
    while let Some(hop) = hops.pop() {
        client = hop;
        if !is_trusted(hop) {
            break;
        }
    }
    client
}

/// Addresses listed by `X-Forwarded-For` (all such headers, in order), else by `Forwarded`'s
/// `for=` parameters. Entries that are not addresses (`unknown`, obfuscated names) are skipped.
fn forwarded_for(headers: &HeaderMap) -> Vec<IpAddr> {
    let parse = |raw: &str| -> Option<IpAddr> {
        let raw = raw.trim().trim_matches('"');
        if let Ok(ip) = raw.parse::<IpAddr>() {
            return Some(canonical(ip));
        }
        // `[v6]:port`, `[v6]` or `v4:port`.
        let host = match raw.strip_prefix('[') {
            Some(rest) => rest.split(']').next()?,
            None => raw.rsplit_once(':')?.0,
        };
        host.parse::<IpAddr>().ok().map(canonical)
    };
    let xff: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(parse)
        .collect();
    if !xff.is_empty() {
        return xff;
    }
    headers
        .get_all(header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .flat_map(|element| element.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            name.eq_ignore_ascii_case("for").then(|| parse(value))?
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_contain_their_addresses() {
        let net: IpNet = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.168.1.1".parse().unwrap()));
        let one: IpNet = "2001:db8::1".parse().unwrap();
        assert!(one.contains("2001:db8::1".parse().unwrap()));
        assert!(!one.contains("2001:db8::2".parse().unwrap()));
        for bad in ["", "10.0.0.0/33", "::/129", "host", "10.0.0.0/x"] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_peers() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()];
        let limits = |peer, headers: &HeaderMap| client_ip(peer, headers, &trusted);
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "1.1.1.1, 2.2.2.2, 10.0.0.9".parse().unwrap(),
        );
        let untrusted: IpAddr = "8.8.8.8".parse().unwrap();
        assert_eq!(limits(Some(untrusted), &headers), untrusted);
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        // 10.0.0.9 is a trusted hop; 2.2.2.2 is the client as far as we can tell.
        assert_eq!(
            limits(Some(proxy), &headers),
            "2.2.2.2".parse::<IpAddr>().unwrap()
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            header::FORWARDED,
            r#"for="[2001:db8::7]:4711";proto=https, for=unknown"#
                .parse()
                .unwrap(),
        );
        assert_eq!(
            limits(Some("::1".parse().unwrap()), &headers),
            "2001:db8::7".parse::<IpAddr>().unwrap()
        );
        // A trusted peer that forwards nothing is the client.
        assert_eq!(limits(Some(proxy), &HeaderMap::new()), proxy);
        assert_eq!(
            limits(None, &HeaderMap::new()),
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        );
    }
}
