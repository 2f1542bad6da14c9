//! IP prefixes of either family ([`IpCidr<A>`], written [`Cidr`] for IPv4 and [`Cidr6`] for IPv6)
//! and the VPC's rules about the addresses inside a vSwitch's block.
//!
//! Cloud behaviour followed: a vSwitch keeps its first address and its last three for itself, and
//! its gateway is the last address minus two (`.253` in a /24). That is what ECS ARP tables show
//! and what Terway derives (`GetIPAtIndex(-3)`); Terway derives the IPv6 gateway of a vSwitch's
//! /64 with the same function (`…:ffff:ffff:ffff:fffd`), so both families share one rule here.
//!
//! Two ways in, because two callers need different things:
//! - [`IpCidr::new`] and `str::parse` are strict: the address must be the network address
//!   (`10.0.4.0/24`, not `10.0.4.7/24`), as the cloud rejects the latter as malformed. The model
//!   and the faces use these.
//! - [`IpCidr::containing`] ignores host bits, which is how a prefix *matches*: the pipeline and
//!   the node side build prefixes from an address plus a length (an interface's `10.0.4.7/24`).
//!
//! Must not: allocate or panic on any input (the pipeline matches with [`IpCidr::contains`] per
//! frame), or know about vSwitches beyond the reserved-address rule.

use core::fmt;
use core::hash::Hash;
use core::net::{Ipv4Addr, Ipv6Addr};
use core::ops::{BitAnd, BitOr, Not};
use core::str::FromStr;

mod sealed {
    pub trait Sealed {}
    impl Sealed for core::net::Ipv4Addr {}
    impl Sealed for core::net::Ipv6Addr {}
}

/// An address family, named by its address type: [`Ipv4Addr`] or [`Ipv6Addr`]. Sealed: the
/// arithmetic below is only checked for these two.
pub trait Family:
    sealed::Sealed + Copy + Eq + Ord + Hash + fmt::Debug + fmt::Display + FromStr + Send + Sync + 'static
{
    /// The address as an integer (`u32`, `u128`), so masks are single machine operations.
    type Bits: Copy
        + Eq
        + Ord
        + Hash
        + fmt::Debug
        + BitAnd<Output = Self::Bits>
        + BitOr<Output = Self::Bits>
        + Not<Output = Self::Bits>;
    /// How many addresses a block holds: `u64` for IPv4 (a /0 has 2³² of them), `u128` for
    /// IPv6, where `::/0` saturates at `u128::MAX`.
    type Count: Copy + Eq + Ord + fmt::Debug + fmt::Display;
    /// Address width in bits: 32 or 128.
    const BITS: u8;
    /// "IPv4" or "IPv6", for messages.
    const NAME: &'static str;
    /// The most digits a prefix length may have when parsed ("32", "128").
    const PREFIX_DIGITS: usize;

    fn to_bits(self) -> Self::Bits;
    fn from_bits(bits: Self::Bits) -> Self;
    /// The netmask of a prefix length; the caller keeps `prefix <= BITS`.
    fn mask(prefix: u8) -> Self::Bits;
    /// `bits - n`, or `None` below zero.
    fn checked_sub(bits: Self::Bits, n: u8) -> Option<Self::Bits>;
    /// `bits + index << shift` for [`IpCidr::subnet`]; `None` if `index` does not fit in `width`
    /// bits.
    fn offset(bits: Self::Bits, index: u128, width: u8, shift: u8) -> Option<Self::Bits>;
    /// The size of a block with `host_bits` free bits.
    fn count(host_bits: u8) -> Self::Count;
    /// `count - n`, zero below zero.
    fn count_minus(count: Self::Count, n: u8) -> Self::Count;
}

