//! The lab of `testkit` driven frame by frame: proxy ARP, demux, routing, gateway, anti-spoof,
//! security groups, conntrack with an injected clock, offloads, counters and traces.

use core::net::Ipv4Addr;
use core::time::Duration;
use std::hash::RandomState;
use std::sync::Arc;

use super::*;
use crate::config::*;
use crate::fabric::{MAX_HEADER_LEN, SplitVerdict};
use crate::wire::ethernet::{self, ETHERTYPE_ARP, ETHERTYPE_IPV4, GATEWAY_MAC, Mac};
use crate::wire::ipv4::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use crate::wire::l4::{ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};
use crate::wire::vnet::{self, VnetHdr};
use crate::wire::{arp, checksum};
use crate::{CtLookup, DropReason, FlowDir, FlowState, Layer, SgMatch, Step};

const SYN: u8 = TCP_SYN;
const SYN_ACK: u8 = TCP_SYN | TCP_ACK;
const ACK: u8 = TCP_ACK;

fn ingress_drop(eni: &str, sg: Option<&str>, rule: Option<u32>) -> DropReason {
    DropReason::SecurityGroupIngress { eni: eni.into(), sg: sg.map(Into::into), rule: rule.map(position) }
}

fn egress_drop(eni: &str, sg: Option<&str>, rule: Option<u32>) -> DropReason {
    DropReason::SecurityGroupEgress { eni: eni.into(), sg: sg.map(Into::into), rule: rule.map(position) }
}

/// The testkit's rules have no `SecurityGroupRuleId`: the fabric names them by position.
fn position(index: u32) -> Arc<str> {
    Arc::from(format!("#{index}"))
}

// ---------------------------------------------------------------------------------------------
// Proxy ARP

#[test]
fn arp_untagged_is_answered_with_gateway_mac() {
    let mut h = Harness::new(&Lab::new());
    let (v, out) = h.send(&TRUNK_A, &arp_request(&TRUNK_A, PRIMARY_B.ip));
    assert_eq!(v, Verdict::Reply { to: NODE_A, len: 8 + 14 + 28 });
    let expected_arp = arp::Repr {
        operation: arp::OP_REPLY,
        sender_mac: GATEWAY_MAC,
        sender_ip: PRIMARY_B.ip,
        target_mac: TRUNK_A.mac,
        target_ip: TRUNK_A.ip,
    };
    let mut a = [0u8; 28];
    expected_arp.emit(&mut a).unwrap();
    let expected = geneve(TRUNK_A.vni, None, &ethernet(TRUNK_A.mac, GATEWAY_MAC, None, ETHERTYPE_ARP, &a));
    assert_eq!(out, expected);
    let s = h.stats();
    let p = port(&s, 10);
    assert_eq!((p.rx_frames, p.rx_bytes, p.tx_frames, p.tx_bytes), (1, 42, 1, 42));
    assert!(s.drops.is_empty());
}

#[test]
fn arp_on_a_vlan_is_answered_on_that_vlan_for_any_target() {
    let mut h = Harness::new(&Lab::new());
    for target in [POD_GW, Ipv4Addr::new(8, 8, 8, 8), POD_B1.ip] {
        let (v, out) = h.send(&POD_A1, &arp_request(&POD_A1, target));
        assert!(matches!(v, Verdict::Reply { to: NODE_A, .. }), "{v:?}");
        let (g, f) = decode(&out);
        assert_eq!((g.vni.get(), g.vnet), (10, None));
        assert_eq!(f.tag.map(|t| t.vid()), Some(1001));
        assert_eq!((f.dst, f.src, f.ethertype), (TRUNK_A.mac, GATEWAY_MAC, ETHERTYPE_ARP));
        let r = arp::Repr::parse(f.payload).unwrap();
        assert_eq!(
            (r.operation, r.sender_mac, r.sender_ip, r.target_ip),
            (arp::OP_REPLY, GATEWAY_MAC, target, POD_A1.ip)
        );
    }
    assert_eq!(port(&h.stats(), 10).tx_frames, 3);
}

#[test]
fn arp_replies_announcements_and_probes_are_consumed() {
    let mut h = Harness::new(&Lab::new());
    let mk = |op: u16, sip: Ipv4Addr, tip: Ipv4Addr| {
        let r = arp::Repr {
            operation: op,
            sender_mac: TRUNK_A.mac,
            sender_ip: sip,
            target_mac: Mac([0; 6]),
            target_ip: tip,
        };
        let mut a = [0u8; 28];
        r.emit(&mut a).unwrap();
        geneve(10, None, &ethernet(ethernet::BROADCAST, TRUNK_A.mac, None, ETHERTYPE_ARP, &a))
    };
    assert_eq!(h.dropped(&TRUNK_A, &mk(arp::OP_REPLY, TRUNK_A.ip, NODE_GW)), DropReason::ArpReply);
    assert_eq!(h.dropped(&TRUNK_A, &mk(arp::OP_REQUEST, TRUNK_A.ip, TRUNK_A.ip)), DropReason::ArpGratuitous);
    assert_eq!(h.dropped(&TRUNK_A, &mk(arp::OP_REPLY, TRUNK_A.ip, TRUNK_A.ip)), DropReason::ArpGratuitous);
    assert_eq!(h.dropped(&TRUNK_A, &mk(arp::OP_REQUEST, Ipv4Addr::UNSPECIFIED, TRUNK_A.ip)), DropReason::ArpProbe);
    let s = h.stats();
    assert_eq!(
        (drops_of(&s, DropKind::ArpReply), drops_of(&s, DropKind::ArpGratuitous), drops_of(&s, DropKind::ArpProbe)),
        (1, 2, 1)
    );
    let p = port(&s, 10);
    assert_eq!((p.rx_frames, p.tx_frames, p.drops(DropKind::ArpGratuitous)), (4, 0, 2));
}

#[test]
fn arp_to_another_unicast_mac_is_refused_but_unicast_to_gateway_is_answered() {
    let mut h = Harness::new(&Lab::new());
    let mut d = arp_request(&TRUNK_A, NODE_GW);
    d[8..14].copy_from_slice(&GATEWAY_MAC.0);
    assert!(matches!(h.send(&TRUNK_A, &d).0, Verdict::Reply { .. }));
    d[8..14].copy_from_slice(&PRIMARY_B.mac.0);
    assert_eq!(h.dropped(&TRUNK_A, &d), DropReason::NotForGateway { dst: PRIMARY_B.mac });
}

// ---------------------------------------------------------------------------------------------
// Ports, VLAN demux, routing, rewrite

#[test]
fn member_to_member_across_nodes_is_rewritten_and_retagged() {
    let mut h = Harness::new(&Lab::new());
    let ip = ipv4(POD_A1.ip, POD_B1.ip, PROTO_TCP, &tcp(40000, 80, SYN, 10));
    let d = from_endpoint(&POD_A1, &ip);
    let out = h.forwarded(&POD_A1, &d, &POD_B1);
    // Exactly: VNI 21, trunk B's MAC, VLAN 1001, the IP packet byte for byte (TTL untouched).
    assert_eq!(out, geneve(21, None, &ethernet(TRUNK_B.mac, GATEWAY_MAC, Some(1001), ETHERTYPE_IPV4, &ip)));
    assert_eq!(out[8 + 18 + 8], 64, "ttl unchanged");
    let s = h.stats();
    assert_eq!((port(&s, 10).rx_frames, port(&s, 10).rx_bytes), (1, d.len() as u64 - 8));
    assert_eq!((port(&s, 21).tx_frames, port(&s, 21).tx_bytes), (1, out.len() as u64 - 8));
    assert_eq!(s.conntrack_entries, 1);
}

