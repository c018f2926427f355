//! Addresses guests may not reach by default: which ranges are not the
//! public internet, and operator-given ranges (`10.0.0.0/8`) that lift
//! that for one environment.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// Why an address is not a public destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Special {
    /// `127.0.0.0/8`, `::1`: this machine.
    Loopback,
    /// `0.0.0.0/8`, `::`: "this host" (reaches loopback on Linux).
    Unspecified,
    /// `169.254.0.0/16`, `fe80::/10`: the link, and cloud metadata.
    LinkLocal,
    /// RFC 1918, shared (`100.64.0.0/10`) and unique-local (`fc00::/7`).
    Private,
    /// Multicast, broadcast, reserved and documentation ranges.
    Reserved,
}

impl fmt::Display for Special {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Special::Loopback => "a loopback address",
            Special::Unspecified => "an unspecified address",
            Special::LinkLocal => "a link-local address",
            Special::Private => "a private address",
            Special::Reserved => "a reserved address",
        })
    }
}

/// What kind of non-public address `ip` is, if it is one. IPv6 forms that
/// carry an IPv4 address (mapped, compatible, NAT64) are judged by it.
pub fn special(ip: IpAddr) -> Option<Special> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => special_v4(v4),
            None => special_v6(v6),
        },
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<Special> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some(Special::Loopback)
    } else if a == 0 {
        Some(Special::Unspecified)
    } else if ip.is_link_local() {
        Some(Special::LinkLocal)
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        Some(Special::Private)
    } else if ip.is_multicast()
        || ip.is_documentation()
        || a >= 240
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        || (a == 198 && (b == 18 || b == 19))
    {
        Some(Special::Reserved)
    } else {
        None
    }
}

fn special_v6(ip: Ipv6Addr) -> Option<Special> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some(Special::Loopback)
    } else if ip.is_unspecified() {
        Some(Special::Unspecified)
    } else if first & 0xffc0 == 0xfe80 {
        Some(Special::LinkLocal)
    } else if first & 0xfe00 == 0xfc00
        || first & 0xffc0 == 0xfec0
        // Local-use NAT64 (RFC 8215): a site's own translator, which may
        // well lead to its private IPv4 ranges.
        || (first == 0x64 && ip.segments()[1] == 0xff9b && ip.segments()[2] == 1)
    {
        Some(Special::Private)
    } else if ip.is_multicast()
        // Documentation, Teredo (its IPv4 part is obscured), discard-only.
        || (first == 0x2001 && matches!(ip.segments()[1], 0x0db8 | 0))
        || ip.segments()[..4] == [0x100, 0, 0, 0]
    {
        Some(Special::Reserved)
    } else {
        None
    }
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-translated (`::ffff:0:a.b.c.d`), IPv4-compatible (`::a.b.c.d`),
/// NAT64 (`64:ff9b::a.b.c.d`) or 6to4 (`2002:AABB:CCDD::`) address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    let mapped = s[..5] == [0; 5] && s[5] == 0xffff;
    let translated = s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0;
    let compatible = s[..6] == [0; 6] && !(s[6] == 0 && s[7] <= 1);
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    if s[0] == 0x2002 {
        return Some(v4(s[1], s[2]));
    }
    (mapped || translated || compatible || nat64).then(|| v4(s[6], s[7]))
}

/// An address range, `10.0.0.0/8` or `fd00::/8`; a bare address is a
/// range of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    /// Parses `addr/bits` or `addr`.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let bad = || {
            format!("invalid address range `{text}`: use a CIDR like 10.0.0.0/8, 127.0.0.1/32 or fd00::/8")
        };
        let (addr, bits) = match text.split_once('/') {
            Some((addr, bits)) => (addr, Some(bits)),
            None => (text, None),
        };
        let net: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            Some(b) => b.parse::<u8>().ok().filter(|&b| b <= max).ok_or_else(bad)?,
            None => max,
        };
        if masked(net, bits) != net {
            return Err(format!(
                "invalid address range `{text}`: the address has bits set past /{bits} (did you mean {}/{bits}?)",
                masked(net, bits)
            ));
        }
        Ok(Cidr { net, bits })
    }

    /// Whether `ip` is in the range. An IPv6 address that carries an IPv4
    /// one (mapped, translated, compatible, NAT64, 6to4) counts as that
    /// IPv4 address, as [`special`] judges it.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        ip.is_ipv4() == self.net.is_ipv4() && masked(ip, self.bits) == self.net
    }
}

