//! A trunk pod's life as Terway's `pkg/aliyun/client` drives the cloud, replayed against the
//! cloud-compatible endpoint with signatures required, every request signed and shaped exactly
//! as the old Go SDK sends it (reference §1.2, §3, §12), every answer checked field by field:
//!
//! DescribeInstanceTypes → DescribeVSwitches → CreateNetworkInterface (Trunk) → Attach →
//! Describe until InUse → CreateNetworkInterface (member, ClientToken, tags) → Attach with
//! TrunkNetworkInstanceId → Describe (DeviceIndex = VLAN) → Detach → Describe until Available →
//! Delete → Describe until the list is empty;
//!
//! then the error paths Terway branches on (`InvalidEniId.NotFound` on detach/delete of a gone
//! ENI, `InvalidVSwitchId.IpNotEnough`, injected `Throttling`, `IdempotentFailed`), and the
//! same ENIs seen across faces (HTTP ↔ gRPC).

mod openapi_support;

use enifab_proto::v1 as pb;
use openapi_support::*;
use serde_json::Value;

fn ip_in_node_vsw(ip: &str) -> bool {
    ip.starts_with("10.0.4.")
}

fn ip_in_pod_vsw(ip: &str) -> bool {
    let o: Vec<u8> = ip.split('.').map(|p| p.parse().unwrap()).collect();
    o[0] == 10 && o[1] == 0 && (8..12).contains(&o[2])
}

fn assert_mac(mac: &str) {
    assert!(mac.starts_with("00:16:3e:") && mac.len() == 17 && mac == mac.to_lowercase(), "{mac}");
}

/// The parts of a CreateNetworkInterface answer Terway reads (`types.go FromCreateResp`).
fn assert_created(v: &Value, kind: &str, t: &Topology, vsw: &str, tags: &[(&str, &str)]) -> String {
    let id = v["NetworkInterfaceId"].as_str().unwrap().to_string();
    assert!(id.starts_with("eni-"), "{v}");
    assert_eq!(v["Status"], "Available");
    assert_eq!(v["Type"], kind);
    assert_mac(v["MacAddress"].as_str().unwrap());
    let ip = v["PrivateIpAddress"].as_str().unwrap();
    assert_eq!(v["PrivateIpSets"]["PrivateIpSet"], serde_json::json!([{"PrivateIpAddress": ip, "Primary": true}]));
    assert_eq!(v["SecurityGroupIds"]["SecurityGroupId"], serde_json::json!([t.sg]));
    let expected_tags: Vec<Value> =
        tags.iter().map(|(k, val)| serde_json::json!({"TagKey": k, "TagValue": val})).collect();
    let mut got_tags = v["Tags"]["Tag"].as_array().unwrap().clone();
    got_tags.sort_by_key(|t| t["TagKey"].as_str().unwrap().to_string());
    assert_eq!(got_tags, expected_tags);
    assert_eq!(v["VSwitchId"], vsw);
    assert_eq!(v["VpcId"], t.vpc.as_str());
    assert_eq!(v["ZoneId"], "cn-hongkong-b");
    assert_eq!(v["SourceDestCheck"], false);
    assert_eq!(v["Description"], "interface create by terway");
    assert_eq!(v["Ipv6Sets"]["Ipv6Set"], serde_json::json!([]));
    assert!(v["OwnerId"].as_str().is_some_and(|o| !o.is_empty()), "{v}");
    id
}