#[test]
fn untagged_to_member_pushes_the_tag_and_member_to_untagged_pops_it() {
    let mut h = Harness::new(&Lab::new());
    let syn = tcp_datagram(&TRUNK_A, POD_B1.ip, 40000, 80, SYN);
    let out = h.forwarded(&TRUNK_A, &syn, &POD_B1);
    assert_eq!(out.len(), syn.len() + 4);
    // The reply travels the other way: tag popped, delivered to trunk A's own port untagged.
    let synack = tcp_datagram(&POD_B1, TRUNK_A.ip, 80, 40000, SYN_ACK);
    let back = h.forwarded(&POD_B1, &synack, &TRUNK_A);
    assert_eq!(back.len(), synack.len() - 4);
}

#[test]
fn members_of_one_trunk_hairpin_through_the_fabric_with_security_groups() {
    let mut h = Harness::new(&Lab::new());
    // sg-db admits 5432 from group sg-web: pod-a1 is in it.
    let d = tcp_datagram(&POD_A1, POD_A2.ip, 40000, 5432, SYN);
    let out = h.forwarded(&POD_A1, &d, &POD_A2);
    assert_eq!(out.len(), d.len(), "tag swapped, not added");
    // Same trunk, other port number: refused by pod-a2's ingress default.
    assert_eq!(
        h.dropped(&POD_A1, &tcp_datagram(&POD_A1, POD_A2.ip, 40000, 22, SYN)),
        ingress_drop("eni-pod-a2", None, None)
    );
}

#[test]
fn unknown_and_foreign_vlans_are_dropped() {
    let mut h = Harness::new(&Lab::new());
    let with_vlan = |ep: Endpoint, vlan| Endpoint { vlan: Some(vlan), ..ep };
    let d = tcp_datagram(&with_vlan(TRUNK_A, 1003), POD_B1.ip, 1, 80, SYN);
    assert_eq!(h.dropped(&TRUNK_A, &d), DropReason::UnknownVlan { vni: vni(10), vlan: 1003 });
    // 1002 is a member of trunk A, not of trunk B.
    let d = tcp_datagram(&with_vlan(TRUNK_B, 1002), POD_B1.ip, 1, 80, SYN);
    assert_eq!(h.dropped(&TRUNK_B, &d), DropReason::UnknownVlan { vni: vni(21), vlan: 1002 });
    // A non-trunk port has no members at all; ARP on an unknown VLAN gets no answer either.
    let d = arp_request(&with_vlan(PRIMARY_B, 1001), NODE_GW);
    assert_eq!(h.dropped(&PRIMARY_B, &d), DropReason::UnknownVlan { vni: vni(20), vlan: 1001 });
    let s = h.stats();
    assert_eq!(drops_of(&s, DropKind::UnknownVlan), 3);
    assert_eq!(port(&s, 21).drops(DropKind::UnknownVlan), 1);
}

#[test]
fn priority_tag_belongs_to_the_untagged_eni() {
    let mut h = Harness::new(&Lab::new());
    let ep = Endpoint { vlan: Some(0), ..TRUNK_A };
    let d = tcp_datagram(&ep, PRIMARY_B.ip, 1000, 22, SYN);
    let out = h.forwarded(&TRUNK_A, &d, &PRIMARY_B);
    assert_eq!(out.len(), d.len() - 4);
}

#[test]
fn stacked_tags_are_refused() {
    let mut h = Harness::new(&Lab::new());
    let inner = ethernet(GATEWAY_MAC, TRUNK_A.mac, Some(1001), ETHERTYPE_IPV4, &[0; 20]);
    let mut qinq = inner[..12].to_vec();
    qinq.extend_from_slice(&[0x81, 0x00, 0x03, 0xe9]);
    qinq.extend_from_slice(&inner[12..]);
    assert_eq!(h.dropped(&TRUNK_A, &geneve(10, None, &qinq)), DropReason::UnsupportedTpid(0x8100));
    let mut stag = inner.clone();
    stag[12..14].copy_from_slice(&[0x88, 0xa8]);
    assert_eq!(h.dropped(&TRUNK_A, &geneve(10, None, &stag)), DropReason::UnsupportedTpid(0x88a8));
}

#[test]
fn ports_accept_frames_only_from_their_registered_shim() {
    let mut h = Harness::new(&Lab::new());
    let d = tcp_datagram(&TRUNK_A, PRIMARY_B.ip, 1, 22, SYN);
    assert_eq!(h.send_raw(NODE_B, &d).0, Verdict::Drop(DropReason::UnknownPeer { vni: vni(10), from: NODE_B }));
    assert_eq!(h.send_raw(STRANGER, &d).0, Verdict::Drop(DropReason::UnknownPeer { vni: vni(10), from: STRANGER }));
    let mut other = d.clone();
    other[6] = 99;
    assert_eq!(h.send_raw(NODE_A, &other).0, Verdict::Drop(DropReason::UnknownPort { vni: vni(99) }));
    let s = h.stats();
    assert_eq!(port(&s, 10).rx_frames, 0, "a stranger's frames are not the port's");
    assert_eq!((drops_of(&s, DropKind::UnknownPeer), drops_of(&s, DropKind::UnknownPort)), (2, 1));
}

#[test]
fn routing_only_reaches_eni_addresses_of_the_vpc() {
    let mut h = Harness::new(&Lab::new());
    for dst in [Ipv4Addr::new(10, 0, 1, 99), Ipv4Addr::new(8, 8, 8, 8), Ipv4Addr::new(10, 0, 0, 255)] {
        assert_eq!(
            h.dropped(&TRUNK_A, &tcp_datagram(&TRUNK_A, dst, 1, 80, SYN)),
            DropReason::NoRoute { dst: dst.into() }
        );
    }
    // A secondary IP routes like the primary.
    h.forwarded(&PRIMARY_B, &tcp_datagram(&PRIMARY_B, Ipv4Addr::new(10, 0, 0, 11), 1, 22, SYN), &TRUNK_A);
    // Another VPC's addresses are not routes, even with the same numbers.
    let mut lab = Lab::new();
    lab.eni_mut("eni-primary-b").vpc_id = "vpc-other".into();
    let mut h = Harness::new(&lab);
    let dst = TRUNK_A.ip;
    assert_eq!(
        h.dropped(&PRIMARY_B, &tcp_datagram(&PRIMARY_B, dst, 1, 22, SYN)),
        DropReason::NoRoute { dst: dst.into() }
    );
}

