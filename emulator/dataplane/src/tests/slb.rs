//! Load balancing frame by frame: VIPs translated both ways (TCP, UDP, partial and GSO
//! checksums, ICMP errors), schedulers, persistence, weight 0, stopped and missing listeners,
//! unhealthy backends, hairpin, the internet side, and the health checker with an injected
//! clock. Every rewritten packet is checked by an independent parser (etherparse): headers,
//! addresses, ports and checksums.

use core::net::Ipv4Addr;
use core::time::Duration;

use super::*;
use crate::config::*;
use crate::wire::checksum;
use crate::wire::ethernet::{ETHERTYPE_IPV4, GATEWAY_MAC};
use crate::wire::ipv4::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use crate::wire::l4::{ICMP_DEST_UNREACHABLE, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};
use crate::wire::vnet::{self, VnetHdr};
use crate::{CHECKER, DropReason, FlowState, HealthStatus, Step};

const SYN: u8 = TCP_SYN;
const SYN_ACK: u8 = TCP_SYN | TCP_ACK;
const ACK: u8 = TCP_ACK;

/// What etherparse makes of an IPv4 packet, after checking every checksum in it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    sport: u16,
    dport: u16,
}

fn oracle(ip: &[u8]) -> Seen {
    let (h, rest) = etherparse::Ipv4Header::from_slice(ip).expect("an IPv4 header");
    assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 header checksum");
    let (src, dst) = (Ipv4Addr::from(h.source), Ipv4Addr::from(h.destination));
    let payload = &rest[..usize::from(h.payload_len().unwrap()).min(rest.len())];
    let (sport, dport) = match h.protocol.0 {
        PROTO_TCP => {
            let (t, data) = etherparse::TcpHeader::from_slice(payload).expect("a TCP header");
            assert_eq!(t.checksum, t.calc_checksum_ipv4(&h, data).unwrap(), "TCP checksum");
            (t.source_port, t.destination_port)
        }
        PROTO_UDP => {
            let (u, data) = etherparse::UdpHeader::from_slice(payload).expect("a UDP header");
            if u.checksum != 0 {
                assert_eq!(u.checksum, u.calc_checksum_ipv4(&h, data).unwrap(), "UDP checksum");
            }
            (u.source_port, u.destination_port)
        }
        PROTO_ICMP => {
            let s = etherparse::Icmpv4Slice::from_slice(payload).expect("an ICMP message");
            assert_eq!(s.checksum(), s.header().icmp_type.calc_checksum(s.payload()), "ICMP checksum");
            (0, 0)
        }
        p => panic!("unexpected protocol {p}"),
    };
    Seen { src, dst, protocol: h.protocol.0, sport, dport }
}

/// The IPv4 packet inside an output datagram.
fn ip_of(out: &[u8]) -> Vec<u8> {
    decode(out).1.payload.to_vec()
}

fn seen(out: &[u8]) -> Seen {
    oracle(&ip_of(out))
}

/// A TCP segment with a valid checksum (the testkit's builder leaves it zero).
fn tcp_ok(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, flags: u8, data_len: usize) -> Vec<u8> {
    let mut seg = tcp(sport, dport, flags, data_len);
    let c = checksum::internet2(&pseudo(src, dst, PROTO_TCP, seg.len()), &seg);
    seg[16..18].copy_from_slice(&c.to_be_bytes());
    ipv4(src, dst, PROTO_TCP, &seg)
}

fn udp_ok(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut d = udp(sport, dport, data);
    let c = checksum::internet2(&pseudo(src, dst, PROTO_UDP, d.len()), &d);
    d[6..8].copy_from_slice(&c.to_be_bytes());
    ipv4(src, dst, PROTO_UDP, &d)
}

fn pseudo(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: usize) -> [u8; 12] {
    let mut p = [0u8; 12];
    p[0..4].copy_from_slice(&src.octets());
    p[4..8].copy_from_slice(&dst.octets());
    p[9] = protocol;
    p[10..12].copy_from_slice(&(len as u16).to_be_bytes());
    p
}

fn syn_to(from: &Endpoint, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    from_endpoint(from, &tcp_ok(from.ip, dst, sport, dport, SYN, 0))
}

fn seg(from: &Endpoint, dst: Ipv4Addr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    from_endpoint(from, &tcp_ok(from.ip, dst, sport, dport, flags, 0))
}

fn open_web_to_internet(lab: &mut Lab) {
    // The public VIP's backends listen on 8080; the internet needs a rule, as on the cloud.
    lab.group_mut("sg-web").rules.push(rule(
        Direction::Ingress,
        1,
        Policy::Accept,
        Protocol::Tcp,
        Some(8080),
        any_ip(),
    ));
}

// ---------------------------------------------------------------------------------------------
// Translation

