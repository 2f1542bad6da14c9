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

/// Nodes pinned at consecutive addresses, the first of them listed after a node that lets the
/// vSwitch choose, every one with a trunk beside it, and a pod and a load balancer pinned at the
/// addresses that come next: before apply claimed pinned addresses first, the first trunk (or
/// the unpinned node) took the next node's address, and the vSwitch's next choices the pod's.
const CONSECUTIVE: &str = "region: cn-hongkong
vpcs:
  - name: v
    cidr: 10.0.0.0/8
    vswitches:
      - { name: s, zone: cn-hongkong-b, cidr: 10.0.4.0/24 }
securityGroups:
  - { name: g, vpc: v }
instances:
  - { name: free, type: ecs.g7.xlarge, vswitch: s, securityGroups: [g], trunk: { vswitch: s, securityGroups: [g] } }
  - { name: n3, type: ecs.g7.xlarge, vswitch: s, privateIp: 10.0.4.3, securityGroups: [g],
      trunk: { vswitch: s, securityGroups: [g] } }
  - { name: n4, type: ecs.g7.xlarge, vswitch: s, privateIp: 10.0.4.4, securityGroups: [g],
      trunk: { vswitch: s, securityGroups: [g] } }
  - { name: n5, type: ecs.g7.xlarge, vswitch: s, privateIp: 10.0.4.5, securityGroups: [g],
      trunk: { vswitch: s, securityGroups: [g] } }
pods:
  - { name: p6, node: n3, ip: 10.0.4.6 }
loadBalancers:
  - { name: inner, vpc: v, addressType: intranet, vswitch: s, address: 10.0.4.7 }
";

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn nodes_that_pin_consecutive_addresses_apply_and_apply_again_with_nothing_created() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "consecutive.yaml", CONSECUTIVE);
    let first = apply_file(&s.addr().to_string(), &file).await.expect("first apply");
    assert_eq!(first.created, 1 + 1 + 1 + 4 + 4 + 1, "VPC, vSwitch, group, 4 instances, 4 trunks, the LB");
    assert_eq!(first.load_balancers["inner"].1, "10.0.4.7");
    let once = Snapshot::take(s.channel()).await;
    let held: Vec<String> = once.enis.iter().flat_map(enifab_tests::ips_of).collect();
    assert!(!held.contains(&"10.0.4.6".to_string()), "the pod's address was taken: {held:?}");
    for (name, ip) in [("n3", "10.0.4.3"), ("n4", "10.0.4.4"), ("n5", "10.0.4.5")] {
        let i = once.instances.iter().find(|i| i.instance_name == name).expect(name);
        let got = &i.vpc_attributes.as_ref().unwrap().private_ip_address.as_ref().unwrap().ip_address;
        assert_eq!(got, &[ip.to_string()], "{name}");
    }
    assert_eq!(once.enis.iter().filter(|e| e.r#type == "Trunk" && e.status == "InUse").count(), 4);
    let second = apply_file(&s.addr().to_string(), &file).await.expect("second apply");
    assert_eq!(second.created, 0);
    assert_eq!(second.trunks, first.trunks);
    Snapshot::take(s.channel()).await.assert_same(&once, "applying again");
    // The pod's member ENI can have its address, as the lab will ask for it.
    let mut ecs = s.ecs();
    enifab_tests::ok(
        ecs.create_network_interface(enifab_tests::v1::CreateNetworkInterfaceRequest {
            v_switch_id: first.vswitches["s"].clone(),
            security_group_ids: vec![first.security_groups["g"].clone()],
            primary_ip_address: "10.0.4.6".into(),
            ..Default::default()
        })
        .await,
    );
}

#[tokio::test]
async fn apply_waits_for_its_trunks_to_be_in_use_unless_told_not_to() {
    use enifab::apply::{Wait, apply_file_with};
    let delays = enifab_model::TransitionDelays { attach_ms: 600, detach_ms: 0, delete_ms: 0, start_stop_ms: 0 };
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "consecutive.yaml", CONSECUTIVE);

    let s = TestServer::start_with_delays(delays).await;
    let applied = apply_file_with(&s.addr().to_string(), &file, Wait::Settle).await.expect("apply");
    let snap = Snapshot::take(s.channel()).await;
    assert_eq!(applied.trunks.len(), 4);
    for trunk in applied.trunks.values() {
        let e = snap.enis.iter().find(|e| &e.network_interface_id == trunk).unwrap();
        assert_eq!(e.status, "InUse", "{trunk} right after apply returned");
    }
    assert!(snap.instances.iter().all(|i| i.status == "Running"));
    // What the next command of a script does: put a member on a trunk apply just made.
    let member = |s: &TestServer, applied: &enifab::apply::Applied| {
        let mut ecs = s.ecs();
        let (vsw, sg) = (applied.vswitches["s"].clone(), applied.security_groups["g"].clone());
        let (instance, trunk) = (applied.instances["n3"].clone(), applied.trunks["n3"].clone());
        async move {
            let eni = ecs
                .create_network_interface(enifab_tests::v1::CreateNetworkInterfaceRequest {
                    v_switch_id: vsw,
                    security_group_ids: vec![sg],
                    ..Default::default()
                })
                .await?
                .into_inner()
                .network_interface_id;
            ecs.attach_network_interface(enifab_tests::v1::AttachNetworkInterfaceRequest {
                instance_id: instance,
                network_interface_id: eni,
                trunk_network_instance_id: trunk,
                ..Default::default()
            })
            .await
            .map(|_| ())
        }
    };
    member(&s, &applied).await.expect("a member attaches to the trunk apply returned");

    let s = TestServer::start_with_delays(delays).await;
    let applied = apply_file_with(&s.addr().to_string(), &file, Wait::NoWait).await.expect("apply --no-wait");
    let snap = Snapshot::take(s.channel()).await;
    for trunk in applied.trunks.values() {
        let e = snap.enis.iter().find(|e| &e.network_interface_id == trunk).unwrap();
        assert_eq!(e.status, "Attaching", "{trunk}: --no-wait returns with the cloud's asynchrony");
    }
    let refused = member(&s, &applied).await.expect_err("the trunk is still attaching");
    assert_eq!(enifab_tests::code_of(&refused), "InvalidOperation.InvalidEniState", "{refused:?}");
}