#[test]
fn non_ipv4_and_wrong_macs_are_dropped() {
    let mut h = Harness::new(&Lab::new());
    let v6 = geneve(10, None, &ethernet(Mac([0x33, 0x33, 0, 0, 0, 1]), TRUNK_A.mac, None, 0x86dd, &[0x60; 40]));
    // IPv6 is parsed now (see tests/ipv6.rs): 40 bytes claiming a 24,672-byte payload are not.
    assert!(matches!(h.dropped(&TRUNK_A, &v6), DropReason::Malformed { layer: crate::drop::Layer::Ipv6, .. }));
    let lldp = geneve(10, None, &ethernet(Mac([0x01, 0x80, 0xc2, 0, 0, 0x0e]), TRUNK_A.mac, None, 0x88cc, &[0; 30]));
    assert_eq!(h.dropped(&TRUNK_A, &lldp), DropReason::UnsupportedEthertype(0x88cc));
    let ip = ipv4(TRUNK_A.ip, PRIMARY_B.ip, PROTO_TCP, &tcp(1, 22, SYN, 0));
    let bcast = geneve(10, None, &ethernet(ethernet::BROADCAST, TRUNK_A.mac, None, ETHERTYPE_IPV4, &ip));
    assert_eq!(h.dropped(&TRUNK_A, &bcast), DropReason::BroadcastOrMulticast { dst: ethernet::BROADCAST });
    let direct = geneve(10, None, &ethernet(PRIMARY_B.mac, TRUNK_A.mac, None, ETHERTYPE_IPV4, &ip));
    assert_eq!(h.dropped(&TRUNK_A, &direct), DropReason::NotForGateway { dst: PRIMARY_B.mac });
}

#[test]
fn unregistered_destination_port() {
    let mut lab = Lab::new();
    lab.ports.retain(|(v, _)| v.get() != 21);
    let mut h = Harness::new(&lab);
    let d = tcp_datagram(&TRUNK_A, POD_B1.ip, 1, 80, SYN);
    assert_eq!(h.dropped(&TRUNK_A, &d), DropReason::DestinationNotRegistered { eni: "eni-pod-b1".into() });
}

// ---------------------------------------------------------------------------------------------
// Gateway

#[test]
fn echo_to_the_gateway_is_answered_on_the_same_vlan() {
    let mut h = Harness::new(&Lab::new());
    let req = echo(ICMP_ECHO_REQUEST, 0x77, 3);
    let (v, out) = h.send(&POD_A1, &from_endpoint(&POD_A1, &ipv4(POD_A1.ip, POD_GW, PROTO_ICMP, &req)));
    assert!(matches!(v, Verdict::Reply { to: NODE_A, .. }), "{v:?}");
    let (g, f) = decode(&out);
    assert_eq!((g.vni.get(), f.tag.map(|t| t.vid()), f.dst, f.src), (10, Some(1001), TRUNK_A.mac, GATEWAY_MAC));
    let ip = crate::wire::ipv4::Packet::parse(f.payload, false).unwrap();
    assert_eq!((ip.src, ip.dst, ip.protocol, ip.ttl), (POD_GW, POD_A1.ip, PROTO_ICMP, 64));
    assert_eq!(checksum::internet(&f.payload[..20]), 0, "ip header checksum");
    assert_eq!(checksum::internet(ip.payload), 0, "icmp checksum");
    assert_eq!(ip.payload[0], ICMP_ECHO_REPLY);
    assert_eq!(ip.payload[4..], req[4..], "id, seq and data echoed");
    // Any vSwitch gateway of the VPC answers, not only the sender's own.
    let d = echo_datagram(&POD_A1, NODE_GW, ICMP_ECHO_REQUEST, 1);
    assert!(matches!(h.send(&POD_A1, &d).0, Verdict::Reply { .. }));
    // Only pings: TCP to the gateway goes nowhere.
    let d = tcp_datagram(&POD_A1, POD_GW, 1, 80, SYN);
    assert_eq!(h.dropped(&POD_A1, &d), DropReason::ToGateway { dst: POD_GW.into() });
    assert_eq!(port(&h.stats(), 10).tx_frames, 2);
}

// ---------------------------------------------------------------------------------------------
// Source/destination check

#[test]
fn spoofed_sources_are_dropped_only_with_source_dest_check() {
    let spoofed = |src: Ipv4Addr| from_endpoint(&POD_A1, &ipv4(src, POD_B1.ip, PROTO_TCP, &tcp(1, 80, SYN, 0)));
    let mut h = Harness::new(&Lab::new());
    h.forwarded(&POD_A1, &spoofed(POD_A2.ip), &POD_B1);
    h.forwarded(&POD_A1, &spoofed(Ipv4Addr::new(10, 9, 9, 9)), &POD_B1);

    let mut lab = Lab::new();
    lab.eni_mut("eni-pod-a1").source_dest_check = true;
    lab.eni_mut("eni-trunk-a").source_dest_check = true;
    let mut h = Harness::new(&lab);
    let eni = "eni-pod-a1";
    assert_eq!(h.dropped(&POD_A1, &spoofed(POD_A2.ip)), DropReason::Spoofed { eni: eni.into(), src: POD_A2.ip.into() });
    // The trunk's address is not the member's either, although they share a wire.
    assert_eq!(
        h.dropped(&POD_A1, &spoofed(TRUNK_A.ip)),
        DropReason::Spoofed { eni: eni.into(), src: TRUNK_A.ip.into() }
    );
    h.forwarded(&POD_A1, &spoofed(POD_A1.ip), &POD_B1);
    // Secondary IPs are the ENI's own.
    let d = from_endpoint(&TRUNK_A, &ipv4(Ipv4Addr::new(10, 0, 0, 11), POD_B1.ip, PROTO_TCP, &tcp(1, 80, SYN, 0)));
    h.forwarded(&TRUNK_A, &d, &POD_B1);
    assert_eq!(drops_of(&h.stats(), DropKind::Spoofed), 2);
}

// ---------------------------------------------------------------------------------------------
// Security groups

#[test]
fn egress_rule_drops_name_eni_group_and_rule() {
    let mut lab = Lab::new();
    lab.group_mut("sg-web").rules.push(rule(Direction::Egress, 5, Policy::Drop, Protocol::Tcp, Some(80), any_ip()));
    let mut h = Harness::new(&lab);
    let d = tcp_datagram(&POD_A1, POD_B1.ip, 40000, 80, SYN);
    assert_eq!(h.dropped(&POD_A1, &d), egress_drop("eni-pod-a1", Some("sg-web"), Some(1)));
    // Other ports still leave (basic default: egress allow) and meet ingress.
    let d = tcp_datagram(&POD_A1, POD_B1.ip, 40000, 81, SYN);
    assert_eq!(h.dropped(&POD_A1, &d), ingress_drop("eni-pod-b1", None, None));
    let s = h.stats();
    assert_eq!((drops_of(&s, DropKind::SecurityGroupEgress), drops_of(&s, DropKind::SecurityGroupIngress)), (1, 1));
}

