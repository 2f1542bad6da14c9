//! Every method of `enifab.v1.Vpc`, `enifab.v1.Ecs` and `enifab.v1.Emulator`, called through the
//! generated clients against a real server on `127.0.0.1:0`: the happy path and the response
//! fields Terway and CCM read (reference §2–§5). Plus what the port serves besides the API:
//! reflection and health, and the error shape every failure has.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use enifab_model::TransitionDelays;
use enifab_tests::v1 as pb;
use enifab_tests::*;
use prost::Message;
use tonic::transport::Channel;

type Ecs = pb::ecs_client::EcsClient<Channel>;

fn dni() -> pb::DescribeNetworkInterfacesRequest {
    pb::DescribeNetworkInterfacesRequest { region_id: REGION.into(), ..Default::default() }
}

/// The IDs one DescribeNetworkInterfaces call returns (one page of up to 500).
async fn eni_ids(ecs: &mut Ecs, mut req: pb::DescribeNetworkInterfacesRequest) -> BTreeSet<String> {
    req.max_results.get_or_insert(500);
    ok(ecs.describe_network_interfaces(req).await)
        .network_interface_sets
        .unwrap_or_default()
        .network_interface_set
        .into_iter()
        .map(|e| e.network_interface_id)
        .collect()
}

fn set<const N: usize>(ids: [&str; N]) -> BTreeSet<String> {
    ids.into_iter().map(str::to_string).collect()
}

fn tag(k: &str, v: &str) -> pb::Tag {
    pb::Tag { key: k.into(), value: v.into() }
}

async fn create_sg(ecs: &mut Ecs, vpc_id: &str, name: &str, kind: &str) -> String {
    ok(ecs
        .create_security_group(pb::CreateSecurityGroupRequest {
            region_id: REGION.into(),
            vpc_id: vpc_id.into(),
            security_group_name: name.into(),
            security_group_type: kind.into(),
            ..Default::default()
        })
        .await)
    .security_group_id
}

async fn attribute(ecs: &mut Ecs, id: &str) -> pb::DescribeNetworkInterfaceAttributeResponse {
    ok(ecs
        .describe_network_interface_attribute(pb::DescribeNetworkInterfaceAttributeRequest {
            region_id: REGION.into(),
            network_interface_id: id.into(),
            attribute: "basic".into(),
        })
        .await)
}

async fn sg_attribute(ecs: &mut Ecs, id: &str, direction: &str) -> pb::DescribeSecurityGroupAttributeResponse {
    ok(ecs
        .describe_security_group_attribute(pb::DescribeSecurityGroupAttributeRequest {
            region_id: REGION.into(),
            security_group_id: id.into(),
            direction: direction.into(),
            ..Default::default()
        })
        .await)
}

fn permissions(a: &pb::DescribeSecurityGroupAttributeResponse) -> Vec<pb::PermissionItem> {
    a.permissions.clone().unwrap_or_default().permission
}

async fn describe_sgs(ecs: &mut Ecs, req: pb::DescribeSecurityGroupsRequest) -> Vec<pb::SecurityGroupItem> {
    ok(ecs.describe_security_groups(req).await).security_groups.unwrap_or_default().security_group
}

async fn describe_instances(ecs: &mut Ecs, req: pb::DescribeInstancesRequest) -> Vec<pb::InstanceItem> {
    ok(ecs.describe_instances(req).await).instances.unwrap_or_default().instance
}

fn in_cidr(ip: &str, cidr: &str) -> bool {
    let (net, prefix) = cidr.split_once('/').unwrap();
    let net: u32 = net.parse::<std::net::Ipv4Addr>().unwrap().into();
    let ip: u32 = ip.parse::<std::net::Ipv4Addr>().unwrap().into();
    let prefix: u32 = prefix.parse().unwrap();
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    ip & mask == net && ip != net && ip + 3 <= (net | !mask)
}

// ---- enifab.v1.Vpc ----------------------------------------------------------------------------------

#[tokio::test]
async fn vpc_and_vswitch_lifecycle() {
    let s = TestServer::start().await;
    let mut vpc = s.vpc();

    let created = ok(vpc
        .create_vpc(pb::CreateVpcRequest {
            region_id: REGION.into(),
            cidr_block: "192.168.0.0/16".into(),
            vpc_name: "lab".into(),
            description: "a lab".into(),
            tag: vec![tag("env", "test")],
            ..Default::default()
        })
        .await);
    assert!(created.vpc_id.starts_with("vpc-"), "{created:?}");
    assert!(created.v_router_id.starts_with("vrt-"), "{created:?}");
    assert!(created.route_table_id.starts_with("vtb-"), "{created:?}");
    assert!(!created.request_id.is_empty());
    // No CidrBlock: the cloud's default block.
    let default_vpc =
        ok(vpc.create_vpc(pb::CreateVpcRequest { region_id: REGION.into(), ..Default::default() }).await).vpc_id;

    let vsw = ok(vpc
        .create_v_switch(pb::CreateVSwitchRequest {
            region_id: REGION.into(),
            vpc_id: created.vpc_id.clone(),
            zone_id: "cn-hongkong-c".into(),
            cidr_block: "192.168.1.0/24".into(),
            v_switch_name: "pods".into(),
            ..Default::default()
        })
        .await)
    .v_switch_id;
    assert!(vsw.starts_with("vsw-"));

    let vpcs = ok(vpc.describe_vpcs(pb::DescribeVpcsRequest { region_id: REGION.into(), ..Default::default() }).await);
    assert_eq!(vpcs.total_count, 2);
    let v = vpcs.vpcs.unwrap().vpc.into_iter().find(|v| v.vpc_id == created.vpc_id).unwrap();
    assert_eq!(v.cidr_block, "192.168.0.0/16");
    assert_eq!(v.vpc_name, "lab");
    assert_eq!(v.description, "a lab");
    assert_eq!(v.status, "Available");
    assert_eq!(v.region_id, REGION);
    assert_eq!(v.v_router_id, created.v_router_id);
    assert_eq!(v.v_switch_ids.unwrap().v_switch_id, vec![vsw.clone()]);
    assert_eq!(v.tags.unwrap().tag, vec![tag("env", "test")]);
    assert!(v.creation_time.ends_with('Z'), "{}", v.creation_time);

    let by_id = ok(vpc
        .describe_vpcs(pb::DescribeVpcsRequest {
            region_id: REGION.into(),
            vpc_id: default_vpc.clone(),
            ..Default::default()
        })
        .await)
    .vpcs
    .unwrap()
    .vpc;
    assert_eq!(by_id.len(), 1);
    assert_eq!(by_id[0].cidr_block, "172.16.0.0/12");
    let by_name = ok(vpc
        .describe_vpcs(pb::DescribeVpcsRequest {
            region_id: REGION.into(),
            vpc_name: "lab".into(),
            ..Default::default()
        })
        .await)
    .vpcs
    .unwrap()
    .vpc;
    assert_eq!(by_name.len(), 1);
    assert_eq!(by_name[0].vpc_id, created.vpc_id);

    let sw = vswitch(&mut vpc, &vsw).await;
    assert_eq!(sw.vpc_id, created.vpc_id);
    assert_eq!(sw.zone_id, "cn-hongkong-c");
    assert_eq!(sw.cidr_block, "192.168.1.0/24");
    assert_eq!(sw.v_switch_name, "pods");
    assert_eq!(sw.status, "Available");
    // A /24 keeps .0, .253, .254 and .255.
    assert_eq!(sw.available_ip_address_count, 252);
    for (filter, want) in [
        (pb::DescribeVSwitchesRequest { vpc_id: created.vpc_id.clone(), ..Default::default() }, 1),
        (pb::DescribeVSwitchesRequest { vpc_id: default_vpc.clone(), ..Default::default() }, 0),
        (pb::DescribeVSwitchesRequest { zone_id: "cn-hongkong-c".into(), ..Default::default() }, 1),
        (pb::DescribeVSwitchesRequest { zone_id: "cn-hongkong-b".into(), ..Default::default() }, 0),
        (pb::DescribeVSwitchesRequest { v_switch_name: "pods".into(), ..Default::default() }, 1),
    ] {
        let got = ok(vpc.describe_v_switches(filter.clone()).await);
        assert_eq!(got.v_switches.unwrap().v_switch.len(), want, "{filter:?}");
        assert_eq!(got.total_count, want as i32);
    }

    // DescribeVpcAttribute: the flat object the cloud-controller-manager reads CidrBlock (and
    // SecondaryCidrBlocks) from.
    let attr = ok(vpc
        .describe_vpc_attribute(pb::DescribeVpcAttributeRequest {
            region_id: REGION.into(),
            vpc_id: created.vpc_id.clone(),
            ..Default::default()
        })
        .await);
    assert_eq!((attr.vpc_id.as_str(), attr.cidr_block.as_str()), (created.vpc_id.as_str(), "192.168.0.0/16"));
    assert_eq!((attr.vpc_name.as_str(), attr.status.as_str()), ("lab", "Available"));
    assert_eq!(attr.v_switch_ids.unwrap().v_switch_id, vec![vsw.clone()]);
    assert!(attr.secondary_cidr_blocks.unwrap().secondary_cidr_block.is_empty());
    let missing = pb::DescribeVpcAttributeRequest { vpc_id: "vpc-nope".into(), ..Default::default() };
    assert_code(vpc.describe_vpc_attribute(missing).await, "InvalidVpcId.NotFound");

    ok(vpc.delete_v_switch(pb::DeleteVSwitchRequest { region_id: REGION.into(), v_switch_id: vsw.clone() }).await);
    let left = ok(vpc
        .describe_v_switches(pb::DescribeVSwitchesRequest { region_id: REGION.into(), ..Default::default() })
        .await);
    assert!(left.v_switches.unwrap().v_switch.is_empty());

    for id in [&created.vpc_id, &default_vpc] {
        ok(vpc.delete_vpc(pb::DeleteVpcRequest { region_id: REGION.into(), vpc_id: id.clone() }).await);
    }
    let left = ok(vpc.describe_vpcs(pb::DescribeVpcsRequest { region_id: REGION.into(), ..Default::default() }).await);
    assert_eq!(left.total_count, 0);
    assert!(left.vpcs.unwrap().vpc.is_empty());
}