/// A file every client-side check accepts, which the server would accept too; the table below
/// breaks it in ways only the server notices.
const SOUND: &str = "region: cn-hongkong
instanceTypes:
  - { id: ecs.lab.tiny, eniQuantity: 2, eniPrivateIpAddressQuantity: 2, eniTotalQuantity: 2 }
vpcs:
  - name: v
    cidr: 10.0.0.0/8
    vswitches:
      - { name: s, zone: cn-hongkong-b, cidr: 10.0.4.0/24 }
  - name: w
    cidr: 172.16.0.0/12
    vswitches:
      - { name: t, zone: cn-hongkong-b, cidr: 172.16.1.0/24 }
securityGroups:
  - name: g
    vpc: v
    ingress: [{ protocol: ALL, peer: 10.0.0.0/8 }, { protocol: TCP, ports: 80/80, peerGroup: g }]
  - { name: h, vpc: w }
instances:
  - { name: n1, type: ecs.g7.xlarge, vswitch: s, privateIp: 10.0.4.22, securityGroups: [g],
      trunk: { vswitch: s, securityGroups: [g] } }
  - { name: n2, type: ecs.g7.xlarge, vswitch: s, privateIp: 10.0.4.23, securityGroups: [g],
      trunk: { vswitch: s, securityGroups: [g] } }
loadBalancers:
  - { name: inner, vpc: v, addressType: intranet, vswitch: s, address: 10.0.4.100 }
";