#[test]
fn first_match_by_priority_and_drop_wins_ties() {
    let web = |rules: Vec<Rule>| {
        let mut lab = Lab::new();
        lab.group_mut("sg-web").rules = rules;
        Harness::new(&lab)
    };
    let d = tcp_datagram(&TRUNK_A, POD_B1.ip, 40000, 80, SYN);
    let accept = |p| rule(Direction::Ingress, p, Policy::Accept, Protocol::Tcp, Some(80), any_ip());
    let deny = |p| rule(Direction::Ingress, p, Policy::Drop, Protocol::All, None, any_ip());

    web(vec![deny(2), accept(1)]).forwarded(&TRUNK_A, &d, &POD_B1);
    assert_eq!(
        web(vec![accept(2), deny(1)]).dropped(&TRUNK_A, &d),
        ingress_drop("eni-pod-b1", Some("sg-web"), Some(1))
    );
    assert_eq!(
        web(vec![accept(7), deny(7)]).dropped(&TRUNK_A, &d),
        ingress_drop("eni-pod-b1", Some("sg-web"), Some(1))
    );
    assert_eq!(
        web(vec![deny(7), accept(7)]).dropped(&TRUNK_A, &d),
        ingress_drop("eni-pod-b1", Some("sg-web"), Some(0))
    );

    // Across groups: all rules of all the ENI's groups are one list.
    let mut lab = Lab::new();
    lab.groups.push(SecurityGroupConfig {
        id: "sg-extra".into(),
        vpc_id: VPC.into(),
        kind: SgKind::Basic,
        inner_access_accept: false,
        rules: vec![deny(1)],
    });
    lab.eni_mut("eni-pod-b1").security_group_ids.push("sg-extra".into());
    assert_eq!(Harness::new(&lab).dropped(&TRUNK_A, &d), ingress_drop("eni-pod-b1", Some("sg-extra"), Some(0)));
}

#[test]
fn rule_fields_protocol_ports_source_ports_and_local_cidr() {
    let mut lab = Lab::new();
    let mut r = rule(Direction::Ingress, 1, Policy::Accept, Protocol::Udp, None, Peer::Cidr(cidr([10, 0, 0, 10], 32)));
    r.port_range = Some((50, 60));
    r.source_port_range = Some((1000, 1000));
    r.local_cidr = Some(cidr([10, 0, 0, 11], 32));
    lab.group_mut("sg-node").rules = vec![r];
    lab.group_mut("sg-node").inner_access_accept = false;
    let mut h = Harness::new(&lab);
    // Trunk B may send as 10.0.0.10: SourceDestCheck is off in the lab.
    let as_a = |dst: [u8; 4], l4: u8, sport, dport| {
        let payload = if l4 == PROTO_UDP { udp(sport, dport, b"x") } else { tcp(sport, dport, SYN, 0) };
        from_endpoint(&TRUNK_B, &ipv4(TRUNK_A.ip, Ipv4Addr::from(dst), l4, &payload))
    };
    let refused = |h: &mut Harness, d: &[u8]| {
        assert_eq!(h.dropped(&TRUNK_B, d), ingress_drop("eni-trunk-a", None, None));
    };
    h.forwarded(&TRUNK_B, &as_a([10, 0, 0, 11], PROTO_UDP, 1000, 55), &TRUNK_A);
    h.forwarded(&TRUNK_B, &as_a([10, 0, 0, 11], PROTO_UDP, 1000, 50), &TRUNK_A);
    h.forwarded(&TRUNK_B, &as_a([10, 0, 0, 11], PROTO_UDP, 1000, 60), &TRUNK_A);
    // Local CIDR: only 10.0.0.11 of trunk A's two addresses is opened.
    refused(&mut h, &as_a([10, 0, 0, 10], PROTO_UDP, 1000, 55));
    // Source port, destination port, protocol.
    refused(&mut h, &as_a([10, 0, 0, 11], PROTO_UDP, 1001, 55));
    refused(&mut h, &as_a([10, 0, 0, 11], PROTO_UDP, 1000, 61));
    refused(&mut h, &as_a([10, 0, 0, 11], PROTO_TCP, 1000, 55));
    // Peer: from its real address (10.0.0.21) trunk B is not 10.0.0.10/32.
    refused(&mut h, &udp_datagram(&TRUNK_B, Ipv4Addr::new(10, 0, 0, 11), 1000, 55));
}

#[test]
fn basic_and_enterprise_defaults() {
    // Basic: a member with no egress rule may send; an ENI with no groups too.
    let d = tcp_datagram(&POD_A1, POD_B1.ip, 40000, 80, SYN);
    Harness::new(&Lab::new()).forwarded(&POD_A1, &d, &POD_B1);
    let mut lab = Lab::new();
    lab.eni_mut("eni-pod-a1").security_group_ids.clear();
    lab.eni_mut("eni-pod-b1").security_group_ids.clear();
    let mut h = Harness::new(&lab);
    assert_eq!(h.dropped(&POD_A1, &d), ingress_drop("eni-pod-b1", None, None), "no group: ingress denied");
    // Enterprise: egress denied without a rule, ingress too.
    let mut lab = Lab::new();
    lab.group_mut("sg-web").kind = SgKind::Enterprise;
    let mut h = Harness::new(&lab);
    assert_eq!(h.dropped(&POD_A1, &d), egress_drop("eni-pod-a1", None, None));
    lab.group_mut("sg-web").rules.push(rule(Direction::Egress, 1, Policy::Accept, Protocol::All, None, any_ip()));
    Harness::new(&lab).forwarded(&POD_A1, &d, &POD_B1);
}

#[test]
fn inner_access_policy_lets_group_members_talk_regardless_of_rules() {
    let d = tcp_datagram(&PRIMARY_B, TRUNK_A.ip, 40000, 22, SYN);
    // sg-node has no rules at all, but inner access is accepted, and beats even a drop rule.
    let mut lab = Lab::new();
    lab.group_mut("sg-node").rules.push(rule(Direction::Ingress, 1, Policy::Drop, Protocol::All, None, any_ip()));
    Harness::new(&lab).forwarded(&PRIMARY_B, &d, &TRUNK_A);
    lab.group_mut("sg-node").inner_access_accept = false;
    assert_eq!(Harness::new(&lab).dropped(&PRIMARY_B, &d), ingress_drop("eni-trunk-a", Some("sg-node"), Some(0)));
    // Enterprise groups are always isolated.
    let mut lab = Lab::new();
    lab.group_mut("sg-node").kind = SgKind::Enterprise;
    assert_eq!(Harness::new(&lab).dropped(&PRIMARY_B, &d), egress_drop("eni-primary-b", None, None));
    // Members of sg-web do not share inner access (it is off there).
    let d = tcp_datagram(&POD_A1, POD_B1.ip, 1, 22, SYN);
    assert_eq!(Harness::new(&Lab::new()).dropped(&POD_A1, &d), ingress_drop("eni-pod-b1", None, None));
}

#[test]
fn group_references_resolve_to_every_ip_of_the_group() {
    let mut h = Harness::new(&Lab::new());
    // pod-b1 is in sg-web on another node: admitted to pod-a2's 5432.
    h.forwarded(&POD_B1, &tcp_datagram(&POD_B1, POD_A2.ip, 40000, 5432, SYN), &POD_A2);
    // trunk A is not in sg-web: refused by the rule's default.
    let d = tcp_datagram(&TRUNK_A, POD_A2.ip, 40000, 5432, SYN);
    assert_eq!(h.dropped(&TRUNK_A, &d), ingress_drop("eni-pod-a2", None, None));
    // Put trunk A (both its IPs) into sg-web: now admitted, from its secondary IP too.
    let mut lab = Lab::new();
    lab.eni_mut("eni-trunk-a").security_group_ids.push("sg-web".into());
    let mut h = Harness::new(&lab);
    h.forwarded(&TRUNK_A, &d, &POD_A2);
    let sec = from_endpoint(&TRUNK_A, &ipv4(Ipv4Addr::new(10, 0, 0, 11), POD_A2.ip, PROTO_TCP, &tcp(2, 5432, SYN, 0)));
    h.forwarded(&TRUNK_A, &sec, &POD_A2);
}