macro_rules! family {
    ($addr:ty, $bits:ty, $count:ty, $width:expr, $name:expr, $digits:expr) => {
        impl Family for $addr {
            type Bits = $bits;
            type Count = $count;
            const BITS: u8 = $width;
            const NAME: &'static str = $name;
            const PREFIX_DIGITS: usize = $digits;

            #[inline]
            fn to_bits(self) -> $bits {
                <$bits>::from(self)
            }

            #[inline]
            fn from_bits(bits: $bits) -> Self {
                <$addr>::from(bits)
            }

            #[inline]
            fn mask(prefix: u8) -> $bits {
                // A shift by the full width is undefined for the integer, hence the special case.
                <$bits>::MAX.checked_shl(u32::from($width - prefix)).unwrap_or(0)
            }

            #[inline]
            fn checked_sub(bits: $bits, n: u8) -> Option<$bits> {
                bits.checked_sub(<$bits>::from(n))
            }

            fn offset(bits: $bits, index: u128, width: u8, shift: u8) -> Option<$bits> {
                if width < 128 && index >> width != 0 {
                    return None;
                }
                let index = <$bits>::try_from(index).ok()?;
                Some(bits | index.checked_shl(u32::from(shift)).unwrap_or(0))
            }

            fn count(host_bits: u8) -> $count {
                <$count>::from(1u8).checked_shl(u32::from(host_bits)).unwrap_or(<$count>::MAX)
            }

            fn count_minus(count: $count, n: u8) -> $count {
                count.saturating_sub(<$count>::from(n))
            }
        }
    };
}

family!(Ipv4Addr, u32, u64, 32, "IPv4", 2);
family!(Ipv6Addr, u128, u128, 128, "IPv6", 3);

/// An IP prefix: a network address with its host bits zero, and a length.
///
/// Ordered by network address, then length, so a sorted list walks the address space. The
/// network is kept as the address type (byte-aligned) rather than as `A::Bits`: an IPv4 prefix is
/// then 5 bytes, not 8, so the pipeline's compiled security-group rule, which holds two and is
/// scanned per new flow, keeps the 36 bytes it had before this type existed (44 otherwise).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpCidr<A: Family> {
    network: A,
    prefix: u8,
}

/// An IPv4 prefix: a VPC's or vSwitch's block, a security-group peer, a route.
pub type Cidr = IpCidr<Ipv4Addr>;
/// An IPv6 prefix. A VPC holds a /56, a vSwitch a /64 of it, an ENI's IPv6 prefix a /80 of that.
pub type Cidr6 = IpCidr<Ipv6Addr>;

impl<A: Family> IpCidr<A> {
    /// The block `network/prefix`; `None` if the prefix is too long for the family or `network`
    /// has host bits set (strict, as the cloud parses CIDRs).
    pub fn new(network: A, prefix: u8) -> Option<Self> {
        let c = Self::containing(network, prefix)?;
        (c.network == network).then_some(c)
    }

    /// The block of length `prefix` that `addr` lies in: host bits are dropped, as a prefix
    /// matches. `None` only if the prefix is too long for the family.
    pub fn containing(addr: A, prefix: u8) -> Option<Self> {
        (prefix <= A::BITS).then(|| IpCidr { network: A::from_bits(addr.to_bits() & A::mask(prefix)), prefix })
    }

    /// A single address: a /32 or a /128.
    pub fn host(addr: A) -> Self {
        IpCidr { network: addr, prefix: A::BITS }
    }

    /// Everything: `0.0.0.0/0` or `::/0`.
    pub fn any() -> Self {
        IpCidr { network: A::from_bits(A::mask(0)), prefix: 0 }
    }

