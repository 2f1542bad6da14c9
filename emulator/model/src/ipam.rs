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

use std::collections::HashSet;
use std::net::Ipv4Addr;

use crate::net::Cidr;

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
