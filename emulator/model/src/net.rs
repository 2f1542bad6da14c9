//! IPv4 and IPv6 CIDR blocks and MAC addresses, with the VPC's address rules.
//!
//! A vSwitch reserves its first address and its last three; the gateway is the last address
//! minus two (`.253` in a /24), which is what Terway derives (`GetIPAtIndex(-3)`) and what ECS ARP
//! tables show. Terway derives a vSwitch's IPv6 gateway with the same function from its /64
//! (`DeriveGatewayIP(IPv6CIDR)`, so `…:ffff:ffff:ffff:fffd`), and the same four addresses are kept
//! out of an IPv6 vSwitch's pool here. These values are parsed strictly: a CIDR must name its
//! network address (`10.0.4.0/24`, not `10.0.4.7/24`), as the cloud rejects the latter as
//! malformed.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IPv4 network: a normalized address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    network: u32,
    prefix: u8,
}

impl Cidr {
    pub fn new(network: Ipv4Addr, prefix: u8) -> Option<Cidr> {
        if prefix > 32 {
            return None;
        }
        let network = u32::from(network);
        (network & !Self::mask_of(prefix) == 0).then_some(Cidr { network, prefix })
    }

    fn mask_of(prefix: u8) -> u32 {
        if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) }
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network)
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(Self::mask_of(self.prefix))
    }

    /// Number of addresses in the block.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    pub fn first(&self) -> u32 {
        self.network
    }

    pub fn last(&self) -> u32 {
        self.network | !Self::mask_of(self.prefix)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask_of(self.prefix) == self.network
    }

    /// `other` lies entirely inside `self`.
    pub fn covers(&self, other: &Cidr) -> bool {
        other.prefix >= self.prefix && self.contains(other.network())
    }

    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.covers(other) || other.covers(self)
    }

    /// The vSwitch gateway: last address − 2. None for blocks too small to have one (/31, /32).
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        (self.prefix <= 30).then(|| Ipv4Addr::from(self.last() - 2))
    }

    /// Whether `ip` is one of the addresses the VPC keeps for itself in a vSwitch of this block.
    pub fn is_reserved(&self, ip: Ipv4Addr) -> bool {
        let ip = u32::from(ip);
        // `last − 3 < ip`, written so that the top of the address space cannot overflow.
        ip == self.first() || ip > self.last().saturating_sub(3)
    }

    /// Addresses an ENI may hold: everything but the reserved four.
    pub fn usable(&self) -> u64 {
        self.size().saturating_sub(4)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let (addr, prefix) = s.trim().split_once('/').ok_or(())?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| ())?;
        // Only plain decimal prefixes: "+24" or "024" are not what the cloud accepts.
        if prefix.is_empty() || prefix.len() > 2 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(());
        }
        let prefix: u8 = prefix.parse().map_err(|_| ())?;
        Cidr::new(addr, prefix).ok_or(())
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|_| serde::de::Error::custom(format!("bad CIDR {s:?}")))
    }
}

/// An IPv6 network: a normalized address and a prefix length. A VPC holds a /56, a vSwitch a
/// /64 of it, an ENI's IPv6 prefix a /80 of that.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr6 {
    network: u128,
    prefix: u8,
}

impl Cidr6 {
    pub fn new(network: Ipv6Addr, prefix: u8) -> Option<Cidr6> {
        if prefix > 128 {
            return None;
        }
        let network = u128::from(network);
        (network & !Self::mask_of(prefix) == 0).then_some(Cidr6 { network, prefix })
    }

    fn mask_of(prefix: u8) -> u128 {
        if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix)) }
    }

    pub fn network(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.network)
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn first(&self) -> u128 {
        self.network
    }

    pub fn last(&self) -> u128 {
        self.network | !Self::mask_of(self.prefix)
    }

    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        u128::from(ip) & Self::mask_of(self.prefix) == self.network
    }

    /// `other` lies entirely inside `self`.
    pub fn covers(&self, other: &Cidr6) -> bool {
        other.prefix >= self.prefix && self.contains(other.network())
    }

    pub fn overlaps(&self, other: &Cidr6) -> bool {
        self.covers(other) || other.covers(self)
    }

    /// The `index`-th block of length `len` inside this one (a vSwitch's /64 is the VPC's /56
    /// with the 8 bits `CreateVSwitch.Ipv6CidrBlock` gives). None if it does not fit.
    pub fn subnet(&self, len: u8, index: u128) -> Option<Cidr6> {
        if len < self.prefix || len > 128 {
            return None;
        }
        let bits = u32::from(len - self.prefix);
        if bits < 128 && index >> bits != 0 {
            return None;
        }
        let shift = 128 - u32::from(len);
        let offset = if shift >= 128 { 0 } else { index << shift };
        Some(Cidr6 { network: self.network | offset, prefix: len })
    }

    /// The vSwitch gateway by Terway's rule (last − 2); None for blocks smaller than four.
    pub fn gateway(&self) -> Option<Ipv6Addr> {
        (self.prefix <= 126).then(|| Ipv6Addr::from(self.last() - 2))
    }

    /// Whether `ip` is one of the four addresses the VPC keeps (first and last three).
    pub fn is_reserved(&self, ip: Ipv6Addr) -> bool {
        let ip = u128::from(ip);
        ip == self.first() || ip > self.last().saturating_sub(3)
    }
}

impl fmt::Display for Cidr6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix)
    }
}

