//! The resource model as the data plane and the node shims see it.
//!
//! [`fabric_config`] turns the region plus the registered shim addresses into the pipeline's
//! snapshot; [`node_config`] is one instance's network as `WatchNode` streams it. Both are pure
//! functions of their inputs and run on the model thread right after a commit, so by the time an
//! API call is answered the data plane already applies it.
//!
//! Which ENIs carry traffic: those `InUse` (a NIC, or a member whose trunk is `InUse`). An ENI
//! that is `Attaching` does not forward yet and one that is `Detaching` no longer does, as on
//! ECS where the device appears and disappears at those edges.

use std::collections::HashMap;
use std::net::SocketAddr;

use enifab_dataplane::{
    Attachment, ConntrackTimeouts, EniConfig, FabricConfig, Ipv4Cidr, Peer, Policy, PortConfig, Protocol, Rule,
    SecurityGroupConfig, SgKind, Vni,
};
use enifab_model::Region;
use enifab_model::eni::{Eni, EniStatus, EniType};
use enifab_model::security_group::{self as sg, Direction as MDir, IpProtocol, SecurityGroupType};
use enifab_proto::v1 as pb;

fn cidr(c: enifab_model::Cidr) -> Ipv4Cidr {
    Ipv4Cidr::new(c.network(), c.prefix()).expect("model CIDRs have valid prefixes")
}

fn live(e: &Eni) -> bool {
    e.status == EniStatus::InUse
}

/// The pipeline snapshot: every live ENI, every group, and a port for each live NIC whose
/// instance has a registered shim.
pub fn fabric_config(region: &Region, peers: &HashMap<String, SocketAddr>, epoch: u64) -> FabricConfig {
    let mut ports = Vec::new();
    let mut enis = Vec::new();
    for e in region.enis().filter(|e| live(e)) {
        let Some(att) = &e.attachment else { continue };
        let attachment = match &att.trunk_network_interface_id {
            Some(trunk_id) => {
                let Some(trunk) = region.eni(trunk_id).filter(|t| live(t)) else { continue };
                let Some(trunk_vni) = trunk.attachment.as_ref().and_then(|a| Vni::new(a.port_id)) else { continue };
                Attachment::Member { trunk_vni, vlan: att.device_index as u16 }
            }
            None => {
                let Some(vni) = Vni::new(att.port_id) else { continue };
                if let Some(peer) = peers.get(&att.instance_id) {
                    ports.push((
                        vni,
                        PortConfig { eni_id: e.network_interface_id.clone(), mac: e.mac_address.0, peer: *peer },
                    ));
                }
                Attachment::Port { vni }
            }
        };
        let Some(vsw) = region.vswitch(&e.v_switch_id) else { continue };
        enis.push(EniConfig {
            id: e.network_interface_id.clone(),
            vpc_id: e.vpc_id.clone(),
            mac: e.mac_address.0,
            primary_ip: e.primary_ip_address,
            ips: e.ips().collect(),
            vswitch_cidr: cidr(vsw.cidr),
            security_group_ids: e.security_group_ids.clone(),
            source_dest_check: e.source_dest_check,
            attachment,
            conntrack: ConntrackTimeouts::default(),
        });
    }
    let groups = region.security_groups().map(group).collect();
    match FabricConfig::new(epoch, ports, enis, groups) {
        Ok(c) => c,
        Err(e) => {
            // The model's invariants make this unreachable; if it ever happens, stop forwarding
            // rather than forward by a wrong table.
            tracing::error!(error = ?e, "the model produced an inconsistent data-plane snapshot");
            FabricConfig::empty(epoch)
        }
    }
}

fn group(g: &sg::SecurityGroup) -> SecurityGroupConfig {
    SecurityGroupConfig {
        id: g.security_group_id.clone(),
        vpc_id: g.vpc_id.clone(),
        kind: match g.security_group_type {
            SecurityGroupType::Normal => SgKind::Basic,
            SecurityGroupType::Enterprise => SgKind::Enterprise,
        },
        inner_access_accept: g.inner_access_accept,
        rules: g.rules.iter().map(rule).collect(),
    }
}

