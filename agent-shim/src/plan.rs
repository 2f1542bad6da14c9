//! Reconcile, first half: what must change so that the node's devices match its NodeConfig.
//! [`plan`] compares the desired NICs of a [`NodeView`] with the devices the shim has made and
//! returns the [`Action`]s that close the gap, in the order they must be applied; the second
//! half (`crate::node`) applies them with the drivers. Terway's datapath splits its work the same
//! way (`generate*Cfg` computes, `nic.Setup` applies).
//!
//! Pure: no syscalls, deterministic output (sorted), no knowledge of how a device is made. It
//! follows what an ECS guest sees (reference §6, §9): a device per `InUse` NIC, named `eth0` for
//! the primary ENI and `eth<DeviceIndex>` for the others, hot-plugged and unplugged as NICs come
//! and go; a member ENI's sub-interface device lives exactly as long as the member stays
//! attached to the same trunk with the same VLAN id.
//!
//! Ordering rules: removals come first (a recreated device needs its name back, and a removed
//! sub-interface must release its VLAN before another takes it), then renames, then creations,
//! then address changes. A rename whose target name is held by another surviving device (a swap)
//! degrades to remove + create rather than juggling temporary names.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::view::{DEFAULT_MTU, Ipv4Setup, Ipv6Setup, Mac, NicKind, NodeView};

/// A NIC device as it should be (desired) or as it was made (current).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicSpec {
    pub eni_id: String,
    pub name: String,
    pub mac: Mac,
    pub mtu: u32,
    /// Primary ENI only: its address and default route.
    pub ipv4: Option<Ipv4Setup>,
    /// Primary ENI only, when it has IPv6: its address and default route. Without it the device
    /// has IPv6 off, so it sends no router solicitation or DAD probe the fabric would drop.
    pub ipv6: Option<Ipv6Setup>,
}

/// A member's sub-interface device as it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentVlan {
    pub member_eni_id: String,
    pub trunk_eni_id: String,
    pub vlan: u16,
}

/// Why a sub-interface device goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VlanRemoval {
    /// The member is no longer an `InUse` member of any trunk of this node.
    Detached,
    /// It is, but on another trunk or with another VLAN id.
    Moved,
}

impl fmt::Display for VlanRemoval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VlanRemoval::Detached => "member detached",
            VlanRemoval::Moved => "member moved to another trunk or VLAN",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    RemoveVlanDevice {
        member_eni_id: String,
        reason: VlanRemoval,
    },
    RemoveNic {
        eni_id: String,
        name: String,
    },
    /// Rename and put `ipv4` and `ipv6` back (a link taken down loses its routes, and its IPv6
    /// addresses).
    RenameNic {
        eni_id: String,
        from: String,
        to: String,
        ipv4: Option<Ipv4Setup>,
        ipv6: Option<Ipv6Setup>,
    },
    CreateNic(NicSpec),
    SetIpv4 {
        eni_id: String,
        name: String,
        ipv4: Option<Ipv4Setup>,
    },
    SetIpv6 {
        eni_id: String,
        name: String,
        ipv6: Option<Ipv6Setup>,
    },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::RemoveVlanDevice { member_eni_id, reason } => {
                write!(f, "remove sub-interface of {member_eni_id} ({reason})")
            }
            Action::RemoveNic { eni_id, name } => write!(f, "remove {name} ({eni_id})"),
            Action::RenameNic { eni_id, from, to, .. } => write!(f, "rename {from} to {to} ({eni_id})"),
            Action::CreateNic(s) => write!(f, "create {} ({})", s.name, s.eni_id),
            Action::SetIpv4 { name, ipv4: Some(v), .. } => write!(f, "address {name} {v}"),
            Action::SetIpv4 { name, ipv4: None, .. } => write!(f, "unaddress {name}"),
            Action::SetIpv6 { name, ipv6: Some(v), .. } => write!(f, "address {name} {v}"),
            Action::SetIpv6 { name, ipv6: None, .. } => write!(f, "IPv6 off on {name}"),
        }
    }
}