#[test]
fn tcp_through_an_intranet_vip_is_translated_both_ways_with_the_client_address_kept() {
    let mut h = Harness::new(&Lab::with_load_balancers());
    let out = h.forwarded(&TRUNK_A, &syn_to(&TRUNK_A, VIP_INTRA, 40000, 80), &POD_A1);
    let s = seen(&out);
    assert_eq!(s, Seen { src: TRUNK_A.ip, dst: POD_A1.ip, protocol: PROTO_TCP, sport: 40000, dport: 80 });

    // The backend answers the client: the VIP answers instead.
    let reply = h.forwarded(&POD_A1, &seg(&POD_A1, TRUNK_A.ip, 80, 40000, SYN_ACK), &TRUNK_A);
    assert_eq!(seen(&reply), Seen { src: VIP_INTRA, dst: TRUNK_A.ip, protocol: PROTO_TCP, sport: 80, dport: 40000 });

    // The rest of the connection follows the flow to the same backend, without judging again.
    let out = h.forwarded(&TRUNK_A, &seg(&TRUNK_A, VIP_INTRA, 40000, 80, ACK), &POD_A1);
    assert_eq!(seen(&out).dst, POD_A1.ip);
    let flows = h.fabric.flows(h.now);
    assert_eq!(flows.len(), 1);
    assert_eq!((flows[0].dst, flows[0].backend), (VIP_INTRA, Some((POD_A1.ip, 80))));
    assert_eq!(flows[0].state, FlowState::TcpEstablished);

    // The next client goes to the other backend (wrr, equal weights).
    let out = h.forwarded(&PRIMARY_B, &syn_to(&PRIMARY_B, VIP_INTRA, 40001, 80), &POD_B1);
    assert_eq!(seen(&out).dst, POD_B1.ip);
}

#[test]
fn udp_through_a_vip_with_and_without_a_checksum() {
    let mut lab = Lab::with_load_balancers();
    lab.group_mut("sg-db").rules.push(rule(
        Direction::Ingress,
        1,
        Policy::Accept,
        Protocol::Udp,
        Some(5353),
        Peer::Cidr(cidr([10, 0, 0, 0], 8)),
    ));
    let mut h = Harness::new(&lab);
    let d = from_endpoint(&PRIMARY_B, &udp_ok(PRIMARY_B.ip, VIP_INTRA, 5000, 53, b"query"));
    let out = h.forwarded(&PRIMARY_B, &d, &POD_A2);
    assert_eq!(seen(&out), Seen { src: PRIMARY_B.ip, dst: POD_A2.ip, protocol: PROTO_UDP, sport: 5000, dport: 5353 });
    let reply = from_endpoint(&POD_A2, &udp_ok(POD_A2.ip, PRIMARY_B.ip, 5353, 5000, b"answer"));
    let back = h.forwarded(&POD_A2, &reply, &PRIMARY_B);
    assert_eq!(seen(&back), Seen { src: VIP_INTRA, dst: PRIMARY_B.ip, protocol: PROTO_UDP, sport: 53, dport: 5000 });

    // A datagram without a checksum keeps none.
    let bare = from_endpoint(&PRIMARY_B, &ipv4(PRIMARY_B.ip, VIP_INTRA, PROTO_UDP, &udp(5001, 53, b"q")));
    let out = h.forwarded(&PRIMARY_B, &bare, &POD_A2);
    let ip = ip_of(&out);
    assert_eq!(&ip[20 + 6..20 + 8], &[0, 0], "no checksum stays no checksum");
    assert_eq!(oracle(&ip).dport, 5353);
}

/// A `NEEDS_CSUM` segment carries the uncomplemented pseudo-header sum; after translation it must
/// be the sum for the new addresses, so that the receiver's completion gives a valid checksum.
#[test]
fn partial_and_gso_checksums_follow_the_translation() {
    let mut h = Harness::new(&Lab::with_load_balancers());
    let data_len = 3000;
    let mut seg = tcp(41000, 80, ACK, data_len);
    let partial = !checksum::internet(&pseudo(TRUNK_A.ip, VIP_INTRA, PROTO_TCP, seg.len()));
    seg[16..18].copy_from_slice(&partial.to_be_bytes());
    let ip = ipv4(TRUNK_A.ip, VIP_INTRA, PROTO_TCP, &seg);
    for gso in [false, true] {
        let vnet = VnetHdr {
            flags: vnet::F_NEEDS_CSUM,
            gso_type: if gso { vnet::GSO_TCPV4 } else { vnet::GSO_NONE },
            hdr_len: if gso { 54 } else { 0 },
            gso_size: if gso { 1448 } else { 0 },
            csum_start: 14 + 20,
            csum_offset: 16,
        };
        let sport: u16 = if gso { 41001 } else { 41000 };
        let mut ip = ip.clone();
        ip[20..22].copy_from_slice(&sport.to_be_bytes());
        let d = geneve(TRUNK_A.vni, Some(vnet), &ethernet(GATEWAY_MAC, TRUNK_A.mac, None, ETHERTYPE_IPV4, &ip));
        let (v, out) = h.send(&TRUNK_A, &d);
        assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
        let (g, f) = decode(&out);
        let backend = if g.vni.get() == POD_A1.vni { POD_A1 } else { POD_B1 };
        let out_vnet = g.vnet.expect("the vnet option travels");
        assert_eq!(usize::from(out_vnet.csum_start), 18 + 20, "offsets moved by the pushed tag");
        let mut l3 = f.payload.to_vec();
        // The partial sum is now the new pseudo-header's.
        let want = !checksum::internet(&pseudo(TRUNK_A.ip, backend.ip, PROTO_TCP, l3.len() - 20));
        assert_eq!(u16::from_be_bytes([l3[36], l3[37]]), want);
        // Complete it as the receiving kernel does, then check it independently.
        let c = checksum::internet(&l3[20..]);
        l3[36..38].copy_from_slice(&c.to_be_bytes());
        assert_eq!(oracle(&l3).dst, backend.ip);
        assert_eq!(&l3[40..], &seg[20..], "the payload is untouched");
    }
}