impl FromStr for Cidr6 {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let (addr, prefix) = s.trim().split_once('/').ok_or(())?;
        let addr: Ipv6Addr = addr.parse().map_err(|_| ())?;
        if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(());
        }
        let prefix: u8 = prefix.parse().map_err(|_| ())?;
        Cidr6::new(addr, prefix).ok_or(())
    }
}

impl Serialize for Cidr6 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr6 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|_| serde::de::Error::custom(format!("bad IPv6 CIDR {s:?}")))
    }
}

/// Parse `a.b.c.d` or `a.b.c.d/n` (a single address means /32), as the cloud accepts for
/// security-group peers.
pub fn parse_peer_cidr(s: &str) -> Option<Cidr> {
    if s.contains('/') { s.parse().ok() } else { s.trim().parse::<Ipv4Addr>().ok().and_then(|a| Cidr::new(a, 32)) }
}

/// Parse an IPv6 address (a /128) or CIDR block, as `Ipv6SourceCidrIp` takes them.
pub fn parse_peer_cidr6(s: &str) -> Option<Cidr6> {
    if s.contains('/') { s.parse().ok() } else { s.trim().parse::<Ipv6Addr>().ok().and_then(|a| Cidr6::new(a, 128)) }
}

/// A MAC address. ENIs get addresses in Alibaba's OUI `00:16:3e`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    pub const ALIBABA_OUI: [u8; 3] = [0x00, 0x16, 0x3e];
    /// The gateway MAC the VPC answers every ARP request with.
    pub const GATEWAY: Mac = Mac([0xee, 0xff, 0xff, 0xff, 0xff, 0xff]);
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

impl FromStr for Mac {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let p = parts.next().ok_or(())?;
            if p.len() != 2 {
                return Err(());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| ())?;
        }
        if parts.next().is_some() {
            return Err(());
        }
        Ok(Mac(out))
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|_| serde::de::Error::custom(format!("bad MAC {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn gateway_is_last_minus_two() {
        assert_eq!(c("192.168.1.0/24").gateway(), Some(Ipv4Addr::new(192, 168, 1, 253)));
        assert_eq!(c("10.0.0.0/30").gateway(), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(c("10.0.0.0/31").gateway(), None);
        assert_eq!(c("10.0.0.0/16").gateway(), Some(Ipv4Addr::new(10, 0, 255, 253)));
    }

    #[test]
    fn reserved_are_first_and_last_three() {
        let v = c("192.168.1.0/24");
        for last in [0u8, 253, 254, 255] {
            assert!(v.is_reserved(Ipv4Addr::new(192, 168, 1, last)), "{last}");
        }
        for free in [1u8, 2, 100, 252] {
            assert!(!v.is_reserved(Ipv4Addr::new(192, 168, 1, free)), "{free}");
        }
        assert_eq!(v.usable(), 252);
        let top = c("255.255.255.0/24");
        assert!(top.is_reserved(Ipv4Addr::new(255, 255, 255, 255)));
        assert!(top.is_reserved(Ipv4Addr::new(255, 255, 255, 253)));
        assert!(!top.is_reserved(Ipv4Addr::new(255, 255, 255, 252)));
        assert_eq!(c("10.0.0.0/29").usable(), 4);
    }

    #[test]
    fn parsing_is_strict() {
        for bad in ["10.0.0.1/24", "10.0.0.0", "10.0.0.0/33", "10.0.0.0/+8", "x/8", "10.0.0.0/", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert_eq!(parse_peer_cidr("10.0.4.30"), Some(c("10.0.4.30/32")));
        assert!(c("10.0.0.0/8").covers(&c("10.0.4.0/24")));
        assert!(!c("10.0.4.0/24").covers(&c("10.0.0.0/8")));
        assert!(c("10.0.4.0/24").overlaps(&c("10.0.0.0/8")));
        assert!(!c("10.0.4.0/24").overlaps(&c("10.0.5.0/24")));
    }

    #[test]
    fn ipv6_blocks() {
        let vpc: Cidr6 = "2408:4005:300::/56".parse().unwrap();
        let vsw = vpc.subnet(64, 3).unwrap();
        assert_eq!(vsw.to_string(), "2408:4005:300:3::/64");
        assert_eq!(vpc.subnet(64, 256), None, "only 8 bits for a /64 of a /56");
        assert!(vpc.covers(&vsw) && !vsw.covers(&vpc));
        assert_eq!(vsw.gateway(), Some("2408:4005:300:3:ffff:ffff:ffff:fffd".parse().unwrap()));
        assert!(vsw.is_reserved("2408:4005:300:3::".parse().unwrap()));
        assert!(vsw.is_reserved("2408:4005:300:3:ffff:ffff:ffff:fffd".parse().unwrap()));
        assert!(!vsw.is_reserved("2408:4005:300:3::1".parse().unwrap()));
        assert_eq!(vsw.subnet(80, 1).unwrap().to_string(), "2408:4005:300:3:1::/80");
        for bad in ["2408:4005:300::1/56", "2408::/129", "2408::", "10.0.0.0/8", "2408::/+8"] {
            assert!(bad.parse::<Cidr6>().is_err(), "{bad}");
        }
    }

    #[test]
    fn mac_round_trip() {
        let m: Mac = "00:16:3e:0a:1b:2c".parse().unwrap();
        assert_eq!(m.to_string(), "00:16:3e:0a:1b:2c");
        assert!("00:16:3e:0a:1b".parse::<Mac>().is_err());
        assert!("00:16:3e:0a:1b:2c:00".parse::<Mac>().is_err());
    }
}