fn rule(r: &sg::SgRule) -> Rule {
    let (peer_cidr, peer_group, local) = match r.direction {
        MDir::Ingress => (r.source_cidr_ip, &r.source_group_id, r.dest_cidr_ip),
        MDir::Egress => (r.dest_cidr_ip, &r.dest_group_id, r.source_cidr_ip),
    };
    // The cloud: when a rule names both a CIDR and a group, the CIDR wins.
    let peer = match (peer_cidr, peer_group) {
        (Some(c), _) => Peer::Cidr(cidr(c)),
        (None, Some(g)) => Peer::Group(g.clone()),
        (None, None) => Peer::Cidr(Ipv4Cidr::new(std::net::Ipv4Addr::UNSPECIFIED, 0).expect("/0 is valid")),
    };
    Rule {
        direction: match r.direction {
            MDir::Ingress => enifab_dataplane::Direction::Ingress,
            MDir::Egress => enifab_dataplane::Direction::Egress,
        },
        priority: r.priority,
        policy: match r.policy {
            sg::Policy::Accept => Policy::Accept,
            sg::Policy::Drop => Policy::Drop,
        },
        protocol: match r.ip_protocol {
            IpProtocol::Tcp => Protocol::Tcp,
            IpProtocol::Udp => Protocol::Udp,
            IpProtocol::Icmp => Protocol::Icmp,
            IpProtocol::Gre => Protocol::Gre,
            IpProtocol::All => Protocol::All,
        },
        port_range: r.port_range.map(|p| (p.from, p.to)),
        source_port_range: r.source_port_range.map(|p| (p.from, p.to)),
        peer,
        local_cidr: local.map(cidr),
    }
}

/// One instance's network for its shim, or `None` if the instance does not exist.
pub fn node_config(region: &Region, instance_id: &str, fabric_address: &str) -> Option<pb::NodeConfig> {
    let view = region.instance_view(instance_id)?;
    let inst = &view.instance;
    let vpc = region.vpc(&inst.vpc_id);
    let gateway_of = |e: &Eni| {
        region
            .vswitch(&e.v_switch_id)
            .map(|v| (v.cidr.to_string(), v.cidr.gateway().map(|g| g.to_string()).unwrap_or_default()))
    };
    let nics = view
        .network_interfaces
        .iter()
        .map(|e| {
            let (cidr, gw) = gateway_of(e).unwrap_or_default();
            let members = if e.eni_type == EniType::Trunk {
                region
                    .trunk_members(&e.network_interface_id)
                    .filter_map(|(vlan, id)| region.eni(id).map(|m| (vlan, m)))
                    .map(|(vlan, m)| {
                        let (cidr, gw) = gateway_of(m).unwrap_or_default();
                        pb::NodeMember {
                            network_interface_id: m.network_interface_id.clone(),
                            status: m.status.as_str().into(),
                            vlan_id: vlan,
                            mac_address: m.mac_address.to_string(),
                            primary_ip_address: m.primary_ip_address.to_string(),
                            private_ip_addresses: m.ips().map(|ip| ip.to_string()).collect(),
                            v_switch_id: m.v_switch_id.clone(),
                            v_switch_cidr_block: cidr,
                            gateway: gw,
                            security_group_ids: m.security_group_ids.clone(),
                        }
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let att = e.attachment.as_ref();
            pb::NodeNic {
                network_interface_id: e.network_interface_id.clone(),
                r#type: e.eni_type.as_str().into(),
                status: e.status.as_str().into(),
                mac_address: e.mac_address.to_string(),
                device_index: att.map_or(0, |a| a.device_index),
                vni: att.map_or(0, |a| a.port_id),
                primary_ip_address: e.primary_ip_address.to_string(),
                private_ip_addresses: e.ips().map(|ip| ip.to_string()).collect(),
                v_switch_id: e.v_switch_id.clone(),
                v_switch_cidr_block: cidr,
                gateway: gw,
                security_group_ids: e.security_group_ids.clone(),
                members,
            }
        })
        .collect();
    Some(pb::NodeConfig {
        epoch: region.epoch(),
        region_id: region.region_id().to_string(),
        zone_id: inst.zone_id.clone(),
        instance_id: inst.instance_id.clone(),
        instance_name: inst.instance_name.clone(),
        instance_type: inst.instance_type.clone(),
        host_name: inst.host_name.clone(),
        status: inst.status.as_str().into(),
        vpc_id: inst.vpc_id.clone(),
        vpc_cidr_block: vpc.map(|v| v.cidr_block.to_string()).unwrap_or_default(),
        fabric_address: fabric_address.to_string(),
        nics,
    })
}
