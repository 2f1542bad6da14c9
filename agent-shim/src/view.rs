//! The node as the shim works with it: a [`NodeView`] parsed and checked once from the
//! `enifab.v1.NodeConfig` that `RegisterNode`/`WatchNode` deliver, with MACs, addresses, prefixes
//! and VNIs as typed values instead of strings.
//!
//! Pure: no syscalls, no I/O. It follows the cloud's view of an instance (reference §6, §9):
//! only NICs whose status is `InUse` exist as devices in the guest (an `Attaching` ENI has no
//! device yet, a `Detaching` one has lost it); a member ENI is carried on its trunk only while
//! it is `InUse`; the primary ENI gets its primary IP with the vSwitch prefix and a default route
//! via the vSwitch gateway (what DHCP does on ECS). It must not decide what to *do* about a
//! config (that is [`crate::plan`]); entries it cannot parse are left out and reported in
//! [`NodeView::problems`], so one bad NIC does not take the others down.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use enifab_net::{Cidr, Cidr6, Vni};
use enifab_proto::v1 as pb;

pub use enifab_net::Mac;

/// Terway's and ECS's default MTU (reference §9.2).
pub const DEFAULT_MTU: u32 = 1500;
/// Status of an ENI that carries traffic.
pub const IN_USE: &str = "InUse";

/// What DHCP would configure on an interface: one address with its subnet prefix, and a default
/// route via the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Setup {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
}

impl fmt::Display for Ipv4Setup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)?;
        if let Some(g) = self.gateway {
            write!(f, " via {g}")?;
        }
        Ok(())
    }
}

/// A NIC's IPv6 side as ECS gives it to the primary ENI (DHCPv6 and the vSwitch's router): its
/// first IPv6 address on the vSwitch's /64, and the /64's gateway (last − 2) as default route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Setup {
    pub address: Ipv6Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv6Addr>,
}

impl fmt::Display for Ipv6Setup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)?;
        if let Some(g) = self.gateway {
            write!(f, " via {g}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicKind {
    Primary,
    Secondary,
    Trunk,
}

impl NicKind {
    fn parse(s: &str) -> Option<NicKind> {
        match s {
            "Primary" => Some(NicKind::Primary),
            "Secondary" => Some(NicKind::Secondary),
            "Trunk" => Some(NicKind::Trunk),
            _ => None,
        }
    }
}

/// A member ENI of a trunk, as the trunk's wire sees it: a VLAN id and the addresses whose
/// frames carry that tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    pub eni_id: String,
    /// `Attachment.DeviceIndex`, 1..=4094.
    pub vlan: u16,
    /// Primary first.
    pub ips: Vec<Ipv4Addr>,
    /// Its IPv6 addresses (a dual-stack pod's).
    pub ips6: Vec<Ipv6Addr>,
}

/// One `InUse` NIC of the instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicView {
    pub eni_id: String,
    pub kind: NicKind,
    pub mac: Mac,
    pub device_index: u32,
    /// The fabric port; `None` when the emulator has not assigned one (0 on the wire).
    pub vni: Option<Vni>,
    /// Primary first.
    pub ips: Vec<Ipv4Addr>,
    /// Primary IP with the vSwitch prefix and the gateway, when all three parse.
    pub ipv4: Option<Ipv4Setup>,
    /// Its first IPv6 address on the vSwitch's /64, when it has one.
    pub ipv6: Option<Ipv6Setup>,
    /// `InUse` members, for a trunk; empty otherwise.
    pub members: Vec<MemberView>,
}

impl NicView {
    /// The interface name in the guest: the primary ENI is `eth0`, every other NIC
    /// `eth<DeviceIndex>`, as on ECS images (the trunk ENI is usually `eth1`).
    pub fn if_name(&self) -> String {
        match self.kind {
            NicKind::Primary => "eth0".to_string(),
            _ => nic_name(self.device_index),
        }
    }
}

/// The guest's name for the NIC at `device_index` (the primary's is 0: `eth0`).
pub fn nic_name(device_index: impl std::fmt::Display) -> String {
    format!("eth{device_index}")
}

/// Where a member ENI lives on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberPlace {
    pub trunk_eni_id: String,
    pub trunk_mac: Mac,
    pub trunk_vni: Option<Vni>,
    pub vlan: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeView {
    pub instance_id: String,
    pub fabric_address: Option<SocketAddr>,
    /// `InUse` NICs, in the config's order.
    pub nics: Vec<NicView>,
    /// What was left out and why, for logs.
    pub problems: Vec<String>,
}

