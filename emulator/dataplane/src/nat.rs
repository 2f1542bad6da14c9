//! Rewriting the packets of translated (load-balanced) flows: the addresses and ports a
//! translation changes, with every checksum that covers them updated incrementally (RFC 1624),
//! never recomputed from a payload the fabric did not read.
//!
//! A load balancer's original direction changes the destination (VIP:port → backend:port), its
//! reply direction the source (backend:port → VIP:port). An ICMP error about a translated flow
//! carries a copy of the packet it is about, which is translated the other way round, so that
//! the error's receiver recognises its own packet.
//!
//! Must not: decide anything (the pipeline chose the translation), allocate, or panic on a
//! short buffer (callers hand in headers they parsed; bounds are checked anyway).

use core::net::Ipv4Addr;

use crate::security_group::PacketMeta;
use crate::wire::ipv4::{self, PROTO_TCP, PROTO_UDP};
use crate::wire::{checksum, l4};

/// How a translated packet's addresses and ports change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Translate {
    /// New source (the reply direction: backend → VIP).
    pub src: Option<(Ipv4Addr, u16)>,
    /// New destination (the original direction: VIP → backend).
    pub dst: Option<(Ipv4Addr, u16)>,
}

/// The source and destination a translated packet leaves with, for traces.
pub(crate) fn translated_ends(
    ip: &ipv4::Packet<'_>,
    meta: &PacketMeta,
    tr: Translate,
) -> ((Ipv4Addr, u16), (Ipv4Addr, u16)) {
    let (sport, dport) = meta.ports.unwrap_or((0, 0));
    (tr.src.unwrap_or((ip.src, sport)), tr.dst.unwrap_or((ip.dst, dport)))
}

/// Rewrites the IPv4 header (at the start of `l3`, `ihl` bytes) and the TCP/UDP header after it
/// as `tr` says, updating both checksums incrementally. `partial`: the L4 checksum field holds
/// the uncomplemented pseudo-header sum of a `NEEDS_CSUM` frame (the receiver completes it), so
/// only the addresses, which the pseudo-header covers, move it; a complete checksum covers the
/// ports too. A UDP checksum of 0 means "none" and stays so.
pub(crate) fn translate_headers(l3: &mut [u8], ihl: usize, protocol: u8, tr: Translate, partial: bool) {
    let check_at = ihl + if protocol == PROTO_TCP { l4::TCP_CHECKSUM_AT } else { l4::UDP_CHECKSUM_AT };
    for (addr_at, port_at, to) in [(12, ihl, tr.src), (16, ihl + 2, tr.dst)] {
        let Some((ip, port)) = to else { continue };
        let mut old = [0u8; 6];
        old[..4].copy_from_slice(&l3[addr_at..addr_at + 4]);
        old[4..].copy_from_slice(&l3[port_at..port_at + 2]);
        let mut new = [0u8; 6];
        new[..4].copy_from_slice(&ip.octets());
        new[4..].copy_from_slice(&port.to_be_bytes());
        let ip_check = u16::from_be_bytes([l3[10], l3[11]]);
        l3[10..12].copy_from_slice(&checksum::adjust(ip_check, &old[..4], &new[..4]).to_be_bytes());
        let l4_check = u16::from_be_bytes([l3[check_at], l3[check_at + 1]]);
        let l4_check = if partial {
            checksum::adjust_partial(l4_check, &old[..4], &new[..4])
        } else if protocol == PROTO_UDP && l4_check == 0 {
            0
        } else {
            let c = checksum::adjust(l4_check, &old, &new);
            if protocol == PROTO_UDP && c == 0 { 0xffff } else { c }
        };
        l3[check_at..check_at + 2].copy_from_slice(&l4_check.to_be_bytes());
        l3[addr_at..addr_at + 4].copy_from_slice(&new[..4]);
        l3[port_at..port_at + 2].copy_from_slice(&new[4..]);
    }
}

/// Rewrites the start of an IPv4 packet carrying an ICMP error (`l3`: the outer header of
/// `ihl` bytes, the ICMP header, and as much of the quoted packet as the error carried, up to its
/// IPv4 header and 8 bytes): the outer addresses by `outer` (addresses only), the quoted packet's
/// addresses and ports by `quoted`. Every checksum that covers a changed byte is updated
/// incrementally: the outer and quoted IPv4 headers', the quoted UDP checksum (when quoted, and
/// not 0), and the ICMP checksum, which covers the whole quoted part.
pub(crate) fn translate_icmp_error(l3: &mut [u8], ihl: usize, outer: Translate, quoted: Translate) {
    for (addr_at, to) in [(12, outer.src), (16, outer.dst)] {
        if let Some((new, _)) = to {
            let check = u16::from_be_bytes([l3[10], l3[11]]);
            let c = checksum::adjust(check, &l3[addr_at..addr_at + 4], &new.octets());
            l3[10..12].copy_from_slice(&c.to_be_bytes());
            l3[addr_at..addr_at + 4].copy_from_slice(&new.octets());
        }
    }
    let icmp_check_at = ihl + 2;
    // Writes `new` at `at` (inside the ICMP message), folding the change into its checksum.
    let patch = |l3: &mut [u8], at: usize, new: &[u8]| {
        let mut old = [0u8; 4];
        let Some(was) = l3.get(at..at + new.len()) else { return };
        old[..new.len()].copy_from_slice(was);
        let check = u16::from_be_bytes([l3[icmp_check_at], l3[icmp_check_at + 1]]);
        let c = checksum::adjust(check, &old[..new.len()], new);
        l3[icmp_check_at..icmp_check_at + 2].copy_from_slice(&c.to_be_bytes());
        l3[at..at + new.len()].copy_from_slice(new);
    };
    // The quoted packet starts after the 8-byte ICMP header.
    let q = ihl + l4::ICMP_HEADER_LEN;
    if l3.len() < q + ipv4::MIN_HEADER_LEN {
        return;
    }
    let q_ihl = usize::from(l3[q] & 0x0f) * 4;
    let udp_check_at = (l3[q + 9] == PROTO_UDP && l3.len() >= q + q_ihl + 8).then_some(q + q_ihl + 6);
    for (addr_at, port_at, to) in [(q + 12, q + q_ihl, quoted.src), (q + 16, q + q_ihl + 2, quoted.dst)] {
        let Some((new_ip, new_port)) = to else { continue };
        let q_check = u16::from_be_bytes([l3[q + 10], l3[q + 11]]);
        let q_check = checksum::adjust(q_check, &l3[addr_at..addr_at + 4], &new_ip.octets());
        patch(l3, q + 10, &q_check.to_be_bytes());
        if let Some(at) = udp_check_at {
            let udp = u16::from_be_bytes([l3[at], l3[at + 1]]);
            if udp != 0 {
                let mut old = [0u8; 6];
                old[..4].copy_from_slice(&l3[addr_at..addr_at + 4]);
                old[4..].copy_from_slice(l3.get(port_at..port_at + 2).unwrap_or(&[0, 0]));
                let mut new = [0u8; 6];
                new[..4].copy_from_slice(&new_ip.octets());
                new[4..].copy_from_slice(&new_port.to_be_bytes());
                let c = checksum::adjust(udp, &old, &new);
                patch(l3, at, &(if c == 0 { 0xffff } else { c }).to_be_bytes());
            }
        }
        patch(l3, addr_at, &new_ip.octets());
        patch(l3, port_at, &new_port.to_be_bytes());
    }
}
