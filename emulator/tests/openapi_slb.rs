//! SLB (`Version=2014-05-15`) on the cloud-compatible endpoint, as the cloud-controller-manager's
//! old Go SDK sends it: `POST /?…` with every parameter in the query, signed with HMAC-SHA1;
//! `Tag.N.Key`, `LoadBalancerId.N`, the `Tags` and `BackendServers` JSON strings, and the
//! lower-case `healthCheckInterval` of CreateLoadBalancerTCPListener. Checked on the raw JSON:
//! key spelling, object-versus-array nesting and JSON types (notes/research-ccm-slb.md §5), and
//! the error body (status, `Code`, `Message`, `HostId` slb.aliyuncs.com).

mod openapi_support;

use openapi_support::*;
use serde_json::Value;

/// The standard node and one trunk pod; its member ENI and address.
async fn pod(server: &Server) -> (String, String, String) {
    let vpc = server.go(VPC, "CreateVpc", &[("RegionId", REGION), ("CidrBlock", "10.0.0.0/8")]).await.ok();
    let vpc_id = vpc["VpcId"].as_str().unwrap().to_string();
    let vsw = server
        .go(VPC, "CreateVSwitch", &[("VpcId", &vpc_id), ("ZoneId", "cn-hongkong-b"), ("CidrBlock", "10.0.8.0/24")])
        .await
        .ok();
    let vsw = vsw["VSwitchId"].as_str().unwrap().to_string();
    let sg = server.go(ECS, "CreateSecurityGroup", &[("VpcId", &vpc_id)]).await.ok();
    let sg = sg["SecurityGroupId"].as_str().unwrap().to_string();
    let eni = server.go(ECS, "CreateNetworkInterface", &[("VSwitchId", &vsw), ("SecurityGroupIds.1", &sg)]).await.ok();
    let (id, ip) = (eni["NetworkInterfaceId"].as_str().unwrap(), eni["PrivateIpAddress"].as_str().unwrap());
    (vpc_id, id.to_string(), ip.to_string())
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not a JSON integer: {v}"))
}

