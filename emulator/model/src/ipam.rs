//! Per-vSwitch IPv4 address allocation.
//!
//! A vSwitch hands out every address of its CIDR except the first and the last three (the
//! reserved four; `.0`, `.253`, `.254`, `.255` in a /24). `AvailableIpAddressCount` is the usable
//! size minus what is held. Allocation is next-fit from a moving cursor, so a released address is
//! not handed out again at once (the cloud picks addresses "at random"; next-fit gives the same
//! effect deterministically). The allocator is an index: it is rebuilt from the ENIs on restore,
//! never persisted itself.
//!
//! Picking and reserving are separate steps so an action can find all the addresses it needs
//! before it changes anything: an action that fails leaves the allocator untouched.
//!
//! Prefixes (`Ipv4PrefixCount`, the ENI's "prefix mode") are carved from the same pool: an IPv4
//! /28 is sixteen addresses no one holds, aligned, none of them reserved, and it holds all
//! sixteen (so `AvailableIpAddressCount` drops by 16, as a block of the vSwitch is gone). The
//! cloud carves prefixes from a reserved CIDR block the user sets aside on the vSwitch; enifab
//! has no reserved blocks and carves from the whole vSwitch, which is the same answer for a
//! caller that never names one.
//!
//! [`Ipam6`] does the same for a vSwitch's IPv6 /64: single addresses next-fit from a cursor, /80
//! prefixes that contain no held address. A /64 never runs out in practice, so it keeps only
//! what is held.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::net::{Cidr, Cidr6};

/// The length of an IPv4 prefix the cloud assigns to an ENI.
pub const IPV4_PREFIX_LEN: u8 = 28;
/// The length of an IPv6 prefix the cloud assigns to an ENI.
pub const IPV6_PREFIX_LEN: u8 = 80;

#[derive(Clone, Debug)]
pub struct Ipam {
    cidr: Cidr,
    used: HashSet<u32>,
    cursor: u32,
}

impl Ipam {
    pub fn new(cidr: Cidr) -> Ipam {
        Ipam { cidr, used: HashSet::new(), cursor: cidr.first() + 1 }
    }

    pub fn cidr(&self) -> Cidr {
        self.cidr
    }

    pub fn available(&self) -> u64 {
        self.cidr.usable().saturating_sub(self.used.len() as u64)
    }

    pub fn is_allocatable(&self, ip: Ipv4Addr) -> bool {
        self.cidr.contains(ip) && !self.cidr.is_reserved(ip)
    }

    pub fn is_used(&self, ip: Ipv4Addr) -> bool {
        self.used.contains(&u32::from(ip))
    }

    /// Choose `n` free addresses, skipping `exclude` (addresses the same request asks for by
    /// name). Changes nothing; `None` if the vSwitch has too few.
    pub fn pick(&self, n: usize, exclude: &[Ipv4Addr]) -> Option<Vec<Ipv4Addr>> {
        if n == 0 {
            return Some(Vec::new());
        }
        if (self.available() as usize) < n {
            return None;
        }
        let lo = self.cidr.first() + 1;
        let hi = self.cidr.last().checked_sub(3)?; // inclusive upper bound of usable addresses
        if hi < lo {
            return None;
        }
        let span = hi - lo + 1;
        let start = if (lo..=hi).contains(&self.cursor) { self.cursor } else { lo };
        let mut out = Vec::with_capacity(n);
        for step in 0..span {
            let ip = lo + (start - lo + step) % span;
            if !self.used.contains(&ip) && !exclude.contains(&Ipv4Addr::from(ip)) {
                out.push(Ipv4Addr::from(ip));
                if out.len() == n {
                    return Some(out);
                }
            }
        }
        None
    }

    /// Mark `ip` as held. Returns false if it was already held or is not allocatable.
    pub fn reserve(&mut self, ip: Ipv4Addr) -> bool {
        if !self.is_allocatable(ip) {
            return false;
        }
        let raw = u32::from(ip);
        let fresh = self.used.insert(raw);
        if fresh {
            self.cursor = raw.wrapping_add(1);
        }
        fresh
    }