/// The NIC devices `view` calls for.
pub fn desired_nics(view: &NodeView) -> Vec<NicSpec> {
    view.nics
        .iter()
        .map(|n| NicSpec {
            eni_id: n.eni_id.clone(),
            name: n.if_name(),
            mac: n.mac,
            mtu: DEFAULT_MTU,
            // DHCP on ECS configures the primary ENI only; Terway configures the others itself.
            ipv4: if n.kind == NicKind::Primary { n.ipv4 } else { None },
            ipv6: if n.kind == NicKind::Primary { n.ipv6 } else { None },
        })
        .collect()
}

/// The actions that turn `current` NICs and `vlans` into what `view` wants.
pub fn plan(view: &NodeView, current: &[NicSpec], vlans: &[CurrentVlan]) -> Vec<Action> {
    let wanted = desired_nics(view);
    let desired: BTreeMap<&str, &NicSpec> = wanted.iter().map(|s| (s.eni_id.as_str(), s)).collect();
    let mut vlan_removals = Vec::new();
    for v in vlans {
        match view.member_place(&v.member_eni_id) {
            None => vlan_removals.push(Action::RemoveVlanDevice {
                member_eni_id: v.member_eni_id.clone(),
                reason: VlanRemoval::Detached,
            }),
            Some(p) if p.trunk_eni_id != v.trunk_eni_id || p.vlan != v.vlan => vlan_removals
                .push(Action::RemoveVlanDevice { member_eni_id: v.member_eni_id.clone(), reason: VlanRemoval::Moved }),
            Some(_) => {}
        }
    }

    let mut removes = Vec::new();
    let mut creates = Vec::new();
    let mut renames = Vec::new();
    let mut readdress = Vec::new();
    // Devices that stay (possibly renamed): eni → current spec.
    let mut survivors: BTreeMap<&str, &NicSpec> = BTreeMap::new();
    for cur in current {
        match desired.get(cur.eni_id.as_str()) {
            Some(d) if d.mac == cur.mac && d.mtu == cur.mtu => {
                survivors.insert(&cur.eni_id, cur);
            }
            Some(d) => {
                removes.push(Action::RemoveNic { eni_id: cur.eni_id.clone(), name: cur.name.clone() });
                creates.push((*d).clone());
            }
            None => removes.push(Action::RemoveNic { eni_id: cur.eni_id.clone(), name: cur.name.clone() }),
        }
    }
    let held: BTreeSet<&str> = survivors.values().map(|c| c.name.as_str()).collect();
    for (eni, cur) in &survivors {
        let d = &desired[eni];
        if d.name != cur.name {
            if held.contains(d.name.as_str()) {
                removes.push(Action::RemoveNic { eni_id: cur.eni_id.clone(), name: cur.name.clone() });
                creates.push((*d).clone());
            } else {
                renames.push(Action::RenameNic {
                    eni_id: cur.eni_id.clone(),
                    from: cur.name.clone(),
                    to: d.name.clone(),
                    ipv4: d.ipv4,
                    ipv6: d.ipv6,
                });
            }
        } else {
            if d.ipv4 != cur.ipv4 {
                readdress.push(Action::SetIpv4 { eni_id: cur.eni_id.clone(), name: cur.name.clone(), ipv4: d.ipv4 });
            }
            if d.ipv6 != cur.ipv6 {
                readdress.push(Action::SetIpv6 { eni_id: cur.eni_id.clone(), name: cur.name.clone(), ipv6: d.ipv6 });
            }
        }
    }
    let known: BTreeSet<&str> = current.iter().map(|c| c.eni_id.as_str()).collect();
    creates.extend(desired.values().filter(|d| !known.contains(d.eni_id.as_str())).map(|d| (*d).clone()));
    creates.sort_by(|a, b| (a.name.len(), &a.name).cmp(&(b.name.len(), &b.name)));
    removes.sort_by(|a, b| format!("{a}").cmp(&format!("{b}")));

    vlan_removals
        .into_iter()
        .chain(removes)
        .chain(renames)
        .chain(creates.into_iter().map(Action::CreateNic))
        .chain(readdress)
        .collect()
}