#[tokio::test]
async fn the_ccm_calls_over_the_go_sdk_wire() {
    let server = Server::start(true).await;
    let (vpc_id, eni, ip) = pod(&server).await;
    let name = "a0123456789abcdef0123456789abcde";
    let tags = format!(r#"[{{"TagValue":"{name}","TagKey":"kubernetes.do.not.delete"}}]"#);
    let none = server.go(SLB, "DescribeLoadBalancers", &[("RegionId", REGION), ("Tags", &tags)]).await.ok();
    assert_eq!(none["LoadBalancers"]["LoadBalancer"], Value::Array(vec![]), "{none}");
    assert_eq!((int(&none["TotalCount"]), int(&none["PageSize"])), (0, 10));

    let lb = server
        .go(
            SLB,
            "CreateLoadBalancer",
            &[
                ("RegionId", REGION),
                ("AddressType", "internet"),
                ("LoadBalancerName", name),
                ("InstanceChargeType", "PayByCLCU"),
                ("DeleteProtection", "on"),
                ("ModificationProtectionStatus", "ConsoleProtection"),
                ("ModificationProtectionReason", "managed.by.ack"),
                ("Tag.1.Key", "kubernetes.do.not.delete"),
                ("Tag.1.Value", name),
                ("Tag.2.Key", "ack.aliyun.com"),
                ("Tag.2.Value", "c1"),
                ("ClientToken", "3c8a6f0e-5d2b-4b8e-9f61-0d2c7a1e4b55"),
            ],
        )
        .await
        .ok();
    let lb_id = lb["LoadBalancerId"].as_str().unwrap().to_string();
    assert!(lb["Address"].as_str().unwrap().starts_with("8.210.162."), "{lb}");
    assert_eq!(int(&lb["OrderId"]), 0);

    let found = server.go(SLB, "DescribeLoadBalancers", &[("RegionId", REGION), ("Tags", &tags)]).await.ok();
    let item = &found["LoadBalancers"]["LoadBalancer"][0];
    assert_eq!(item["LoadBalancerId"], lb_id.as_str());
    assert_eq!((&item["DeleteProtection"], &item["InstanceChargeType"]), (&"on".into(), &"PayByCLCU".into()));
    assert_eq!(int(&item["Bandwidth"]), -1);
    assert!(item["CreateTimeStamp"].is_i64() && item["CreateTime"].is_string(), "{item}");
    assert_eq!(item["Tags"]["Tag"][0]["TagKey"], "kubernetes.do.not.delete");
    // The reference's lower-case JSON keys find it too.
    let lower = r#"[{"tagKey":"ack.aliyun.com","tagValue":"c1"}]"#.to_string();
    let found = server.go(SLB, "DescribeLoadBalancers", &[("Tags", &lower)]).await.ok();
    assert_eq!(int(&found["TotalCount"]), 1);

    let g = server
        .go(SLB, "CreateVServerGroup", &[("LoadBalancerId", &lb_id), ("VServerGroupName", "k8s/80/web/default/c1")])
        .await
        .ok();
    let g = g["VServerGroupId"].as_str().unwrap().to_string();
    let backends = format!(
        r#"[{{"IsUserManaged":false,"NodeName":null,"description":"k8s/80/web/default/c1","serverId":"{eni}","serverIp":"{ip}","weight":100,"port":80,"type":"eni","TargetRef":null,"Invalid":false}}]"#
    );
    let added = server
        .go(SLB, "AddVServerGroupBackendServers", &[("VServerGroupId", &g), ("BackendServers", &backends)])
        .await
        .ok();
    let b = &added["BackendServers"]["BackendServer"][0];
    assert_eq!((int(&b["Port"]), int(&b["Weight"])), (80, 100), "{added}");
    assert_eq!((&b["ServerId"], &b["Type"]), (&Value::from(eni.as_str()), &"eni".into()));
    // The internet load balancer took its first backend's VPC.
    let attr = server.go(SLB, "DescribeLoadBalancerAttribute", &[("LoadBalancerId", &lb_id)]).await.ok();
    assert_eq!((&attr["VpcId"], &attr["NetworkType"]), (&Value::from(vpc_id.as_str()), &"vpc".into()));
    assert!(attr["ListenerPorts"]["ListenerPort"].is_array() && attr["BackendServers"]["BackendServer"].is_array());

    server
        .go(
            SLB,
            "CreateLoadBalancerTCPListener",
            &[
                ("LoadBalancerId", &lb_id),
                ("ListenerPort", "80"),
                ("VServerGroupId", &g),
                ("Description", "k8s/80/web/default/c1"),
                ("Bandwidth", "-1"),
                ("Scheduler", "rr"),
                ("healthCheckInterval", "4"),
                ("PersistenceTimeout", "0"),
            ],
        )
        .await
        .ok();
    server
        .go(
            SLB,
            "StartLoadBalancerListener",
            &[("LoadBalancerId", &lb_id), ("ListenerPort", "80"), ("ListenerProtocol", "tcp")],
        )
        .await
        .ok();
    let ls = server
        .go(SLB, "DescribeLoadBalancerListeners", &[("LoadBalancerId.1", &lb_id), ("MaxResults", "50")])
        .await
        .ok();
    assert!(ls["Listeners"].is_array(), "a bare array: {ls}");
    assert_eq!((&ls["NextToken"], int(&ls["TotalCount"]), int(&ls["MaxResults"])), (&"".into(), 1, 50));
    let l = &ls["Listeners"][0];
    assert_eq!((int(&l["ListenerPort"]), &l["ListenerProtocol"], &l["Status"]), (80, &"tcp".into(), &"running".into()));
    let c = &l["TCPListenerConfig"];
    assert_eq!((int(&c["HealthCheckInterval"]), int(&c["EstablishedTimeout"])), (4, 900), "{c}");
    assert_eq!((&c["HealthCheckSwitch"], &c["ProxyProtocolV2Enabled"]), (&"on".into(), &"false".into()));

    let h = server.go(SLB, "DescribeHealthStatus", &[("LoadBalancerId", &lb_id)]).await.ok();
    let row = &h["BackendServers"]["BackendServer"][0];
    assert_eq!(
        (&row["ServerIp"], int(&row["ListenerPort"]), &row["ServerHealthStatus"]),
        (&Value::from(ip.as_str()), 80, &"unavailable".into())
    );
    let tags = server.go(SLB, "ListTagResources", &[("ResourceType", "instance"), ("ResourceId.1", &lb_id)]).await.ok();
    assert_eq!(tags["TagResources"]["TagResource"].as_array().unwrap().len(), 2, "{tags}");

    // Errors: the cloud's body, the SLB host, 404 for a load balancer that is not there.
    let r = server.go(SLB, "DeleteLoadBalancer", &[("LoadBalancerId", &lb_id)]).await;
    let msg = r.error(400, "OperationDenied.DeleteProtectionIsOn");
    assert!(msg.contains("DeleteProtection"), "{msg}");
    assert_eq!(r.json["HostId"], "slb.aliyuncs.com");
    assert!(r.json["Recommend"].as_str().unwrap().contains("product=Slb"), "{}", r.json);
    server
        .go(SLB, "SetLoadBalancerDeleteProtection", &[("LoadBalancerId", &lb_id), ("DeleteProtection", "off")])
        .await
        .ok();
    server.go(SLB, "DeleteLoadBalancer", &[("LoadBalancerId", &lb_id)]).await.ok();
    let r = server.go(SLB, "DescribeLoadBalancerAttribute", &[("LoadBalancerId", &lb_id)]).await;
    assert_eq!(r.error(404, "InvalidLoadBalancerId.NotFound"), "The specified LoadBalancerId does not exist.");
    let r = server.go(SLB, "CreateVServerGroup", &[("LoadBalancerId", &lb_id)]).await;
    r.error(404, "InvalidLoadBalancerId.NotFound");
    let r = server.go(SLB, "DescribeVServerGroupAttribute", &[("VServerGroupId", &g)]).await;
    assert_eq!(r.error(400, "InvalidParameter"), "The specified VServerGroupId does not exist.");
    let r = server.go(SLB, "DescribeLoadBalancers", &[("Tags", "{not json")]).await;
    r.error(400, "InvalidTag");
    let r = server
        .go(SLB, "CreateLoadBalancerTCPListener", &[("LoadBalancerId", "lb-x"), ("ListenerPort", "eighty")])
        .await;
    r.error(400, "InvalidParameter");
    // DescribeVpcAttribute, which the CCM calls for pod IPs it cannot map to an ENI.
    let v = server.go(VPC, "DescribeVpcAttribute", &[("RegionId", REGION), ("VpcId", &vpc_id)]).await.ok();
    assert_eq!(v["CidrBlock"], "10.0.0.0/8");
    assert!(
        v["SecondaryCidrBlocks"]["SecondaryCidrBlock"].is_array() && v["VSwitchIds"]["VSwitchId"].is_array(),
        "{v}"
    );
    assert!(v["OwnerId"].is_i64(), "{v}");
}

#[tokio::test]
async fn an_intranet_load_balancer_on_a_full_vswitch() {
    let server = Server::start(false).await;
    let vpc = server.form(VPC, "CreateVpc", &[("CidrBlock", "10.0.0.0/8")]).await.ok();
    let vpc_id = vpc["VpcId"].as_str().unwrap().to_string();
    let vsw = server
        .form(VPC, "CreateVSwitch", &[("VpcId", &vpc_id), ("ZoneId", "cn-hongkong-b"), ("CidrBlock", "10.0.8.0/29")])
        .await
        .ok();
    let vsw = vsw["VSwitchId"].as_str().unwrap().to_string();
    for i in 1..=4 {
        let lb = server
            .form(SLB, "CreateLoadBalancer", &[("AddressType", "intranet"), ("VSwitchId", &vsw), ("VpcId", &vpc_id)])
            .await
            .ok();
        assert_eq!(lb["Address"], format!("10.0.8.{i}"), "{lb}");
        assert_eq!((&lb["VpcId"], &lb["NetworkType"]), (&Value::from(vpc_id.as_str()), &"vpc".into()));
    }
    let r = server.form(SLB, "CreateLoadBalancer", &[("AddressType", "intranet"), ("VSwitchId", &vsw)]).await;
    r.error(400, "VSwitchAvailableIpNotExist");
    let sw = server.form(VPC, "DescribeVSwitches", &[("VSwitchId", &vsw)]).await.ok();
    assert_eq!(int(&sw["VSwitches"]["VSwitch"][0]["AvailableIpAddressCount"]), 0);
    let r = server.form(VPC, "DeleteVSwitch", &[("VSwitchId", &vsw)]).await;
    r.error(403, "DependencyViolation");
}
