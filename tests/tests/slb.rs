//! Every method of `enifab.v1.Slb` through the generated client against a real server on
//! `127.0.0.1:0`: the cloud-controller-manager's reconcile sequence for one Service with ENI
//! backends (notes/research-ccm-slb.md §2, §7), the error table it and its users see, the
//! `BackendServers` JSON shapes it sends, the response layout the descriptor codec renders, and
//! the state surviving a restart.

use std::collections::BTreeSet;

use enifab::cli::SignedChannel;
use enifab_tests::v1 as pb;
use enifab_tests::*;
use prost::Message;

type Slb = pb::slb_client::SlbClient<SignedChannel>;

/// Every RPC of `enifab.v1.Slb`, as this file exercises them.
const COVERED: &[&str] = &[
    "CreateLoadBalancer",
    "DescribeLoadBalancers",
    "DescribeLoadBalancerAttribute",
    "SetLoadBalancerName",
    "SetLoadBalancerDeleteProtection",
    "SetLoadBalancerModificationProtection",
    "DeleteLoadBalancer",
    "TagResources",
    "UntagResources",
    "ListTagResources",
    "CreateVServerGroup",
    "DescribeVServerGroups",
    "DescribeVServerGroupAttribute",
    "AddVServerGroupBackendServers",
    "RemoveVServerGroupBackendServers",
    "SetVServerGroupAttribute",
    "ModifyVServerGroupBackendServers",
    "DeleteVServerGroup",
    "CreateLoadBalancerTCPListener",
    "CreateLoadBalancerUDPListener",
    "SetLoadBalancerTCPListenerAttribute",
    "SetLoadBalancerUDPListenerAttribute",
    "DescribeLoadBalancerTCPListenerAttribute",
    "DescribeLoadBalancerUDPListenerAttribute",
    "DescribeLoadBalancerListeners",
    "StartLoadBalancerListener",
    "StopLoadBalancerListener",
    "DeleteLoadBalancerListener",
    "DescribeHealthStatus",
];

/// The CCM's default name for a Service: "a" + its UID without dashes, 32 characters.
const SVC: &str = "a3f1c2d4e5b6a7980112233445566778";
const CLUSTER: &str = "c1";

fn tag(k: &str, v: &str) -> pb::Tag {
    pb::Tag { key: k.into(), value: v.into() }
}

/// A trunk pod: a member ENI of the standard node's trunk, and its address.
async fn pod(s: &TestServer, t: &Topology) -> (String, String) {
    let mut ecs = s.ecs();
    let id = t.create_member(&mut ecs).await;
    let ip = describe_eni(&mut ecs, &id).await.expect("the member exists").private_ip_address;
    (id, ip)
}

/// What the CCM sends for ENI backends: lower-camel keys, numbers, and keys of its own.
fn ccm_backends(pods: &[(&str, &str)], port: u16) -> String {
    let items: Vec<String> = pods
        .iter()
        .map(|(eni, ip)| {
            format!(
                r#"{{"IsUserManaged":false,"NodeName":"cn-hongkong.10.0.4.22","description":"k8s/{port}/web/default/{CLUSTER}","serverId":"{eni}","serverIp":"{ip}","weight":100,"port":{port},"type":"eni","TargetRef":{{"kind":"Pod","namespace":"default","name":"web"}},"Invalid":false}}"#
            )
        })
        .collect();
    format!("[{}]", items.join(","))
}

