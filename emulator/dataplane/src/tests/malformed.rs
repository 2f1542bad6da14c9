//! Malformed input at every layer: each must be a specific drop reason, counted, never a panic.

use super::*;
use crate::wire::ethernet::{ETHERTYPE_ARP, ETHERTYPE_IPV4, GATEWAY_MAC};
use crate::wire::ipv4::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use crate::wire::vnet::{self, VnetHdr};

fn kind_of(h: &mut Harness, from: core::net::SocketAddr, d: &[u8]) -> DropKind {
    match h.send_raw(from, d).0 {
        Verdict::Drop(r) => r.kind(),
        v => panic!("expected a drop, got {v:?}"),
    }
}

fn on_a(frame: &[u8]) -> Vec<u8> {
    geneve(10, None, frame)
}

fn eth_ipv4(ip: &[u8]) -> Vec<u8> {
    on_a(&ethernet(GATEWAY_MAC, TRUNK_A.mac, None, ETHERTYPE_IPV4, ip))
}

#[test]
fn geneve_layer() {
    let mut h = Harness::new(&Lab::new());
    let good = tcp_datagram(&TRUNK_A, PRIMARY_B.ip, 1, 22, 0x02);
    assert_eq!(kind_of(&mut h, NODE_A, &[]), DropKind::MalformedGeneve);
    assert_eq!(kind_of(&mut h, NODE_A, &good[..7]), DropKind::MalformedGeneve);
    let mut v1 = good.clone();
    v1[0] |= 0x40;
    assert_eq!(kind_of(&mut h, NODE_A, &v1), DropKind::GeneveVersion);
    let mut ipv4_proto = good.clone();
    ipv4_proto[2..4].copy_from_slice(&[0x08, 0x00]);
    assert_eq!(kind_of(&mut h, NODE_A, &ipv4_proto), DropKind::GeneveNotEthernet);
    let mut oam = good.clone();
    oam[1] = 0x80;
    assert_eq!(kind_of(&mut h, NODE_A, &oam), DropKind::GeneveOam);
    // Option length pointing past the datagram.
    let mut long_opts = good[..8].to_vec();
    long_opts[0] = 0x3f;
    assert_eq!(kind_of(&mut h, NODE_A, &long_opts), DropKind::MalformedGeneve);
    // An option whose own length overruns the options area.
    let mut d = good[..8].to_vec();
    d[0] = 0x01;
    d.extend_from_slice(&[0x01, 0x02, 0x03, 0x05]);
    d.extend_from_slice(&good[8..]);
    assert_eq!(kind_of(&mut h, NODE_A, &d), DropKind::MalformedGeneve);
    // Critical unknown option.
    let mut d = good[..8].to_vec();
    d[0] = 0x01;
    d.extend_from_slice(&[0x01, 0x02, 0x80, 0x00]);
    d.extend_from_slice(&good[8..]);
    assert_eq!(kind_of(&mut h, NODE_A, &d), DropKind::GeneveCriticalOption);
    // Our vnet option with a bad length.
    let mut d = good[..8].to_vec();
    d[0] = 0x03;
    d.extend_from_slice(&[0xff, 0x45, 0x01, 0x02, 0, 0, 0, 0, 0, 0, 0, 0]);
    d.extend_from_slice(&good[8..]);
    assert_eq!(kind_of(&mut h, NODE_A, &d), DropKind::MalformedVnet);
    let s = h.stats();
    assert_eq!(s.drops(DropKind::MalformedGeneve), 4);
    assert_eq!(port(&s, 10).rx_frames, 0, "no port is known before the header parses");
}

#[test]
fn vnet_header_pointing_outside_the_frame() {
    let mut h = Harness::new(&Lab::new());
    let frame = ethernet(
        GATEWAY_MAC,
        TRUNK_A.mac,
        None,
        ETHERTYPE_IPV4,
        &ipv4(TRUNK_A.ip, POD_B1.ip, PROTO_TCP, &tcp(1, 80, 0x10, 0)),
    );
    let bad = VnetHdr { flags: vnet::F_NEEDS_CSUM, csum_start: 60, csum_offset: 16, ..VnetHdr::PLAIN };
    assert_eq!(kind_of(&mut h, NODE_A, &geneve(10, Some(bad), &frame)), DropKind::MalformedVnet);
    let no_size = VnetHdr { gso_type: vnet::GSO_TCPV4, ..VnetHdr::PLAIN };
    assert_eq!(kind_of(&mut h, NODE_A, &geneve(10, Some(no_size), &frame)), DropKind::MalformedVnet);
    // csum_start inside the Ethernet header cannot survive popping a tag: 16 − 4 is fine but
    // 2 − 4 is not.
    let tagged = ethernet(
        GATEWAY_MAC,
        TRUNK_B.mac,
        Some(1001),
        ETHERTYPE_IPV4,
        &ipv4(POD_B1.ip, TRUNK_A.ip, PROTO_TCP, &tcp(1, 22, 0x02, 0)),
    );
    let mut lab = Lab::new();
    lab.group_mut("sg-node").rules.push(crate::testkit::rule(
        crate::Direction::Ingress,
        1,
        crate::Policy::Accept,
        crate::Protocol::All,
        None,
        any_ip(),
    ));
    let mut h = Harness::new(&lab);
    let weird = VnetHdr { flags: vnet::F_NEEDS_CSUM, csum_start: 2, csum_offset: 0, ..VnetHdr::PLAIN };
    assert_eq!(kind_of(&mut h, NODE_B, &geneve(21, Some(weird), &tagged)), DropKind::MalformedVnet);
    assert_eq!(h.stats().conntrack_entries, 0);
}