    pub fn network(&self) -> A {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// `255.255.255.0` for a /24: what DHCP and the metadata service call the block.
    pub fn netmask(&self) -> A {
        A::from_bits(A::mask(self.prefix))
    }

    /// The first address as an integer (the network address).
    pub fn first(&self) -> A::Bits {
        self.network.to_bits()
    }

    /// The last address as an integer.
    pub fn last(&self) -> A::Bits {
        self.network.to_bits() | !A::mask(self.prefix)
    }

    /// Number of addresses in the block.
    pub fn size(&self) -> A::Count {
        A::count(A::BITS - self.prefix)
    }

    /// Addresses an ENI may hold: everything but the reserved four.
    pub fn usable(&self) -> A::Count {
        A::count_minus(self.size(), 4)
    }

    #[inline]
    pub fn contains(&self, ip: A) -> bool {
        ip.to_bits() & A::mask(self.prefix) == self.network.to_bits()
    }

    /// `other` lies entirely inside `self`.
    pub fn covers(&self, other: &Self) -> bool {
        other.prefix >= self.prefix && self.contains(other.network())
    }

    pub fn overlaps(&self, other: &Self) -> bool {
        self.covers(other) || other.covers(self)
    }

    /// The vSwitch gateway: last address − 2. `None` for blocks too small to keep four addresses
    /// (an IPv4 /31 or /32, an IPv6 /127 or /128).
    pub fn gateway(&self) -> Option<A> {
        if self.prefix > A::BITS - 2 {
            return None;
        }
        A::checked_sub(self.last(), 2).map(A::from_bits)
    }

    /// Whether `ip` is one of the addresses the VPC keeps for itself in a vSwitch of this block:
    /// the first and the last three.
    pub fn is_reserved(&self, ip: A) -> bool {
        let ip = ip.to_bits();
        // `ip >= last − 2`, written so that the bottom of a tiny block cannot underflow.
        ip == self.first() || A::checked_sub(self.last(), 3).is_none_or(|floor| ip > floor)
    }

    /// The `index`-th block of length `len` inside this one (a vSwitch's /64 is the VPC's /56
    /// with the 8 bits `CreateVSwitch.Ipv6CidrBlock` gives). `None` if it does not fit.
    pub fn subnet(&self, len: u8, index: u128) -> Option<Self> {
        if len < self.prefix || len > A::BITS {
            return None;
        }
        let network = A::offset(self.first(), index, len - self.prefix, A::BITS - len)?;
        Some(IpCidr { network: A::from_bits(network), prefix: len })
    }

    /// `addr/len` with host bits allowed and dropped, as [`IpCidr::containing`] builds it: an
    /// interface's address with its prefix, or a block from a peer that is not the cloud's
    /// strict parser. The length is still a plain decimal.
    pub fn parse_lenient(s: &str) -> Option<Self> {
        let (addr, prefix) = s.trim().split_once('/')?;
        let addr: A = addr.parse().ok()?;
        Self::containing(addr, parse_prefix::<A>(prefix).ok()?)
    }

    /// A security-group peer: an address (a /32 or /128) or a block, as `SourceCidrIp`,
    /// `DestCidrIp` and their `Ipv6…` forms take them.
    pub fn parse_peer(s: &str) -> Option<Self> {
        if s.contains('/') { s.parse().ok() } else { s.trim().parse::<A>().ok().map(Self::host) }
    }
}

impl<A: Family> fmt::Display for IpCidr<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix)
    }
}

/// The same text as `Display`: a prefix's integer form means nothing to a reader.
impl<A: Family> fmt::Debug for IpCidr<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a string is not a CIDR block of the family. One value: every caller answers the same
/// "malformed" error the cloud does, whatever part was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadCidr;

impl fmt::Display for BadCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a CIDR block (network address/prefix length)")
    }
}

impl std::error::Error for BadCidr {}

impl<A: Family> FromStr for IpCidr<A> {
    type Err = BadCidr;

    /// Strict: `network/len` with the network address, and a plain decimal length ("+24" or
    /// "024" are not what the cloud accepts).
    fn from_str(s: &str) -> Result<Self, BadCidr> {
        let (addr, prefix) = s.trim().split_once('/').ok_or(BadCidr)?;
        let addr: A = addr.parse().map_err(|_| BadCidr)?;
        IpCidr::new(addr, parse_prefix::<A>(prefix)?).ok_or(BadCidr)
    }
}