impl NodeView {
    pub fn from_proto(c: &pb::NodeConfig) -> NodeView {
        let mut problems = Vec::new();
        let fabric_address = if c.fabric_address.is_empty() {
            None
        } else {
            let a = c.fabric_address.parse().ok();
            if a.is_none() {
                problems.push(format!("fabric_address {:?} is not ip:port", c.fabric_address));
            }
            a
        };
        let mut nics = Vec::new();
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        for n in c.nics.iter().filter(|n| n.status == IN_USE) {
            match nic_view(n, &mut problems) {
                Ok(v) => {
                    // Two NICs cannot both be ethN; the first (lowest DeviceIndex order) wins.
                    if let Some(other) = names.insert(v.if_name(), v.eni_id.clone()) {
                        problems.push(format!("{} and {other} both want {}", v.eni_id, v.if_name()));
                        names.insert(v.if_name(), other);
                        continue;
                    }
                    nics.push(v)
                }
                Err(e) => problems.push(format!("{}: {e}", n.network_interface_id)),
            }
        }
        NodeView { instance_id: c.instance_id.clone(), fabric_address, nics, problems }
    }

    pub fn nic(&self, eni_id: &str) -> Option<&NicView> {
        self.nics.iter().find(|n| n.eni_id == eni_id)
    }

    /// The trunk that carries `member_eni_id` as an `InUse` member, and its VLAN.
    pub fn member_place(&self, member_eni_id: &str) -> Option<MemberPlace> {
        self.nics.iter().filter(|n| n.kind == NicKind::Trunk).find_map(|t| {
            t.members.iter().find(|m| m.eni_id == member_eni_id).map(|m| MemberPlace {
                trunk_eni_id: t.eni_id.clone(),
                trunk_mac: t.mac,
                trunk_vni: t.vni,
                vlan: m.vlan,
            })
        })
    }
}

