//! Privileged tests (root): real network namespaces, real TAP devices, checked from the outside
//! with `ip -j` the way a user of the emulated instance would see them. Each test makes its own
//! namespaces (unique names, removed by a guard even on panic); traffic stays between them and
//! loopback. Without root every test prints SKIPPED and passes.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use enifab_net::Vni;
use enifab_net::wire::geneve::{self, Header};
use enifab_net::wire::vnet::{self, VnetHdr};
use enifab_proto::v1 as pb;
use enifab_shim::driver::netns::run_in;
use enifab_shim::driver::tap::{self, TapSetup};
use enifab_shim::node::VlanRequest;
use enifab_shim::view::Ipv4Setup;
use enifab_shim::{Node, NodeError, Relay};
use support::{Netns, eventually, mac_str, privileged, read_frame, reader, udp_frame};

const MAC_A: [u8; 6] = [0x00, 0x16, 0x3e, 0x12, 0x34, 0x56];
const MAC_B: [u8; 6] = [0x00, 0x16, 0x3e, 0x12, 0x34, 0x57];
const GATEWAY_MAC: [u8; 6] = [0xee, 0xff, 0xff, 0xff, 0xff, 0xff];

fn v4(ip: &str, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip.parse().unwrap(), port)
}

fn setup(name: &str, mac: [u8; 6], ip: &str) -> TapSetup {
    TapSetup {
        name: name.into(),
        mac: enifab_net::Mac(mac),
        mtu: 1500,
        ipv4: Some(Ipv4Setup {
            address: ip.parse().unwrap(),
            prefix_len: 24,
            gateway: Some("10.0.4.253".parse().unwrap()),
        }),
        ipv6: None,
    }
}

#[test]
fn tap_looks_like_the_primary_nic_of_an_ecs_instance() {
    if !privileged("tap_looks_like_the_primary_nic_of_an_ecs_instance") {
        return;
    }
    let ns = Netns::new("nic");
    let tap = tap::create(&ns.path(), &setup("eth0", MAC_A, "10.0.4.22")).expect("create the TAP");

    let link = ns.link("eth0").expect("eth0 exists in the namespace");
    assert_eq!(link["address"], mac_str(MAC_A));
    assert_eq!(link["mtu"], 1500);
    assert_eq!(link["ifindex"], tap.ifindex());
    assert!(link["flags"].as_array().unwrap().iter().any(|f| f == "UP"), "{link}");
    assert_eq!(link["gso_max_size"], 65000, "GSO capped so a super-frame fits one datagram");
    let info = &link["linkinfo"]["info_data"];
    assert_eq!(
        (info["type"].as_str(), info["vnet_hdr"].as_bool(), info["pi"].as_bool()),
        (Some("tap"), Some(true), Some(false)),
        "{link}"
    );

    assert_eq!(ns.ipv4_addrs("eth0"), ["10.0.4.22/24"]);
    assert_eq!(ns.addrs("eth0", "inet6"), Vec::<String>::new(), "IPv6 is off on the TAP");
    assert_eq!(ns.cat("/proc/sys/net/ipv6/conf/eth0/disable_ipv6"), "1");
    let routes = ns.ip_json(&["route", "show", "default"]);
    assert_eq!(routes[0]["gateway"], "10.0.4.253", "{routes}");
    assert_eq!(routes[0]["dev"], "eth0");

    // Again: the same name is refused while the first TAP lives (no silent takeover).
    assert!(tap::create(&ns.path(), &setup("eth0", MAC_A, "10.0.4.22")).is_err());

    // Dropping the TAP removes the device.
    drop(tap);
    assert!(eventually(2, || ns.link("eth0").is_none().then_some(())).is_some(), "eth0 removed");
}

