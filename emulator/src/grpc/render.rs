//! Model values → proto responses, in the cloud's layout: double-wrapped lists, the cloud's
//! time formats, status and type strings as the API spells them. SLB times are
//! `YYYY-MM-DDThh:mmZ` (minute precision, as the CLB API prints `CreateTime`) with the epoch
//! milliseconds beside them in `CreateTimeStamp`.

use enifab_model::catalog::InstanceType;
use enifab_model::eni::Eni;
use enifab_model::instance::InstanceView;
use enifab_model::security_group::{SecurityGroupView, SgRule, port_range_str};
use enifab_model::slb::vserver_group::VServerGroupView;
use enifab_model::slb::{BackendServer, HealthCheck, Listener, ListenerProtocol, LoadBalancer};
use enifab_model::vpc::{VSwitchView, Vpc};
use enifab_model::{Millis, Tag};
use enifab_proto::v1 as pb;

/// The owner of every resource: the emulator has one account.
pub const OWNER_ID: &str = "1234567890123456";

pub fn resource_tags(tags: &[Tag]) -> pb::ResourceTags {
    pb::ResourceTags {
        tag: tags.iter().map(|t| pb::ResourceTag { tag_key: t.key.clone(), tag_value: t.value.clone() }).collect(),
    }
}

pub fn vpc_tags(tags: &[Tag]) -> pb::VpcResourceTags {
    pb::VpcResourceTags { tag: tags.iter().map(|t| pb::Tag { key: t.key.clone(), value: t.value.clone() }).collect() }
}

fn ts(t: Millis) -> String {
    t.to_cloud_seconds()
}

pub fn ipv6_sets(e: &Eni) -> pb::Ipv6Sets {
    pb::Ipv6Sets { ipv6_set: e.ipv6_addresses.iter().map(|ip| pb::Ipv6Set { ipv6_address: ip.to_string() }).collect() }
}

pub fn ipv4_prefix_sets(e: &Eni) -> pb::Ipv4PrefixSets {
    pb::Ipv4PrefixSets {
        ipv4_prefix_set: e.ipv4_prefixes.iter().map(|p| pb::Ipv4PrefixSet { ipv4_prefix: p.to_string() }).collect(),
    }
}

pub fn ipv6_prefix_sets(e: &Eni) -> pb::Ipv6PrefixSets {
    pb::Ipv6PrefixSets {
        ipv6_prefix_set: e.ipv6_prefixes.iter().map(|p| pb::Ipv6PrefixSet { ipv6_prefix: p.to_string() }).collect(),
    }
}

pub fn private_ip_sets(e: &Eni) -> pb::PrivateIpSets {
    pb::PrivateIpSets {
        private_ip_set: e
            .ips()
            .enumerate()
            .map(|(i, ip)| pb::PrivateIpSet { private_ip_address: ip.to_string(), primary: i == 0 })
            .collect(),
    }
}

fn sg_ids(e: &Eni) -> pb::SecurityGroupIdList {
    pb::SecurityGroupIdList { security_group_id: e.security_group_ids.clone() }
}

pub fn network_interface_set(e: &Eni) -> pb::NetworkInterfaceSet {
    pb::NetworkInterfaceSet {
        network_interface_id: e.network_interface_id.clone(),
        status: e.status.as_str().into(),
        r#type: e.eni_type.as_str().into(),
        vpc_id: e.vpc_id.clone(),
        v_switch_id: e.v_switch_id.clone(),
        zone_id: e.zone_id.clone(),
        private_ip_address: e.primary_ip_address.to_string(),
        mac_address: e.mac_address.to_string(),
        // Terway falls back to Attachment.InstanceId when this is empty; set both.
        instance_id: e.instance_id().unwrap_or_default().to_string(),
        attachment: e.attachment.as_ref().map(|a| pb::Attachment {
            instance_id: a.instance_id.clone(),
            device_index: a.device_index as i32,
            trunk_network_interface_id: a.trunk_network_interface_id.clone().unwrap_or_default(),
            network_card_index: a.network_card_index as i32,
        }),
        private_ip_sets: Some(private_ip_sets(e)),
        ipv6_sets: Some(ipv6_sets(e)),
        ipv4_prefix_sets: Some(ipv4_prefix_sets(e)),
        ipv6_prefix_sets: Some(ipv6_prefix_sets(e)),
        security_group_ids: Some(sg_ids(e)),
        tags: Some(resource_tags(&e.tags)),
        creation_time: ts(e.creation_time),
        network_interface_traffic_mode: e.traffic_mode.clone(),
        resource_group_id: e.resource_group_id.clone(),
        description: e.description.clone(),
        network_interface_name: e.network_interface_name.clone(),
        delete_on_release: e.delete_on_release,
        source_dest_check: e.source_dest_check,
        service_managed: false,
        owner_id: OWNER_ID.into(),
        queue_number: 1,
    }
}