    pub fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&u32::from(ip));
    }

    /// Whether every address of `block` could be held: inside, none reserved, none held.
    pub fn is_block_free(&self, block: Cidr) -> bool {
        self.cidr.covers(&block)
            && (block.first()..=block.last())
                .all(|ip| !self.used.contains(&ip) && !self.cidr.is_reserved(Ipv4Addr::from(ip)))
    }

    /// Choose `n` free aligned blocks of length `len`, lowest first, skipping `exclude` (blocks
    /// the same request names). Changes nothing.
    pub fn pick_blocks(&self, len: u8, n: usize, exclude: &[Cidr]) -> Option<Vec<Cidr>> {
        if n == 0 {
            return Some(Vec::new());
        }
        if len < self.cidr.prefix() || len > 32 {
            return None;
        }
        let step = 1u64 << (32 - u32::from(len));
        let mut out = Vec::with_capacity(n);
        let mut at = u64::from(self.cidr.first());
        while at + step - 1 <= u64::from(self.cidr.last()) {
            let block = Cidr::new(Ipv4Addr::from(at as u32), len)?;
            if self.is_block_free(block) && !exclude.iter().any(|e| e.overlaps(&block)) {
                out.push(block);
                if out.len() == n {
                    return Some(out);
                }
            }
            at += step;
        }
        None
    }

    /// Hold every address of `block`; the caller checked [`Ipam::is_block_free`].
    pub fn reserve_block(&mut self, block: Cidr) {
        for ip in block.first()..=block.last() {
            self.reserve(Ipv4Addr::from(ip));
        }
    }

    pub fn release_block(&mut self, block: Cidr) {
        for ip in block.first()..=block.last() {
            self.release(Ipv4Addr::from(ip));
        }
    }
}

/// A vSwitch's IPv6 allocator: single addresses and /80 prefixes of its /64.
#[derive(Clone, Debug)]
pub struct Ipam6 {
    cidr: Cidr6,
    used: HashSet<u128>,
    /// Held addresses per /80 block, so a prefix is only carved where no address lives.
    per_block: HashMap<u128, u32>,
    prefixes: BTreeSet<u128>,
    cursor: u128,
}

impl Ipam6 {
    pub fn new(cidr: Cidr6) -> Ipam6 {
        Ipam6 {
            cidr,
            used: HashSet::new(),
            per_block: HashMap::new(),
            prefixes: BTreeSet::new(),
            cursor: cidr.first() + 1,
        }
    }

    pub fn cidr(&self) -> Cidr6 {
        self.cidr
    }

    fn block_of(ip: u128) -> u128 {
        Cidr6::containing(Ipv6Addr::from(ip), IPV6_PREFIX_LEN).map_or(ip, |b| b.first())
    }

    pub fn is_allocatable(&self, ip: Ipv6Addr) -> bool {
        self.cidr.contains(ip) && !self.cidr.is_reserved(ip) && !self.prefixes.contains(&Self::block_of(ip.into()))
    }

    pub fn is_used(&self, ip: Ipv6Addr) -> bool {
        self.used.contains(&u128::from(ip))
    }

    /// Choose `n` free addresses next-fit from the cursor, skipping `exclude`. Changes nothing.
    pub fn pick(&self, n: usize, exclude: &[Ipv6Addr]) -> Option<Vec<Ipv6Addr>> {
        if n == 0 {
            return Some(Vec::new());
        }
        let lo = self.cidr.first() + 1;
        let hi = self.cidr.last().checked_sub(3)?;
        if hi < lo {
            return None;
        }
        let mut out = Vec::with_capacity(n);
        let mut ip = if (lo..=hi).contains(&self.cursor) { self.cursor } else { lo };
        // A /64 holds 2^64 addresses: the walk ends long before it wraps, unless the block is
        // tiny (custom tests), so it is bounded by the block's size as well.
        let span = hi - lo + 1;
        for _ in 0..span.min(1 << 20) {
            let addr = Ipv6Addr::from(ip);
            if !self.used.contains(&ip) && self.is_allocatable(addr) && !exclude.contains(&addr) {
                out.push(addr);
                if out.len() == n {
                    return Some(out);
                }
            }
            ip = if ip == hi { lo } else { ip + 1 };
        }
        (out.len() == n).then_some(out)
    }