#[test]
fn health_checks_from_100_64_need_no_rule_but_drop_rules_still_apply() {
    let from_hc = |dport| {
        from_endpoint(&TRUNK_A, &ipv4(Ipv4Addr::new(100, 64, 3, 7), POD_B1.ip, PROTO_TCP, &tcp(1, dport, SYN, 0)))
    };
    let mut lab = Lab::new();
    let mut h = Harness::new(&lab);
    h.forwarded(&TRUNK_A, &from_hc(22), &POD_B1);
    lab.group_mut("sg-web").rules.push(rule(Direction::Ingress, 1, Policy::Drop, Protocol::Tcp, Some(23), any_ip()));
    let mut h = Harness::new(&lab);
    assert_eq!(h.dropped(&TRUNK_A, &from_hc(23)), ingress_drop("eni-pod-b1", Some("sg-web"), Some(1)));
    let t = h.fabric.trace(h.now, NODE_A, &from_hc(22));
    assert!(t.steps.iter().any(|s| matches!(s, Step::SecurityGroup { decision: SgMatch::HealthCheck, .. })));
}

// ---------------------------------------------------------------------------------------------
// Conntrack

#[test]
fn replies_of_allowed_flows_pass_without_rules() {
    let mut h = Harness::new(&Lab::new());
    let reply = tcp_datagram(&POD_B1, TRUNK_A.ip, 80, 40000, SYN_ACK);
    // sg-node admits nothing from pod-b1: an unsolicited "reply" is refused.
    assert_eq!(h.dropped(&POD_B1, &reply), ingress_drop("eni-trunk-a", None, None));
    h.forwarded(&TRUNK_A, &tcp_datagram(&TRUNK_A, POD_B1.ip, 40000, 80, SYN), &POD_B1);
    h.forwarded(&POD_B1, &reply, &TRUNK_A);
    h.forwarded(&TRUNK_A, &tcp_datagram(&TRUNK_A, POD_B1.ip, 40000, 80, ACK), &POD_B1);
    assert_eq!(h.fabric.flows(h.now)[0].state, FlowState::TcpEstablished);
    // The same ports the other way round are a different connection.
    let d = tcp_datagram(&POD_B1, TRUNK_A.ip, 40000, 80, SYN);
    assert_eq!(h.dropped(&POD_B1, &d), ingress_drop("eni-trunk-a", None, None));
}

#[test]
fn echo_replies_ride_on_the_request_but_requests_do_not() {
    let mut lab = Lab::new();
    lab.group_mut("sg-web").rules.push(rule(
        Direction::Ingress,
        1,
        Policy::Accept,
        Protocol::Icmp,
        None,
        Peer::Cidr(cidr([10, 0, 0, 10], 32)),
    ));
    let mut h = Harness::new(&lab);
    let reply = echo_datagram(&POD_A1, TRUNK_A.ip, ICMP_ECHO_REPLY, 5);
    assert_eq!(h.dropped(&POD_A1, &reply), ingress_drop("eni-trunk-a", None, None));
    h.forwarded(&TRUNK_A, &echo_datagram(&TRUNK_A, POD_A1.ip, ICMP_ECHO_REQUEST, 5), &POD_A1);
    h.forwarded(&POD_A1, &reply, &TRUNK_A);
    // Another echo id is not part of that exchange, and a request back is not a reply.
    let other = echo_datagram(&POD_A1, TRUNK_A.ip, ICMP_ECHO_REPLY, 6);
    assert_eq!(h.dropped(&POD_A1, &other), ingress_drop("eni-trunk-a", None, None));
    let req_back = echo_datagram(&POD_A1, TRUNK_A.ip, ICMP_ECHO_REQUEST, 5);
    assert_eq!(h.dropped(&POD_A1, &req_back), ingress_drop("eni-trunk-a", None, None));
}

#[test]
fn icmp_errors_about_a_tracked_flow_are_related() {
    let mut h = Harness::new(&Lab::new());
    let syn_ip = ipv4(TRUNK_A.ip, POD_B1.ip, PROTO_TCP, &tcp(40000, 80, SYN, 0));
    let unreachable =
        from_endpoint(&POD_B1, &ipv4(POD_B1.ip, TRUNK_A.ip, PROTO_ICMP, &icmp(3, 3, [0; 4], &syn_ip[..28])));
    assert_eq!(h.dropped(&POD_B1, &unreachable), ingress_drop("eni-trunk-a", None, None));
    h.forwarded(&TRUNK_A, &from_endpoint(&TRUNK_A, &syn_ip), &POD_B1);
    h.forwarded(&POD_B1, &unreachable, &TRUNK_A);
    let t = h.fabric.trace(h.now, NODE_B, &unreachable);
    assert!(t.steps.contains(&Step::Conntrack(CtLookup::Related)));
    // The same error from an ENI that is not the flow's other end vouches for nothing: the
    // receiver's security group judges it.
    let forged = from_endpoint(&POD_A2, &ipv4(POD_A2.ip, TRUNK_A.ip, PROTO_ICMP, &icmp(3, 3, [0; 4], &syn_ip[..28])));
    assert_eq!(h.dropped(&POD_A2, &forged), ingress_drop("eni-trunk-a", None, None));
}

#[test]
fn conntrack_expiry_follows_the_cloud_timeouts() {
    let mut h = Harness::new(&Lab::new());
    let syn = tcp_datagram(&TRUNK_A, POD_B1.ip, 40000, 80, SYN);
    let synack = tcp_datagram(&POD_B1, TRUNK_A.ip, 80, 40000, SYN_ACK);
    let ack = tcp_datagram(&TRUNK_A, POD_B1.ip, 40000, 80, ACK);
    let data_back = tcp_datagram(&POD_B1, TRUNK_A.ip, 80, 40000, ACK);
    h.forwarded(&TRUNK_A, &syn, &POD_B1);
    // Handshake timeout (120 s): a SYN-ACK after that is a stranger.
    h.advance_secs(120);
    assert_eq!(h.dropped(&POD_B1, &synack), ingress_drop("eni-trunk-a", None, None));
    h.forwarded(&TRUNK_A, &syn, &POD_B1);
    h.advance_secs(119);
    h.forwarded(&POD_B1, &synack, &TRUNK_A);
    h.forwarded(&TRUNK_A, &ack, &POD_B1);
    // Established: 910 s of silence is fine, 910 s is not.
    h.advance_secs(909);
    h.forwarded(&POD_B1, &data_back, &TRUNK_A);
    h.advance_secs(910);
    assert_eq!(h.dropped(&POD_B1, &data_back), ingress_drop("eni-trunk-a", None, None));
    assert_eq!(h.expire(), 1);
    assert_eq!(h.stats().conntrack_entries, 0);
}

