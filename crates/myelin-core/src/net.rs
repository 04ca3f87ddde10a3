//! Address classification for outgoing requests to URLs that users choose
//! (push gateways, URL previews): the server must not become a way into its
//! own network (SSRF).
//!
//! Pure functions; with the `http` feature, also the pieces of an HTTP
//! client that keeps to public addresses: [`PublicOnlyResolver`] (names),
//! [`blocked_literal`] (IP literal hosts, which no resolver sees) and
//! [`refused_by_resolver`] (telling a refusal from other failures).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[cfg(feature = "http")]
pub use http::{NoPublicAddress, PublicOnlyResolver, blocked_literal, refused_by_resolver};

/// Whether `ip` is a globally routable unicast address: not unspecified,
/// loopback, private, link-local, shared (CGNAT), documentation,
/// benchmarking, multicast, broadcast or otherwise reserved. IPv6 forms that
/// embed an IPv4 address (mapped, NAT64, 6to4) are judged by that address.
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_ipv4(v4),
        IpAddr::V6(v6) => is_public_ipv6(v6),
    }
}

fn is_public_ipv4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let reserved = a == 0 // "this network", 0.0.0.0 included
        || a == 10 // private
        || a == 127 // loopback
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 169 && b == 254) // link-local
        || (a == 172 && (16..32).contains(&b)) // private
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // documentation (TEST-NET-1)
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast
        || (a == 192 && b == 168) // private
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // documentation (TEST-NET-2)
        || (a == 203 && b == 0 && c == 113) // documentation (TEST-NET-3)
        || a >= 224; // multicast, reserved, broadcast
    !reserved
}

fn is_public_ipv6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_ipv4(v4);
    }
    let s = ip.segments();
    // NAT64 (64:ff9b::/96) reaches the embedded IPv4 address.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_public_ipv4(embedded_v4(s[6], s[7]));
    }
    // 6to4 (2002::/16) embeds the IPv4 address of the relay's far end.
    if s[0] == 0x2002 {
        return is_public_ipv4(embedded_v4(s[1], s[2]));
    }
    let reserved = ip.is_unspecified()
        || ip.is_loopback()
        || s[..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible (deprecated)
        || (s[0] == 0x100 && s[1..4] == [0, 0, 0]) // discard-only 100::/64
        || (s[0] == 0x2001 && s[1] < 0x200) // IETF protocol assignments, Teredo
        || (s[0] == 0x2001 && s[1] == 0xdb8) // documentation
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
        || (s[0] & 0xff00) == 0xff00; // multicast
    !reserved
}

fn embedded_v4(high: u16, low: u16) -> Ipv4Addr {
    let [a, b] = high.to_be_bytes();
    let [c, d] = low.to_be_bytes();
    Ipv4Addr::new(a, b, c, d)
}

#[cfg(feature = "http")]
mod http {
    use super::is_public_ip;
    use reqwest::dns::{Addrs, Name, Resolve, Resolving};
    use std::net::{IpAddr, SocketAddr};

    /// A name that resolves to no public address.
    #[derive(Debug)]
    pub struct NoPublicAddress(pub String);

    impl std::fmt::Display for NoPublicAddress {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{} resolves to no public address", self.0)
        }
    }

    impl std::error::Error for NoPublicAddress {}

    /// A reqwest resolver: the system resolver, keeping only public
    /// addresses; a name with none fails with [`NoPublicAddress`].
    pub struct PublicOnlyResolver;

    impl Resolve for PublicOnlyResolver {
        fn resolve(&self, name: Name) -> Resolving {
            let host = name.as_str().to_owned();
            Box::pin(async move {
                let resolved = tokio::net::lookup_host((host.as_str(), 0)).await?;
                let public: Vec<SocketAddr> = resolved.filter(|a| is_public_ip(a.ip())).collect();
                if public.is_empty() {
                    return Err(Box::new(NoPublicAddress(host)) as _);
                }
                Ok(Box::new(public.into_iter()) as Addrs)
            })
        }
    }

    /// The host of `url` when it is an IP literal that `allowed` refuses.
    /// Such hosts are connected to without resolving, so callers check them
    /// before sending. The URL parser has normalised IPv4 forms such as
    /// `0x7f.1`, and writes IPv6 literals in brackets.
    pub fn blocked_literal(url: &reqwest::Url, allowed: impl Fn(IpAddr) -> bool) -> Option<IpAddr> {
        let host = url.host_str()?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        bare.parse::<IpAddr>().ok().filter(|ip| !allowed(*ip))
    }

    /// Whether `error` (or one of its sources) is [`PublicOnlyResolver`]'s
    /// refusal.
    pub fn refused_by_resolver(error: &(dyn std::error::Error + 'static)) -> bool {
        let mut source = Some(error);
        while let Some(e) = source {
            if e.is::<NoPublicAddress>() {
                return true;
            }
            source = e.source();
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(s: &str) -> bool {
        is_public_ip(s.parse().expect("an IP address"))
    }

    #[test]
    fn public_addresses() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.0.1",
            "172.32.0.1",
            "192.167.1.1",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(public(ip), "{ip} is public");
        }
    }

    #[test]
    fn non_public_addresses() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "100.64.0.1",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::127.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "64:ff9b::7f00:1",
            "2002:7f00:1::1",
            "100::1",
            "2001::1",
            "2001:db8::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
        ] {
            assert!(!public(ip), "{ip} is not public");
        }
    }
}
