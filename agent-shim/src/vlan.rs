//! Userspace 802.1Q on a trunk ENI: which frames leaving the node get a member's VLAN tag.
//!
//! On a kernel without 802.1Q devices and `act_vlan` (this one), the shim does what Terway's
//! datapath would make the node kernel do (reference §6; Terway `EnsureVlanTag` /
//! `EnsureVlanUntagger`):
//!
//! - **egress** on the trunk NIC: an untagged IPv4 or IPv6 frame whose *source address* belongs
//!   to a member ENI gets that member's tag (`tc filter … u32 match ip src <podIP>/32 action vlan
//!   push id <DeviceIndex>`, and `match ip6 src <podIPv6>/128` for a dual-stack pod); so does an
//!   ARP packet whose *sender address* is a member's, so that a pod's neighbour resolution
//!   reaches the fabric on its own VLAN (on the veth datapath the node, not the pod, solicits
//!   IPv6 neighbours on the trunk, from its own link-local address: those stay untagged);
//! - frames that already carry a tag pass untouched (a node with real VLAN sub-interfaces
//!   produces them, and the fabric demultiplexes them the same way);
//! - **ingress**: every tag is popped before the frame reaches the trunk device (Terway's
//!   untagger), or the frame goes to the member's own sub-interface device if one exists.
//!
//! Pure: bytes and a table in, a decision out. The byte moves themselves are the dataplane's
//! `wire::vlan` helpers, which also shift the virtio-net header's offsets.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use enifab_net::wire::arp;
use enifab_net::wire::ethernet::{ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, Frame};
use enifab_net::wire::vlan::Tci;

use crate::view::MemberView;

/// Member addresses of one trunk → their tag. Built once per config change; looked up per
/// frame without allocating.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberTable {
    by_ip: HashMap<Ipv4Addr, Tci>,
    by_ip6: HashMap<Ipv6Addr, Tci>,
}

impl MemberTable {
    /// Members with an invalid VLAN id are skipped (the view already refuses them). When two
    /// members claim one address (it cannot happen in one VPC), the first keeps it.
    pub fn new(members: &[MemberView]) -> MemberTable {
        let (mut by_ip, mut by_ip6) = (HashMap::new(), HashMap::new());
        for m in members {
            let Some(tci) = Tci::from_vid(m.vlan) else { continue };
            for ip in &m.ips {
                by_ip.entry(*ip).or_insert(tci);
            }
            for ip in &m.ips6 {
                by_ip6.entry(*ip).or_insert(tci);
            }
        }
        MemberTable { by_ip, by_ip6 }
    }

    pub fn get(&self, ip: Ipv4Addr) -> Option<Tci> {
        self.by_ip.get(&ip).copied()
    }

    pub fn get6(&self, ip: Ipv6Addr) -> Option<Tci> {
        self.by_ip6.get(&ip).copied()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty() && self.by_ip6.is_empty()
    }

    /// Addresses of both families.
    pub fn len(&self) -> usize {
        self.by_ip.len() + self.by_ip6.len()
    }
}

/// What to do with a frame leaving the trunk NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Egress {
    /// Send as it is: the trunk's own traffic, something already tagged, or not IPv4/IPv6/ARP.
    Pass,
    /// Push this member's tag first.
    Push(Tci),
}