#[cfg(test)]
mod test {
    use enifab_proto::v1 as pb;

    use super::*;
    use crate::view::test::{config, member, nic};

    fn view(c: &pb::NodeConfig) -> NodeView {
        let v = NodeView::from_proto(c);
        assert!(v.problems.is_empty(), "{:?}", v.problems);
        v
    }

    /// What the shim has after applying `c` from scratch.
    fn made(c: &pb::NodeConfig) -> Vec<NicSpec> {
        desired_nics(&view(c))
    }

    fn names(actions: &[Action]) -> Vec<String> {
        actions.iter().map(ToString::to_string).collect()
    }

    fn vlan(member: &str, trunk: &str, vid: u16) -> CurrentVlan {
        CurrentVlan { member_eni_id: member.into(), trunk_eni_id: trunk.into(), vlan: vid }
    }

    #[test]
    fn from_scratch_creates_eth0_first_with_dhcp_like_setup() {
        let a = plan(&view(&config()), &[], &[]);
        assert_eq!(names(&a), ["create eth0 (eni-prim)", "create eth1 (eni-trunk)"]);
        let Action::CreateNic(eth0) = &a[0] else { panic!() };
        assert_eq!(eth0.mtu, 1500);
        assert_eq!(eth0.mac, [0x00, 0x16, 0x3e, 0, 0, 1]);
        let ip = eth0.ipv4.unwrap();
        assert_eq!(
            (ip.address.to_string(), ip.prefix_len, ip.gateway.unwrap().to_string()),
            ("10.0.4.22".into(), 24, "10.0.4.253".into())
        );
        let Action::CreateNic(eth1) = &a[1] else { panic!() };
        assert_eq!(eth1.ipv4, None, "only the primary ENI is configured like DHCP");
    }

    /// The primary ENI's first IPv6 address, when it has one, is configured like DHCPv6 would,
    /// and a change of it is a readdress of its own; the other NICs get none.
    #[test]
    fn the_primary_gets_its_ipv6_and_a_change_is_a_readdress() {
        let before = config();
        let mut after = config();
        after.nics[0].ipv6_addresses = vec!["2408:4005:3000:4::7".into()];
        after.nics[0].v_switch_ipv6_cidr_block = "2408:4005:3000:4::/64".into();
        after.nics[0].ipv6_gateway = "2408:4005:3000:4:ffff:ffff:ffff:fffd".into();
        after.nics[1].ipv6_addresses = vec!["2408:4005:3000:4::8".into()];
        after.nics[1].v_switch_ipv6_cidr_block = "2408:4005:3000:4::/64".into();
        let wanted = made(&after);
        let v6 = wanted[0].ipv6.expect("the primary's IPv6");
        assert_eq!(v6.to_string(), "2408:4005:3000:4::7/64 via 2408:4005:3000:4:ffff:ffff:ffff:fffd");
        assert_eq!(wanted[1].ipv6, None, "only the primary is configured like DHCPv6");
        assert_eq!(
            names(&plan(&view(&after), &made(&before), &[])),
            ["address eth0 2408:4005:3000:4::7/64 via 2408:4005:3000:4:ffff:ffff:ffff:fffd"]
        );
        assert_eq!(names(&plan(&view(&before), &made(&after), &[])), ["IPv6 off on eth0"]);
        assert_eq!(plan(&view(&after), &made(&after), &[]), []);
    }

    #[test]
    fn converged_state_plans_nothing() {
        let c = config();
        assert_eq!(plan(&view(&c), &made(&c), &[vlan("eni-m5", "eni-trunk", 5)]), []);
    }

