//! Grants and reports: what the pipeline lets the nodes' kernels carry, and what it makes of
//! their reports. The IPv6 tests mirror the IPv4 ones on the lab's dual-stack pods.

use core::net::{Ipv4Addr, Ipv6Addr};

use super::*;
use crate::config::{Direction, Policy, Protocol};
use crate::drop::DropReason;
use crate::fastpath::Update;
use crate::wire::ethernet::{ETHERTYPE_IPV6, GATEWAY_MAC};
use crate::wire::fastpath::{EgressEntry, Entry, Entry6, IngressEntry, ReportRecord, Tuple};
use crate::wire::ipv4::{PROTO_TCP, PROTO_UDP};
use crate::wire::l4::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

const UA: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const UB: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

/// The lab with both nodes' fast paths registered.
fn lab() -> Lab {
    let mut lab = Lab::with_load_balancers();
    for (_, p) in &mut lab.ports {
        p.fast_path = Some(if p.peer == NODE_A { UA } else { UB });
    }
    lab
}

/// Everything queued for the nodes since the last call.
fn updates(h: &mut Harness) -> Vec<(SocketAddr, Update)> {
    h.fabric.take_grants().collect()
}

/// The IPv4 grants queued since the last call; fails on anything else.
fn grants(h: &mut Harness) -> Vec<(SocketAddr, Entry)> {
    updates(h)
        .into_iter()
        .map(|(p, u)| match u {
            Update::Grant(e) => (p, e),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

/// The IPv4 evictions queued since the last call; fails on anything else.
fn evictions(h: &mut Harness) -> Vec<(SocketAddr, Entry)> {
    updates(h)
        .into_iter()
        .map(|(p, u)| match u {
            Update::Evict(e) => (p, e),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

/// The IPv6 grants queued since the last call; fails on anything else.
fn grants6(h: &mut Harness) -> Vec<(SocketAddr, Entry6)> {
    updates(h)
        .into_iter()
        .map(|(p, u)| match u {
            Update::Grant6(e) => (p, e),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

/// The IPv6 evictions queued since the last call; fails on anything else.
fn evictions6(h: &mut Harness) -> Vec<(SocketAddr, Entry6)> {
    updates(h)
        .into_iter()
        .map(|(p, u)| match u {
            Update::Evict6(e) => (p, e),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

fn handshake(h: &mut Harness) {
    h.forwarded(&POD_A1, &tcp_datagram(&POD_A1, POD_B1.ip, 40000, 80, TCP_SYN), &POD_B1);
    h.forwarded(&POD_B1, &tcp_datagram(&POD_B1, POD_A1.ip, 80, 40000, TCP_SYN | TCP_ACK), &POD_A1);
}

#[test]
fn an_established_flow_is_granted_to_both_nodes_both_ways_with_the_pipelines_rewrite() {
    let mut h = Harness::new(&lab());
    handshake(&mut h);
    assert!(grants(&mut h).is_empty(), "nothing before the flow is established");
    h.forwarded(&POD_A1, &tcp_datagram(&POD_A1, POD_B1.ip, 40000, 80, TCP_ACK), &POD_B1);
    let forward = Tuple { protocol: PROTO_TCP, src: POD_A1.ip, dst: POD_B1.ip, sport: 40000, dport: 80 };
    let idle_secs = 910;
    assert_eq!(
        grants(&mut h),
        [
            (
                NODE_B,
                Entry::Ingress(IngressEntry {
                    dst_vni: vni(21),
                    dst_vlan: 1001,
                    dst_mac: POD_B1.mac,
                    tuple: forward,
                    peer: UA,
                    idle_secs
                })
            ),
            (
                NODE_A,
                Entry::Ingress(IngressEntry {
                    dst_vni: vni(10),
                    dst_vlan: 1001,
                    dst_mac: POD_A1.mac,
                    tuple: forward.reversed(),
                    peer: UB,
                    idle_secs
                })
            ),
            (
                NODE_A,
                Entry::Egress(EgressEntry {
                    src_vni: vni(10),
                    src_vlan: 1001,
                    tuple: forward,
                    peer: UB,
                    dst_vni: vni(21),
                    idle_secs
                })
            ),
            (
                NODE_B,
                Entry::Egress(EgressEntry {
                    src_vni: vni(21),
                    src_vlan: 1001,
                    tuple: forward.reversed(),
                    peer: UA,
                    dst_vni: vni(10),
                    idle_secs
                })
            ),
        ]
    );
    // Within a second the flow is not granted again; after one, it is (a lost grant).
    h.forwarded(&POD_B1, &tcp_datagram(&POD_B1, POD_A1.ip, 80, 40000, TCP_ACK), &POD_A1);
    assert!(grants(&mut h).is_empty());
    h.now = Instant::from_millis(1_500);
    h.forwarded(&POD_B1, &tcp_datagram(&POD_B1, POD_A1.ip, 80, 40000, TCP_ACK), &POD_A1);
    assert_eq!(grants(&mut h).len(), 4);
    // A new snapshot: granted again at once, under its epoch.
    h.set_config(lab().build(2));
    h.forwarded(&POD_B1, &tcp_datagram(&POD_B1, POD_A1.ip, 80, 40000, TCP_ACK), &POD_A1);
    assert_eq!(grants(&mut h).len(), 4);
    // A FIN (the kernel sends it here): both nodes forget the flow's four entries at once, and
    // a closing flow is not granted again.
    h.now = Instant::from_secs(5);
    h.forwarded(&POD_A1, &tcp_datagram(&POD_A1, POD_B1.ip, 40000, 80, TCP_FIN | TCP_ACK), &POD_B1);
    let gone = evictions(&mut h);
    assert_eq!(gone.len(), 4);
    assert_eq!(gone.iter().filter(|(p, _)| *p == NODE_A).count(), 2);
    h.forwarded(&POD_B1, &tcp_datagram(&POD_B1, POD_A1.ip, 80, 40000, TCP_ACK), &POD_A1);
    assert!(grants(&mut h).is_empty(), "a closing flow is not granted again");
}

#[test]
fn udp_is_granted_at_once_with_its_timeout() {
    let mut h = Harness::new(&lab());
    h.forwarded(&TRUNK_A, &udp_datagram(&TRUNK_A, PRIMARY_B.ip, 5000, 53), &PRIMARY_B);
    let g = grants(&mut h);
    assert_eq!(g.len(), 4);
    assert!(g.iter().all(|(_, e)| match e {
        Entry::Egress(e) => e.idle_secs == 30 && e.src_vlan == 0,
        Entry::Ingress(e) => e.idle_secs == 30 && e.dst_vlan == 0,
    }));
}

#[test]
fn nothing_is_granted_that_the_kernel_could_not_carry_as_the_pipeline_does() {
    let mut h = Harness::new(&lab());
    // Through a load balancer (translated, a central hop).
    h.send(&PRIMARY_B, &udp_datagram(&PRIMARY_B, VIP_INTRA, 5000, 53));
    // The internet side.
    h.send(&EXTERNAL, &tcp_datagram(&EXTERNAL, VIP_PUBLIC, 40000, 80, TCP_SYN));
    // Dropped by a security group.
    h.dropped(&POD_A1, &udp_datagram(&POD_A1, POD_A2.ip, 5000, 5432));
    // ICMP and a TCP handshake that never completes.
    h.send(&TRUNK_A, &echo_datagram(&TRUNK_A, PRIMARY_B.ip, 8, 7));
    h.forwarded(&TRUNK_A, &tcp_datagram(&TRUNK_A, PRIMARY_B.ip, 40001, 22, TCP_SYN), &PRIMARY_B);
    assert!(grants(&mut h).is_empty());
    // A node without a fast path: nothing to either.
    let mut plain = lab();
    for (_, p) in &mut plain.ports {
        if p.peer == NODE_B {
            p.fast_path = None;
        }
    }
    let mut h = Harness::new(&plain);
    h.forwarded(&TRUNK_A, &udp_datagram(&TRUNK_A, PRIMARY_B.ip, 5000, 53), &PRIMARY_B);
    assert!(grants(&mut h).is_empty());
    // Explaining a frame grants nothing.
    let mut h = Harness::new(&lab());
    let _ = h.fabric.trace(h.now, TRUNK_A.peer, &udp_datagram(&TRUNK_A, PRIMARY_B.ip, 5000, 53));
    assert!(grants(&mut h).is_empty());
}

#[test]
fn a_captured_port_keeps_its_flows_on_the_slow_path_until_the_capture_ends() {
    let captured = |ports: &[u32]| {
        let mut c = lab().build(2);
        c.set_captured(ports.iter().map(|p| vni(*p)));
        c
    };
    let mut h = Harness::new(&lab());
    h.set_config(captured(&[21]));
    // The flow of a member on node B's trunk (port 21): through the pipeline, granted nowhere.
    handshake(&mut h);
    h.forwarded(&POD_A1, &tcp_datagram(&POD_A1, POD_B1.ip, 40000, 80, TCP_ACK), &POD_B1);
    h.forwarded(&POD_B1, &tcp_datagram(&POD_B1, POD_A1.ip, 80, 40000, TCP_ACK), &POD_A1);
    assert!(grants(&mut h).is_empty(), "an established flow of a captured port");
    // A flow between two other ports is granted as ever.
    h.forwarded(&TRUNK_A, &udp_datagram(&TRUNK_A, PRIMARY_B.ip, 5000, 53), &PRIMARY_B);
    assert_eq!(grants(&mut h).len(), 4);
    // The capture ends (a new snapshot without the mark): the flow is granted again at once.
    h.set_config(captured(&[]));
    h.forwarded(&POD_A1, &tcp_datagram(&POD_A1, POD_B1.ip, 40000, 80, TCP_ACK), &POD_B1);
    assert_eq!(grants(&mut h).len(), 4);
}

#[test]
fn reports_keep_the_flow_alive_and_count_from_the_right_shim_only() {
    let mut h = Harness::new(&lab());
    h.forwarded(&TRUNK_A, &udp_datagram(&TRUNK_A, PRIMARY_B.ip, 5000, 53), &PRIMARY_B);
    let before = h.stats();
    let record = ReportRecord {
        src_vni: vni(10),
        src_vlan: 0,
        tuple: Tuple { protocol: PROTO_UDP, src: TRUNK_A.ip, dst: PRIMARY_B.ip, sport: 5000, dport: 53 },
        packets: 1000,
        bytes: 64_000,
    };
    let _ = grants(&mut h);
    assert!(!h.fabric.fast_path_report(h.now, NODE_B, &record), "only the sender's shim reports");
    assert!(evictions(&mut h).is_empty(), "nothing is evicted on a stranger's word");
    let spoofed = ReportRecord { tuple: Tuple { src: TRUNK_A.ip, dst: POD_B1.ip, ..record.tuple }, ..record };
    assert!(!h.fabric.fast_path_report(h.now, NODE_A, &spoofed), "no such flow");
    // A flow conntrack does not hold: the node forgets the entry it reported.
    let gone = evictions(&mut h);
    assert!(
        matches!(gone[..], [(NODE_A, Entry::Egress(e))] if e.tuple == spoofed.tuple && e.src_vni == vni(10)),
        "{gone:?}"
    );
    // 25 s later, a report keeps the 30 s UDP flow alive past its first expiry.
    h.now = Instant::from_secs(25);
    assert!(h.fabric.fast_path_report(h.now, NODE_A, &record));
    let after = h.stats();
    let (a0, a1) = (port(&before, 10), port(&after, 10));
    let (b0, b1) = (port(&before, 20), port(&after, 20));
    assert_eq!((a1.rx_frames - a0.rx_frames, a1.rx_bytes - a0.rx_bytes), (1000, 64_000));
    assert_eq!((b1.tx_frames - b0.tx_frames, b1.tx_bytes - b0.tx_bytes), (1000, 64_000));
    h.now = Instant::from_secs(40);
    // (Only `fabric` heard the report; its split twin would expire the flow.)
    h.fabric.expire(h.now);
    assert_eq!(h.fabric.flows(h.now).len(), 1, "the report kept it");
    // The flow log has the carried packets too: the first one the pipeline forwarded, the
    // 1,000 the kernel carried, on both ENIs.
    let logged: Vec<_> = h.fabric.take_flow_records().map(|r| (r.eni.to_string(), r.direction, r.packets)).collect();
    assert_eq!(
        logged,
        [(TRUNK_A.eni.to_string(), Direction::Egress, 1001), (PRIMARY_B.eni.to_string(), Direction::Ingress, 1001)]
    );
    // A member's frames carry their tag on the fabric's wire: counted as the pipeline counts.
    let mut h = Harness::new(&lab());
    handshake(&mut h);
    h.forwarded(&POD_A1, &tcp_datagram(&POD_A1, POD_B1.ip, 40000, 80, TCP_ACK), &POD_B1);
    let before = h.stats();
    let record = ReportRecord {
        src_vni: vni(10),
        src_vlan: 1001,
        tuple: Tuple { protocol: PROTO_TCP, src: POD_A1.ip, dst: POD_B1.ip, sport: 40000, dport: 80 },
        packets: 10,
        bytes: 1000,
    };
    assert!(h.fabric.fast_path_report(h.now, NODE_A, &record));
    let after = h.stats();
    assert_eq!(port(&after, 10).rx_bytes - port(&before, 10).rx_bytes, 1040);
    assert_eq!(port(&after, 21).tx_bytes - port(&before, 21).tx_bytes, 1040);
}

// ---- IPv6 ------------------------------------------------------------------------------------

/// The fast-path lab, sg-web also admitting TCP 80 from the VPC's /48 ([`web6_rule`]) and UDP
/// 5353 from any IPv6 address.
fn lab6() -> Lab {
    let mut lab = lab();
    let sg = lab.group_mut("sg-web");
    sg.rules.push(web6_rule());
    sg.rules.push(rule(Direction::Ingress, 1, Policy::Accept, Protocol::Udp, Some(5353), any_ipv6()));
    lab
}

fn tcp6(from: &Endpoint, src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    tcp6_flags_datagram(from, src, dst, sport, dport, flags)
}

fn handshake6(h: &mut Harness) {
    h.forwarded(&POD_A1, &tcp6(&POD_A1, POD_A1_V6, POD_B1_V6, 40000, 80, TCP_SYN), &POD_B1);
    h.forwarded(&POD_B1, &tcp6(&POD_B1, POD_B1_V6, POD_A1_V6, 80, 40000, TCP_SYN | TCP_ACK), &POD_A1);
}

/// A UDP datagram to `dst` in two fragments' first: fragment header, offset 0, more to come.
fn udp6_first_fragment(from: &Endpoint, src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let mut ip = vec![0x60, 0, 0, 0, 0, 8 + 8 + 8, 44, 64];
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    ip.extend_from_slice(&[PROTO_UDP, 0, 0, 1, 0, 0, 0, 7]); // fragment header: offset 0, M = 1, id 7
    ip.extend_from_slice(&[0x13, 0x88, 0x14, 0xe9, 0, 24, 0, 0]); // UDP 5000 → 5353, 24 bytes in all
    ip.extend_from_slice(b"fragment");
    geneve(from.vni, None, &ethernet(GATEWAY_MAC, from.mac, from.vlan, ETHERTYPE_IPV6, &ip))
}

#[test]
fn an_established_ipv6_flow_is_granted_to_both_nodes_both_ways_with_the_pipelines_rewrite() {
    let mut h = Harness::new(&lab6());
    handshake6(&mut h);
    assert!(updates(&mut h).is_empty(), "nothing before the flow is established");
    h.forwarded(&POD_A1, &tcp6(&POD_A1, POD_A1_V6, POD_B1_V6, 40000, 80, TCP_ACK), &POD_B1);
    let forward = Tuple { protocol: PROTO_TCP, src: POD_A1_V6, dst: POD_B1_V6, sport: 40000, dport: 80 };
    let idle_secs = 910;
    assert_eq!(
        grants6(&mut h),
        [
            (
                NODE_B,
                Entry::Ingress(IngressEntry {
                    dst_vni: vni(21),
                    dst_vlan: 1001,
                    dst_mac: POD_B1.mac,
                    tuple: forward,
                    peer: UA,
                    idle_secs
                })
            ),
            (
                NODE_A,
                Entry::Ingress(IngressEntry {
                    dst_vni: vni(10),
                    dst_vlan: 1001,
                    dst_mac: POD_A1.mac,
                    tuple: forward.reversed(),
                    peer: UB,
                    idle_secs
                })
            ),
            (
                NODE_A,
                Entry::Egress(EgressEntry {
                    src_vni: vni(10),
                    src_vlan: 1001,
                    tuple: forward,
                    peer: UB,
                    dst_vni: vni(21),
                    idle_secs
                })
            ),
            (
                NODE_B,
                Entry::Egress(EgressEntry {
                    src_vni: vni(21),
                    src_vlan: 1001,
                    tuple: forward.reversed(),
                    peer: UA,
                    dst_vni: vni(10),
                    idle_secs
                })
            ),
        ]
    );
    // Within a second the flow is not granted again; after one, it is (a lost grant).
    h.forwarded(&POD_B1, &tcp6(&POD_B1, POD_B1_V6, POD_A1_V6, 80, 40000, TCP_ACK), &POD_A1);
    assert!(updates(&mut h).is_empty());
    h.now = Instant::from_millis(1_500);
    h.forwarded(&POD_B1, &tcp6(&POD_B1, POD_B1_V6, POD_A1_V6, 80, 40000, TCP_ACK), &POD_A1);
    assert_eq!(grants6(&mut h).len(), 4);
    // A new snapshot has a new epoch (the one the shell revokes every node to before it is in
    // force): nothing granted under the old one holds, so the flow is granted again at once,
    // within the second, under the new one.
    let epoch = h.fabric.config().epoch();
    h.set_config(lab6().build(2));
    assert_ne!(h.fabric.config().epoch(), epoch);
    h.forwarded(&POD_B1, &tcp6(&POD_B1, POD_B1_V6, POD_A1_V6, 80, 40000, TCP_ACK), &POD_A1);
    assert_eq!(grants6(&mut h).len(), 4);
    // A FIN (the kernel sends it here): both nodes forget the flow's four entries at once, and
    // a closing flow is not granted again.
    h.now = Instant::from_secs(5);
    h.forwarded(&POD_A1, &tcp6(&POD_A1, POD_A1_V6, POD_B1_V6, 40000, 80, TCP_FIN | TCP_ACK), &POD_B1);
    let gone = evictions6(&mut h);
    assert_eq!(gone.len(), 4);
    assert_eq!(gone.iter().filter(|(p, _)| *p == NODE_A).count(), 2);
    assert!(gone.iter().all(|(_, e)| e.tuple() == forward || e.tuple() == forward.reversed()));
    h.forwarded(&POD_B1, &tcp6(&POD_B1, POD_B1_V6, POD_A1_V6, 80, 40000, TCP_ACK), &POD_A1);
    assert!(updates(&mut h).is_empty(), "a closing flow is not granted again");
}

#[test]
fn an_rst_evicts_an_ipv6_flow_and_the_ipv4_flow_of_the_same_pods_stays() {
    let mut h = Harness::new(&lab6());
    // The same two pods, one flow of each family: granted apart.
    handshake(&mut h);
    h.forwarded(&POD_A1, &tcp_datagram(&POD_A1, POD_B1.ip, 40000, 80, TCP_ACK), &POD_B1);
    assert_eq!(grants(&mut h).len(), 4);
    handshake6(&mut h);
    h.forwarded(&POD_A1, &tcp6(&POD_A1, POD_A1_V6, POD_B1_V6, 40000, 80, TCP_ACK), &POD_B1);
    assert_eq!(grants6(&mut h).len(), 4);
    // The IPv6 one is reset from the far end: its entries go, the IPv4 flow's stay.
    h.forwarded(&POD_B1, &tcp6(&POD_B1, POD_B1_V6, POD_A1_V6, 80, 40000, TCP_RST), &POD_A1);
    assert_eq!(evictions6(&mut h).len(), 4);
    h.now = Instant::from_secs(2);
    h.forwarded(&POD_A1, &tcp_datagram(&POD_A1, POD_B1.ip, 40000, 80, TCP_ACK), &POD_B1);
    assert_eq!(grants(&mut h).len(), 4, "the IPv4 flow is still carried");
}

#[test]
fn grants_still_queued_when_a_new_snapshot_comes_never_leave_under_its_epoch() {
    let mut h = Harness::new(&lab6());
    h.forwarded(&POD_A1, &udp6_datagram(&POD_A1, POD_A1_V6, POD_B1_V6, 5000, 5353), &POD_B1);
    h.forwarded(&TRUNK_A, &udp_datagram(&TRUNK_A, PRIMARY_B.ip, 5000, 53), &PRIMARY_B);
    h.set_config(lab6().build(2));
    assert!(updates(&mut h).is_empty(), "decided under the old snapshot");
    // Judged again under the new one, both are granted again at once.
    h.forwarded(&POD_A1, &udp6_datagram(&POD_A1, POD_A1_V6, POD_B1_V6, 5000, 5353), &POD_B1);
    assert_eq!(grants6(&mut h).len(), 4);
    h.forwarded(&TRUNK_A, &udp_datagram(&TRUNK_A, PRIMARY_B.ip, 5000, 53), &PRIMARY_B);
    assert_eq!(grants(&mut h).len(), 4);
}

#[test]
fn ipv6_udp_is_granted_at_once_with_its_timeout() {
    let mut h = Harness::new(&lab6());
    h.forwarded(&POD_A1, &udp6_datagram(&POD_A1, POD_A1_V6, POD_B1_V6, 5000, 5353), &POD_B1);
    let g = grants6(&mut h);
    assert_eq!(g.len(), 4);
    assert!(g.iter().all(|(_, e)| match e {
        Entry::Egress(e) => e.idle_secs == 30 && e.src_vlan == 1001,
        Entry::Ingress(e) => e.idle_secs == 30 && e.dst_vlan == 1001,
    }));
    // To pod-b1's /80 prefix: its flows are granted as to its address.
    let in_prefix: Ipv6Addr = "2408:4005:3000:1:5::9".parse().unwrap();
    h.forwarded(&POD_A1, &udp6_datagram(&POD_A1, POD_A1_V6, in_prefix, 5000, 5353), &POD_B1);
    let g = grants6(&mut h);
    assert_eq!(g.len(), 4);
    assert!(g.iter().any(|(p, e)| *p == NODE_A && matches!(e, Entry::Egress(e) if e.tuple.dst == in_prefix)));
}

#[test]
fn nothing_ipv6_is_granted_that_the_kernel_could_not_carry_as_the_pipeline_does() {
    let mut lab = lab6();
    lab.group_mut("sg-web").rules.push(rule(Direction::Ingress, 1, Policy::Accept, Protocol::Icmpv6, None, any_ipv6()));
    let mut h = Harness::new(&lab);
    // ICMPv6: a ping forwarded both ways, neighbour discovery answered, the gateway's ping.
    h.forwarded(&POD_A1, &echo6_datagram(&POD_A1, POD_A1_V6, POD_B1_V6, 9, false), &POD_B1);
    h.forwarded(&POD_B1, &echo6_datagram(&POD_B1, POD_B1_V6, POD_A1_V6, 9, true), &POD_A1);
    let (v, _) = h.send(&POD_A1, &neighbor_solicitation(&POD_A1, POD_A1_V6, POD_B1_V6, 255));
    assert!(matches!(v, Verdict::Reply { .. }), "{v:?}");
    let (v, _) = h.send(&POD_A1, &echo6_datagram(&POD_A1, POD_A1_V6, POD_GW6, 9, false));
    assert!(matches!(v, Verdict::Reply { .. }), "{v:?}");
    // The gateway's own address, for anything else.
    h.dropped(&POD_A1, &udp6_datagram(&POD_A1, POD_A1_V6, POD_GW6, 5000, 5353));
    // Dropped by a security group (sg-db opens 5432 to sg-web only, over TCP).
    h.dropped(&POD_A1, &udp6_datagram(&POD_A1, POD_A1_V6, POD_A2_V6, 5000, 5432));
    // A fragment, and a TCP handshake that never completes.
    assert_eq!(h.dropped(&POD_A1, &udp6_first_fragment(&POD_A1, POD_A1_V6, POD_B1_V6)), DropReason::Ipv6Fragment);
    h.forwarded(&POD_A1, &tcp6(&POD_A1, POD_A1_V6, POD_B1_V6, 40001, 80, TCP_SYN), &POD_B1);
    assert!(updates(&mut h).is_empty());
    // A node without a fast path: nothing to either.
    let mut plain = lab6();
    for (_, p) in &mut plain.ports {
        if p.peer == NODE_B {
            p.fast_path = None;
        }
    }
    let mut h = Harness::new(&plain);
    h.forwarded(&POD_A1, &udp6_datagram(&POD_A1, POD_A1_V6, POD_B1_V6, 5000, 5353), &POD_B1);
    assert!(updates(&mut h).is_empty());
    // A captured port: nothing while the capture lasts.
    let mut h = Harness::new(&lab6());
    let mut captured = lab6().build(2);
    captured.set_captured([vni(21)]);
    h.set_config(captured);
    h.forwarded(&POD_A1, &udp6_datagram(&POD_A1, POD_A1_V6, POD_B1_V6, 5000, 5353), &POD_B1);
    assert!(updates(&mut h).is_empty());
    // Explaining a frame grants nothing.
    let mut h = Harness::new(&lab6());
    let _ = h.fabric.trace(h.now, POD_A1.peer, &udp6_datagram(&POD_A1, POD_A1_V6, POD_B1_V6, 5000, 5353));
    assert!(updates(&mut h).is_empty());
}

#[test]
fn reports_keep_an_ipv6_flow_alive_in_its_table_and_count_from_the_right_shim_only() {
    let mut h = Harness::new(&lab6());
    h.forwarded(&POD_A1, &udp6_datagram(&POD_A1, POD_A1_V6, POD_B1_V6, 5000, 5353), &POD_B1);
    let _ = grants6(&mut h);
    let before = h.stats();
    let record = ReportRecord {
        src_vni: vni(10),
        src_vlan: 1001,
        tuple: Tuple { protocol: PROTO_UDP, src: POD_A1_V6, dst: POD_B1_V6, sport: 5000, dport: 5353 },
        packets: 1000,
        bytes: 64_000,
    };
    assert!(!h.fabric.fast_path_report6(h.now, NODE_B, &record), "only the sender's shim reports");
    assert!(updates(&mut h).is_empty(), "nothing is evicted on a stranger's word");
    let wrong_vlan = ReportRecord { src_vlan: 1002, ..record };
    assert!(!h.fabric.fast_path_report6(h.now, NODE_A, &wrong_vlan), "pod-a2 did not send it");
    let gone = evictions6(&mut h);
    assert!(matches!(gone[..], [(NODE_A, Entry::Egress(e))] if e.src_vlan == 1002), "{gone:?}");
    // A flow conntrack6 does not hold: the node forgets the entry it reported.
    let spoofed = ReportRecord { tuple: Tuple { dport: 5354, ..record.tuple }, ..record };
    assert!(!h.fabric.fast_path_report6(h.now, NODE_A, &spoofed), "no such flow");
    let gone = evictions6(&mut h);
    assert!(
        matches!(gone[..], [(NODE_A, Entry::Egress(e))] if e.tuple == spoofed.tuple && e.src_vni == vni(10)),
        "{gone:?}"
    );
    // The IPv4 reading of it is no flow either (the tables are apart).
    let v4 = ReportRecord {
        src_vni: vni(10),
        src_vlan: 1001,
        tuple: Tuple { protocol: PROTO_UDP, src: POD_A1.ip, dst: POD_B1.ip, sport: 5000, dport: 5353 },
        packets: 1,
        bytes: 1,
    };
    assert!(!h.fabric.fast_path_report(h.now, NODE_A, &v4));
    assert_eq!(evictions(&mut h).len(), 1);
    // 25 s later, a report keeps the 30 s UDP flow alive past its first expiry; the counters
    // have the carried frames, each with the members' tag as on the fabric's wire.
    h.now = Instant::from_secs(25);
    assert!(h.fabric.fast_path_report6(h.now, NODE_A, &record));
    assert!(updates(&mut h).is_empty());
    let after = h.stats();
    let (a0, a1) = (port(&before, 10), port(&after, 10));
    let (b0, b1) = (port(&before, 21), port(&after, 21));
    assert_eq!((a1.rx_frames - a0.rx_frames, a1.rx_bytes - a0.rx_bytes), (1000, 68_000));
    assert_eq!((b1.tx_frames - b0.tx_frames, b1.tx_bytes - b0.tx_bytes), (1000, 68_000));
    h.now = Instant::from_secs(40);
    // Only `fabric` heard the report: its split twin expires the flow, it keeps it.
    assert_eq!((h.fabric.expire(h.now), h.split.expire(h.now)), (0, 1));
    assert_eq!(h.fabric.stats().conntrack_entries, 1, "the report kept it");
    // Once it expires, a report of it is answered with an eviction: the kernel's entry must
    // not outlive the flow.
    h.now = Instant::from_secs(60);
    h.fabric.expire(h.now);
    assert!(!h.fabric.fast_path_report6(h.now, NODE_A, &record));
    let gone = evictions6(&mut h);
    assert!(matches!(gone[..], [(NODE_A, Entry::Egress(e))] if e.tuple == record.tuple), "{gone:?}");
}

#[test]
fn a_flow_the_kernels_carried_for_minutes_is_still_evicted_by_its_fin_either_family() {
    let mut h = Harness::new(&lab6());
    handshake(&mut h);
    h.forwarded(&POD_A1, &tcp_datagram(&POD_A1, POD_B1.ip, 40000, 80, TCP_ACK), &POD_B1);
    assert_eq!(grants(&mut h).len(), 4);
    handshake6(&mut h);
    h.forwarded(&POD_A1, &tcp6(&POD_A1, POD_A1_V6, POD_B1_V6, 40000, 80, TCP_ACK), &POD_B1);
    assert_eq!(grants6(&mut h).len(), 4);
    // Two minutes in the kernels: nothing of the flows reaches the pipeline, the nodes' reports
    // keep them alive (both twins hear them) and the fabric expires what it may meanwhile.
    let report = ReportRecord {
        src_vni: vni(10),
        src_vlan: 1001,
        tuple: Tuple { protocol: PROTO_TCP, src: POD_A1.ip, dst: POD_B1.ip, sport: 40000, dport: 80 },
        packets: 100,
        bytes: 100_000,
    };
    let report6 = ReportRecord {
        src_vni: vni(10),
        src_vlan: 1001,
        tuple: Tuple { protocol: PROTO_TCP, src: POD_A1_V6, dst: POD_B1_V6, sport: 40000, dport: 80 },
        packets: 100,
        bytes: 100_000,
    };
    for t in (30..=120).step_by(30) {
        h.now = Instant::from_secs(t);
        for f in [&mut h.fabric, &mut h.split] {
            assert!(f.fast_path_report(h.now, NODE_A, &report));
            assert!(f.fast_path_report6(h.now, NODE_A, &report6));
        }
        h.expire();
    }
    assert!(updates(&mut h).is_empty());
    // The FINs (the kernels send them here): each flow's four entries go, however long ago it
    // was granted, or the kernels would go on carrying the rest of it on a verdict conntrack
    // is about to forget.
    h.forwarded(&POD_A1, &tcp_datagram(&POD_A1, POD_B1.ip, 40000, 80, TCP_FIN | TCP_ACK), &POD_B1);
    assert_eq!(evictions(&mut h).len(), 4, "the IPv4 flow");
    h.forwarded(&POD_A1, &tcp6(&POD_A1, POD_A1_V6, POD_B1_V6, 40000, 80, TCP_FIN | TCP_ACK), &POD_B1);
    assert_eq!(evictions6(&mut h).len(), 4, "the IPv6 flow");
}

#[test]
fn a_report_of_a_closing_flow_counts_and_evicts_it_again_in_case_the_first_eviction_was_lost() {
    let mut h = Harness::new(&lab6());
    handshake6(&mut h);
    h.forwarded(&POD_A1, &tcp6(&POD_A1, POD_A1_V6, POD_B1_V6, 40000, 80, TCP_ACK), &POD_B1);
    assert_eq!(grants6(&mut h).len(), 4);
    h.forwarded(&POD_A1, &tcp6(&POD_A1, POD_A1_V6, POD_B1_V6, 40000, 80, TCP_FIN | TCP_ACK), &POD_B1);
    assert_eq!(evictions6(&mut h).len(), 4);
    // Node B never got its eviction and carried the other side's segments on: they count (the
    // flow still lives), and node B is told again.
    let record = ReportRecord {
        src_vni: vni(21),
        src_vlan: 1001,
        tuple: Tuple { protocol: PROTO_TCP, src: POD_B1_V6, dst: POD_A1_V6, sport: 80, dport: 40000 },
        packets: 3,
        bytes: 300,
    };
    let before = h.stats();
    // (Both twins hear the reports: the frames sent next must count alike in both.)
    assert!(h.split.fast_path_report6(h.now, NODE_B, &record));
    assert!(h.fabric.fast_path_report6(h.now, NODE_B, &record));
    assert_eq!(port(&h.stats(), 21).rx_frames - port(&before, 21).rx_frames, 3);
    let gone = evictions6(&mut h);
    assert!(matches!(gone[..], [(NODE_B, Entry::Egress(e))] if e.tuple == record.tuple), "{gone:?}");
    // The same for IPv4.
    handshake(&mut h);
    h.forwarded(&POD_A1, &tcp_datagram(&POD_A1, POD_B1.ip, 40000, 80, TCP_ACK), &POD_B1);
    assert_eq!(grants(&mut h).len(), 4);
    h.forwarded(&POD_B1, &tcp_datagram(&POD_B1, POD_A1.ip, 80, 40000, TCP_RST), &POD_A1);
    assert_eq!(evictions(&mut h).len(), 4);
    let record = ReportRecord {
        src_vni: vni(10),
        src_vlan: 1001,
        tuple: Tuple { protocol: PROTO_TCP, src: POD_A1.ip, dst: POD_B1.ip, sport: 40000, dport: 80 },
        packets: 1,
        bytes: 100,
    };
    assert!(h.split.fast_path_report(h.now, NODE_A, &record));
    assert!(h.fabric.fast_path_report(h.now, NODE_A, &record));
    let gone = evictions(&mut h);
    assert!(matches!(gone[..], [(NODE_A, Entry::Egress(e))] if e.tuple == record.tuple), "{gone:?}");
}