#[test]
fn icmp_errors_of_translated_flows_are_translated_too() {
    let mut lab = Lab::with_load_balancers();
    lab.group_mut("sg-db").rules.push(rule(Direction::Ingress, 1, Policy::Accept, Protocol::Udp, Some(5353), any_ip()));
    let mut h = Harness::new(&lab);
    let query = udp_ok(PRIMARY_B.ip, VIP_INTRA, 5000, 53, b"is anyone there?");
    h.forwarded(&PRIMARY_B, &from_endpoint(&PRIMARY_B, &query), &POD_A2);
    // The backend's kernel: port unreachable, quoting what it received (translated).
    let delivered = udp_ok(PRIMARY_B.ip, POD_A2.ip, 5000, 5353, b"is anyone there?");
    let err = ipv4(POD_A2.ip, PRIMARY_B.ip, PROTO_ICMP, &icmp(ICMP_DEST_UNREACHABLE, 3, [0; 4], &delivered));
    let out = h.forwarded(&POD_A2, &from_endpoint(&POD_A2, &err), &PRIMARY_B);
    let ip = ip_of(&out);
    let s = oracle(&ip);
    assert_eq!((s.src, s.dst, s.protocol), (VIP_INTRA, PRIMARY_B.ip, PROTO_ICMP), "from the VIP");
    // The quoted packet is what the client sent: to the VIP's listener.
    let quoted = &ip[28..];
    let (q, qrest) = etherparse::Ipv4Header::from_slice(quoted).unwrap();
    assert_eq!(q.header_checksum, q.calc_header_checksum());
    assert_eq!((Ipv4Addr::from(q.source), Ipv4Addr::from(q.destination)), (PRIMARY_B.ip, VIP_INTRA));
    let (u, data) = etherparse::UdpHeader::from_slice(qrest).unwrap();
    assert_eq!((u.source_port, u.destination_port), (5000, 53));
    assert_eq!(u.checksum, u.calc_checksum_ipv4(&q, data).unwrap(), "the quoted checksum moved too");
    assert_eq!(quoted, &query[..], "the client gets back exactly what it sent");
}

// ---------------------------------------------------------------------------------------------
// Choosing a backend

#[test]
fn persistence_keeps_a_client_on_its_backend() {
    let mut lab = Lab::with_load_balancers();
    lab.listener_mut("lb-intra", LbProtocol::Tcp, 80).persistence = Duration::from_secs(60);
    let mut h = Harness::new(&lab);
    let first = seen(&h.forwarded(&TRUNK_A, &syn_to(&TRUNK_A, VIP_INTRA, 40000, 80), &POD_A1)).dst;
    for port in 40001..40005 {
        let (v, out) = h.send(&TRUNK_A, &syn_to(&TRUNK_A, VIP_INTRA, port, 80));
        assert!(matches!(v, Verdict::Forward { .. }));
        assert_eq!(seen(&out).dst, first, "port {port} stays");
    }
    // Another client rotates on as usual.
    assert_eq!(seen(&h.forwarded(&PRIMARY_B, &syn_to(&PRIMARY_B, VIP_INTRA, 1, 80), &POD_B1)).dst, POD_B1.ip);
    // Past the timeout the client is scheduled afresh: the rotation had moved on.
    h.advance_secs(61);
    let t = h.fabric.trace(h.now, NODE_A, &syn_to(&TRUNK_A, VIP_INTRA, 40100, 80));
    assert!(t.steps.iter().any(|s| matches!(s, Step::LoadBalancer { persisted: false, .. })), "{:?}", t.steps);
}

#[test]
fn weight_zero_takes_no_new_flows_but_keeps_its_own() {
    let mut lab = Lab::with_load_balancers();
    let mut h = Harness::new(&lab);
    h.forwarded(&TRUNK_A, &syn_to(&TRUNK_A, VIP_INTRA, 40000, 80), &POD_A1);
    lab.listener_mut("lb-intra", LbProtocol::Tcp, 80).backends[0].weight = 0;
    h.set_config(lab.build(2));
    for port in 50000..50006 {
        let out = h.forwarded(&PRIMARY_B, &syn_to(&PRIMARY_B, VIP_INTRA, port, 80), &POD_B1);
        assert_eq!(seen(&out).dst, POD_B1.ip);
    }
    // The flow that was there goes on to pod-a1.
    h.forwarded(&TRUNK_A, &seg(&TRUNK_A, VIP_INTRA, 40000, 80, ACK), &POD_A1);
    lab.listener_mut("lb-intra", LbProtocol::Tcp, 80).backends[1].weight = 0;
    h.set_config(lab.build(3));
    let d = syn_to(&PRIMARY_B, VIP_INTRA, 50100, 80);
    assert_eq!(h.dropped(&PRIMARY_B, &d), DropReason::LbNoBackend { vip: VIP_INTRA, port: 80 });
}