/// Terway's egress classifier for the trunk: tag by IPv4 or IPv6 source (or ARP sender) address.
/// Frames it cannot parse pass unchanged: the fabric drops and counts malformed frames with a
/// reason, which is more useful than a silent drop here.
pub fn classify_trunk_egress(frame: &[u8], members: &MemberTable) -> Egress {
    if members.is_empty() {
        return Egress::Pass;
    }
    let Ok(f) = Frame::parse(frame) else { return Egress::Pass };
    if f.tag.is_some() {
        return Egress::Pass;
    }
    let src = match f.ethertype {
        // Version 4 and at least a minimal header; the source address is bytes 12..16.
        ETHERTYPE_IPV4 if f.payload.len() >= 20 && f.payload[0] >> 4 == 4 => {
            Ipv4Addr::new(f.payload[12], f.payload[13], f.payload[14], f.payload[15])
        }
        ETHERTYPE_ARP => match arp::Repr::parse(f.payload) {
            Ok(a) => a.sender_ip,
            Err(_) => return Egress::Pass,
        },
        // Version 6 and the fixed header; the source address is bytes 8..24.
        ETHERTYPE_IPV6 if f.payload.len() >= 40 && f.payload[0] >> 4 == 6 => {
            let src: [u8; 16] = f.payload[8..24].try_into().expect("16 bytes");
            return members.get6(Ipv6Addr::from(src)).map_or(Egress::Pass, Egress::Push);
        }
        _ => return Egress::Pass,
    };
    members.get(src).map_or(Egress::Pass, Egress::Push)
}

#[cfg(test)]
pub(crate) mod test {
    use super::*;

    /// 00:16:3e:00:00:02 → ee:ff:ff:ff:ff:ff, IPv4 ICMP echo 10.0.8.5 → 10.0.4.22 (header only).
    pub static IPV4_FROM_MEMBER: [u8; 34] = [
        0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x16, 0x3e, 0x00, 0x00, 0x02, 0x08, 0x00, // Ethernet
        0x45, 0x00, 0x00, 0x1c, 0x00, 0x01, 0x40, 0x00, 0x40, 0x01, 0x00, 0x00, // IPv4 …
        0x0a, 0x00, 0x08, 0x05, // src 10.0.8.5
        0x0a, 0x00, 0x04, 0x16, // dst 10.0.4.22
    ];

