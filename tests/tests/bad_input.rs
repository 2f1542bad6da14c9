//! Bad input, as a table: missing parameters, malformed addresses and CIDRs, out-of-range values,
//! wrong types, unknown IDs of every kind, a wrong region, state errors, limits and conflicting
//! parameters, across the actions of all three services.
//!
//! Each row asserts the exact cloud code (the `ErrorInfo` reason, with the product's domain and a
//! message that starts with the code) **and** that nothing visible changed: every Describe*
//! output (VPCs, vSwitches with their free-address counts, groups with their rules, instances,
//! all ENIs, trunk attributes, instance types) is snapshotted before and compared after. A model
//! that validates half a request and then fails would show up here, not just a wrong code.

use enifab_tests::v1 as pb;
use enifab_tests::*;
use futures::future::BoxFuture;
use tonic::Status;
use tonic::transport::Channel;

/// What the rows refer to, built through the API.
struct Fx {
    ecs: pb::ecs_client::EcsClient<Channel>,
    vpc: pb::vpc_client::VpcClient<Channel>,
    emu: pb::emulator_client::EmulatorClient<Channel>,
    t: Topology,
    /// A Member ENI, InUse on the standard trunk (VLAN 1).
    member: String,
    member_ip: String,
    /// An Available Secondary ENI in the pod vSwitch holding `free_secondary` besides its primary.
    free: String,
    free_primary: String,
    free_secondary: String,
    /// An Available Secondary ENI with 16 addresses (ecs.g7.xlarge allows 15 per ENI).
    fat: String,
    /// An Available Trunk ENI in the node vSwitch (the instance already has a trunk).
    trunk2: String,
    /// 10.0.8.0/29: four usable addresses, all held by `tiny_eni`.
    tiny_vsw: String,
    tiny_eni: String,
    /// A vSwitch and an Available ENI in cn-hongkong-c.
    zone_c_vsw: String,
    zone_c_eni: String,
    /// Five more basic groups: with the topology's, six.
    more_sgs: Vec<String>,
    enterprise_sg: String,
    /// An ingress rule of `more_sgs[0]`.
    ingress_rule: String,
    /// Another VPC (172.16.0.0/12) with a vSwitch in cn-hongkong-b, a group and an ENI.
    other_vpc: String,
    other_vsw: String,
    other_sg: String,
    other_eni: String,
    /// A VPC with only a security group, created with ClientToken "vpc-token".
    token_vpc: String,
    /// `ecs.lab.tiny` (EniQuantity 2, no trunk): instance2 runs it, with one secondary ENI attached,
    /// so it is full; `spare` is an Available ENI in the node vSwitch.
    instance2: String,
    spare: String,
}

fn sg_req(vpc_id: &str, name: &str, kind: &str) -> pb::CreateSecurityGroupRequest {
    pb::CreateSecurityGroupRequest {
        region_id: REGION.into(),
        vpc_id: vpc_id.into(),
        security_group_name: name.into(),
        security_group_type: kind.into(),
        ..Default::default()
    }
}

fn eni_req(vsw: &str, sg: &str) -> pb::CreateNetworkInterfaceRequest {
    pb::CreateNetworkInterfaceRequest {
        region_id: REGION.into(),
        v_switch_id: vsw.into(),
        security_group_ids: vec![sg.into()],
        ..Default::default()
    }
}

fn vsw_req(vpc_id: &str, zone: &str, cidr: &str) -> pb::CreateVSwitchRequest {
    pb::CreateVSwitchRequest {
        region_id: REGION.into(),
        vpc_id: vpc_id.into(),
        zone_id: zone.into(),
        cidr_block: cidr.into(),
        ..Default::default()
    }
}

