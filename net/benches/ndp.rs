//! What answering neighbour discovery through etherparse costs: `cargo bench -p enifab-net
//! --bench ndp` (release build; prints nanoseconds per operation, writes nothing).
//!
//! One solicitation for the gateway, read (IPv6 header, ICMPv6 checksum, the §7.1.1 checks,
//! options) and answered (advertisement with the target link-layer option and its checksum),
//! a million times; the median of nine rounds. Then the IPv6 header alone, which every IPv6
//! frame will pay. For scale, the same run times the hand-written IPv4 layer's closest work:
//! an ARP request read and answered, an IPv4 header read. These numbers are what `wire::ipv6`'s
//! module doc cites for using etherparse rather than hand-writing the parsers.

use std::hint::black_box;
use std::net::Ipv6Addr;
use std::time::Instant;

use enifab_net::Mac;
use enifab_net::wire::ipv6::{self, NeighborAdvertisement, NeighborSolicitation, Packet};
use enifab_net::wire::{arp, checksum, ipv4};

const OPS: u32 = 1_000_000;
const ROUNDS: usize = 9;

fn solicitation(src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let dst = ipv6::solicited_node(target);
    let mut icmp = vec![ipv6::TYPE_NEIGHBOR_SOLICITATION, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&target.octets());
    icmp.extend_from_slice(&[1, 1, 0x00, 0x16, 0x3e, 1, 2, 3]);
    let mut pseudo = [0u8; 40];
    pseudo[..16].copy_from_slice(&src.octets());
    pseudo[16..32].copy_from_slice(&dst.octets());
    pseudo[32..36].copy_from_slice(&(icmp.len() as u32).to_be_bytes());
    pseudo[39] = ipv6::NEXT_HEADER_ICMPV6;
    let sum = checksum::internet2(&pseudo, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    ip.extend_from_slice(&[ipv6::NEXT_HEADER_ICMPV6, 255]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    ip.extend_from_slice(&icmp);
    ip
}

fn median_ns(mut f: impl FnMut()) -> f64 {
    let mut rounds: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..OPS {
                f();
            }
            t.elapsed().as_nanos() as f64 / f64::from(OPS)
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[ROUNDS / 2]
}

fn main() {
    let host: Ipv6Addr = "2408:4005:300:3::10".parse().expect("address");
    let gateway: Ipv6Addr = "2408:4005:300:3:ffff:ffff:ffff:fffd".parse().expect("address");
    let ns_frame = solicitation(host, gateway);
    let mut out = [0u8; ipv6::ADVERTISEMENT_LEN];
    let ndp = median_ns(|| {
        let ip = Packet::parse(black_box(&ns_frame)).expect("parses");
        let ns = NeighborSolicitation::parse(&ip).expect("valid");
        let n = NeighborAdvertisement::answer(ip.src, &ns, Mac::GATEWAY, true).emit(&mut out);
        let _ = black_box((n, &out));
    });

    let v6_header = median_ns(|| {
        black_box(Packet::parse(black_box(&ns_frame)).expect("parses"));
    });
    // The hand-written IPv4 header reader on a minimal 20-byte header (no checksum check, as
    // the pipeline reads it).
    let mut v4 = [0u8; 28];
    v4[0] = 0x45;
    v4[2..4].copy_from_slice(&28u16.to_be_bytes());
    v4[8] = 64;
    v4[9] = 17;
    let v4_header = median_ns(|| {
        black_box(ipv4::Packet::parse(black_box(&v4), false).expect("parses"));
    });

    let request = arp::Repr {
        operation: arp::OP_REQUEST,
        sender_mac: Mac([0x00, 0x16, 0x3e, 1, 2, 3]),
        sender_ip: "10.0.4.10".parse().expect("address"),
        target_mac: Mac::default(),
        target_ip: "10.0.4.253".parse().expect("address"),
    };
    let mut arp_frame = [0u8; arp::LEN];
    request.emit(&mut arp_frame).expect("room");
    let mut arp_out = [0u8; arp::LEN];
    let arp = median_ns(|| {
        let r = arp::Repr::parse(black_box(&arp_frame)).expect("parses");
        let n = r.reply_from(Mac::GATEWAY).emit(&mut arp_out);
        let _ = black_box((n, &arp_out));
    });

    println!("| operation | ns/op (median of {ROUNDS} rounds of {OPS}) |");
    println!("|---|---|");
    println!("| NDP: parse IPv6 + solicitation (checksum checked), build advertisement (etherparse) | {ndp:.1} |");
    println!("| ARP: parse request, build reply (hand-written, for scale) | {arp:.1} |");
    println!("| IPv6 header: parse (etherparse) | {v6_header:.1} |");
    println!("| IPv4 header: parse (hand-written, for scale) | {v4_header:.1} |");
}