async fn find_by_tag(slb: &mut Slb, value: &str) -> Vec<pb::LoadBalancerItem> {
    ok(slb
        .describe_load_balancers(pb::DescribeLoadBalancersRequest {
            region_id: REGION.into(),
            tags: format!(r#"[{{"TagValue":"{value}","TagKey":"kubernetes.do.not.delete"}}]"#),
            ..Default::default()
        })
        .await)
    .load_balancers
    .unwrap_or_default()
    .load_balancer
}

async fn group(slb: &mut Slb, id: &str) -> pb::DescribeVServerGroupAttributeResponse {
    ok(slb
        .describe_v_server_group_attribute(pb::DescribeVServerGroupAttributeRequest {
            region_id: REGION.into(),
            v_server_group_id: id.into(),
        })
        .await)
}

fn backend_keys(g: &pb::DescribeVServerGroupAttributeResponse) -> Vec<(String, String, i32, i32)> {
    g.backend_servers
        .clone()
        .unwrap_or_default()
        .backend_server
        .into_iter()
        .map(|b| (b.server_id, b.server_ip, b.port, b.weight))
        .collect()
}

async fn listeners(slb: &mut Slb, lb: &str) -> Vec<pb::SlbListenerItem> {
    ok(slb
        .describe_load_balancer_listeners(pb::DescribeLoadBalancerListenersRequest {
            region_id: REGION.into(),
            load_balancer_id: vec![lb.into()],
            max_results: Some(50),
            ..Default::default()
        })
        .await)
    .listeners
}

#[tokio::test]
async fn the_ccm_reconciles_one_service_from_creation_to_deletion() {
    let s = TestServer::start().await;
    let t = build_topology(s.channel()).await;
    let mut slb = s.clients.slb.clone();
    let (a, a_ip) = pod(&s, &t).await;
    let (b, b_ip) = pod(&s, &t).await;

    // Find: by tag, then by name; a new Service has neither.
    assert!(find_by_tag(&mut slb, SVC).await.is_empty());
    let by_name = ok(slb
        .describe_load_balancers(pb::DescribeLoadBalancersRequest {
            region_id: REGION.into(),
            load_balancer_name: SVC.into(),
            ..Default::default()
        })
        .await);
    assert_eq!(by_name.total_count, 0);

    // Create, as the CCM does for a default internet Service.
    let create = pb::CreateLoadBalancerRequest {
        region_id: REGION.into(),
        address_type: "internet".into(),
        load_balancer_name: SVC.into(),
        instance_charge_type: "PayByCLCU".into(),
        delete_protection: "on".into(),
        modification_protection_status: "ConsoleProtection".into(),
        modification_protection_reason: "managed.by.ack".into(),
        tag: vec![tag("kubernetes.do.not.delete", SVC), tag("ack.aliyun.com", CLUSTER)],
        client_token: "5d9b1a8e-0b6e-4f2f-9d53-1c6a2f0b7e41".into(),
        ..Default::default()
    };
    let created = ok(slb.create_load_balancer(create.clone()).await);
    assert!(created.load_balancer_id.starts_with("lb-"), "{created:?}");
    assert!(created.address.starts_with("8.210.162."), "the default public pool: {created:?}");
    // A retry with the ClientToken is the same load balancer.
    assert_eq!(ok(slb.create_load_balancer(create).await).load_balancer_id, created.load_balancer_id);
    let lb = created.load_balancer_id.clone();

    // Read back: the create values, echoed so the CCM finds nothing to fix.
    let attr = ok(slb
        .describe_load_balancer_attribute(pb::DescribeLoadBalancerAttributeRequest {
            region_id: REGION.into(),
            load_balancer_id: lb.clone(),
        })
        .await);
    assert_eq!((attr.load_balancer_id.as_str(), attr.address.as_str()), (lb.as_str(), created.address.as_str()));
    assert_eq!((attr.address_type.as_str(), attr.load_balancer_name.as_str()), ("internet", SVC));
    assert_eq!((attr.instance_charge_type.as_str(), attr.delete_protection.as_str()), ("PayByCLCU", "on"));
    assert_eq!(attr.modification_protection_status, "ConsoleProtection");
    assert_eq!((attr.bandwidth, attr.load_balancer_status.as_str(), attr.region_id.as_str()), (-1, "active", REGION));
    let tags: Vec<(String, String)> = attr.tags.unwrap().tag.into_iter().map(|t| (t.tag_key, t.tag_value)).collect();
    assert_eq!(tags, [("kubernetes.do.not.delete".into(), SVC.into()), ("ack.aliyun.com".into(), CLUSTER.into())]);

    // The vServer group, created empty, then the backends in a batch.
    let vgroup_name = format!("k8s/80/web/default/{CLUSTER}");
    let g = ok(slb
        .create_v_server_group(pb::CreateVServerGroupRequest {
            region_id: REGION.into(),
            load_balancer_id: lb.clone(),
            v_server_group_name: vgroup_name.clone(),
            ..Default::default()
        })
        .await)
    .v_server_group_id;
    assert!(g.starts_with("rsp-"), "{g}");
    let added = ok(slb
        .add_v_server_group_backend_servers(pb::AddVServerGroupBackendServersRequest {
            region_id: REGION.into(),
            v_server_group_id: g.clone(),
            backend_servers: ccm_backends(&[(&a, &a_ip), (&b, &b_ip)], 80),
        })
        .await);
    let servers = added.backend_servers.unwrap().backend_server;
    assert_eq!(servers.len(), 2);
    assert_eq!(
        (servers[0].server_id.as_str(), servers[0].server_ip.as_str(), servers[0].port, servers[0].r#type.as_str()),
        (a.as_str(), a_ip.as_str(), 80, "eni")
    );
    assert_eq!(servers[0].description, vgroup_name, "stored as sent: the CCM's ownership key");

    // The listener with the group, then start it.
    ok(slb
        .create_load_balancer_tcp_listener(pb::CreateLoadBalancerTcpListenerRequest {
            region_id: REGION.into(),
            load_balancer_id: lb.clone(),
            listener_port: Some(80),
            v_server_group_id: g.clone(),
            description: format!("k8s/80/web/default/{CLUSTER}"),
            bandwidth: Some(-1),
            scheduler: "rr".into(),
            ..Default::default()
        })
        .await);
    assert_eq!(listeners(&mut slb, &lb).await[0].status, "stopped");
    ok(slb
        .start_load_balancer_listener(pb::StartLoadBalancerListenerRequest {
            region_id: REGION.into(),
            load_balancer_id: lb.clone(),
            listener_port: Some(80),
            listener_protocol: "tcp".into(),
        })
        .await);

    // A later reconcile: found by tag (with DeleteProtection), tags, groups, listeners.
    let found = find_by_tag(&mut slb, SVC).await;
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].delete_protection.as_str(), found[0].internet_charge_type_alias.as_str()),
        ("on", "paybytraffic")
    );
    let listed = ok(slb
        .list_tag_resources(pb::ListTagResourcesRequest {
            region_id: REGION.into(),
            resource_type: "instance".into(),
            resource_id: vec![lb.clone()],
            ..Default::default()
        })
        .await);
    assert_eq!(listed.next_token, "");
    assert_eq!(listed.tag_resources.unwrap().tag_resource.len(), 2);
    let groups = ok(slb
        .describe_v_server_groups(pb::DescribeVServerGroupsRequest {
            region_id: REGION.into(),
            load_balancer_id: lb.clone(),
            ..Default::default()
        })
        .await)
    .v_server_groups
    .unwrap()
    .v_server_group;
    assert_eq!(
        (groups.len(), groups[0].v_server_group_name.as_str(), groups[0].server_count),
        (1, vgroup_name.as_str(), 2)
    );
    let used_by = groups[0].associated_objects.clone().unwrap().listeners.unwrap().listener;
    assert_eq!((used_by[0].port, used_by[0].protocol.as_str()), (80, "tcp"));
    let l = &listeners(&mut slb, &lb).await[0];
    assert_eq!((l.listener_port, l.listener_protocol.as_str(), l.status.as_str()), (80, "tcp", "running"));
    assert_eq!((l.v_server_group_id.as_str(), l.scheduler.as_str(), l.backend_server_port), (g.as_str(), "rr", None));

    // Endpoints change: one pod goes, another comes; a weight changes.
    let (c, c_ip) = pod(&s, &t).await;
    ok(slb
        .remove_v_server_group_backend_servers(pb::RemoveVServerGroupBackendServersRequest {
            region_id: REGION.into(),
            v_server_group_id: g.clone(),
            backend_servers: ccm_backends(&[(&b, &b_ip)], 80),
        })
        .await);
    ok(slb
        .add_v_server_group_backend_servers(pb::AddVServerGroupBackendServersRequest {
            region_id: REGION.into(),
            v_server_group_id: g.clone(),
            backend_servers: ccm_backends(&[(&c, &c_ip)], 80),
        })
        .await);
    ok(slb
        .set_v_server_group_attribute(pb::SetVServerGroupAttributeRequest {
            region_id: REGION.into(),
            v_server_group_id: g.clone(),
            backend_servers: Some(ccm_backends(&[(&c, &c_ip)], 80).replace(r#""weight":100"#, r#""weight":50"#)),
            ..Default::default()
        })
        .await);
    assert_eq!(
        backend_keys(&group(&mut slb, &g).await),
        [(a.clone(), a_ip.clone(), 80, 100), (c.clone(), c_ip.clone(), 80, 50)]
    );

    // The Service port changes 80 → 8080: a new group and listener, then the old ones go.
    let g2 = ok(slb
        .create_v_server_group(pb::CreateVServerGroupRequest {
            region_id: REGION.into(),
            load_balancer_id: lb.clone(),
            v_server_group_name: format!("k8s/8080/web/default/{CLUSTER}"),
            backend_servers: ccm_backends(&[(&a, &a_ip), (&c, &c_ip)], 8080),
        })
        .await)
    .v_server_group_id;
    ok(slb
        .create_load_balancer_tcp_listener(pb::CreateLoadBalancerTcpListenerRequest {
            region_id: REGION.into(),
            load_balancer_id: lb.clone(),
            listener_port: Some(8080),
            v_server_group_id: g2.clone(),
            bandwidth: Some(-1),
            ..Default::default()
        })
        .await);
    ok(slb
        .start_load_balancer_listener(pb::StartLoadBalancerListenerRequest {
            region_id: REGION.into(),
            load_balancer_id: lb.clone(),
            listener_port: Some(8080),
            listener_protocol: "tcp".into(),
        })
        .await);
    let in_use = slb
        .delete_v_server_group(pb::DeleteVServerGroupRequest { region_id: REGION.into(), v_server_group_id: g.clone() })
        .await;
    assert_code(in_use, "RspoolVipExist");
    ok(slb
        .delete_load_balancer_listener(pb::DeleteLoadBalancerListenerRequest {
            region_id: REGION.into(),
            load_balancer_id: lb.clone(),
            listener_port: Some(80),
            listener_protocol: "tcp".into(),
        })
        .await);
    ok(slb
        .delete_v_server_group(pb::DeleteVServerGroupRequest { region_id: REGION.into(), v_server_group_id: g.clone() })
        .await);
    let ports: Vec<i32> = listeners(&mut slb, &lb).await.iter().map(|l| l.listener_port).collect();
    assert_eq!(ports, [8080]);

    // Everything the API shows is consistent, and survives a restart.
    let before = Snapshot::take(s.channel()).await;
    assert!(consistency_violations(&before).is_empty(), "{:?}", consistency_violations(&before));
    assert_eq!((before.load_balancers.len(), before.listeners.len(), before.vserver_groups.len()), (1, 1, 1));

    // Deletion: refused with protection, protection off, deleted; the CCM then sees it gone.
    let del = || pb::DeleteLoadBalancerRequest { region_id: REGION.into(), load_balancer_id: lb.clone() };
    let st = assert_code(slb.delete_load_balancer(del()).await, "OperationDenied.DeleteProtectionIsOn");
    assert_eq!(domain_of(&st), "slb.aliyuncs.com");
    ok(slb
        .set_load_balancer_delete_protection(pb::SetLoadBalancerDeleteProtectionRequest {
            region_id: REGION.into(),
            load_balancer_id: lb.clone(),
            delete_protection: "off".into(),
        })
        .await);
    ok(slb.delete_load_balancer(del()).await);
    let st = assert_code(slb.delete_load_balancer(del()).await, "InvalidLoadBalancerId.NotFound");
    assert!(st.message().contains("LoadBalancerId does not exist"), "the CCM matches this: {}", st.message());
    assert!(find_by_tag(&mut slb, SVC).await.is_empty());
    let after = Snapshot::take(s.channel()).await;
    assert!(after.load_balancers.is_empty() && after.listeners.is_empty() && after.vserver_groups.is_empty());
}

#[tokio::test]
async fn state_survives_a_restart_and_intranet_addresses_count_in_the_vswitch() {
    let mut s = TestServer::start().await;
    let t = build_topology(s.channel()).await;
    let mut slb = s.clients.slb.clone();
    let (eni, ip) = pod(&s, &t).await;
    let free = vswitch(&mut s.vpc(), &t.node_vsw).await.available_ip_address_count;
    let lb = ok(slb
        .create_load_balancer(pb::CreateLoadBalancerRequest {
            region_id: REGION.into(),
            v_switch_id: t.node_vsw.clone(),
            address: "10.0.4.100".into(),
            ..Default::default()
        })
        .await);
    assert_eq!(
        (lb.address.as_str(), lb.vpc_id.as_str(), lb.network_type.as_str()),
        ("10.0.4.100", t.vpc_id.as_str(), "vpc")
    );
    assert_eq!(vswitch(&mut s.vpc(), &t.node_vsw).await.available_ip_address_count, free - 1);
    let g = ok(slb
        .create_v_server_group(pb::CreateVServerGroupRequest {
            region_id: REGION.into(),
            load_balancer_id: lb.load_balancer_id.clone(),
            backend_servers: ccm_backends(&[(&eni, &ip)], 80),
            ..Default::default()
        })
        .await)
    .v_server_group_id;
    ok(slb
        .create_load_balancer_udp_listener(pb::CreateLoadBalancerUdpListenerRequest {
            region_id: REGION.into(),
            load_balancer_id: lb.load_balancer_id.clone(),
            listener_port: Some(53),
            v_server_group_id: g,
            bandwidth: Some(-1),
            health_check_req: "ping".into(),
            health_check_exp: "pong".into(),
            ..Default::default()
        })
        .await);
    // An ENI may not take the load balancer's address.
    let taken = s
        .ecs()
        .create_network_interface(pb::CreateNetworkInterfaceRequest {
            region_id: REGION.into(),
            v_switch_id: t.node_vsw.clone(),
            security_group_ids: vec![t.sg_id.clone()],
            primary_ip_address: "10.0.4.100".into(),
            ..Default::default()
        })
        .await;
    assert_code(taken, "InvalidPrivateIpAddress.Duplicated");
    // Nor may the vSwitch go while the load balancer is in it.
    let busy = s
        .vpc()
        .delete_v_switch(pb::DeleteVSwitchRequest { region_id: REGION.into(), v_switch_id: t.node_vsw.clone() })
        .await;
    assert_code(busy, "DependencyViolation");

    let before = Snapshot::take(s.channel()).await;
    assert!(consistency_violations(&before).is_empty(), "{:?}", consistency_violations(&before));
    s.restart().await;
    let after = Snapshot::take(s.channel()).await;
    before.assert_same(&after, "a restart");
    let mut slb = s.clients.slb.clone();
    let udp = ok(slb
        .describe_load_balancer_udp_listener_attribute(pb::DescribeLoadBalancerUdpListenerAttributeRequest {
            region_id: REGION.into(),
            load_balancer_id: lb.load_balancer_id.clone(),
            listener_port: Some(53),
        })
        .await);
    assert_eq!((udp.health_check_req.as_str(), udp.health_check_exp.as_str()), ("ping", "pong"));
    assert_eq!((udp.health_check_connect_timeout, udp.health_check_interval, udp.status.as_str()), (10, 5, "stopped"));
}

#[tokio::test]
async fn listener_attributes_partial_updates_and_health_status() {
    let s = TestServer::start().await;
    let t = build_topology(s.channel()).await;
    let mut slb = s.clients.slb.clone();
    let (eni, ip) = pod(&s, &t).await;
    let lb = ok(slb
        .create_load_balancer(pb::CreateLoadBalancerRequest {
            region_id: REGION.into(),
            vpc_id: t.vpc_id.clone(),
            address: "8.210.162.178".into(),
            ..Default::default()
        })
        .await);
    assert_eq!(lb.address, "8.210.162.178", "the seed article's address");
    let lb = lb.load_balancer_id;
    let g = ok(slb
        .create_v_server_group(pb::CreateVServerGroupRequest {
            region_id: REGION.into(),
            load_balancer_id: lb.clone(),
            v_server_group_name: "web".into(),
            backend_servers: format!(r#"[{{"ServerId":"{eni}","ServerIp":"{ip}","Port":"80","Type":"eni"}}]"#),
        })
        .await)
    .v_server_group_id;
    ok(slb
        .create_load_balancer_tcp_listener(pb::CreateLoadBalancerTcpListenerRequest {
            region_id: REGION.into(),
            load_balancer_id: lb.clone(),
            listener_port: Some(80),
            backend_server_port: Some(80),
            bandwidth: Some(-1),
            health_check_type: "http".into(),
            health_check_u_r_i: "/healthz".into(),
            health_check_interval: Some(3),
            ..Default::default()
        })
        .await);
    let describe = |slb: &mut Slb| {
        let mut slb = slb.clone();
        let lb = lb.clone();
        async move {
            ok(slb
                .describe_load_balancer_tcp_listener_attribute(pb::DescribeLoadBalancerTcpListenerAttributeRequest {
                    region_id: REGION.into(),
                    load_balancer_id: lb,
                    listener_port: Some(80),
                })
                .await)
        }
    };
    let a = describe(&mut slb).await;
    assert_eq!((a.backend_server_port, a.v_server_group_id.as_str(), a.scheduler.as_str()), (Some(80), "", "wrr"));
    assert_eq!(
        (a.health_check.as_str(), a.health_check_type.as_str(), a.health_check_u_r_i.as_str()),
        ("on", "http", "/healthz")
    );
    assert_eq!((a.health_check_interval, a.health_check_connect_timeout, a.established_timeout), (3, 5, 900));
    assert_eq!((a.health_check_http_code.as_str(), a.health_check_method.as_str()), ("http_2xx", "head"));
    // Switch to the group and change one field; the rest stays.
    ok(slb
        .set_load_balancer_tcp_listener_attribute(pb::SetLoadBalancerTcpListenerAttributeRequest {
            region_id: REGION.into(),
            load_balancer_id: lb.clone(),
            listener_port: Some(80),
            v_server_group: "on".into(),
            v_server_group_id: g.clone(),
            persistence_timeout: Some(0),
            established_timeout: Some(60),
            ..Default::default()
        })
        .await);
    let a = describe(&mut slb).await;
    assert_eq!((a.backend_server_port, a.v_server_group_id.as_str(), a.established_timeout), (None, g.as_str(), 60));
    assert_eq!((a.health_check_type.as_str(), a.health_check_interval), ("http", 3));
    // A UDP listener on the same port, set and described.
    ok(slb
        .create_load_balancer_udp_listener(pb::CreateLoadBalancerUdpListenerRequest {
            region_id: REGION.into(),
            load_balancer_id: lb.clone(),
            listener_port: Some(80),
            v_server_group_id: g.clone(),
            bandwidth: Some(-1),
            ..Default::default()
        })
        .await);
    ok(slb
        .set_load_balancer_udp_listener_attribute(pb::SetLoadBalancerUdpListenerAttributeRequest {
            region_id: REGION.into(),
            load_balancer_id: lb.clone(),
            listener_port: Some(80),
            health_check_switch: "off".into(),
            scheduler: "sch".into(),
            ..Default::default()
        })
        .await);
    let u = ok(slb
        .describe_load_balancer_udp_listener_attribute(pb::DescribeLoadBalancerUdpListenerAttributeRequest {
            region_id: REGION.into(),
            load_balancer_id: lb.clone(),
            listener_port: Some(80),
        })
        .await);
    assert_eq!(
        (u.health_check.as_str(), u.scheduler.as_str(), u.v_server_group_id.as_str()),
        ("off", "sch", g.as_str())
    );
    // Two listeners on port 80: the protocol must be named.
    let ambiguous = slb
        .start_load_balancer_listener(pb::StartLoadBalancerListenerRequest {
            region_id: REGION.into(),
            load_balancer_id: lb.clone(),
            listener_port: Some(80),
            ..Default::default()
        })
        .await;
    assert_code(ambiguous, "TooManyListeners");
    for proto in ["tcp", "udp"] {
        ok(slb
            .start_load_balancer_listener(pb::StartLoadBalancerListenerRequest {
                region_id: REGION.into(),
                load_balancer_id: lb.clone(),
                listener_port: Some(80),
                listener_protocol: proto.into(),
            })
            .await);
    }
    // Without a data plane no backend has a known health.
    let h = ok(slb
        .describe_health_status(pb::DescribeHealthStatusRequest {
            region_id: REGION.into(),
            load_balancer_id: lb.clone(),
            ..Default::default()
        })
        .await)
    .backend_servers
    .unwrap()
    .backend_server;
    let rows: BTreeSet<(String, i32, String, String, i32)> =
        h.into_iter().map(|b| (b.protocol, b.listener_port, b.server_ip, b.server_health_status, b.port)).collect();
    assert_eq!(
        rows,
        [
            ("tcp".to_string(), 80, ip.clone(), "unavailable".to_string(), 80),
            ("udp".to_string(), 80, ip.clone(), "unavailable".to_string(), 80)
        ]
        .into_iter()
        .collect()
    );
    ok(slb
        .stop_load_balancer_listener(pb::StopLoadBalancerListenerRequest {
            region_id: REGION.into(),
            load_balancer_id: lb.clone(),
            listener_port: Some(80),
            listener_protocol: "udp".into(),
        })
        .await);
    let statuses: Vec<(String, String)> =
        listeners(&mut slb, &lb).await.into_iter().map(|l| (l.listener_protocol, l.status)).collect();
    assert_eq!(statuses, [("tcp".into(), "running".into()), ("udp".into(), "stopped".into())]);
    // Modify: one backend for another in one call.
    let m = ok(slb
        .modify_v_server_group_backend_servers(pb::ModifyVServerGroupBackendServersRequest {
            region_id: REGION.into(),
            v_server_group_id: g.clone(),
            old_backend_servers: format!(r#"[{{"ServerId":"{eni}","ServerIp":"{ip}","Port":80,"Type":"eni"}}]"#),
            new_backend_servers: format!(r#"[{{"ServerId":"{}","Port":30080}}]"#, t.instance_id),
        })
        .await);
    let servers = m.backend_servers.unwrap().backend_server;
    assert_eq!(servers.len(), 1);
    assert_eq!((servers[0].server_ip.as_str(), servers[0].port, servers[0].r#type.as_str()), (NODE_IP, 30080, "ecs"));
}

#[tokio::test]
async fn names_protection_and_tags() {
    let s = TestServer::start().await;
    let mut slb = s.clients.slb.clone();
    let lb = ok(slb
        .create_load_balancer(pb::CreateLoadBalancerRequest {
            region_id: REGION.into(),
            load_balancer_name: "web".into(),
            tag: vec![tag("env", "test")],
            ..Default::default()
        })
        .await)
    .load_balancer_id;
    ok(slb
        .set_load_balancer_name(pb::SetLoadBalancerNameRequest {
            region_id: REGION.into(),
            load_balancer_id: lb.clone(),
            load_balancer_name: "web2".into(),
        })
        .await);
    ok(slb
        .set_load_balancer_modification_protection(pb::SetLoadBalancerModificationProtectionRequest {
            region_id: REGION.into(),
            load_balancer_id: lb.clone(),
            modification_protection_status: "ConsoleProtection".into(),
            modification_protection_reason: "managed.by.ack".into(),
        })
        .await);
    ok(slb
        .tag_resources(pb::TagResourcesRequest {
            region_id: REGION.into(),
            resource_type: "instance".into(),
            resource_id: vec![lb.clone()],
            tag: vec![tag("kubernetes.do.not.delete", "web2"), tag("env", "prod")],
        })
        .await);
    ok(slb
        .untag_resources(pb::UntagResourcesRequest {
            region_id: REGION.into(),
            resource_type: "instance".into(),
            resource_id: vec![lb.clone()],
            tag_key: vec!["kubernetes.do.not.delete".into()],
            ..Default::default()
        })
        .await);
    let by_tag = ok(slb
        .list_tag_resources(pb::ListTagResourcesRequest {
            region_id: REGION.into(),
            resource_type: "instance".into(),
            tag: vec![tag("env", "prod")],
            ..Default::default()
        })
        .await)
    .tag_resources
    .unwrap()
    .tag_resource;
    assert_eq!(by_tag.len(), 1);
    assert_eq!(
        (by_tag[0].resource_id.as_str(), by_tag[0].resource_type.as_str(), by_tag[0].tag_key.as_str()),
        (lb.as_str(), "instance", "env")
    );
    let item = ok(slb
        .describe_load_balancers(pb::DescribeLoadBalancersRequest {
            region_id: REGION.into(),
            load_balancer_id: lb.clone(),
            ..Default::default()
        })
        .await)
    .load_balancers
    .unwrap()
    .load_balancer
    .remove(0);
    assert_eq!(
        (item.load_balancer_name.as_str(), item.modification_protection_reason.as_str()),
        ("web2", "managed.by.ack")
    );
    assert_eq!(item.tags.unwrap().tag.len(), 1);
}

#[tokio::test]
async fn refusals_carry_the_slb_codes_and_change_nothing() {
    let s = TestServer::start().await;
    let t = build_topology(s.channel()).await;
    let mut slb = s.clients.slb.clone();
    let (eni, ip) = pod(&s, &t).await;
    let lb = ok(slb
        .create_load_balancer(pb::CreateLoadBalancerRequest { region_id: REGION.into(), ..Default::default() })
        .await)
    .load_balancer_id;
    let g = ok(slb
        .create_v_server_group(pb::CreateVServerGroupRequest {
            region_id: REGION.into(),
            load_balancer_id: lb.clone(),
            backend_servers: ccm_backends(&[(&eni, &ip)], 80),
            ..Default::default()
        })
        .await)
    .v_server_group_id;
    let before = Snapshot::take(s.channel()).await;

    let cases: Vec<(Result<(), tonic::Status>, &str)> = vec![
        (
            slb.describe_load_balancer_attribute(pb::DescribeLoadBalancerAttributeRequest {
                region_id: REGION.into(),
                load_balancer_id: "lb-nope".into(),
            })
            .await
            .map(|_| ()),
            "InvalidLoadBalancerId.NotFound",
        ),
        (
            slb.create_load_balancer(pb::CreateLoadBalancerRequest {
                region_id: REGION.into(),
                address_type: "intranet".into(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
            "MissingParam.VSwitchId",
        ),
        (
            slb.create_load_balancer(pb::CreateLoadBalancerRequest {
                region_id: REGION.into(),
                v_switch_id: "vsw-nope".into(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
            "VSwitchNotExist",
        ),
        (
            slb.create_load_balancer(pb::CreateLoadBalancerRequest {
                region_id: "cn-beijing".into(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
            "InvalidRegionId.NotFound",
        ),
        (
            slb.describe_load_balancers(pb::DescribeLoadBalancersRequest {
                region_id: REGION.into(),
                tags: "not json".into(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
            "InvalidTag",
        ),
        (
            slb.add_v_server_group_backend_servers(pb::AddVServerGroupBackendServersRequest {
                region_id: REGION.into(),
                v_server_group_id: g.clone(),
                backend_servers: ccm_backends(&[("eni-nope", &ip)], 81),
            })
            .await
            .map(|_| ()),
            "ResourceNotFound.vServers",
        ),
        (
            slb.add_v_server_group_backend_servers(pb::AddVServerGroupBackendServersRequest {
                region_id: REGION.into(),
                v_server_group_id: g.clone(),
                backend_servers: r#"[{"ServerId":"i-x","Port":80,"Type":"eci"}]"#.into(),
            })
            .await
            .map(|_| ()),
            "BackendServer.InvalidType",
        ),
        (
            slb.add_v_server_group_backend_servers(pb::AddVServerGroupBackendServersRequest {
                region_id: REGION.into(),
                v_server_group_id: g.clone(),
                backend_servers: format!("[{}]", vec![r#"{"ServerId":"i-x","Port":1}"#; 41].join(",")),
            })
            .await
            .map(|_| ()),
            "InvalidParameter",
        ),
        (
            slb.add_v_server_group_backend_servers(pb::AddVServerGroupBackendServersRequest {
                region_id: REGION.into(),
                v_server_group_id: "rsp-nope".into(),
                backend_servers: ccm_backends(&[(&eni, &ip)], 81),
            })
            .await
            .map(|_| ()),
            "InvalidParameter",
        ),
        (
            slb.create_load_balancer_tcp_listener(pb::CreateLoadBalancerTcpListenerRequest {
                region_id: REGION.into(),
                load_balancer_id: lb.clone(),
                listener_port: Some(80),
                bandwidth: Some(-1),
                ..Default::default()
            })
            .await
            .map(|_| ()),
            "MissingParameter",
        ),
        (
            slb.create_load_balancer_tcp_listener(pb::CreateLoadBalancerTcpListenerRequest {
                region_id: REGION.into(),
                load_balancer_id: lb.clone(),
                listener_port: Some(80),
                bandwidth: Some(-1),
                v_server_group_id: "rsp-nope".into(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
            "ResourceNotFound.VServerGroup",
        ),
        (
            slb.create_load_balancer_tcp_listener(pb::CreateLoadBalancerTcpListenerRequest {
                region_id: REGION.into(),
                load_balancer_id: lb.clone(),
                listener_port: Some(80),
                bandwidth: Some(-1),
                v_server_group_id: g.clone(),
                health_check_interval: Some(0),
                ..Default::default()
            })
            .await
            .map(|_| ()),
            "InvalidParameter",
        ),
        (
            slb.start_load_balancer_listener(pb::StartLoadBalancerListenerRequest {
                region_id: REGION.into(),
                load_balancer_id: lb.clone(),
                listener_port: Some(80),
                ..Default::default()
            })
            .await
            .map(|_| ()),
            "ResourceNotFound.Listener",
        ),
        (
            slb.describe_load_balancer_listeners(pb::DescribeLoadBalancerListenersRequest {
                region_id: REGION.into(),
                max_results: Some(0),
                ..Default::default()
            })
            .await
            .map(|_| ()),
            "IllegalParam.MaxResults",
        ),
        (
            slb.tag_resources(pb::TagResourcesRequest {
                region_id: REGION.into(),
                resource_type: "instance".into(),
                resource_id: vec!["lb-nope".into()],
                tag: vec![tag("a", "b")],
            })
            .await
            .map(|_| ()),
            "ResourceNotExist",
        ),
        (
            slb.list_tag_resources(pb::ListTagResourcesRequest {
                region_id: REGION.into(),
                resource_type: "instance".into(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
            "MissingParam.TagOrResourceId",
        ),
        (
            slb.set_v_server_group_attribute(pb::SetVServerGroupAttributeRequest {
                region_id: REGION.into(),
                v_server_group_id: g.clone(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
            "MissingParameter",
        ),
        (
            slb.set_load_balancer_delete_protection(pb::SetLoadBalancerDeleteProtectionRequest {
                region_id: REGION.into(),
                load_balancer_id: lb.clone(),
                delete_protection: "yes".into(),
            })
            .await
            .map(|_| ()),
            "InvalidParameter",
        ),
    ];
    for (i, (result, code)) in cases.into_iter().enumerate() {
        let st = match result {
            Ok(()) => panic!("case {i} ({code}) succeeded"),
            Err(st) => st,
        };
        assert_eq!(code_of(&st), code, "case {i}: {st:?}");
        assert_eq!(domain_of(&st), "slb.aliyuncs.com", "case {i}");
    }
    Snapshot::take(s.channel()).await.assert_same(&before, "refused SLB calls");
}

#[tokio::test]
async fn responses_render_as_the_clouds_json() {
    let s = TestServer::start().await;
    let t = build_topology(s.channel()).await;
    let mut slb = s.clients.slb.clone();
    let (eni, ip) = pod(&s, &t).await;
    let lb = ok(slb
        .create_load_balancer(pb::CreateLoadBalancerRequest { region_id: REGION.into(), ..Default::default() })
        .await)
    .load_balancer_id;
    let g = ok(slb
        .create_v_server_group(pb::CreateVServerGroupRequest {
            region_id: REGION.into(),
            load_balancer_id: lb.clone(),
            backend_servers: ccm_backends(&[(&eni, &ip)], 80),
            ..Default::default()
        })
        .await);
    let j = enifab::codec::to_json(&g);
    assert_eq!(j["BackendServers"]["BackendServer"][0]["Port"], 80, "{j}");
    assert_eq!(j["BackendServers"]["BackendServer"][0]["Weight"], 100, "{j}");
    assert_eq!(j["BackendServers"]["BackendServer"][0]["Type"], "eni", "{j}");
    ok(slb
        .create_load_balancer_tcp_listener(pb::CreateLoadBalancerTcpListenerRequest {
            region_id: REGION.into(),
            load_balancer_id: lb.clone(),
            listener_port: Some(80),
            bandwidth: Some(-1),
            v_server_group_id: g.v_server_group_id.clone(),
            ..Default::default()
        })
        .await);
    let list = ok(slb
        .describe_load_balancer_listeners(pb::DescribeLoadBalancerListenersRequest {
            region_id: REGION.into(),
            load_balancer_id: vec![lb.clone()],
            ..Default::default()
        })
        .await);
    let j = enifab::codec::to_json(&list);
    let l = &j["Listeners"][0];
    assert!(j["Listeners"].is_array(), "a bare array: {j}");
    assert_eq!((&j["NextToken"], &j["TotalCount"], &j["MaxResults"]), (&"".into(), &1.into(), &20.into()), "{j}");
    assert_eq!(
        (&l["ListenerPort"], &l["ListenerProtocol"], &l["Bandwidth"]),
        (&80.into(), &"tcp".into(), &(-1).into())
    );
    assert!(l.get("BackendServerPort").is_none() && l.get("UDPListenerConfig").is_none(), "{l}");
    let c = &l["TCPListenerConfig"];
    assert_eq!(
        (&c["HealthCheckSwitch"], &c["HealthCheckInterval"], &c["ProxyProtocolV2Enabled"]),
        (&"on".into(), &2.into(), &"false".into())
    );
    assert!(c["HealthCheckURI"].is_string(), "{c}");
    let attr = ok(slb
        .describe_load_balancer_tcp_listener_attribute(pb::DescribeLoadBalancerTcpListenerAttributeRequest {
            region_id: REGION.into(),
            load_balancer_id: lb.clone(),
            listener_port: Some(80),
        })
        .await);
    let j = enifab::codec::to_json(&attr);
    assert_eq!((&j["ProxyProtocolV2Enabled"], &j["EstablishedTimeout"]), (&false.into(), &900.into()), "{j}");
    let lbs = ok(slb
        .describe_load_balancers(pb::DescribeLoadBalancersRequest { region_id: REGION.into(), ..Default::default() })
        .await);
    let j = enifab::codec::to_json(&lbs);
    let item = &j["LoadBalancers"]["LoadBalancer"][0];
    assert!(item["CreateTimeStamp"].is_i64() && item["Bandwidth"] == -1, "{item}");
    assert!(item["Tags"]["Tag"].is_array() && item["AddressIPVersion"] == "ipv4", "{item}");
    assert_eq!((&j["PageSize"], &j["PageNumber"], &j["TotalCount"]), (&10.into(), &1.into(), &1.into()));
    let groups = ok(slb
        .describe_v_server_groups(pb::DescribeVServerGroupsRequest {
            region_id: REGION.into(),
            load_balancer_id: lb.clone(),
            ..Default::default()
        })
        .await);
    let j = enifab::codec::to_json(&groups);
    assert!(j["VServerGroups"]["VServerGroup"][0]["ServerCount"].is_i64(), "{j}");
}

#[tokio::test]
async fn reflection_describes_exactly_the_covered_slb_methods() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let s = TestServer::start().await;
    let mut client = ServerReflectionClient::new(s.channel());
    let mut stream = ok(client
        .server_reflection_info(futures::stream::iter(vec![ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol("enifab.v1.Slb".into())),
        }]))
        .await);
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        stream.message().await.expect("an answer").expect("one message").message_response
    else {
        panic!("no descriptor for enifab.v1.Slb");
    };
    let methods: BTreeSet<String> = files
        .file_descriptor_proto
        .iter()
        .map(|b| prost_types::FileDescriptorProto::decode(b.as_slice()).expect("a file descriptor"))
        .flat_map(|f| f.service)
        .filter(|s| s.name() == "Slb")
        .flat_map(|s| s.method)
        .map(|m| m.name().to_string())
        .collect();
    let covered: BTreeSet<String> = COVERED.iter().map(|m| m.to_string()).collect();
    assert_eq!(methods, covered);
}