fn masked(ip: IpAddr, bits: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.bits)
    }
}

impl TryFrom<String> for Cidr {
    type Error = String;
    fn try_from(text: String) -> Result<Cidr, String> {
        Cidr::parse(&text)
    }
}

impl From<Cidr> for String {
    fn from(cidr: Cidr) -> String {
        cidr.to_string()
    }
}

/// Parses a comma-separated list of ranges; `none` (or nothing) is the
/// empty list.
pub fn parse_ranges(text: &str) -> Result<Vec<Cidr>, String> {
    let text = text.trim();
    if text.is_empty() || text == "none" {
        return Ok(Vec::new());
    }
    text.split(',').map(Cidr::parse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn non_public_addresses_are_classified() {
        for (addr, want) in [
            ("127.0.0.1", Some(Special::Loopback)),
            ("127.1.2.3", Some(Special::Loopback)),
            ("::1", Some(Special::Loopback)),
            ("::ffff:127.0.0.1", Some(Special::Loopback)),
            ("64:ff9b::7f00:1", Some(Special::Loopback)),
            ("::127.0.0.1", Some(Special::Loopback)),
            ("0.0.0.0", Some(Special::Unspecified)),
            ("0.1.2.3", Some(Special::Unspecified)),
            ("::", Some(Special::Unspecified)),
            ("169.254.169.254", Some(Special::LinkLocal)),
            ("fe80::1", Some(Special::LinkLocal)),
            ("::ffff:169.254.169.254", Some(Special::LinkLocal)),
            ("10.1.2.3", Some(Special::Private)),
            ("172.16.0.1", Some(Special::Private)),
            ("172.31.255.255", Some(Special::Private)),
            ("192.168.1.1", Some(Special::Private)),
            ("100.64.0.1", Some(Special::Private)),
            ("fd00::1", Some(Special::Private)),
            ("fc00::1", Some(Special::Private)),
            ("224.0.0.1", Some(Special::Reserved)),
            ("255.255.255.255", Some(Special::Reserved)),
            ("ff02::1", Some(Special::Reserved)),
            ("8.8.8.8", None),
            ("172.32.0.1", None),
            ("100.128.0.1", None),
            ("2606:4700::1111", None),
            ("::ffff:8.8.8.8", None),
            ("::ffff:0:7f00:1", Some(Special::Loopback)),
            ("2002:7f00:1::", Some(Special::Loopback)),
            ("2002:a9fe:a9fe::1", Some(Special::LinkLocal)),
            ("2002:808:808::1", None),
            ("64:ff9b:1::a00:1", Some(Special::Private)),
            ("2001:0:4136:e378::1", Some(Special::Reserved)),
            ("100::1", Some(Special::Reserved)),
        ] {
            assert_eq!(special(ip(addr)), want, "{addr}");
        }
    }

    #[test]
    fn ranges_parse_and_match() {
        let lo = Cidr::parse("127.0.0.0/8").unwrap();
        assert!(lo.contains(ip("127.0.0.1")));
        assert!(lo.contains(ip("::ffff:127.9.9.9")));
        assert!(!lo.contains(ip("128.0.0.1")));
        assert!(!lo.contains(ip("::1")));
        let one = Cidr::parse("10.0.0.7").unwrap();
        assert_eq!(one.to_string(), "10.0.0.7/32");
        assert!(one.contains(ip("10.0.0.7")) && !one.contains(ip("10.0.0.8")));
        let ula = Cidr::parse("fd00::/8").unwrap();
        assert!(ula.contains(ip("fd12::1")) && !ula.contains(ip("fe80::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("1.2.3.4")));
        for bad in ["10.0.0.1/8", "10.0.0.0/33", "x/8", "", "10.0.0.0/-1"] {
            assert!(Cidr::parse(bad).is_err(), "{bad} was taken");
        }
        assert_eq!(parse_ranges("none").unwrap(), []);
        assert_eq!(parse_ranges("10.0.0.0/8, ::1").unwrap().len(), 2);
        let json = serde_json::to_string(&lo).unwrap();
        assert_eq!(json, "\"127.0.0.0/8\"");
        assert_eq!(serde_json::from_str::<Cidr>(&json).unwrap(), lo);
    }
}