#[tokio::test]
async fn modify_attributes_rename_and_switch_ipv6_on() {
    let s = TestServer::start().await;
    let mut vpc = s.vpc();
    let vpc_id = ok(vpc
        .create_vpc(pb::CreateVpcRequest {
            region_id: REGION.into(),
            cidr_block: "192.168.0.0/16".into(),
            ..Default::default()
        })
        .await)
    .vpc_id;
    let vsw = ok(vpc
        .create_v_switch(pb::CreateVSwitchRequest {
            region_id: REGION.into(),
            vpc_id: vpc_id.clone(),
            zone_id: "cn-hongkong-c".into(),
            cidr_block: "192.168.1.0/24".into(),
            ..Default::default()
        })
        .await)
    .v_switch_id;
    let vsw_ipv6 = vswitch(&mut vpc, &vsw).await;
    assert_eq!((vsw_ipv6.ipv6_cidr_block.as_str(), vsw_ipv6.enabled_ipv6), ("", false));

    // The vSwitch first: its VPC has no /56 yet, so nothing changes.
    let early = vpc
        .modify_v_switch_attribute(pb::ModifyVSwitchAttributeRequest {
            region_id: REGION.into(),
            v_switch_id: vsw.clone(),
            ipv6_cidr_block: Some(3),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&early), "InvalidParameter");

    ok(vpc
        .modify_vpc_attribute(pb::ModifyVpcAttributeRequest {
            region_id: REGION.into(),
            vpc_id: vpc_id.clone(),
            vpc_name: Some("renamed".into()),
            enable_i_pv6: Some(true),
            ..Default::default()
        })
        .await);
    let a = ok(vpc
        .describe_vpc_attribute(pb::DescribeVpcAttributeRequest {
            region_id: REGION.into(),
            vpc_id: vpc_id.clone(),
            ..Default::default()
        })
        .await);
    assert_eq!(a.vpc_name, "renamed");
    assert!(a.ipv6_cidr_block.ends_with("/56"), "{a:?}");
    ok(vpc
        .modify_v_switch_attribute(pb::ModifyVSwitchAttributeRequest {
            region_id: REGION.into(),
            v_switch_id: vsw.clone(),
            ipv6_cidr_block: Some(3),
            description: Some("now dual stack".into()),
            ..Default::default()
        })
        .await);
    let v = vswitch(&mut vpc, &vsw).await;
    assert!(v.enabled_ipv6 && v.ipv6_cidr_block.ends_with(":3::/64"), "{v:?}");
    assert_eq!(v.description, "now dual stack");
    let gone = vpc
        .modify_vpc_attribute(pb::ModifyVpcAttributeRequest {
            region_id: REGION.into(),
            vpc_id: "vpc-nope".into(),
            vpc_name: Some("x".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&gone), "InvalidVpcId.NotFound");
}

#[tokio::test]
async fn vpc_and_vswitch_client_tokens_replay() {
    let s = TestServer::start().await;
    let mut vpc = s.vpc();
    let req = pb::CreateVpcRequest {
        region_id: REGION.into(),
        cidr_block: "10.0.0.0/8".into(),
        client_token: "vpc-token-1".into(),
        ..Default::default()
    };
    let a = ok(vpc.create_vpc(req.clone()).await);
    let b = ok(vpc.create_vpc(req).await);
    assert_eq!(a.vpc_id, b.vpc_id);
    let vsw = pb::CreateVSwitchRequest {
        region_id: REGION.into(),
        vpc_id: a.vpc_id.clone(),
        zone_id: ZONE.into(),
        cidr_block: "10.1.0.0/16".into(),
        client_token: "vsw-token-1".into(),
        ..Default::default()
    };
    let x = ok(vpc.create_v_switch(vsw.clone()).await);
    let y = ok(vpc.create_v_switch(vsw).await);
    assert_eq!(x.v_switch_id, y.v_switch_id);
    let snap = Snapshot::take(s.channel()).await;
    assert_eq!(snap.vpcs.len(), 1);
    assert_eq!(snap.vswitches.len(), 1);
}

// ---- instances and instance types ------------------------------------------------------------------

#[tokio::test]
async fn instance_describe_stop_start_delete() {
    let s = TestServer::start().await;
    let t = build_topology(s.channel()).await;
    let mut ecs = s.ecs();
    let mut vpc = s.vpc();
    let member = t.create_member(&mut ecs).await;
    // A member with DeleteOnRelease goes with the instance; one without stays.
    let doomed = t.create_member(&mut ecs).await;
    ok(ecs
        .modify_network_interface_attribute(pb::ModifyNetworkInterfaceAttributeRequest {
            region_id: REGION.into(),
            network_interface_id: doomed.clone(),
            delete_on_release: Some(true),
            ..Default::default()
        })
        .await);

    let all =
        describe_instances(&mut ecs, pb::DescribeInstancesRequest { region_id: REGION.into(), ..Default::default() })
            .await;
    assert_eq!(all.len(), 1);
    let i = &all[0];
    assert!(t.instance_id.starts_with("i-"));
    assert_eq!(i.instance_id, t.instance_id);
    assert_eq!(i.instance_name, NODE_NAME);
    assert_eq!(i.instance_type, NODE_TYPE);
    assert_eq!(i.instance_type_family, "ecs.g7");
    assert_eq!(i.region_id, REGION);
    assert_eq!(i.zone_id, ZONE);
    assert_eq!(i.status, "Running");
    assert_eq!(i.cpu, 4);
    assert_eq!(i.memory, 16 * 1024);
    assert_eq!(i.instance_network_type, "vpc");
    let va = i.vpc_attributes.clone().unwrap();
    assert_eq!(va.vpc_id, t.vpc_id);
    assert_eq!(va.v_switch_id, t.node_vsw);
    assert_eq!(va.private_ip_address.unwrap().ip_address, vec![NODE_IP.to_string()]);
    assert_eq!(i.security_group_ids.clone().unwrap().security_group_id, vec![t.sg_id.clone()]);
    // The instance's own NICs: primary and trunk; the member is not a NIC of the instance.
    let nics = i.network_interfaces.clone().unwrap().network_interface;
    let kinds: Vec<(&str, &str)> = nics.iter().map(|n| (n.network_interface_id.as_str(), n.r#type.as_str())).collect();
    assert_eq!(kinds, vec![(t.primary_eni_id.as_str(), "Primary"), (t.trunk_eni_id.as_str(), "Trunk")]);
    assert_eq!(nics[0].primary_ip_address, NODE_IP);
    assert!(nics[0].mac_address.starts_with("00:16:3e:"));

    // Filters: InstanceIds (a JSON array), PrivateIpAddresses, InstanceName, Status.
    for (req, want) in [
        (pb::DescribeInstancesRequest { instance_ids: format!("[\"{}\"]", t.instance_id), ..Default::default() }, 1),
        (pb::DescribeInstancesRequest { instance_ids: "[\"i-nope\"]".into(), ..Default::default() }, 0),
        (pb::DescribeInstancesRequest { private_ip_addresses: format!("[\"{NODE_IP}\"]"), ..Default::default() }, 1),
        (
            pb::DescribeInstancesRequest {
                instance_name: NODE_NAME.into(),
                status: "Running".into(),
                ..Default::default()
            },
            1,
        ),
        (pb::DescribeInstancesRequest { status: "Stopped".into(), ..Default::default() }, 0),
    ] {
        assert_eq!(describe_instances(&mut ecs, req.clone()).await.len(), want, "{req:?}");
    }

    let status = |ecs: &mut Ecs| {
        let mut ecs = ecs.clone();
        let id = t.instance_id.clone();
        async move {
            describe_instances(
                &mut ecs,
                pb::DescribeInstancesRequest { instance_ids: format!("[\"{id}\"]"), ..Default::default() },
            )
            .await[0]
                .status
                .clone()
        }
    };
    ok(ecs
        .stop_instance(pb::StopInstanceRequest {
            region_id: REGION.into(),
            instance_id: t.instance_id.clone(),
            force_stop: Some(true),
        })
        .await);
    assert_eq!(status(&mut ecs).await, "Stopped");
    ok(ecs
        .start_instance(pb::StartInstanceRequest { region_id: REGION.into(), instance_id: t.instance_id.clone() })
        .await);
    assert_eq!(status(&mut ecs).await, "Running");
    ok(ecs
        .stop_instance(pb::StopInstanceRequest {
            region_id: REGION.into(),
            instance_id: t.instance_id.clone(),
            ..Default::default()
        })
        .await);
    assert_eq!(status(&mut ecs).await, "Stopped");

    // Delete: the primary ENI goes with the instance (its IP returns to the vSwitch), the trunk
    // and the member are detached and stay (DeleteOnRelease is false for them).
    let node_before = vswitch(&mut vpc, &t.node_vsw).await.available_ip_address_count;
    let pod_before = vswitch(&mut vpc, &t.pod_vsw).await.available_ip_address_count;
    ok(ecs
        .delete_instance(pb::DeleteInstanceRequest {
            region_id: REGION.into(),
            instance_id: t.instance_id.clone(),
            force: None,
        })
        .await);
    assert!(
        describe_instances(&mut ecs, pb::DescribeInstancesRequest { region_id: REGION.into(), ..Default::default() })
            .await
            .is_empty()
    );
    assert!(describe_eni(&mut ecs, &t.primary_eni_id).await.is_none());
    assert_eq!(vswitch(&mut vpc, &t.node_vsw).await.available_ip_address_count, node_before + 1);
    let trunk = describe_eni(&mut ecs, &t.trunk_eni_id).await.unwrap();
    assert_eq!((trunk.r#type.as_str(), trunk.status.as_str()), ("Trunk", "Available"));
    assert!(trunk.attachment.is_none() && trunk.instance_id.is_empty());
    let m = describe_eni(&mut ecs, &member).await.unwrap();
    assert_eq!((m.r#type.as_str(), m.status.as_str()), ("Secondary", "Available"));
    assert!(m.attachment.is_none() && m.instance_id.is_empty());
    assert!(describe_eni(&mut ecs, &doomed).await.is_none(), "DeleteOnRelease");
    assert_eq!(vswitch(&mut vpc, &t.pod_vsw).await.available_ip_address_count, pod_before + 1);
    let snap = Snapshot::take(s.channel()).await;
    assert_eq!(consistency_violations(&snap), Vec::<String>::new());
}

#[tokio::test]
async fn instance_with_force_delete_while_running() {
    let s = TestServer::start().await;
    let t = build_topology(s.channel()).await;
    let mut ecs = s.ecs();
    ok(ecs
        .delete_instance(pb::DeleteInstanceRequest {
            region_id: REGION.into(),
            instance_id: t.instance_id.clone(),
            force: Some(true),
        })
        .await);
    assert!(Snapshot::take(s.channel()).await.instances.is_empty());
}

#[tokio::test]
async fn describe_instance_types_and_create_instance_type() {
    let s = TestServer::start().await;
    let mut ecs = s.ecs();
    let mut emu = s.emulator();

    let all = ok(ecs
        .describe_instance_types(pb::DescribeInstanceTypesRequest { region_id: REGION.into(), ..Default::default() })
        .await)
    .instance_types
    .unwrap()
    .instance_type;
    assert!(all.len() >= 5, "{all:?}");
    let ids: Vec<&str> = all.iter().map(|t| t.instance_type_id.as_str()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "sorted by ID: {ids:?}");

    let g7 = ok(ecs
        .describe_instance_types(pb::DescribeInstanceTypesRequest {
            region_id: REGION.into(),
            instance_types: vec![NODE_TYPE.into()],
            ..Default::default()
        })
        .await)
    .instance_types
    .unwrap()
    .instance_type;
    assert_eq!(g7.len(), 1);
    let g7 = &g7[0];
    assert_eq!(g7.instance_type_id, NODE_TYPE);
    assert_eq!(g7.instance_type_family, "ecs.g7");
    assert_eq!(g7.cpu_core_count, 4);
    assert_eq!(g7.eni_quantity, 4);
    assert_eq!(g7.eni_private_ip_address_quantity, 15);
    assert_eq!(g7.eni_total_quantity, 20);
    assert!(g7.eni_trunk_supported);
    assert_eq!(g7.network_cards.clone().unwrap().network_card_info.len(), 1);

    let family = ok(ecs
        .describe_instance_types(pb::DescribeInstanceTypesRequest {
            region_id: REGION.into(),
            instance_type_family: "ecs.g7".into(),
            ..Default::default()
        })
        .await)
    .instance_types
    .unwrap()
    .instance_type;
    assert!(!family.is_empty());
    assert!(family.iter().all(|t| t.instance_type_family == "ecs.g7"));

    // Emulator/CreateInstanceType adds a type DescribeInstanceTypes then shows.
    let req = pb::CreateInstanceTypeRequest {
        instance_type_id: "ecs.lab.huge".into(),
        cpu_core_count: 8,
        memory_size: 32.0,
        eni_quantity: 6,
        eni_private_ip_address_quantity: 20,
        eni_ipv6_address_quantity: 1,
        eni_total_quantity: 206,
        eni_trunk_supported: true,
        instance_bandwidth_rx: 1000,
        instance_bandwidth_tx: 2000,
        ..Default::default()
    };
    let created = ok(emu.create_instance_type(req.clone()).await);
    assert_eq!(created.instance_type_id, "ecs.lab.huge");
    assert!(!created.request_id.is_empty());
    // The same definition again is a no-op.
    ok(emu.create_instance_type(req).await);
    let got = ok(ecs
        .describe_instance_types(pb::DescribeInstanceTypesRequest {
            region_id: REGION.into(),
            instance_types: vec!["ecs.lab.huge".into()],
            ..Default::default()
        })
        .await)
    .instance_types
    .unwrap()
    .instance_type;
    assert_eq!(got.len(), 1);
    let t = &got[0];
    assert_eq!(t.instance_type_family, "ecs.lab");
    assert_eq!((t.eni_quantity, t.eni_total_quantity), (6, 206));
    assert_eq!(t.eni_private_ip_address_quantity, 20);
    assert_eq!(t.cpu_core_count, 8);
    assert!(t.eni_trunk_supported);
    assert_eq!((t.instance_bandwidth_rx, t.instance_bandwidth_tx), (1000, 2000));
}

// ---- ENIs ------------------------------------------------------------------------------------------

#[tokio::test]
async fn trunk_and_member_enis() {
    let s = TestServer::start().await;
    let t = build_topology(s.channel()).await;
    let mut ecs = s.ecs();

    // CreateNetworkInterface InstanceType=Trunk answers Type=Trunk (the controlplane stores it).
    let trunk2 = ok(ecs
        .create_network_interface(pb::CreateNetworkInterfaceRequest {
            region_id: REGION.into(),
            v_switch_id: t.pod_vsw.clone(),
            security_group_ids: vec![t.sg_id.clone()],
            instance_type: "Trunk".into(),
            network_interface_name: "t2".into(),
            description: "second trunk".into(),
            tag: vec![tag("creator", "terway")],
            resource_group_id: "rg-aek2".into(),
            ..Default::default()
        })
        .await);
    assert!(trunk2.network_interface_id.starts_with("eni-"), "{trunk2:?}");
    assert_eq!(trunk2.r#type, "Trunk");
    assert_eq!(trunk2.status, "Available");
    assert_eq!(trunk2.v_switch_id, t.pod_vsw);
    assert_eq!(trunk2.vpc_id, t.vpc_id);
    assert_eq!(trunk2.zone_id, ZONE);
    assert_eq!(trunk2.resource_group_id, "rg-aek2");
    assert_eq!(trunk2.network_interface_name, "t2");
    assert_eq!(trunk2.description, "second trunk");
    assert!(!trunk2.source_dest_check);
    assert!(!trunk2.owner_id.is_empty());
    assert_eq!(trunk2.security_group_ids.clone().unwrap().security_group_id, vec![t.sg_id.clone()]);
    assert_eq!(
        trunk2.tags.clone().unwrap().tag,
        vec![pb::ResourceTag { tag_key: "creator".into(), tag_value: "terway".into() }]
    );
    let mac = &trunk2.mac_address;
    assert!(mac.starts_with("00:16:3e:") && mac.len() == 17 && *mac == mac.to_lowercase(), "{mac}");
    assert!(in_cidr(&trunk2.private_ip_address, POD_VSW_CIDR), "{trunk2:?}");
    let sets = trunk2.private_ip_sets.clone().unwrap().private_ip_set;
    assert_eq!(sets.len(), 1);
    assert_eq!(sets[0].private_ip_address, trunk2.private_ip_address);
    assert!(sets[0].primary);

    // The standard trunk is attached as the instance's NIC 1.
    let trunk = describe_eni(&mut ecs, &t.trunk_eni_id).await.unwrap();
    assert_eq!((trunk.r#type.as_str(), trunk.status.as_str()), ("Trunk", "InUse"));
    assert_eq!(trunk.instance_id, t.instance_id);
    let ta = trunk.attachment.clone().unwrap();
    assert_eq!((ta.instance_id.as_str(), ta.device_index), (t.instance_id.as_str(), 1));
    assert!(ta.trunk_network_interface_id.is_empty());

    // Members: Type Member, InUse, Attachment.DeviceIndex = VLAN (lowest free from 1),
    // TrunkNetworkInterfaceId, InstanceId and Attachment.InstanceId both set.
    let m1 = t.create_member(&mut ecs).await;
    let m2 = t.create_member(&mut ecs).await;
    for (id, vlan) in [(&m1, 1), (&m2, 2)] {
        let e = describe_eni(&mut ecs, id).await.unwrap();
        assert_eq!(e.r#type, "Member", "{e:?}");
        assert_eq!(e.status, "InUse");
        assert_eq!(e.instance_id, t.instance_id);
        let a = e.attachment.unwrap();
        assert_eq!(a.instance_id, t.instance_id);
        assert_eq!(a.trunk_network_interface_id, t.trunk_eni_id);
        assert_eq!(a.device_index, vlan);
    }
    let attr = attribute(&mut ecs, &t.trunk_eni_id).await;
    assert_eq!(attr.network_interface_id, t.trunk_eni_id);
    assert_eq!(attr.r#type, "Trunk");
    assert_eq!(attr.mac_address, trunk.mac_address);
    let members: BTreeSet<String> = attr
        .attachment
        .unwrap()
        .member_network_interface_ids
        .unwrap()
        .member_network_interface_id
        .into_iter()
        .collect();
    assert_eq!(members, set([&m1, &m2]));
    let a1 = attribute(&mut ecs, &m1).await;
    assert_eq!(a1.r#type, "Member");
    assert_eq!(a1.instance_id, t.instance_id);
    let att = a1.attachment.unwrap();
    assert_eq!((att.device_index, att.trunk_network_interface_id.as_str()), (1, t.trunk_eni_id.as_str()));

    // Attaching again where it already is succeeds and changes nothing (Terway re-issues it).
    let before = Snapshot::take(s.channel()).await;
    ok(ecs
        .attach_network_interface(pb::AttachNetworkInterfaceRequest {
            region_id: REGION.into(),
            instance_id: t.instance_id.clone(),
            network_interface_id: m1.clone(),
            trunk_network_instance_id: t.trunk_eni_id.clone(),
            ..Default::default()
        })
        .await);
    before.assert_same(&Snapshot::take(s.channel()).await, "re-attach");

    // Detach a member: Available, Secondary again, no attachment; its VLAN is free again.
    ok(ecs
        .detach_network_interface(pb::DetachNetworkInterfaceRequest {
            region_id: REGION.into(),
            instance_id: t.instance_id.clone(),
            network_interface_id: m1.clone(),
            trunk_network_instance_id: t.trunk_eni_id.clone(),
        })
        .await);
    let e = describe_eni(&mut ecs, &m1).await.unwrap();
    assert_eq!((e.r#type.as_str(), e.status.as_str()), ("Secondary", "Available"));
    assert!(e.attachment.is_none() && e.instance_id.is_empty());
    // Detaching again is a no-op success (Terway's GC may repeat it).
    ok(ecs
        .detach_network_interface(pb::DetachNetworkInterfaceRequest {
            region_id: REGION.into(),
            instance_id: t.instance_id.clone(),
            network_interface_id: m1.clone(),
            trunk_network_instance_id: t.trunk_eni_id.clone(),
        })
        .await);
    let m3 = t.create_member(&mut ecs).await;
    let e3 = describe_eni(&mut ecs, &m3).await.unwrap();
    assert_eq!(e3.attachment.unwrap().device_index, 1, "the lowest free VLAN");

    // Delete the detached one: gone, and a lookup by its ID is an empty list, not an error.
    ok(ecs
        .delete_network_interface(pb::DeleteNetworkInterfaceRequest {
            region_id: REGION.into(),
            network_interface_id: m1.clone(),
        })
        .await);
    assert!(describe_eni(&mut ecs, &m1).await.is_none());
    assert_code(
        ecs.describe_network_interface_attribute(pb::DescribeNetworkInterfaceAttributeRequest {
            region_id: REGION.into(),
            network_interface_id: m1.clone(),
            ..Default::default()
        })
        .await,
        "InvalidEniId.NotFound",
    );
    assert_eq!(consistency_violations(&Snapshot::take(s.channel()).await), Vec::<String>::new());
}

#[tokio::test]
async fn secondary_eni_attach_detach_delete_and_ip_counts() {
    let s = TestServer::start().await;
    let t = build_topology(s.channel()).await;
    let mut ecs = s.ecs();
    let mut vpc = s.vpc();
    let pod0 = vswitch(&mut vpc, &t.pod_vsw).await.available_ip_address_count;
    assert_eq!(pod0, usable_ips(POD_VSW_CIDR));
    let node0 = vswitch(&mut vpc, &t.node_vsw).await.available_ip_address_count;
    // Primary ENI and trunk hold one address each.
    assert_eq!(node0, usable_ips(NODE_VSW_CIDR) - 2);

    // By count: 1 primary + 2 secondaries = 3 addresses.
    let a = ok(ecs
        .create_network_interface(pb::CreateNetworkInterfaceRequest {
            region_id: REGION.into(),
            v_switch_id: t.pod_vsw.clone(),
            security_group_id: t.sg_id.clone(),
            secondary_private_ip_address_count: Some(2),
            ..Default::default()
        })
        .await);
    assert_eq!(a.r#type, "Secondary");
    let ips: Vec<_> = a.private_ip_sets.clone().unwrap().private_ip_set;
    assert_eq!(ips.len(), 3);
    assert_eq!(ips.iter().filter(|p| p.primary).count(), 1);
    assert!(ips.iter().all(|p| in_cidr(&p.private_ip_address, POD_VSW_CIDR)));
    assert_eq!(vswitch(&mut vpc, &t.pod_vsw).await.available_ip_address_count, pod0 - 3);

    // By address: a named primary and two named secondaries.
    let b = ok(ecs
        .create_network_interface(pb::CreateNetworkInterfaceRequest {
            region_id: REGION.into(),
            v_switch_id: t.pod_vsw.clone(),
            security_group_ids: vec![t.sg_id.clone()],
            primary_ip_address: "10.0.66.10".into(),
            private_ip_address: vec!["10.0.66.11".into(), "10.0.66.12".into()],
            ..Default::default()
        })
        .await);
    assert_eq!(b.private_ip_address, "10.0.66.10");
    let got: Vec<(String, bool)> =
        b.private_ip_sets.unwrap().private_ip_set.into_iter().map(|p| (p.private_ip_address, p.primary)).collect();
    assert_eq!(
        got,
        vec![("10.0.66.10".to_string(), true), ("10.0.66.11".to_string(), false), ("10.0.66.12".to_string(), false)]
    );
    assert_eq!(vswitch(&mut vpc, &t.pod_vsw).await.available_ip_address_count, pod0 - 6);

    // A plain attach: Secondary, InUse, the instance's next DeviceIndex (0 primary, 1 trunk).
    ok(ecs
        .attach_network_interface(pb::AttachNetworkInterfaceRequest {
            region_id: REGION.into(),
            instance_id: t.instance_id.clone(),
            network_interface_id: a.network_interface_id.clone(),
            ..Default::default()
        })
        .await);
    let e = describe_eni(&mut ecs, &a.network_interface_id).await.unwrap();
    assert_eq!((e.r#type.as_str(), e.status.as_str()), ("Secondary", "InUse"));
    assert_eq!(e.instance_id, t.instance_id);
    let att = e.attachment.unwrap();
    assert_eq!(att.device_index, 2);
    assert!(att.trunk_network_interface_id.is_empty());
    assert_eq!(ips_of(&describe_eni(&mut ecs, &a.network_interface_id).await.unwrap()).len(), 3);

    ok(ecs
        .detach_network_interface(pb::DetachNetworkInterfaceRequest {
            region_id: REGION.into(),
            instance_id: t.instance_id.clone(),
            network_interface_id: a.network_interface_id.clone(),
            ..Default::default()
        })
        .await);
    let e = describe_eni(&mut ecs, &a.network_interface_id).await.unwrap();
    assert_eq!((e.r#type.as_str(), e.status.as_str()), ("Secondary", "Available"));
    // Detach keeps the addresses; delete releases them all.
    assert_eq!(vswitch(&mut vpc, &t.pod_vsw).await.available_ip_address_count, pod0 - 6);
    for id in [&a.network_interface_id, &b.network_interface_id] {
        ok(ecs
            .delete_network_interface(pb::DeleteNetworkInterfaceRequest {
                region_id: REGION.into(),
                network_interface_id: id.clone(),
            })
            .await);
        assert!(describe_eni(&mut ecs, id).await.is_none());
    }
    assert_eq!(vswitch(&mut vpc, &t.pod_vsw).await.available_ip_address_count, pod0);
    assert_eq!(vswitch(&mut vpc, &t.node_vsw).await.available_ip_address_count, node0);
}

#[tokio::test]
async fn transitions_take_their_delay() {
    let delays = TransitionDelays { attach_ms: 600, detach_ms: 600, delete_ms: 600, start_stop_ms: 600 };
    let s = TestServer::start_with_delays(delays).await;
    let t = build_topology(s.channel()).await; // waits for the trunk to be InUse
    let mut ecs = s.ecs();
    let id = t.create_pod_eni(&mut ecs).await.network_interface_id;
    ok(ecs
        .attach_network_interface(pb::AttachNetworkInterfaceRequest {
            region_id: REGION.into(),
            instance_id: t.instance_id.clone(),
            network_interface_id: id.clone(),
            trunk_network_instance_id: t.trunk_eni_id.clone(),
            ..Default::default()
        })
        .await);
    let e = describe_eni(&mut ecs, &id).await.unwrap();
    assert_eq!((e.status.as_str(), e.r#type.as_str()), ("Attaching", "Member"));
    assert!(e.attachment.unwrap().device_index >= 1);
    wait_status(&mut ecs, &id, "InUse").await;
    ok(ecs
        .detach_network_interface(pb::DetachNetworkInterfaceRequest {
            region_id: REGION.into(),
            instance_id: t.instance_id.clone(),
            network_interface_id: id.clone(),
            trunk_network_instance_id: t.trunk_eni_id.clone(),
        })
        .await);
    assert_eq!(describe_eni(&mut ecs, &id).await.unwrap().status, "Detaching");
    let e = wait_status(&mut ecs, &id, "Available").await;
    assert_eq!(e.r#type, "Secondary");
    ok(ecs
        .delete_network_interface(pb::DeleteNetworkInterfaceRequest {
            region_id: REGION.into(),
            network_interface_id: id.clone(),
        })
        .await);
    assert_eq!(describe_eni(&mut ecs, &id).await.unwrap().status, "Deleting");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while describe_eni(&mut ecs, &id).await.is_some() {
        assert!(tokio::time::Instant::now() < deadline, "never deleted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    ok(ecs
        .stop_instance(pb::StopInstanceRequest {
            region_id: REGION.into(),
            instance_id: t.instance_id.clone(),
            ..Default::default()
        })
        .await);
    let inst = |ecs: &mut Ecs| {
        let mut ecs = ecs.clone();
        async move {
            describe_instances(
                &mut ecs,
                pb::DescribeInstancesRequest { region_id: REGION.into(), ..Default::default() },
            )
            .await[0]
                .status
                .clone()
        }
    };
    assert_eq!(inst(&mut ecs).await, "Stopping");
    // Attach needs a Running or Stopped instance.
    let other = t.create_pod_eni(&mut ecs).await.network_interface_id;
    let before = Snapshot::take(s.channel()).await;
    assert_code(
        ecs.attach_network_interface(pb::AttachNetworkInterfaceRequest {
            region_id: REGION.into(),
            instance_id: t.instance_id.clone(),
            network_interface_id: other.clone(),
            trunk_network_instance_id: t.trunk_eni_id.clone(),
            ..Default::default()
        })
        .await,
        "InvalidOperation.InvalidEcsState",
    );
    let after = Snapshot::take(s.channel()).await;
    // Only the clock may have moved the instance on; the ENI is untouched.
    assert_eq!(before.enis, after.enis);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while inst(&mut ecs).await != "Stopped" {
        assert!(tokio::time::Instant::now() < deadline, "never stopped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn describe_network_interfaces_filters() {
    let s = TestServer::start().await;
    let t = build_topology(s.channel()).await;
    let mut ecs = s.ecs();
    let sg2 = create_sg(&mut ecs, &t.vpc_id, "second", "").await;

    let mk = |name: &str, tags: Vec<pb::Tag>, count: Option<i32>, sgs: Vec<String>, vsw: &str| {
        pb::CreateNetworkInterfaceRequest {
            region_id: REGION.into(),
            v_switch_id: vsw.into(),
            security_group_ids: sgs,
            network_interface_name: name.into(),
            tag: tags,
            secondary_private_ip_address_count: count,
            ..Default::default()
        }
    };
    let a =
        ok(ecs.create_network_interface(mk("a", vec![tag("k", "v1")], None, vec![t.sg_id.clone()], &t.pod_vsw)).await);
    let b = ok(ecs
        .create_network_interface(mk(
            "b",
            vec![tag("k", "v2"), tag("team", "net")],
            Some(2),
            vec![sg2.clone()],
            &t.pod_vsw,
        ))
        .await);
    let c = t.create_member(&mut ecs).await;
    let d = ok(ecs.create_network_interface(mk("d", vec![], None, vec![t.sg_id.clone()], &t.node_vsw)).await);
    ok(ecs
        .attach_network_interface(pb::AttachNetworkInterfaceRequest {
            region_id: REGION.into(),
            instance_id: t.instance_id.clone(),
            network_interface_id: d.network_interface_id.clone(),
            ..Default::default()
        })
        .await);
    let (a_id, b_id, d_id) =
        (a.network_interface_id.as_str(), b.network_interface_id.as_str(), d.network_interface_id.as_str());
    let b_ips: Vec<String> =
        b.private_ip_sets.clone().unwrap().private_ip_set.into_iter().map(|p| p.private_ip_address).collect();
    assert_eq!(b_ips.len(), 3);
    let (p, tr) = (t.primary_eni_id.as_str(), t.trunk_eni_id.as_str());

    let cases: Vec<(&str, pb::DescribeNetworkInterfacesRequest, BTreeSet<String>)> = vec![
        ("everything", dni(), set([a_id, b_id, &c, d_id, p, tr])),
        (
            "VpcId",
            pb::DescribeNetworkInterfacesRequest { vpc_id: t.vpc_id.clone(), ..dni() },
            set([a_id, b_id, &c, d_id, p, tr]),
        ),
        (
            "VSwitchId",
            pb::DescribeNetworkInterfacesRequest { v_switch_id: t.pod_vsw.clone(), ..dni() },
            set([a_id, b_id, &c]),
        ),
        (
            "VSwitchId AND Type",
            pb::DescribeNetworkInterfacesRequest { v_switch_id: t.pod_vsw.clone(), r#type: "Member".into(), ..dni() },
            set([&c]),
        ),
        (
            "Type=Member AND Status=InUse (Terway's GC)",
            pb::DescribeNetworkInterfacesRequest { r#type: "Member".into(), status: "InUse".into(), ..dni() },
            set([&c]),
        ),
        (
            "Type=Secondary AND Status=Available",
            pb::DescribeNetworkInterfacesRequest { r#type: "Secondary".into(), status: "Available".into(), ..dni() },
            set([a_id, b_id]),
        ),
        ("Type=Trunk", pb::DescribeNetworkInterfacesRequest { r#type: "Trunk".into(), ..dni() }, set([tr])),
        (
            "NetworkInterfaceId.N ORs",
            pb::DescribeNetworkInterfacesRequest { network_interface_id: vec![a_id.into(), b_id.into()], ..dni() },
            set([a_id, b_id]),
        ),
        (
            "NetworkInterfaceId.N AND Type",
            pb::DescribeNetworkInterfacesRequest {
                network_interface_id: vec![a_id.into(), c.clone()],
                r#type: "Member".into(),
                ..dni()
            },
            set([&c]),
        ),
        (
            "unknown ID: an empty list, not an error",
            pb::DescribeNetworkInterfacesRequest {
                network_interface_id: vec!["eni-doesnotexist000000".into()],
                ..dni()
            },
            set([]),
        ),
        (
            "PrivateIpAddress.N matches primary and secondary addresses",
            pb::DescribeNetworkInterfacesRequest {
                private_ip_address: vec![a.private_ip_address.clone(), b_ips[2].clone()],
                ..dni()
            },
            set([a_id, b_id]),
        ),
        (
            "PrivateIpAddress.N of the node",
            pb::DescribeNetworkInterfacesRequest { private_ip_address: vec![NODE_IP.into()], ..dni() },
            set([p]),
        ),
        (
            "PrivateIpAddress.N AND VSwitchId",
            pb::DescribeNetworkInterfacesRequest {
                private_ip_address: vec![b_ips[1].clone(), NODE_IP.into()],
                v_switch_id: t.pod_vsw.clone(),
                ..dni()
            },
            set([b_id]),
        ),
        (
            "PrimaryIpAddress matches only the primary",
            pb::DescribeNetworkInterfacesRequest { primary_ip_address: b_ips[0].clone(), ..dni() },
            set([b_id]),
        ),
        (
            "PrimaryIpAddress of a secondary address",
            pb::DescribeNetworkInterfacesRequest { primary_ip_address: b_ips[1].clone(), ..dni() },
            set([]),
        ),
        (
            "InstanceId: the instance's NICs, members left out",
            pb::DescribeNetworkInterfacesRequest { instance_id: t.instance_id.clone(), ..dni() },
            set([p, tr, d_id]),
        ),
        (
            "InstanceId AND Type=Member",
            pb::DescribeNetworkInterfacesRequest {
                instance_id: t.instance_id.clone(),
                r#type: "Member".into(),
                ..dni()
            },
            set([]),
        ),
        (
            "InstanceId AND NetworkInterfaceId.N of a member",
            pb::DescribeNetworkInterfacesRequest {
                instance_id: t.instance_id.clone(),
                network_interface_id: vec![c.clone(), d_id.into()],
                ..dni()
            },
            set([d_id]),
        ),
        (
            "SecurityGroupId",
            pb::DescribeNetworkInterfacesRequest { security_group_id: sg2.clone(), ..dni() },
            set([b_id]),
        ),
        (
            "NetworkInterfaceName",
            pb::DescribeNetworkInterfacesRequest { network_interface_name: "a".into(), ..dni() },
            set([a_id]),
        ),
        ("Tag key and value", pb::DescribeNetworkInterfacesRequest { tag: vec![tag("k", "v1")], ..dni() }, set([a_id])),
        ("Tag key only", pb::DescribeNetworkInterfacesRequest { tag: vec![tag("k", "")], ..dni() }, set([a_id, b_id])),
        (
            "Tags AND together",
            pb::DescribeNetworkInterfacesRequest { tag: vec![tag("k", "v2"), tag("team", "net")], ..dni() },
            set([b_id]),
        ),
        (
            "Tags AND together, one missing",
            pb::DescribeNetworkInterfacesRequest { tag: vec![tag("k", "v1"), tag("team", "net")], ..dni() },
            set([]),
        ),
        (
            "Status=Available AND VSwitchId of the node",
            pb::DescribeNetworkInterfacesRequest {
                status: "Available".into(),
                v_switch_id: t.node_vsw.clone(),
                ..dni()
            },
            set([]),
        ),
    ];
    for (name, req, want) in cases {
        assert_eq!(eni_ids(&mut ecs, req).await, want, "{name}");
    }

    // The set Terway and CCM read for a member: every field it needs, Attachment and InstanceId.
    let all = all_enis(&mut ecs).await;
    let m = all.iter().find(|e| e.network_interface_id == c).unwrap();
    assert_eq!(m.vpc_id, t.vpc_id);
    assert_eq!(m.v_switch_id, t.pod_vsw);
    assert_eq!(m.zone_id, ZONE);
    assert!(m.creation_time.ends_with('Z') && m.creation_time.len() == 20, "{}", m.creation_time);
    assert_eq!(m.network_interface_traffic_mode, "Standard");
    assert_eq!(sgs_of(m), vec![t.sg_id.clone()]);
    assert_eq!(ips_of(m), vec![m.private_ip_address.clone()]);
}

#[tokio::test]
async fn describe_network_interfaces_paging() {
    let s = TestServer::start().await;
    let t = build_topology(s.channel()).await;
    let mut ecs = s.ecs();
    const N: usize = 520;
    let created = concurrently(N, |_| {
        let mut ecs = s.ecs();
        let t = t.clone();
        async move { t.create_pod_eni(&mut ecs).await.network_interface_id }
    })
    .await;
    let mut everyone: BTreeSet<String> = created.into_iter().collect();
    everyone.insert(t.primary_eni_id.clone());
    everyone.insert(t.trunk_eni_id.clone());
    assert_eq!(everyone.len(), N + 2);

    // MaxResults is clamped into 10..=500; PageSize reports the effective size (CCM stops when
    // a page is shorter than it).
    for (asked, size) in [
        (Some(-3), 10),
        (Some(0), 10),
        (Some(5), 10),
        (Some(10), 10),
        (Some(123), 123),
        (Some(500), 500),
        (Some(501), 500),
        (Some(9999), 500),
    ] {
        let r = ok(ecs
            .describe_network_interfaces(pb::DescribeNetworkInterfacesRequest { max_results: asked, ..dni() })
            .await);
        let n = r.network_interface_sets.unwrap().network_interface_set.len();
        assert_eq!((n as i32, r.page_size), (size, size), "MaxResults {asked:?}");
        assert!(!r.next_token.is_empty(), "more pages follow");
    }

    // NextToken paging visits every ENI exactly once, for several page sizes.
    for size in [500, 100, 10] {
        let mut seen: Vec<String> = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let r = ok(ecs
                .describe_network_interfaces(pb::DescribeNetworkInterfacesRequest {
                    max_results: Some(size),
                    next_token: token.clone(),
                    ..dni()
                })
                .await);
            pages += 1;
            let items = r.network_interface_sets.unwrap().network_interface_set;
            assert!(items.len() <= size as usize);
            if !r.next_token.is_empty() {
                assert_eq!(items.len(), size as usize, "only the last page is short");
            }
            seen.extend(items.into_iter().map(|e| e.network_interface_id));
            if r.next_token.is_empty() {
                break;
            }
            token = r.next_token;
        }
        assert_eq!(pages, (N + 2).div_ceil(size as usize), "MaxResults {size}");
        assert_eq!(duplicates(seen.iter().map(String::as_str)), Default::default(), "MaxResults {size}");
        assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), everyone, "MaxResults {size}");
    }

    // Changes between pages: an ENI present throughout is still seen exactly once.
    let mut seen: Vec<String> = Vec::new();
    let mut token = String::new();
    let mut deleted = None;
    let mut added = Vec::new();
    loop {
        let r = ok(ecs
            .describe_network_interfaces(pb::DescribeNetworkInterfacesRequest {
                max_results: Some(100),
                next_token: token.clone(),
                ..dni()
            })
            .await);
        let items = r.network_interface_sets.unwrap().network_interface_set;
        seen.extend(items.iter().map(|e| e.network_interface_id.clone()));
        if deleted.is_none() {
            // Delete one already seen and add a few.
            let victim = items.iter().find(|e| e.r#type == "Secondary").unwrap().network_interface_id.clone();
            ok(ecs
                .delete_network_interface(pb::DeleteNetworkInterfaceRequest {
                    region_id: REGION.into(),
                    network_interface_id: victim.clone(),
                })
                .await);
            deleted = Some(victim);
            for _ in 0..3 {
                added.push(t.create_pod_eni(&mut ecs).await.network_interface_id);
            }
        }
        if r.next_token.is_empty() {
            break;
        }
        token = r.next_token;
    }
    assert_eq!(duplicates(seen.iter().map(String::as_str)), Default::default());
    let seen: BTreeSet<String> = seen.into_iter().collect();
    let missing: Vec<_> = everyone.difference(&seen).collect();
    assert!(missing.is_empty(), "never visited: {missing:?}");

    // PageNumber/PageSize paging with TotalCount.
    let total = everyone.len() - 1 + added.len();
    let r = ok(ecs
        .describe_network_interfaces(pb::DescribeNetworkInterfacesRequest {
            page_number: Some(6),
            page_size: Some(100),
            ..dni()
        })
        .await);
    assert_eq!(r.total_count as usize, total);
    assert_eq!((r.page_number, r.page_size), (6, 100));
    assert_eq!(r.network_interface_sets.unwrap().network_interface_set.len(), total - 500);
}

#[tokio::test]
async fn assign_and_unassign_private_ips() {
    let s = TestServer::start().await;
    let t = build_topology(s.channel()).await;
    let mut ecs = s.ecs();
    let mut vpc = s.vpc();
    let member = t.create_member(&mut ecs).await;
    let free = t.create_pod_eni(&mut ecs).await;
    let pod0 = vswitch(&mut vpc, &t.pod_vsw).await.available_ip_address_count;

    // By count, on an InUse member and on an Available ENI.
    for id in [&member, &free.network_interface_id] {
        let r = ok(ecs
            .assign_private_ip_addresses(pb::AssignPrivateIpAddressesRequest {
                region_id: REGION.into(),
                network_interface_id: id.clone(),
                secondary_private_ip_address_count: Some(3),
                ..Default::default()
            })
            .await)
        .assigned_private_ip_addresses_set
        .unwrap();
        assert_eq!(&r.network_interface_id, id);
        let got = r.private_ip_set.unwrap().private_ip_address;
        assert_eq!(got.len(), 3);
        assert!(got.iter().all(|ip| in_cidr(ip, POD_VSW_CIDR)));
        let e = describe_eni(&mut ecs, id).await.unwrap();
        let sets = e.private_ip_sets.clone().unwrap().private_ip_set;
        assert_eq!(sets.len(), 4);
        assert!(sets[0].primary && sets[0].private_ip_address == e.private_ip_address);
        assert!(sets[1..].iter().all(|p| !p.primary));
        assert_eq!(ips_of(&e)[1..], got[..]);
    }
    assert_eq!(vswitch(&mut vpc, &t.pod_vsw).await.available_ip_address_count, pod0 - 6);

    // By address.
    let r = ok(ecs
        .assign_private_ip_addresses(pb::AssignPrivateIpAddressesRequest {
            region_id: REGION.into(),
            network_interface_id: member.clone(),
            private_ip_address: vec!["10.0.67.100".into(), "10.0.67.101".into()],
            ..Default::default()
        })
        .await)
    .assigned_private_ip_addresses_set
    .unwrap();
    assert_eq!(r.private_ip_set.unwrap().private_ip_address, vec!["10.0.67.100", "10.0.67.101"]);
    assert_eq!(vswitch(&mut vpc, &t.pod_vsw).await.available_ip_address_count, pod0 - 8);
    let by_ip = eni_ids(
        &mut ecs,
        pb::DescribeNetworkInterfacesRequest { private_ip_address: vec!["10.0.67.101".into()], ..dni() },
    )
    .await;
    assert_eq!(by_ip, set([&member]));

    // A ClientToken replays the first answer without taking more addresses.
    let req = pb::AssignPrivateIpAddressesRequest {
        region_id: REGION.into(),
        network_interface_id: free.network_interface_id.clone(),
        secondary_private_ip_address_count: Some(1),
        client_token: "assign-1".into(),
        ..Default::default()
    };
    let first = ok(ecs.assign_private_ip_addresses(req.clone()).await).assigned_private_ip_addresses_set;
    let again = ok(ecs.assign_private_ip_addresses(req).await).assigned_private_ip_addresses_set;
    assert_eq!(first, again);
    assert_eq!(vswitch(&mut vpc, &t.pod_vsw).await.available_ip_address_count, pod0 - 9);

    // Unassign by address: exactly those leave, the count comes back.
    ok(ecs
        .unassign_private_ip_addresses(pb::UnassignPrivateIpAddressesRequest {
            region_id: REGION.into(),
            network_interface_id: member.clone(),
            private_ip_address: vec!["10.0.67.100".into(), "10.0.67.101".into()],
            ..Default::default()
        })
        .await);
    let e = describe_eni(&mut ecs, &member).await.unwrap();
    assert_eq!(ips_of(&e).len(), 4);
    assert!(!ips_of(&e).contains(&"10.0.67.100".to_string()));
    assert_eq!(vswitch(&mut vpc, &t.pod_vsw).await.available_ip_address_count, pod0 - 7);
    assert!(
        eni_ids(
            &mut ecs,
            pb::DescribeNetworkInterfacesRequest { private_ip_address: vec!["10.0.67.101".into()], ..dni() }
        )
        .await
        .is_empty()
    );
    // The freed address can be assigned again (to another ENI).
    ok(ecs
        .assign_private_ip_addresses(pb::AssignPrivateIpAddressesRequest {
            region_id: REGION.into(),
            network_interface_id: free.network_interface_id.clone(),
            private_ip_address: vec!["10.0.67.101".into()],
            ..Default::default()
        })
        .await);
    assert_eq!(consistency_violations(&Snapshot::take(s.channel()).await), Vec::<String>::new());
}

/// Dual stack over gRPC: a VPC with IPv6, a vSwitch /64, an ENI with IPv6 addresses, then
/// AssignIpv6Addresses and UnassignIpv6Addresses, each visible in both describes.
#[tokio::test]
async fn dual_stack_enis_assign_and_unassign_ipv6() {
    let s = TestServer::start().await;
    let mut ecs = s.ecs();
    let mut vpc = s.vpc();
    let vpc_id = ok(vpc
        .create_vpc(pb::CreateVpcRequest {
            region_id: REGION.into(),
            cidr_block: "10.0.0.0/8".into(),
            enable_ipv6: Some(true),
            ..Default::default()
        })
        .await)
    .vpc_id;
    let a = ok(vpc
        .describe_vpc_attribute(pb::DescribeVpcAttributeRequest {
            region_id: REGION.into(),
            vpc_id: vpc_id.clone(),
            ..Default::default()
        })
        .await);
    assert!(a.ipv6_cidr_block.ends_with("::/56"), "{}", a.ipv6_cidr_block);
    let blocks = a.ipv6_cidr_blocks.unwrap().ipv6_cidr_block;
    assert_eq!(blocks.len(), 1);
    assert_eq!((blocks[0].ipv6_cidr_block.as_str(), blocks[0].ipv6_isp.as_str()), (a.ipv6_cidr_block.as_str(), "BGP"));
    let vsw = ok(vpc
        .create_v_switch(pb::CreateVSwitchRequest {
            region_id: REGION.into(),
            vpc_id: vpc_id.clone(),
            zone_id: ZONE.into(),
            cidr_block: "10.0.8.0/24".into(),
            ipv6_cidr_block: Some(1),
            ..Default::default()
        })
        .await)
    .v_switch_id;
    let v6_cidr = vswitch(&mut vpc, &vsw).await.ipv6_cidr_block;
    let base: std::net::Ipv6Addr = a.ipv6_cidr_block.trim_end_matches("/56").parse().unwrap();
    let second = std::net::Ipv6Addr::from(u128::from(base) | 1 << 64);
    assert_eq!(v6_cidr, format!("{second}/64"), "the /56's second /64");
    let sg = create_sg(&mut ecs, &vpc_id, "dual", "normal").await;
    let created = ok(ecs
        .create_network_interface(pb::CreateNetworkInterfaceRequest {
            region_id: REGION.into(),
            v_switch_id: vsw.clone(),
            security_group_ids: vec![sg],
            ipv6_address_count: Some(1),
            ..Default::default()
        })
        .await);
    let eni = created.network_interface_id.clone();
    let first = created.ipv6_sets.unwrap().ipv6_set;
    assert_eq!(first.len(), 1);
    let r = ok(ecs
        .assign_ipv6_addresses(pb::AssignIpv6AddressesRequest {
            region_id: REGION.into(),
            network_interface_id: eni.clone(),
            ipv6_address_count: Some(2),
            ..Default::default()
        })
        .await);
    assert_eq!(r.network_interface_id, eni);
    let added = r.ipv6_sets.unwrap().ipv6_address;
    assert_eq!(added.len(), 2);
    let v6 = |a: &pb::DescribeNetworkInterfaceAttributeResponse| -> Vec<String> {
        a.ipv6_sets.clone().unwrap().ipv6_set.into_iter().map(|s| s.ipv6_address).collect()
    };
    assert_eq!(v6(&attribute(&mut ecs, &eni).await).len(), 3);
    let listed =
        eni_ids(&mut ecs, pb::DescribeNetworkInterfacesRequest { ipv6_address: vec![added[1].clone()], ..dni() }).await;
    assert_eq!(listed, set([eni.as_str()]));
    ok(ecs
        .unassign_ipv6_addresses(pb::UnassignIpv6AddressesRequest {
            region_id: REGION.into(),
            network_interface_id: eni.clone(),
            ipv6_address: added.clone(),
            ..Default::default()
        })
        .await);
    assert_eq!(v6(&attribute(&mut ecs, &eni).await), vec![first[0].ipv6_address.clone()]);
    let st = expect_err(
        ecs.unassign_ipv6_addresses(pb::UnassignIpv6AddressesRequest {
            region_id: REGION.into(),
            network_interface_id: eni.clone(),
            ipv6_address: added,
            ..Default::default()
        })
        .await,
    );
    assert_eq!(code_of(&st), "InvalidIp.IpUnassigned");
}

#[tokio::test]
async fn create_network_interface_client_token_replays() {
    let s = TestServer::start().await;
    let t = build_topology(s.channel()).await;
    let mut ecs = s.ecs();
    let mut vpc = s.vpc();
    let pod0 = vswitch(&mut vpc, &t.pod_vsw).await.available_ip_address_count;
    let req = pb::CreateNetworkInterfaceRequest {
        region_id: REGION.into(),
        v_switch_id: t.pod_vsw.clone(),
        security_group_ids: vec![t.sg_id.clone()],
        client_token: "0d5c6f1e-terway-token".into(),
        ..Default::default()
    };
    let first = ok(ecs.create_network_interface(req.clone()).await);
    let second = ok(ecs.create_network_interface(req.clone()).await);
    assert_eq!(first.network_interface_id, second.network_interface_id);
    assert_eq!(first.mac_address, second.mac_address);
    assert_eq!(first.private_ip_address, second.private_ip_address);
    // Concurrent retries with the same token: still one ENI.
    let again = concurrently(8, |_| {
        let mut ecs = s.ecs();
        let req = req.clone();
        async move { ok(ecs.create_network_interface(req).await).network_interface_id }
    })
    .await;
    assert!(again.iter().all(|id| *id == first.network_interface_id));
    assert_eq!(vswitch(&mut vpc, &t.pod_vsw).await.available_ip_address_count, pod0 - 1);
    let in_pod =
        eni_ids(&mut ecs, pb::DescribeNetworkInterfacesRequest { v_switch_id: t.pod_vsw.clone(), ..dni() }).await;
    assert_eq!(in_pod, set([&first.network_interface_id]));

    // The same token with other parameters is refused and creates nothing.
    let before = Snapshot::take(s.channel()).await;
    assert_code(
        ecs.create_network_interface(pb::CreateNetworkInterfaceRequest {
            description: "different".into(),
            ..req.clone()
        })
        .await,
        "IdempotentParameterMismatch",
    );
    before.assert_same(&Snapshot::take(s.channel()).await, "token mismatch");
    // Another token is another ENI.
    let other = ok(ecs
        .create_network_interface(pb::CreateNetworkInterfaceRequest { client_token: "another-token".into(), ..req })
        .await);
    assert_ne!(other.network_interface_id, first.network_interface_id);
}

/// Terway keeps a ClientToken across retries of one create; a refusal is not remembered, so
/// the retry succeeds once the vSwitch has room again (reference §4).
#[tokio::test]
async fn client_token_retry_after_a_refusal_succeeds() {
    let s = TestServer::start().await;
    let t = build_topology(s.channel()).await;
    let mut ecs = s.ecs();
    let mut vpc = s.vpc();
    let tiny = ok(vpc
        .create_v_switch(pb::CreateVSwitchRequest {
            region_id: REGION.into(),
            vpc_id: t.vpc_id.clone(),
            zone_id: ZONE.into(),
            cidr_block: "10.0.8.0/29".into(),
            ..Default::default()
        })
        .await)
    .v_switch_id;
    let filler = ok(ecs
        .create_network_interface(pb::CreateNetworkInterfaceRequest {
            region_id: REGION.into(),
            v_switch_id: tiny.clone(),
            security_group_ids: vec![t.sg_id.clone()],
            secondary_private_ip_address_count: Some(3),
            ..Default::default()
        })
        .await)
    .network_interface_id;
    assert_eq!(vswitch(&mut vpc, &tiny).await.available_ip_address_count, 0);
    let req = pb::CreateNetworkInterfaceRequest {
        region_id: REGION.into(),
        v_switch_id: tiny.clone(),
        security_group_ids: vec![t.sg_id.clone()],
        client_token: "retry-me".into(),
        ..Default::default()
    };
    assert_code(ecs.create_network_interface(req.clone()).await, "InvalidVSwitchId.IpNotEnough");
    let freed = ips_of(&describe_eni(&mut ecs, &filler).await.unwrap())[3].clone();
    ok(ecs
        .unassign_private_ip_addresses(pb::UnassignPrivateIpAddressesRequest {
            region_id: REGION.into(),
            network_interface_id: filler,
            private_ip_address: vec![freed.clone()],
            ..Default::default()
        })
        .await);
    let created = ok(ecs.create_network_interface(req.clone()).await);
    assert_eq!(created.private_ip_address, freed);
    assert_eq!(ok(ecs.create_network_interface(req).await).network_interface_id, created.network_interface_id);
    assert_eq!(vswitch(&mut vpc, &tiny).await.available_ip_address_count, 0);
}

#[tokio::test]
async fn modify_network_interface_attribute() {
    let s = TestServer::start().await;
    let t = build_topology(s.channel()).await;
    let mut ecs = s.ecs();
    let sg2 = create_sg(&mut ecs, &t.vpc_id, "second", "").await;
    let sg3 = create_sg(&mut ecs, &t.vpc_id, "third", "").await;
    let id = t.create_member(&mut ecs).await;
    ok(ecs
        .modify_network_interface_attribute(pb::ModifyNetworkInterfaceAttributeRequest {
            region_id: REGION.into(),
            network_interface_id: id.clone(),
            security_group_id: vec![sg2.clone(), sg3.clone()],
            network_interface_name: Some("pod-eni".into()),
            description: Some("for pod x".into()),
            delete_on_release: Some(true),
            source_dest_check: Some(true),
        })
        .await);
    let e = describe_eni(&mut ecs, &id).await.unwrap();
    assert_eq!(sgs_of(&e), vec![sg2.clone(), sg3.clone()], "the complete new set");
    assert_eq!(e.network_interface_name, "pod-eni");
    assert_eq!(e.description, "for pod x");
    assert!(e.delete_on_release && e.source_dest_check);
    assert_eq!(e.status, "InUse", "modify does not disturb the attachment");
    // Group membership follows: the ENI left the first group and joined the new ones.
    let by_sg = |sg: &str| pb::DescribeNetworkInterfacesRequest { security_group_id: sg.into(), ..dni() };
    assert!(!eni_ids(&mut ecs, by_sg(&t.sg_id)).await.contains(&id));
    assert_eq!(eni_ids(&mut ecs, by_sg(&sg2)).await, set([&id]));
    let counts: Vec<(String, i32)> =
        describe_sgs(&mut ecs, pb::DescribeSecurityGroupsRequest { region_id: REGION.into(), ..Default::default() })
            .await
            .into_iter()
            .map(|g| (g.security_group_id, g.ecs_count))
            .collect();
    assert!(counts.contains(&(sg2.clone(), 1)) && counts.contains(&(sg3.clone(), 1)), "{counts:?}");
    // Only name and description change; everything else is kept.
    ok(ecs
        .modify_network_interface_attribute(pb::ModifyNetworkInterfaceAttributeRequest {
            region_id: REGION.into(),
            network_interface_id: id.clone(),
            description: Some("renamed".into()),
            ..Default::default()
        })
        .await);
    let e2 = describe_eni(&mut ecs, &id).await.unwrap();
    assert_eq!(e2.description, "renamed");
    assert_eq!(sgs_of(&e2), vec![sg2, sg3]);
    assert_eq!(e2.network_interface_name, "pod-eni");
    // The primary ENI may change name and description.
    ok(ecs
        .modify_network_interface_attribute(pb::ModifyNetworkInterfaceAttributeRequest {
            region_id: REGION.into(),
            network_interface_id: t.primary_eni_id.clone(),
            network_interface_name: Some("eth0".into()),
            ..Default::default()
        })
        .await);
    assert_eq!(describe_eni(&mut ecs, &t.primary_eni_id).await.unwrap().network_interface_name, "eth0");
}

// ---- security groups -------------------------------------------------------------------------------

fn perm(proto: &str, ports: &str, cidr: &str, priority: &str, policy: &str) -> pb::Permission {
    pb::Permission {
        ip_protocol: proto.into(),
        port_range: ports.into(),
        source_cidr_ip: cidr.into(),
        priority: priority.into(),
        policy: policy.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn security_group_lifecycle_rules_and_policy() {
    let s = TestServer::start().await;
    let t = build_topology(s.channel()).await;
    let mut ecs = s.ecs();

    let web = ok(ecs
        .create_security_group(pb::CreateSecurityGroupRequest {
            region_id: REGION.into(),
            vpc_id: t.vpc_id.clone(),
            security_group_name: "web".into(),
            description: "web pods".into(),
            tag: vec![tag("app", "web")],
            ..Default::default()
        })
        .await)
    .security_group_id;
    assert!(web.starts_with("sg-"));
    let ent = create_sg(&mut ecs, &t.vpc_id, "ent", "enterprise").await;

    let listed = describe_sgs(
        &mut ecs,
        pb::DescribeSecurityGroupsRequest {
            region_id: REGION.into(),
            security_group_ids: format!("[\"{web}\",\"{ent}\"]"),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(listed.len(), 2);
    let w = listed.iter().find(|g| g.security_group_id == web).unwrap();
    assert_eq!((w.security_group_name.as_str(), w.description.as_str()), ("web", "web pods"));
    assert_eq!(w.vpc_id, t.vpc_id);
    assert_eq!(w.security_group_type, "normal");
    assert_eq!((w.ecs_count, w.rule_count), (0, 0));
    assert_eq!(w.tags.clone().unwrap().tag.len(), 1);
    let e = listed.iter().find(|g| g.security_group_id == ent).unwrap();
    assert_eq!(e.security_group_type, "enterprise");
    for (req, want) in [
        (
            pb::DescribeSecurityGroupsRequest { security_group_type: "enterprise".into(), ..Default::default() },
            vec![ent.clone()],
        ),
        (
            pb::DescribeSecurityGroupsRequest { security_group_name: "web".into(), ..Default::default() },
            vec![web.clone()],
        ),
        (pb::DescribeSecurityGroupsRequest { security_group_id: web.clone(), ..Default::default() }, vec![web.clone()]),
        (pb::DescribeSecurityGroupsRequest { tag: vec![tag("app", "web")], ..Default::default() }, vec![web.clone()]),
    ] {
        let got: Vec<String> =
            describe_sgs(&mut ecs, req.clone()).await.into_iter().map(|g| g.security_group_id).collect();
        assert_eq!(got, want, "{req:?}");
    }
    let in_vpc =
        describe_sgs(&mut ecs, pb::DescribeSecurityGroupsRequest { vpc_id: t.vpc_id.clone(), ..Default::default() })
            .await;
    assert_eq!(in_vpc.len(), 3);
    // The basic group of the topology has the primary ENI and the trunk.
    assert_eq!(in_vpc.iter().find(|g| g.security_group_id == t.sg_id).unwrap().ecs_count, 2);

    // Ingress: Permissions.N plus the legacy flat form; protocols are case-insensitive.
    ok(ecs
        .authorize_security_group(pb::AuthorizeSecurityGroupRequest {
            region_id: REGION.into(),
            security_group_id: web.clone(),
            permissions: vec![
                perm("tcp", "80/80", "10.0.0.0/8", "10", "accept"),
                pb::Permission { description: "dns".into(), ..perm("UDP", "53/53", "10.0.4.0/24", "", "") },
                pb::Permission { source_group_id: t.sg_id.clone(), ..perm("ALL", "-1/-1", "", "100", "drop") },
            ],
            ip_protocol: "ICMP".into(),
            port_range: "-1/-1".into(),
            source_cidr_ip: "192.168.0.1".into(),
            ..Default::default()
        })
        .await);
    // Egress.
    ok(ecs
        .authorize_security_group_egress(pb::AuthorizeSecurityGroupEgressRequest {
            region_id: REGION.into(),
            security_group_id: web.clone(),
            permissions: vec![pb::Permission {
                dest_cidr_ip: "0.0.0.0/0".into(),
                ..perm("all", "-1/-1", "", "1", "Drop")
            }],
            ip_protocol: "TCP".into(),
            port_range: "443/443".into(),
            dest_cidr_ip: "10.0.64.0/22".into(),
            priority: "5".into(),
            ..Default::default()
        })
        .await);

    let attr = sg_attribute(&mut ecs, &web, "").await;
    assert_eq!(attr.security_group_id, web);
    assert_eq!(attr.security_group_name, "web");
    assert_eq!(attr.description, "web pods");
    assert_eq!(attr.vpc_id, t.vpc_id);
    assert_eq!(attr.region_id, REGION);
    assert_eq!(attr.inner_access_policy, "Accept");
    let rules = permissions(&attr);
    assert_eq!(rules.len(), 6, "{rules:#?}");
    let find = |dir: &str, proto: &str| {
        rules
            .iter()
            .find(|r| r.direction == dir && r.ip_protocol == proto)
            .unwrap_or_else(|| panic!("no {dir} {proto} rule in {rules:#?}"))
            .clone()
    };
    let http = find("ingress", "TCP");
    assert_eq!(http.port_range, "80/80");
    assert_eq!(http.source_cidr_ip, "10.0.0.0/8");
    assert_eq!((http.policy.as_str(), http.priority.as_str()), ("Accept", "10"));
    assert_eq!(http.nic_type, "intranet");
    assert!(http.security_group_rule_id.starts_with("sgr-"), "{http:?}");
    assert!(!http.create_time.is_empty());
    let dns = find("ingress", "UDP");
    assert_eq!((dns.port_range.as_str(), dns.priority.as_str()), ("53/53", "1"), "default priority 1");
    assert_eq!((dns.policy.as_str(), dns.description.as_str()), ("Accept", "dns"), "default policy accept");
    let peer = find("ingress", "ALL");
    assert_eq!((peer.source_group_id.as_str(), peer.port_range.as_str()), (t.sg_id.as_str(), "-1/-1"));
    assert_eq!((peer.policy.as_str(), peer.priority.as_str()), ("Drop", "100"));
    let icmp = find("ingress", "ICMP");
    assert_eq!(icmp.source_cidr_ip, "192.168.0.1/32");
    let deny = find("egress", "ALL");
    assert_eq!((deny.dest_cidr_ip.as_str(), deny.policy.as_str()), ("0.0.0.0/0", "Drop"));
    let https = find("egress", "TCP");
    assert_eq!(
        (https.dest_cidr_ip.as_str(), https.port_range.as_str(), https.priority.as_str()),
        ("10.0.64.0/22", "443/443", "5")
    );
    let ids: HashSet<&str> = rules.iter().map(|r| r.security_group_rule_id.as_str()).collect();
    assert_eq!(ids.len(), 6, "rule IDs are unique");

    // Direction filters.
    let ingress = permissions(&sg_attribute(&mut ecs, &web, "ingress").await);
    assert_eq!(ingress.len(), 4);
    assert!(ingress.iter().all(|r| r.direction == "ingress"));
    let egress = permissions(&sg_attribute(&mut ecs, &web, "egress").await);
    assert_eq!(egress.len(), 2);

    // Authorizing an identical rule again succeeds and adds nothing.
    let before = sg_attribute(&mut ecs, &web, "").await;
    ok(ecs
        .authorize_security_group(pb::AuthorizeSecurityGroupRequest {
            region_id: REGION.into(),
            security_group_id: web.clone(),
            permissions: vec![perm("TCP", "80/80", "10.0.0.0/8", "10", "Accept")],
            ..Default::default()
        })
        .await);
    let after = sg_attribute(&mut ecs, &web, "").await;
    assert_eq!(permissions(&before), permissions(&after));
    // …but the same rule with another priority is another rule.
    ok(ecs
        .authorize_security_group(pb::AuthorizeSecurityGroupRequest {
            region_id: REGION.into(),
            security_group_id: web.clone(),
            permissions: vec![perm("TCP", "80/80", "10.0.0.0/8", "11", "Accept")],
            ..Default::default()
        })
        .await);
    assert_eq!(permissions(&sg_attribute(&mut ecs, &web, "").await).len(), 7);
    let count = |ecs: &mut Ecs| {
        let mut ecs = ecs.clone();
        let web = web.clone();
        async move {
            describe_sgs(&mut ecs, pb::DescribeSecurityGroupsRequest { security_group_id: web, ..Default::default() })
                .await[0]
                .rule_count
        }
    };
    assert_eq!(count(&mut ecs).await, 7);

    // Revoke by content (ingress) and by rule ID (egress).
    ok(ecs
        .revoke_security_group(pb::RevokeSecurityGroupRequest {
            region_id: REGION.into(),
            security_group_id: web.clone(),
            permissions: vec![perm("TCP", "80/80", "10.0.0.0/8", "11", "Accept")],
            ..Default::default()
        })
        .await);
    ok(ecs
        .revoke_security_group(pb::RevokeSecurityGroupRequest {
            region_id: REGION.into(),
            security_group_id: web.clone(),
            ip_protocol: "icmp".into(),
            port_range: "-1/-1".into(),
            source_cidr_ip: "192.168.0.1/32".into(),
            ..Default::default()
        })
        .await);
    ok(ecs
        .revoke_security_group_egress(pb::RevokeSecurityGroupEgressRequest {
            region_id: REGION.into(),
            security_group_id: web.clone(),
            security_group_rule_id: vec![deny.security_group_rule_id.clone()],
            ..Default::default()
        })
        .await);
    ok(ecs
        .revoke_security_group_egress(pb::RevokeSecurityGroupEgressRequest {
            region_id: REGION.into(),
            security_group_id: web.clone(),
            permissions: vec![pb::Permission {
                dest_cidr_ip: "10.0.64.0/22".into(),
                ..perm("TCP", "443/443", "", "5", "")
            }],
            ..Default::default()
        })
        .await);
    let left = permissions(&sg_attribute(&mut ecs, &web, "").await);
    let mut kinds: Vec<(String, String, String)> =
        left.iter().map(|r| (r.direction.clone(), r.ip_protocol.clone(), r.priority.clone())).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        vec![
            ("ingress".into(), "ALL".into(), "100".into()),
            ("ingress".into(), "TCP".into(), "10".into()),
            ("ingress".into(), "UDP".into(), "1".into()),
        ]
    );
    assert_eq!(count(&mut ecs).await, 3);

    // InnerAccessPolicy.
    for (policy, shown) in [("Drop", "Drop"), ("accept", "Accept"), ("drop", "Drop")] {
        ok(ecs
            .modify_security_group_policy(pb::ModifySecurityGroupPolicyRequest {
                region_id: REGION.into(),
                security_group_id: web.clone(),
                inner_access_policy: policy.into(),
            })
            .await);
        assert_eq!(sg_attribute(&mut ecs, &web, "").await.inner_access_policy, shown);
    }
    assert_eq!(sg_attribute(&mut ecs, &ent, "").await.inner_access_policy, "Drop", "enterprise groups are isolated");

    // Delete: refused while an ENI is in the group, and while a rule of another group names it.
    let member = t.create_pod_eni(&mut ecs).await.network_interface_id;
    ok(ecs
        .modify_network_interface_attribute(pb::ModifyNetworkInterfaceAttributeRequest {
            region_id: REGION.into(),
            network_interface_id: member.clone(),
            security_group_id: vec![web.clone()],
            ..Default::default()
        })
        .await);
    let st = assert_code(
        ecs.delete_security_group(pb::DeleteSecurityGroupRequest {
            region_id: REGION.into(),
            security_group_id: web.clone(),
        })
        .await,
        "DependencyViolation",
    );
    assert_eq!(domain_of(&st), "ecs.aliyuncs.com");
    ok(ecs
        .delete_network_interface(pb::DeleteNetworkInterfaceRequest {
            region_id: REGION.into(),
            network_interface_id: member,
        })
        .await);
    // The topology group is named by web's ALL rule: deleting it is refused too.
    let other = create_sg(&mut ecs, &t.vpc_id, "peer", "").await;
    ok(ecs
        .authorize_security_group(pb::AuthorizeSecurityGroupRequest {
            region_id: REGION.into(),
            security_group_id: web.clone(),
            permissions: vec![pb::Permission { source_group_id: other.clone(), ..perm("TCP", "22/22", "", "", "") }],
            ..Default::default()
        })
        .await);
    assert_code(
        ecs.delete_security_group(pb::DeleteSecurityGroupRequest {
            region_id: REGION.into(),
            security_group_id: other.clone(),
        })
        .await,
        "DependencyViolation",
    );
    for id in [&web, &other, &ent] {
        ok(ecs
            .delete_security_group(pb::DeleteSecurityGroupRequest {
                region_id: REGION.into(),
                security_group_id: id.clone(),
            })
            .await);
    }
    let left: Vec<String> =
        describe_sgs(&mut ecs, pb::DescribeSecurityGroupsRequest { region_id: REGION.into(), ..Default::default() })
            .await
            .into_iter()
            .map(|g| g.security_group_id)
            .collect();
    assert_eq!(left, vec![t.sg_id.clone()]);
    assert_code(
        ecs.describe_security_group_attribute(pb::DescribeSecurityGroupAttributeRequest {
            region_id: REGION.into(),
            security_group_id: web.clone(),
            ..Default::default()
        })
        .await,
        "InvalidSecurityGroupId.NotFound",
    );
}

// ---- enifab.v1.Emulator/IssueNodeToken ----------------------------------------------------------------

/// A node's token is derived from its instance: the same on every call; only instances have one.
/// (That it survives a restart, and what it lets a node do, is in emulator/tests/security.rs.)
#[tokio::test]
async fn node_tokens_are_per_instance() {
    let s = TestServer::start().await;
    let t = build_topology(s.channel()).await;
    let issue = |id: &str| pb::IssueNodeTokenRequest { instance_id: id.into() };
    let a = ok(s.emulator().issue_node_token(issue(&t.instance_id)).await);
    assert_eq!(a.access_key_id, format!("node:{}", t.instance_id));
    assert_eq!(a.instance_id, t.instance_id);
    assert!(a.node_token.len() == 64 && a.node_token.bytes().all(|b| b.is_ascii_hexdigit()), "{a:?}");
    assert_eq!(ok(s.emulator().issue_node_token(issue(&t.instance_id)).await).node_token, a.node_token);
    assert_code(s.emulator().issue_node_token(issue("i-nosuchinstance")).await, "InvalidInstanceId.NotFound");
    assert_code(s.emulator().issue_node_token(issue("")).await, "MissingParameter");
}

// ---- enifab.v1.Emulator/BeginDryRun, EndDryRun --------------------------------------------------------

/// A dry run is a copy: what its calls make is seen by its calls only, and gone with it; the
/// fabric's calls have none. (How `enifab apply` rehearses with it is in tests/apply.rs.)
#[tokio::test]
async fn a_dry_run_is_a_copy_seen_by_its_calls_only() {
    let s = TestServer::start().await;
    let t = build_topology(s.channel()).await;
    let before = Snapshot::take(s.channel()).await;
    let id = ok(s.emulator().begin_dry_run(pb::BeginDryRunRequest {}).await).dry_run_id;
    assert!(id.starts_with("dry-"), "{id}");
    fn in_dry_run<T>(id: &str, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut().insert("x-enifab-dry-run", id.parse().unwrap());
        r
    }
    let vsw = pb::CreateVSwitchRequest {
        region_id: REGION.into(),
        vpc_id: t.vpc_id.clone(),
        zone_id: ZONE.into(),
        cidr_block: "10.0.9.0/24".into(),
        v_switch_name: "rehearsed".into(),
        ..Default::default()
    };
    let made = ok(s.vpc().create_v_switch(in_dry_run(&id, vsw.clone())).await).v_switch_id;
    let find = pb::DescribeVSwitchesRequest { v_switch_id: made.clone(), ..Default::default() };
    let in_copy = ok(s.vpc().describe_v_switches(in_dry_run(&id, find.clone())).await).total_count;
    assert_eq!(in_copy, 1);
    assert_eq!(ok(s.vpc().describe_v_switches(find.clone()).await).total_count, 0);
    // The same address block again, in the copy: the copy remembers its own vSwitch.
    assert_code(s.vpc().create_v_switch(in_dry_run(&id, vsw)).await, "InvalidCidrBlock.Overlapped");
    Snapshot::take(s.channel()).await.assert_same(&before, "calls in a dry run");
    ok(s.emulator().end_dry_run(pb::EndDryRunRequest { dry_run_id: id.clone() }).await);
    // Ending twice is not an error; a call naming it is refused rather than run for real.
    ok(s.emulator().end_dry_run(pb::EndDryRunRequest { dry_run_id: id.clone() }).await);
    assert_code(s.vpc().describe_v_switches(in_dry_run(&id, find)).await, "InvalidParameter");
}

// ---- enifab.v1.Emulator/InjectFault -------------------------------------------------------------------

fn fault(action: &str, code: &str, count: Option<i32>) -> pb::InjectFaultRequest {
    pb::InjectFaultRequest { target_action: action.into(), code: code.into(), count }
}

#[tokio::test]
async fn inject_fault_fails_the_next_calls_then_disarms() {
    let mut s = TestServer::start().await;
    let t = build_topology(s.channel()).await;
    let mut ecs = s.ecs();
    let mut vpc = s.vpc();
    let mut emu = s.emulator();

    let armed = ok(emu.inject_fault(fault("CreateNetworkInterface", "Throttling", Some(2))).await);
    assert_eq!(
        (armed.target_action.as_str(), armed.code.as_str(), armed.remaining),
        ("CreateNetworkInterface", "Throttling", 2)
    );
    assert!(!armed.request_id.is_empty());
    let before = Snapshot::take(s.channel()).await; // other actions are not affected
    let create = pb::CreateNetworkInterfaceRequest {
        region_id: REGION.into(),
        v_switch_id: t.pod_vsw.clone(),
        security_group_ids: vec![t.sg_id.clone()],
        ..Default::default()
    };
    for _ in 0..2 {
        let st = assert_code(ecs.create_network_interface(create.clone()).await, "Throttling");
        assert_eq!(domain_of(&st), "ecs.aliyuncs.com");
        assert!(st.message().starts_with("Throttling: "), "{}", st.message());
    }
    before.assert_same(&Snapshot::take(s.channel()).await, "throttled creates");
    let id = ok(ecs.create_network_interface(create.clone()).await).network_interface_id;
    assert!(describe_eni(&mut ecs, &id).await.is_some());

    // Default count 1; "*" fails any action, in its own product's domain.
    ok(emu.inject_fault(fault("*", "InternalError", None)).await);
    let st = assert_code(
        vpc.describe_v_switches(pb::DescribeVSwitchesRequest { region_id: REGION.into(), ..Default::default() }).await,
        "InternalError",
    );
    assert_eq!(domain_of(&st), "vpc.aliyuncs.com");
    ok(vpc.describe_v_switches(pb::DescribeVSwitchesRequest { region_id: REGION.into(), ..Default::default() }).await);

    // A fault for the action fires before a "*" one.
    ok(emu.inject_fault(fault("*", "Forbidden.RAM", Some(1))).await);
    ok(emu.inject_fault(fault("DescribeVpcs", "Operation.Conflict", Some(1))).await);
    assert_code(vpc.describe_vpcs(pb::DescribeVpcsRequest::default()).await, "Operation.Conflict");
    assert_code(vpc.describe_vpcs(pb::DescribeVpcsRequest::default()).await, "Forbidden.RAM");
    ok(vpc.describe_vpcs(pb::DescribeVpcsRequest::default()).await);

    // Count 0 disarms.
    let armed = ok(emu.inject_fault(fault("AttachNetworkInterface", "Operation.Conflict", Some(5))).await);
    assert_eq!(armed.remaining, 5);
    let disarmed = ok(emu.inject_fault(fault("AttachNetworkInterface", "", Some(0))).await);
    assert_eq!(disarmed.remaining, 0);
    ok(ecs
        .attach_network_interface(pb::AttachNetworkInterfaceRequest {
            region_id: REGION.into(),
            instance_id: t.instance_id.clone(),
            network_interface_id: id.clone(),
            trunk_network_instance_id: t.trunk_eni_id.clone(),
            ..Default::default()
        })
        .await);

    // Faults live in the running server only: a restart forgets them.
    ok(emu.inject_fault(fault("DeleteNetworkInterface", "ServiceUnavailable", Some(3))).await);
    s.restart().await;
    let mut ecs = s.ecs();
    let other = t.create_pod_eni(&mut ecs).await.network_interface_id;
    ok(ecs
        .delete_network_interface(pb::DeleteNetworkInterfaceRequest {
            region_id: REGION.into(),
            network_interface_id: other,
        })
        .await);
}

// ---- errors, reflection, health ---------------------------------------------------------------------

#[tokio::test]
async fn errors_carry_the_cloud_code_as_error_info() {
    use tonic_types::StatusExt;
    let s = TestServer::start().await;
    let mut ecs = s.ecs();
    let mut vpc = s.vpc();
    let mut emu = s.emulator();

    let st = expect_err(
        ecs.describe_network_interface_attribute(pb::DescribeNetworkInterfaceAttributeRequest {
            region_id: REGION.into(),
            network_interface_id: "eni-nope".into(),
            ..Default::default()
        })
        .await,
    );
    let info = st.get_details_error_info().expect("an ErrorInfo detail");
    assert_eq!(info.reason, "InvalidEniId.NotFound");
    assert_eq!(info.domain, "ecs.aliyuncs.com");
    assert_eq!(info.metadata.get("http_status").map(String::as_str), Some("404"));
    assert_eq!(info.metadata.get("request_id").map(|r| r.len()), Some(36));
    assert!(st.message().starts_with("InvalidEniId.NotFound: "), "{}", st.message());
    assert!(st.message().contains("eni-nope"));
    assert_eq!(st.code(), tonic::Code::NotFound);
    let (code, message) = enifab::grpc::status::cloud_error(&st).unwrap();
    assert_eq!(code, "InvalidEniId.NotFound");
    assert!(!message.starts_with("InvalidEniId"), "{message}");

    let st = expect_err(
        vpc.delete_v_switch(pb::DeleteVSwitchRequest { region_id: REGION.into(), v_switch_id: "vsw-nope".into() })
            .await,
    );
    let info = st.get_details_error_info().expect("an ErrorInfo detail");
    assert_eq!(info.reason, "InvalidVSwitchId.NotFound");
    assert_eq!(info.domain, "vpc.aliyuncs.com");
    assert!(st.message().starts_with("InvalidVSwitchId.NotFound"), "{}", st.message());

    let st =
        expect_err(vpc.create_vpc(pb::CreateVpcRequest { region_id: "cn-nowhere".into(), ..Default::default() }).await);
    assert_eq!(code_of(&st), "InvalidRegionId.NotFound");
    assert_eq!(domain_of(&st), "vpc.aliyuncs.com");

    let st = expect_err(emu.create_instance_type(pb::CreateInstanceTypeRequest::default()).await);
    assert_eq!(code_of(&st), "MissingParameter");
    assert_eq!(domain_of(&st), "ecs.aliyuncs.com");
    assert!(st.message().starts_with("MissingParameter"), "{}", st.message());
    assert_eq!(st.code(), tonic::Code::InvalidArgument);
}

/// Every RPC of the three services, as this file exercises them. A method added to the protos
/// fails `reflection_lists_every_service` until it is covered here. (`enifab.v1.Slb` has its own
/// list in slb.rs.)
const COVERED: &[(&str, &[&str])] = &[
    (
        "enifab.v1.Vpc",
        &[
            "CreateVpc",
            "DescribeVpcs",
            "DescribeVpcAttribute",
            "DeleteVpc",
            "CreateVSwitch",
            "DescribeVSwitches",
            "DeleteVSwitch",
            "ModifyVpcAttribute",
            "ModifyVSwitchAttribute",
        ],
    ),
    (
        "enifab.v1.Ecs",
        &[
            "CreateInstance",
            "DescribeInstances",
            "DeleteInstance",
            "StartInstance",
            "StopInstance",
            "DescribeInstanceTypes",
            "CreateNetworkInterface",
            "AttachNetworkInterface",
            "DetachNetworkInterface",
            "DeleteNetworkInterface",
            "DescribeNetworkInterfaces",
            "DescribeNetworkInterfaceAttribute",
            "AssignPrivateIpAddresses",
            "UnassignPrivateIpAddresses",
            "AssignIpv6Addresses",
            "UnassignIpv6Addresses",
            "ModifyNetworkInterfaceAttribute",
            "CreateSecurityGroup",
            "DeleteSecurityGroup",
            "DescribeSecurityGroups",
            "DescribeSecurityGroupAttribute",
            "AuthorizeSecurityGroup",
            "AuthorizeSecurityGroupEgress",
            "RevokeSecurityGroup",
            "RevokeSecurityGroupEgress",
            "ModifySecurityGroupPolicy",
        ],
    ),
    ("enifab.v1.Emulator", &["BeginDryRun", "CreateInstanceType", "EndDryRun", "InjectFault", "IssueNodeToken"]),
];

async fn reflect(
    channel: Channel,
    req: tonic_reflection::pb::v1::server_reflection_request::MessageRequest,
) -> tonic_reflection::pb::v1::server_reflection_response::MessageResponse {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    let mut client = ServerReflectionClient::new(channel);
    let mut stream = ok(client
        .server_reflection_info(futures::stream::iter(vec![ServerReflectionRequest {
            host: String::new(),
            message_request: Some(req),
        }]))
        .await);
    stream.message().await.expect("a reflection answer").expect("one message").message_response.expect("a response")
}

#[tokio::test]
async fn reflection_lists_every_service() {
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let s = TestServer::start().await;
    let MessageResponse::ListServicesResponse(list) =
        reflect(s.channel(), MessageRequest::ListServices(String::new())).await
    else {
        panic!("not a service list");
    };
    let names: BTreeSet<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in ["enifab.v1.Vpc", "enifab.v1.Ecs", "enifab.v1.Slb", "enifab.v1.Emulator", "grpc.health.v1.Health"] {
        assert!(names.contains(want), "{want} missing from {names:?}");
    }

    // The methods reflection describes are exactly the ones this file covers.
    for (service, covered) in COVERED {
        let MessageResponse::FileDescriptorResponse(files) =
            reflect(s.channel(), MessageRequest::FileContainingSymbol(service.to_string())).await
        else {
            panic!("no descriptor for {service}");
        };
        let short = service.rsplit('.').next().unwrap();
        let methods: BTreeSet<String> = files
            .file_descriptor_proto
            .iter()
            .map(|b| prost_types::FileDescriptorProto::decode(b.as_slice()).expect("a file descriptor"))
            .flat_map(|f| f.service)
            .filter(|s| s.name() == short)
            .flat_map(|s| s.method)
            .map(|m| m.name().to_string())
            .collect();
        let covered: BTreeSet<String> = covered.iter().map(|m| m.to_string()).collect();
        assert_eq!(methods, covered, "{service}: reflection vs the methods api.rs covers");
    }
}

#[tokio::test]
async fn health_reports_serving() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let s = TestServer::start().await;
    let mut health = HealthClient::new(s.channel());
    for service in ["", "enifab.v1.Ecs", "enifab.v1.Vpc", "enifab.v1.Slb", "enifab.v1.Emulator"] {
        let r = ok(health.check(HealthCheckRequest { service: service.into() }).await);
        assert_eq!(r.status(), ServingStatus::Serving, "service {service:?}");
    }
    let st = expect_err(health.check(HealthCheckRequest { service: "enifab.v1.Nope".into() }).await);
    assert_eq!(st.code(), tonic::Code::NotFound);
}