#[test]
fn stopped_and_missing_listeners_are_silent() {
    let mut lab = Lab::with_load_balancers();
    lab.listener_mut("lb-intra", LbProtocol::Tcp, 80).running = false;
    let mut h = Harness::new(&lab);
    let d = syn_to(&TRUNK_A, VIP_INTRA, 40000, 80);
    assert_eq!(h.dropped(&TRUNK_A, &d), DropReason::LbListenerStopped { vip: VIP_INTRA, port: 80 });
    let d = syn_to(&TRUNK_A, VIP_INTRA, 40000, 443);
    assert_eq!(h.dropped(&TRUNK_A, &d), DropReason::LbNoListener { vip: VIP_INTRA, protocol: PROTO_TCP, port: 443 });
    let d = from_endpoint(&TRUNK_A, &udp_ok(TRUNK_A.ip, VIP_INTRA, 1, 80, b"x"));
    assert_eq!(h.dropped(&TRUNK_A, &d), DropReason::LbNoListener { vip: VIP_INTRA, protocol: PROTO_UDP, port: 80 });
    let s = h.stats();
    assert_eq!((drops_of(&s, DropKind::LbListenerStopped), drops_of(&s, DropKind::LbNoListener)), (1, 2));
    assert_eq!(s.conntrack_entries, 0);
}

#[test]
fn ping_to_a_vip_is_answered_by_the_fabric() {
    let mut h = Harness::new(&Lab::with_load_balancers());
    let (v, out) = h.send(&POD_A2, &echo_datagram(&POD_A2, VIP_INTRA, ICMP_ECHO_REQUEST, 3));
    assert!(matches!(v, Verdict::Reply { to: NODE_A, .. }), "{v:?}");
    let ip = ip_of(&out);
    assert_eq!(oracle(&ip).src, VIP_INTRA);
    assert_eq!(ip[20], ICMP_ECHO_REPLY);
}

#[test]
fn the_client_itself_as_backend_is_refused_and_the_rotation_moves_on() {
    let mut h = Harness::new(&Lab::with_load_balancers());
    // pod-a1 is the first backend wrr picks; it is also the client.
    let d = syn_to(&POD_A1, VIP_INTRA, 33000, 80);
    assert_eq!(h.dropped(&POD_A1, &d), DropReason::LbHairpin { eni: "eni-pod-a1".into() });
    // Its next connection goes to the other backend, as the cloud's rotation would.
    let out = h.forwarded(&POD_A1, &syn_to(&POD_A1, VIP_INTRA, 33001, 80), &POD_B1);
    assert_eq!(seen(&out), Seen { src: POD_A1.ip, dst: POD_B1.ip, protocol: PROTO_TCP, sport: 33001, dport: 80 });
    assert_eq!(drops_of(&h.stats(), DropKind::LbHairpin), 1);
}

#[test]
fn a_port_used_directly_cannot_also_reach_the_same_backend_through_the_vip() {
    let mut lab = Lab::with_load_balancers();
    lab.listener_mut("lb-intra", LbProtocol::Tcp, 80).backends.truncate(1);
    let mut h = Harness::new(&lab);
    h.forwarded(&TRUNK_A, &syn_to(&TRUNK_A, POD_A1.ip, 40000, 80), &POD_A1);
    // Same source port through the VIP to the same backend: pod-a1's replies would be ambiguous.
    let d = syn_to(&TRUNK_A, VIP_INTRA, 40000, 80);
    assert_eq!(h.dropped(&TRUNK_A, &d), DropReason::ConntrackClash);
    // Another port is fine.
    h.forwarded(&TRUNK_A, &syn_to(&TRUNK_A, VIP_INTRA, 40001, 80), &POD_A1);
}

#[test]
fn a_closed_direct_connection_gives_its_port_to_one_through_the_vip() {
    let mut lab = Lab::with_load_balancers();
    lab.listener_mut("lb-intra", LbProtocol::Tcp, 80).backends.truncate(1);
    let mut h = Harness::new(&lab);
    // Directly to pod-a1, then closed both ways.
    h.forwarded(&TRUNK_A, &syn_to(&TRUNK_A, POD_A1.ip, 40000, 80), &POD_A1);
    h.forwarded(&POD_A1, &seg(&POD_A1, TRUNK_A.ip, 80, 40000, SYN_ACK), &TRUNK_A);
    h.forwarded(&TRUNK_A, &seg(&TRUNK_A, POD_A1.ip, 40000, 80, ACK | TCP_FIN), &POD_A1);
    h.forwarded(&POD_A1, &seg(&POD_A1, TRUNK_A.ip, 80, 40000, ACK | TCP_FIN), &TRUNK_A);
    // The same client port through the VIP to the same backend: the closed flow gives way.
    h.forwarded(&TRUNK_A, &syn_to(&TRUNK_A, VIP_INTRA, 40000, 80), &POD_A1);
    let back = h.forwarded(&POD_A1, &seg(&POD_A1, TRUNK_A.ip, 80, 40000, SYN_ACK), &TRUNK_A);
    assert_eq!(seen(&back).src, VIP_INTRA, "pod-a1's answer is the VIP flow's");
    assert_eq!(h.stats().conntrack_entries, 1);
}

