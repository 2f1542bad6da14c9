//! What the second family costs the pipeline: `cargo bench -p enifab-dataplane --features
//! testkit --bench family` (release build; prints a table, writes nothing).
//!
//! The testkit's two-node lab (its pods are dual stack), one fabric per family, each taking the
//! same kind of datagrams through `Fabric::process_split` (the emulator's path): packets of one
//! established UDP flow between two member ENIs on different nodes, and first packets of new TCP
//! flows (a new source port each: groups judged, a conntrack entry made). The two fabrics
//! alternate in rounds of `PACKETS`; the table shows each family's median time per packet and
//! the ratio.
//!
//! Target (issue 13, for the whole path pod → pod across nodes): IPv6 ≥ 0.9 × IPv4. This
//! measures the pipeline's share of it.

use std::hash::RandomState;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant as WallClock;

use enifab_dataplane::testkit::{
    Lab, POD_A1, POD_A1_V6, POD_B1, POD_B1_V6, any_ip, any_ipv6, frame6, rule, tcp_datagram, tcp6_datagram,
    udp_datagram,
};
use enifab_dataplane::wire::ethernet::GATEWAY_MAC;
use enifab_dataplane::wire::l4::TCP_SYN;
use enifab_dataplane::{Direction, Fabric, FabricOptions, Instant, Policy, Protocol, fabric::MAX_HEADER_LEN};

const PACKETS: u32 = 200_000;
const ROUNDS: usize = 9;

/// The lab, whose web group admits UDP 53 and TCP 80 from anywhere, in both families.
fn fabric() -> Fabric {
    let mut lab = Lab::new();
    for peer in [any_ip(), any_ipv6()] {
        let g = lab.group_mut("sg-web");
        g.rules.push(rule(Direction::Ingress, 1, Policy::Accept, Protocol::Udp, Some(53), peer.clone()));
        g.rules.push(rule(Direction::Ingress, 1, Policy::Accept, Protocol::Tcp, Some(80), peer));
    }
    Fabric::new(Arc::new(lab.build(1)), FabricOptions::new(RandomState::new()))
}

fn udp6(sport: u16) -> Vec<u8> {
    frame6(&POD_A1, GATEWAY_MAC, |b| {
        let mut v = Vec::new();
        let _ = b.ipv6(POD_A1_V6, POD_B1_V6, 64).udp(sport, 53).write(&mut v, b"hello");
        v
    })
}

/// Nanoseconds per packet of one round of `make(i)` datagrams through `f`.
fn round(f: &mut Fabric, start: u32, make: &dyn Fn(u32) -> Vec<u8>, from: SocketAddr) -> f64 {
    let datagrams: Vec<Vec<u8>> = (start..start + PACKETS).map(make).collect();
    let mut out = vec![0u8; MAX_HEADER_LEN + 2048];
    let t = WallClock::now();
    for (i, d) in datagrams.iter().enumerate() {
        let now = Instant(1_000_000_000 + u64::from(start) + i as u64);
        std::hint::black_box(f.process_split(now, from, d, &mut out));
    }
    t.elapsed().as_nanos() as f64 / f64::from(PACKETS)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    type Make = Box<dyn Fn(u32) -> Vec<u8>>;
    let port = |i: u32| 1024 + (i % 60_000) as u16;
    let cases: Vec<(&str, Make, Make)> = vec![
        (
            "established UDP flow, member to member across nodes",
            Box::new(|_| udp_datagram(&POD_A1, POD_B1.ip, 5000, 53)),
            Box::new(|_| udp6(5000)),
        ),
        (
            "new TCP flows (one SYN each)",
            Box::new(move |i| tcp_datagram(&POD_A1, POD_B1.ip, port(i), 80, TCP_SYN)),
            Box::new(move |i| tcp6_datagram(&POD_A1, POD_A1_V6, POD_B1_V6, port(i), 80, true)),
        ),
    ];
    println!("| packets | IPv4 (ns/packet) | IPv6 (ns/packet) | IPv6 ÷ IPv4 (throughput) |");
    println!("|---|---|---|---|");
    for (name, v4, v6) in &cases {
        let (mut f4, mut f6) = (fabric(), fabric());
        let (mut t4, mut t6) = (Vec::new(), Vec::new());
        for r in 0..ROUNDS {
            let start = (r as u32) * PACKETS;
            if r % 2 == 0 {
                t4.push(round(&mut f4, start, v4.as_ref(), POD_A1.peer));
                t6.push(round(&mut f6, start, v6.as_ref(), POD_A1.peer));
            } else {
                t6.push(round(&mut f6, start, v6.as_ref(), POD_A1.peer));
                t4.push(round(&mut f4, start, v4.as_ref(), POD_A1.peer));
            }
            let now = Instant(1_000_000_000 + u64::from(start + PACKETS) + 200_000_000_000);
            f4.expire(now);
            f6.expire(now);
        }
        let (m4, m6) = (median(t4), median(t6));
        for (family, f) in [("IPv4", &f4), ("IPv6", &f6)] {
            let s = f.stats();
            let forwarded: u64 = s.ports.iter().map(|p| p.tx_frames).sum();
            let dropped: u64 = s.drops.iter().map(|d| d.frames).sum();
            eprintln!("{name}, {family}: {forwarded} forwarded, {dropped} dropped");
        }
        println!("| {name} | {m4:.0} | {m6:.0} | **{:.2}** |", m4 / m6);
    }
}