pub fn create_eni_response(request_id: String, e: &Eni) -> pb::CreateNetworkInterfaceResponse {
    pb::CreateNetworkInterfaceResponse {
        request_id,
        network_interface_id: e.network_interface_id.clone(),
        status: e.status.as_str().into(),
        r#type: e.eni_type.as_str().into(),
        mac_address: e.mac_address.to_string(),
        private_ip_address: e.primary_ip_address.to_string(),
        private_ip_sets: Some(private_ip_sets(e)),
        security_group_ids: Some(sg_ids(e)),
        tags: Some(resource_tags(&e.tags)),
        v_switch_id: e.v_switch_id.clone(),
        vpc_id: e.vpc_id.clone(),
        zone_id: e.zone_id.clone(),
        resource_group_id: e.resource_group_id.clone(),
        owner_id: OWNER_ID.into(),
        description: e.description.clone(),
        network_interface_name: e.network_interface_name.clone(),
        source_dest_check: e.source_dest_check,
        service_managed: false,
        ipv6_sets: Some(ipv6_sets(e)),
        ipv4_prefix_sets: Some(ipv4_prefix_sets(e)),
        ipv6_prefix_sets: Some(ipv6_prefix_sets(e)),
    }
}

pub fn eni_attribute(
    request_id: String,
    e: &Eni,
    members: Vec<String>,
) -> pb::DescribeNetworkInterfaceAttributeResponse {
    let set = network_interface_set(e);
    pb::DescribeNetworkInterfaceAttributeResponse {
        request_id,
        network_interface_id: set.network_interface_id,
        status: set.status,
        r#type: set.r#type,
        vpc_id: set.vpc_id,
        v_switch_id: set.v_switch_id,
        zone_id: set.zone_id,
        private_ip_address: set.private_ip_address,
        mac_address: set.mac_address,
        instance_id: set.instance_id,
        attachment: e.attachment.as_ref().map(|a| pb::AttributeAttachment {
            instance_id: a.instance_id.clone(),
            device_index: a.device_index as i32,
            trunk_network_interface_id: a.trunk_network_interface_id.clone().unwrap_or_default(),
            network_card_index: a.network_card_index as i32,
            member_network_interface_ids: Some(pb::MemberNetworkInterfaceIdList {
                member_network_interface_id: members,
            }),
        }),
        private_ip_sets: set.private_ip_sets,
        ipv6_sets: set.ipv6_sets,
        ipv4_prefix_sets: set.ipv4_prefix_sets,
        ipv6_prefix_sets: set.ipv6_prefix_sets,
        security_group_ids: set.security_group_ids,
        tags: set.tags,
        creation_time: set.creation_time,
        network_interface_traffic_mode: set.network_interface_traffic_mode,
        resource_group_id: set.resource_group_id,
        description: set.description,
        network_interface_name: set.network_interface_name,
        delete_on_release: set.delete_on_release,
        source_dest_check: set.source_dest_check,
        service_managed: set.service_managed,
        owner_id: set.owner_id,
    }
}