#[tokio::test]
async fn a_trunk_pods_life_as_terway_calls_it() {
    let mut server = Server::start(true).await;
    let t = topology(&mut server.grpc).await;

    // 1. Limits of the node's type (`limit.go GetInstanceType`).
    let v = server
        .go(ECS, "DescribeInstanceTypes", &[("InstanceTypes.1", "ecs.g7.xlarge"), ("MaxResults", "100")])
        .await
        .ok();
    let types = v["InstanceTypes"]["InstanceType"].as_array().unwrap();
    assert_eq!(types.len(), 1);
    let ty = &types[0];
    assert_eq!(ty["InstanceTypeId"], "ecs.g7.xlarge");
    assert_eq!(ty["EniQuantity"], 4);
    assert_eq!(ty["EniPrivateIpAddressQuantity"], 15);
    assert_eq!(ty["EniIpv6AddressQuantity"], 15);
    assert_eq!(ty["EniTotalQuantity"], 20);
    assert_eq!(ty["EniTrunkSupported"], true);
    assert_eq!(ty["EriQuantity"], 0);
    assert!(ty["InstanceBandwidthRx"].as_i64().unwrap() > 0 && ty["InstanceBandwidthTx"].as_i64().unwrap() > 0);
    assert_eq!(ty["NetworkCards"]["NetworkCardInfo"], serde_json::json!([{"NetworkCardIndex": 0}]));
    assert_eq!(v["NextToken"], "");

    // 2. The pod vSwitch (`vpc_service.go`): only VSwitchId is sent.
    let v = server.go(VPC, "DescribeVSwitches", &[("VSwitchId", &t.pod_vsw)]).await.ok();
    let vsws = v["VSwitches"]["VSwitch"].as_array().unwrap();
    assert_eq!(vsws.len(), 1);
    let vsw = &vsws[0];
    assert_eq!(vsw["VSwitchId"], t.pod_vsw.as_str());
    assert_eq!(vsw["VpcId"], t.vpc.as_str());
    assert_eq!(vsw["ZoneId"], "cn-hongkong-b");
    assert_eq!(vsw["CidrBlock"], "10.0.8.0/22");
    assert_eq!(vsw["Ipv6CidrBlock"], "");
    assert_eq!(vsw["Status"], "Available");
    assert_eq!(vsw["AvailableIpAddressCount"], 1024 - 4);
    assert_eq!(v["TotalCount"], 1);

    // 3. The node daemon creates the trunk ENI (`aliyun.go CreateNetworkInterface`).
    let v = server
        .go(
            ECS,
            "CreateNetworkInterface",
            &[
                ("VSwitchId", &t.node_vsw),
                ("SecurityGroupIds.1", &t.sg),
                ("InstanceType", "Trunk"),
                ("Description", "interface create by terway"),
                ("SourceDestCheck", "false"),
                ("Tag.1.Key", "creator"),
                ("Tag.1.Value", "terway"),
                ("ClientToken", &nonce()),
            ],
        )
        .await
        .ok();
    let trunk = assert_created(&v, "Trunk", &t, &t.node_vsw, &[("creator", "terway")]);
    assert!(ip_in_node_vsw(v["PrivateIpAddress"].as_str().unwrap()), "{v}");

    // 4. Attach it like any ENI; the answer is the RequestId alone.
    let v = server
        .go(ECS, "AttachNetworkInterface", &[("InstanceId", &t.instance), ("NetworkInterfaceId", &trunk)])
        .await
        .ok();
    assert_eq!(v.as_object().unwrap().keys().collect::<Vec<_>>(), ["RequestId"]);

    // 5. Describe until InUse.
    let set = describe_until(&server, &trunk, |s| s.len() == 1 && s[0]["Status"] == "InUse").await;
    let e = &set[0];
    assert_eq!(e["Type"], "Trunk");
    assert_eq!(e["InstanceId"], t.instance.as_str());
    assert_eq!(e["Attachment"]["InstanceId"], t.instance.as_str());
    assert!(e["Attachment"]["DeviceIndex"].as_i64().unwrap() >= 1, "{e}");
    assert_eq!(e["Attachment"]["TrunkNetworkInterfaceId"], "");
    assert_cloud_time(e["CreationTime"].as_str().unwrap());

    // 6. The controlplane creates the pod's member ENI: one IP, its own tags and ClientToken.
    let token = nonce();
    let member_params: Vec<(&str, &str)> = vec![
        ("VSwitchId", &t.pod_vsw),
        ("SecurityGroupIds.1", &t.sg),
        ("Description", "interface create by terway"),
        ("SourceDestCheck", "false"),
        ("Tag.1.Key", "ack.aliyun.com"),
        ("Tag.1.Value", "c0ffee"),
        ("Tag.2.Key", "creator"),
        ("Tag.2.Value", "terway-controller"),
        ("ClientToken", &token),
    ];
    let v = server.go(ECS, "CreateNetworkInterface", &member_params).await.ok();
    let member = assert_created(
        &v,
        "Secondary",
        &t,
        &t.pod_vsw,
        &[("ack.aliyun.com", "c0ffee"), ("creator", "terway-controller")],
    );
    let pod_ip = v["PrivateIpAddress"].as_str().unwrap().to_string();
    assert!(ip_in_pod_vsw(&pod_ip), "{pod_ip}");
    // A retry with the same token (Terway keeps it after a timeout) returns the same ENI.
    let again = server.go(ECS, "CreateNetworkInterface", &member_params).await.ok();
    assert_eq!(again["NetworkInterfaceId"], member.as_str());
    assert_ne!(again["RequestId"], v["RequestId"]);

    // 7. Attach as a member of the trunk (`TrunkNetworkInstanceId`, the cloud's spelling).
    server
        .go(
            ECS,
            "AttachNetworkInterface",
            &[("InstanceId", &t.instance), ("NetworkInterfaceId", &member), ("TrunkNetworkInstanceId", &trunk)],
        )
        .await
        .ok();

    // 8. Describe: a Member whose DeviceIndex is its VLAN id on the trunk.
    let set = describe_until(&server, &member, |s| s.len() == 1 && s[0]["Status"] == "InUse").await;
    let e = &set[0];
    assert_eq!(e["Type"], "Member");
    assert_eq!(e["InstanceId"], t.instance.as_str());
    assert_eq!(e["Attachment"]["InstanceId"], t.instance.as_str());
    assert_eq!(e["Attachment"]["TrunkNetworkInterfaceId"], trunk.as_str());
    let vid = e["Attachment"]["DeviceIndex"].as_i64().unwrap();
    assert!((1..=4094).contains(&vid), "{e}");
    assert_eq!(e["PrivateIpAddress"], pod_ip.as_str());
    assert_eq!(e["PrivateIpSets"]["PrivateIpSet"][0]["Primary"], true);
    // The node's own view (`pool.go syncWithAPI`) leaves members out.
    let v =
        server.go(ECS, "DescribeNetworkInterfaces", &[("InstanceId", &t.instance), ("MaxResults", "500")]).await.ok();
    let ids: Vec<&str> = v["NetworkInterfaceSets"]["NetworkInterfaceSet"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["NetworkInterfaceId"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&trunk.as_str()) && !ids.contains(&member.as_str()), "{ids:?}");
    // CCM finds the pod's ENI by the pod IP (a primary address).
    let v = server
        .go(
            ECS,
            "DescribeNetworkInterfaces",
            &[("VpcId", &t.vpc), ("Status", "InUse"), ("PrivateIpAddress.1", &pod_ip), ("MaxResults", "100")],
        )
        .await
        .ok();
    assert_eq!(v["NetworkInterfaceSets"]["NetworkInterfaceSet"][0]["NetworkInterfaceId"], member.as_str());

    // 9. Detach the member.
    server
        .go(
            ECS,
            "DetachNetworkInterface",
            &[("InstanceId", &t.instance), ("NetworkInterfaceId", &member), ("TrunkNetworkInstanceId", &trunk)],
        )
        .await
        .ok();

    // 10. Describe until Available: a Secondary again, without an attachment.
    let set = describe_until(&server, &member, |s| s.len() == 1 && s[0]["Status"] == "Available").await;
    assert_eq!(set[0]["Type"], "Secondary");
    assert!(set[0].get("Attachment").is_none(), "{}", set[0]);
    assert_eq!(set[0]["InstanceId"], "");

    // 11. Delete, and 12. describe until the list is empty (`ecs.go DeleteNetworkInterface`).
    server.go(ECS, "DeleteNetworkInterface", &[("NetworkInterfaceId", &member)]).await.ok();
    describe_until(&server, &member, |s| s.is_empty()).await;
    let v = server.go(ECS, "DescribeNetworkInterfaces", &[("NetworkInterfaceId.1", &member)]).await.ok();
    assert_eq!(v["TotalCount"], 0);

    // Error paths Terway treats as "already gone" (reference §3.3, §3.4).
    let r = server
        .go(
            ECS,
            "DetachNetworkInterface",
            &[("InstanceId", &t.instance), ("NetworkInterfaceId", &member), ("TrunkNetworkInstanceId", &trunk)],
        )
        .await;
    let msg = r.error(404, "InvalidEniId.NotFound");
    assert_eq!(msg, format!("The specified EniId \"{member}\" is not found."));
    assert_eq!(r.json["HostId"], "ecs.aliyuncs.com");
    let r = server.go(ECS, "DeleteNetworkInterface", &[("NetworkInterfaceId", &member)]).await;
    r.error(404, "InvalidEniId.NotFound");

    // The trunk, created over HTTP, is the same ENI over gRPC.
    let g = server
        .grpc
        .ecs
        .clone()
        .describe_network_interfaces(pb::DescribeNetworkInterfacesRequest {
            network_interface_id: vec![trunk.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let g = &g.network_interface_sets.unwrap().network_interface_set[0];
    assert_eq!((g.r#type.as_str(), g.status.as_str(), g.instance_id.as_str()), ("Trunk", "InUse", t.instance.as_str()));
}

#[tokio::test]
async fn an_eni_made_over_grpc_is_seen_over_http_and_back() {
    let mut server = Server::start(false).await;
    let t = topology(&mut server.grpc).await;
    let over_grpc = server
        .grpc
        .ecs
        .create_network_interface(pb::CreateNetworkInterfaceRequest {
            v_switch_id: t.pod_vsw.clone(),
            security_group_ids: vec![t.sg.clone()],
            tag: vec![pb::Tag { key: "face".into(), value: "grpc".into() }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let v = server
        .form(ECS, "DescribeNetworkInterfaces", &[("NetworkInterfaceId.1", &over_grpc.network_interface_id)])
        .await
        .ok();
    let e = &v["NetworkInterfaceSets"]["NetworkInterfaceSet"][0];
    assert_eq!(e["MacAddress"], over_grpc.mac_address.as_str());
    assert_eq!(e["PrivateIpAddress"], over_grpc.private_ip_address.as_str());
    assert_eq!(e["Tags"]["Tag"], serde_json::json!([{"TagKey": "face", "TagValue": "grpc"}]));

    let v = server
        .form(
            ECS,
            "CreateNetworkInterface",
            &[("VSwitchId", &t.pod_vsw), ("SecurityGroupIds.1", &t.sg), ("NetworkInterfaceName", "made over http")],
        )
        .await
        .ok();
    let id = v["NetworkInterfaceId"].as_str().unwrap().to_string();
    let g = server
        .grpc
        .ecs
        .describe_network_interface_attribute(pb::DescribeNetworkInterfaceAttributeRequest {
            network_interface_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (g.network_interface_name.as_str(), g.mac_address.as_str()),
        ("made over http", v["MacAddress"].as_str().unwrap())
    );

    // And the CLI's way in (dynamic gRPC by action name) sees it too.
    let channel = enifab::cli::connect(&server.addr.to_string()).await.unwrap();
    let cli = enifab::cli::call(
        "test",
        channel,
        "Ecs",
        "DescribeNetworkInterfaces",
        &[("NetworkInterfaceId.1".into(), id.clone())],
    )
    .await
    .unwrap();
    assert_eq!(cli["NetworkInterfaceSets"]["NetworkInterfaceSet"][0]["NetworkInterfaceId"], id.as_str());
}

#[tokio::test]
async fn a_full_vswitch_answers_ip_not_enough() {
    let mut server = Server::start(true).await;
    let t = topology(&mut server.grpc).await;
    // A /29 holds 8 addresses; the first and the last three are reserved: 4 are usable.
    let tiny = server
        .grpc
        .vpc
        .create_v_switch(pb::CreateVSwitchRequest {
            vpc_id: t.vpc.clone(),
            zone_id: "cn-hongkong-b".into(),
            cidr_block: "10.0.12.0/29".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .v_switch_id;
    let params = [("VSwitchId", tiny.as_str()), ("SecurityGroupIds.1", t.sg.as_str())];
    for _ in 0..4 {
        server.go(ECS, "CreateNetworkInterface", &params).await.ok();
    }
    let r = server.go(ECS, "CreateNetworkInterface", &params).await;
    let msg = r.error(403, "InvalidVSwitchId.IpNotEnough");
    assert_eq!(msg, format!("The specified VSwitch \"{tiny}\" has not enough IpAddress."));
    let v = server.go(VPC, "DescribeVSwitches", &[("VSwitchId", &tiny)]).await.ok();
    assert_eq!(v["VSwitches"]["VSwitch"][0]["AvailableIpAddressCount"], 0);
}

#[tokio::test]
async fn injected_throttling_and_idempotent_failures_reach_terways_retry_paths() {
    let mut server = Server::start(true).await;
    let t = topology(&mut server.grpc).await;

    // Armed over gRPC (`enifab emulator InjectFault`): the next two creates are throttled.
    let armed = server
        .grpc
        .emulator
        .inject_fault(pb::InjectFaultRequest {
            target_action: "CreateNetworkInterface".into(),
            code: "Throttling".into(),
            count: Some(2),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(armed.remaining, 2);
    let params = [("VSwitchId", t.pod_vsw.as_str()), ("SecurityGroupIds.1", t.sg.as_str())];
    for _ in 0..2 {
        let r = server.go(ECS, "CreateNetworkInterface", &params).await;
        assert_eq!(r.error(400, "Throttling"), "Request was denied due to request throttling.");
    }
    // Other actions are not affected, and the third create goes through (Terway's retry).
    server.go(ECS, "DescribeNetworkInterfaces", &[]).await.ok();
    server.go(ECS, "CreateNetworkInterface", &params).await.ok();

    // Armed over HTTP (the emulator's own version): IdempotentFailed on a ClientToken create.
    let v = server
        .go(EMULATOR, "InjectFault", &[("TargetAction", "CreateNetworkInterface"), ("Code", "IdempotentFailed")])
        .await
        .ok();
    assert_eq!(
        (v["TargetAction"].as_str(), v["Code"].as_str(), v["Remaining"].as_i64()),
        (Some("CreateNetworkInterface"), Some("IdempotentFailed"), Some(1))
    );
    let token = nonce();
    let mut with_token = params.to_vec();
    with_token.push(("ClientToken", &token));
    let r = server.go(ECS, "CreateNetworkInterface", &with_token).await;
    r.error(400, "IdempotentFailed");
    // Terway drops the token on IdempotentFailed and retries with a fresh one.
    let fresh = nonce();
    let mut retry = params.to_vec();
    retry.push(("ClientToken", &fresh));
    server.go(ECS, "CreateNetworkInterface", &retry).await.ok();

    // The gRPC face fails the same way while a fault is armed.
    server
        .go(
            EMULATOR,
            "InjectFault",
            &[("TargetAction", "AttachNetworkInterface"), ("Code", "Operation.Conflict"), ("Count", "1")],
        )
        .await
        .ok();
    let err = server
        .grpc
        .ecs
        .attach_network_interface(pb::AttachNetworkInterfaceRequest {
            instance_id: t.instance.clone(),
            network_interface_id: "eni-whatever".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(enifab::grpc::status::cloud_error(&err).unwrap().0, "Operation.Conflict");
}