fn nic_view(n: &pb::NodeNic, problems: &mut Vec<String>) -> Result<NicView, String> {
    let kind = NicKind::parse(&n.r#type).ok_or_else(|| format!("unknown NIC type {:?}", n.r#type))?;
    let mac: Mac = n.mac_address.parse().map_err(|_| format!("bad MAC {:?}", n.mac_address))?;
    if kind != NicKind::Primary && (n.device_index == 0 || n.device_index > 9999) {
        return Err(format!("device index {} cannot name a secondary NIC", n.device_index));
    }
    let vni = if n.vni == 0 { None } else { Some(Vni::new(n.vni).ok_or_else(|| format!("VNI {} > 24 bits", n.vni))?) };
    let ips = n.private_ip_addresses.iter().filter_map(|s| s.parse().ok()).collect();
    let primary: Option<Ipv4Addr> = n.primary_ip_address.parse().ok();
    let ipv4 = match (primary, Cidr::parse_lenient(&n.v_switch_cidr_block)) {
        (Some(address), Some(block)) => {
            Some(Ipv4Setup { address, prefix_len: block.prefix(), gateway: n.gateway.parse().ok() })
        }
        _ => None,
    };
    let first_v6: Option<Ipv6Addr> = n.ipv6_addresses.first().and_then(|s| s.parse().ok());
    let ipv6 = match (first_v6, Cidr6::parse_lenient(&n.v_switch_ipv6_cidr_block)) {
        (Some(address), Some(block)) => {
            Some(Ipv6Setup { address, prefix_len: block.prefix(), gateway: n.ipv6_gateway.parse().ok() })
        }
        _ => None,
    };
    let members = n
        .members
        .iter()
        .filter(|m| m.status == IN_USE)
        .filter_map(|m| {
            if !(1..=u32::from(enifab_net::wire::vlan::MAX_VID)).contains(&m.vlan_id) {
                problems.push(format!("member {}: VLAN id {} outside 1..=4094", m.network_interface_id, m.vlan_id));
                return None;
            }
            let mut ips: Vec<Ipv4Addr> = Vec::new();
            for s in std::iter::once(&m.primary_ip_address).chain(&m.private_ip_addresses) {
                if let Ok(ip) = s.parse()
                    && !ips.contains(&ip)
                {
                    ips.push(ip);
                }
            }
            let ips6 = m.ipv6_addresses.iter().filter_map(|s| s.parse().ok()).collect();
            Some(MemberView { eni_id: m.network_interface_id.clone(), vlan: m.vlan_id as u16, ips, ips6 })
        })
        .collect();
    Ok(NicView {
        eni_id: n.network_interface_id.clone(),
        kind,
        mac,
        device_index: n.device_index,
        vni,
        ips,
        ipv4,
        ipv6,
        members,
    })
}

#[cfg(test)]
pub(crate) mod test {
    use super::*;

    pub fn member(id: &str, vlan: u32, ip: &str) -> pb::NodeMember {
        pb::NodeMember {
            network_interface_id: id.into(),
            status: IN_USE.into(),
            vlan_id: vlan,
            mac_address: "00:16:3e:00:aa:01".into(),
            primary_ip_address: ip.into(),
            private_ip_addresses: vec![ip.into()],
            v_switch_id: "vsw-pod".into(),
            v_switch_cidr_block: "10.0.8.0/24".into(),
            gateway: "10.0.8.253".into(),
            security_group_ids: vec![],
            ..Default::default()
        }
    }

    pub fn nic(id: &str, kind: &str, index: u32, mac: &str, ip: &str, vni: u32) -> pb::NodeNic {
        pb::NodeNic {
            network_interface_id: id.into(),
            r#type: kind.into(),
            status: IN_USE.into(),
            mac_address: mac.into(),
            device_index: index,
            vni,
            primary_ip_address: ip.into(),
            private_ip_addresses: vec![ip.into()],
            v_switch_id: "vsw-node".into(),
            v_switch_cidr_block: "10.0.4.0/24".into(),
            gateway: "10.0.4.253".into(),
            security_group_ids: vec![],
            members: vec![],
            ..Default::default()
        }
    }

    /// A node with a primary ENI (eth0) and a trunk (eth1) carrying one member on VLAN 5.
    pub fn config() -> pb::NodeConfig {
        let mut trunk = nic("eni-trunk", "Trunk", 1, "00:16:3e:00:00:02", "10.0.4.23", 11);
        trunk.members.push(member("eni-m5", 5, "10.0.8.5"));
        pb::NodeConfig {
            instance_id: "i-node".into(),
            fabric_address: "127.0.0.1:6081".into(),
            nics: vec![nic("eni-prim", "Primary", 0, "00:16:3e:00:00:01", "10.0.4.22", 10), trunk],
            ..Default::default()
        }
    }

    #[test]
    fn parses_a_node() {
        let v = NodeView::from_proto(&config());
        assert!(v.problems.is_empty(), "{:?}", v.problems);
        assert_eq!(v.fabric_address, Some("127.0.0.1:6081".parse().unwrap()));
        let names: Vec<String> = v.nics.iter().map(NicView::if_name).collect();
        assert_eq!(names, ["eth0", "eth1"]);
        let p = &v.nics[0];
        assert_eq!(p.mac, [0x00, 0x16, 0x3e, 0, 0, 1]);
        assert_eq!(
            p.ipv4,
            Some(Ipv4Setup {
                address: "10.0.4.22".parse().unwrap(),
                prefix_len: 24,
                gateway: Some("10.0.4.253".parse().unwrap())
            })
        );
        assert_eq!(v.nics[1].members[0].vlan, 5);
        let place = v.member_place("eni-m5").unwrap();
        assert_eq!(
            (place.trunk_eni_id.as_str(), place.vlan, place.trunk_vni.map(Vni::get)),
            ("eni-trunk", 5, Some(11))
        );
        assert_eq!(v.member_place("eni-prim"), None);
    }

    #[test]
    fn leaves_out_what_is_not_in_use_or_broken() {
        let mut c = config();
        c.nics[1].members[0].status = "Attaching".into();
        c.nics[1].members.push(member("eni-bad", 4095, "10.0.8.6"));
        c.nics.push(pb::NodeNic {
            status: "Attaching".into(),
            ..nic("eni-att", "Secondary", 2, "00:16:3e:00:00:03", "", 0)
        });
        c.nics.push(nic("eni-badmac", "Secondary", 3, "00:16:3e:00:00", "10.0.4.30", 12));
        c.nics.push(nic("eni-dup", "Secondary", 1, "00:16:3e:00:00:04", "10.0.4.31", 13));
        let v = NodeView::from_proto(&c);
        assert_eq!(v.nics.iter().map(|n| n.eni_id.as_str()).collect::<Vec<_>>(), ["eni-prim", "eni-trunk"]);
        assert!(v.nics[1].members.is_empty());
        assert_eq!(v.problems.len(), 3, "{:?}", v.problems);
    }
}