pub fn instance_item(region_id: &str, v: &InstanceView) -> pb::InstanceItem {
    let i = &v.instance;
    pb::InstanceItem {
        instance_id: i.instance_id.clone(),
        instance_name: i.instance_name.clone(),
        host_name: i.host_name.clone(),
        description: i.description.clone(),
        instance_type: i.instance_type.clone(),
        instance_type_family: v.type_info.as_ref().map(|t| t.instance_type_family.clone()).unwrap_or_default(),
        region_id: region_id.to_string(),
        zone_id: i.zone_id.clone(),
        status: i.status.as_str().into(),
        creation_time: i.creation_time.to_cloud_minutes(),
        cpu: v.type_info.as_ref().map_or(0, |t| t.cpu_core_count as i32),
        memory: v.type_info.as_ref().map_or(0, |t| (t.memory_size_gib * 1024.0) as i32),
        instance_network_type: "vpc".into(),
        vpc_attributes: Some(pb::VpcAttributes {
            vpc_id: i.vpc_id.clone(),
            v_switch_id: i.v_switch_id.clone(),
            private_ip_address: Some(pb::IpAddressList { ip_address: vec![v.private_ip_address.clone()] }),
            nat_ip_address: String::new(),
        }),
        security_group_ids: Some(pb::SecurityGroupIdList { security_group_id: v.security_group_ids.clone() }),
        network_interfaces: Some(pb::InstanceNetworkInterfaceList {
            network_interface: v
                .network_interfaces
                .iter()
                .map(|e| pb::InstanceNetworkInterface {
                    network_interface_id: e.network_interface_id.clone(),
                    mac_address: e.mac_address.to_string(),
                    primary_ip_address: e.primary_ip_address.to_string(),
                    r#type: e.eni_type.as_str().into(),
                    private_ip_sets: Some(private_ip_sets(e)),
                })
                .collect(),
        }),
        tags: Some(resource_tags(&i.tags)),
    }
}

pub fn instance_type_item(t: &InstanceType) -> pb::InstanceTypeItem {
    pb::InstanceTypeItem {
        instance_type_id: t.instance_type_id.clone(),
        instance_type_family: t.instance_type_family.clone(),
        cpu_core_count: t.cpu_core_count as i32,
        memory_size: t.memory_size_gib,
        eni_quantity: t.eni_quantity as i32,
        eni_private_ip_address_quantity: t.eni_private_ip_address_quantity as i32,
        eni_ipv6_address_quantity: t.eni_ipv6_address_quantity as i32,
        eni_total_quantity: t.eni_total_quantity as i32,
        eni_trunk_supported: t.eni_trunk_supported,
        eri_quantity: 0,
        instance_bandwidth_rx: t.instance_bandwidth_rx_kbps as i64,
        instance_bandwidth_tx: t.instance_bandwidth_tx_kbps as i64,
        instance_pps_rx: t.instance_pps_rx as i64,
        instance_pps_tx: t.instance_pps_tx as i64,
        network_cards: Some(pb::NetworkCardList {
            network_card_info: vec![pb::NetworkCardInfo { network_card_index: 0 }],
        }),
    }
}

pub fn vpc_item(region_id: &str, v: &Vpc, vswitches: Vec<String>) -> pb::VpcItem {
    pb::VpcItem {
        vpc_id: v.vpc_id.clone(),
        region_id: region_id.to_string(),
        status: "Available".into(),
        vpc_name: v.vpc_name.clone(),
        creation_time: ts(v.creation_time),
        cidr_block: v.cidr_block.to_string(),
        v_router_id: v.v_router_id.clone(),
        description: v.description.clone(),
        is_default: false,
        v_switch_ids: Some(pb::VSwitchIdList { v_switch_id: vswitches }),
        resource_group_id: v.resource_group_id.clone(),
        tags: Some(vpc_tags(&v.tags)),
        ipv6_cidr_block: v.ipv6_cidr_block.map(|c| c.to_string()).unwrap_or_default(),
        enabled_ipv6: v.ipv6_cidr_block.is_some(),
        ipv6_cidr_blocks: Some(pb::Ipv6CidrBlockList {
            ipv6_cidr_block: v
                .ipv6_cidr_block
                .iter()
                .map(|c| pb::Ipv6CidrBlockItem { ipv6_cidr_block: c.to_string(), ipv6_isp: "BGP".into() })
                .collect(),
        }),
    }
}

pub fn vswitch_item(v: &VSwitchView) -> pb::VSwitchItem {
    let s = &v.v_switch;
    pb::VSwitchItem {
        v_switch_id: s.v_switch_id.clone(),
        vpc_id: s.vpc_id.clone(),
        status: "Available".into(),
        cidr_block: s.cidr.to_string(),
        zone_id: s.zone_id.clone(),
        available_ip_address_count: v.available_ip_address_count as i64,
        description: s.description.clone(),
        v_switch_name: s.v_switch_name.clone(),
        creation_time: ts(s.creation_time),
        is_default: false,
        resource_group_id: s.resource_group_id.clone(),
        ipv6_cidr_block: s.ipv6_cidr.map(|c| c.to_string()).unwrap_or_default(),
        enabled_ipv6: s.ipv6_cidr.is_some(),
        tags: Some(vpc_tags(&s.tags)),
    }
}

