//! Every wire parser and the VLAN helpers on arbitrary bytes: must never panic, and a
//! successful push followed by a pop must give the input back.
#![no_main]

use enifab_dataplane::wire::ethernet::Frame;
use enifab_dataplane::wire::l4::{Icmp, Tcp, Udp};
use enifab_dataplane::wire::vlan::{self, Tci};
use enifab_dataplane::wire::vnet::VnetHdr;
use enifab_dataplane::wire::{arp, geneve, ipv4, ipv6};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((h, frame)) = geneve::Header::parse(data) {
        let mut out = vec![0u8; h.len() + frame.len()];
        let n = geneve::encapsulate(&h, frame, &mut out).expect("room was reserved");
        let (again, payload) = geneve::Header::parse(&out[..n]).expect("emitted header parses");
        assert_eq!((again.vni, again.vnet), (h.vni, h.vnet));
        assert_eq!(payload, frame);
    }
    let _ = Frame::parse(data);
    let _ = arp::Repr::parse(data);
    let _ = ipv4::Packet::parse(data, false);
    let _ = ipv4::Packet::parse(data, true);
    let _ = ipv4::Packet::parse_quoted(data);
    let _ = (Tcp::parse(data), Udp::parse(data), Icmp::parse(data));
    if let Ok(p) = ipv6::Packet::parse(data)
        && let Ok(ns) = ipv6::NeighborSolicitation::parse(&p)
    {
        let mut out = [0u8; ipv6::ADVERTISEMENT_LEN];
        let na = ipv6::NeighborAdvertisement::answer(p.src, &ns, enifab_dataplane::wire::ethernet::GATEWAY_MAC, false);
        assert_eq!(na.emit(&mut out), Ok(ipv6::ADVERTISEMENT_LEN));
    }

    let vnet = data
        .get(..10)
        .and_then(|b| VnetHdr::parse(b).ok())
        .unwrap_or_default();
    let frame = data.get(10..).unwrap_or_default();
    let mut buf = frame.to_vec();
    buf.extend_from_slice(&[0; vlan::TAG_LEN]);
    let mut v = vnet;
    if let Ok(n) = vlan::push_in_place(&mut buf, frame.len(), Tci(0x0abc), &mut v) {
        let (tci, m) = vlan::pop_in_place(&mut buf, n, &mut v).expect("a pushed tag pops");
        assert_eq!((tci, &buf[..m], v), (Tci(0x0abc), frame, vnet));
    }
    let mut popped = frame.to_vec();
    let mut v = vnet;
    let _ = vlan::pop_headroom(&mut popped, &mut v);
});