#[test]
fn schedulers_rr_wlc_and_source_hash() {
    let mut lab = Lab::with_load_balancers();
    let l = lab.listener_mut("lb-intra", LbProtocol::Tcp, 80);
    l.backends[0].weight = 3;
    l.backends[1].weight = 1;
    l.scheduler = Scheduler::Rr;
    let mut h = Harness::new(&lab);
    // rr ignores weights: strictly alternating.
    let picks: Vec<Ipv4Addr> =
        (0..4).map(|i| seen(&h.send(&TRUNK_A, &syn_to(&TRUNK_A, VIP_INTRA, 100 + i, 80)).1).dst).collect();
    assert_eq!(picks, [POD_A1.ip, POD_B1.ip, POD_A1.ip, POD_B1.ip]);

    // wlc: both have 2 flows; pod-a1 (weight 3) takes new ones while its flows per unit of
    // weight are at most pod-b1's (2 per 1, a tie going to the first): up to 7 flows, then b1.
    lab.listener_mut("lb-intra", LbProtocol::Tcp, 80).scheduler = Scheduler::Wlc;
    h.set_config(lab.build(2));
    let picks: Vec<Ipv4Addr> =
        (0..6).map(|i| seen(&h.send(&TRUNK_A, &syn_to(&TRUNK_A, VIP_INTRA, 200 + i, 80)).1).dst).collect();
    assert_eq!(picks, [POD_A1.ip, POD_A1.ip, POD_A1.ip, POD_A1.ip, POD_A1.ip, POD_B1.ip]);

    // sch: one client, one backend, whatever its ports.
    lab.listener_mut("lb-intra", LbProtocol::Tcp, 80).scheduler = Scheduler::Sch;
    h.set_config(lab.build(3));
    let picks: std::collections::HashSet<Ipv4Addr> =
        (0..8).map(|i| seen(&h.send(&PRIMARY_B, &syn_to(&PRIMARY_B, VIP_INTRA, 300 + i, 80)).1).dst).collect();
    assert_eq!(picks.len(), 1);
}

#[test]
fn a_port_reopened_through_the_vip_is_scheduled_afresh() {
    let mut h = Harness::new(&Lab::with_load_balancers());
    h.forwarded(&TRUNK_A, &syn_to(&TRUNK_A, VIP_INTRA, 40000, 80), &POD_A1);
    h.forwarded(&POD_A1, &seg(&POD_A1, TRUNK_A.ip, 80, 40000, SYN_ACK), &TRUNK_A);
    h.forwarded(&TRUNK_A, &seg(&TRUNK_A, VIP_INTRA, 40000, 80, ACK | TCP_FIN), &POD_A1);
    h.forwarded(&POD_A1, &seg(&POD_A1, TRUNK_A.ip, 80, 40000, ACK | TCP_FIN), &TRUNK_A);
    // Closed; the same port opens again before the entry expires.
    let out = h.forwarded(&TRUNK_A, &syn_to(&TRUNK_A, VIP_INTRA, 40000, 80), &POD_B1);
    assert_eq!(seen(&out).dst, POD_B1.ip);
    assert_eq!(h.stats().conntrack_entries, 1, "the new flow replaced the closed one");
    h.forwarded(&POD_B1, &seg(&POD_B1, TRUNK_A.ip, 80, 40000, SYN_ACK), &TRUNK_A);
    // pod-a1's stale answer belongs to nothing any more.
    let d = seg(&POD_A1, TRUNK_A.ip, 80, 40000, ACK);
    assert!(matches!(h.dropped(&POD_A1, &d), DropReason::SecurityGroupIngress { .. }));
}

// ---------------------------------------------------------------------------------------------
// The internet side

#[test]
fn an_internet_client_reaches_pods_through_the_public_vip_and_they_see_its_address() {
    let mut lab = Lab::with_load_balancers();
    let mut h = Harness::new(&lab);
    // Without a rule for the internet, the backend's group refuses the client's real address.
    let d = syn_to(&EXTERNAL, VIP_PUBLIC, 55000, 80);
    match h.dropped(&EXTERNAL, &d) {
        DropReason::SecurityGroupIngress { eni, .. } => assert_eq!(&*eni, "eni-pod-a1"),
        r => panic!("{r:?}"),
    }
    open_web_to_internet(&mut lab);
    h.set_config(lab.build(2));
    let out = h.forwarded(&EXTERNAL, &d, &POD_A1);
    assert_eq!(seen(&out), Seen { src: EXTERNAL.ip, dst: POD_A1.ip, protocol: PROTO_TCP, sport: 55000, dport: 8080 });
    let back = h.forwarded(&POD_A1, &seg(&POD_A1, EXTERNAL.ip, 8080, 55000, SYN_ACK), &EXTERNAL);
    assert_eq!(seen(&back), Seen { src: VIP_PUBLIC, dst: EXTERNAL.ip, protocol: PROTO_TCP, sport: 80, dport: 55000 });
    let (g, f) = decode(&back);
    assert_eq!((g.vni.get(), f.tag, f.dst), (99, None, EXTERNAL.mac));
    // Both pods serve the internet.
    let out = h.forwarded(&EXTERNAL, &syn_to(&EXTERNAL, VIP_PUBLIC, 55001, 80), &POD_B1);
    assert_eq!(seen(&out).dst, POD_B1.ip);
}