#[tokio::test]
async fn a_file_only_the_server_can_refuse_creates_nothing_and_names_the_line() {
    // (what is wrong, replace this, by this, the value the error must point at, its code)
    let table: &[(&str, &str, &str, &str, &str)] = &[
        (
            "unknown instance type",
            "type: ecs.g7.xlarge, vswitch: s, privateIp: 10.0.4.23",
            "type: ecs.nope.large, vswitch: s, privateIp: 10.0.4.23",
            "ecs.nope.large",
            "InvalidInstanceType.NotFound",
        ),
        (
            "type without trunks",
            "type: ecs.g7.xlarge, vswitch: s, privateIp: 10.0.4.23",
            "type: ecs.g6.large, vswitch: s, privateIp: 10.0.4.23",
            "ecs.g6.large",
            "",
        ),
        ("gateway address", "privateIp: 10.0.4.23", "privateIp: 10.0.4.253", "10.0.4.253", ""),
        ("network address", "privateIp: 10.0.4.23", "privateIp: 10.0.4.0", "10.0.4.0,", ""),
        (
            "duplicated address",
            "privateIp: 10.0.4.23",
            "privateIp: 10.0.4.22",
            "10.0.4.22, securityGroups: [g],\n      trunk: { vswitch: s, securityGroups: [g] } }\nloadB",
            "Duplicated",
        ),
        (
            "bad zone",
            "zone: cn-hongkong-b, cidr: 172.16.1.0/24",
            "zone: cn-hongkong-z, cidr: 172.16.1.0/24",
            "cn-hongkong-z",
            "InvalidZoneId.NotFound",
        ),
        ("/30 vSwitch", "cidr: 172.16.1.0/24", "cidr: 172.16.1.0/30", "172.16.1.0/30", ""),
        ("peer group in another VPC", "peerGroup: g", "peerGroup: h", "h }]", ""),
        (
            "trunk vSwitch in another VPC",
            "privateIp: 10.0.4.23, securityGroups: [g],\n      trunk: { vswitch: s",
            "privateIp: 10.0.4.23, securityGroups: [g],\n      trunk: { vswitch: t",
            "t, securityGroups: [g] } }\nloadB",
            "",
        ),
        (
            "instance group in another VPC",
            "privateIp: 10.0.4.23, securityGroups: [g]",
            "privateIp: 10.0.4.23, securityGroups: [h]",
            "h],",
            "",
        ),
        (
            "trunk group in another VPC",
            "trunk: { vswitch: s, securityGroups: [g] } }\nloadB",
            "trunk: { vswitch: s, securityGroups: [h] } }\nloadB",
            "h] } }\nloadB",
            "",
        ),
        ("load balancer on a reserved address", "address: 10.0.4.100", "address: 10.0.4.255", "10.0.4.255", ""),
        ("load balancer on a node's address", "address: 10.0.4.100", "address: 10.0.4.22", "10.0.4.22 }", ""),
        ("a custom type named as a built-in one", "id: ecs.lab.tiny", "id: ecs.g7.xlarge", "ecs.g7.xlarge,", ""),
        (
            "instance type with no ENI",
            "eniQuantity: 2, eniPrivateIpAddressQuantity: 2, eniTotalQuantity: 2",
            "eniQuantity: 0, eniPrivateIpAddressQuantity: 0, eniTotalQuantity: 0",
            "ecs.lab.tiny",
            "",
        ),
    ];
    let s = TestServer::start().await;
    let before = Snapshot::take(s.channel()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (i, (what, from, to, at, code)) in table.iter().enumerate() {
        assert!(SOUND.contains(from), "{what}: the sound file has no {from:?}");
        let text = SOUND.replacen(from, to, 1);
        let name = format!("broken-{i}.yaml");
        let file = write(&dir, &name, &text);
        let offset = text.find(at).unwrap_or_else(|| panic!("{what}: {at:?} is not in the file"));
        let line = text[..offset].matches('\n').count() + 1;
        let column = offset - text[..offset].rfind('\n').map_or(0, |n| n + 1) + 1;
        let err = match apply_file(&s.addr().to_string(), &file).await {
            Ok(_) => {
                failures.push(format!("{what}: applied"));
                continue;
            }
            Err(e) => format!("{e:#}"),
        };
        let place = format!("{name}:{line}:{column}: ");
        if !err.contains(&place) || !err.contains(code) || err.contains("problem(s) in the topology") {
            failures.push(format!("{what}: wanted {place}…{code}, got {err}"));
        }
        let after = Snapshot::take(s.channel()).await;
        if let Some(diff) = before.diff(&after) {
            failures.push(format!("{what}: created something: {diff}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The sound file itself applies: the table's errors are the edits', not the base's.
    let file = write(&dir, "sound.yaml", SOUND);
    apply_file(&s.addr().to_string(), &file).await.expect("the sound file");
}

#[tokio::test]
async fn a_dry_run_changes_only_its_copy_and_a_call_naming_a_closed_one_is_refused() {
    use enifab::cli::Clients;
    use enifab_tests::v1 as pb;
    let s = TestServer::start().await;
    let mut c = Clients::new(s.channel());
    let before = Snapshot::take(s.channel()).await;
    let id = c.emulator.begin_dry_run(pb::BeginDryRunRequest {}).await.unwrap().into_inner().dry_run_id;
    let mut dry = c.in_dry_run(&id).unwrap();
    let create =
        || pb::CreateVpcRequest { cidr_block: "10.0.0.0/8".into(), vpc_name: "v".into(), ..Default::default() };
    let vpc = dry.vpc.create_vpc(create()).await.expect("created in the copy").into_inner().vpc_id;
    let seen = dry.vpc.describe_vpcs(pb::DescribeVpcsRequest::default()).await.unwrap().into_inner();
    assert_eq!(seen.vpcs.unwrap().vpc[0].vpc_id, vpc, "the copy keeps what its calls made");
    Snapshot::take(s.channel()).await.assert_same(&before, "a dry run");
    // What lives beside the model has no copy: refused, not done for real.
    let fault = pb::InjectFaultRequest { target_action: "DescribeVpcs".into(), code: "Throttling".into(), count: None };
    dry.emulator.inject_fault(fault).await.expect_err("no faults from a dry run");
    c.vpc.describe_vpcs(pb::DescribeVpcsRequest::default()).await.expect("no fault armed");
    c.emulator.end_dry_run(pb::EndDryRunRequest { dry_run_id: id }).await.unwrap();
    let refused = dry.vpc.create_vpc(create()).await.expect_err("the dry run is closed");
    assert!(refused.message().contains("no dry run"), "{refused:?}");
    Snapshot::take(s.channel()).await.assert_same(&before, "a call naming a closed dry run");
}

const DUAL_STACK: &str = "region: cn-hongkong
vpcs:
  - name: v
    cidr: 10.0.0.0/8
    enableIpv6: true
    vswitches:
      - { name: nodes, zone: cn-hongkong-b, cidr: 10.0.4.0/24 }
      - { name: pods, zone: cn-hongkong-b, cidr: 10.0.8.0/24, ipv6CidrBlock: 8 }
securityGroups:
  - name: web
    vpc: v
    ingress:
      - { protocol: tcp, ports: 80/80, peer: \"2408:4005:3000::/48\" }
      - { protocol: icmpv6, peer: \"::/0\" }
      - { protocol: tcp, ports: 80/80, peer: 10.0.0.0/8 }
";

/// A dual-stack file: the VPC's /56, the pods' /64 by its number, rules with IPv6 peers (and
/// ICMPv6) described back as the file says, and a second apply that changes nothing.
#[tokio::test]
async fn a_dual_stack_file_applies_and_applies_again_with_nothing_created() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "dual.yaml", DUAL_STACK);
    let first = apply_file(&s.addr().to_string(), &file).await.expect("first apply");
    assert_eq!(first.created, 1 + 2 + 1);
    let once = Snapshot::take(s.channel()).await;
    let vpc = &once.vpcs[0];
    assert!(vpc.enabled_ipv6 && vpc.ipv6_cidr_block.ends_with("::/56"), "{vpc:?}");
    let pods = once.vswitches.iter().find(|v| v.v_switch_name == "pods").unwrap();
    let nodes = once.vswitches.iter().find(|v| v.v_switch_name == "nodes").unwrap();
    let base: std::net::Ipv6Addr = vpc.ipv6_cidr_block.trim_end_matches("/56").parse().unwrap();
    assert_eq!(pods.ipv6_cidr_block, format!("{}/64", std::net::Ipv6Addr::from(u128::from(base) | 8 << 64)));
    assert!(nodes.ipv6_cidr_block.is_empty() && !nodes.enabled_ipv6);
    let rules = &once.security_group_attributes[0].permissions.as_ref().unwrap().permission;
    let mut peers: Vec<(String, String, String)> = rules
        .iter()
        .map(|r| (r.ip_protocol.clone(), r.source_cidr_ip.clone(), r.ipv6_source_cidr_ip.clone()))
        .collect();
    peers.sort();
    assert_eq!(
        peers,
        [
            ("ICMPv6".to_string(), String::new(), "::/0".to_string()),
            ("TCP".to_string(), String::new(), "2408:4005:3000::/48".to_string()),
            ("TCP".to_string(), "10.0.0.0/8".to_string(), String::new()),
        ]
    );
    let second = apply_file(&s.addr().to_string(), &file).await.expect("second apply");
    assert_eq!(second.created, 0);
    Snapshot::take(s.channel()).await.assert_same(&once, "applying again");

    // A /64 number on a vSwitch of a VPC without IPv6 is refused before anything is made.
    let bad = write(&dir, "bad.yaml", &DUAL_STACK.replace("    enableIpv6: true\n", ""));
    let err = apply_file(&s.addr().to_string(), &bad).await.unwrap_err().to_string();
    let line =
        DUAL_STACK.replace("    enableIpv6: true\n", "").lines().position(|l| l.contains("ipv6CidrBlock")).unwrap() + 1;
    assert!(err.contains(&format!("bad.yaml:{line}:")) && err.contains("enableIpv6"), "{err}");
}

/// Nodes with `ipv6: true` beside a pod that pins the /64's first free address.
const DUAL_NODES: &str = "region: cn-hongkong
vpcs:
  - name: v
    cidr: 10.0.0.0/8
    enableIpv6: true
    ipv6CidrBlock: 2408:4005:3000::/56
    vswitches:
      - { name: s, zone: cn-hongkong-b, cidr: 10.0.4.0/24, ipv6CidrBlock: 4 }
securityGroups:
  - { name: g, vpc: v, ingress: [{ protocol: ALL, peer: \"2408:4005:3000:4::/64\" }] }
instances:
  - { name: n1, type: ecs.g7.xlarge, vswitch: s, privateIp: 10.0.4.22, ipv6: true, securityGroups: [g],
      trunk: { vswitch: s, securityGroups: [g] } }
  - { name: n2, type: ecs.g7.xlarge, vswitch: s, privateIp: 10.0.4.20, ipv6: true, securityGroups: [g] }
pods:
  - { name: p1, node: n1, ipStack: dual, ipv6: \"2408:4005:3000:4::1\" }
";

/// `ipv6: true` gives each node's primary ENI one IPv6 address with AssignIpv6Addresses, kept
/// off the address a pod pins (which its member ENI can then take); applying again assigns
/// nothing. A /56 another VPC holds, or one that differs from the existing VPC's, is refused at
/// the file's line, with nothing made.
#[tokio::test]
async fn nodes_with_ipv6_get_one_address_once_and_keep_off_pinned_ones() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "dual-nodes.yaml", DUAL_NODES);
    let first = apply_file(&s.addr().to_string(), &file).await.expect("first apply");
    assert_eq!(first.created, 1 + 1 + 1 + 2 + 1 + 2, "VPC, vSwitch, group, 2 instances, a trunk, 2 IPv6 addresses");
    let mut got: Vec<(&str, &str)> = first.ipv6.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    got.sort();
    assert_eq!(got, [("n1", "2408:4005:3000:4::2"), ("n2", "2408:4005:3000:4::3")], "::1 is the pod's");
    let once = Snapshot::take(s.channel()).await;
    for (name, ip6) in &first.ipv6 {
        let id = &first.instances[name];
        let primary = once.enis.iter().find(|e| e.instance_id == *id && e.r#type == "Primary").expect("a primary ENI");
        let held: Vec<&str> =
            primary.ipv6_sets.as_ref().unwrap().ipv6_set.iter().map(|s| s.ipv6_address.as_str()).collect();
        assert_eq!(held, [ip6.as_str()], "{name}");
    }
    let second = apply_file(&s.addr().to_string(), &file).await.expect("second apply");
    assert_eq!(second.created, 0);
    assert_eq!(second.ipv6, first.ipv6);
    Snapshot::take(s.channel()).await.assert_same(&once, "applying again");
    // The pod's member ENI can have its pinned address, as the CNI will ask for it.
    let mut ecs = s.ecs();
    enifab_tests::ok(
        ecs.create_network_interface(enifab_tests::v1::CreateNetworkInterfaceRequest {
            v_switch_id: first.vswitches["s"].clone(),
            security_group_ids: vec![first.security_groups["g"].clone()],
            ipv6_address: vec!["2408:4005:3000:4::1".into()],
            ..Default::default()
        })
        .await,
    );
    let before = Snapshot::take(s.channel()).await;

    // Another VPC that names the same /56: the server refuses it in the dry run.
    let other = DUAL_NODES
        .replace("name: v\n", "name: w\n")
        .replace("vpc: v,", "vpc: w,")
        .replace("n1", "m1")
        .replace("n2", "m2");
    let bad = write(&dir, "taken.yaml", &other);
    let err = apply_file(&s.addr().to_string(), &bad).await.unwrap_err().to_string();
    let line = other.lines().position(|l| l.contains("ipv6CidrBlock: 2408")).unwrap() + 1;
    assert!(err.contains(&format!("taken.yaml:{line}:")) && err.contains("Overlapped"), "{err}");
    Snapshot::take(s.channel()).await.assert_same(&before, "a refused /56");
    // The existing VPC with another /56 in the file.
    let moved = DUAL_NODES.replace("2408:4005:3000:", "2408:4005:3001:");
    let bad = write(&dir, "moved.yaml", &moved);
    let err = apply_file(&s.addr().to_string(), &bad).await.unwrap_err().to_string();
    assert!(err.contains(&format!("moved.yaml:{line}:")) && err.contains("exists with the IPv6 block"), "{err}");
    Snapshot::take(s.channel()).await.assert_same(&before, "a VPC the file describes otherwise");
}