pub fn security_group_item(v: &SecurityGroupView) -> pb::SecurityGroupItem {
    let g = &v.group;
    pb::SecurityGroupItem {
        security_group_id: g.security_group_id.clone(),
        security_group_name: g.security_group_name.clone(),
        description: g.description.clone(),
        vpc_id: g.vpc_id.clone(),
        security_group_type: g.security_group_type.as_str().into(),
        creation_time: ts(g.creation_time),
        ecs_count: v.ecs_count as i32,
        rule_count: g.rules.len() as i32,
        resource_group_id: g.resource_group_id.clone(),
        service_managed: false,
        tags: Some(resource_tags(&g.tags)),
    }
}

pub fn permission_item(r: &SgRule) -> pb::PermissionItem {
    let cidr = |c: &Option<enifab_model::Cidr>| c.map(|c| c.to_string()).unwrap_or_default();
    pb::PermissionItem {
        security_group_rule_id: r.security_group_rule_id.clone(),
        direction: r.direction.as_str().into(),
        ip_protocol: r.ip_protocol.as_str().into(),
        port_range: port_range_str(r.port_range),
        source_port_range: r.source_port_range.map(|p| port_range_str(Some(p))).unwrap_or_default(),
        source_cidr_ip: cidr(&r.source_cidr_ip),
        source_group_id: r.source_group_id.clone().unwrap_or_default(),
        dest_cidr_ip: cidr(&r.dest_cidr_ip),
        dest_group_id: r.dest_group_id.clone().unwrap_or_default(),
        policy: r.policy.as_str().into(),
        priority: r.priority.to_string(),
        nic_type: r.nic_type.clone(),
        description: r.description.clone(),
        create_time: ts(r.create_time),
        ipv6_source_cidr_ip: r.ipv6_source_cidr_ip.map(|c| c.to_string()).unwrap_or_default(),
        ipv6_dest_cidr_ip: r.ipv6_dest_cidr_ip.map(|c| c.to_string()).unwrap_or_default(),
    }
}

// ---- SLB ----------------------------------------------------------------------------------------

/// What DescribeLoadBalancers and DescribeLoadBalancerAttribute both show of a load balancer.
pub fn load_balancer_item(region_id: &str, l: &LoadBalancer) -> pb::LoadBalancerItem {
    pb::LoadBalancerItem {
        load_balancer_id: l.load_balancer_id.clone(),
        load_balancer_name: l.load_balancer_name.clone(),
        load_balancer_status: l.load_balancer_status().into(),
        address: l.address.to_string(),
        address_type: l.address_type.as_str().into(),
        address_i_p_version: "ipv4".into(),
        network_type: l.network_type().into(),
        vpc_id: l.vpc_id.clone(),
        v_switch_id: l.v_switch_id.clone(),
        region_id: region_id.to_string(),
        region_id_alias: region_id.to_string(),
        master_zone_id: l.master_zone_id.clone(),
        slave_zone_id: l.slave_zone_id.clone(),
        create_time: l.creation_time.to_cloud_minutes(),
        create_time_stamp: l.creation_time.0 as i64,
        pay_type: l.pay_type.clone(),
        internet_charge_type: l.internet_charge_type.clone(),
        internet_charge_type_alias: l.internet_charge_type.clone(),
        bandwidth: l.bandwidth,
        load_balancer_spec: l.load_balancer_spec.clone(),
        instance_charge_type: l.instance_charge_type.clone(),
        resource_group_id: l.resource_group_id.clone(),
        delete_protection: l.delete_protection_str().into(),
        modification_protection_status: l.modification_protection_status.clone(),
        modification_protection_reason: l.modification_protection_reason.clone(),
        tags: Some(resource_tags(&l.tags)),
    }
}

