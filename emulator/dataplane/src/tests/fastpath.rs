//! Grants and reports: what the pipeline lets the nodes' kernels carry, and what it makes of
//! their reports.

use core::net::Ipv4Addr;

use super::*;
use crate::config::Direction;
use crate::fastpath::Update;
use crate::wire::fastpath::{EgressEntry, Entry, IngressEntry, ReportRecord, Tuple};
use crate::wire::ipv4::{PROTO_TCP, PROTO_UDP};
use crate::wire::l4::{TCP_ACK, TCP_FIN, TCP_SYN};

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

/// The grants queued since the last call; fails on an eviction.
fn grants(h: &mut Harness) -> Vec<(SocketAddr, Entry)> {
    h.fabric
        .take_grants()
        .map(|(p, u)| match u {
            Update::Grant(e) => (p, e),
            Update::Evict(e) => panic!("unexpected eviction {e:?}"),
        })
        .collect()
}

/// The evictions queued since the last call; fails on a grant.
fn evictions(h: &mut Harness) -> Vec<(SocketAddr, Entry)> {
    h.fabric
        .take_grants()
        .map(|(p, u)| match u {
            Update::Evict(e) => (p, e),
            Update::Grant(e) => panic!("unexpected grant {e:?}"),
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