    #[test]
    fn hot_plug_and_unplug() {
        let before = config();
        let mut after = config();
        after.nics.push(nic("eni-sec", "Secondary", 2, "00:16:3e:00:00:03", "10.0.4.30", 12));
        assert_eq!(names(&plan(&view(&after), &made(&before), &[])), ["create eth2 (eni-sec)"]);
        // Unplug: the NIC goes Detaching, then disappears; either way the device goes.
        let mut detaching = after.clone();
        detaching.nics[2].status = "Detaching".into();
        assert_eq!(names(&plan(&view(&detaching), &made(&after), &[])), ["remove eth2 (eni-sec)"]);
        assert_eq!(names(&plan(&view(&before), &made(&after), &[])), ["remove eth2 (eni-sec)"]);
    }

    #[test]
    fn removals_come_before_creations() {
        let before = config();
        let mut after = config();
        after.nics.remove(1);
        after.nics.push(nic("eni-new", "Secondary", 1, "00:16:3e:00:00:09", "10.0.4.40", 14));
        assert_eq!(
            names(&plan(&view(&after), &made(&before), &[])),
            ["remove eth1 (eni-trunk)", "create eth1 (eni-new)"]
        );
    }

    #[test]
    fn renamed_nic_is_renamed_in_place() {
        let before = config();
        let mut after = config();
        after.nics[1].device_index = 3;
        let a = plan(&view(&after), &made(&before), &[]);
        assert_eq!(names(&a), ["rename eth1 to eth3 (eni-trunk)"]);
    }

    #[test]
    fn swapped_names_degrade_to_recreate() {
        let mut before = config();
        before.nics.push(nic("eni-sec", "Secondary", 2, "00:16:3e:00:00:03", "10.0.4.30", 12));
        let mut after = before.clone();
        after.nics[1].device_index = 2;
        after.nics[2].device_index = 1;
        let a = plan(&view(&after), &made(&before), &[]);
        assert_eq!(
            names(&a),
            ["remove eth1 (eni-trunk)", "remove eth2 (eni-sec)", "create eth1 (eni-sec)", "create eth2 (eni-trunk)"]
        );
    }

    #[test]
    fn changed_mac_recreates_and_changed_ip_readdresses() {
        let before = config();
        let mut after = config();
        after.nics[1].mac_address = "00:16:3e:00:00:22".into();
        after.nics[0].primary_ip_address = "10.0.4.99".into();
        let a = plan(&view(&after), &made(&before), &[]);
        assert_eq!(
            names(&a),
            ["remove eth1 (eni-trunk)", "create eth1 (eni-trunk)", "address eth0 10.0.4.99/24 via 10.0.4.253"]
        );
    }

    #[test]
    fn members_appearing_need_no_device_action() {
        // A new member only changes the relay's tag table, not the devices.
        let before = config();
        let mut after = config();
        after.nics[1].members.push(member("eni-m6", 6, "10.0.8.6"));
        assert_eq!(plan(&view(&after), &made(&before), &[vlan("eni-m5", "eni-trunk", 5)]), []);
    }

    #[test]
    fn members_disappearing_take_their_sub_interface_with_them() {
        let c = config();
        let mut gone = c.clone();
        gone.nics[1].members.clear();
        let current = [vlan("eni-m5", "eni-trunk", 5)];
        assert_eq!(
            plan(&view(&gone), &made(&c), &current),
            [Action::RemoveVlanDevice { member_eni_id: "eni-m5".into(), reason: VlanRemoval::Detached }]
        );
        let mut detaching = c.clone();
        detaching.nics[1].members[0].status = "Detaching".into();
        assert_eq!(
            names(&plan(&view(&detaching), &made(&c), &current)),
            ["remove sub-interface of eni-m5 (member detached)"]
        );
        let mut moved = c.clone();
        moved.nics[1].members[0].vlan_id = 9;
        assert_eq!(
            plan(&view(&moved), &made(&c), &current),
            [Action::RemoveVlanDevice { member_eni_id: "eni-m5".into(), reason: VlanRemoval::Moved }]
        );
        // The trunk itself going away removes its members' devices too.
        let mut no_trunk = c.clone();
        no_trunk.nics.remove(1);
        assert_eq!(
            names(&plan(&view(&no_trunk), &made(&c), &current)),
            ["remove sub-interface of eni-m5 (member detached)", "remove eth1 (eni-trunk)"]
        );
    }
}
