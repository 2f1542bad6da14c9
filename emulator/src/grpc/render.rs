//! Model values → proto responses, in the cloud's layout: double-wrapped lists, the cloud's
//! time formats, status and type strings as the API spells them.

use enifab_model::catalog::InstanceType;
use enifab_model::eni::Eni;
use enifab_model::instance::InstanceView;
use enifab_model::security_group::{SecurityGroupView, SgRule, port_range_str};
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
        ipv6_sets: Some(pb::Ipv6Sets::default()),
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
        ipv6_sets: Some(pb::Ipv6Sets::default()),
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
        ipv6_cidr_block: String::new(),
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
    }
}