    /// Hold `ip`; false if it was held or may not be held.
    pub fn reserve(&mut self, ip: Ipv6Addr) -> bool {
        if !self.is_allocatable(ip) {
            return false;
        }
        let raw = u128::from(ip);
        let fresh = self.used.insert(raw);
        if fresh {
            *self.per_block.entry(Self::block_of(raw)).or_default() += 1;
            self.cursor = raw.wrapping_add(1);
        }
        fresh
    }

    pub fn release(&mut self, ip: Ipv6Addr) {
        let raw = u128::from(ip);
        if self.used.remove(&raw) {
            let block = Self::block_of(raw);
            if let Some(n) = self.per_block.get_mut(&block) {
                *n -= 1;
                if *n == 0 {
                    self.per_block.remove(&block);
                }
            }
        }
    }

    /// A /80 of this vSwitch that no address and no prefix holds, and that holds none of the
    /// reserved addresses.
    pub fn is_prefix_free(&self, p: Cidr6) -> bool {
        p.prefix() == IPV6_PREFIX_LEN
            && self.cidr.covers(&p)
            && !self.prefixes.contains(&p.first())
            && !self.per_block.contains_key(&p.first())
            && !self.cidr.is_reserved(p.network())
            && !self.cidr.is_reserved(Ipv6Addr::from(p.last()))
    }

    /// Choose `n` free /80 prefixes, lowest first, skipping `exclude`. Changes nothing.
    pub fn pick_prefixes(&self, n: usize, exclude: &[Cidr6]) -> Option<Vec<Cidr6>> {
        let mut out = Vec::with_capacity(n);
        let blocks = 1u128 << u32::from(IPV6_PREFIX_LEN - self.cidr.prefix().min(IPV6_PREFIX_LEN));
        for i in 0..blocks.min(1 << 20) {
            if out.len() == n {
                break;
            }
            let p = self.cidr.subnet(IPV6_PREFIX_LEN, i)?;
            if self.is_prefix_free(p) && !exclude.contains(&p) {
                out.push(p);
            }
        }
        (out.len() == n).then_some(out)
    }

    pub fn reserve_prefix(&mut self, p: Cidr6) -> bool {
        self.is_prefix_free(p) && self.prefixes.insert(p.first())
    }

