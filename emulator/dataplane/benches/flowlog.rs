//! What flow logs cost the pipeline: `cargo bench -p enifab-dataplane --features testkit --bench
//! flowlog` (release build; prints a table, writes nothing).
//!
//! The testkit's two-node lab, one fabric with flow logs on and one with them off, each taking
//! the same datagrams through `Fabric::process_split` (the emulator's path): packets of one
//! established UDP flow between two member ENIs on different nodes (the common case: two
//! counter additions in the flow's slot), and first packets of new flows (a new source port
//! each: the flow's record is opened, its rule ids taken), and packets a group refuses (one
//! aggregation lookup each). The two fabrics alternate in rounds of `PACKETS` and the table
//! shows each mode's median time per packet over the rounds, and the ratio.
//!
//! Target (issue 12): data-plane throughput with flow logs on ≥ 0.9 × off.

use std::hash::RandomState;
use std::sync::Arc;
use std::time::Instant as WallClock;

use enifab_dataplane::testkit::{Lab, POD_A1, POD_A2, POD_B1, any_ip, rule, tcp_datagram, udp_datagram};
use enifab_dataplane::wire::l4::TCP_SYN;
use enifab_dataplane::{Direction, Policy, Protocol};
use enifab_dataplane::{Fabric, FabricOptions, Instant, fabric::MAX_HEADER_LEN};

const PACKETS: u32 = 200_000;
const ROUNDS: usize = 9;

/// The testkit's lab, whose web group also admits UDP 53 (the established flow's).
fn fabric(flow_log: bool) -> Fabric {
    let options = FabricOptions { flow_log, ..FabricOptions::new(RandomState::new()) };
    let mut lab = Lab::new();
    lab.group_mut("sg-web").rules.push(rule(Direction::Ingress, 1, Policy::Accept, Protocol::Udp, Some(53), any_ip()));
    Fabric::new(Arc::new(lab.build(1)), options)
}

/// Nanoseconds per packet of one round of `make(i)` datagrams through `f`.
fn round(f: &mut Fabric, start: u32, make: &dyn Fn(u32) -> Vec<u8>, from: std::net::SocketAddr) -> f64 {
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
    let cases: Vec<(&str, Make, std::net::SocketAddr)> = vec![
        (
            "established UDP flow, member to member",
            Box::new(|_| udp_datagram(&POD_A1, POD_B1.ip, 5000, 53)),
            POD_A1.peer,
        ),
        (
            "new TCP flows (one SYN each)",
            Box::new(|i| tcp_datagram(&POD_A1, POD_B1.ip, 1024 + (i % 60_000) as u16, 80, TCP_SYN)),
            POD_A1.peer,
        ),
        (
            "refused by a group (SYN to a closed port)",
            Box::new(|i| tcp_datagram(&POD_A2, POD_B1.ip, 1024 + (i % 60_000) as u16, 22, TCP_SYN)),
            POD_A2.peer,
        ),
    ];
    println!("| packets | flow logs off (ns/packet) | flow logs on (ns/packet) | on ÷ off (throughput) |");
    println!("|---|---|---|---|");
    for (name, make, from) in &cases {
        let (mut off, mut on) = (fabric(false), fabric(true));
        let (mut t_off, mut t_on) = (Vec::new(), Vec::new());
        for r in 0..ROUNDS {
            // New flows need new tuples every round; the same for both fabrics.
            let start = (r as u32) * PACKETS;
            if r % 2 == 0 {
                t_off.push(round(&mut off, start, make.as_ref(), *from));
                t_on.push(round(&mut on, start, make.as_ref(), *from));
            } else {
                t_on.push(round(&mut on, start, make.as_ref(), *from));
                t_off.push(round(&mut off, start, make.as_ref(), *from));
            }
            // Close windows as the emulator does every second.
            let now = Instant(1_000_000_000 + u64::from(start + PACKETS) + 20_000_000_000);
            off.expire(now);
            on.expire(now);
            on.take_flow_records().for_each(drop);
        }
        let (m_off, m_on) = (median(t_off), median(t_on));
        let s = on.stats();
        let forwarded: u64 = s.ports.iter().map(|p| p.tx_frames).sum();
        let refused: u64 = s.drops.iter().map(|d| d.frames).sum();
        eprintln!("{name}: {forwarded} forwarded, {refused} dropped (flow logs on)");
        println!("| {name} | {m_off:.0} | {m_on:.0} | **{:.2}** |", m_off / m_on);
    }
}