/// A prefix length as the cloud writes it: plain decimal digits, no sign, no leading zeros
/// beyond the family's width ("+24" and "024" are refused).
fn parse_prefix<A: Family>(s: &str) -> Result<u8, BadCidr> {
    if s.is_empty() || s.len() > A::PREFIX_DIGITS || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BadCidr);
    }
    s.parse().map_err(|_| BadCidr)
}

#[cfg(feature = "serde")]
impl<A: Family> serde::Serialize for IpCidr<A> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de, A: Family> serde::Deserialize<'de> for IpCidr<A> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(|_| serde::de::Error::custom(format!("bad {} CIDR {s:?}", A::NAME)))
    }
}

/// `a.b.c.d` or `a.b.c.d/n` (a single address means /32), as the cloud accepts for
/// security-group peers.
pub fn parse_peer_cidr(s: &str) -> Option<Cidr> {
    Cidr::parse_peer(s)
}

/// An IPv6 address (a /128) or CIDR block, as `Ipv6SourceCidrIp` takes them.
pub fn parse_peer_cidr6(s: &str) -> Option<Cidr6> {
    Cidr6::parse_peer(s)
}

/// The IPv4 constants the pipeline needs at compile time (trait methods cannot be `const`).
impl IpCidr<Ipv4Addr> {
    /// [`IpCidr::containing`] in a `const` context; `None` for a prefix over 32.
    pub const fn containing_const(addr: Ipv4Addr, prefix: u8) -> Option<Cidr> {
        if prefix > 32 {
            return None;
        }
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
        Some(IpCidr { network: Ipv4Addr::from_bits(addr.to_bits() & mask), prefix })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn gateway_is_last_minus_two() {
        assert_eq!(c("192.168.1.0/24").gateway(), Some(Ipv4Addr::new(192, 168, 1, 253)));
        assert_eq!(c("10.0.0.0/30").gateway(), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(c("10.0.0.0/31").gateway(), None);
        assert_eq!(c("10.0.0.0/16").gateway(), Some(Ipv4Addr::new(10, 0, 255, 253)));
        let vsw: Cidr6 = "2408:4005:300:3::/64".parse().unwrap();
        assert_eq!(vsw.gateway(), Some("2408:4005:300:3:ffff:ffff:ffff:fffd".parse().unwrap()));
        assert_eq!("2408::/127".parse::<Cidr6>().unwrap().gateway(), None);
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
        assert_eq!(c("0.0.0.0/0").size(), 1 << 32);
        assert_eq!("::/0".parse::<Cidr6>().unwrap().size(), u128::MAX, "saturates");
    }

    #[test]
    fn strict_parsing_and_lenient_matching() {
        for bad in ["10.0.0.1/24", "10.0.0.0", "10.0.0.0/33", "10.0.0.0/+8", "10.0.0.0/024", "x/8", "10.0.0.0/", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert_eq!(Cidr::containing(Ipv4Addr::new(10, 0, 4, 7), 24), Some(c("10.0.4.0/24")));
        assert_eq!(Cidr::new(Ipv4Addr::new(10, 0, 4, 7), 24), None);
        assert_eq!(Cidr::containing(Ipv4Addr::new(10, 0, 4, 7), 33), None);
        let host_bits = Cidr::containing(Ipv4Addr::new(10, 1, 2, 3), 16).unwrap();
        assert!(host_bits.contains(Ipv4Addr::new(10, 1, 200, 1)));
        assert!(!host_bits.contains(Ipv4Addr::new(10, 2, 0, 1)));
        assert!(Cidr::any().contains(Ipv4Addr::new(1, 2, 3, 4)));
        let one = Cidr::host(Ipv4Addr::new(1, 2, 3, 4));
        assert!(one.contains(Ipv4Addr::new(1, 2, 3, 4)) && !one.contains(Ipv4Addr::new(1, 2, 3, 5)));
        assert_eq!(Cidr::parse_lenient("10.0.4.7/24"), Some(c("10.0.4.0/24")));
        for bad in ["10.0.4.7", "10.0.4.7/33", "10.0.4.7/+8", "2408::/8"] {
            assert_eq!(Cidr::parse_lenient(bad), None, "{bad}");
        }
        assert_eq!(parse_peer_cidr("10.0.4.30"), Some(c("10.0.4.30/32")));
        assert!(c("10.0.0.0/8").covers(&c("10.0.4.0/24")));
        assert!(!c("10.0.4.0/24").covers(&c("10.0.0.0/8")));
        assert!(c("10.0.4.0/24").overlaps(&c("10.0.0.0/8")));
        assert!(!c("10.0.4.0/24").overlaps(&c("10.0.5.0/24")));
        assert_eq!(c("10.0.4.0/24").netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(format!("{:?}", c("10.0.4.0/24")), "10.0.4.0/24");
        assert_eq!(Cidr::containing_const(Ipv4Addr::new(100, 64, 1, 1), 10), Some(c("100.64.0.0/10")));
    }

    #[test]
    fn layouts_stay_small() {
        assert_eq!(size_of::<Cidr>(), 5);
        assert_eq!(size_of::<Option<Cidr>>(), 6);
        assert_eq!(size_of::<Cidr6>(), 17);
    }

    #[test]
    fn ipv6_blocks() {
        let vpc: Cidr6 = "2408:4005:300::/56".parse().unwrap();
        let vsw = vpc.subnet(64, 3).unwrap();
        assert_eq!(vsw.to_string(), "2408:4005:300:3::/64");
        assert_eq!(vpc.subnet(64, 256), None, "only 8 bits for a /64 of a /56");
        assert!(vpc.covers(&vsw) && !vsw.covers(&vpc));
        assert!(vsw.is_reserved("2408:4005:300:3::".parse().unwrap()));
        assert!(vsw.is_reserved("2408:4005:300:3:ffff:ffff:ffff:fffd".parse().unwrap()));
        assert!(!vsw.is_reserved("2408:4005:300:3::1".parse().unwrap()));
        assert_eq!(vsw.subnet(80, 1).unwrap().to_string(), "2408:4005:300:3:1::/80");
        for bad in ["2408:4005:300::1/56", "2408::/129", "2408::", "10.0.0.0/8", "2408::/+8", "2408::/0064"] {
            assert!(bad.parse::<Cidr6>().is_err(), "{bad}");
        }
        assert_eq!(parse_peer_cidr6("2408::1"), Some(Cidr6::host("2408::1".parse().unwrap())));
        assert_eq!(c("10.0.0.0/8").subnet(24, 5), Some(c("10.0.5.0/24")));
        assert_eq!(c("10.0.0.0/8").subnet(24, 1 << 16), None);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serde_as_strings() {
        let v: Cidr6 = serde_json::from_str("\"2408::/56\"").unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"2408::/56\"");
        assert!(serde_json::from_str::<Cidr>("\"10.0.0.1/8\"").is_err());
    }

    /// The naive model every property compares against: addresses as u128 in a `bits`-wide
    /// space, blocks as `[lo, hi]` ranges.
    #[derive(Debug, Clone, Copy)]
    struct Naive {
        lo: u128,
        hi: u128,
    }

    fn naive(addr: u128, prefix: u8, bits: u8) -> Naive {
        let host = u32::from(bits - prefix);
        let size = if host == 128 { None } else { Some(1u128 << host) };
        match size {
            None => Naive { lo: 0, hi: u128::MAX },
            Some(size) => {
                let lo = addr / size * size;
                Naive { lo, hi: lo + (size - 1) }
            }
        }
    }

    /// Checks one family against the naive model; `a`, `b`, `ip` are already in range.
    fn agree<A: Family>(
        a: u128,
        pa: u8,
        b: u128,
        pb: u8,
        ip: u128,
        to_addr: fn(u128) -> A,
        to_int: fn(A::Bits) -> u128,
    ) {
        let (x, y) = (IpCidr::containing(to_addr(a), pa).unwrap(), IpCidr::containing(to_addr(b), pb).unwrap());
        let (nx, ny) = (naive(a, pa, A::BITS), naive(b, pb, A::BITS));
        assert_eq!((to_int(x.first()), to_int(x.last())), (nx.lo, nx.hi));
        assert_eq!(x.contains(to_addr(ip)), nx.lo <= ip && ip <= nx.hi);
        assert_eq!(x.covers(&y), nx.lo <= ny.lo && ny.hi <= nx.hi);
        assert_eq!(x.overlaps(&y), nx.lo <= ny.hi && ny.lo <= nx.hi);
        assert_eq!(IpCidr::new(to_addr(a), pa).is_some(), a == nx.lo);
        let span = nx.hi - nx.lo;
        let gateway = (span >= 3).then(|| to_addr(nx.hi - 2));
        assert_eq!(x.gateway(), gateway);
        let reserved = ip == nx.lo || ip.checked_add(3).is_none_or(|x| x > nx.hi);
        let in_block = nx.lo <= ip && ip <= nx.hi;
        if in_block {
            assert_eq!(x.is_reserved(to_addr(ip)), reserved, "{x} {ip}");
        }
        let round: IpCidr<A> = x.to_string().parse().unwrap();
        assert_eq!(round, x);
    }

    /// An address near the block's edges, where the rules are, or anywhere.
    fn near(base: u128, bits: u8) -> impl Strategy<Value = u128> {
        let top = if bits == 128 { u128::MAX } else { (1u128 << bits) - 1 };
        prop_oneof![
            (0u128..8).prop_map(move |d| base.saturating_add(d) & top),
            (0u128..8).prop_map(move |d| base.saturating_sub(d) & top),
            any::<u128>().prop_map(move |x| x & top),
            Just(0),
            Just(top),
        ]
    }

    proptest! {
        #[test]
        fn ipv4_agrees_with_naive(a in any::<u32>(), pa in 0u8..=32, b in any::<u32>(), pb in 0u8..=32, d in 0u8..3, raw in any::<u32>()) {
            let nb = naive(u128::from(a), pa, 32);
            // Often an address at one of the block's edges, where off-by-ones live.
            let ip = match d { 0 => nb.lo + u128::from(raw % 4), 1 => nb.hi - u128::from(raw % 4).min(nb.hi - nb.lo), _ => u128::from(raw) };
            agree::<Ipv4Addr>(u128::from(a), pa, u128::from(b), pb, ip, |x| Ipv4Addr::from(x as u32), u128::from);
        }

        #[test]
        fn ipv6_agrees_with_naive(a in any::<u128>(), pa in 0u8..=128, b in any::<u128>(), pb in 0u8..=128, ip in near(u128::MAX / 3, 128), d in 0u8..3, raw in any::<u128>()) {
            let nb = naive(a, pa, 128);
            let ip = match d { 0 => nb.lo.saturating_add(raw % 4).min(nb.hi), 1 => nb.hi - (raw % 4).min(nb.hi - nb.lo), _ => ip };
            agree::<Ipv6Addr>(a, pa, b, pb, ip, Ipv6Addr::from, |x| x);
        }

        #[test]
        fn subnets_tile_their_parent(a in any::<u32>(), p in 0u8..=32, extra in 0u8..=8, index in 0u128..300) {
            let parent = Cidr::containing(Ipv4Addr::from(a), p).unwrap();
            let len = p.saturating_add(extra).min(32);
            let width = len - p;
            match parent.subnet(len, index) {
                Some(s) => {
                    prop_assert!(index < 1u128 << width);
                    prop_assert!(parent.covers(&s));
                    prop_assert_eq!(u128::from(s.first()) - u128::from(parent.first()), index << (32 - len));
                }
                None => prop_assert!(index >= 1u128 << width),
            }
        }
    }
}
