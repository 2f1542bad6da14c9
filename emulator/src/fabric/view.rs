//! The resource model as the data plane and the node shims see it.
//!
//! [`fabric_config`] turns the region plus the registered shim addresses into the pipeline's
//! snapshot; [`node_config`] is one instance's network as `WatchNode` streams it. Both are pure
//! functions of their inputs and run on the model thread right after a commit, so by the time an
//! API call is answered the data plane already applies it.
//!
//! IPv4 prefixes (prefix mode) are routed to their ENI like its addresses; an ENI on a vSwitch
//! with an IPv6 /64 brings its IPv6 addresses and /80 prefixes, and rules their IPv6 peers.
//!
//! Which ENIs carry traffic: those `InUse` (a NIC, or a member whose trunk is `InUse`). An ENI
//! that is `Attaching` does not forward yet and one that is `Detaching` no longer does, as on
//! ECS where the device appears and disappears at those edges.
//!
//! Load balancers: a listener's backends are the servers of its vServer group (the default
//! server group is not emulated, so a listener without one has none); its health check is on
//! unless `HealthCheckSwitch` is off; an internet load balancer that no backend has tied to a
//! VPC yet takes no traffic. External hosts (the internet side) are registrations of the
//! running server, like node shims.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};

use std::time::Duration;

use enifab_dataplane::{
    Attachment, BackendConfig, Cidr, ConntrackTimeouts, EniConfig, ExternalHostConfig, FabricConfig, FabricSpec,
    HealthCheckConfig, HealthCheckKind, HttpCodes, Ipv6Setup, LbNetwork, LbProtocol, ListenerConfig,
    LoadBalancerConfig, Peer, Policy, PortConfig, Protocol, Rule, Scheduler, SecurityGroupConfig, SgKind, Vni,
};
use enifab_model::eni::{Eni, EniStatus, EniType};
use enifab_model::security_group::{self as sg, Direction as MDir, IpProtocol, SecurityGroupType};
use enifab_model::slb;
use enifab_model::{ModelError, Region};
use enifab_proto::v1 as pb;

/// An ENI's IPv6 side: its addresses and /80 prefixes, when its vSwitch has a /64.
fn ipv6_setup(region: &Region, e: &Eni) -> Option<Ipv6Setup> {
    let vswitch_cidr = region.vswitch(&e.v_switch_id)?.ipv6_cidr?;
    Some(Ipv6Setup { addresses: e.ipv6_addresses.clone(), prefixes: e.ipv6_prefixes.clone(), vswitch_cidr })
}

fn live(e: &Eni) -> bool {
    e.status == EniStatus::InUse
}

/// The pipeline snapshot: every live ENI, every group, a port for each live NIC whose instance
/// has a registered shim, every load balancer with a VPC, and the registered external hosts.
pub fn fabric_config(
    region: &Region,
    peers: &HashMap<String, SocketAddr>,
    fast_paths: &HashMap<String, Ipv4Addr>,
    external: &[ExternalHostConfig],
    epoch: u64,
) -> FabricConfig {
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
                        PortConfig {
                            eni_id: e.network_interface_id.clone(),
                            mac: e.mac_address,
                            peer: *peer,
                            fast_path: fast_paths.get(&att.instance_id).copied(),
                        },
                    ));
                }
                Attachment::Port { vni }
            }
        };
        let Some(vsw) = region.vswitch(&e.v_switch_id) else { continue };
        enis.push(EniConfig {
            id: e.network_interface_id.clone(),
            vpc_id: e.vpc_id.clone(),
            mac: e.mac_address,
            primary_ip: e.primary_ip_address,
            // An IPv4 prefix routes to its ENI as its sixteen addresses would: the snapshot's
            // address index, anti-spoof and group membership then cover prefix mode with no
            // second lookup on the frame path (a /28 is 16 entries; the model keeps prefixes
            // disjoint from addresses).
            ips: e
                .ips()
                .chain(e.ipv4_prefixes.iter().flat_map(|p| (p.first()..=p.last()).map(Ipv4Addr::from)))
                .collect(),
            vswitch_cidr: vsw.cidr,
            ipv6: ipv6_setup(region, e),
            security_group_ids: e.security_group_ids.clone(),
            source_dest_check: e.source_dest_check,
            attachment,
            conntrack: ConntrackTimeouts::default(),
        });
    }
    let groups = region.security_groups().map(group).collect();
    let load_balancers =
        region.load_balancers().filter(|lb| !lb.vpc_id.is_empty()).map(|lb| load_balancer(region, lb)).collect();
    let spec = FabricSpec { ports, enis, groups, load_balancers, external_hosts: external.to_vec() };
    match FabricConfig::build(epoch, spec) {
        Ok(c) => c,
        Err(e) => {
            // The model's invariants make this unreachable; if it ever happens, stop forwarding
            // rather than forward by a wrong table.
            tracing::error!(error = ?e, "the model produced an inconsistent data-plane snapshot");
            FabricConfig::empty(epoch)
        }
    }
}