    /// ARP who-has 10.0.8.253 tell 10.0.8.5, broadcast, from the trunk MAC.
    pub static ARP_FROM_MEMBER: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x16, 0x3e, 0x00, 0x00, 0x02, 0x08, 0x06, // Ethernet
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // Ethernet/IPv4, request
        0x00, 0x16, 0x3e, 0x00, 0x00, 0x02, 0x0a, 0x00, 0x08, 0x05, // sender
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x08, 0xfd, // target
    ];

    pub fn members() -> MemberTable {
        MemberTable::new(&[
            MemberView { eni_id: "eni-m5".into(), vlan: 5, ips: vec!["10.0.8.5".parse().unwrap()], ips6: vec![] },
            MemberView {
                eni_id: "eni-m7".into(),
                vlan: 7,
                ips: vec!["10.0.8.7".parse().unwrap(), "10.0.8.77".parse().unwrap()],
                ips6: vec!["2408:4005:3000:8::7".parse().unwrap()],
            },
        ])
    }

    /// An IPv6 header (UDP, no payload) from `src` to 2408:4005:3000:4::22, behind an Ethernet
    /// header from the trunk MAC to the gateway.
    fn ipv6_from(src: &str) -> Vec<u8> {
        let mut f = IPV4_FROM_MEMBER[..12].to_vec();
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 0, 17, 64]);
        f.extend_from_slice(&src.parse::<Ipv6Addr>().unwrap().octets());
        f.extend_from_slice(&"2408:4005:3000:4::22".parse::<Ipv6Addr>().unwrap().octets());
        f
    }

    #[test]
    fn ipv6_member_source_gets_its_tag() {
        let t = members();
        assert_eq!(
            classify_trunk_egress(&ipv6_from("2408:4005:3000:8::7"), &t),
            Egress::Push(Tci::from_vid(7).unwrap())
        );
        // The node's own link-local (its neighbour solicitations), or anyone else's: untagged.
        assert_eq!(classify_trunk_egress(&ipv6_from("fe80::216:3eff:fe00:2"), &t), Egress::Pass);
        assert_eq!(classify_trunk_egress(&ipv6_from("2408:4005:3000:8::8"), &t), Egress::Pass);
        let cut = ipv6_from("2408:4005:3000:8::7");
        assert_eq!(classify_trunk_egress(&cut[..14 + 39], &t), Egress::Pass, "cut IPv6 header");
        let mut v4_in_v6 = cut.clone();
        v4_in_v6[14] = 0x45;
        assert_eq!(classify_trunk_egress(&v4_in_v6, &t), Egress::Pass, "version 4 behind 86dd");
    }

    fn with_src(frame: &[u8], ip: [u8; 4]) -> Vec<u8> {
        let mut f = frame.to_vec();
        f[26..30].copy_from_slice(&ip);
        f
    }

    #[test]
    fn member_source_gets_its_tag() {
        let t = members();
        assert_eq!(classify_trunk_egress(&IPV4_FROM_MEMBER, &t), Egress::Push(Tci::from_vid(5).unwrap()));
        let secondary = with_src(&IPV4_FROM_MEMBER, [10, 0, 8, 77]);
        assert_eq!(classify_trunk_egress(&secondary, &t), Egress::Push(Tci::from_vid(7).unwrap()));
    }

    #[test]
    fn non_member_source_passes() {
        let trunk_own = with_src(&IPV4_FROM_MEMBER, [10, 0, 4, 23]);
        assert_eq!(classify_trunk_egress(&trunk_own, &members()), Egress::Pass);
        assert_eq!(classify_trunk_egress(&IPV4_FROM_MEMBER, &MemberTable::default()), Egress::Pass);
    }

    #[test]
    fn tagged_frame_passes_untouched() {
        let mut tagged = IPV4_FROM_MEMBER[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x09]);
        tagged.extend_from_slice(&IPV4_FROM_MEMBER[12..]);
        assert_eq!(classify_trunk_egress(&tagged, &members()), Egress::Pass);
    }

    #[test]
    fn arp_from_member_gets_its_tag() {
        let t = members();
        assert_eq!(classify_trunk_egress(&ARP_FROM_MEMBER, &t), Egress::Push(Tci::from_vid(5).unwrap()));
        let mut reply = ARP_FROM_MEMBER;
        reply[21] = 2; // a reply from the member address is the member's too
        assert_eq!(classify_trunk_egress(&reply, &t), Egress::Push(Tci::from_vid(5).unwrap()));
        let mut other = ARP_FROM_MEMBER;
        other[31] = 0x09; // sender 10.0.8.9: nobody's
        assert_eq!(classify_trunk_egress(&other, &t), Egress::Pass);
    }

    #[test]
    fn odd_frames_pass() {
        let t = members();
        assert_eq!(classify_trunk_egress(&IPV4_FROM_MEMBER[..20], &t), Egress::Pass, "cut IPv4");
        assert_eq!(classify_trunk_egress(&IPV4_FROM_MEMBER[..10], &t), Egress::Pass, "runt");
        let mut v6 = IPV4_FROM_MEMBER;
        v6[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(classify_trunk_egress(&v6, &t), Egress::Pass, "IPv6");
        let mut bad_version = IPV4_FROM_MEMBER;
        bad_version[14] = 0x65;
        assert_eq!(classify_trunk_egress(&bad_version, &t), Egress::Pass);
        assert_eq!(classify_trunk_egress(&ARP_FROM_MEMBER[..30], &t), Egress::Pass, "cut ARP");
    }

    #[test]
    fn table_ignores_bad_vids_and_keeps_first_owner() {
        let t = MemberTable::new(&[
            MemberView { eni_id: "a".into(), vlan: 0, ips: vec!["10.0.0.1".parse().unwrap()], ips6: vec![] },
            MemberView { eni_id: "b".into(), vlan: 3, ips: vec!["10.0.0.2".parse().unwrap()], ips6: vec![] },
            MemberView { eni_id: "c".into(), vlan: 4, ips: vec!["10.0.0.2".parse().unwrap()], ips6: vec![] },
        ]);
        assert_eq!(t.len(), 1);
        assert_eq!(t.get("10.0.0.2".parse().unwrap()).map(|t| t.vid()), Some(3));
    }
}