#[test]
fn closing_and_per_eni_timeouts() {
    let mut lab = Lab::new();
    lab.group_mut("sg-web").rules.push(rule(Direction::Ingress, 1, Policy::Accept, Protocol::Udp, Some(53), any_ip()));
    lab.eni_mut("eni-pod-b1").conntrack.udp = Duration::from_secs(10);
    let mut h = Harness::new(&lab);
    // UDP: the shorter of the two ENIs' timeouts (10 s, not 30 s) applies.
    h.forwarded(&TRUNK_A, &udp_datagram(&TRUNK_A, POD_B1.ip, 5000, 53), &POD_B1);
    h.advance_secs(9);
    let back = udp_datagram(&POD_B1, TRUNK_A.ip, 53, 5000);
    h.forwarded(&POD_B1, &back, &TRUNK_A);
    h.advance_secs(10);
    assert!(matches!(h.dropped(&POD_B1, &back), DropReason::SecurityGroupIngress { .. }));

    // TCP: FIN both ways → closed timeout (3 s); RST too.
    let a = |flags| tcp_datagram(&TRUNK_A, POD_B1.ip, 40000, 80, flags);
    let b = |flags| tcp_datagram(&POD_B1, TRUNK_A.ip, 80, 40000, flags);
    h.forwarded(&TRUNK_A, &a(SYN), &POD_B1);
    h.forwarded(&POD_B1, &b(SYN_ACK), &TRUNK_A);
    h.forwarded(&TRUNK_A, &a(ACK), &POD_B1);
    h.forwarded(&TRUNK_A, &a(TCP_FIN | ACK), &POD_B1);
    // Half closed: the other side may keep talking for longer than 3 s.
    h.advance_secs(60);
    h.forwarded(&POD_B1, &b(ACK), &TRUNK_A);
    h.forwarded(&POD_B1, &b(TCP_FIN | ACK), &TRUNK_A);
    h.advance_secs(2);
    h.forwarded(&TRUNK_A, &a(ACK), &POD_B1);
    h.advance_secs(3);
    assert!(matches!(h.dropped(&POD_B1, &b(ACK)), DropReason::SecurityGroupIngress { .. }));
    // RST on a fresh connection: 3 s.
    h.forwarded(&TRUNK_A, &tcp_datagram(&TRUNK_A, POD_B1.ip, 40001, 80, SYN), &POD_B1);
    h.forwarded(&POD_B1, &tcp_datagram(&POD_B1, TRUNK_A.ip, 80, 40001, TCP_RST | ACK), &TRUNK_A);
    h.advance_secs(3);
    let late = tcp_datagram(&POD_B1, TRUNK_A.ip, 80, 40001, TCP_RST | ACK);
    assert!(matches!(h.dropped(&POD_B1, &late), DropReason::SecurityGroupIngress { .. }));
}

#[test]
fn revoked_rules_leave_tracked_flows_alone_until_they_expire() {
    let mut lab = Lab::new();
    let mut h = Harness::new(&lab);
    let a = |sport, flags| tcp_datagram(&TRUNK_A, POD_B1.ip, sport, 80, flags);
    let b = |dport, flags| tcp_datagram(&POD_B1, TRUNK_A.ip, 80, dport, flags);
    h.forwarded(&TRUNK_A, &a(40000, SYN), &POD_B1);
    h.forwarded(&POD_B1, &b(40000, SYN_ACK), &TRUNK_A);
    h.forwarded(&TRUNK_A, &a(40000, ACK), &POD_B1);

    // RevokeSecurityGroup: sg-web loses its only rule.
    lab.group_mut("sg-web").rules.clear();
    h.set_config(lab.build(2));
    assert_eq!(h.stats().epoch, 2);
    h.advance_secs(100);
    h.forwarded(&TRUNK_A, &a(40000, ACK), &POD_B1);
    h.forwarded(&POD_B1, &b(40000, ACK), &TRUNK_A);
    // A new connection meets the new rules.
    assert_eq!(h.dropped(&TRUNK_A, &a(40001, SYN)), ingress_drop("eni-pod-b1", None, None));
    // Once the flow expires it is judged again, and refused.
    h.advance_secs(910);
    assert_eq!(h.dropped(&TRUNK_A, &a(40000, ACK)), ingress_drop("eni-pod-b1", None, None));
    // Counters survived the swap.
    assert_eq!(port(&h.stats(), 10).rx_frames, 5);
}

#[test]
fn flows_do_not_follow_an_address_to_another_eni() {
    let mut lab = Lab::new();
    let mut h = Harness::new(&lab);
    h.forwarded(&TRUNK_A, &tcp_datagram(&TRUNK_A, POD_B1.ip, 40000, 80, SYN), &POD_B1);
    // pod-b1's address moves to pod-a2 (same vSwitch), whose group admits only 5432.
    let moved = POD_B1.ip;
    lab.eni_mut("eni-pod-b1").ips = vec![Ipv4Addr::new(10, 0, 1, 22)];
    lab.eni_mut("eni-pod-b1").primary_ip = Ipv4Addr::new(10, 0, 1, 22);
    lab.eni_mut("eni-pod-a2").ips.push(moved);
    h.set_config(lab.build(2));
    let d = tcp_datagram(&TRUNK_A, moved, 40000, 80, ACK);
    assert_eq!(h.dropped(&TRUNK_A, &d), ingress_drop("eni-pod-a2", None, None));
}

#[test]
fn a_full_table_refuses_new_flows_but_not_tracked_ones() {
    let mut options = FabricOptions::new(RandomState::new());
    options.conntrack_max = 1;
    let mut h = Harness::with_options(&Lab::new(), options);
    h.forwarded(&TRUNK_A, &tcp_datagram(&TRUNK_A, POD_B1.ip, 40000, 80, SYN), &POD_B1);
    assert_eq!(h.dropped(&TRUNK_A, &tcp_datagram(&TRUNK_A, POD_B1.ip, 40001, 80, SYN)), DropReason::ConntrackFull);
    h.forwarded(&POD_B1, &tcp_datagram(&POD_B1, TRUNK_A.ip, 80, 40000, SYN_ACK), &TRUNK_A);
    // Untracked packets (lone RST) are unaffected.
    h.forwarded(&TRUNK_A, &tcp_datagram(&TRUNK_A, POD_B1.ip, 40002, 80, TCP_RST), &POD_B1);
}

// ---------------------------------------------------------------------------------------------
// Offloads

fn tso_hdr() -> VnetHdr {
    VnetHdr {
        flags: vnet::F_NEEDS_CSUM,
        gso_type: vnet::GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
    }
}