#[test]
fn vnet_header_is_in_effect_both_ways() {
    if !privileged("vnet_header_is_in_effect_both_ways") {
        return;
    }
    let ns = Netns::new("vnet");
    let tap = tap::create(&ns.path(), &setup("eth0", MAC_A, "10.0.4.22")).expect("create the TAP");
    let mut from_tap = reader(&tap);

    // Out of the namespace: a datagram to an off-link address makes the kernel ARP for the
    // gateway; what the fd yields is a 10-byte virtio-net header, then the Ethernet frame.
    let probe = run_in(&ns.path(), || Ok(UdpSocket::bind("0.0.0.0:0").expect("bind"))).unwrap();
    probe.send_to(b"x", "10.0.99.1:9").unwrap();
    let got = read_frame(&mut from_tap, 5).expect("a frame from the TAP");
    let hdr = VnetHdr::parse(&got).unwrap();
    assert!(!hdr.is_gso(), "{hdr:?}");
    let frame = &got[vnet::LEN..];
    assert_eq!(&frame[0..6], &[0xff; 6], "broadcast ARP right after the header: {got:02x?}");
    assert_eq!(&frame[6..12], &MAC_A);
    assert_eq!(&frame[12..14], &[0x08, 0x06]);
    assert_eq!(&frame[38..42], &[10, 0, 4, 253], "who-has the gateway");

    // Into the namespace: a UDP datagram whose checksum field holds only a partial sum, marked
    // NEEDS_CSUM in the header. It is delivered only if the kernel reads the header (otherwise
    // the frame is garbage) and honours it (otherwise the checksum is wrong).
    let sink = run_in(&ns.path(), || Ok(UdpSocket::bind("10.0.4.22:0").expect("bind"))).unwrap();
    sink.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let port = sink.local_addr().unwrap().port();
    let partial = 0x1234; // deliberately not the datagram's checksum
    let frame = udp_frame(MAC_A, GATEWAY_MAC, v4("10.0.4.99", 4000), v4("10.0.4.22", port), b"hello vnet", partial);
    let hdr = VnetHdr { flags: vnet::F_NEEDS_CSUM, csum_start: 34, csum_offset: 6, ..VnetHdr::PLAIN };
    let mut out = hdr.to_bytes().to_vec();
    out.extend_from_slice(&frame);
    let mut writer = reader(&tap);
    writer.write_all(&out).expect("write to the TAP");
    let mut buf = [0u8; 64];
    let (n, from) = sink.recv_from(&mut buf).expect("the datagram arrives in the namespace");
    assert_eq!((&buf[..n], from), (&b"hello vnet"[..], "10.0.4.99:4000".parse::<SocketAddr>().unwrap()));
}

