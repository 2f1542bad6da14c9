//! `enifab apply`: the SOP example twice gives the same state; a broken file is refused with a
//! located error and creates nothing.

use std::path::PathBuf;

use enifab::apply::apply_file;
use enifab_tests::{Snapshot, TestServer};

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/terway-trunk-sop").join(name)
}

#[tokio::test]
async fn applying_the_sop_example_twice_changes_nothing_the_second_time() {
    let s = TestServer::start().await;
    let endpoint = s.addr().to_string();
    let first = apply_file(&endpoint, &example("cloud.yaml")).await.expect("first apply");
    assert_eq!(first.created, 12, "a VPC, 2 vSwitches, 3 groups, 3 instances and their trunks");
    let after_first = Snapshot::take(s.channel()).await;
    let second = apply_file(&endpoint, &example("cloud.yaml")).await.expect("second apply");
    assert_eq!(second.created, 0);
    assert_eq!(second.instances, first.instances);
    assert_eq!(second.trunks, first.trunks);
    assert_eq!(Snapshot::take(s.channel()).await, after_first, "the second apply changed the state");
    // The lab topologies are supersets of the cloud file: applying them adds nothing either.
    let third = apply_file(&endpoint, &example("topology.yaml")).await.expect("lab topology");
    assert_eq!(third.created, 0);
    assert_eq!(Snapshot::take(s.channel()).await, after_first);

    let nodes: Vec<&String> = after_first.instances.iter().map(|i| &i.instance_name).collect();
    for name in ["cn-hongkong.10.0.4.22", "cn-hongkong.10.0.4.20", "cn-hongkong.10.0.4.244"] {
        assert!(nodes.contains(&&name.to_string()), "{name} missing: {nodes:?}");
    }
    let trunks = after_first.enis.iter().filter(|e| e.r#type == "Trunk" && e.status == "InUse").count();
    assert_eq!(trunks, 3);
}

#[tokio::test]
async fn a_broken_file_is_located_and_creates_nothing() {
    let s = TestServer::start().await;
    let before = Snapshot::take(s.channel()).await;
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(example("cloud.yaml")).unwrap().replacen(
        "vswitch: vsw-hk-b",
        "vswitch: vsw-nowhere",
        1,
    );
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, &text).unwrap();
    let line = text.lines().position(|l| l.contains("vsw-nowhere")).unwrap() + 1;
    let err = apply_file(&s.addr().to_string(), &bad).await.unwrap_err().to_string();
    assert!(err.contains(&format!("bad.yaml:{line}:")) && err.contains("no vswitch named \"vsw-nowhere\""), "{err}");
    assert_eq!(Snapshot::take(s.channel()).await, before);
}

const WITH_LOAD_BALANCERS: &str = "region: cn-hongkong
vpcs:
  - name: v
    cidr: 10.0.0.0/8
    vswitches:
      - { name: s, zone: cn-hongkong-b, cidr: 10.0.4.0/24 }
securityGroups:
  - { name: g, vpc: v, ingress: [{ protocol: ALL, peer: 10.0.0.0/8 }] }
instances:
  - { name: n1, type: ecs.g7.xlarge, vswitch: s, privateIp: 10.0.4.22, securityGroups: [g],
      trunk: { vswitch: s, securityGroups: [g] } }
pods:
  - { name: web-1, node: n1, ip: 10.0.4.30 }
loadBalancers:
  - name: nginx-slb
    vpc: v
    addressType: internet
    address: 8.210.162.178
    listeners:
      - { protocol: tcp, port: 80, scheduler: wrr, backends: [{ pod: web-1, port: 80, weight: 100 }],
          healthCheck: { type: tcp, interval: 2 } }
  - name: inner
    vpc: v
    addressType: intranet
    vswitch: s
    listeners:
      - { protocol: tcp, port: 8080, backends: [{ instance: n1, port: 30080 }, { ip: 10.0.4.60, port: 80, weight: 10 }] }
      - { protocol: udp, port: 53, backends: [{ instance: n1, port: 53 }], healthCheck: { request: ping, expect: pong } }
";