#[test]
fn gso_super_frame_crosses_whole_with_the_tag_pushed_and_offsets_moved() {
    let mut h = Harness::new(&Lab::new());
    h.forwarded(&TRUNK_A, &tcp_datagram(&TRUNK_A, POD_B1.ip, 40000, 80, SYN), &POD_B1);
    h.forwarded(&POD_B1, &tcp_datagram(&POD_B1, TRUNK_A.ip, 80, 40000, SYN_ACK), &TRUNK_A);

    // 20 KB of TCP payload, IP total length 0 (as for a GSO frame that does not fit 16 bits),
    // partial checksum in the TCP header.
    let mut ip = ipv4(TRUNK_A.ip, POD_B1.ip, PROTO_TCP, &tcp(40000, 80, ACK | 0x08, 20_000));
    ip[2..4].fill(0);
    ip[20 + 16..20 + 18].copy_from_slice(&[0xab, 0xcd]); // pseudo-header sum, not a real checksum
    let frame = ethernet(GATEWAY_MAC, TRUNK_A.mac, None, ETHERTYPE_IPV4, &ip);
    let d = geneve(10, Some(tso_hdr()), &frame);
    let out = h.forwarded(&TRUNK_A, &d, &POD_B1);
    assert_eq!(out.len(), d.len() + 4);
    let (g, f) = decode(&out);
    assert_eq!(g.vnet, Some(VnetHdr { csum_start: 38, hdr_len: 58, ..tso_hdr() }));
    assert_eq!(f.payload, &ip[..], "payload untouched, checksum field included");

    // And back: member → untagged, −4.
    let mut ip = ipv4(POD_B1.ip, TRUNK_A.ip, PROTO_TCP, &tcp(80, 40000, ACK, 20_000));
    ip[2..4].fill(0);
    let back = geneve(
        21,
        Some(VnetHdr { csum_start: 38, hdr_len: 58, ..tso_hdr() }),
        &ethernet(GATEWAY_MAC, TRUNK_B.mac, Some(1001), ETHERTYPE_IPV4, &ip),
    );
    let out = h.forwarded(&POD_B1, &back, &TRUNK_A);
    assert_eq!(decode(&out).0.vnet, Some(tso_hdr()));

    // Without the GSO header the same zero total length is malformed.
    let plain = geneve(10, None, &frame);
    assert!(matches!(h.dropped(&TRUNK_A, &plain), DropReason::Malformed { layer: Layer::Ipv4, .. }));
    // A plain vnet option is kept (present, all zero) and still all zero after the push.
    let plain_opt = geneve(
        10,
        Some(VnetHdr::PLAIN),
        &ethernet(
            GATEWAY_MAC,
            TRUNK_A.mac,
            None,
            ETHERTYPE_IPV4,
            &ipv4(TRUNK_A.ip, POD_B1.ip, PROTO_TCP, &tcp(40000, 80, ACK, 4)),
        ),
    );
    let out = h.forwarded(&TRUNK_A, &plain_opt, &POD_B1);
    assert_eq!(decode(&out).0.vnet, Some(VnetHdr::PLAIN));
}