    pub fn release_prefix(&mut self, p: Cidr6) {
        self.prefixes.remove(&p.first());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_29_has_four_addresses() {
        let mut ipam = Ipam::new("10.0.0.0/29".parse().unwrap());
        assert_eq!(ipam.available(), 4);
        let got = ipam.pick(4, &[]).unwrap();
        assert_eq!(got, ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"].map(|s| s.parse::<Ipv4Addr>().unwrap()));
        for ip in &got {
            assert!(ipam.reserve(*ip));
        }
        assert_eq!(ipam.available(), 0);
        assert_eq!(ipam.pick(1, &[]), None);
        assert!(!ipam.reserve("10.0.0.5".parse().unwrap()), "reserved address");
    }

    #[test]
    fn ipv4_prefixes_are_aligned_free_blocks() {
        let mut ipam = Ipam::new("10.0.0.0/26".parse().unwrap());
        // The first /28 holds the network address, the last the three reserved ones.
        let got = ipam.pick_blocks(IPV4_PREFIX_LEN, 2, &[]).unwrap();
        assert_eq!(got, ["10.0.0.16/28", "10.0.0.32/28"].map(|s| s.parse::<Cidr>().unwrap()));
        assert_eq!(ipam.pick_blocks(IPV4_PREFIX_LEN, 3, &[]), None);
        assert!(ipam.reserve("10.0.0.20".parse().unwrap()));
        assert_eq!(ipam.pick_blocks(IPV4_PREFIX_LEN, 1, &[]), Some(vec!["10.0.0.32/28".parse().unwrap()]));
        ipam.release("10.0.0.20".parse().unwrap());
        ipam.reserve_block("10.0.0.16/28".parse().unwrap());
        assert_eq!(ipam.available(), 60 - 16);
        assert!(!ipam.is_block_free("10.0.0.16/28".parse().unwrap()));
        ipam.release_block("10.0.0.16/28".parse().unwrap());
        assert_eq!(ipam.available(), 60);
    }

    #[test]
    fn ipv6_addresses_and_prefixes_never_overlap() {
        let cidr: Cidr6 = "2408:4005:300:1::/64".parse().unwrap();
        let mut ipam = Ipam6::new(cidr);
        assert_eq!(ipam.pick(0, &[]), Some(vec![]));
        let ips = ipam.pick(3, &[]).unwrap();
        assert_eq!(ips[0], "2408:4005:300:1::1".parse::<Ipv6Addr>().unwrap());
        for ip in &ips {
            assert!(ipam.reserve(*ip));
        }
        assert!(!ipam.reserve(ips[0]), "held twice");
        // Block 0 holds the addresses (and the reserved first one): the first prefix is block 1.
        let p = ipam.pick_prefixes(2, &[]).unwrap();
        assert_eq!(p[0].to_string(), "2408:4005:300:1:1::/80");
        assert!(ipam.reserve_prefix(p[0]));
        assert!(!ipam.reserve_prefix(p[0]));
        assert!(!ipam.reserve("2408:4005:300:1:1::5".parse().unwrap()), "inside a held prefix");
        assert!(!ipam.is_prefix_free("2408:4005:300:1:ffff::/80".parse().unwrap()), "holds the reserved three");
        ipam.release_prefix(p[0]);
        assert!(ipam.reserve("2408:4005:300:1:1::5".parse().unwrap()));
        assert!(!ipam.is_prefix_free(p[0]), "an address lives there now");
    }

    #[derive(Clone, Debug)]
    enum Op {
        Alloc(usize),
        ReleaseNth(usize),
        ReserveOffset(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1usize..6).prop_map(Op::Alloc),
            (0usize..64).prop_map(Op::ReleaseNth),
            (0u32..64).prop_map(Op::ReserveOffset),
        ]
    }

    proptest! {
        /// Never hands out an address twice, never a reserved one, and the count stays honest.
        #[test]
        fn never_double_allocates(prefix in 26u8..=29, ops in proptest::collection::vec(op(), 1..200)) {
            let cidr = Cidr::new(Ipv4Addr::new(10, 1, 2, 0), prefix).unwrap();
            let mut ipam = Ipam::new(cidr);
            let mut held: Vec<Ipv4Addr> = Vec::new();
            for op in ops {
                match op {
                    Op::Alloc(n) => {
                        if let Some(ips) = ipam.pick(n, &[]) {
                            prop_assert_eq!(ips.len(), n);
                            let distinct: HashSet<_> = ips.iter().collect();
                            prop_assert_eq!(distinct.len(), n);
                            for ip in ips {
                                prop_assert!(!held.contains(&ip), "handed out twice: {}", ip);
                                prop_assert!(!cidr.is_reserved(ip) && cidr.contains(ip));
                                prop_assert!(ipam.reserve(ip));
                                held.push(ip);
                            }
                        } else {
                            prop_assert!((ipam.available() as usize) < n);
                        }
                    }
                    Op::ReleaseNth(i) => {
                        if !held.is_empty() {
                            let ip = held.swap_remove(i % held.len());
                            ipam.release(ip);
                        }
                    }
                    Op::ReserveOffset(off) => {
                        let ip = Ipv4Addr::from(cidr.first() + off % cidr.size() as u32);
                        let ok = ipam.reserve(ip);
                        prop_assert_eq!(ok, !held.contains(&ip) && !cidr.is_reserved(ip));
                        if ok { held.push(ip); }
                    }
                }
                prop_assert_eq!(ipam.available(), cidr.usable() - held.len() as u64);
            }
        }
    }
}