fn load_balancer(region: &Region, lb: &slb::LoadBalancer) -> LoadBalancerConfig {
    LoadBalancerConfig {
        id: lb.load_balancer_id.clone(),
        vpc_id: lb.vpc_id.clone(),
        network: match lb.address_type {
            slb::AddressType::Internet => LbNetwork::Internet,
            slb::AddressType::Intranet => LbNetwork::Intranet,
        },
        address: lb.address,
        listeners: lb.listeners.iter().map(|l| listener(region, l)).collect(),
    }
}

fn listener(region: &Region, l: &slb::Listener) -> ListenerConfig {
    let backends = l
        .v_server_group_id
        .as_deref()
        .and_then(|id| region.v_server_group(id))
        .map(|g| {
            g.backend_servers
                .iter()
                .map(|b| BackendConfig {
                    server_id: b.server_id.clone(),
                    ip: b.server_ip,
                    port: b.port,
                    weight: b.weight,
                })
                .collect()
        })
        .unwrap_or_default();
    ListenerConfig {
        protocol: match l.protocol {
            slb::ListenerProtocol::Tcp => LbProtocol::Tcp,
            slb::ListenerProtocol::Udp => LbProtocol::Udp,
        },
        port: l.listener_port,
        running: l.status == slb::ListenerStatus::Running,
        scheduler: match l.scheduler {
            slb::Scheduler::Wrr => Scheduler::Wrr,
            slb::Scheduler::Rr => Scheduler::Rr,
            slb::Scheduler::Wlc => Scheduler::Wlc,
            slb::Scheduler::Sch => Scheduler::Sch,
            slb::Scheduler::Tch => Scheduler::Tch,
        },
        persistence: Duration::from_secs(u64::from(l.persistence_timeout)),
        established_timeout: Duration::from_secs(u64::from(l.established_timeout)),
        backends,
        health_check: l.health_check.enabled.then(|| health_check(&l.health_check)),
    }
}

fn health_check(h: &slb::HealthCheck) -> HealthCheckConfig {
    let kind = match h.check_type {
        slb::HealthCheckType::Tcp => HealthCheckKind::Tcp,
        slb::HealthCheckType::Http => HealthCheckKind::Http {
            uri: h.uri.clone(),
            host: (!h.domain.is_empty()).then(|| h.domain.clone()),
            get: h.method.eq_ignore_ascii_case("get"),
            codes: http_codes(&h.http_code),
        },
        slb::HealthCheckType::Udp => HealthCheckKind::Udp {
            request: h.udp_request.as_bytes().to_vec(),
            expect: (!h.udp_expect.is_empty()).then(|| h.udp_expect.as_bytes().to_vec()),
        },
    };
    HealthCheckConfig {
        kind,
        port: h.connect_port,
        timeout: Duration::from_secs(u64::from(h.connect_timeout.max(1))),
        interval: Duration::from_secs(u64::from(h.interval.max(1))),
        healthy_threshold: h.healthy_threshold.clamp(1, 255) as u8,
        unhealthy_threshold: h.unhealthy_threshold.clamp(1, 255) as u8,
    }
}