async fn fixture(channel: Channel) -> Fx {
    let t = build_topology(channel.clone()).await;
    let (mut ecs, mut vpc, mut emulator) = (
        pb::ecs_client::EcsClient::new(channel.clone()),
        pb::vpc_client::VpcClient::new(channel.clone()),
        pb::emulator_client::EmulatorClient::new(channel),
    );
    let member = t.create_member(&mut ecs).await;
    let member_ip = describe_eni(&mut ecs, &member).await.unwrap().private_ip_address;
    let free = ok(ecs
        .create_network_interface(pb::CreateNetworkInterfaceRequest {
            private_ip_address: vec!["10.0.65.50".into()],
            ..eni_req(&t.pod_vsw, &t.sg_id)
        })
        .await);
    let fat = ok(ecs
        .create_network_interface(pb::CreateNetworkInterfaceRequest {
            secondary_private_ip_address_count: Some(15),
            ..eni_req(&t.pod_vsw, &t.sg_id)
        })
        .await)
    .network_interface_id;
    let trunk2 = ok(ecs
        .create_network_interface(pb::CreateNetworkInterfaceRequest {
            instance_type: "Trunk".into(),
            ..eni_req(&t.node_vsw, &t.sg_id)
        })
        .await)
    .network_interface_id;

    let tiny_vsw = ok(vpc.create_v_switch(vsw_req(&t.vpc_id, ZONE, "10.0.8.0/29")).await).v_switch_id;
    let tiny_eni = ok(ecs
        .create_network_interface(pb::CreateNetworkInterfaceRequest {
            secondary_private_ip_address_count: Some(3),
            ..eni_req(&tiny_vsw, &t.sg_id)
        })
        .await)
    .network_interface_id;
    assert_eq!(vswitch(&mut vpc, &tiny_vsw).await.available_ip_address_count, 0);

    let zone_c_vsw = ok(vpc.create_v_switch(vsw_req(&t.vpc_id, "cn-hongkong-c", "10.0.12.0/24")).await).v_switch_id;
    let zone_c_eni = ok(ecs.create_network_interface(eni_req(&zone_c_vsw, &t.sg_id)).await).network_interface_id;

    let mut more_sgs = Vec::new();
    for i in 2..=6 {
        more_sgs.push(ok(ecs.create_security_group(sg_req(&t.vpc_id, &format!("sg{i}"), "")).await).security_group_id);
    }
    let enterprise_sg = ok(ecs.create_security_group(sg_req(&t.vpc_id, "ent", "enterprise")).await).security_group_id;
    ok(ecs
        .authorize_security_group(pb::AuthorizeSecurityGroupRequest {
            region_id: REGION.into(),
            security_group_id: more_sgs[0].clone(),
            permissions: vec![pb::Permission {
                ip_protocol: "TCP".into(),
                port_range: "22/22".into(),
                source_cidr_ip: "10.0.0.0/8".into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await);
    let ingress_rule = ok(ecs
        .describe_security_group_attribute(pb::DescribeSecurityGroupAttributeRequest {
            region_id: REGION.into(),
            security_group_id: more_sgs[0].clone(),
            ..Default::default()
        })
        .await)
    .permissions
    .unwrap()
    .permission[0]
        .security_group_rule_id
        .clone();

    // more_sgs[1] holds the 200 rules a group may have (two calls of 100 distinct rules).
    for half in 0..2 {
        ok(ecs
            .authorize_security_group(pb::AuthorizeSecurityGroupRequest {
                region_id: REGION.into(),
                security_group_id: more_sgs[1].clone(),
                permissions: (1..=100)
                    .map(|p| pb::Permission {
                        ip_protocol: "TCP".into(),
                        port_range: format!("{0}/{0}", half * 100 + p),
                        source_cidr_ip: "10.0.0.0/8".into(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .await);
    }

    let other_vpc = ok(vpc
        .create_vpc(pb::CreateVpcRequest {
            region_id: REGION.into(),
            cidr_block: "172.16.0.0/12".into(),
            ..Default::default()
        })
        .await)
    .vpc_id;
    let other_vsw = ok(vpc.create_v_switch(vsw_req(&other_vpc, ZONE, "172.16.1.0/24")).await).v_switch_id;
    let other_sg = ok(ecs.create_security_group(sg_req(&other_vpc, "other", "")).await).security_group_id;
    let other_eni = ok(ecs.create_network_interface(eni_req(&other_vsw, &other_sg)).await).network_interface_id;

    let token_vpc = ok(vpc
        .create_vpc(pb::CreateVpcRequest {
            region_id: REGION.into(),
            cidr_block: "192.168.0.0/16".into(),
            client_token: "vpc-token".into(),
            ..Default::default()
        })
        .await)
    .vpc_id;
    ok(ecs.create_security_group(sg_req(&token_vpc, "lonely", "")).await);

    ok(emulator
        .create_instance_type(pb::CreateInstanceTypeRequest {
            instance_type_id: "ecs.lab.tiny".into(),
            cpu_core_count: 2,
            memory_size: 4.0,
            eni_quantity: 2,
            eni_private_ip_address_quantity: 4,
            eni_total_quantity: 2,
            ..Default::default()
        })
        .await);
    let instance2 = ok(ecs
        .create_instance(pb::CreateInstanceRequest {
            region_id: REGION.into(),
            instance_type: "ecs.lab.tiny".into(),
            v_switch_id: t.node_vsw.clone(),
            security_group_ids: vec![t.sg_id.clone()],
            private_ip_address: "10.0.4.30".into(),
            ..Default::default()
        })
        .await)
    .instance_id;
    let nic = ok(ecs.create_network_interface(eni_req(&t.node_vsw, &t.sg_id)).await).network_interface_id;
    ok(ecs
        .attach_network_interface(pb::AttachNetworkInterfaceRequest {
            region_id: REGION.into(),
            instance_id: instance2.clone(),
            network_interface_id: nic,
            ..Default::default()
        })
        .await);
    let spare = ok(ecs.create_network_interface(eni_req(&t.node_vsw, &t.sg_id)).await).network_interface_id;

    Fx {
        ecs,
        vpc,
        emu: emulator,
        member,
        member_ip,
        free: free.network_interface_id,
        free_primary: free.private_ip_address,
        free_secondary: "10.0.65.50".into(),
        fat,
        trunk2,
        tiny_vsw,
        tiny_eni,
        zone_c_vsw,
        zone_c_eni,
        more_sgs,
        enterprise_sg,
        ingress_rule,
        other_vpc,
        other_vsw,
        other_sg,
        other_eni,
        token_vpc,
        instance2,
        spare,
        t,
    }
}

type Call = Box<dyn Fn(&Fx) -> BoxFuture<'static, Result<(), Status>>>;

struct Row {
    name: &'static str,
    code: &'static str,
    domain: &'static str,
    call: Call,
}

fn domain_for(client: &str) -> &'static str {
    match client {
        "vpc" => "vpc.aliyuncs.com",
        _ => "ecs.aliyuncs.com",
    }
}

/// `row!("what", "Code", f => client.method(request built from f))`
macro_rules! row {
    ($name:literal, $code:literal, $f:ident => $client:ident . $method:ident ( $req:expr )) => {
        Row {
            name: $name,
            code: $code,
            domain: domain_for(stringify!($client)),
            call: Box::new(|$f: &Fx| {
                let mut c = $f.$client.clone();
                let req = $req;
                Box::pin(async move { c.$method(req).await.map(|_| ()) })
            }),
        }
    };
}

fn perm(proto: &str, ports: &str, cidr: &str) -> pb::Permission {
    pb::Permission {
        ip_protocol: proto.into(),
        port_range: ports.into(),
        source_cidr_ip: cidr.into(),
        ..Default::default()
    }
}

fn authorize(sg: &str, perms: Vec<pb::Permission>) -> pb::AuthorizeSecurityGroupRequest {
    pb::AuthorizeSecurityGroupRequest {
        region_id: REGION.into(),
        security_group_id: sg.into(),
        permissions: perms,
        ..Default::default()
    }
}

fn attach(eni: &str, instance: &str, trunk: &str) -> pb::AttachNetworkInterfaceRequest {
    pb::AttachNetworkInterfaceRequest {
        region_id: REGION.into(),
        instance_id: instance.into(),
        network_interface_id: eni.into(),
        trunk_network_instance_id: trunk.into(),
        ..Default::default()
    }
}

fn detach(eni: &str, instance: &str, trunk: &str) -> pb::DetachNetworkInterfaceRequest {
    pb::DetachNetworkInterfaceRequest {
        region_id: REGION.into(),
        instance_id: instance.into(),
        network_interface_id: eni.into(),
        trunk_network_instance_id: trunk.into(),
    }
}

fn assign(eni: &str, count: Option<i32>, ips: &[&str]) -> pb::AssignPrivateIpAddressesRequest {
    pb::AssignPrivateIpAddressesRequest {
        region_id: REGION.into(),
        network_interface_id: eni.into(),
        secondary_private_ip_address_count: count,
        private_ip_address: ips.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn unassign(eni: &str, ips: &[&str]) -> pb::UnassignPrivateIpAddressesRequest {
    pb::UnassignPrivateIpAddressesRequest {
        region_id: REGION.into(),
        network_interface_id: eni.into(),
        private_ip_address: ips.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn modify(eni: &str, sgs: Vec<String>) -> pb::ModifyNetworkInterfaceAttributeRequest {
    pb::ModifyNetworkInterfaceAttributeRequest {
        region_id: REGION.into(),
        network_interface_id: eni.into(),
        security_group_id: sgs,
        ..Default::default()
    }
}

fn dni() -> pb::DescribeNetworkInterfacesRequest {
    pb::DescribeNetworkInterfacesRequest { region_id: REGION.into(), ..Default::default() }
}

fn instance_req(f: &Fx) -> pb::CreateInstanceRequest {
    pb::CreateInstanceRequest {
        region_id: REGION.into(),
        instance_type: NODE_TYPE.into(),
        v_switch_id: f.t.node_vsw.clone(),
        security_group_ids: vec![f.t.sg_id.clone()],
        ..Default::default()
    }
}

fn instance_type(id: &str, enis: i32, total: i32) -> pb::CreateInstanceTypeRequest {
    pb::CreateInstanceTypeRequest {
        instance_type_id: id.into(),
        eni_quantity: enis,
        eni_private_ip_address_quantity: 10,
        eni_total_quantity: total,
        eni_trunk_supported: true,
        ..Default::default()
    }
}

fn all_sgs(f: &Fx) -> Vec<String> {
    let mut v = vec![f.t.sg_id.clone()];
    v.extend(f.more_sgs.iter().cloned());
    v
}

fn rows() -> Vec<Row> {
    vec![
        // ---- Vpc: CreateVpc / DescribeVpcs / DeleteVpc ----
        row!("VPC CIDR with prefix /33", "InvalidCidrBlock.Malformed", f => vpc.create_vpc(pb::CreateVpcRequest { cidr_block: "10.0.0.0/33".into(), ..Default::default() })),
        row!("VPC CIDR not a CIDR", "InvalidCidrBlock.Malformed", f => vpc.create_vpc(pb::CreateVpcRequest { cidr_block: "ten.0.0.0/8".into(), ..Default::default() })),
        row!("VPC CIDR with host bits", "InvalidCidrBlock.Malformed", f => vpc.create_vpc(pb::CreateVpcRequest { cidr_block: "10.0.0.5/8".into(), ..Default::default() })),
        row!("VPC CIDR larger than /8", "InvalidCidrBlock.Malformed", f => vpc.create_vpc(pb::CreateVpcRequest { cidr_block: "10.0.0.0/7".into(), ..Default::default() })),
        row!("VPC CIDR in 100.64.0.0/10", "InvalidCidrBlock.Malformed", f => vpc.create_vpc(pb::CreateVpcRequest { cidr_block: "100.64.0.0/10".into(), ..Default::default() })),
        row!("VPC CIDR overlapping 169.254.0.0/16", "InvalidCidrBlock.Malformed", f => vpc.create_vpc(pb::CreateVpcRequest { cidr_block: "169.0.0.0/8".into(), ..Default::default() })),
        row!("VPC in a wrong RegionId", "InvalidRegionId.NotFound", f => vpc.create_vpc(pb::CreateVpcRequest { region_id: "cn-beijing".into(), cidr_block: "10.0.0.0/8".into(), ..Default::default() })),
        row!("VPC ClientToken reused with other parameters", "IdempotentParameterMismatch", f => vpc.create_vpc(pb::CreateVpcRequest { region_id: REGION.into(), cidr_block: "192.168.0.0/24".into(), client_token: "vpc-token".into(), ..Default::default() })),
        row!("VPC name with a newline", "InvalidParameter", f => vpc.create_vpc(pb::CreateVpcRequest { cidr_block: "10.0.0.0/8".into(), vpc_name: "web\nprod".into(), ..Default::default() })),
        row!("vSwitch name with an escape", "InvalidParameter", f => vpc.create_v_switch(pb::CreateVSwitchRequest { v_switch_name: "vsw\u{1b}[31m".into(), ..vsw_req(&f.t.vpc_id, ZONE, "10.0.9.0/24") })),
        row!("instance name with a NUL", "InvalidParameter", f => ecs.create_instance(pb::CreateInstanceRequest { instance_name: "node\0a".into(), ..instance_req(f) })),
        row!("ENI name with a tab", "InvalidParameter", f => ecs.create_network_interface(pb::CreateNetworkInterfaceRequest { network_interface_name: "eni\tx".into(), ..eni_req(&f.t.pod_vsw, &f.t.sg_id) })),
        row!("security group name with a carriage return", "InvalidParameter", f => ecs.create_security_group(sg_req(&f.t.vpc_id, "sg\r", "normal"))),
        row!("VPC tag key aliyun…", "InvalidTagKey.Malformed", f => vpc.create_vpc(pb::CreateVpcRequest { tag: vec![pb::Tag { key: "aliyun-x".into(), value: "v".into() }], ..Default::default() })),
        row!("DescribeVpcs in a wrong RegionId", "InvalidRegionId.NotFound", f => vpc.describe_vpcs(pb::DescribeVpcsRequest { region_id: "us-east-1".into(), ..Default::default() })),
        row!("DescribeVpcs PageSize negative", "InvalidParameter", f => vpc.describe_vpcs(pb::DescribeVpcsRequest { page_size: Some(-1), ..Default::default() })),
        row!("DescribeVpcs PageSize 51", "InvalidParameter", f => vpc.describe_vpcs(pb::DescribeVpcsRequest { page_size: Some(51), ..Default::default() })),
        row!("DescribeVpcs PageNumber 0", "InvalidParameter", f => vpc.describe_vpcs(pb::DescribeVpcsRequest { page_number: Some(0), ..Default::default() })),
        row!("DescribeVpcs with 21 IDs", "InvalidParameter", f => vpc.describe_vpcs(pb::DescribeVpcsRequest { vpc_id: (0..21).map(|i| format!("vpc-{i}")).collect::<Vec<_>>().join(","), ..Default::default() })),
        row!("DeleteVpc unknown", "InvalidVpcId.NotFound", f => vpc.delete_vpc(pb::DeleteVpcRequest { region_id: REGION.into(), vpc_id: "vpc-nope".into() })),
        row!("DeleteVpc with vSwitches", "DependencyViolation.VSwitch", f => vpc.delete_vpc(pb::DeleteVpcRequest { region_id: REGION.into(), vpc_id: f.t.vpc_id.clone() })),
        row!("DeleteVpc with a security group", "DependencyViolation.SecurityGroup", f => vpc.delete_vpc(pb::DeleteVpcRequest { region_id: REGION.into(), vpc_id: f.token_vpc.clone() })),
        // ---- Vpc: vSwitches ----
        row!("vSwitch without VpcId", "MissingParameter", f => vpc.create_v_switch(vsw_req("", ZONE, "10.0.9.0/24"))),
        row!("vSwitch without ZoneId", "MissingParameter", f => vpc.create_v_switch(vsw_req(&f.t.vpc_id, "", "10.0.9.0/24"))),
        row!("vSwitch without CidrBlock", "MissingParameter", f => vpc.create_v_switch(vsw_req(&f.t.vpc_id, ZONE, ""))),
        row!("vSwitch /30", "InvalidCidrBlock.Malformed", f => vpc.create_v_switch(vsw_req(&f.t.vpc_id, ZONE, "10.0.9.0/30"))),
        row!("vSwitch /15", "InvalidCidrBlock.Malformed", f => vpc.create_v_switch(vsw_req(&f.t.vpc_id, ZONE, "10.2.0.0/15"))),
        row!("vSwitch CIDR malformed", "InvalidCidrBlock.Malformed", f => vpc.create_v_switch(vsw_req(&f.t.vpc_id, ZONE, "10.0.9.0/2x"))),
        row!("vSwitch overlapping the node vSwitch", "InvalidCidrBlock.Overlapped", f => vpc.create_v_switch(vsw_req(&f.t.vpc_id, ZONE, "10.0.4.128/25"))),
        row!("vSwitch overlapping in the other VPC", "InvalidCidrBlock.Overlapped", f => vpc.create_v_switch(vsw_req(&f.other_vpc, ZONE, "172.16.1.64/26"))),
        row!("vSwitch outside its VPC", "InvalidParameter", f => vpc.create_v_switch(vsw_req(&f.t.vpc_id, ZONE, "192.168.5.0/24"))),
        row!("vSwitch in an unknown zone", "InvalidZoneId.NotFound", f => vpc.create_v_switch(vsw_req(&f.t.vpc_id, "cn-hongkong-z", "10.0.9.0/24"))),
        row!("vSwitch in an unknown VPC", "InvalidVpcId.NotFound", f => vpc.create_v_switch(vsw_req("vpc-nope", ZONE, "10.0.9.0/24"))),
        row!("DescribeVSwitches in a wrong RegionId", "InvalidRegionId.NotFound", f => vpc.describe_v_switches(pb::DescribeVSwitchesRequest { region_id: "cn-hangzhou".into(), ..Default::default() })),
        row!("DescribeVSwitches PageSize negative", "InvalidParameter", f => vpc.describe_v_switches(pb::DescribeVSwitchesRequest { page_size: Some(-5), ..Default::default() })),
        row!("DeleteVSwitch unknown", "InvalidVSwitchId.NotFound", f => vpc.delete_v_switch(pb::DeleteVSwitchRequest { region_id: REGION.into(), v_switch_id: "vsw-nope".into() })),
        row!("DeleteVSwitch with ENIs", "DependencyViolation", f => vpc.delete_v_switch(pb::DeleteVSwitchRequest { region_id: REGION.into(), v_switch_id: f.t.pod_vsw.clone() })),
        // ---- Ecs: security groups ----
        row!("SecurityGroupType fancy", "InvalidParameter", f => ecs.create_security_group(sg_req(&f.t.vpc_id, "x", "fancy"))),
        row!("security group without VpcId", "MissingParameter", f => ecs.create_security_group(sg_req("", "x", ""))),
        row!("security group in an unknown VPC", "InvalidVpcId.NotFound", f => ecs.create_security_group(sg_req("vpc-nope", "x", ""))),
        row!("security group named http://…", "InvalidParameter", f => ecs.create_security_group(sg_req(&f.t.vpc_id, "http://x", ""))),
        row!("security group in a wrong RegionId", "InvalidRegionId.NotFound", f => ecs.create_security_group(pb::CreateSecurityGroupRequest { region_id: "eu-central-1".into(), ..sg_req(&f.t.vpc_id, "x", "") })),
        row!("DeleteSecurityGroup in use", "DependencyViolation", f => ecs.delete_security_group(pb::DeleteSecurityGroupRequest { region_id: REGION.into(), security_group_id: f.t.sg_id.clone() })),
        row!("DeleteSecurityGroup unknown", "InvalidSecurityGroupId.NotFound", f => ecs.delete_security_group(pb::DeleteSecurityGroupRequest { region_id: REGION.into(), security_group_id: "sg-nope".into() })),
        row!("DescribeSecurityGroups SecurityGroupIds not JSON", "InvalidParameter", f => ecs.describe_security_groups(pb::DescribeSecurityGroupsRequest { security_group_ids: "sg-1,sg-2".into(), ..Default::default() })),
        row!("DescribeSecurityGroupAttribute unknown", "InvalidSecurityGroupId.NotFound", f => ecs.describe_security_group_attribute(pb::DescribeSecurityGroupAttributeRequest { security_group_id: "sg-nope".into(), ..Default::default() })),
        row!("DescribeSecurityGroupAttribute Direction sideways", "InvalidParameter", f => ecs.describe_security_group_attribute(pb::DescribeSecurityGroupAttributeRequest { security_group_id: f.t.sg_id.clone(), direction: "sideways".into(), ..Default::default() })),
        row!("rule priority 0", "InvalidPriority.Malformed", f => ecs.authorize_security_group(authorize(&f.t.sg_id, vec![pb::Permission { priority: "0".into(), ..perm("TCP", "80/80", "10.0.0.0/8") }]))),
        row!("rule priority 101", "InvalidPriority.Malformed", f => ecs.authorize_security_group(authorize(&f.t.sg_id, vec![pb::Permission { priority: "101".into(), ..perm("TCP", "80/80", "10.0.0.0/8") }]))),
        row!("rule priority not a number", "InvalidPriority.Malformed", f => ecs.authorize_security_group(authorize(&f.t.sg_id, vec![pb::Permission { priority: "high".into(), ..perm("TCP", "80/80", "10.0.0.0/8") }]))),
        row!("rule port range 90/80", "InvalidIpPortRange.Malformed", f => ecs.authorize_security_group(authorize(&f.t.sg_id, vec![perm("TCP", "90/80", "10.0.0.0/8")]))),
        row!("rule port range 0/80", "InvalidIpPortRange.Malformed", f => ecs.authorize_security_group(authorize(&f.t.sg_id, vec![perm("UDP", "0/80", "10.0.0.0/8")]))),
        row!("rule port range 1/65536", "InvalidIpPortRange.Malformed", f => ecs.authorize_security_group(authorize(&f.t.sg_id, vec![perm("TCP", "1/65536", "10.0.0.0/8")]))),
        row!("TCP rule with -1/-1", "InvalidIpPortRange.Malformed", f => ecs.authorize_security_group(authorize(&f.t.sg_id, vec![perm("TCP", "-1/-1", "10.0.0.0/8")]))),
        row!("ICMP rule with ports", "InvalidIpPortRange.Malformed", f => ecs.authorize_security_group(authorize(&f.t.sg_id, vec![perm("ICMP", "80/80", "10.0.0.0/8")]))),
        row!("TCP rule without PortRange", "MissingParameter", f => ecs.authorize_security_group(authorize(&f.t.sg_id, vec![perm("TCP", "", "10.0.0.0/8")]))),
        row!("rule protocol XYZ", "InvalidIpProtocol.Malformed", f => ecs.authorize_security_group(authorize(&f.t.sg_id, vec![perm("XYZ", "80/80", "10.0.0.0/8")]))),
        row!("rule SourceCidrIp /99", "InvalidSourceCidrIp.Malformed", f => ecs.authorize_security_group(authorize(&f.t.sg_id, vec![perm("TCP", "80/80", "10.0.0.0/99")]))),
        row!("rule without a peer", "MissingParameter", f => ecs.authorize_security_group(authorize(&f.t.sg_id, vec![perm("TCP", "80/80", "")]))),
        row!("rule without any permission", "MissingParameter", f => ecs.authorize_security_group(authorize(&f.t.sg_id, vec![]))),
        row!("rule NicType internet", "InvalidNicType.ValueNotSupported", f => ecs.authorize_security_group(authorize(&f.t.sg_id, vec![pb::Permission { nic_type: "internet".into(), ..perm("TCP", "80/80", "10.0.0.0/8") }]))),
        row!("rule with an unknown SourceGroupId", "InvalidSourceGroupId.NotFound", f => ecs.authorize_security_group(authorize(&f.t.sg_id, vec![pb::Permission { source_group_id: "sg-nope".into(), ..perm("TCP", "80/80", "") }]))),
        row!("rule naming a group of another VPC", "InvalidOperation.VpcMismatch", f => ecs.authorize_security_group(authorize(&f.t.sg_id, vec![pb::Permission { source_group_id: f.other_sg.clone(), ..perm("TCP", "80/80", "") }]))),
        row!("group-peer rule in an enterprise group", "InvalidSecurityGroupType.NotSupported", f => ecs.authorize_security_group(authorize(&f.enterprise_sg, vec![pb::Permission { source_group_id: f.t.sg_id.clone(), ..perm("TCP", "80/80", "") }]))),
        row!("one valid and one invalid permission: nothing is added", "InvalidPriority.Malformed", f => ecs.authorize_security_group(authorize(&f.t.sg_id, vec![perm("TCP", "443/443", "10.0.0.0/8"), pb::Permission { priority: "0".into(), ..perm("TCP", "80/80", "10.0.0.0/8") }]))),
        row!("rule 201 of a group", "AuthorizationLimitExceed", f => ecs.authorize_security_group(authorize(&f.more_sgs[1], vec![perm("TCP", "8080/8080", "10.0.0.0/8")]))),
        row!("rule 201 of a group, egress", "AuthorizationLimitExceed", f => ecs.authorize_security_group_egress(pb::AuthorizeSecurityGroupEgressRequest { security_group_id: f.more_sgs[1].clone(), ip_protocol: "ALL".into(), port_range: "-1/-1".into(), dest_cidr_ip: "0.0.0.0/0".into(), ..Default::default() })),
        row!("101 permissions in one call", "InvalidParameter", f => ecs.authorize_security_group(authorize(&f.more_sgs[2], (1..=101).map(|p| perm("UDP", &format!("{p}/{p}"), "10.0.0.0/8")).collect()))),
        row!("DescribeSecurityGroups NextToken garbage", "InvalidNextToken.Malformed", f => ecs.describe_security_groups(pb::DescribeSecurityGroupsRequest { next_token: "not-hex".into(), ..Default::default() })),
        row!("rule in an unknown group", "InvalidSecurityGroupId.NotFound", f => ecs.authorize_security_group(authorize("sg-nope", vec![perm("TCP", "80/80", "10.0.0.0/8")]))),
        row!("egress policy maybe", "InvalidPolicy.Malformed", f => ecs.authorize_security_group_egress(pb::AuthorizeSecurityGroupEgressRequest { security_group_id: f.t.sg_id.clone(), ip_protocol: "TCP".into(), port_range: "80/80".into(), dest_cidr_ip: "0.0.0.0/0".into(), policy: "maybe".into(), ..Default::default() })),
        row!("egress DestCidrIp malformed", "InvalidDestCidrIp.Malformed", f => ecs.authorize_security_group_egress(pb::AuthorizeSecurityGroupEgressRequest { security_group_id: f.t.sg_id.clone(), ip_protocol: "ALL".into(), port_range: "-1/-1".into(), dest_cidr_ip: "10.0.0.256".into(), ..Default::default() })),
        row!("egress without DestCidrIp", "MissingParameter", f => ecs.authorize_security_group_egress(pb::AuthorizeSecurityGroupEgressRequest { security_group_id: f.t.sg_id.clone(), ip_protocol: "ALL".into(), port_range: "-1/-1".into(), ..Default::default() })),
        row!("revoke an unknown rule ID", "InvalidSecurityGroupRuleId.NotFound", f => ecs.revoke_security_group(pb::RevokeSecurityGroupRequest { security_group_id: f.more_sgs[0].clone(), security_group_rule_id: vec!["sgr-nope".into()], ..Default::default() })),
        row!("revoke egress by an ingress rule's ID", "InvalidSecurityGroupRuleId.NotFound", f => ecs.revoke_security_group_egress(pb::RevokeSecurityGroupEgressRequest { security_group_id: f.more_sgs[0].clone(), security_group_rule_id: vec![f.ingress_rule.clone()], ..Default::default() })),
        row!("revoke a known and an unknown rule ID", "InvalidSecurityGroupRuleId.NotFound", f => ecs.revoke_security_group(pb::RevokeSecurityGroupRequest { security_group_id: f.more_sgs[0].clone(), security_group_rule_id: vec![f.ingress_rule.clone(), "sgr-nope".into()], ..Default::default() })),
        row!("revoke nothing", "MissingParameter", f => ecs.revoke_security_group(pb::RevokeSecurityGroupRequest { security_group_id: f.more_sgs[0].clone(), ..Default::default() })),
        row!("revoke in an unknown group", "InvalidSecurityGroupId.NotFound", f => ecs.revoke_security_group_egress(pb::RevokeSecurityGroupEgressRequest { security_group_id: "sg-nope".into(), security_group_rule_id: vec!["sgr-1".into()], ..Default::default() })),
        row!("InnerAccessPolicy Maybe", "InvalidParameter", f => ecs.modify_security_group_policy(pb::ModifySecurityGroupPolicyRequest { region_id: REGION.into(), security_group_id: f.t.sg_id.clone(), inner_access_policy: "Maybe".into() })),
        row!("InnerAccessPolicy missing", "MissingParameter", f => ecs.modify_security_group_policy(pb::ModifySecurityGroupPolicyRequest { region_id: REGION.into(), security_group_id: f.t.sg_id.clone(), inner_access_policy: String::new() })),
        row!("InnerAccessPolicy of an enterprise group", "InvalidSecurityGroupType.NotSupported", f => ecs.modify_security_group_policy(pb::ModifySecurityGroupPolicyRequest { region_id: REGION.into(), security_group_id: f.enterprise_sg.clone(), inner_access_policy: "Drop".into() })),
        row!("InnerAccessPolicy of an unknown group", "InvalidSecurityGroupId.NotFound", f => ecs.modify_security_group_policy(pb::ModifySecurityGroupPolicyRequest { region_id: REGION.into(), security_group_id: "sg-nope".into(), inner_access_policy: "Drop".into() })),
        // ---- Ecs: CreateNetworkInterface ----
        row!("ENI without VSwitchId", "MissingParameter", f => ecs.create_network_interface(eni_req("", &f.t.sg_id))),
        row!("ENI in an unknown vSwitch", "InvalidVSwitchId.NotFound", f => ecs.create_network_interface(eni_req("vsw-nope", &f.t.sg_id))),
        row!("ENI without a security group", "MissingParameter", f => ecs.create_network_interface(pb::CreateNetworkInterfaceRequest { security_group_ids: vec![], ..eni_req(&f.t.pod_vsw, "") })),
        row!("ENI with SecurityGroupId and SecurityGroupIds.N", "InvalidParameter.Conflict", f => ecs.create_network_interface(pb::CreateNetworkInterfaceRequest { security_group_id: f.t.sg_id.clone(), ..eni_req(&f.t.pod_vsw, &f.t.sg_id) })),
        row!("ENI in an unknown group", "InvalidSecurityGroupId.NotFound", f => ecs.create_network_interface(eni_req(&f.t.pod_vsw, "sg-nope"))),
        row!("ENI in 6 security groups", "JoinedGroupLimitExceed", f => ecs.create_network_interface(pb::CreateNetworkInterfaceRequest { security_group_ids: all_sgs(f), ..eni_req(&f.t.pod_vsw, "") })),
        row!("ENI in the same group twice", "InvalidParameter.SecurityGroupIdRepeated", f => ecs.create_network_interface(pb::CreateNetworkInterfaceRequest { security_group_ids: vec![f.t.sg_id.clone(), f.t.sg_id.clone()], ..eni_req(&f.t.pod_vsw, "") })),
        row!("ENI in a group of another VPC", "InvalidOperation.VpcMismatch", f => ecs.create_network_interface(eni_req(&f.t.pod_vsw, &f.other_sg))),
        row!("ENI in basic and enterprise groups", "InvalidOperation.MultiGroupType", f => ecs.create_network_interface(pb::CreateNetworkInterfaceRequest { security_group_ids: vec![f.t.sg_id.clone(), f.enterprise_sg.clone()], ..eni_req(&f.t.pod_vsw, "") })),
        row!("ENI InstanceType Weird", "InvalidParameter", f => ecs.create_network_interface(pb::CreateNetworkInterfaceRequest { instance_type: "Weird".into(), ..eni_req(&f.t.pod_vsw, &f.t.sg_id) })),
        row!("ENI InstanceType Member", "InvalidParameter", f => ecs.create_network_interface(pb::CreateNetworkInterfaceRequest { instance_type: "Member".into(), ..eni_req(&f.t.pod_vsw, &f.t.sg_id) })),
        row!("ENI traffic mode Turbo", "InvalidParameter", f => ecs.create_network_interface(pb::CreateNetworkInterfaceRequest { network_interface_traffic_mode: "Turbo".into(), ..eni_req(&f.t.pod_vsw, &f.t.sg_id) })),
        row!("ENI SecondaryPrivateIpAddressCount 0", "InvalidParameter", f => ecs.create_network_interface(pb::CreateNetworkInterfaceRequest { secondary_private_ip_address_count: Some(0), ..eni_req(&f.t.pod_vsw, &f.t.sg_id) })),
        row!("ENI SecondaryPrivateIpAddressCount 50", "InvalidParameter", f => ecs.create_network_interface(pb::CreateNetworkInterfaceRequest { secondary_private_ip_address_count: Some(50), ..eni_req(&f.t.pod_vsw, &f.t.sg_id) })),
        row!("ENI SecondaryPrivateIpAddressCount negative", "InvalidParameter", f => ecs.create_network_interface(pb::CreateNetworkInterfaceRequest { secondary_private_ip_address_count: Some(-1), ..eni_req(&f.t.pod_vsw, &f.t.sg_id) })),
        row!("ENI PrivateIpAddress.N with a count", "InvalidParameter.Conflict", f => ecs.create_network_interface(pb::CreateNetworkInterfaceRequest { secondary_private_ip_address_count: Some(1), private_ip_address: vec!["10.0.66.1".into()], ..eni_req(&f.t.pod_vsw, &f.t.sg_id) })),
        row!("ENI with 11 PrivateIpAddress.N", "InvalidParameter", f => ecs.create_network_interface(pb::CreateNetworkInterfaceRequest { private_ip_address: (1..=11).map(|i| format!("10.0.66.{i}")).collect(), ..eni_req(&f.t.pod_vsw, &f.t.sg_id) })),
        row!("ENI PrivateIpAddress.N repeated", "InvalidIp.IpRepeated", f => ecs.create_network_interface(pb::CreateNetworkInterfaceRequest { private_ip_address: vec!["10.0.66.1".into(), "10.0.66.1".into()], ..eni_req(&f.t.pod_vsw, &f.t.sg_id) })),
        row!("ENI primary IP malformed", "InvalidPrivateIpAddress.Malformed", f => ecs.create_network_interface(pb::CreateNetworkInterfaceRequest { primary_ip_address: "10.0.64.300".into(), ..eni_req(&f.t.pod_vsw, &f.t.sg_id) })),
        row!("ENI secondary IP malformed", "InvalidPrivateIpAddress.Malformed", f => ecs.create_network_interface(pb::CreateNetworkInterfaceRequest { private_ip_address: vec!["10.0.66".into()], ..eni_req(&f.t.pod_vsw, &f.t.sg_id) })),
        row!("ENI primary IP outside the vSwitch", "InvalidVSwitchId.IpInvalid", f => ecs.create_network_interface(pb::CreateNetworkInterfaceRequest { primary_ip_address: "10.0.5.10".into(), ..eni_req(&f.t.pod_vsw, &f.t.sg_id) })),
        row!("ENI primary IP is the network address", "InvalidVSwitchId.IpInvalid", f => ecs.create_network_interface(pb::CreateNetworkInterfaceRequest { primary_ip_address: "10.0.64.0".into(), ..eni_req(&f.t.pod_vsw, &f.t.sg_id) })),
        row!("ENI primary IP is the gateway", "InvalidVSwitchId.IpInvalid", f => ecs.create_network_interface(pb::CreateNetworkInterfaceRequest { primary_ip_address: "10.0.4.253".into(), ..eni_req(&f.t.node_vsw, &f.t.sg_id) })),
        row!("ENI primary IP held by the node", "InvalidPrivateIpAddress.Duplicated", f => ecs.create_network_interface(pb::CreateNetworkInterfaceRequest { primary_ip_address: NODE_IP.into(), ..eni_req(&f.t.node_vsw, &f.t.sg_id) })),
        row!("ENI secondary IP held by another ENI", "InvalidPrivateIpAddress.Duplicated", f => ecs.create_network_interface(pb::CreateNetworkInterfaceRequest { private_ip_address: vec![f.free_secondary.clone()], ..eni_req(&f.t.pod_vsw, &f.t.sg_id) })),
        row!("ENI in an exhausted /29", "InvalidVSwitchId.IpNotEnough", f => ecs.create_network_interface(eni_req(&f.tiny_vsw, &f.t.sg_id))),
        row!("ENI with secondaries in an exhausted /29", "InvalidVSwitchId.IpNotEnough", f => ecs.create_network_interface(pb::CreateNetworkInterfaceRequest { secondary_private_ip_address_count: Some(3), ..eni_req(&f.tiny_vsw, &f.t.sg_id) })),
        row!("ENI tag key acs:…", "InvalidTagKey.Malformed", f => ecs.create_network_interface(pb::CreateNetworkInterfaceRequest { tag: vec![pb::Tag { key: "acs:x".into(), value: String::new() }], ..eni_req(&f.t.pod_vsw, &f.t.sg_id) })),
        row!("ENI tag key twice", "Duplicate.TagKey", f => ecs.create_network_interface(pb::CreateNetworkInterfaceRequest { tag: vec![pb::Tag { key: "k".into(), value: "1".into() }, pb::Tag { key: "k".into(), value: "2".into() }], ..eni_req(&f.t.pod_vsw, &f.t.sg_id) })),
        row!("ENI description http://…", "InvalidParameter", f => ecs.create_network_interface(pb::CreateNetworkInterfaceRequest { description: "http://example.com".into(), ..eni_req(&f.t.pod_vsw, &f.t.sg_id) })),
        row!("ENI ClientToken of 65 characters", "InvalidClientToken.Malformed", f => ecs.create_network_interface(pb::CreateNetworkInterfaceRequest { client_token: "t".repeat(65), ..eni_req(&f.t.pod_vsw, &f.t.sg_id) })),
        row!("ENI in a wrong RegionId", "InvalidRegionId.NotFound", f => ecs.create_network_interface(pb::CreateNetworkInterfaceRequest { region_id: "cn-shanghai".into(), ..eni_req(&f.t.pod_vsw, &f.t.sg_id) })),
        // ---- Ecs: AttachNetworkInterface ----
        row!("attach an unknown ENI", "InvalidEniId.NotFound", f => ecs.attach_network_interface(attach("eni-nope", &f.t.instance_id, ""))),
        row!("attach to an unknown instance", "InvalidEcsId.NotFound", f => ecs.attach_network_interface(attach(&f.free, "i-nope", ""))),
        row!("attach without InstanceId", "MissingParameter", f => ecs.attach_network_interface(attach(&f.free, "", ""))),
        row!("attach without NetworkInterfaceId", "MissingParameter", f => ecs.attach_network_interface(attach("", &f.t.instance_id, ""))),
        row!("attach beyond EniQuantity", "EniPerInstanceLimitExceeded", f => ecs.attach_network_interface(attach(&f.spare, &f.instance2, ""))),
        row!("attach an InUse member elsewhere", "InvalidOperation.InvalidEniState", f => ecs.attach_network_interface(attach(&f.member, &f.instance2, ""))),
        row!("attach a primary ENI", "InvalidOperation.InvalidEniType", f => ecs.attach_network_interface(attach(&f.t.primary_eni_id, &f.instance2, ""))),
        row!("attach a second trunk", "InvalidOperation.InvalidEniType", f => ecs.attach_network_interface(attach(&f.trunk2, &f.t.instance_id, ""))),
        row!("attach through an unknown trunk", "InvalidEniId.NotFound", f => ecs.attach_network_interface(attach(&f.free, &f.t.instance_id, "eni-nope"))),
        row!("attach through a non-trunk ENI", "InvalidOperation.InvalidEniType", f => ecs.attach_network_interface(attach(&f.free, &f.t.instance_id, &f.fat))),
        row!("attach a trunk as a member", "InvalidOperation.InvalidEniType", f => ecs.attach_network_interface(attach(&f.trunk2, &f.t.instance_id, &f.t.trunk_eni_id))),
        row!("attach through a trunk of another instance", "InvalidOperation.InvalidEniState", f => ecs.attach_network_interface(attach(&f.spare, &f.instance2, &f.t.trunk_eni_id))),
        row!("attach across zones", "InvalidOperation.AvailabilityZoneMismatch", f => ecs.attach_network_interface(attach(&f.zone_c_eni, &f.t.instance_id, ""))),
        row!("attach across VPCs", "InvalidOperation.VpcMismatch", f => ecs.attach_network_interface(attach(&f.other_eni, &f.t.instance_id, &f.t.trunk_eni_id))),
        row!("attach an ENI with more IPs than the type allows", "InvalidOperation.Ipv4CountExceeded", f => ecs.attach_network_interface(attach(&f.fat, &f.t.instance_id, &f.t.trunk_eni_id))),
        row!("attach NetworkCardIndex 1", "InvalidParameter", f => ecs.attach_network_interface(pb::AttachNetworkInterfaceRequest { network_card_index: Some(1), ..attach(&f.free, &f.t.instance_id, "") })),
        row!("attach NetworkCardIndex negative", "InvalidParameter", f => ecs.attach_network_interface(pb::AttachNetworkInterfaceRequest { network_card_index: Some(-1), ..attach(&f.free, &f.t.instance_id, "") })),
        row!("attach in a wrong RegionId", "InvalidRegionId.NotFound", f => ecs.attach_network_interface(pb::AttachNetworkInterfaceRequest { region_id: "cn-qingdao".into(), ..attach(&f.free, &f.t.instance_id, "") })),
        // ---- Ecs: Detach / Delete ----
        row!("detach the primary ENI", "InvalidOperation.DetachPrimaryEniNotAllowed", f => ecs.detach_network_interface(detach(&f.t.primary_eni_id, &f.t.instance_id, ""))),
        row!("detach an unknown ENI", "InvalidEniId.NotFound", f => ecs.detach_network_interface(detach("eni-nope", &f.t.instance_id, ""))),
        row!("detach from an unknown instance", "InvalidEcsId.NotFound", f => ecs.detach_network_interface(detach(&f.member, "i-nope", &f.t.trunk_eni_id))),
        row!("detach without InstanceId", "MissingParameter", f => ecs.detach_network_interface(detach(&f.member, "", ""))),
        row!("detach a trunk that carries members", "InvalidOperation.InvalidEniState", f => ecs.detach_network_interface(detach(&f.t.trunk_eni_id, &f.t.instance_id, ""))),
        row!("detach from the wrong instance", "InvalidParameter", f => ecs.detach_network_interface(detach(&f.member, &f.instance2, ""))),
        row!("detach from the wrong trunk", "InvalidParameter", f => ecs.detach_network_interface(detach(&f.member, &f.t.instance_id, &f.trunk2))),
        row!("delete an InUse ENI", "InvalidOperation.InvalidEniState", f => ecs.delete_network_interface(pb::DeleteNetworkInterfaceRequest { region_id: REGION.into(), network_interface_id: f.member.clone() })),
        row!("delete an InUse trunk", "InvalidOperation.InvalidEniState", f => ecs.delete_network_interface(pb::DeleteNetworkInterfaceRequest { region_id: REGION.into(), network_interface_id: f.t.trunk_eni_id.clone() })),
        row!("delete a primary ENI", "InvalidOperation.InvalidEniType", f => ecs.delete_network_interface(pb::DeleteNetworkInterfaceRequest { region_id: REGION.into(), network_interface_id: f.t.primary_eni_id.clone() })),
        row!("delete an unknown ENI", "InvalidEniId.NotFound", f => ecs.delete_network_interface(pb::DeleteNetworkInterfaceRequest { region_id: REGION.into(), network_interface_id: "eni-nope".into() })),
        row!("delete without NetworkInterfaceId", "MissingParameter", f => ecs.delete_network_interface(pb::DeleteNetworkInterfaceRequest { region_id: REGION.into(), network_interface_id: String::new() })),
        // ---- Ecs: Describe ENIs ----
        row!("DescribeNetworkInterfaces Type Bogus", "InvalidParameter", f => ecs.describe_network_interfaces(pb::DescribeNetworkInterfacesRequest { r#type: "Bogus".into(), ..dni() })),
        row!("DescribeNetworkInterfaces Status Sleeping", "InvalidParameter", f => ecs.describe_network_interfaces(pb::DescribeNetworkInterfacesRequest { status: "Sleeping".into(), ..dni() })),
        row!("DescribeNetworkInterfaces NextToken garbage", "InvalidNextToken.Malformed", f => ecs.describe_network_interfaces(pb::DescribeNetworkInterfacesRequest { next_token: "zz".into(), ..dni() })),
        row!("DescribeNetworkInterfaces PrivateIpAddress.N malformed", "InvalidPrivateIpAddress.Malformed", f => ecs.describe_network_interfaces(pb::DescribeNetworkInterfacesRequest { private_ip_address: vec!["abc".into()], ..dni() })),
        row!("DescribeNetworkInterfaces PrimaryIpAddress malformed", "InvalidPrivateIpAddress.Malformed", f => ecs.describe_network_interfaces(pb::DescribeNetworkInterfacesRequest { primary_ip_address: "1.2.3".into(), ..dni() })),
        row!("DescribeNetworkInterfaces 101 NetworkInterfaceId.N", "InvalidParameter", f => ecs.describe_network_interfaces(pb::DescribeNetworkInterfacesRequest { network_interface_id: (0..101).map(|i| format!("eni-{i}")).collect(), ..dni() })),
        row!("DescribeNetworkInterfaces PageSize negative", "InvalidParameter", f => ecs.describe_network_interfaces(pb::DescribeNetworkInterfacesRequest { page_size: Some(-1), ..dni() })),
        row!("DescribeNetworkInterfaces PageNumber 0", "InvalidParameter", f => ecs.describe_network_interfaces(pb::DescribeNetworkInterfacesRequest { page_number: Some(0), ..dni() })),
        row!("DescribeNetworkInterfaces in a wrong RegionId", "InvalidRegionId.NotFound", f => ecs.describe_network_interfaces(pb::DescribeNetworkInterfacesRequest { region_id: "cn-shenzhen".into(), ..dni() })),
        row!("DescribeNetworkInterfaceAttribute unknown", "InvalidEniId.NotFound", f => ecs.describe_network_interface_attribute(pb::DescribeNetworkInterfaceAttributeRequest { network_interface_id: "eni-nope".into(), ..Default::default() })),
        row!("DescribeNetworkInterfaceAttribute without an ID", "MissingParameter", f => ecs.describe_network_interface_attribute(pb::DescribeNetworkInterfaceAttributeRequest::default())),
        // ---- Ecs: Assign / Unassign ----
        row!("assign a count of 0", "InvalidParameter", f => ecs.assign_private_ip_addresses(assign(&f.free, Some(0), &[]))),
        row!("assign a negative count", "InvalidParameter", f => ecs.assign_private_ip_addresses(assign(&f.free, Some(-2), &[]))),
        row!("assign a count and addresses", "InvalidParameter.Conflict", f => ecs.assign_private_ip_addresses(assign(&f.free, Some(1), &["10.0.66.7"]))),
        row!("assign neither a count nor addresses", "MissingParameter", f => ecs.assign_private_ip_addresses(assign(&f.free, None, &[]))),
        row!("assign beyond the type's per-ENI limit", "InvalidOperation.Ipv4CountExceeded", f => ecs.assign_private_ip_addresses(assign(&f.member, Some(15), &[]))),
        row!("assign beyond 50 addresses on an unattached ENI", "InvalidOperation.Ipv4CountExceeded", f => ecs.assign_private_ip_addresses(assign(&f.fat, Some(35), &[]))),
        row!("assign an address another ENI holds", "InvalidPrivateIpAddress.Duplicated", f => ecs.assign_private_ip_addresses(assign(&f.free, None, &[&f.member_ip]))),
        row!("assign a free and a held address", "InvalidPrivateIpAddress.Duplicated", f => ecs.assign_private_ip_addresses(assign(&f.free, None, &["10.0.66.8", &f.free_secondary]))),
        row!("assign an address outside the vSwitch", "InvalidVSwitchId.IpInvalid", f => ecs.assign_private_ip_addresses(assign(&f.free, None, &["10.0.4.99"]))),
        row!("assign a malformed address", "InvalidPrivateIpAddress.Malformed", f => ecs.assign_private_ip_addresses(assign(&f.free, None, &["10.0.66.999"]))),
        row!("assign in an exhausted /29", "InvalidVSwitchId.IpNotEnough", f => ecs.assign_private_ip_addresses(assign(&f.tiny_eni, Some(1), &[]))),
        row!("assign to an unknown ENI", "InvalidEniId.NotFound", f => ecs.assign_private_ip_addresses(assign("eni-nope", Some(1), &[]))),
        row!("unassign the primary address", "InvalidIp.IpUnassigned", f => ecs.unassign_private_ip_addresses(unassign(&f.free, &[&f.free_primary]))),
        row!("unassign an address not on the ENI", "InvalidIp.IpUnassigned", f => ecs.unassign_private_ip_addresses(unassign(&f.free, &["10.0.66.9"]))),
        row!("unassign one held and one foreign address", "InvalidIp.IpUnassigned", f => ecs.unassign_private_ip_addresses(unassign(&f.free, &[&f.free_secondary, &f.member_ip]))),
        row!("unassign the same address twice", "InvalidIp.IpRepeated", f => ecs.unassign_private_ip_addresses(unassign(&f.free, &[&f.free_secondary, &f.free_secondary]))),
        row!("unassign a malformed address", "InvalidPrivateIpAddress.Malformed", f => ecs.unassign_private_ip_addresses(unassign(&f.free, &["not-an-ip"]))),
        row!("unassign without addresses", "MissingParameter", f => ecs.unassign_private_ip_addresses(unassign(&f.free, &[]))),
        row!("unassign on an unknown ENI", "InvalidEniId.NotFound", f => ecs.unassign_private_ip_addresses(unassign("eni-nope", &["10.0.66.9"]))),
        // ---- Ecs: ModifyNetworkInterfaceAttribute ----
        row!("modify the primary ENI's groups", "InvalidOperation.PrimaryEniOnlySupportModifyNameAndDesc", f => ecs.modify_network_interface_attribute(modify(&f.t.primary_eni_id, vec![f.more_sgs[0].clone()]))),
        row!("modify into 6 groups", "JoinedGroupLimitExceed", f => ecs.modify_network_interface_attribute(modify(&f.free, all_sgs(f)))),
        row!("modify into a group of another VPC", "InvalidOperation.VpcMismatch", f => ecs.modify_network_interface_attribute(modify(&f.free, vec![f.other_sg.clone()]))),
        row!("modify into basic and enterprise groups", "InvalidOperation.MultiGroupType", f => ecs.modify_network_interface_attribute(modify(&f.free, vec![f.t.sg_id.clone(), f.enterprise_sg.clone()]))),
        row!("modify into an unknown group", "InvalidSecurityGroupId.NotFound", f => ecs.modify_network_interface_attribute(modify(&f.free, vec![f.more_sgs[1].clone(), "sg-nope".into()]))),
        row!("modify with a 129-character name", "InvalidParameter", f => ecs.modify_network_interface_attribute(pb::ModifyNetworkInterfaceAttributeRequest { network_interface_name: Some("n".repeat(129)), ..modify(&f.free, vec![]) })),
        row!("modify an unknown ENI", "InvalidEniId.NotFound", f => ecs.modify_network_interface_attribute(pb::ModifyNetworkInterfaceAttributeRequest { description: Some("x".into()), ..modify("eni-nope", vec![]) })),
        // ---- Ecs: instances and types ----
        row!("instance of type Weird", "InvalidInstanceType.NotFound", f => ecs.create_instance(pb::CreateInstanceRequest { instance_type: "Weird".into(), ..instance_req(f) })),
        row!("instance without InstanceType", "MissingParameter", f => ecs.create_instance(pb::CreateInstanceRequest { instance_type: String::new(), ..instance_req(f) })),
        row!("instance without VSwitchId", "MissingParameter", f => ecs.create_instance(pb::CreateInstanceRequest { v_switch_id: String::new(), ..instance_req(f) })),
        row!("instance in an unknown vSwitch", "InvalidVSwitchId.NotFound", f => ecs.create_instance(pb::CreateInstanceRequest { v_switch_id: "vsw-nope".into(), ..instance_req(f) })),
        row!("instance without security groups", "MissingParameter", f => ecs.create_instance(pb::CreateInstanceRequest { security_group_ids: vec![], ..instance_req(f) })),
        row!("instance on the node's address", "InvalidPrivateIpAddress.Duplicated", f => ecs.create_instance(pb::CreateInstanceRequest { private_ip_address: NODE_IP.into(), ..instance_req(f) })),
        row!("instance on a malformed address", "InvalidPrivateIpAddress.Malformed", f => ecs.create_instance(pb::CreateInstanceRequest { private_ip_address: "10.0.4".into(), ..instance_req(f) })),
        row!("instance in a full /29", "InvalidVSwitchId.IpNotEnough", f => ecs.create_instance(pb::CreateInstanceRequest { v_switch_id: f.tiny_vsw.clone(), ..instance_req(f) })),
        row!("instance zone differs from its vSwitch's", "InvalidOperation.AvailabilityZoneMismatch", f => ecs.create_instance(pb::CreateInstanceRequest { zone_id: "cn-hongkong-c".into(), ..instance_req(f) })),
        row!("instance zone differs from its zone-c vSwitch's", "InvalidOperation.AvailabilityZoneMismatch", f => ecs.create_instance(pb::CreateInstanceRequest { v_switch_id: f.zone_c_vsw.clone(), zone_id: ZONE.into(), ..instance_req(f) })),
        row!("instance in another VPC than its group", "InvalidOperation.VpcMismatch", f => ecs.create_instance(pb::CreateInstanceRequest { v_switch_id: f.other_vsw.clone(), ..instance_req(f) })),
        row!("instance in an unknown zone", "InvalidZoneId.NotFound", f => ecs.create_instance(pb::CreateInstanceRequest { zone_id: "cn-hongkong-q".into(), ..instance_req(f) })),
        row!("DeleteInstance while Running without Force", "IncorrectInstanceStatus", f => ecs.delete_instance(pb::DeleteInstanceRequest { region_id: REGION.into(), instance_id: f.t.instance_id.clone(), force: Some(false) })),
        row!("DeleteInstance unknown", "InvalidInstanceId.NotFound", f => ecs.delete_instance(pb::DeleteInstanceRequest { region_id: REGION.into(), instance_id: "i-nope".into(), force: Some(true) })),
        row!("StartInstance unknown", "InvalidInstanceId.NotFound", f => ecs.start_instance(pb::StartInstanceRequest { region_id: REGION.into(), instance_id: "i-nope".into() })),
        row!("StopInstance unknown", "InvalidInstanceId.NotFound", f => ecs.stop_instance(pb::StopInstanceRequest { region_id: REGION.into(), instance_id: "i-nope".into(), ..Default::default() })),
        row!("StopInstance in a wrong RegionId", "InvalidRegionId.NotFound", f => ecs.stop_instance(pb::StopInstanceRequest { region_id: "ap-southeast-1".into(), instance_id: f.t.instance_id.clone(), ..Default::default() })),
        row!("DescribeInstances InstanceIds not JSON", "InvalidParameter", f => ecs.describe_instances(pb::DescribeInstancesRequest { instance_ids: "i-1,i-2".into(), ..Default::default() })),
        row!("DescribeInstances PageSize 101", "InvalidParameter", f => ecs.describe_instances(pb::DescribeInstancesRequest { page_size: Some(101), ..Default::default() })),
        row!("DescribeInstanceTypes 11 types", "InvalidParameter", f => ecs.describe_instance_types(pb::DescribeInstanceTypesRequest { instance_types: (0..11).map(|i| format!("ecs.x.{i}")).collect(), ..Default::default() })),
        // ---- Emulator ----
        row!("CreateInstanceType without an ID", "MissingParameter", f => emu.create_instance_type(instance_type("", 2, 4))),
        row!("CreateInstanceType ID not ecs.*", "InvalidParameter", f => emu.create_instance_type(instance_type("lab.big", 2, 4))),
        row!("CreateInstanceType EniQuantity 0", "InvalidParameter", f => emu.create_instance_type(instance_type("ecs.lab.zero", 0, 4))),
        row!("CreateInstanceType EniTotalQuantity below EniQuantity", "InvalidParameter", f => emu.create_instance_type(instance_type("ecs.lab.odd", 4, 3))),
        row!("CreateInstanceType redefines a built-in type", "InvalidParameter", f => emu.create_instance_type(instance_type(NODE_TYPE, 8, 100))),
        row!("InjectFault without TargetAction", "MissingParameter", f => emu.inject_fault(pb::InjectFaultRequest { code: "Throttling".into(), ..Default::default() })),
        row!("InjectFault on an unknown action", "InvalidParameter", f => emu.inject_fault(pb::InjectFaultRequest { target_action: "LaunchRocket".into(), code: "Throttling".into(), count: None })),
        row!("InjectFault on InjectFault", "InvalidParameter", f => emu.inject_fault(pb::InjectFaultRequest { target_action: "InjectFault".into(), code: "Throttling".into(), count: None })),
        row!("InjectFault with an unknown code", "InvalidParameter", f => emu.inject_fault(pb::InjectFaultRequest { target_action: "CreateVpc".into(), code: "Bogus".into(), count: None })),
        row!("InjectFault with a negative count", "InvalidParameter", f => emu.inject_fault(pb::InjectFaultRequest { target_action: "CreateVpc".into(), code: "Throttling".into(), count: Some(-1) })),
        row!("CreateInstanceType redefines a type in use", "DependencyViolation", f => emu.create_instance_type(instance_type("ecs.lab.tiny", 3, 3))),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_the_exact_code_and_changes_nothing() {
    let s = TestServer::start().await;
    let f = fixture(s.channel()).await;
    let rows = rows();
    assert!(rows.len() >= 30, "the table has {} rows", rows.len());
    let mut base = Snapshot::take(s.channel()).await;
    assert_eq!(consistency_violations(&base), Vec::<String>::new());
    let mut failures = Vec::new();
    for row in &rows {
        let got = (row.call)(&f).await;
        match got {
            Ok(()) => failures.push(format!("{}: succeeded, expected {}", row.name, row.code)),
            Err(st) => match enifab::grpc::status::cloud_error(&st) {
                None => failures.push(format!("{}: no cloud code in {st:?}", row.name)),
                Some((code, _)) => {
                    if code != row.code {
                        failures.push(format!("{}: got {code} ({}), expected {}", row.name, st.message(), row.code));
                    }
                    if domain_of(&st) != row.domain {
                        failures.push(format!("{}: domain {:?}, expected {}", row.name, domain_of(&st), row.domain));
                    }
                    if !st.message().starts_with(&format!("{code}: ")) {
                        failures.push(format!("{}: message {:?} does not start with the code", row.name, st.message()));
                    }
                }
            },
        }
        let after = Snapshot::take(s.channel()).await;
        if let Some(d) = base.diff(&after) {
            failures.push(format!("{}: the state changed:\n{d}", row.name));
            base = after;
        }
    }
    assert!(failures.is_empty(), "{} of {} rows failed:\n{}", failures.len(), rows.len(), failures.join("\n"));
}

/// An address at the very top of the IPv4 space (255.255.255.253–255) in a vSwitch there must be
/// refused as reserved, not crash the model.
#[tokio::test]
async fn top_of_address_space_is_reserved_not_a_crash() {
    let s = TestServer::start().await;
    let mut vpc = s.vpc();
    let mut ecs = s.ecs();
    let vpc_id =
        ok(vpc.create_vpc(pb::CreateVpcRequest { cidr_block: "255.255.255.0/24".into(), ..Default::default() }).await)
            .vpc_id;
    let vsw = ok(vpc.create_v_switch(vsw_req(&vpc_id, ZONE, "255.255.255.248/29")).await).v_switch_id;
    let sg = ok(ecs.create_security_group(sg_req(&vpc_id, "top", "")).await).security_group_id;
    let before = Snapshot::take(s.channel()).await;
    for ip in ["255.255.255.253", "255.255.255.254", "255.255.255.255"] {
        assert_code(
            ecs.create_network_interface(pb::CreateNetworkInterfaceRequest {
                primary_ip_address: ip.into(),
                ..eni_req(&vsw, &sg)
            })
            .await,
            "InvalidVSwitchId.IpInvalid",
        );
    }
    // The server still answers, and nothing changed.
    before.assert_same(&Snapshot::take(s.channel()).await, "after the reserved addresses");
    let e = ok(ecs.create_network_interface(eni_req(&vsw, &sg)).await);
    assert_eq!(e.private_ip_address, "255.255.255.249");
}

/// What the CLI refuses itself keeps its promise to scripts: `Code: Message` on stderr and exit 1
/// (the code the HTTP endpoint answers for the same parameter), decided before it connects; what
/// it cannot reach is exit 2 naming the endpoint, and a server that never answers is given up on
/// after `--timeout-ms`.
#[test]
fn the_cli_refuses_bad_values_with_a_code_and_gives_up_on_a_silent_server() {
    use std::process::Command;
    // Nothing listens here: a refusal must not need a server.
    let dead = "127.0.0.1:1";
    let cases: &[(&[&str], &str)] = &[
        (
            &["ecs", "CreateNetworkInterface", "--VSwitchId", "vsw-1", "--SecurityGroupIds.0", "sg-1"],
            "InvalidParameter",
        ),
        (&["ecs", "DescribeNetworkInterfaces", "--MaxResults", "many"], "InvalidParameter"),
        (&["ecs", "DescribeNetworkInterfaces", "--MaxResults", "99999999999"], "InvalidParameter"),
        (&["vpc", "DescribeVpcs", "--PageSize", "-"], "InvalidParameter"),
        (&["vpc", "DescribeVpcs", "--VpcNmae", "typo"], "InvalidParameter"),
        (&["ecs", "DescribeNetworkInterfaces", "--Tag.1000.Key", "k"], "InvalidParameter"),
        (&["ecs", "DescribeNetworkInterfaces", "stray"], "InvalidParameter"),
        (&["ecs", "DescribeNetworkInterfaces", "--InstanceId"], "InvalidParameter"),
        (&["ecs", "LaunchRocket"], "InvalidAction.NotFound"),
        (&["ecs", "--timeout-ms", "soon", "DescribeNetworkInterfaces"], "InvalidParameter"),
    ];
    for (args, code) in cases {
        let out = Command::new(enifab_binary()).arg("--endpoint").arg(dead).args(*args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.starts_with(&format!("{code}: ")) && stderr.lines().count() == 1, "{args:?}: {stderr}");
    }

    let out = Command::new(enifab_binary()).args(["--endpoint", dead, "vpc", "DescribeVpcs"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("cannot reach the emulator at {dead}")), "{stderr}");

    // A port that accepts connections and never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let started = std::time::Instant::now();
    let out = Command::new(enifab_binary())
        .args(["--endpoint", &addr, "vpc", "--timeout-ms", "400", "DescribeVpcs"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&addr) && stderr.contains("no answer within 400 ms"), "{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(4), "{:?}", started.elapsed());
    drop(silent);
}