/// `process_split` names the unchanged packet inside the input and writes at most
/// `MAX_HEADER_LEN` bytes (vnet option in, member tag pushed: the longest headers) for a forward;
/// the gateway's replies still need room for the whole datagram. (That its output equals
/// `process`'s is checked by the harness on every datagram of every scenario.)
#[test]
fn process_split_forwards_from_a_header_sized_buffer() {
    let fresh = || Fabric::new(Arc::new(Lab::new().build(1)), FabricOptions::new(RandomState::new()));
    let ip = ipv4(TRUNK_A.ip, POD_B1.ip, PROTO_TCP, &tcp(40000, 80, SYN, 1000));
    let d = geneve(10, Some(VnetHdr::PLAIN), &ethernet(GATEWAY_MAC, TRUNK_A.mac, None, ETHERTYPE_IPV4, &ip));
    let mut headers = [0u8; MAX_HEADER_LEN];

    let mut f = fresh();
    let v = f.process_split(Instant(0), NODE_A, &d, &mut headers);
    let SplitVerdict::Forward { to, header_len, payload } = v else { panic!("expected a forward, got {v:?}") };
    // Untranslated: only Geneve and Ethernet are written (translated flows add IPv4 and L4).
    assert_eq!((to, header_len), (NODE_B, crate::wire::geneve::MAX_EMIT_LEN + ethernet::TAGGED_HEADER_LEN));
    assert_eq!(payload, d.len() - ip.len()..d.len());
    let mut out = vec![0u8; d.len() + crate::MAX_GROWTH];
    assert_eq!(fresh().process(Instant(0), NODE_A, &d, &mut out), Verdict::Forward { to: NODE_B, len: d.len() + 4 });
    assert_eq!(&out[..header_len], &headers[..header_len]);
    assert_eq!(&out[header_len..d.len() + 4], &ip[..]);
    assert_eq!(f.stats().conntrack_entries, 1);
    assert_eq!(port(&f.stats(), 21).tx_bytes, (d.len() + 4 - 24) as u64, "the frame is counted whole");

    // One byte short of the headers: dropped and not tracked.
    let mut short = fresh();
    let v = short.process_split(Instant(0), NODE_A, &d, &mut headers[..header_len - 1]);
    assert_eq!(v, SplitVerdict::Drop(DropReason::OutputBufferTooSmall { needed: header_len }));
    assert_eq!(short.stats().conntrack_entries, 0);

    // Replies are written whole.
    for (from, q) in
        [(POD_A1, echo_datagram(&POD_A1, POD_GW, ICMP_ECHO_REQUEST, 1)), (POD_A1, arp_request(&POD_A1, POD_GW))]
    {
        let v = f.process_split(Instant(0), from.peer, &q, &mut headers[..header_len]);
        assert!(matches!(v, SplitVerdict::Drop(DropReason::OutputBufferTooSmall { .. })), "{v:?}");
        let mut whole = vec![0u8; q.len() + crate::MAX_GROWTH];
        let v = f.process_split(Instant(0), from.peer, &q, &mut whole);
        assert!(matches!(v, SplitVerdict::Reply { to: NODE_A, .. }), "{v:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Stats, trace, config

#[test]
fn stats_snapshot_is_a_table() {
    let mut h = Harness::new(&Lab::new());
    h.send(&TRUNK_A, &arp_request(&TRUNK_A, NODE_GW));
    h.send(&POD_A1, &tcp_datagram(&POD_A1, POD_B1.ip, 1, 22, SYN));
    h.send_raw(STRANGER, &[0; 3]);
    let s = h.stats();
    assert_eq!(s.epoch, 1);
    let rows: Vec<(u32, &str)> = s.ports.iter().map(|p| (p.vni, p.eni_id.as_str())).collect();
    assert_eq!(rows, vec![(10, "eni-trunk-a"), (20, "eni-primary-b"), (21, "eni-trunk-b")]);
    let p10 = port(&s, 10);
    assert_eq!(p10.drops.len(), 1);
    assert_eq!(p10.drops[0].reason, "security_group_ingress");
    let names: Vec<&str> = s.drops.iter().map(|d| d.reason).collect();
    assert_eq!(names, vec!["malformed_geneve", "security_group_ingress"]);
    assert_eq!(s.drops[0].bytes, 3, "no port: the datagram is counted");
}

#[test]
fn trace_explains_without_side_effects() {
    let mut h = Harness::new(&Lab::new());
    let d = tcp_datagram(&POD_A1, POD_B1.ip, 40000, 80, SYN);
    let t = h.fabric.trace(h.now, NODE_A, &d);
    assert!(matches!(t.verdict, Verdict::Forward { to: NODE_B, .. }));
    let names: Vec<&str> = t
        .steps
        .iter()
        .map(|s| match s {
            Step::Decap { .. } => "decap",
            Step::Port { .. } => "port",
            Step::Demux { .. } => "demux",
            Step::Ipv4 { .. } => "ipv4",
            Step::SourceCheck { .. } => "source_check",
            Step::Route { .. } => "route",
            Step::Conntrack(_) => "conntrack",
            Step::SecurityGroup { .. } => "sg",
            Step::FlowStarted { .. } => "flow",
            Step::Rewrite { .. } => "rewrite",
            _ => "other",
        })
        .collect();
    assert_eq!(
        names,
        ["decap", "port", "demux", "ipv4", "source_check", "route", "conntrack", "sg", "sg", "flow", "rewrite"]
    );
    assert!(t.steps.contains(&Step::SecurityGroup {
        direction: Direction::Ingress,
        eni: "eni-pod-b1".into(),
        decision: SgMatch::Rule { sg: "sg-web".into(), id: "#0".into(), index: 0, priority: 1, policy: Policy::Accept },
    }));
    assert!(t.steps.contains(&Step::Demux { vlan: Some(1001), eni: "eni-pod-a1".into() }));
    // The output is what process would send.
    let (v, out) = h.send(&POD_A1, &d);
    assert_eq!((v, out), (t.verdict.clone(), t.output.clone()));
    // Tracing changed nothing: only the one real send is counted and tracked.
    assert_eq!(h.stats().conntrack_entries, 1);
    assert_eq!(port(&h.stats(), 10).rx_frames, 1);
    let t2 = h.fabric.trace(h.now, NODE_B, &tcp_datagram(&POD_B1, POD_A1.ip, 80, 40000, SYN_ACK));
    assert!(
        t2.steps.contains(&Step::Conntrack(CtLookup::Established {
            dir: FlowDir::Reply,
            state: FlowState::TcpSynReceived
        }))
    );
    assert_eq!(h.fabric.flows(h.now)[0].state, FlowState::TcpSynSent, "trace did not advance the flow");
    let t3 = h.fabric.trace(h.now, NODE_A, &[1, 2]);
    assert!(t3.steps.is_empty() && t3.output.is_empty());
}

#[test]
fn output_buffer_too_small_is_a_drop_not_a_panic() {
    let mut h = Harness::new(&Lab::new());
    let d = tcp_datagram(&TRUNK_A, POD_B1.ip, 1, 80, SYN);
    for size in [0, 7, 8, 25, d.len() + 3] {
        let mut out = vec![0; size];
        let v = h.fabric.process(h.now, NODE_A, &d, &mut out);
        assert_eq!(v, Verdict::Drop(DropReason::OutputBufferTooSmall { needed: d.len() + 4 }), "size {size}");
    }
    assert_eq!(h.stats().conntrack_entries, 0, "nothing tracked for an undelivered packet");
    let mut out = vec![0; d.len() + crate::MAX_GROWTH];
    assert!(matches!(h.fabric.process(h.now, NODE_A, &d, &mut out), Verdict::Forward { .. }));
}

#[test]
fn fragments_are_not_forwarded() {
    let mut h = Harness::new(&Lab::new());
    let mut ip = ipv4(TRUNK_A.ip, POD_B1.ip, PROTO_UDP, &udp(1, 53, &[0; 16]));
    ip[6] = 0x20; // MF
    assert_eq!(h.dropped(&TRUNK_A, &from_endpoint(&TRUNK_A, &ip)), DropReason::Ipv4Fragment);
}

#[test]
fn inconsistent_snapshots_are_refused() {
    let err = |lab: Lab| FabricConfig::new(1, lab.ports, lab.enis, lab.groups).unwrap_err();
    let mut lab = Lab::new();
    lab.eni_mut("eni-pod-a2").ips.push(POD_B1.ip);
    assert_eq!(err(lab), ConfigError::DuplicateIp { vpc_id: VPC.into(), ip: POD_B1.ip });
    let mut lab = Lab::new();
    lab.eni_mut("eni-pod-a2").attachment = Attachment::Member { trunk_vni: vni(10), vlan: 1001 };
    assert_eq!(err(lab), ConfigError::DuplicateVlan { trunk_vni: vni(10), vlan: 1001 });
    let mut lab = Lab::new();
    lab.eni_mut("eni-pod-a2").attachment = Attachment::Member { trunk_vni: vni(10), vlan: 4095 };
    assert!(matches!(err(lab), ConfigError::BadVlan { vlan: 4095, .. }));
    let mut lab = Lab::new();
    lab.eni_mut("eni-pod-a2").security_group_ids.push("sg-gone".into());
    assert!(matches!(err(lab), ConfigError::UnknownSecurityGroup { .. }));
    let mut lab = Lab::new();
    lab.eni_mut("eni-primary-b").attachment = Attachment::Port { vni: vni(10) };
    assert!(matches!(err(lab), ConfigError::PortEniMismatch { .. }));
    // The same IP in two VPCs is fine.
    let mut lab = Lab::new();
    lab.eni_mut("eni-primary-b").vpc_id = "vpc-2".into();
    lab.eni_mut("eni-primary-b").ips.push(TRUNK_A.ip);
    assert!(FabricConfig::new(1, lab.ports, lab.enis, lab.groups).is_ok());
}

#[test]
fn empty_config_drops_everything_as_unknown_port() {
    let mut f = Fabric::new(Arc::new(FabricConfig::empty(0)), FabricOptions::new(RandomState::new()));
    let mut out = [0u8; 128];
    let v = f.process(Instant(0), NODE_A, &arp_request(&TRUNK_A, NODE_GW), &mut out);
    assert_eq!(v, Verdict::Drop(DropReason::UnknownPort { vni: vni(10) }));
}

#[test]
fn members_are_counted_apart_from_their_trunk_and_keep_their_counters_across_snapshots() {
    let lab = Lab::new();
    let mut h = Harness::new(&lab);
    h.forwarded(&POD_A1, &tcp_datagram(&POD_A1, POD_B1.ip, 40000, 80, SYN), &POD_B1);
    h.dropped(&POD_A2, &tcp_datagram(&POD_A2, POD_B1.ip, 40000, 22, SYN));
    let eni = |s: &crate::StatsSnapshot, id: &str| s.enis.iter().find(|e| e.eni_id == id).cloned().expect(id);
    let s = h.stats();
    let (a1, a2, b1, trunk) = (eni(&s, POD_A1.eni), eni(&s, POD_A2.eni), eni(&s, POD_B1.eni), eni(&s, TRUNK_A.eni));
    assert_eq!((a1.vlan, a1.rx_frames, a1.tx_frames), (POD_A1.vlan, 1, 0));
    assert_eq!((b1.rx_frames, b1.tx_frames), (0, 1));
    assert_eq!((a2.rx_frames, a2.drops.len()), (1, 1), "a member's drop is its own");
    assert_eq!((trunk.rx_frames, trunk.tx_frames), (0, 0), "the trunk's own row: its untagged frames only");
    assert_eq!(port(&s, POD_A1.vni).rx_frames, 2, "the trunk's port carries both members");
    // A new snapshot (one more rule) keeps every ENI's counters.
    let mut lab = lab.clone();
    lab.group_mut("sg-db").rules.push(rule(Direction::Ingress, 2, Policy::Accept, Protocol::Udp, Some(53), any_ip()));
    h.set_config(lab.build(2));
    assert_eq!(eni(&h.stats(), POD_A1.eni), a1);
}
