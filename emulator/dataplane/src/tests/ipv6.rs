//! IPv6 through the pipeline, on the testkit lab's dual-stack pods (its module doc has the
//! addresses; sg-db admits TCP 5432 from group sg-web, which now means both families). Frames
//! are built with etherparse's builder, so the pipeline's parsing is checked against an
//! independent writer as much as the other way round.

use core::net::Ipv6Addr;

use etherparse::{Icmpv6Slice, Icmpv6Type, Ipv6Slice};

use super::Harness;
use crate::config::{Direction, Peer, Policy, Protocol};
use crate::drop::DropReason;
use crate::testkit::*;
use crate::wire::ethernet::GATEWAY_MAC;
use crate::{DropKind, Verdict};

const GW6: Ipv6Addr = POD_GW6;

fn ip(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn a1() -> Ipv6Addr {
    POD_A1_V6
}
fn a2() -> Ipv6Addr {
    POD_A2_V6
}
fn b1() -> Ipv6Addr {
    POD_B1_V6
}

/// The lab with sg-web's IPv6 rule.
fn dual_stack() -> Lab {
    let mut lab = Lab::new();
    lab.group_mut("sg-web").rules.push(web6_rule());
    lab
}

fn frame(from: &Endpoint, dst_mac: crate::wire::ethernet::Mac, build: impl FnOnce(Ip6Builder) -> Vec<u8>) -> Vec<u8> {
    frame6(from, dst_mac, build)
}

fn tcp6(from: &Endpoint, src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, syn: bool) -> Vec<u8> {
    tcp6_datagram(from, src, dst, sport, dport, syn)
}

fn echo6(from: &Endpoint, src: Ipv6Addr, dst: Ipv6Addr, id: u16, reply: bool) -> Vec<u8> {
    echo6_datagram(from, src, dst, id, reply)
}

fn solicit(from: &Endpoint, src: Ipv6Addr, target: Ipv6Addr, hop: u8) -> Vec<u8> {
    neighbor_solicitation(from, src, target, hop)
}

/// The IPv6 packet inside a datagram the fabric sent.
fn inner_ipv6(out: &[u8]) -> Vec<u8> {
    let (_, f) = super::decode(out);
    f.payload.to_vec()
}

#[test]
fn solicitations_are_answered_with_the_gateway_mac() {
    let mut h = Harness::new(&dual_stack());
    for target in [GW6, b1(), ip("2408:4005:3000:1::999")] {
        let (v, out) = h.send(&POD_A1, &solicit(&POD_A1, a1(), target, 255));
        assert!(matches!(v, Verdict::Reply { to, .. } if to == POD_A1.peer), "{v:?}");
        let (g, f) = super::decode(&out);
        assert_eq!(g.vni.get(), POD_A1.vni);
        assert_eq!(f.tag.map(|t| t.vid()), POD_A1.vlan, "back on the pod's VLAN");
        assert_eq!((f.dst, f.src), (POD_A1.mac, GATEWAY_MAC));
        let ip6 = Ipv6Slice::from_slice(f.payload).unwrap();
        assert_eq!(ip6.header().hop_limit(), 255);
        assert_eq!(ip6.header().destination_addr(), a1());
        let icmp = Icmpv6Slice::from_slice(ip6.payload().payload).unwrap();
        assert!(icmp.is_checksum_valid(target.octets(), a1().octets()));
        let Icmpv6Type::NeighborAdvertisement(na) = icmp.icmp_type() else { panic!("not an advertisement") };
        assert!(na.solicited && na.r#override);
        assert_eq!(na.router, target == GW6, "only the gateway is a router");
        assert_eq!(&icmp.payload()[..16], &target.octets());
        assert_eq!(&icmp.payload()[18..24], &GATEWAY_MAC.0);
    }
    // Duplicate address detection (from ::) and a hop limit other than 255 get no answer.
    assert_eq!(h.dropped(&POD_A1, &solicit(&POD_A1, Ipv6Addr::UNSPECIFIED, a1(), 255)), DropReason::NdpConsumed);
    assert_eq!(h.dropped(&POD_A1, &solicit(&POD_A1, a1(), b1(), 64)), DropReason::NdpConsumed);
    assert_eq!(h.stats().drops(DropKind::NdpConsumed), 2);
}

#[test]
fn the_ipv6_gateway_answers_ping_and_nothing_else() {
    let mut h = Harness::new(&dual_stack());
    let (v, out) = h.send(&POD_A1, &echo6(&POD_A1, a1(), GW6, 7, false));
    assert!(matches!(v, Verdict::Reply { .. }), "{v:?}");
    let pkt = inner_ipv6(&out);
    let ip6 = Ipv6Slice::from_slice(&pkt).unwrap();
    assert_eq!((ip6.header().source_addr(), ip6.header().destination_addr()), (GW6, a1()));
    let icmp = Icmpv6Slice::from_slice(ip6.payload().payload).unwrap();
    assert!(icmp.is_checksum_valid(GW6.octets(), a1().octets()));
    assert!(matches!(icmp.icmp_type(), Icmpv6Type::EchoReply(e) if e.id == 7));
    assert_eq!(icmp.payload(), b"enifab-ping6");
    let d = h.dropped(&POD_A1, &tcp6(&POD_A1, a1(), GW6, 4000, 22, true));
    assert_eq!(d, DropReason::ToGateway { dst: GW6.into() });
}

#[test]
fn a_flow_is_judged_once_and_its_replies_ride_on_it() {
    let mut h = Harness::new(&dual_stack());
    // a1 → b1:80: sg-web admits TCP 80 from the /48; the packet leaves untouched but for L2.
    let syn = tcp6(&POD_A1, a1(), b1(), 40000, 80, true);
    let out = h.forwarded(&POD_A1, &syn, &POD_B1);
    let (_, sent) = super::decode(&syn);
    assert_eq!(inner_ipv6(&out), sent.payload, "the IPv6 packet is the input's, hop limit included");
    // The reply passes on the flow although sg-web has no egress rule that names it (basic
    // groups allow egress anyway) and sg-web's ingress on a1 would refuse port 40000.
    h.forwarded(&POD_B1, &tcp6(&POD_B1, b1(), a1(), 80, 40000, false), &POD_A1);
    // A new flow to a port no rule opens is refused, naming the default.
    let d = h.dropped(&POD_A1, &tcp6(&POD_A1, a1(), b1(), 40001, 22, true));
    assert!(matches!(d, DropReason::SecurityGroupIngress { ref eni, rule: None, .. } if &**eni == POD_B1.eni), "{d:?}");
    assert_eq!(h.stats().conntrack_entries, 1);
}

#[test]
fn group_peers_hold_their_members_ipv6_addresses() {
    let mut h = Harness::new(&dual_stack());
    // sg-db admits 5432 from group sg-web: a1 (in sg-web) reaches a2, b1's prefix address too.
    h.forwarded(&POD_A1, &tcp6(&POD_A1, a1(), a2(), 40000, 5432, true), &POD_A2);
    let in_prefix = ip("2408:4005:3000:1:5::9");
    h.forwarded(&POD_B1, &tcp6(&POD_B1, in_prefix, a2(), 40000, 5432, true), &POD_A2);
    // a2 is not in sg-web: its own address is no peer of sg-db's rule.
    h.forwarded(&POD_A2, &tcp6(&POD_A2, a2(), b1(), 1, 80, true), &POD_B1);
    let d = h.dropped(&POD_B1, &tcp6(&POD_B1, b1(), a2(), 1, 80, true));
    assert!(matches!(d, DropReason::SecurityGroupIngress { .. }), "{d:?}");
}

#[test]
fn prefixes_route_and_belong_to_their_eni() {
    let mut h = Harness::new(&dual_stack());
    let in_prefix = ip("2408:4005:3000:1:5::abcd");
    h.forwarded(&POD_A1, &tcp6(&POD_A1, a1(), in_prefix, 40000, 80, true), &POD_B1);
    let nowhere = ip("2408:4005:3000:1:6::1");
    let d = h.dropped(&POD_A1, &tcp6(&POD_A1, a1(), nowhere, 40000, 80, true));
    assert_eq!(d, DropReason::NoRoute { dst: nowhere.into() });
}

#[test]
fn anti_spoof_holds_for_ipv6_when_source_dest_check_is_on() {
    let mut lab = dual_stack();
    lab.eni_mut(POD_A1.eni).source_dest_check = true;
    let mut h = Harness::new(&lab);
    let d = h.dropped(&POD_A1, &tcp6(&POD_A1, a2(), b1(), 40000, 80, true));
    assert_eq!(d, DropReason::Spoofed { eni: POD_A1.eni.into(), src: a2().into() });
    h.forwarded(&POD_A1, &tcp6(&POD_A1, a1(), b1(), 40000, 80, true), &POD_B1);
}

#[test]
fn echo_requests_start_flows_and_lone_replies_do_not_pass() {
    let mut lab = dual_stack();
    let icmp6 = rule(
        Direction::Ingress,
        1,
        Policy::Accept,
        Protocol::Icmpv6,
        None,
        Peer::Cidr6(cidr6(Ipv6Addr::UNSPECIFIED, 0)),
    );
    lab.group_mut("sg-db").rules.push(icmp6);
    let mut h = Harness::new(&lab);
    h.forwarded(&POD_A1, &echo6(&POD_A1, a1(), a2(), 9, false), &POD_A2);
    h.forwarded(&POD_A2, &echo6(&POD_A2, a2(), a1(), 9, true), &POD_A1);
    // A reply nobody asked for meets a1's ingress (sg-web has no ICMPv6 rule).
    let d = h.dropped(&POD_A2, &echo6(&POD_A2, a2(), a1(), 10, true));
    assert!(matches!(d, DropReason::SecurityGroupIngress { .. }), "{d:?}");
    // An IPv4 ICMP rule opens nothing for ICMPv6: pod-b1's group has none.
    let d = h.dropped(&POD_A1, &echo6(&POD_A1, a1(), b1(), 11, false));
    assert!(matches!(d, DropReason::SecurityGroupIngress { .. }), "{d:?}");
}

#[test]
fn what_the_fabric_does_not_carry_is_named() {
    let mut h = Harness::new(&dual_stack());
    // Link-local ends outside neighbour discovery.
    let ll = ip("fe80::216:3eff:fe0a:1");
    assert_eq!(h.dropped(&POD_A1, &tcp6(&POD_A1, ll, b1(), 1, 80, true)), DropReason::Ipv6Unsupported);
    // Router solicitations and advertisements are consumed.
    let rs = frame(&POD_A1, crate::wire::ethernet::Mac([0x33, 0x33, 0, 0, 0, 2]), |b| {
        let mut v = Vec::new();
        b.ipv6(ll, ip("ff02::2"), 255).icmpv6_raw(133, 0, [0; 4]).write(&mut v, &[]).unwrap();
        v
    });
    assert_eq!(h.dropped(&POD_A1, &rs), DropReason::NdpConsumed);
    // Multicast that is not neighbour discovery (an MLD report) is not flooded.
    let mld = frame(&POD_A1, crate::wire::ethernet::Mac([0x33, 0x33, 0, 0, 0, 0x16]), |b| {
        let mut v = Vec::new();
        b.ipv6(ll, ip("ff02::16"), 1).icmpv6_raw(143, 0, [0; 4]).write(&mut v, &[0; 20]).unwrap();
        v
    });
    assert!(matches!(h.dropped(&POD_A1, &mld), DropReason::BroadcastOrMulticast { .. }));
    // A truncated header.
    let short = geneve(POD_A1.vni, None, &ethernet(GATEWAY_MAC, POD_A1.mac, POD_A1.vlan, 0x86dd, &[0x60, 0, 0]));
    assert!(matches!(h.dropped(&POD_A1, &short), DropReason::Malformed { .. }));
    assert_eq!(h.stats().drops(DropKind::MalformedIpv6), 1);
}

/// "Packet too big" from b1 about the flow a1 opened reaches a1 though no rule admits ICMPv6;
/// the same error from a third ENI, or about no flow, is judged (and refused) by the groups.
#[test]
fn icmpv6_errors_follow_their_flow_from_its_other_end_only() {
    let mut h = Harness::new(&dual_stack());
    let syn = tcp6(&POD_A1, a1(), b1(), 40000, 80, true);
    h.forwarded(&POD_A1, &syn, &POD_B1);
    let (_, sent) = super::decode(&syn);
    let quoted = sent.payload[..sent.payload.len().min(80)].to_vec();
    let too_big = |from: &Endpoint, src: Ipv6Addr, quoted: &[u8]| {
        frame(from, GATEWAY_MAC, |b| {
            let mut v = Vec::new();
            b.ipv6(src, a1(), 64).icmpv6_raw(2, 0, 1280u32.to_be_bytes()).write(&mut v, quoted).unwrap();
            v
        })
    };
    h.forwarded(&POD_B1, &too_big(&POD_B1, b1(), &quoted), &POD_A1);
    // From a2, which is not the flow's other end: judged by a1's ingress, refused.
    let d = h.dropped(&POD_A2, &too_big(&POD_A2, a2(), &quoted));
    assert!(matches!(d, DropReason::SecurityGroupIngress { .. }), "{d:?}");
    // About a flow that does not exist.
    let other = tcp6(&POD_A1, a1(), b1(), 40009, 80, true);
    let (_, other) = super::decode(&other);
    let d = h.dropped(&POD_B1, &too_big(&POD_B1, b1(), &other.payload[..60]));
    assert!(matches!(d, DropReason::SecurityGroupIngress { .. }), "{d:?}");
}