#[test]
fn the_internet_and_the_vpc_only_meet_at_public_vips() {
    let mut lab = Lab::with_load_balancers();
    open_web_to_internet(&mut lab);
    let mut h = Harness::new(&lab);
    let no_route = |dst: Ipv4Addr| DropReason::NoRoute { dst: dst.into() };
    assert_eq!(h.dropped(&EXTERNAL, &syn_to(&EXTERNAL, POD_A1.ip, 1, 8080)), no_route(POD_A1.ip));
    assert_eq!(h.dropped(&EXTERNAL, &syn_to(&EXTERNAL, VIP_INTRA, 1, 80)), no_route(VIP_INTRA));
    assert_eq!(h.dropped(&POD_A1, &syn_to(&POD_A1, EXTERNAL.ip, 1, 80)), no_route(EXTERNAL.ip));
    assert_eq!(h.dropped(&TRUNK_A, &syn_to(&TRUNK_A, VIP_PUBLIC, 1, 80)), no_route(VIP_PUBLIC));
    // An external host speaks only with its own address.
    let spoofed = from_endpoint(&EXTERNAL, &tcp_ok(Ipv4Addr::new(47, 100, 1, 11), VIP_PUBLIC, 1, 80, SYN, 0));
    assert!(matches!(h.dropped(&EXTERNAL, &spoofed), DropReason::Spoofed { .. }));
    // Its gateway answers ping, as every segment's does.
    let (v, _) = h.send(&EXTERNAL, &echo_datagram(&EXTERNAL, Ipv4Addr::new(47, 100, 1, 253), ICMP_ECHO_REQUEST, 1));
    assert!(matches!(v, Verdict::Reply { .. }));
    // A backend cannot answer the internet from its own address outside a flow.
    let d = seg(&POD_A1, EXTERNAL.ip, 8080, 4444, SYN_ACK);
    assert_eq!(h.dropped(&POD_A1, &d), no_route(EXTERNAL.ip));
}

// ---------------------------------------------------------------------------------------------
// Traces

#[test]
fn a_trace_shows_the_listener_and_the_backend_and_changes_nothing() {
    let mut h = Harness::new(&Lab::with_load_balancers());
    let d = syn_to(&TRUNK_A, VIP_INTRA, 40000, 80);
    let t = h.fabric.trace(h.now, NODE_A, &d);
    assert!(t.steps.contains(&Step::LoadBalancer {
        lb: "lb-intra".into(),
        vip: VIP_INTRA,
        port: 80,
        scheduler: Scheduler::Wrr,
        backend: POD_A1.ip,
        backend_port: 80,
        persisted: false,
    }));
    assert!(t.steps.contains(&Step::Translate { src: (TRUNK_A.ip, 40000), dst: (POD_A1.ip, 80) }));
    // Tracing twice picks the same backend: the rotation did not move.
    assert_eq!(h.fabric.trace(h.now, NODE_A, &d), t);
    assert_eq!(h.stats().conntrack_entries, 0);
    assert_eq!(seen(&h.forwarded(&TRUNK_A, &d, &POD_A1)).dst, POD_A1.ip);
}

// ---------------------------------------------------------------------------------------------
// Health checks

/// The probe `poll_health` sends now, decoded: (to shim, vni, checker port, backend port, ISN).
fn poll(h: &mut Harness) -> Option<(core::net::SocketAddr, u32, u16, u16, u32, Vec<u8>)> {
    let mut buf = vec![0u8; 2048];
    let (to, len) = h.poll_health(&mut buf)?;
    let (g, f) = decode(&buf[..len]);
    let ip = f.payload.to_vec();
    let s = oracle(&ip);
    assert_eq!(s.src, CHECKER);
    let isn = if s.protocol == PROTO_TCP { u32::from_be_bytes([ip[24], ip[25], ip[26], ip[27]]) } else { 0 };
    Some((to, g.vni.get(), s.sport, s.dport, isn, ip))
}

fn drain(h: &mut Harness) -> Vec<(core::net::SocketAddr, u32, u16, u16, u32, Vec<u8>)> {
    std::iter::from_fn(|| poll(h)).collect()
}

/// A segment from a backend to the checker.
fn to_checker(from: &Endpoint, sport: u16, dport: u16, seq: u32, ack: u32, flags: u8, data: &[u8]) -> Vec<u8> {
    let mut t = tcp(sport, dport, flags, 0);
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t.extend_from_slice(data);
    from_endpoint(from, &ipv4(from.ip, CHECKER, PROTO_TCP, &t))
}

fn status(h: &Harness, ip: Ipv4Addr) -> HealthStatus {
    h.fabric.health().into_iter().find(|b| b.ip == ip).map(|b| b.status).expect("checked")
}

