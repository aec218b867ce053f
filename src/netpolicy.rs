//! Which addresses may be probed: only globally reachable ones, unless the
//! operator allows private ones (labs, private deployments). Otherwise the
//! bot could be aimed at internal services (SSRF). Pure.
//!
//! The ranges follow the IANA IPv4 and IPv6 Special-Purpose Address
//! Registries (entries not globally reachable), plus multicast, and for IPv6
//! everything outside the global unicast space 2000::/3. An IPv4 address
//! embedded in an IPv6 one (mapped, compatible, NAT64 well-known prefix) is
//! judged as the IPv4 address it reaches.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why an address is not globally reachable (the range and its name), or None.
pub fn not_global(ip: IpAddr) -> Option<String> {
    match ip {
        IpAddr::V4(v4) => v4_range(v4).map(str::to_owned),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

/// Why a probe of `addr` is refused, as the endpoint's finding; None when it may go.
pub fn refusal(addr: SocketAddr, allow_private: bool) -> Option<String> {
    if addr.port() == 0 {
        return Some("SRV port 0 is not a port a server can listen on; not probed".into());
    }
    if allow_private {
        return None;
    }
    not_global(addr.ip()).map(|why| {
        format!(
            "address {} is not globally reachable ({why}); not probed (allow_private lifts this)",
            addr.ip()
        )
    })
}

fn in4(ip: Ipv4Addr, net: [u8; 4], len: u32) -> bool {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn v4_range(ip: Ipv4Addr) -> Option<&'static str> {
    // Globally reachable exceptions inside 192.0.0.0/24 (PCP and TURN anycast).
    if ip == Ipv4Addr::new(192, 0, 0, 9) || ip == Ipv4Addr::new(192, 0, 0, 10) {
        return None;
    }
    const TABLE: &[([u8; 4], u32, &str)] = &[
        ([0, 0, 0, 0], 8, "0.0.0.0/8, \"this network\""),
        ([10, 0, 0, 0], 8, "10.0.0.0/8, private use"),
        (
            [100, 64, 0, 0],
            10,
            "100.64.0.0/10, shared address space (CGNAT)",
        ),
        ([127, 0, 0, 0], 8, "127.0.0.0/8, loopback"),
        ([169, 254, 0, 0], 16, "169.254.0.0/16, link-local"),
        ([172, 16, 0, 0], 12, "172.16.0.0/12, private use"),
        (
            [192, 0, 0, 0],
            24,
            "192.0.0.0/24, IETF protocol assignments",
        ),
        ([192, 0, 2, 0], 24, "192.0.2.0/24, documentation"),
        ([192, 88, 99, 0], 24, "192.88.99.0/24, 6to4 relay anycast"),
        ([192, 168, 0, 0], 16, "192.168.0.0/16, private use"),
        ([198, 18, 0, 0], 15, "198.18.0.0/15, benchmarking"),
        ([198, 51, 100, 0], 24, "198.51.100.0/24, documentation"),
        ([203, 0, 113, 0], 24, "203.0.113.0/24, documentation"),
        ([224, 0, 0, 0], 4, "224.0.0.0/4, multicast"),
        (
            [255, 255, 255, 255],
            32,
            "255.255.255.255, limited broadcast",
        ),
        ([240, 0, 0, 0], 4, "240.0.0.0/4, reserved"),
    ];
    TABLE
        .iter()
        .find(|(net, len, _)| in4(ip, *net, *len))
        .map(|(_, _, name)| *name)
}

fn in6(ip: Ipv6Addr, net: Ipv6Addr, len: u32) -> bool {
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    };
    u128::from(ip) & mask == u128::from(net) & mask
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().expect("a literal in the table")
}

fn v6_reason(ip: Ipv6Addr) -> Option<String> {
    if ip.is_unspecified() {
        return Some("::, unspecified".into());
    }
    if ip.is_loopback() {
        return Some("::1, loopback".into());
    }
    // Forms that carry an IPv4 address: judged as that address.
    let embedded = |prefix: &str, len: u32, what: &str| -> Option<Option<String>> {
        if !in6(ip, v6(prefix), len) {
            return None;
        }
        let v4 = Ipv4Addr::from((u128::from(ip) & 0xffff_ffff) as u32);
        Some(v4_range(v4).map(|r| format!("{what} of {v4}, in {r}")))
    };
    if let Some(r) = embedded("::ffff:0:0", 96, "the IPv4-mapped form") {
        return r;
    }
    if let Some(r) = embedded("::", 96, "the IPv4-compatible form") {
        return r;
    }
    if let Some(r) = embedded("64:ff9b::", 96, "the NAT64 (64:ff9b::/96) form") {
        return r;
    }
    // Globally reachable exceptions inside 2001::/23.
    const GLOBAL: &[(&str, u32)] = &[
        ("2001:1::1", 128),
        ("2001:1::2", 128),
        ("2001:1::3", 128),
        ("2001:3::", 32),
        ("2001:4:112::", 48),
        ("2001:20::", 28),
        ("2001:30::", 28),
    ];
    if GLOBAL.iter().any(|(net, len)| in6(ip, v6(net), *len)) {
        return None;
    }
    const TABLE: &[(&str, u32, &str)] = &[
        ("::ffff:0:0:0", 96, "::ffff:0:0:0/96, IPv4-translated"),
        (
            "64:ff9b:1::",
            48,
            "64:ff9b:1::/48, local-use IPv4/IPv6 translation",
        ),
        ("100::", 64, "100::/64, discard-only"),
        ("100:0:0:1::", 64, "100:0:0:1::/64, dummy prefix"),
        ("2001:db8::", 32, "2001:db8::/32, documentation"),
        (
            "2001::",
            23,
            "2001::/23, IETF protocol assignments (Teredo, benchmarking, ORCHID)",
        ),
        ("2002::", 16, "2002::/16, 6to4"),
        ("3fff::", 20, "3fff::/20, documentation"),
        ("5f00::", 16, "5f00::/16, SRv6 SIDs"),
        ("fc00::", 7, "fc00::/7, unique local"),
        ("fe80::", 10, "fe80::/10, link-local"),
        ("fec0::", 10, "fec0::/10, site-local (deprecated)"),
        ("ff00::", 8, "ff00::/8, multicast"),
    ];
    if let Some((_, _, name)) = TABLE.iter().find(|(net, len, _)| in6(ip, v6(net), *len)) {
        return Some((*name).into());
    }
    if !in6(ip, v6("2000::"), 3) {
        return Some("outside the global unicast space 2000::/3".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(s: &str) -> bool {
        not_global(s.parse().unwrap()).is_some()
    }

    #[test]
    fn public_addresses_are_allowed() {
        for a in [
            "8.8.8.8",
            "1.1.1.1",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.0.9",
            "192.0.0.10",
            "192.0.1.255",
            "192.0.3.0",
            "192.88.98.255",
            "192.88.100.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "198.51.99.255",
            "198.51.101.0",
            "203.0.112.255",
            "203.0.114.0",
            "223.255.255.255",
            "1.0.0.0",
            "2a00:1450::1",
            "2a00:1450:4001:82b::200e",
            "2001:4860:4860::8888",
            "2606:4700::1111",
            "2001:200::1",
            "2001:1::1",
            "2001:3::1",
            "2001:4:112::1",
            "2001:20::1",
            "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff",
            "2001:db9::",
            "2003::1",
            "3ffe:ffff::1",
            "3fff:1000::",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "::8.8.8.8",
        ] {
            assert!(
                !blocked(a),
                "{a} must be allowed: {:?}",
                not_global(a.parse().unwrap())
            );
        }
    }

    #[test]
    fn special_purpose_ranges_are_refused() {
        for a in [
            "0.0.0.0",
            "0.255.255.255",
            "10.0.0.0",
            "10.0.0.5",
            "10.255.255.255",
            "100.64.0.0",
            "100.127.255.255",
            "127.0.0.1",
            "127.255.255.255",
            "169.254.0.0",
            "169.254.255.255",
            "172.16.0.0",
            "172.31.255.255",
            "192.0.0.0",
            "192.0.0.8",
            "192.0.0.11",
            "192.0.0.255",
            "192.0.2.0",
            "192.0.2.255",
            "192.88.99.1",
            "192.168.0.1",
            "192.168.255.255",
            "198.18.0.0",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.255",
            "224.0.0.1",
            "239.255.255.255",
            "240.0.0.0",
            "255.255.255.254",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:10.0.0.5",
            "::ffff:127.0.0.1",
            "::ffff:192.168.1.1",
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::10.0.0.5",
            "64:ff9b::7f00:1",
            "64:ff9b:1::1",
            "::ffff:0:a00:5",
            "100::",
            "100::ffff:ffff:ffff:ffff",
            "100:0:0:1::1",
            "2001::",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:1::4",
            "2001:2::1",
            "2001:10::1",
            "2001:1ff:ffff::",
            "2001:db8::",
            "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
            "2002::1",
            "2002:c000:0204::1",
            "3fff::1",
            "3fff:fff::",
            "5f00::1",
            "fc00::1",
            "fd12:3456::1",
            "fdff:ffff::",
            "fe80::1",
            "febf:ffff::",
            "fec0::1",
            "ff02::1",
            "ff0e::1",
            "1000::1",
            "4000::1",
        ] {
            assert!(blocked(a), "{a} must be refused");
        }
    }

    #[test]
    fn the_finding_names_the_address_and_range() {
        let f = refusal("10.0.0.5:5222".parse().unwrap(), false).unwrap();
        assert!(
            f.starts_with("address 10.0.0.5 is not globally reachable"),
            "{f}"
        );
        assert!(
            f.contains("10.0.0.0/8") && f.ends_with("allow_private lifts this)"),
            "{f}"
        );
        let f = refusal("[::ffff:127.0.0.1]:5222".parse().unwrap(), false).unwrap();
        assert!(f.contains("IPv4-mapped form of 127.0.0.1"), "{f}");
        assert_eq!(refusal("10.0.0.5:5222".parse().unwrap(), true), None);
        assert_eq!(refusal("8.8.8.8:5222".parse().unwrap(), false), None);
        assert_eq!(refusal("[2a00:1450::1]:5269".parse().unwrap(), false), None);
    }

    #[test]
    fn port_zero_is_never_probed() {
        for allow in [false, true] {
            let f = refusal("8.8.8.8:0".parse().unwrap(), allow).unwrap();
            assert!(f.contains("port 0"), "{f}");
        }
    }
}
