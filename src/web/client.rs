//! Who is asking: the client's address, believing `X-Forwarded-For` only
//! from the trusted proxies (`web.trusted_proxies`).

use std::net::IpAddr;

/// Whether `ip` is inside `net/prefix`.
pub fn in_network(ip: IpAddr, (net, prefix): (IpAddr, u8)) -> bool {
    let (ip, net) = match (ip.to_canonical(), net.to_canonical()) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            (u128::from(a.to_bits()) << 96, u128::from(b.to_bits()) << 96)
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => (a.to_bits(), b.to_bits()),
        _ => return false,
    };
    // IPv4 sits in the top 32 bits, so a prefix counts from the top either way.
    let width = u32::from(prefix).min(128);
    let mask = if width == 0 {
        0
    } else {
        u128::MAX << (128 - width)
    };
    ip & mask == net & mask
}

/// The client's address: the peer, unless the peer is a trusted proxy; then
/// the right-most `X-Forwarded-For` entry that is not itself a trusted
/// proxy (the left ones are whatever the client wrote, so never believed
/// past the first untrusted hop).
pub fn client_ip(peer: IpAddr, forwarded: &[&str], trusted: &[(IpAddr, u8)]) -> IpAddr {
    let trusted_ip = |ip: IpAddr| trusted.iter().any(|n| in_network(ip, *n));
    if !trusted_ip(peer) {
        return peer.to_canonical();
    }
    let hops = forwarded
        .iter()
        .flat_map(|h| h.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    let mut client = peer.to_canonical();
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = ip.to_canonical();
                if !trusted_ip(client) {
                    break;
                }
            }
            // Garbage in the header: stop at the last address we believe.
            Err(_) => break,
        }
    }
    client
}

/// The key the per-client limits are counted under: the address, or for
/// IPv6 its /64 (one host usually has a whole /64 to rotate through).
pub fn limit_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("web {v4}"),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("web {:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxies = [(ip("10.0.0.0"), 8), (ip("::1"), 128)];
        // Not a proxy: its header is the client's own words.
        assert_eq!(
            client_ip(ip("192.0.2.7"), &["203.0.113.9"], &proxies),
            ip("192.0.2.7")
        );
        // A proxy: the right-most untrusted hop is the client.
        assert_eq!(
            client_ip(
                ip("10.1.2.3"),
                &["1.1.1.1, 203.0.113.9, 10.0.0.5"],
                &proxies
            ),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(ip("::1"), &["203.0.113.9"], &proxies),
            ip("203.0.113.9")
        );
        // A proxy without a header, or with garbage: the proxy itself.
        assert_eq!(client_ip(ip("10.1.2.3"), &[], &proxies), ip("10.1.2.3"));
        assert_eq!(
            client_ip(ip("10.1.2.3"), &["<script>"], &proxies),
            ip("10.1.2.3")
        );
        // No proxies configured: the header is never believed.
        assert_eq!(
            client_ip(ip("10.1.2.3"), &["203.0.113.9"], &[]),
            ip("10.1.2.3")
        );
        // IPv4-mapped peers count as IPv4.
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.1"), &["198.51.100.1"], &proxies),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn networks_and_limit_keys() {
        assert!(in_network(ip("10.200.0.1"), (ip("10.0.0.0"), 8)));
        assert!(!in_network(ip("11.0.0.1"), (ip("10.0.0.0"), 8)));
        assert!(in_network(ip("2001:db8::1"), (ip("2001:db8::"), 32)));
        assert!(!in_network(ip("2001:db9::1"), (ip("2001:db8::"), 32)));
        assert!(in_network(ip("1.2.3.4"), (ip("0.0.0.0"), 0)));
        assert!(!in_network(ip("::1"), (ip("0.0.0.0"), 0)));
        assert_eq!(limit_key(ip("127.0.0.2")), "web 127.0.0.2");
        assert_eq!(
            limit_key(ip("2001:db8:1:2:aaaa::1")),
            limit_key(ip("2001:db8:1:2:bbbb::9"))
        );
    }
}