fn checked_lab() -> Lab {
    let mut lab = Lab::with_load_balancers();
    lab.listener_mut("lb-intra", LbProtocol::Tcp, 80).health_check = Some(tcp_check());
    lab
}

#[test]
fn tcp_checks_take_syn_ack_as_alive_and_reset_it() {
    let mut h = Harness::new(&checked_lab());
    let probes = drain(&mut h);
    assert_eq!(probes.len(), 2, "both backends are probed at once");
    let (to, vni, cport, bport, isn, _) = probes.iter().find(|p| p.0 == NODE_A).cloned().unwrap();
    assert_eq!((to, vni, bport), (NODE_A, 10, 80));
    assert_eq!(status(&h, POD_A1.ip), HealthStatus::Unknown);
    // SYN-ACK: alive; the checker resets the half-open connection.
    let (v, out) = h.send(&POD_A1, &to_checker(&POD_A1, 80, cport, 7000, isn.wrapping_add(1), SYN_ACK, &[]));
    assert!(matches!(v, Verdict::Reply { to: NODE_A, .. }), "{v:?}");
    let ip = ip_of(&out);
    let s = oracle(&ip);
    assert_eq!((s.src, s.dst, s.sport, s.dport), (CHECKER, POD_A1.ip, cport, 80));
    assert_eq!(ip[33], TCP_RST);
    assert_eq!(u32::from_be_bytes([ip[24], ip[25], ip[26], ip[27]]), isn.wrapping_add(1));
    assert_eq!(decode(&out).1.tag.map(|t| t.vid()), Some(1001), "on the backend's VLAN");
    assert_eq!(status(&h, POD_A1.ip), HealthStatus::Healthy);
    // The checker's frames are counted apart from the port's traffic: probe, answer, reset.
    let p = port(&h.stats(), 10).clone();
    assert_eq!((p.rx_frames, p.tx_frames, p.health_frames), (0, 0, 3));
    assert!(p.drops.is_empty());
    // A late duplicate belongs to no probe.
    let d = to_checker(&POD_A1, 80, cport, 7000, isn.wrapping_add(1), SYN_ACK, &[]);
    assert_eq!(h.dropped(&POD_A1, &d), DropReason::HealthCheckStray);
    assert_eq!(port(&h.stats(), 10).drops(DropKind::HealthCheckStray), 1);
    // Nothing more is due before the interval.
    h.now = Instant(h.now.0 + 1_999_999_999);
    let pending: Vec<_> = drain(&mut h);
    assert!(pending.is_empty(), "{pending:?}");
}

#[test]
fn failures_past_the_threshold_take_a_backend_out_and_successes_bring_it_back() {
    let mut h = Harness::new(&checked_lab());
    let answer = |h: &mut Harness, alive: bool| {
        for (to, _, cport, _, isn, _) in drain(h) {
            let (from, flags) =
                if to == NODE_A { (POD_A1, if alive { SYN_ACK } else { TCP_RST | ACK }) } else { (POD_B1, SYN_ACK) };
            let _ = h.send(&from, &to_checker(&from, 80, cport, 1, isn.wrapping_add(1), flags, &[]));
        }
    };
    answer(&mut h, true);
    assert_eq!(status(&h, POD_A1.ip), HealthStatus::Healthy);
    // pod-a1 refuses: two failures are not yet three.
    for round in 1..=3 {
        h.advance_secs(2);
        answer(&mut h, false);
        let want = if round < 3 { HealthStatus::Healthy } else { HealthStatus::Unhealthy };
        assert_eq!(status(&h, POD_A1.ip), want, "after {round} failures");
    }
    // New flows skip it; it still gets probed.
    for port in 0..4 {
        let out = h.forwarded(&TRUNK_A, &syn_to(&TRUNK_A, VIP_INTRA, 45000 + port, 80), &POD_B1);
        assert_eq!(seen(&out).dst, POD_B1.ip);
    }
    // Back after three successes in a row.
    for round in 1..=3 {
        h.advance_secs(2);
        answer(&mut h, true);
        let want = if round < 3 { HealthStatus::Unhealthy } else { HealthStatus::Healthy };
        assert_eq!(status(&h, POD_A1.ip), want, "after {round} successes");
    }
    let picks: std::collections::HashSet<Ipv4Addr> =
        (0..4).map(|i| seen(&h.send(&TRUNK_A, &syn_to(&TRUNK_A, VIP_INTRA, 46000 + i, 80)).1).dst).collect();
    assert!(picks.contains(&POD_A1.ip));
}

#[test]
fn silence_times_out_and_no_healthy_backend_refuses_new_flows() {
    let mut h = Harness::new(&checked_lab());
    for _ in 0..3 {
        assert_eq!(drain(&mut h).len(), 2);
        // Past the timeout (5 s, more than the 2 s interval): failures recorded, new probes out.
        h.advance_secs(5);
    }
    drain(&mut h);
    assert_eq!((status(&h, POD_A1.ip), status(&h, POD_B1.ip)), (HealthStatus::Unhealthy, HealthStatus::Unhealthy));
    let why = h.fabric.health().iter().map(|b| b.last_failure).collect::<Vec<_>>();
    assert_eq!(why, [Some("timeout"), Some("timeout")]);
    let d = syn_to(&TRUNK_A, VIP_INTRA, 40000, 80);
    assert_eq!(h.dropped(&TRUNK_A, &d), DropReason::LbNoHealthyBackend { vip: VIP_INTRA, port: 80 });
    assert_eq!(h.fabric.next_health_check().map(|t| t.0 > h.now.0), Some(true));
}