/// `http_2xx,http_3xx` → the classes a check accepts (the model validated the list).
fn http_codes(s: &str) -> HttpCodes {
    let classes = s
        .split(',')
        .filter_map(|c| c.trim().strip_prefix("http_")?.strip_suffix("xx")?.parse::<u8>().ok())
        .filter(|c| (1..=5).contains(c))
        .fold(0u8, |m, c| m | 1 << c);
    if classes == 0 { HttpCodes::DEFAULT } else { HttpCodes { classes } }
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
    let (peer_cidr, peer_cidr6, peer_group, local, local6) = match r.direction {
        MDir::Ingress => {
            (r.source_cidr_ip, r.ipv6_source_cidr_ip, &r.source_group_id, r.dest_cidr_ip, r.ipv6_dest_cidr_ip)
        }
        MDir::Egress => {
            (r.dest_cidr_ip, r.ipv6_dest_cidr_ip, &r.dest_group_id, r.source_cidr_ip, r.ipv6_source_cidr_ip)
        }
    };
    // The cloud: when a rule names both a CIDR and a group, the CIDR wins. A rule names one
    // family (the model refuses both), and an IPv6 peer never matches IPv4, nor the reverse.
    let peer = match (peer_cidr, peer_cidr6, peer_group) {
        (Some(c), _, _) => Peer::Cidr(c),
        (None, Some(c), _) => Peer::Cidr6(c),
        (None, None, Some(g)) => Peer::Group(g.clone()),
        (None, None, None) => Peer::Cidr(Cidr::any()),
    };
    Rule {
        id: r.security_group_rule_id.clone(),
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
            IpProtocol::Icmpv6 => Protocol::Icmpv6,
            IpProtocol::All => Protocol::All,
        },
        port_range: r.port_range.map(|p| (p.from, p.to)),
        source_port_range: r.source_port_range.map(|p| (p.from, p.to)),
        peer,
        local_cidr: local,
        local_cidr6: local6,
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
    // The vSwitch's /64 and its gateway (Terway's rule: last − 2), or empty strings.
    let ipv6_of = |e: &Eni| {
        region
            .vswitch(&e.v_switch_id)
            .and_then(|v| v.ipv6_cidr)
            .map_or_else(Default::default, |c| (c.to_string(), c.gateway().map(|g| g.to_string()).unwrap_or_default()))
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
                        let (cidr6, gw6) = ipv6_of(m);
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
                            ipv6_addresses: m.ipv6_addresses.iter().map(|ip| ip.to_string()).collect(),
                            v_switch_ipv6_cidr_block: cidr6,
                            ipv6_gateway: gw6,
                        }
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let att = e.attachment.as_ref();
            let (cidr6, gw6) = ipv6_of(e);
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
                ipv6_addresses: e.ipv6_addresses.iter().map(|ip| ip.to_string()).collect(),
                v_switch_ipv6_cidr_block: cidr6,
                ipv6_gateway: gw6,
                ipv4_prefixes: e.ipv4_prefixes.iter().map(|p| p.to_string()).collect(),
                ipv6_prefixes: e.ipv6_prefixes.iter().map(|p| p.to_string()).collect(),
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

/// An external host as its shim sees it: a node with one NIC, its public address on a segment
/// whose gateway (last − 2, as in a vSwitch) is its default route. Not an instance of the cloud.
pub fn external_node_config(host: &ExternalHostConfig, fabric_address: &str) -> pb::NodeConfig {
    let cidr = format!("{}/{}", host.segment.network(), host.segment.prefix());
    pb::NodeConfig {
        epoch: 0,
        region_id: String::new(),
        zone_id: String::new(),
        instance_id: host.id.clone(),
        instance_name: host.id.clone(),
        instance_type: "internet".into(),
        host_name: host.id.clone(),
        status: "Running".into(),
        vpc_id: String::new(),
        vpc_cidr_block: String::new(),
        fabric_address: fabric_address.to_string(),
        nics: vec![pb::NodeNic {
            network_interface_id: host.id.clone(),
            r#type: "Primary".into(),
            status: "InUse".into(),
            mac_address: host.mac.to_string(),
            device_index: 0,
            vni: host.vni.get(),
            primary_ip_address: host.ip.to_string(),
            private_ip_addresses: vec![host.ip.to_string()],
            v_switch_id: String::new(),
            v_switch_cidr_block: cidr,
            gateway: host.segment.gateway().map(|g| g.to_string()).unwrap_or_default(),
            security_group_ids: Vec::new(),
            members: Vec::new(),
            ..Default::default()
        }],
    }
}

/// What a capture watches: the ports (VNIs) and the VLAN id on them, and whose node they are on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureTarget {
    pub instance_id: String,
    pub ports: Vec<u32>,
    pub vlan: Option<u16>,
}