pub fn load_balancer_attribute(
    request_id: String,
    region_id: &str,
    l: &LoadBalancer,
) -> pb::DescribeLoadBalancerAttributeResponse {
    let i = load_balancer_item(region_id, l);
    pb::DescribeLoadBalancerAttributeResponse {
        request_id,
        load_balancer_id: i.load_balancer_id,
        load_balancer_name: i.load_balancer_name,
        load_balancer_status: i.load_balancer_status,
        address: i.address,
        address_type: i.address_type,
        address_i_p_version: i.address_i_p_version,
        network_type: i.network_type,
        vpc_id: i.vpc_id,
        v_switch_id: i.v_switch_id,
        region_id: i.region_id,
        region_id_alias: i.region_id_alias,
        master_zone_id: i.master_zone_id,
        slave_zone_id: i.slave_zone_id,
        create_time: i.create_time,
        create_time_stamp: i.create_time_stamp,
        pay_type: i.pay_type,
        internet_charge_type: i.internet_charge_type,
        bandwidth: i.bandwidth,
        load_balancer_spec: i.load_balancer_spec,
        instance_charge_type: i.instance_charge_type,
        resource_group_id: i.resource_group_id,
        delete_protection: i.delete_protection,
        modification_protection_status: i.modification_protection_status,
        modification_protection_reason: i.modification_protection_reason,
        tags: i.tags,
        listener_ports: Some(pb::ListenerPortList {
            listener_port: l.listeners.iter().map(|x| i32::from(x.listener_port)).collect(),
        }),
        listener_ports_and_protocol: Some(pb::ListenerPortAndProtocolList {
            listener_port_and_protocol: l
                .listeners
                .iter()
                .map(|x| pb::ListenerPortAndProtocol {
                    listener_port: i32::from(x.listener_port),
                    listener_protocol: x.protocol.as_str().into(),
                    description: x.description.clone(),
                })
                .collect(),
        }),
        backend_servers: Some(pb::SlbBackendServerList::default()),
    }
}

pub fn backend_servers(b: &[BackendServer]) -> pb::SlbBackendServerList {
    pb::SlbBackendServerList {
        backend_server: b
            .iter()
            .map(|b| pb::SlbBackendServer {
                server_id: b.server_id.clone(),
                server_ip: b.server_ip.to_string(),
                port: i32::from(b.port),
                weight: i32::from(b.weight),
                r#type: b.server_type.clone(),
                description: b.description.clone(),
            })
            .collect(),
    }
}

pub fn vserver_group_item(v: &VServerGroupView) -> pb::VServerGroupItem {
    let g = &v.group;
    pb::VServerGroupItem {
        v_server_group_id: g.v_server_group_id.clone(),
        v_server_group_name: g.v_server_group_name.clone(),
        create_time: g.creation_time.to_cloud_minutes(),
        server_count: g.backend_servers.len() as i64,
        associated_objects: Some(pb::AssociatedObjects {
            listeners: Some(pb::AssociatedListenerList {
                listener: v
                    .listeners
                    .iter()
                    .map(|(protocol, port)| pb::AssociatedListener {
                        port: i32::from(*port),
                        protocol: protocol.clone(),
                    })
                    .collect(),
            }),
            rules: Some(pb::AssociatedRuleList::default()),
        }),
        tags: Some(pb::ResourceTags::default()),
    }
}

fn on_off(b: bool) -> String {
    if b { "on" } else { "off" }.to_string()
}

fn connect_port(h: &HealthCheck) -> Option<i32> {
    h.connect_port.map(i32::from)
}

pub fn tcp_listener_attribute(
    request_id: String,
    lb_id: &str,
    l: &Listener,
) -> pb::DescribeLoadBalancerTcpListenerAttributeResponse {
    let h = &l.health_check;
    pb::DescribeLoadBalancerTcpListenerAttributeResponse {
        request_id,
        load_balancer_id: lb_id.to_string(),
        listener_port: i32::from(l.listener_port),
        backend_server_port: l.backend_server_port.map(i32::from),
        bandwidth: l.bandwidth,
        status: l.status.as_str().into(),
        v_server_group_id: l.v_server_group_id.clone().unwrap_or_default(),
        scheduler: l.scheduler.as_str().into(),
        persistence_timeout: l.persistence_timeout as i32,
        established_timeout: l.established_timeout as i32,
        description: l.description.clone(),
        health_check: on_off(h.enabled),
        health_check_switch: on_off(h.enabled),
        health_check_type: h.check_type.as_str().into(),
        health_check_connect_port: connect_port(h),
        health_check_connect_timeout: h.connect_timeout as i32,
        health_check_interval: h.interval as i32,
        healthy_threshold: h.healthy_threshold as i32,
        unhealthy_threshold: h.unhealthy_threshold as i32,
        health_check_u_r_i: h.uri.clone(),
        health_check_domain: h.domain.clone(),
        health_check_http_code: h.http_code.clone(),
        health_check_method: h.method.clone(),
        syn_proxy: "disable".into(),
        connection_drain: on_off(l.connection_drain),
        connection_drain_timeout: l.connection_drain_timeout as i32,
        proxy_protocol_v2_enabled: l.proxy_protocol_v2_enabled,
        acl_status: "off".into(),
    }
}

