//! The emulator's data plane end to end, with fake shims: real `Emulator` (gRPC + Geneve UDP
//! socket + model thread), nodes registered over `enifab.v1.Fabric`, Geneve datagrams built with
//! the data plane's testkit and sent from plain UDP sockets. No privileges needed; the real
//! shims are exercised by agent-shim's own tests.

use std::net::{Ipv4Addr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use enifab::actor::SystemClock;
use enifab::cli::Clients;
use enifab::serve::{Emulator, ServeConfig};
use enifab_dataplane::testkit::{arp_request, echo_datagram};
use enifab_dataplane::wire::ethernet;
use enifab_proto::v1 as pb;

mod fake_nodes;
use fake_nodes::{instance, network, node, recv_frame};

async fn start() -> (Clients, Emulator, tempfile::TempDir, tokio::sync::oneshot::Sender<()>) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ServeConfig::loopback(dir.path());
    let emu = Emulator::open(&cfg, Arc::new(SystemClock)).unwrap();
    let listener = tokio::net::TcpListener::bind(cfg.listen).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(emu.clone().run(listener, async move {
        let _ = rx.await;
    }));
    let clients = Clients::new(enifab::cli::connect(&addr.to_string()).await.unwrap());
    (clients, emu, dir, tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_arp_ping_and_are_filtered_by_security_groups() {
    let (mut c, _emu, _dir, _stop) = start().await;
    let (vsw, sg) = network(&mut c).await;
    let a = node(&mut c, &vsw, &sg, "10.0.4.22").await;
    let b = node(&mut c, &vsw, &sg, "10.0.4.20").await;

    // Proxy ARP: any target, answered with the gateway MAC.
    a.sock.send(&arp_request(&a.eth0, Ipv4Addr::new(10, 0, 4, 20))).unwrap();
    let reply = recv_frame(&a.sock).expect("an ARP reply");
    assert_eq!(&reply[0..6], &a.eth0.mac.0, "to the requester");
    assert_eq!(&reply[6..12], &[0xee, 0xff, 0xff, 0xff, 0xff, 0xff], "from the gateway MAC");

    // Members of one basic group reach each other (InnerAccessPolicy Accept)…
    a.sock.send(&echo_datagram(&a.eth0, b.eth0.ip, 8, 6)).unwrap();
    assert!(recv_frame(&b.sock).is_some(), "inner access accepted");
    // …until the group isolates them; then, with no rule, ingress is denied, counted.
    c.ecs
        .modify_security_group_policy(pb::ModifySecurityGroupPolicyRequest {
            security_group_id: sg.clone(),
            inner_access_policy: "Drop".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    a.sock.send(&echo_datagram(&a.eth0, b.eth0.ip, 8, 7)).unwrap();
    assert!(recv_frame(&b.sock).is_none(), "no ingress rule yet");
    let mut fabric = c.fabric.clone();
    let counters =
        fabric.describe_fabric_counters(pb::DescribeFabricCountersRequest::default()).await.unwrap().into_inner();
    let dropped: u64 = counters.drops.iter().filter(|d| d.reason == "security_group_ingress").map(|d| d.frames).sum();
    assert_eq!(dropped, 1, "{counters:?}");
    let port_a = counters.ports.iter().find(|p| p.network_interface_id == a.eth0.eni).expect("a's port");
    assert_eq!(port_a.instance_id, a.instance);

    // The rule takes effect before the API call returns.
    c.ecs
        .authorize_security_group(pb::AuthorizeSecurityGroupRequest {
            security_group_id: sg.clone(),
            permissions: vec![pb::Permission {
                ip_protocol: "ICMP".into(),
                port_range: "-1/-1".into(),
                source_cidr_ip: "10.0.4.0/24".into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    a.sock.send(&echo_datagram(&a.eth0, b.eth0.ip, 8, 8)).unwrap();
    let frame = recv_frame(&b.sock).expect("the echo reaches B");
    assert_eq!(&frame[0..6], &b.eth0.mac.0, "delivered to B's MAC");
    assert_eq!(&frame[6..12], &[0xee, 0xff, 0xff, 0xff, 0xff, 0xff], "routed by the VPC");
    assert_eq!(u16::from_be_bytes([frame[12], frame[13]]), ethernet::ETHERTYPE_IPV4);

    // Frames for A's port from a stranger's address are not accepted.
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    stranger.send_to(&echo_datagram(&a.eth0, b.eth0.ip, 8, 9), a.sock.peer_addr().unwrap()).unwrap();
    assert!(recv_frame(&b.sock).is_none());
}

/// A model change that revokes on every fast-path node (a rule admitting TCP `port` added to
/// `sg`); how long the call took.
async fn change(c: &Clients, sg: &str, port: u32) -> Duration {
    let t = std::time::Instant::now();
    c.ecs
        .clone()
        .authorize_security_group(pb::AuthorizeSecurityGroupRequest {
            security_group_id: sg.into(),
            ip_protocol: "tcp".into(),
            port_range: format!("{port}/{port}"),
            source_cidr_ip: "10.0.0.0/8".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    t.elapsed()
}

/// Revocations: a model change is answered once every fast-path node acknowledged the new
/// epoch; a node that does not answer holds one call up (for the timeout) and then no more,
/// until it answers again. Refused fast-path addresses are the API's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_waits_for_the_fast_path_nodes_and_a_silent_one_only_once() {
    use enifab_dataplane::wire::fastpath::{self, Kind, Message};
    if enifab::serve::fast_path_off_by_env() {
        return; // the suite's slow-path run: nothing is revoked
    }
    let (mut c, _emu, _dir, _stop) = start().await;
    let (vsw, sg) = network(&mut c).await;
    let instance = instance(&mut c, &vsw, &sg, "10.0.4.22").await;
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let register = |fast_path: &str| pb::RegisterNodeRequest {
        instance_id: instance.clone(),
        geneve_address: sock.local_addr().unwrap().to_string(),
        fast_path_address: fast_path.into(),
    };
    for bad in ["not an address", "224.0.0.1", "0.0.0.0", "::1"] {
        let e = c.fabric.register_node(register(bad)).await.unwrap_err();
        assert!(e.message().contains("FastPathAddress"), "{bad}: {e:?}");
    }
    c.fabric.register_node(register("198.18.0.9")).await.unwrap();
    // The node answers every revocation: the call returns as soon as it has.
    let answering = {
        let sock = sock.try_clone().unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut revoked = Vec::new();
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
                if let Some(m) = Message::parse(&buf[..n]).ok().filter(|m| m.kind == Kind::Revoke) {
                    revoked.push(m.epoch);
                    let mut ack = [0u8; fastpath::HEADER_LEN];
                    let len = fastpath::emit_bare(Kind::Ack, m.epoch, &mut ack).unwrap();
                    sock.send_to(&ack[..len], from).unwrap();
                }
            }
            revoked
        });
        (stop, t)
    };
    let took = change(&c, &sg, 22).await;
    answering.0.store(true, std::sync::atomic::Ordering::Relaxed);
    let revoked = answering.1.join().unwrap();
    assert!(!revoked.is_empty() && took < Duration::from_millis(400), "{took:?} {revoked:?}");
    assert!(revoked.windows(2).all(|w| w[0] <= w[1]), "epochs only grow: {revoked:?}");
    // Silent from now on: one call waits the whole timeout, the next ones do not.
    let first = change(&c, &sg, 23).await;
    assert!(first >= Duration::from_millis(450), "waited for the node: {first:?}");
    let second = change(&c, &sg, 24).await;
    assert!(second < Duration::from_millis(400), "not waited for again: {second:?}");
    // Yet it is still told.
    let mut buf = [0u8; 2048];
    let told = (0..50).any(|_| {
        sock.recv(&mut buf).ok().is_some_and(|n| Message::parse(&buf[..n]).is_ok_and(|m| m.kind == Kind::Revoke))
    });
    assert!(told, "revocations still go to the silent node");
}

/// A fast-path node that lets a revocation time out may still be carrying flows on the old
/// verdicts: its watch is ended, with why, so that its shim forgets them and registers again.
/// A node that answers keeps its watch, and so does the late one once it registered again and
/// answers: what it was late for before is not held against its new watch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_does_not_acknowledge_loses_its_watch() {
    if enifab::serve::fast_path_off_by_env() {
        return; // the suite's slow-path run: nothing is revoked
    }
    let (mut c, _emu, _dir, _stop) = start().await;
    let (vsw, sg) = network(&mut c).await;
    let answering = FakeRelay::new(true);
    let silent = FakeRelay::new(false);
    let a = instance(&mut c, &vsw, &sg, "10.0.4.22").await;
    let b = instance(&mut c, &vsw, &sg, "10.0.4.20").await;
    let register = |c: &Clients, instance: &str, relay: &FakeRelay, fast_path: &str| {
        let mut fabric = c.fabric.clone();
        let req = pb::RegisterNodeRequest {
            instance_id: instance.into(),
            geneve_address: relay.at.to_string(),
            fast_path_address: fast_path.into(),
        };
        async move { fabric.register_node(req).await.unwrap() }
    };
    let watch = |c: &Clients, instance: &str| {
        let mut fabric = c.fabric.clone();
        let req = pb::WatchNodeRequest { instance_id: instance.into() };
        async move {
            let mut stream = fabric.watch_node(req).await.unwrap().into_inner();
            stream.message().await.unwrap().expect("the node's config first");
            stream
        }
    };
    register(&c, &a, &answering, "198.18.0.9").await;
    register(&c, &b, &silent, "198.18.0.10").await;
    let mut watch_a = watch(&c, &a).await;
    let mut watch_b = watch(&c, &b).await;

    change(&c, &sg, 22).await;
    let ended = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match watch_b.message().await {
                Ok(Some(_)) => continue,
                end => return end,
            }
        }
    })
    .await
    .expect("the silent node's watch ends");
    let status = ended.expect_err("with an error that says why");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("did not acknowledge revocation of epoch") && status.message().contains("in 500 ms"),
        "{status:?}"
    );
    assert!(still_open(&mut watch_a).await, "the answering node keeps its watch");

    // Its shim registers again, now answering: its new watch outlives further changes.
    silent.answer.store(true, std::sync::atomic::Ordering::Relaxed);
    register(&c, &b, &silent, "198.18.0.10").await;
    let mut watch_b = watch(&c, &b).await;
    let took = change(&c, &sg, 23).await;
    assert!(took < Duration::from_millis(400), "both nodes answered: {took:?}");
    change(&c, &sg, 24).await;
    assert!(still_open(&mut watch_b).await, "the node that answers again keeps its new watch");
    assert!(still_open(&mut watch_a).await, "the answering node keeps its watch");
}

/// Whether a watch neither ends nor fails within a second (a new config is fine).
async fn still_open(stream: &mut tonic::Streaming<pb::NodeConfig>) -> bool {
    match tokio::time::timeout(Duration::from_secs(1), stream.message()).await {
        Err(_elapsed) => true,
        Ok(got) => got.is_ok_and(|c| c.is_some()),
    }
}

/// A fake node's relay socket, on a thread of its own: it acknowledges every revocation while
/// `answer` is set, and ignores them otherwise.
struct FakeRelay {
    at: std::net::SocketAddr,
    answer: Arc<std::sync::atomic::AtomicBool>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl FakeRelay {
    fn new(answer: bool) -> FakeRelay {
        use enifab_dataplane::wire::fastpath::{self, Kind, Message};
        use std::sync::atomic::{AtomicBool, Ordering};
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let relay = FakeRelay {
            at: sock.local_addr().unwrap(),
            answer: Arc::new(AtomicBool::new(answer)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (answer, stop) = (relay.answer.clone(), relay.stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
                let Some(m) = Message::parse(&buf[..n]).ok().filter(|m| m.kind == Kind::Revoke) else { continue };
                if answer.load(Ordering::Relaxed) {
                    let mut ack = [0u8; fastpath::HEADER_LEN];
                    let len = fastpath::emit_bare(Kind::Ack, m.epoch, &mut ack).unwrap();
                    sock.send_to(&ack[..len], from).unwrap();
                }
            }
        });
        relay
    }
}

impl Drop for FakeRelay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Prefix mode: an address inside an ENI's /28 is routed to that ENI, and the ENI may send from
/// it (anti-spoof counts the prefix as its own); unassigning the prefix takes the route away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv4_prefix_routes_to_its_eni() {
    let (mut c, _emu, _dir, _stop) = start().await;
    let (vsw, sg) = network(&mut c).await;
    let a = node(&mut c, &vsw, &sg, "10.0.4.22").await;
    let b = node(&mut c, &vsw, &sg, "10.0.4.20").await;
    let got = c
        .ecs
        .assign_private_ip_addresses(pb::AssignPrivateIpAddressesRequest {
            network_interface_id: b.eth0.eni.to_string(),
            ipv4_prefix_count: Some(1),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let prefix = got.assigned_private_ip_addresses_set.unwrap().ipv4_prefix_set.unwrap().ipv4_prefixes[0].clone();
    let net: Ipv4Addr = prefix.trim_end_matches("/28").parse().unwrap();
    let inside = Ipv4Addr::from(u32::from(net) + 5);

    a.sock.send(&echo_datagram(&a.eth0, inside, 8, 1)).unwrap();
    let frame = recv_frame(&b.sock).expect("delivered to the prefix's ENI");
    assert_eq!(&frame[30..34], &inside.octets(), "IPv4 destination kept");

    // B answers from the prefix address: its own, so not spoofed.
    let from_prefix = enifab_dataplane::testkit::Endpoint { ip: inside, ..b.eth0 };
    b.sock.send(&echo_datagram(&from_prefix, a.eth0.ip, 8, 2)).unwrap();
    let back = recv_frame(&a.sock).expect("sent from the prefix, delivered");
    assert_eq!(&back[26..30], &inside.octets());

    c.ecs
        .unassign_private_ip_addresses(pb::UnassignPrivateIpAddressesRequest {
            network_interface_id: b.eth0.eni.to_string(),
            ipv4_prefix: vec![prefix],
            ..Default::default()
        })
        .await
        .unwrap();
    a.sock.send(&echo_datagram(&a.eth0, inside, 8, 3)).unwrap();
    assert!(recv_frame(&b.sock).is_none(), "no route once the prefix is gone");
}

/// A rule with an IPv6 peer is about IPv6 traffic only: "ALL from ::/0" must not open the group
/// to IPv4 (its missing IPv4 peer is not "anywhere").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_rule_admits_no_ipv4() {
    let (mut c, _emu, _dir, _stop) = start().await;
    let (vsw, sg) = network(&mut c).await;
    let a = node(&mut c, &vsw, &sg, "10.0.4.22").await;
    let b = node(&mut c, &vsw, &sg, "10.0.4.20").await;
    c.ecs
        .modify_security_group_policy(pb::ModifySecurityGroupPolicyRequest {
            security_group_id: sg.clone(),
            inner_access_policy: "Drop".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    c.ecs
        .authorize_security_group(pb::AuthorizeSecurityGroupRequest {
            security_group_id: sg.clone(),
            permissions: vec![pb::Permission {
                ip_protocol: "ALL".into(),
                ipv6_source_cidr_ip: "::/0".into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    a.sock.send(&echo_datagram(&a.eth0, b.eth0.ip, 8, 9)).unwrap();
    assert!(recv_frame(&b.sock).is_none(), "an IPv6 rule opened IPv4");
    // The same rule with an IPv4 peer does open it: the test can tell the two apart.
    c.ecs
        .authorize_security_group(pb::AuthorizeSecurityGroupRequest {
            security_group_id: sg,
            permissions: vec![pb::Permission {
                ip_protocol: "ALL".into(),
                source_cidr_ip: "0.0.0.0/0".into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    a.sock.send(&echo_datagram(&a.eth0, b.eth0.ip, 8, 10)).unwrap();
    assert!(recv_frame(&b.sock).is_some());
}

/// Dual stack end to end through the emulator's UDP fabric: two nodes on a vSwitch with an IPv6
/// /64, IPv6 addresses assigned through the API; a neighbour solicitation is answered with the
/// gateway MAC, and a TCP SYN over IPv6 reaches the other node as the group allows it, then not
/// once the group refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_nodes_reach_each_other_over_ipv6() {
    use etherparse::{Icmpv6Slice, Icmpv6Type, Ipv6Slice, PacketBuilder};
    let (mut c, _emu, _dir, _stop) = start().await;
    let vpc = c
        .vpc
        .create_vpc(pb::CreateVpcRequest {
            cidr_block: "10.0.0.0/8".into(),
            enable_ipv6: Some(true),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .vpc_id;
    let vsw = c
        .vpc
        .create_v_switch(pb::CreateVSwitchRequest {
            vpc_id: vpc.clone(),
            zone_id: "cn-hongkong-b".into(),
            cidr_block: "10.0.4.0/24".into(),
            ipv6_cidr_block: Some(4),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .v_switch_id;
    let sg = c
        .ecs
        .create_security_group(pb::CreateSecurityGroupRequest { vpc_id: vpc, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .security_group_id;
    let a = node(&mut c, &vsw, &sg, "10.0.4.22").await;
    let b = node(&mut c, &vsw, &sg, "10.0.4.20").await;
    let mut v6 = async |eni: &str| -> std::net::Ipv6Addr {
        let r = c
            .ecs
            .assign_ipv6_addresses(pb::AssignIpv6AddressesRequest {
                network_interface_id: eni.to_string(),
                ipv6_address_count: Some(1),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        r.ipv6_sets.unwrap().ipv6_address[0].parse().unwrap()
    };
    let (a6, b6) = (v6(a.eth0.eni).await, v6(b.eth0.eni).await);
    let geneve = |vni: u32, frame: &[u8]| enifab_dataplane::testkit::geneve(vni, None, frame);

    // Who has b6? The fabric, at ee:ff:ff:ff:ff:ff.
    let o = b6.octets();
    let group =
        std::net::Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00 | u16::from(o[13]), u16::from_be_bytes([o[14], o[15]]));
    let mut ns = Vec::new();
    let mut body = b6.octets().to_vec();
    body.extend_from_slice(&[1, 1]);
    body.extend_from_slice(&a.eth0.mac.0);
    PacketBuilder::ethernet2(a.eth0.mac.0, [0x33, 0x33, 0xff, o[13], o[14], o[15]])
        .ipv6(a6.octets(), group.octets(), 255)
        .icmpv6_raw(135, 0, [0; 4])
        .write(&mut ns, &body)
        .unwrap();
    a.sock.send(&geneve(a.eth0.vni, &ns)).unwrap();
    let na = recv_frame(&a.sock).expect("a neighbour advertisement");
    assert_eq!(&na[6..12], &ethernet::GATEWAY_MAC.0);
    let ip = Ipv6Slice::from_slice(&na[14..]).unwrap();
    let icmp = Icmpv6Slice::from_slice(ip.payload().payload).unwrap();
    assert!(matches!(icmp.icmp_type(), Icmpv6Type::NeighborAdvertisement(_)), "{:?}", icmp.icmp_type());

    // A SYN to b6: members of one basic group reach each other (inner access), in IPv6 too.
    let syn = |sport: u16| {
        let mut f = Vec::new();
        PacketBuilder::ethernet2(a.eth0.mac.0, ethernet::GATEWAY_MAC.0)
            .ipv6(a6.octets(), b6.octets(), 64)
            .tcp(sport, 80, 1, 64240)
            .syn()
            .write(&mut f, &[])
            .unwrap();
        f
    };
    a.sock.send(&geneve(a.eth0.vni, &syn(40000))).unwrap();
    let got = recv_frame(&b.sock).expect("delivered over IPv6");
    assert_eq!(&got[12..14], &[0x86, 0xdd], "an IPv6 frame");
    assert_eq!(&got[14 + 24..14 + 40], &b6.octets());
    c.ecs
        .modify_security_group_policy(pb::ModifySecurityGroupPolicyRequest {
            security_group_id: sg,
            inner_access_policy: "Drop".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    a.sock.send(&geneve(a.eth0.vni, &syn(40001))).unwrap();
    assert!(recv_frame(&b.sock).is_none(), "no rule admits it once inner access is off");
}
