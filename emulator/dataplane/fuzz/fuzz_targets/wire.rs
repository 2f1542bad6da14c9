//! Every wire parser and the VLAN helpers on arbitrary bytes: must never panic, and a
//! successful push followed by a pop must give the input back; a fast-path control message
//! whose records all read, of either family, is written back to the same records.
#![no_main]

use enifab_dataplane::wire::ethernet::Frame;
use enifab_dataplane::wire::l4::{Icmp, Tcp, Udp};
use enifab_dataplane::wire::vlan::{self, Tci};
use enifab_dataplane::wire::vnet::VnetHdr;
use enifab_dataplane::wire::fastpath::{self, Addr, Message};
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

    if let Ok(m) = Message::parse(data) {
        fast_path_round_trip::<core::net::Ipv4Addr>(&m);
        fast_path_round_trip::<core::net::Ipv6Addr>(&m);
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

/// The records of family `A` in `m`, when all of them read, emitted again and read back.
fn fast_path_round_trip<A: Addr>(m: &Message<'_>) {
    let mut out = [0u8; fastpath::MAX_LEN];
    if let Ok(entries) = m.entries_of::<A>().collect::<Result<Vec<_>, _>>()
        && !entries.is_empty()
    {
        let (len, n) = fastpath::emit_grant(m.epoch, &entries, &mut out).expect("a datagram's worth fits");
        assert_eq!(n, entries.len());
        let again: Vec<_> = Message::parse(&out[..len]).expect("emitted grant parses").entries_of::<A>().collect();
        assert_eq!(again, entries.into_iter().map(Ok).collect::<Vec<_>>());
    }
    if let Ok(reports) = m.reports_of::<A>().collect::<Result<Vec<_>, _>>()
        && !reports.is_empty()
    {
        let (len, n) = fastpath::emit_report(&reports, &mut out).expect("a datagram's worth fits");
        assert_eq!(n, reports.len());
        let again: Vec<_> = Message::parse(&out[..len]).expect("emitted report parses").reports_of::<A>().collect();
        assert_eq!(again, reports.into_iter().map(Ok).collect::<Vec<_>>());
    }
}