#[tokio::test]
async fn load_balancers_apply_idempotently_and_pod_backends_wait_for_their_pods() {
    use enifab::apply::{apply, apply_load_balancers, delete_load_balancers};
    use enifab::cli::Clients;
    use enifab::topology::Topology;
    use enifab_tests::{consistency_violations, ok, v1 as pb};

    let s = TestServer::start().await;
    let topo = Topology::parse("lb.yaml", WITH_LOAD_BALANCERS).unwrap();
    let mut c = Clients::new(s.channel());
    let mut applied = apply(&mut c, &topo, &mut |_| {}).await.expect("first apply");
    assert_eq!(applied.created, 6, "VPC, vSwitch, group, instance, trunk and the intranet load balancer");
    assert!(!applied.load_balancers.contains_key("nginx-slb"), "it waits for its pod");
    let (inner, inner_ip) = applied.load_balancers["inner"].clone();
    assert!(inner_ip.starts_with("10.0.4."), "{inner_ip}");
    let once = Snapshot::take(s.channel()).await;
    assert!(consistency_violations(&once).is_empty(), "{:?}", consistency_violations(&once));
    let inner_listeners: Vec<(String, i32, String)> = once
        .listeners
        .iter()
        .filter(|l| l.load_balancer_id == inner)
        .map(|l| (l.listener_protocol.clone(), l.listener_port, l.status.clone()))
        .collect();
    assert_eq!(inner_listeners, [("tcp".into(), 8080, "running".into()), ("udp".into(), 53, "running".into())]);
    let backends: Vec<(String, i32, i32, String)> = once
        .vserver_groups
        .iter()
        .find(|g| g.v_server_group_name == "enifab/tcp/8080")
        .expect("the listener's group")
        .backend_servers
        .clone()
        .unwrap()
        .backend_server
        .into_iter()
        .map(|b| (b.server_ip, b.port, b.weight, b.r#type))
        .collect();
    assert_eq!(backends, [("10.0.4.22".into(), 30080, 100, "ecs".into()), ("10.0.4.60".into(), 80, 10, "ip".into())]);
    let again = apply(&mut c, &topo, &mut |_| {}).await.expect("second apply");
    assert_eq!(again.created, 0);
    Snapshot::take(s.channel()).await.assert_same(&once, "applying again");

    // The lab made the pod: its member ENI at 10.0.4.30 on the node's trunk.
    let mut ecs = s.ecs();
    let member = ok(ecs
        .create_network_interface(pb::CreateNetworkInterfaceRequest {
            v_switch_id: applied.vswitches["s"].clone(),
            security_group_ids: vec![applied.security_groups["g"].clone()],
            primary_ip_address: "10.0.4.30".into(),
            ..Default::default()
        })
        .await)
    .network_interface_id;
    ok(ecs
        .attach_network_interface(pb::AttachNetworkInterfaceRequest {
            instance_id: applied.instances["n1"].clone(),
            network_interface_id: member.clone(),
            trunk_network_instance_id: applied.trunks["n1"].clone(),
            ..Default::default()
        })
        .await);
    let pods = |name: &str| (name == "web-1").then(|| "10.0.4.30".parse().unwrap());
    apply_load_balancers(&mut c, &topo, &mut applied, &pods, &mut |_| {}).await.expect("with the pod");
    let (nginx, address) = applied.load_balancers["nginx-slb"].clone();
    assert_eq!(address, "8.210.162.178", "the seed article's address");
    let with_pod = Snapshot::take(s.channel()).await;
    let l = with_pod.listeners.iter().find(|l| l.load_balancer_id == nginx).expect("a listener");
    assert_eq!((l.listener_port, l.status.as_str(), l.scheduler.as_str()), (80, "running", "wrr"));
    let g = with_pod.vserver_groups.iter().find(|g| g.v_server_group_id == l.v_server_group_id).unwrap();
    let b = &g.backend_servers.as_ref().unwrap().backend_server[0];
    assert_eq!((b.server_id.as_str(), b.server_ip.as_str(), b.r#type.as_str()), (member.as_str(), "10.0.4.30", "eni"));
    let created = applied.created;
    apply_load_balancers(&mut c, &topo, &mut applied, &pods, &mut |_| {}).await.expect("again with the pod");
    assert_eq!(applied.created, created);
    Snapshot::take(s.channel()).await.assert_same(&with_pod, "applying the load balancers again");

    delete_load_balancers(&mut c, &topo, &mut |_| {}).await.unwrap();
    assert!(Snapshot::take(s.channel()).await.load_balancers.is_empty());
}