#[test]
fn ethernet_and_vlan_layers() {
    let mut h = Harness::new(&Lab::new());
    assert_eq!(kind_of(&mut h, NODE_A, &on_a(&[0xee; 13])), DropKind::MalformedEthernet);
    assert_eq!(kind_of(&mut h, NODE_A, &on_a(&[])), DropKind::MalformedEthernet);
    let tagged = ethernet(GATEWAY_MAC, TRUNK_A.mac, Some(1001), ETHERTYPE_IPV4, &[]);
    assert_eq!(kind_of(&mut h, NODE_A, &on_a(&tagged[..16])), DropKind::MalformedVlan);
    let p = port(&h.stats(), 10).clone();
    assert_eq!((p.rx_frames, p.drops(DropKind::MalformedEthernet), p.drops(DropKind::MalformedVlan)), (3, 2, 1));
}

#[test]
fn arp_layer() {
    let mut h = Harness::new(&Lab::new());
    let good = arp_request(&TRUNK_A, NODE_GW);
    assert_eq!(kind_of(&mut h, NODE_A, &good[..8 + 14 + 20]), DropKind::MalformedArp);
    let mut v6 = good.clone();
    v6[8 + 14 + 2..8 + 14 + 4].copy_from_slice(&[0x86, 0xdd]);
    assert_eq!(kind_of(&mut h, NODE_A, &v6), DropKind::ArpUnsupported);
    let mut op = good.clone();
    op[8 + 14 + 7] = 9;
    assert_eq!(kind_of(&mut h, NODE_A, &op), DropKind::ArpUnsupported);
    let _ = ETHERTYPE_ARP;
}

#[test]
fn ipv4_layer() {
    let mut h = Harness::new(&Lab::new());
    let good = ipv4(TRUNK_A.ip, PRIMARY_B.ip, PROTO_TCP, &tcp(1, 22, 0x02, 0));
    assert_eq!(kind_of(&mut h, NODE_A, &eth_ipv4(&good[..10])), DropKind::MalformedIpv4);
    let mut ihl4 = good.clone();
    ihl4[0] = 0x44;
    assert_eq!(kind_of(&mut h, NODE_A, &eth_ipv4(&ihl4)), DropKind::MalformedIpv4);
    let mut ihl15 = good.clone();
    ihl15[0] = 0x4f;
    assert_eq!(kind_of(&mut h, NODE_A, &eth_ipv4(&ihl15[..40])), DropKind::MalformedIpv4);
    let mut v6 = good.clone();
    v6[0] = 0x65;
    assert_eq!(kind_of(&mut h, NODE_A, &eth_ipv4(&v6)), DropKind::MalformedIpv4);
    let mut long = good.clone();
    long[3] = 200;
    assert_eq!(kind_of(&mut h, NODE_A, &eth_ipv4(&long)), DropKind::MalformedIpv4);
    let mut short = good.clone();
    short[3] = 19;
    assert_eq!(kind_of(&mut h, NODE_A, &eth_ipv4(&short)), DropKind::MalformedIpv4);
    assert_eq!(h.stats().drops(DropKind::MalformedIpv4), 6);
}

#[test]
fn transport_layers() {
    let mut h = Harness::new(&Lab::new());
    let mk = |proto, l4: &[u8]| eth_ipv4(&ipv4(TRUNK_A.ip, PRIMARY_B.ip, proto, l4));
    let syn = tcp(1, 22, 0x02, 0);
    assert_eq!(kind_of(&mut h, NODE_A, &mk(PROTO_TCP, &syn[..19])), DropKind::MalformedTcp);
    let mut bad_off = syn.clone();
    bad_off[12] = 0x30;
    assert_eq!(kind_of(&mut h, NODE_A, &mk(PROTO_TCP, &bad_off)), DropKind::MalformedTcp);
    bad_off[12] = 0xf0;
    assert_eq!(kind_of(&mut h, NODE_A, &mk(PROTO_TCP, &bad_off)), DropKind::MalformedTcp);
    assert_eq!(kind_of(&mut h, NODE_A, &mk(PROTO_UDP, &[0; 7])), DropKind::MalformedUdp);
    assert_eq!(kind_of(&mut h, NODE_A, &mk(PROTO_ICMP, &[8, 0, 0])), DropKind::MalformedIcmp);
    // To the gateway too.
    let to_gw = eth_ipv4(&ipv4(TRUNK_A.ip, NODE_GW, PROTO_ICMP, &[8, 0, 0]));
    assert_eq!(kind_of(&mut h, NODE_A, &to_gw), DropKind::MalformedIcmp);
    // A garbage ICMP error quote is just an untracked ICMP packet (judged by the rules).
    let err = crate::testkit::icmp(3, 1, [0; 4], &[0x45, 1, 2]);
    assert_eq!(
        kind_of(&mut h, NODE_B, &from_endpoint(&PRIMARY_B, &ipv4(PRIMARY_B.ip, POD_B1.ip, PROTO_ICMP, &err))),
        DropKind::SecurityGroupIngress
    );
}