pub fn udp_listener_attribute(
    request_id: String,
    lb_id: &str,
    l: &Listener,
) -> pb::DescribeLoadBalancerUdpListenerAttributeResponse {
    let h = &l.health_check;
    pb::DescribeLoadBalancerUdpListenerAttributeResponse {
        request_id,
        load_balancer_id: lb_id.to_string(),
        listener_port: i32::from(l.listener_port),
        backend_server_port: l.backend_server_port.map(i32::from),
        bandwidth: l.bandwidth,
        status: l.status.as_str().into(),
        v_server_group_id: l.v_server_group_id.clone().unwrap_or_default(),
        scheduler: l.scheduler.as_str().into(),
        persistence_timeout: l.persistence_timeout as i32,
        description: l.description.clone(),
        health_check: on_off(h.enabled),
        health_check_switch: on_off(h.enabled),
        health_check_connect_port: connect_port(h),
        health_check_connect_timeout: h.connect_timeout as i32,
        health_check_interval: h.interval as i32,
        healthy_threshold: h.healthy_threshold as i32,
        unhealthy_threshold: h.unhealthy_threshold as i32,
        health_check_req: h.udp_request.clone(),
        health_check_exp: h.udp_expect.clone(),
        connection_drain: on_off(l.connection_drain),
        connection_drain_timeout: l.connection_drain_timeout as i32,
        proxy_protocol_v2_enabled: l.proxy_protocol_v2_enabled,
        acl_status: "off".into(),
    }
}

/// One element of DescribeLoadBalancerListeners' flat `Listeners[]`, with the protocol's own
/// config object (and only that one).
pub fn listener_item(lb_id: &str, l: &Listener) -> pb::SlbListenerItem {
    let h = &l.health_check;
    let (tcp, udp) = match l.protocol {
        ListenerProtocol::Tcp => (
            Some(pb::TcpListenerConfig {
                persistence_timeout: l.persistence_timeout as i32,
                established_timeout: l.established_timeout as i32,
                healthy_threshold: h.healthy_threshold as i32,
                unhealthy_threshold: h.unhealthy_threshold as i32,
                health_check_connect_timeout: h.connect_timeout as i32,
                health_check_connect_port: connect_port(h),
                health_check_interval: h.interval as i32,
                connection_drain_timeout: l.connection_drain_timeout as i32,
                health_check: on_off(h.enabled),
                health_check_switch: on_off(h.enabled),
                health_check_type: h.check_type.as_str().into(),
                health_check_domain: h.domain.clone(),
                health_check_u_r_i: h.uri.clone(),
                health_check_http_code: h.http_code.clone(),
                health_check_method: h.method.clone(),
                connection_drain: on_off(l.connection_drain),
                proxy_protocol_v2_enabled: l.proxy_protocol_v2_enabled.to_string(),
            }),
            None,
        ),
        ListenerProtocol::Udp => (
            None,
            Some(pb::UdpListenerConfig {
                persistence_timeout: l.persistence_timeout as i32,
                healthy_threshold: h.healthy_threshold as i32,
                unhealthy_threshold: h.unhealthy_threshold as i32,
                health_check_connect_timeout: h.connect_timeout as i32,
                health_check_connect_port: connect_port(h),
                health_check_interval: h.interval as i32,
                connection_drain_timeout: l.connection_drain_timeout as i32,
                health_check: on_off(h.enabled),
                health_check_switch: on_off(h.enabled),
                health_check_req: h.udp_request.clone(),
                health_check_exp: h.udp_expect.clone(),
                connection_drain: on_off(l.connection_drain),
                proxy_protocol_v2_enabled: l.proxy_protocol_v2_enabled.to_string(),
            }),
        ),
    };
    pb::SlbListenerItem {
        load_balancer_id: lb_id.to_string(),
        listener_port: i32::from(l.listener_port),
        listener_protocol: l.protocol.as_str().into(),
        status: l.status.as_str().into(),
        v_server_group_id: l.v_server_group_id.clone().unwrap_or_default(),
        scheduler: l.scheduler.as_str().into(),
        description: l.description.clone(),
        backend_server_port: l.backend_server_port.map(i32::from),
        bandwidth: l.bandwidth,
        acl_status: "off".into(),
        tags: Vec::new(),
        t_c_p_listener_config: tcp,
        u_d_p_listener_config: udp,
    }
}