/// Copies frames (with their vnet headers) between two TAP fds: a wire with no switch.
fn wire(a: OwnedFd, b: OwnedFd, stop: Arc<AtomicBool>, biggest: Arc<AtomicU64>, gso: Arc<AtomicU64>) {
    let fa = std::fs::File::from(a);
    let fb = std::fs::File::from(b);
    let mut buf = vec![0u8; 70_000];
    while !stop.load(Ordering::Relaxed) {
        let mut moved = false;
        for (mut from, mut to) in [(&fa, &fb), (&fb, &fa)] {
            while let Ok(n) = from.read(&mut buf) {
                moved = true;
                let h = VnetHdr::parse(&buf[..n]).unwrap();
                if h.is_gso() {
                    gso.fetch_add(1, Ordering::Relaxed);
                }
                biggest.fetch_max((n - vnet::LEN) as u64, Ordering::Relaxed);
                to.write_all(&buf[..n]).expect("write to the other TAP");
            }
        }
        if !moved {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

#[test]
fn tso_super_frames_cross_whole_between_two_taps() {
    if !privileged("tso_super_frames_cross_whole_between_two_taps") {
        return;
    }
    let (na, nb) = (Netns::new("tsoa"), Netns::new("tsob"));
    let ta = tap::create(&na.path(), &setup("eth0", MAC_A, "10.0.4.22")).unwrap();
    let tb = tap::create(&nb.path(), &setup("eth0", MAC_B, "10.0.4.23")).unwrap();
    // No fabric here to answer ARP: static neighbours, as if proxy ARP had answered.
    na.ip(&["neigh", "replace", "10.0.4.23", "lladdr", &mac_str(MAC_B), "dev", "eth0", "nud", "permanent"]);
    nb.ip(&["neigh", "replace", "10.0.4.22", "lladdr", &mac_str(MAC_A), "dev", "eth0", "nud", "permanent"]);
    let stop = Arc::new(AtomicBool::new(false));
    let (biggest, gso) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let w = {
        let (a, b) = (ta.as_fd_owned(), tb.as_fd_owned());
        let (s, bg, g) = (stop.clone(), biggest.clone(), gso.clone());
        std::thread::spawn(move || wire(a, b, s, bg, g))
    };
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _stop = StopOnDrop(stop.clone());

    let listener = run_in(&nb.path(), || Ok(TcpListener::bind("10.0.4.23:0").unwrap())).unwrap();
    let port = listener.local_addr().unwrap().port();
    const TOTAL: usize = 16 << 20;
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut n = 0;
        loop {
            match s.read(&mut buf).unwrap() {
                0 => return n,
                k => n += k,
            }
        }
    });
    let mut client = run_in(&na.path(), move || {
        Ok(TcpStream::connect_timeout(&SocketAddr::from(([10, 0, 4, 23], port)), Duration::from_secs(5)).unwrap())
    })
    .unwrap();
    let chunk = vec![0x5au8; 1 << 20];
    for _ in 0..TOTAL / chunk.len() {
        client.write_all(&chunk).unwrap();
    }
    drop(client);
    assert_eq!(server.join().unwrap(), TOTAL, "every byte crossed");
    stop.store(true, Ordering::Relaxed);
    w.join().unwrap();
    let (big, gso) = (biggest.load(Ordering::Relaxed), gso.load(Ordering::Relaxed));
    assert!(gso > 0 && big > 1514, "TSO super-frames expected: {gso} GSO frames, biggest {big} B");
    assert!(big <= 65_000 + 14, "super-frames stay within gso_max_size: {big} B");
}

/// A second, independent fd on the device (the test's own handle).
trait DupFd {
    fn as_fd_owned(&self) -> OwnedFd;
}

impl DupFd for enifab_shim::driver::tap::Tap {
    fn as_fd_owned(&self) -> OwnedFd {
        std::os::fd::AsFd::as_fd(self).try_clone_to_owned().unwrap()
    }
}

fn member(id: &str, vlan: u32, ip: &str, status: &str) -> pb::NodeMember {
    pb::NodeMember {
        network_interface_id: id.into(),
        status: status.into(),
        vlan_id: vlan,
        mac_address: "00:16:3e:00:aa:01".into(),
        primary_ip_address: ip.into(),
        private_ip_addresses: vec![ip.into()],
        v_switch_cidr_block: "10.0.8.0/24".into(),
        gateway: "10.0.8.253".into(),
        ..Default::default()
    }
}

fn nic(id: &str, kind: &str, index: u32, mac: [u8; 6], ip: &str, vni: u32) -> pb::NodeNic {
    pb::NodeNic {
        network_interface_id: id.into(),
        r#type: kind.into(),
        status: "InUse".into(),
        mac_address: mac_str(mac),
        device_index: index,
        vni,
        primary_ip_address: ip.into(),
        private_ip_addresses: vec![ip.into()],
        v_switch_cidr_block: "10.0.4.0/24".into(),
        gateway: "10.0.4.253".into(),
        ..Default::default()
    }
}

fn node_config(members: Vec<pb::NodeMember>, with_trunk: bool) -> pb::NodeConfig {
    let mut nics = vec![nic("eni-prim", "Primary", 0, MAC_A, "10.0.4.22", 10)];
    if with_trunk {
        let mut trunk = nic("eni-trunk", "Trunk", 1, MAC_B, "10.0.4.23", 11);
        trunk.members = members;
        nics.push(trunk);
    }
    pb::NodeConfig { instance_id: "i-test".into(), nics, ..Default::default() }
}

#[test]
fn node_devices_and_a_vlan_sub_interface_in_a_second_netns() {
    if !privileged("node_devices_and_a_vlan_sub_interface_in_a_second_netns") {
        return;
    }
    let (node_ns, pod_ns) = (Netns::new("node"), Netns::new("pod"));
    let fabric = UdpSocket::bind("127.0.0.1:0").unwrap();
    fabric.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let relay = Relay::start(UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap();
    let shim_addr = relay.local_addr();
    let mut node = Node::new(&node_ns.name, relay).unwrap();
    let fabric_addr = Some(fabric.local_addr().unwrap());

    let m5 = || member("eni-m5", 5, "10.0.8.5", "InUse");
    let r = node.reconcile(fabric_addr, node_config(vec![m5()], true));
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(node_ns.link("eth0").unwrap()["address"], mac_str(MAC_A));
    assert_eq!(node_ns.link("eth1").unwrap()["address"], mac_str(MAC_B));
    assert_eq!(node_ns.ipv4_addrs("eth0"), ["10.0.4.22/24"]);
    assert_eq!(node_ns.ipv4_addrs("eth1"), Vec::<String>::new(), "only the primary ENI is configured");
    // Reconciling the same config again changes nothing.
    let r = node.reconcile(fabric_addr, node_config(vec![m5()], true));
    assert!(r.applied.is_empty() && r.errors.is_empty(), "{r:?}");
    // The primary IP changes: the shim's old address goes, one someone else added stays, the
    // default route follows.
    node_ns.ip(&["addr", "add", "192.168.9.9/32", "dev", "eth0"]);
    let mut moved = node_config(vec![m5()], true);
    moved.nics[0].primary_ip_address = "10.0.4.99".into();
    let r = node.reconcile(fabric_addr, moved);
    assert_eq!((r.applied.len(), r.errors.len()), (1, 0), "{r:?}");
    let mut addrs = node_ns.ipv4_addrs("eth0");
    addrs.sort();
    assert_eq!(addrs, ["10.0.4.99/24", "192.168.9.9/32"]);
    assert_eq!(node_ns.ip_json(&["route", "show", "default"])[0]["gateway"], "10.0.4.253");
    let r = node.reconcile(fabric_addr, node_config(vec![m5()], true));
    assert!(r.errors.is_empty(), "{r:?}");
    let mut addrs = node_ns.ipv4_addrs("eth0");
    addrs.sort();
    assert_eq!(addrs, ["10.0.4.22/24", "192.168.9.9/32"]);

    let req =
        VlanRequest { member_eni_id: "eni-m5".into(), netns_path: pod_ns.path(), if_name: "eth0".into(), mtu: 1500 };
    let resp = node.create_vlan_device(&req).expect("create the sub-interface");
    assert_eq!((resp.vlan_id, resp.mac_address.as_str()), (5, mac_str(MAC_B).as_str()));
    assert_eq!(resp.trunk_network_interface_id, "eni-trunk");
    let link = pod_ns.link("eth0").expect("the sub-interface is in the pod namespace");
    assert_eq!(link["address"], mac_str(MAC_B), "a VLAN sub-interface carries the trunk's MAC");
    assert!(link["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
    assert_eq!(pod_ns.ipv4_addrs("eth0"), Vec::<String>::new(), "the CNI addresses it, not the shim");
    let ifindex = link["ifindex"].clone();
    node.create_vlan_device(&req).expect("idempotent");
    assert_eq!(pod_ns.link("eth0").unwrap()["ifindex"], ifindex, "same device, not a new one");
    assert!(matches!(
        node.create_vlan_device(&VlanRequest { member_eni_id: "eni-nope".into(), ..req.clone() }),
        Err(NodeError::NotAMember(_))
    ));

    // Fabric → pod: a frame tagged 5 on the trunk's VNI lands, untagged, on the sub-interface.
    pod_ns.ip(&["addr", "add", "10.0.8.5/24", "dev", "eth0"]);
    let sink = run_in(&pod_ns.path(), || Ok(UdpSocket::bind("10.0.8.5:0").unwrap())).unwrap();
    sink.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut frame = udp_frame(
        MAC_B,
        GATEWAY_MAC,
        v4("10.0.4.22", 5000),
        v4("10.0.8.5", sink.local_addr().unwrap().port()),
        b"to pod",
        0,
    );
    frame.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
    let h = Header { vni: Vni::new(11).unwrap(), oam: false, vnet: Some(VnetHdr::PLAIN) };
    let mut d = vec![0u8; h.len() + frame.len()];
    geneve::encapsulate(&h, &frame, &mut d).unwrap();
    fabric.send_to(&d, shim_addr).unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = sink.recv_from(&mut buf).expect("delivered to the sub-interface");
    assert_eq!(&buf[..n], b"to pod");

    // Pod → fabric: its first frame (ARP for the gateway) leaves tagged 5 on the trunk's VNI.
    let probe = run_in(&pod_ns.path(), || Ok(UdpSocket::bind("10.0.8.5:0").unwrap())).unwrap();
    probe.send_to(b"x", "10.0.8.253:9").unwrap();
    let mut buf = vec![0u8; 2048];
    let (n, from) = fabric.recv_from(&mut buf).expect("a Geneve datagram from the shim");
    assert_eq!(from, shim_addr);
    let (h, inner) = Header::parse(&buf[..n]).unwrap();
    assert_eq!(h.vni, Vni::new(11).unwrap());
    assert_eq!(&inner[6..12], &MAC_B);
    assert_eq!(&inner[12..18], &[0x81, 0x00, 0x00, 0x05, 0x08, 0x06], "ARP tagged with the member's VLAN");

    // The member detaches: its sub-interface goes with it.
    let r = node.reconcile(fabric_addr, node_config(vec![], true));
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert!(pod_ns.link("eth0").is_none(), "sub-interface removed with the member");
    assert!(node_ns.link("eth1").is_some(), "the trunk stays");

    // Attached again: create, then delete (twice: idempotent).
    node.reconcile(fabric_addr, node_config(vec![m5()], true));
    node.create_vlan_device(&req).unwrap();
    assert!(pod_ns.link("eth0").is_some());
    assert!(node.delete_vlan_device("eni-m5"));
    assert!(pod_ns.link("eth0").is_none(), "deleted");
    assert!(!node.delete_vlan_device("eni-m5"), "already gone is fine");

    // A member that is not InUse yet is refused with its status.
    node.reconcile(fabric_addr, node_config(vec![member("eni-m6", 6, "10.0.8.6", "Attaching")], true));
    let e = node.create_vlan_device(&VlanRequest { member_eni_id: "eni-m6".into(), ..req.clone() }).unwrap_err();
    assert!(matches!(e, NodeError::MemberNotInUse { ref status, .. } if status == "Attaching"), "{e}");

    // Hot-unplug of the trunk, then shutdown removes everything.
    let r = node.reconcile(fabric_addr, node_config(vec![], false));
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert!(node_ns.link("eth1").is_none(), "trunk device unplugged");
    node.shutdown();
    assert!(node_ns.link("eth0").is_none(), "shutdown removes the devices");
}
