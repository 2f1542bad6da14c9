//! Dual-stack nodes end to end (root): an emulator in this process, two instances on a vSwitch
//! with an IPv6 /64 whose primary ENIs get IPv6 addresses through the API, and two in-process
//! shims. Each node's eth0 gets its IPv6 address and the /64's gateway as default route, as
//! ECS's DHCPv6 gives them (IPv6 stays off on NICs without any); then real kernels talk over IPv6
//! through the fabric: neighbour discovery against the fabric, TCP both ways, and the security
//! group refusing a port no rule opens.
//!
//! Then dual-stack pods: the real `enifab-cni` wires a pod on each node, one on each datapath,
//! with `ipStack: dual`; the pods reach each other over IPv6 through their member ENIs (the
//! veth pod's IPv6 frames tagged by source address on the trunk, the vlan pod's by its
//! sub-interface), the group deciding both ways, and CHECK and DEL cover the IPv6 side.

mod support;

use std::io::{Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use enifab_proto::v1 as pb;
use enifab_proto::v1::ecs_client::EcsClient;
use enifab_proto::v1::vpc_client::VpcClient;
use enifab_shim::Shim;
use enifab_shim::driver::netns::run_in;
use serde_json::json;
use support::{Emu, Netns, REGION, cni, dual_stack_instance, dual_stack_network, eventually, privileged, shim_options};
use tonic::transport::Channel;

/// The dual-stack network (see `support::dual_stack_network`) with a group admitting TCP 8080
/// from the VPC's /56 (and nothing else between its members): (vSwitch, group).
async fn network(ecs: &mut EcsClient<Channel>, vpc: &mut VpcClient<Channel>) -> (String, String) {
    let (vsw, sg, block) = dual_stack_network(ecs, vpc).await;
    ecs.authorize_security_group(pb::AuthorizeSecurityGroupRequest {
        region_id: REGION.into(),
        security_group_id: sg.clone(),
        permissions: vec![pb::Permission {
            ip_protocol: "tcp".into(),
            port_range: "8080/8080".into(),
            ipv6_source_cidr_ip: block,
            ..Default::default()
        }],
        ..Default::default()
    })
    .await
    .expect("AuthorizeSecurityGroup");
    (vsw, sg)
}

/// `payload` over TCP from `from` to `to_ip:port` in `to`; what the server read, or the error.
fn tcp6(from: &Path, to: &Path, to_ip: Ipv6Addr, port: u16, payload: &'static [u8]) -> Result<Vec<u8>, String> {
    let addr = SocketAddr::from((to_ip, port));
    let listener = run_in(to, move || Ok(TcpListener::bind(addr))).unwrap().map_err(|e| e.to_string())?;
    listener.set_nonblocking(false).unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().ok()?;
        s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
        let mut got = Vec::new();
        s.read_to_end(&mut got).ok()?;
        Some(got)
    });
    let mut c = run_in(from, move || Ok(TcpStream::connect_timeout(&addr, Duration::from_secs(3))))
        .unwrap()
        .map_err(|e| e.to_string())?;
    c.write_all(payload).map_err(|e| e.to_string())?;
    drop(c);
    server.join().unwrap().ok_or_else(|| "the server read nothing".to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_nodes_talk_over_ipv6_through_the_fabric() {
    if !privileged("dual_stack_nodes_talk_over_ipv6_through_the_fabric") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(&dir.path().join("data"), "127.0.0.1:0".parse().unwrap()).await;
    let ch = emu.channel().await;
    let (mut ecs, mut vpc) = (EcsClient::new(ch.clone()), VpcClient::new(ch));
    let (vsw, sg) = network(&mut ecs, &mut vpc).await;
    let (ia, a6) = dual_stack_instance(&mut ecs, &vsw, &sg, "10.0.4.22").await;
    let (ib, b6) = dual_stack_instance(&mut ecs, &vsw, &sg, "10.0.4.23").await;
    let (na, nb) = (Netns::new("d6a"), Netns::new("d6b"));
    let shim_a = Shim::start(shim_options(emu.grpc, dir.path(), &ia, &na, None)).expect("shim A");
    let shim_b = Shim::start(shim_options(emu.grpc, dir.path(), &ib, &nb, None)).expect("shim B");

    for (ns, ip) in [(&na, a6), (&nb, b6)] {
        let want = format!("{ip}/64");
        let got = eventually(10, || ns.addrs("eth0", "inet6").contains(&want).then_some(()));
        assert!(got.is_some(), "eth0 has {want}: {:?}", ns.addrs("eth0", "inet6"));
    }
    let gw6 = Ipv6Addr::from(u128::from(a6) | 0xffff_ffff_ffff_fffd);
    let routes = na.ip(&["-6", "route", "show", "default"]);
    assert!(routes.contains(&format!("default via {gw6} dev eth0")), "{routes}");

    // TCP over IPv6 both ways, the group admitting 8080 from the /56.
    let (pa, pb_) = (na.path(), nb.path());
    let there = tokio::task::spawn_blocking({
        let (pa, pb_) = (pa.clone(), pb_.clone());
        move || tcp6(&pa, &pb_, b6, 8080, b"over ipv6, a to b")
    })
    .await
    .unwrap();
    assert_eq!(there.as_deref(), Ok(&b"over ipv6, a to b"[..]));
    let back = tokio::task::spawn_blocking({
        let (pa, pb_) = (pa.clone(), pb_.clone());
        move || tcp6(&pb_, &pa, a6, 8080, b"and back")
    })
    .await
    .unwrap();
    assert_eq!(back.as_deref(), Ok(&b"and back"[..]));
    // Node A's kernel learnt B's address at the gateway MAC, as on ECS.
    let neigh = na.ip(&["-6", "neigh", "show", "dev", "eth0"]);
    assert!(neigh.contains("ee:ff:ff:ff:ff:ff"), "{neigh}");

    // No rule opens 9090: the connection attempt times out (the group drops, it does not reset).
    let refused = tokio::task::spawn_blocking(move || tcp6(&pa, &pb_, b6, 9090, b"x")).await.unwrap();
    assert!(refused.is_err(), "{refused:?}");

    shim_a.shutdown().await;
    shim_b.shutdown().await;
}

/// A trunk ENI in `vsw` attached to `instance`.
async fn trunk_for(ecs: &mut EcsClient<Channel>, instance: &str, vsw: &str, sg: &str) -> String {
    let trunk = ecs
        .create_network_interface(pb::CreateNetworkInterfaceRequest {
            region_id: REGION.into(),
            v_switch_id: vsw.into(),
            security_group_ids: vec![sg.into()],
            instance_type: "Trunk".into(),
            ..Default::default()
        })
        .await
        .expect("CreateNetworkInterface")
        .into_inner()
        .network_interface_id;
    ecs.attach_network_interface(pb::AttachNetworkInterfaceRequest {
        region_id: REGION.into(),
        instance_id: instance.into(),
        network_interface_id: trunk.clone(),
        ..Default::default()
    })
    .await
    .expect("AttachNetworkInterface");
    trunk
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_pods_talk_over_ipv6_on_both_datapaths() {
    if !privileged("dual_stack_pods_talk_over_ipv6_on_both_datapaths") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let emu = Emu::start(&dir.path().join("data"), "127.0.0.1:0".parse().unwrap()).await;
    let ch = emu.channel().await;
    let (mut ecs, mut vpc) = (EcsClient::new(ch.clone()), VpcClient::new(ch));
    let (vsw, sg) = network(&mut ecs, &mut vpc).await;
    let (ia, _) = dual_stack_instance(&mut ecs, &vsw, &sg, "10.0.4.22").await;
    let (ib, _) = dual_stack_instance(&mut ecs, &vsw, &sg, "10.0.4.23").await;
    trunk_for(&mut ecs, &ia, &vsw, &sg).await;
    trunk_for(&mut ecs, &ib, &vsw, &sg).await;
    let (na, nb) = (Netns::new("p6a"), Netns::new("p6b"));
    let shim_a = Shim::start(shim_options(emu.grpc, dir.path(), &ia, &na, None)).expect("shim A");
    let shim_b = Shim::start(shim_options(emu.grpc, dir.path(), &ib, &nb, None)).expect("shim B");
    for ns in [&na, &nb] {
        assert!(eventually(20, || ns.link("eth1")).is_some(), "the shim did not plug the trunk in as eth1");
    }

    let conf = |instance: &str, node: &Netns, datapath: &str| {
        json!({
            "cniVersion": "1.0.0", "name": "enifab-dual", "type": "enifab-cni",
            "endpoint": emu.grpc.to_string(), "instanceId": instance, "nodeNetns": node.path(),
            "shimSocket": dir.path().join(format!("{instance}.sock")), "datapath": datapath,
            "ipStack": "dual", "vSwitchId": vsw, "securityGroupIds": [sg],
            "stateDir": dir.path().join("cni-state"),
        })
    };
    let (pod_a, pod_b) = (Netns::new("p6pa"), Netns::new("p6pb"));
    let (conf_a, conf_b) = (conf(&ia, &na, "veth"), conf(&ib, &nb, "vlan"));
    let args_a = "K8S_POD_NAME=web-a;ENIFAB_IP=10.0.4.30;ENIFAB_IP6=2408:4005:3000:4::30";
    let args_b = "K8S_POD_NAME=web-b;ENIFAB_IP=10.0.4.40";
    let (ok_a, res_a, err_a) = cni("ADD", "c-a", Some(&pod_a.path()), args_a, &conf_a);
    assert!(ok_a, "ADD veth: {res_a} {err_a}");
    let (ok_b, res_b, err_b) = cni("ADD", "c-b", Some(&pod_b.path()), args_b, &conf_b);
    assert!(ok_b, "ADD vlan: {res_b} {err_b}");

    // The results: IPv4 first, then IPv6, with each datapath's next hop.
    assert_eq!(res_a["ips"][1]["address"], "2408:4005:3000:4::30/128", "{res_a}");
    assert_eq!(res_a["ips"][1]["gateway"], "fe80::1", "{res_a}");
    let b6_net = res_b["ips"][1]["address"].as_str().unwrap_or_default().to_string();
    assert!(b6_net.starts_with("2408:4005:3000:4:") && b6_net.ends_with("/64"), "{res_b}");
    assert_eq!(res_b["ips"][1]["gateway"], "2408:4005:3000:4:ffff:ffff:ffff:fffd", "{res_b}");
    let a6: Ipv6Addr = "2408:4005:3000:4::30".parse().unwrap();
    let b6: Ipv6Addr = b6_net.trim_end_matches("/64").parse().unwrap();
    assert!(pod_a.addrs("eth0", "inet6").contains(&format!("{a6}/128")), "{:?}", pod_a.addrs("eth0", "inet6"));
    let rules = na.ip(&["-6", "rule", "show"]);
    assert!(rules.contains(&format!("512:\tfrom all to {a6} lookup main")), "{rules}");

    // Pod to pod over IPv6, across nodes: the group admits TCP 8080 from the VPC's /56 and
    // nothing else between its members, whichever way the connection goes.
    let (pa, pb_) = (pod_a.path(), pod_b.path());
    let tcp = |from: &Path, to: &Path, ip: Ipv6Addr, port: u16, payload: &'static [u8]| {
        let (from, to) = (from.to_path_buf(), to.to_path_buf());
        tokio::task::spawn_blocking(move || tcp6(&from, &to, ip, port, payload))
    };
    let there = tcp(&pa, &pb_, b6, 8080, b"veth pod to vlan pod").await.unwrap();
    assert_eq!(there.as_deref(), Ok(&b"veth pod to vlan pod"[..]));
    let back = tcp(&pb_, &pa, a6, 8080, b"and back").await.unwrap();
    assert_eq!(back.as_deref(), Ok(&b"and back"[..]));
    assert!(tcp(&pa, &pb_, b6, 9090, b"x").await.unwrap().is_err(), "9090 is open a to b");
    assert!(tcp(&pb_, &pa, a6, 9090, b"x").await.unwrap().is_err(), "9090 is open b to a");

    // The members carried it, tagged: the fabric counted frames on both members' ENIs.
    let members = ecs
        .describe_network_interfaces(pb::DescribeNetworkInterfacesRequest {
            region_id: REGION.into(),
            r#type: "Member".into(),
            ..Default::default()
        })
        .await
        .expect("DescribeNetworkInterfaces")
        .into_inner()
        .network_interface_sets
        .unwrap()
        .network_interface_set;
    assert_eq!(members.len(), 2);
    for m in &members {
        let v6 = &m.ipv6_sets.as_ref().unwrap().ipv6_set;
        assert_eq!(v6.len(), 1, "{m:?}");
        assert!(v6[0].ipv6_address == a6.to_string() || v6[0].ipv6_address == b6.to_string(), "{m:?}");
    }

    // CHECK knows the IPv6 side; DEL takes it all away, rules of both families included.
    for (c, pod, args, conf) in [("c-a", &pod_a, args_a, &conf_a), ("c-b", &pod_b, args_b, &conf_b)] {
        let (ok, out, err) = cni("CHECK", c, Some(&pod.path()), args, conf);
        assert!(ok, "CHECK {c}: {out} {err}");
    }
    na.ip(&["-6", "rule", "del", "pref", "512", "to", &a6.to_string()]);
    let (ok, out, _) = cni("CHECK", "c-a", Some(&pod_a.path()), args_a, &conf_a);
    assert!(!ok && out.to_string().contains("rule"), "CHECK misses a lost IPv6 rule: {out}");
    for (c, pod, args, conf) in [("c-a", &pod_a, args_a, &conf_a), ("c-b", &pod_b, args_b, &conf_b)] {
        let (ok, out, err) = cni("DEL", c, Some(&pod.path()), args, conf);
        assert!(ok, "DEL {c}: {out} {err}");
    }
    let rules = na.ip(&["-6", "rule", "show"]);
    assert!(!rules.contains(&a6.to_string()), "{rules}");

    shim_a.shutdown().await;
    shim_b.shutdown().await;
}