/// The ports of `eni_id` (a member: its trunk's port and its VLAN) or of every NIC of
/// `instance_id` (exactly one of the two), with `vlan` (0: any) narrowing a port to one tag.
/// The cloud's NotFound errors for unknown ids; an ENI that is not attached has no port.
pub fn capture_target(
    region: &Region,
    eni_id: &str,
    instance_id: &str,
    vlan: u32,
) -> Result<CaptureTarget, ModelError> {
    let vlan = match vlan {
        0 => None,
        1..=4094 => Some(vlan as u16),
        _ => return Err(ModelError::invalid("Vlan", "an 802.1Q VLAN id is 1 to 4094")),
    };
    match (eni_id.is_empty(), instance_id.is_empty()) {
        (true, true) => Err(ModelError::MissingParameter("NetworkInterfaceId")),
        (false, false) => Err(ModelError::invalid("InstanceId", "give an ENI or an instance, not both")),
        (false, true) => {
            let eni = region.eni(eni_id).ok_or_else(|| ModelError::EniNotFound(eni_id.to_string()))?;
            let not_attached = || {
                ModelError::invalid(
                    "NetworkInterfaceId",
                    format!(
                        "{eni_id} is {} and not attached to an instance: it has no port to capture",
                        eni.status.as_str()
                    ),
                )
            };
            let att = eni.attachment.as_ref().ok_or_else(not_attached)?;
            let (port, vlan) = match &att.trunk_network_interface_id {
                Some(trunk) => {
                    let port = region.eni(trunk).and_then(|t| t.attachment.as_ref()).map_or(0, |a| a.port_id);
                    let own = att.device_index as u16;
                    if vlan.is_some_and(|v| v != own) {
                        return Err(ModelError::invalid(
                            "Vlan",
                            format!("{eni_id} is the trunk's VLAN {own}; leave the VLAN out"),
                        ));
                    }
                    (port, Some(own))
                }
                None => (att.port_id, vlan),
            };
            if port == 0 {
                return Err(not_attached());
            }
            Ok(CaptureTarget { instance_id: att.instance_id.clone(), ports: vec![port], vlan })
        }
        (true, false) => {
            region.instance(instance_id).ok_or_else(|| ModelError::InstanceNotFound(instance_id.to_string()))?;
            let mut ports: Vec<u32> = region
                .enis()
                .filter_map(|e| e.attachment.as_ref())
                .filter(|a| a.instance_id == instance_id && a.trunk_network_interface_id.is_none() && a.port_id != 0)
                .map(|a| a.port_id)
                .collect();
            ports.sort_unstable();
            ports.dedup();
            Ok(CaptureTarget { instance_id: instance_id.to_string(), ports, vlan })
        }
    }
}