#[test]
fn http_checks_send_the_request_and_judge_the_status_line() {
    let mut lab = Lab::with_load_balancers();
    let mut check = tcp_check();
    check.kind = HealthCheckKind::Http {
        uri: "/healthz".into(),
        host: Some("web.example".into()),
        get: false,
        codes: HttpCodes { classes: 1 << 2 | 1 << 3 },
    };
    check.healthy_threshold = 2;
    check.unhealthy_threshold = 2;
    lab.listener_mut("lb-intra", LbProtocol::Tcp, 80).health_check = Some(check);
    let mut h = Harness::new(&lab);
    let run = |h: &mut Harness, answer: &[u8]| {
        let (_, _, cport, _, isn, _) = drain(h).into_iter().find(|p| p.0 == NODE_A).unwrap();
        let (v, out) = h.send(&POD_A1, &to_checker(&POD_A1, 80, cport, 500, isn.wrapping_add(1), SYN_ACK, &[]));
        assert!(matches!(v, Verdict::Reply { .. }), "{v:?}");
        let ip = ip_of(&out);
        oracle(&ip);
        let request = std::str::from_utf8(&ip[40..]).unwrap().to_string();
        assert_eq!(ip[33], TCP_ACK | 0x08);
        let (v, out) = h.send(&POD_A1, &to_checker(&POD_A1, 80, cport, 501, isn.wrapping_add(1), ACK, answer));
        assert!(matches!(v, Verdict::Reply { .. }), "{v:?}");
        let rst = ip_of(&out);
        assert_eq!(rst[33], TCP_RST);
        assert_eq!(
            u32::from_be_bytes([rst[24], rst[25], rst[26], rst[27]]),
            isn.wrapping_add(1).wrapping_add(request.len() as u32)
        );
        request
    };
    let request = run(&mut h, b"HTTP/1.1 302 Found\r\n\r\n");
    assert_eq!(request, "HEAD /healthz HTTP/1.0\r\nHost: web.example\r\nUser-Agent: enifab-health-check\r\n\r\n");
    assert_eq!(status(&h, POD_A1.ip), HealthStatus::Healthy);
    for _ in 0..2 {
        h.advance_secs(2);
        run(&mut h, b"HTTP/1.0 503 Service Unavailable\r\n\r\n");
    }
    assert_eq!(status(&h, POD_A1.ip), HealthStatus::Unhealthy);
    let b = h.fabric.health().into_iter().find(|b| b.ip == POD_A1.ip).unwrap();
    assert_eq!(b.last_failure, Some("http 5xx"));
}

#[test]
fn udp_checks_fail_on_port_unreachable_and_pass_on_silence() {
    let mut lab = Lab::with_load_balancers();
    let mut check = tcp_check();
    check.kind = HealthCheckKind::Udp { request: b"ping".to_vec(), expect: None };
    check.unhealthy_threshold = 2;
    lab.listener_mut("lb-intra", LbProtocol::Udp, 53).health_check = Some(check);
    let mut h = Harness::new(&lab);
    for _ in 0..2 {
        let probes = drain(&mut h);
        assert_eq!(probes.len(), 1);
        let (to, _, cport, bport, _, probe) = probes[0].clone();
        assert_eq!((to, bport), (NODE_A, 5353));
        assert_eq!(&probe[28..], b"ping");
        let err = ipv4(POD_A2.ip, CHECKER, PROTO_ICMP, &icmp(ICMP_DEST_UNREACHABLE, 3, [0; 4], &probe));
        assert_eq!(h.dropped(&POD_A2, &from_endpoint(&POD_A2, &err)), DropReason::HealthCheckAnswer);
        let _ = cport;
        h.advance_secs(5);
    }
    assert_eq!(status(&h, POD_A2.ip), HealthStatus::Unhealthy);
    // Nothing comes back: healthy again after the threshold (3) of silent probes.
    for _ in 0..4 {
        assert_eq!(drain(&mut h).len(), 1);
        h.advance_secs(5);
    }
    drain(&mut h);
    assert_eq!(status(&h, POD_A2.ip), HealthStatus::Healthy);
}

#[test]
fn checks_need_no_rule_but_a_rule_that_drops_the_checker_blocks_them() {
    let mut lab = checked_lab();
    // pod-b1's group admits only TCP 80 from 10/8; the checker (100.64.1.1) needs nothing more.
    let mut h = Harness::new(&lab);
    assert_eq!(drain(&mut h).len(), 2);
    lab.group_mut("sg-web").rules.push(rule(
        Direction::Ingress,
        1,
        Policy::Drop,
        Protocol::All,
        None,
        Peer::Cidr(cidr([100, 64, 0, 0], 10)),
    ));
    h.set_config(lab.build(2));
    h.advance_secs(5);
    assert!(drain(&mut h).is_empty(), "no probe leaves for backends that drop the checker");
}
