//! Dual-stack nodes end to end (root): an emulator in this process, two instances on a vSwitch
//! with an IPv6 /64 whose primary ENIs get IPv6 addresses through the API, and two in-process
//! shims. Each node's eth0 gets its IPv6 address and the /64's gateway as default route, as
//! ECS's DHCPv6 gives them (IPv6 stays off on NICs without any); then real kernels talk over IPv6
//! through the fabric: neighbour discovery against the fabric, TCP both ways, and the security
//! group refusing a port no rule opens.

mod support;

use std::io::{Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use enifab_proto::v1 as pb;
use enifab_proto::v1::ecs_client::EcsClient;
use enifab_proto::v1::vpc_client::VpcClient;
use enifab_shim::driver::netns::run_in;
use enifab_shim::{Shim, ShimOptions};
use support::{Emu, Netns, REGION, dual_stack_instance, dual_stack_network, eventually, privileged};
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

fn shim_options(emu: &Emu, instance: &str, ns: &Netns, dir: &Path) -> ShimOptions {
    ShimOptions {
        endpoint: emu.grpc.to_string(),
        instance_id: instance.into(),
        netns: ns.name.clone(),
        control_socket: Some(dir.join(format!("{instance}.sock"))),
        geneve_listen: "127.0.0.1:0".parse().unwrap(),
        metadata: None,
        external_address: None,
        underlay: None,
        cni_state_dir: None,
        fast_path: None,
    }
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
    let shim_a = Shim::start(shim_options(&emu, &ia, &na, dir.path())).expect("shim A");
    let shim_b = Shim::start(shim_options(&emu, &ib, &nb, dir.path())).expect("shim B");

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
